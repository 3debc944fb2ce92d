"""Old tree against new tree, interleaved: env steps/s of both, alternating, on a shared noisy machine.

Run: ``python benchmarks/interleaved.py --old /path/to/old/tree [--new .] [--pairs 7] [--cases ...]``.
Each pair runs one child process per tree (``PYTHONPATH`` set to that tree, so ``hashing_gym`` is that
tree's), old first in even pairs and new first in odd ones, so that a slow spell of the machine hits
both columns alike; the median of each pair's ratio is printed too. Every child times every chosen
case once (plus CartPole-v1, the reference that shows how much of a difference is the machine).
Prints a markdown table of medians over the pairs and the ratio new / old (> 1 is faster), with the
load average before and after.

Rates are steps per second of the child's CPU time (``time.process_time``): on a shared machine wall
time also counts the turns of other processes. The timing loops are this file's own (a child imports
nothing from either tree's ``benchmarks``), so both trees are timed by the same code: single envs
unwrapped (as ``benchmarks.envs``), vector envs through ``gym.make_vec(...,
vectorization_mode="vector_entry_point")`` with a pool of random valid actions drawn before the clock
starts (as ``benchmarks.vector_envs``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STEPS = 20_000  # steps of a single env per timing
BCT = "BinaryCodeTravel-v0"
# case name -> (kind, env id, keyword arguments, num_envs or None, steps per timing)
CASES: dict[str, tuple[str, str, dict[str, Any], int | None, int]] = {
    "CartPole-v1 (reference)": ("random", "CartPole-v1", {}, None, 20_000),
    "BinaryCodeTravel 16 bits, single env, teacher": ("teacher", BCT, {"bits": 16}, None, STEPS),
    "BinaryCodeTravel 64 bits, single env, teacher": ("teacher", BCT, {"bits": 64}, None, STEPS),
    "BinaryCodeTravel 16 bits, single env, random actions": (
        "random",
        "BinaryCodeTravel-v0",
        {"bits": 16},
        None,
        20_000,
    ),
    "BinaryCodeTravel 16 bits, numpy, 1 env": ("vector", "BinaryCodeTravel-v0", {"bits": 16}, 1, 2_000),
    "BinaryCodeTravel 16 bits, numpy, 64 envs": ("vector", "BinaryCodeTravel-v0", {"bits": 16}, 64, 100_000),
    "BinaryCodeTravel 16 bits, numpy, 4,096 envs": (
        "vector",
        "BinaryCodeTravel-v0",
        {"bits": 16},
        4096,
        400_000,
    ),
    "BinaryCodeTravel 64 bits, numpy, 4,096 envs": (
        "vector",
        "BinaryCodeTravel-v0",
        {"bits": 64},
        4096,
        400_000,
    ),
    "SequentialHashBits 16 bits, single env": ("random", "SequentialHashBits-v0", {"bits": 16}, None, 10_000),
    "SequentialHashBits 16 bits, numpy, 1 env": ("vector", "SequentialHashBits-v0", {"bits": 16}, 1, 2_000),
    "SequentialHashBits 16 bits, numpy, 64 envs": (
        "vector",
        "SequentialHashBits-v0",
        {"bits": 16},
        64,
        100_000,
    ),
}
GROUPS: dict[str, list[str]] = {
    "bct": [name for name in CASES if name.startswith("BinaryCodeTravel")],
    "bct-single": [name for name in CASES if name.startswith("BinaryCodeTravel") and "single" in name],
    "shb": [name for name in CASES if name.startswith("SequentialHashBits")],
}
POOL = 16  # batches of random actions cycled through while timing a vector env


def _single(kind: str, env_id: str, kwargs: dict[str, Any], steps: int) -> float:
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id, **kwargs).unwrapped
    if kind == "teacher":
        policy = lambda info: info["expert_action"]  # noqa: E731
    else:
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(POOL * 64)]
        counter = iter(range(1 << 62))
        policy = lambda info: actions[next(counter) % len(actions)]  # noqa: E731
    _ = np  # numpy is imported so that its import time stays out of the first timing
    _, info = env.reset(seed=0)
    for _ in range(500):  # warm-up
        _, _, terminated, truncated, info = env.step(policy(info))
        if terminated or truncated:
            _, info = env.reset()
    start = time.process_time()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(policy(info))
        if terminated or truncated:
            _, info = env.reset()
    return steps / (time.process_time() - start)


def _vector(env_id: str, kwargs: dict[str, Any], num_envs: int, env_steps: int) -> float:
    import gymnasium as gym

    mode = "vector_entry_point"
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, device="cpu", **kwargs)
    envs.action_space.seed(0)
    pool = [envs.action_space.sample() for _ in range(POOL)]
    calls = max(20, env_steps // num_envs)
    envs.reset(seed=0)
    for t in range(5):
        envs.step(pool[t % POOL])
    start = time.process_time()
    for t in range(calls):
        envs.step(pool[t % POOL])
    rate = calls * num_envs / (time.process_time() - start)
    envs.close()
    return rate


def child(names: list[str]) -> None:
    """Time each case once in this process and print ``{name: steps/s}`` as JSON."""
    import hashing_gym  # noqa: F401 - registers the environments

    rates = {}
    for name in names:
        kind, env_id, kwargs, num_envs, steps = CASES[name]
        if kind == "vector":
            rates[name] = _vector(env_id, kwargs, num_envs, steps)
        else:
            rates[name] = _single(kind, env_id, kwargs, steps)
    print(json.dumps(rates))


def _run_tree(tree: Path, names: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *names],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse the arguments, run the pairs, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="the old tree (e.g. `git archive fe5d3d4 | tar -x -C DIR`)")
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--new", type=Path, default=here, help="the new tree (default: this file's)")
    parser.add_argument("--pairs", type=int, default=7, help="old/new pairs (at least 5 for a median)")
    parser.add_argument(
        "--cases", nargs="*", default=["bct"], help=f"case names or groups {sorted(GROUPS)} (default: bct)"
    )
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child is not None:
        child(parsed.child)
        return
    if parsed.old is None:
        parser.error("--old is required")
    names = ["CartPole-v1 (reference)"]
    for token in parsed.cases:
        for name in GROUPS.get(token, [token]):
            if name not in CASES:
                parser.error(f"unknown case {name!r}; cases: {sorted(CASES)}")
            if name not in names:
                names.append(name)
    trees = {"old": parsed.old.resolve(), "new": parsed.new.resolve()}
    rates: dict[str, dict[str, list[float]]] = {t: {n: [] for n in names} for t in trees}
    load_before = os.getloadavg()
    for pair in range(parsed.pairs):
        for tree in ("old", "new") if pair % 2 == 0 else ("new", "old"):
            for name, rate in _run_tree(trees[tree], names).items():
                rates[tree][name].append(rate)
        print(f"pair {pair + 1}/{parsed.pairs} done", file=sys.stderr)
    load_after = os.getloadavg()

    print(f"old: {trees['old']}\nnew: {trees['new']}")
    load = f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    print(f"{parsed.pairs} interleaved pairs; steps per CPU-second of the child; {load}\n")
    print("| case | old | new | new / old | median pair ratio | old min-max | new min-max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        old, new = rates["old"][name], rates["new"][name]
        pairs = statistics.median(n / o for n, o in zip(new, old, strict=True))
        print(
            f"| {name} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} "
            f"| {statistics.median(new) / statistics.median(old):.2f} | {pairs:.2f} "
            f"| {min(old):,.0f}-{max(old):,.0f} | {min(new):,.0f}-{max(new):,.0f} |"
        )


if __name__ == "__main__":
    main()
