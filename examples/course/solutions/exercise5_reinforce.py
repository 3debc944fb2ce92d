"""Exercise 5, reference solution: REINFORCE with a baseline on RankListHash-v0 (linear Bernoulli policy)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments


def code_probabilities(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(bit k = 1 | x) = sigmoid(weights[k] . [x, 1]): float (bits,)."""
    return 1.0 / (1.0 + np.exp(-(weights @ np.append(x, 1.0))))


def sample_code(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One code drawn bit by bit from Bernoulli(p): int8 (bits,) of 0/1."""
    return (rng.random(len(p)) < p).astype(np.int8)


def policy_gradient(
    weights: np.ndarray, xs: np.ndarray, codes: np.ndarray, rewards: np.ndarray, baseline: float
) -> np.ndarray:
    """REINFORCE estimate of the gradient of the expected reward, averaged over a batch.

    For a Bernoulli policy ``d log pi(h | x) / d weights[k] = (h_k - p_k) [x, 1]``; each sample is
    weighted by its advantage ``reward - baseline``. Returns an array shaped like ``weights``.
    """
    inputs = np.c_[xs, np.ones(len(xs))]  # [x, 1] per row
    p = 1.0 / (1.0 + np.exp(-(inputs @ weights.T)))
    advantage = np.asarray(rewards, dtype=np.float64) - baseline
    return (advantage[:, None] * (codes - p)).T @ inputs / len(xs)


def train(env: gym.Env, steps: int = 15000, seed: int = 0) -> np.ndarray:
    """Gradient ascent on mini-batches of 32 one-step episodes; the baseline is a running mean of rewards."""
    rng = np.random.default_rng(seed)
    bits, dim = env.action_space.n, env.observation_space.shape[0]
    weights = rng.normal(0.0, 0.01, size=(bits, dim + 1))
    lr, batch, baseline = 5.0, 32, 0.0
    xs, codes, rewards = [], [], []
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        code = sample_code(code_probabilities(weights, obs), rng)
        _, reward, _, _, _ = env.step(code)
        xs.append(obs)
        codes.append(code)
        rewards.append(reward)
        if len(xs) == batch:
            weights += lr * policy_gradient(
                weights, np.array(xs), np.array(codes), np.array(rewards), baseline
            )
            baseline += 0.5 * (float(np.mean(rewards)) - baseline)
            xs, codes, rewards = [], [], []
        obs, _ = env.reset()  # every episode is one step long
    return weights


def encode(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Deterministic codes of many items: bit k is 1 where P(bit k = 1) > 1/2. uint8 (n, bits)."""
    logits = np.c_[features, np.ones(len(features))] @ weights.T
    return (logits > 0).astype(np.uint8)
