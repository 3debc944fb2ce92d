"""Exercise 4: linear Q-learning on a 4-bit BinaryCodeTravel-v0 over blobs.

Task sheet: exercise4_q_learning.md. Fill in the parts between ``YOUR CODE`` markers, then grade with
``python -m examples.course.check 4 examples/course/exercise4_q_learning.py``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.data import load_dataset

BITS = 4
BLOBS = {"num_classes": 4, "n_per_class": 200, "dim": 16, "seed": 0}


def make_env(split: str = "train", **kwargs) -> gym.Env:
    """The exercise's environment: 4 bits, 4 Gaussian classes (the checker builds the same)."""
    return gym.make(
        "BinaryCodeTravel-v0", dataset=load_dataset("blobs", **BLOBS), bits=BITS, split=split, **kwargs
    )


def features(obs: dict) -> np.ndarray:
    """phi(s) = [f, 1] (outer) [1, 2 code - 1], flattened: (D + 1) * (bits + 1) numbers.

    The value of flipping bit k depends on whether bit k already matches the class codeword, a product of
    what the features say (the class) and the code: a linear function of [f, code] cannot express it,
    a linear function of their outer product can.
    """
    f = np.append(obs["features"], 1.0)
    s = np.append(1.0, 2.0 * obs["code"] - 1.0)
    return np.outer(f, s).ravel()


def q_values(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Q(s, a) for every action: ``weights`` (A, F) times the features ``x`` (F,)."""
    return weights @ x


def epsilon_greedy(q: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """A uniformly random action with probability ``epsilon``, else the greedy one (use ``rng`` only)."""
    # ----- YOUR CODE (4a) ------------------------------------------------------------------------------
    raise NotImplementedError("4a: epsilon_greedy")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def q_learning_update(
    weights: np.ndarray,
    x: np.ndarray,
    action: int,
    reward: float,
    x_next: np.ndarray,
    terminated: bool,
    gamma: float,
    lr: float,
) -> None:
    """Semi-gradient Q-learning on ``weights[action]``, in place; the target bootstraps unless terminated."""
    # ----- YOUR CODE (4b) ------------------------------------------------------------------------------
    raise NotImplementedError("4b: q_learning_update")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def train(env: gym.Env, episodes: int = 5000, seed: int = 0) -> np.ndarray:
    """Q-learning on ``env`` for ``episodes`` episodes with epsilon-greedy exploration; returns the weights.

    Suggested: weights start at 0, gamma 0.9, lr 0.0005, epsilon from 1 down to 0.05 over the first 60%
    of the episodes. Seed everything from ``seed`` (``env.reset(seed=seed)`` once, then plain resets).
    """
    rng = np.random.default_rng(seed)  # noqa: F841 - for your epsilon_greedy calls
    obs, _ = env.reset(seed=seed)
    weights = np.zeros((env.action_space.n, features(obs).size))
    # ----- YOUR CODE (4c) ------------------------------------------------------------------------------
    raise NotImplementedError("4c: the training loop")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------
    return weights


def greedy_action(weights: np.ndarray, obs: dict) -> int:
    """The learned policy: the action of largest Q."""
    return int(np.argmax(q_values(weights, features(obs))))
