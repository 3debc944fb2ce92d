"""SB3 through ``hashing_gym.sb3.make_vec_env`` (one batched env) against ``DummyVecEnv`` (one env per copy).

Run: ``python -m benchmarks.sb3_adapter [--num-envs 64 1024] [--device cpu|cuda] [--repeats 3]``.
Two rows per env and copy count, medians over repeats, interleaved (adapter, DummyVecEnv, adapter, ...):

- ``VecEnv steps/s``: ``step`` under random valid actions, SB3's bookkeeping included (infos per copy,
  autoreset with ``terminal_observation``): what the environment side costs SB3;
- ``PPO steps/s``: ``PPO("MlpPolicy" or "MultiInputPolicy").learn`` of a fixed number of steps
  (rollouts of ``n_steps = 32`` per copy, one epoch, batch 256): what a user sees end to end.

``--device cuda`` steps the batched env on the GPU (observations are copied to the host for SB3) and
runs PPO's network there; DummyVecEnv's copies always step on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import hashing_gym  # noqa: F401 - registers the environments
from benchmarks.envs import machine
from hashing_gym.sb3 import make_vec_env

CASES: dict[str, dict[str, Any]] = {
    "BinaryCodeTravel-v0": {"bits": 16},
    "RankListHash-v0": {"bits": 16},
    "SequentialHashBits-v0": {"bits": 16, "group": 4},
}


def build(kind: str, env_id: str, n: int, device: str) -> Any:
    """The SB3 VecEnv of one kind (``adapter`` or ``dummy``), seeded, monitored."""
    kwargs = CASES[env_id]
    if kind == "adapter":
        return make_vec_env(env_id, n, seed=0, device=device, **kwargs)
    venv = VecMonitor(DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * n))
    venv.seed(0)
    return venv


def vec_env_rate(venv: Any, steps: int) -> float:
    """Env steps/s of ``venv.step`` under random valid actions (``steps`` env steps in all)."""
    venv.action_space.seed(0)
    pool = [np.array([venv.action_space.sample() for _ in range(venv.num_envs)]) for _ in range(8)]
    venv.reset()
    for t in range(5):  # warm-up: numba's first compile, first allocations
        venv.step(pool[t % len(pool)])
    calls = max(10, steps // venv.num_envs)
    start = time.perf_counter()
    for t in range(calls):
        venv.step(pool[t % len(pool)])
    return calls * venv.num_envs / (time.perf_counter() - start)


def ppo_rate(venv: Any, steps: int, device: str) -> float:
    """Env steps/s of PPO's ``learn`` (rollouts and updates) for about ``steps`` env steps."""
    policy = "MultiInputPolicy" if isinstance(venv.observation_space, gym.spaces.Dict) else "MlpPolicy"
    n_steps = 32
    batch = min(256, n_steps * venv.num_envs)
    model = PPO(policy, venv, n_steps=n_steps, batch_size=batch, n_epochs=1, seed=0, device=device)
    total = max(1, steps // (n_steps * venv.num_envs)) * n_steps * venv.num_envs
    start = time.perf_counter()
    model.learn(total)
    return total / (time.perf_counter() - start)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--device", default="cpu", help="where the adapter's env and PPO run: cpu or cuda")
    parser.add_argument("--env", nargs="*", default=sorted(CASES), help="environment ids")
    parser.add_argument("--env-steps", type=int, default=65_536, help="env steps per VecEnv repeat")
    parser.add_argument("--ppo-steps", type=int, default=65_536, help="env steps per PPO repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parsed = parser.parse_args()
    print(f"Machine: {machine()}; device {parsed.device}; medians of {parsed.repeats} interleaved repeats\n")
    print("| environment | num_envs | measure | adapter steps/s | DummyVecEnv steps/s | adapter / Dummy |")
    print("|---|---:|---|---:|---:|---:|")
    for env_id in parsed.env:
        for n in parsed.num_envs:
            envs = {kind: build(kind, env_id, n, parsed.device) for kind in ("adapter", "dummy")}
            measures = {
                "VecEnv step": lambda venv: vec_env_rate(venv, parsed.env_steps),
                "PPO learn": lambda venv: ppo_rate(venv, parsed.ppo_steps, parsed.device),
            }
            for name, measure in measures.items():
                rates: dict[str, list[float]] = {"adapter": [], "dummy": []}
                for venv in envs.values():  # warm-up, untimed
                    measure(venv)
                for _ in range(parsed.repeats):
                    for kind, venv in envs.items():
                        rates[kind].append(measure(venv))
                ours, theirs = (statistics.median(rates[k]) for k in ("adapter", "dummy"))
                print(f"| {env_id} | {n:,} | {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.1f} |")
            for venv in envs.values():
                venv.close()


if __name__ == "__main__":
    main()
