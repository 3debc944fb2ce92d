"""Environment speed: single-env steps/s against Gymnasium's CartPole-v1 in the same process.

Run: ``python -m benchmarks.envs [--steps 50000] [--repeats 5]``. Prints a markdown table with
the machine, the median steps/s over repeats of each environment, and the ratio to CartPole-v1
(issue target for BinaryCodeTravel-v0: at least 0.3x), and RankListHash-v0's one-step episodes at
N = 1,497 (digits) and N = 50,000 (blobs), whose per-step cost is O(N bits / 64) with no sort.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.data import load_dataset


def machine() -> str:
    """CPU model and core count (and GPU name if torch sees one)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


def steps_per_second(env: gym.Env, policy: Callable[[dict], int], steps: int) -> float:
    """Steps/s of ``env`` (unwrapped) under ``policy(info)``, resets included."""
    _, info = env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(policy(info))
        if terminated or truncated:
            _, info = env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parsed = parser.parse_args()

    rng = np.random.default_rng(0)
    large = load_dataset("blobs", num_classes=10, n_per_class=5_010, dim=64, query_per_class=1)
    cases: dict[str, tuple[gym.Env, Callable[[dict], int]]] = {
        "CartPole-v1 (reference)": (gym.make("CartPole-v1").unwrapped, lambda info: int(rng.integers(2))),
        "BinaryCodeTravel-v0 16 bits, teacher": (
            gym.make("BinaryCodeTravel-v0", bits=16).unwrapped,
            lambda info: info["expert_action"],
        ),
        "BinaryCodeTravel-v0 16 bits, random flips": (
            gym.make("BinaryCodeTravel-v0", bits=16).unwrapped,
            lambda info: int(rng.integers(16)),
        ),
        "BinaryCodeTravel-v0 64 bits, teacher": (
            gym.make("BinaryCodeTravel-v0", bits=64).unwrapped,
            lambda info: info["expert_action"],
        ),
        "RankListHash-v0 16 bits, digits (N = 1,497)": (
            gym.make("RankListHash-v0", bits=16).unwrapped,
            lambda info: rng.integers(0, 2, size=16, dtype=np.int8),
        ),
        f"RankListHash-v0 64 bits, blobs (N = {large.train.n:,})": (
            gym.make("RankListHash-v0", dataset=large, bits=64).unwrapped,
            lambda info: rng.integers(0, 2, size=64, dtype=np.int8),
        ),
    }
    # Interleave repeats so that machine noise hits every case alike.
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(parsed.repeats):
        for name, (env, policy) in cases.items():
            rates[name].append(steps_per_second(env, policy, parsed.steps))
    reference = statistics.median(rates["CartPole-v1 (reference)"])

    print(f"Machine: {machine()}")
    print(f"Single-env steps/s, median of {parsed.repeats} x {parsed.steps:,} steps\n")
    print("| environment | steps/s | ratio to CartPole-v1 |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / reference:.2f} |")


if __name__ == "__main__":
    main()
