"""Batched environment speed: vector-env steps/s against the single env and CartPole-v1, same run.

Run: ``python -m benchmarks.vector_envs [--env-steps 200000] [--repeats 5]`` (numpy on CPU at
num_envs 1, 64 and 4,096) or ``python -m benchmarks.vector_envs --device cuda`` (torch at 65,536
envs and more, with the CPU rows at 4,096 as reference). One step of a vector env with n sub-envs
counts as n env steps. Actions are random valid actions, drawn from the action space before the
clock starts (a pool of batches cycled through), so the table times the environments alone.
Issue targets for BinaryCodeTravel-v0: >= 1e6 steps/s and >= 10x the single env at 4,096 envs on
CPU; >= 1e8 steps/s at >= 65,536 envs on an H100.

To add an environment, append a ``Case`` to ``CASES``: an id, its keyword arguments (and those of
the vector env alone), and the sub-env counts to measure on CPU and on CUDA. ``--env ID ...``
times only those environments.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import hashing_gym  # noqa: F401 - registers the environments
from benchmarks.envs import machine

POOL = 16  # batches of random actions cycled through while timing


@dataclass
class Case:
    """One environment to time: single env and vector env built from the same arguments."""

    env_id: str
    """Registered id with a ``vector_entry_point``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for both the single and the vector env."""
    label: str = ""
    """Row label (default: the id and the arguments)."""
    cpu_num_envs: tuple[int, ...] = (1, 64, 4096)
    """Sub-env counts timed with ``device="cpu"`` (numpy)."""
    cuda_num_envs: tuple[int, ...] = (65_536, 262_144, 1_048_576)
    """Sub-env counts timed with ``--device cuda`` (torch)."""
    vector_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the vector env only (e.g. ``autoreset_mode``)."""

    @property
    def name(self) -> str:
        """The row label."""
        if self.label:
            return self.label
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.env_id} ({args})" if args else self.env_id


CASES: list[Case] = [
    Case("BinaryCodeTravel-v0", {"bits": 16}, label="BinaryCodeTravel-v0 16 bits, digits"),
    Case(
        "BinaryCodeTravel-v0",
        {"bits": 64},
        label="BinaryCodeTravel-v0 64 bits, digits",
        cpu_num_envs=(4096,),
        cuda_num_envs=(65_536, 1_048_576),
    ),
    # One-step episodes: SAME_STEP autoreset so that every vector step acts (NEXT_STEP would spend
    # every other step on resets); the single env's rate includes its resets too. Each sub-env
    # ranks against its own database of N = 1,497 codes, so a step costs num_envs x N popcounts.
    Case(
        "RankListHash-v0",
        {"bits": 16},
        label="RankListHash-v0 16 bits, digits (same-step autoreset)",
        cuda_num_envs=(4096, 65_536),
        vector_kwargs={"autoreset_mode": "SameStep"},
    ),
    Case(
        "SequentialHashBits-v0",
        {"bits": 16},
        label="SequentialHashBits-v0 16 bits, group 1, digits",
        cuda_num_envs=(65_536, 262_144),  # each sub-env's bank: N x bits bytes
    ),
]


def single_rate(env: gym.Env, steps: int, seed: int = 0) -> float:
    """Steps/s of a single (unwrapped) env under random valid actions, resets included."""
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(POOL * 64)]
    env.reset(seed=seed)
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t % len(actions)])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_rate(envs: Any, env_steps: int, device: str = "cpu", seed: int = 0) -> float:
    """Env steps/s of a vector env (``num_envs`` per call) under random valid actions."""
    envs.action_space.seed(seed)
    pool = [envs.action_space.sample() for _ in range(POOL)]
    synchronize = None
    if device != "cpu":
        import torch

        pool = [torch.as_tensor(a, device=device) for a in pool]
        synchronize = torch.cuda.synchronize
    calls = max(20, min(2_000, env_steps // envs.num_envs))  # the cap keeps num_envs=1 short
    envs.reset(seed=seed)
    # Warm-up: first-call allocations, CUDA kernels' first launch; a fused env compiles one version per
    # kind of step (an episode ends, rows restart), so it steps through two whole episodes first.
    warm_up = 40 if getattr(envs.unwrapped, "fuse_step", False) else 5
    for t in range(warm_up):
        envs.step(pool[t % POOL])
    if synchronize:
        synchronize()
    start = time.perf_counter()
    for t in range(calls):
        envs.step(pool[t % POOL])
    if synchronize:
        synchronize()
    return calls * envs.num_envs / (time.perf_counter() - start)


def fuses(case: Case) -> bool:
    """Whether the case's vector env has a fused step (``fuse_step=True``; the first step compiles)."""
    entry = gym.spec(case.env_id).vector_entry_point
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = getattr(importlib.import_module(module), name)
    return bool(getattr(entry, "fuses", False))


def median_of(repeats: int, measure: Any) -> float:
    """Median of ``repeats`` calls of ``measure()``."""
    return statistics.median(measure() for _ in range(repeats))


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="'cpu' (numpy rows) or 'cuda' (torch rows)")
    parser.add_argument("--env-steps", type=int, default=200_000, help="env steps per timed repeat")
    parser.add_argument("--single-steps", type=int, default=20_000, help="steps per repeat of single envs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-envs", type=int, nargs="*", help="override every case's sub-env counts")
    parser.add_argument("--env", nargs="*", help="time only these environment ids (default: all)")
    parsed = parser.parse_args()

    cartpole = median_of(
        parsed.repeats, lambda: single_rate(gym.make("CartPole-v1").unwrapped, parsed.single_steps)
    )
    print(f"Machine: {machine()}")
    print(
        f"Median of {parsed.repeats} repeats; vector rows time {parsed.env_steps:,} env steps "
        f"(20 to 2,000 calls), single envs {parsed.single_steps:,} steps; random valid actions.\n"
    )
    print(f"CartPole-v1 single env (reference): {cartpole:,.0f} steps/s\n")
    print("| environment | backend | num_envs | env steps/s | vs single env | vs CartPole-v1 |")
    print("|---|---|---:|---:|---:|---:|")
    for case in [c for c in CASES if not parsed.env or c.env_id in parsed.env]:
        single = median_of(
            parsed.repeats,
            lambda case=case: single_rate(
                gym.make(case.env_id, **case.kwargs).unwrapped, parsed.single_steps
            ),
        )
        print(f"| {case.name} | single env | 1 | {single:,.0f} | 1.00 | {single / cartpole:.2f} |")
        rows = [("cpu", n) for n in (parsed.num_envs or case.cpu_num_envs)]
        if parsed.device != "cpu":
            rows = [("cpu", max(case.cpu_num_envs))] + [
                (parsed.device, n) for n in (parsed.num_envs or case.cuda_num_envs)
            ]
        fused = [(device, n, True) for device, n in rows if device != "cpu" and fuses(case)]
        for device, n, fuse in [(device, n, False) for device, n in rows] + fused:
            extra = {} if device == "cpu" else {"check_actions": False}
            if fuse:
                extra["fuse_step"] = True
            envs = gym.make_vec(
                case.env_id,
                num_envs=n,
                vectorization_mode="vector_entry_point",
                device=device,
                **case.kwargs,
                **case.vector_kwargs,
                **extra,
            )
            rate = median_of(
                parsed.repeats, lambda envs=envs, device=device: vector_rate(envs, parsed.env_steps, device)
            )
            backend = "numpy" if device == "cpu" else f"torch {device}" + (", fused" if fuse else "")
            print(
                f"| {case.name} | {backend} | {n:,} | {rate:,.0f} | {rate / single:.1f} "
                f"| {rate / cartpole:.1f} |"
            )
            envs.close()


if __name__ == "__main__":
    main()
