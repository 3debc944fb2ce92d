"""Exercise 5: REINFORCE with a baseline on RankListHash-v0 (a linear Bernoulli policy).

Task sheet: exercise5_reinforce.md. Fill in the parts between ``YOUR CODE`` markers, then grade with
``python -m examples.course.check 5 examples/course/exercise5_reinforce.py``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments


def code_probabilities(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(bit k = 1 | x) = sigmoid(weights[k] . [x, 1]): float (bits,)."""
    # ----- YOUR CODE (5a) ------------------------------------------------------------------------------
    raise NotImplementedError("5a: code_probabilities")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def sample_code(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One code drawn bit by bit from Bernoulli(p): int8 (bits,) of 0/1 (use ``rng`` only)."""
    # ----- YOUR CODE (5a) ------------------------------------------------------------------------------
    raise NotImplementedError("5a: sample_code")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def policy_gradient(
    weights: np.ndarray, xs: np.ndarray, codes: np.ndarray, rewards: np.ndarray, baseline: float
) -> np.ndarray:
    """REINFORCE estimate of the gradient of the expected reward, averaged over a batch.

    ``xs`` (n, D) observations, ``codes`` (n, bits) the sampled actions, ``rewards`` (n,); each sample is
    weighted by its advantage ``reward - baseline``. Returns an array shaped like ``weights``.
    """
    # ----- YOUR CODE (5b) ------------------------------------------------------------------------------
    raise NotImplementedError("5b: policy_gradient")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def train(env: gym.Env, steps: int = 15000, seed: int = 0) -> np.ndarray:
    """REINFORCE on ``env`` for ``steps`` one-step episodes; returns the weights (bits, D + 1).

    Suggested: weights ~ N(0, 0.01^2), mini-batches of 32 episodes, gradient *ascent* with lr 5, and a
    baseline that tracks the mean reward of past batches. Seed everything from ``seed``.
    """
    rng = np.random.default_rng(seed)
    bits, dim = env.action_space.n, env.observation_space.shape[0]
    weights = rng.normal(0.0, 0.01, size=(bits, dim + 1))
    # ----- YOUR CODE (5c) ------------------------------------------------------------------------------
    raise NotImplementedError("5c: the training loop")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------
    return weights


def encode(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Deterministic codes of many items: bit k is 1 where P(bit k = 1) > 1/2. uint8 (n, bits)."""
    logits = np.c_[features, np.ones(len(features))] @ weights.T
    return (logits > 0).astype(np.uint8)
