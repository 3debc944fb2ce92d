"""stable-baselines3 used directly on each environment: ``gym.make``, ``model.learn``, rank the codes.

Run: ``python examples/sb3_direct.py [--quick]``. Trains, with SB3's defaults and no hashing-gym agent
code,

- DQN (``MultiInputPolicy``: the observation is a ``Dict``) on ``BinaryCodeTravel-v0`` (``Discrete``
  actions: flip a bit or terminate),
- PPO (``MultiInputPolicy``, ``MultiBinary(1)`` actions) on ``SequentialHashBits-v0``,
- PPO (``MlpPolicy``, ``MultiBinary(bits)`` actions) on ``RankListHash-v0``,

then encodes the query and database splits with each deterministic policy and prints the mAP@all of
Hamming ranking next to random codes. The budgets here are small and the recipes plain; the trainers of
``python -m agents.train`` (guided exploration for DQN, the paper's database network for REINFORCE,
budgets scaled to the data) reach much higher mAP: see the README's quality table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.envs.binary_code_travel import encode_batch
from hashing_gym.envs.sequential_hash_bits import encode_sequential
from hashing_gym.ranking import mean_average_precision

BITS = 16


def encoder(env_id: str, model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A function from features (n, D) to the deterministic policy's codes (n, BITS), batched over items."""

    def act(obs: Any) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    if env_id == "BinaryCodeTravel-v0":  # DRLH's test phase: from zeros, at most `bits` steps
        return lambda features: encode_batch(act, features, BITS)
    if env_id == "SequentialHashBits-v0":  # the MDP's bits / group steps, for the whole batch at once
        return lambda features: encode_sequential(lambda obs, state: (act(obs), None), features, BITS)
    return lambda features: np.asarray(act(features), dtype=np.uint8)  # RankListHash-v0: one step


def train_and_rank(env_id: str, algo: str, timesteps: int, seed: int) -> dict[str, float]:
    """Train ``algo`` on ``env_id`` (digits, 16 bits) and rank the query split against the database.

    Args:
        env_id: a registered environment id.
        algo: ``"dqn"`` or ``"ppo"``.
        timesteps: SB3 ``total_timesteps``.
        seed: seed of the model and the environment.

    Returns:
        ``{"map": mAP@all of the trained policy, "random_map": mAP@all of random codes, "seconds": ...}``.
    """
    env = gym.make(env_id, bits=BITS)
    policy = "MlpPolicy" if isinstance(env.observation_space, gym.spaces.Box) else "MultiInputPolicy"
    if algo == "dqn":
        model = DQN(policy, env, learning_starts=500, exploration_fraction=0.5, seed=seed, device="cpu")
    else:
        model = PPO(policy, env, n_steps=512, batch_size=128, seed=seed, device="cpu")
    # Small MLPs train fastest on one thread. Set it before every run: numba's default OpenMP threading
    # layer, which hashing_gym.ranking uses, resets OpenMP's thread count, and torch's with it.
    torch.set_num_threads(1)
    started = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - started
    dataset = env.unwrapped.dataset
    encode = encoder(env_id, model)
    query, database = encode(dataset.query.features), encode(dataset.database.features)
    rng = np.random.default_rng(seed)
    random_query, random_database = (rng.integers(0, 2, size=codes.shape) for codes in (query, database))
    q_labels, db_labels = dataset.query.labels, dataset.database.labels
    return {
        "map": mean_average_precision(query, q_labels, database, db_labels),
        "random_map": mean_average_precision(random_query, q_labels, random_database, db_labels),
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Train on every environment and print a markdown table; returns the results by environment id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (under a minute in all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models and environments")
    parsed = parser.parse_args(argv)
    runs = [
        ("BinaryCodeTravel-v0", "dqn", 2000 if parsed.quick else 100_000),
        ("SequentialHashBits-v0", "ppo", 1024 if parsed.quick else 100_000),
        ("RankListHash-v0", "ppo", 1024 if parsed.quick else 50_000),
    ]
    results = {}
    print("| env | algorithm | steps | train s | mAP@all | random codes |")
    print("|---|---|---|---|---|---|")
    for env_id, algo, timesteps in runs:
        stats = train_and_rank(env_id, algo, timesteps, parsed.seed)
        results[env_id] = stats
        print(
            f"| {env_id} | {algo} | {timesteps:,} | {stats['seconds']:.1f} | {stats['map']:.3f} | "
            f"{stats['random_map']:.3f} |",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
