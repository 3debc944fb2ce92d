"""Exercise 4, reference solution: linear Q-learning on a 4-bit BinaryCodeTravel-v0 over blobs."""

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
    """A uniformly random action with probability ``epsilon``, else the greedy one."""
    if rng.random() < epsilon:
        return int(rng.integers(len(q)))
    return int(np.argmax(q))


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
    """Semi-gradient Q-learning, in place: ``w_a += lr * (target - w_a . x) * x``.

    ``target = reward`` when the episode terminated, else ``reward + gamma * max_a' Q(s', a')``. A
    truncated episode is not terminated: its next state still has a value, so it bootstraps.
    """
    target = reward if terminated else reward + gamma * float(np.max(weights @ x_next))
    weights[action] += lr * (target - weights[action] @ x) * x


def train(env: gym.Env, episodes: int = 5000, seed: int = 0) -> np.ndarray:
    """Q-learning, epsilon decaying from 1 to 0.05 over the first 60% of the episodes; returns the weights."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    weights = np.zeros((env.action_space.n, features(obs).size))
    gamma, lr = 0.9, 0.0005
    for episode in range(episodes):
        epsilon = max(0.05, 1.0 - episode / (0.6 * episodes))
        if episode:
            obs, _ = env.reset()
        x, done = features(obs), False
        while not done:
            action = epsilon_greedy(q_values(weights, x), epsilon, rng)
            obs, reward, terminated, truncated, _ = env.step(action)
            x_next = features(obs)
            q_learning_update(weights, x, action, reward, x_next, terminated, gamma, lr)
            x, done = x_next, terminated or truncated
    return weights


def greedy_action(weights: np.ndarray, obs: dict) -> int:
    """The learned policy: the action of largest Q."""
    return int(np.argmax(q_values(weights, features(obs))))
