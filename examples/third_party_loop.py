"""Third-party RL code: a plain Gymnasium 1.x loop over ``gym.make_vec``, only ``import hashing_gym`` added.

Run: ``python examples/third_party_loop.py [--quick]``. For each environment it steps a batch of copies
with a random policy (and, on BinaryCodeTravel-v0, with the teacher action the env puts in ``info``) and
prints the episodes' mean return and length.

Gymnasium 1.x vector environments reset a finished copy on the *next* ``step`` call ("next-step"
autoreset): the step that follows ``terminated or truncated`` ignores that copy's action and returns the
first observation of its new episode with reward 0. A loop that counts that step as a transition gets
wrong returns and lengths; this one skips it, as any 1.x loop must under the default autoreset mode
(0.29-era loops read ``final_observation`` from ``info``, which 1.x no longer sets). An env may announce
another mode in ``envs.metadata["autoreset_mode"]``: RankListHash-v0's batched env (one-step episodes)
resets in the ending step itself ("same-step"), so there every call is a transition; the loop reads it.

``--mode sync`` (the default) steps the copies one after another in this process, ``--mode async`` in
subprocesses; ``--mode vector_entry_point`` uses the batched vector environment each id registers,
which steps all copies in a few array operations. The loop is the same for all three.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 - registers BinaryCodeTravel-v0, RankListHash-v0, SequentialHashBits-v0


def run(
    env_id: str, policy: str, num_envs: int, steps: int, seed: int, mode: str = "sync"
) -> dict[str, float]:
    """Step ``num_envs`` copies of ``env_id`` for ``steps`` batched steps; statistics of finished episodes.

    Args:
        env_id: a registered environment id.
        policy: ``"random"`` (samples of the action space) or ``"teacher"`` (``info["expert_action"]``,
            BinaryCodeTravel-v0 only).
        num_envs: number of copies.
        steps: number of ``envs.step`` calls.
        seed: seed of the copies (copy i gets ``seed + i``) and of the action space.
        mode: Gymnasium's ``vectorization_mode``: ``"sync"``, ``"async"`` or ``"vector_entry_point"``.

    Returns:
        ``{"episodes", "mean_return", "mean_length"}`` over the episodes that finished.
    """
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, bits=16)
    envs.action_space.seed(seed)
    _, infos = envs.reset(seed=seed)
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    autoreset = np.zeros(num_envs, dtype=bool)  # which copies reset on this step instead of stepping
    same_step = envs.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.SAME_STEP
    finished_returns: list[float] = []
    finished_lengths: list[int] = []
    for _ in range(steps):
        actions = infos["expert_action"] if policy == "teacher" else envs.action_space.sample()
        _, rewards, terminated, truncated, infos = envs.step(actions)
        stepped = ~autoreset  # copies that were reset by this call took no action: not a transition
        returns[stepped] += rewards[stepped]
        lengths[stepped] += 1
        done = stepped & (terminated | truncated)
        finished_returns.extend(returns[done].tolist())
        finished_lengths.extend(lengths[done].tolist())
        returns[done] = 0.0
        lengths[done] = 0
        autoreset = (terminated | truncated) & (not same_step)  # same-step: already reset by this call
    envs.close()
    return {
        "episodes": len(finished_returns),
        "mean_return": float(np.mean(finished_returns)) if finished_returns else float("nan"),
        "mean_length": float(np.mean(finished_lengths)) if finished_lengths else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """Run every (environment, policy) pair and print a table; returns the statistics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a few seconds)")
    parser.add_argument("--num-envs", type=int, default=4, help="copies per vector environment")
    parser.add_argument("--seed", type=int, default=0, help="seed of the copies and of the random policy")
    parser.add_argument(
        "--mode",
        choices=("sync", "async", "vector_entry_point"),
        default="sync",
        help="gym.make_vec's vectorization_mode",
    )
    parsed = parser.parse_args(argv)
    steps = 100 if parsed.quick else 2000
    pairs = [
        ("BinaryCodeTravel-v0", "teacher"),
        ("BinaryCodeTravel-v0", "random"),
        ("SequentialHashBits-v0", "random"),
        ("RankListHash-v0", "random"),
    ]
    results = {}
    print(f"{parsed.num_envs} copies per vector env ({parsed.mode}), {steps} steps of each:\n")
    print("| env | policy | episodes | mean return | mean length |")
    print("|---|---|---|---|---|")
    for env_id, policy in pairs:
        stats = run(env_id, policy, parsed.num_envs, steps, parsed.seed, parsed.mode)
        results[(env_id, policy)] = stats
        print(
            f"| {env_id} | {policy} | {stats['episodes']} | {stats['mean_return']:.3f} | "
            f"{stats['mean_length']:.2f} |"
        )
    return results


if __name__ == "__main__":
    main()
