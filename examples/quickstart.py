"""Quick start: make an environment, run the teacher and a random policy, rank their codes.

Run: ``python examples/quickstart.py [--quick]``. It shows the BinaryCodeTravel-v0 MDP as text,
then encodes the digits query and database splits with the env's teacher (which knows the labels:
an upper bound for a learned policy) and with a random policy (a lower bound), and prints the
mAP of Hamming ranking for each.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.ranking import mean_average_precision


def encode(env: gym.Env, policy: str, rng: np.random.Generator, limit: int | None) -> np.ndarray:
    """Codes of the env's split: each item starts from zeros and follows ``policy`` for <= bits steps."""
    core = env.unwrapped
    count = core.num_items if limit is None else min(limit, core.num_items)
    codes = np.zeros((count, core.bits), dtype=np.uint8)
    for index in range(count):
        obs, info = env.reset(options={"index": index})
        for _ in range(core.bits):
            action = info["expert_action"] if policy == "teacher" else int(rng.integers(core.bits + 1))
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        codes[index] = obs["code"]
    return codes


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Show one episode as text, then compare the teacher and a random policy by mAP; returns the mAPs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="encode at most 300 database items")
    parsed = parser.parse_args(argv)

    env = gym.make("BinaryCodeTravel-v0", bits=16, init="zeros", render_mode="ansi")
    obs, info = env.reset(seed=0)
    print(env.render())
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        print(f"reward {reward:+.2f}\n{env.render()}")

    query = gym.make("BinaryCodeTravel-v0", bits=16, init="zeros", split="query")
    database = gym.make("BinaryCodeTravel-v0", bits=16, init="zeros", split="database")
    dataset = query.unwrapped.dataset
    limit = 300 if parsed.quick else None
    rng = np.random.default_rng(0)
    scores = {}
    for policy in ("teacher", "random"):
        q = encode(query, policy, rng, None)
        db = encode(database, policy, rng, limit)
        score = mean_average_precision(q, dataset.query.labels, db, dataset.database.labels[: len(db)])
        scores[policy] = score
        print(f"{policy:>8} policy: mAP@all = {score:.3f}")
    return scores


if __name__ == "__main__":
    main()
