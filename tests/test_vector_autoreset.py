"""Autoreset modes behave identically in every batched env (issue #18), as Gymnasium documents them.

One protocol of random actions runs through all three vector envs (numpy and torch on the CPU, both
random-stream modes) in each of the three modes, and the same checks apply to every env
(https://farama.org/Vector-Autoreset-Mode):

- ``NEXT_STEP``: the step after an episode ends resets that sub-env: its action is ignored (a twin env
  given another action there returns bitwise the same), its reward is 0 and its flags False; no
  ``final_obs`` / ``final_info``;
- ``SAME_STEP``: every step acts for every sub-env; ``infos["_final_obs"]`` and ``infos["_final_info"]``
  are exactly the sub-envs that ended (keys absent: none did);
- ``DISABLED``: stepping while a sub-env has ended raises ``ResetNeededError`` and changes nothing;
  ``reset(options={"reset_mask": ended})`` restarts it; no ``final_obs``.

With ``rng="per_env"`` the three modes must moreover produce the same episodes, sub-env by sub-env:
the same start observations and infos, then the same rewards, flags, observations and infos of each
step (a ``SAME_STEP`` episode's last observation and info from ``final_obs`` / ``final_info``), only
reported at other calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vector_parity import to_numpy

import hashing_gym  # noqa: F401
from hashing_gym.data import load_dataset
from hashing_gym.envs.base import ResetNeededError

NUM_ENVS = 3
BITS = 8
CALLS = 40
ENVS = {  # env id -> (arguments, action width: 0 for BinaryCodeTravel's Discrete(bits + 1))
    "BinaryCodeTravel-v0": ({}, 0),
    "SequentialHashBits-v0": ({"group": 4}, 4),  # 2 steps per episode
    "RankListHash-v0": ({}, BITS),  # 1 step per episode
}
BACKENDS = {"numpy": "cpu", "torch": torch.device("cpu")}
MODES = list(AutoresetMode)


@pytest.fixture(scope="module")
def data():
    return load_dataset("blobs", num_classes=3, n_per_class=20, dim=8, query_per_class=4)


def make(env_id, data, backend, rng, mode):
    return gym.make_vec(
        env_id,
        num_envs=NUM_ENVS,
        vectorization_mode="vector_entry_point",
        dataset=data,
        bits=BITS,
        device=BACKENDS[backend],
        rng=rng,
        autoreset_mode=mode,
        **ENVS[env_id][0],
    )


def random_action(env_id, rng):
    """One sub-env's random valid action (BinaryCodeTravel: a flip, or a stop 1 time in 4)."""
    width = ENVS[env_id][1]
    if width == 0:
        return np.int64(BITS if rng.random() < 0.25 else rng.integers(BITS))
    return rng.integers(0, 2, size=width).astype(np.uint8)


def row(values, i):
    """Sub-env ``i``'s part of batched observations (array or dict of arrays)."""
    return {key: value[i] for key, value in values.items()} if isinstance(values, dict) else values[i]


def row_info(infos, i):
    """Sub-env ``i``'s info: the keys whose ``_key`` mask is set for it (final_obs / final_info aside)."""
    return {
        key: row_info(value, i) if isinstance(value, dict) else value[i]
        for key, value in infos.items()
        if not key.startswith("_") and key not in ("final_obs", "final_info") and infos[f"_{key}"][i]
    }


def mask(infos, key):
    """``infos["_key"]`` as numpy, all False where the key is absent (no sub-env carries it)."""
    return to_numpy(infos[f"_{key}"]) if f"_{key}" in infos else np.zeros(NUM_ENVS, dtype=bool)


def same(a, b):
    """Bitwise equality of nested numpy results (dtype and shape included)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def run_protocol(env_id, data, backend, rng, mode):
    """Run the protocol in ``mode``, checking the mode's rules at every call; each sub-env's events.

    Events of a sub-env: ``("start", obs, info)`` when an episode starts, ``("step", reward,
    terminated, truncated, obs, info)`` for each step it acts (the episode's last obs and info).
    Sub-env ``i`` acts with its own stream of actions, so that every mode gives it the same ones.
    """
    envs = make(env_id, data, backend, rng, mode)
    twin = make(env_id, data, backend, rng, mode) if mode == AutoresetMode.NEXT_STEP else None
    streams = [np.random.default_rng(100 + i) for i in range(NUM_ENVS)]
    other = np.random.default_rng(7)  # what NEXT_STEP's ignored actions are
    events = [[] for _ in range(NUM_ENVS)]
    obs, infos = to_numpy(envs.reset(seed=11))
    if twin is not None:
        assert same(to_numpy(twin.reset(seed=11)), (obs, infos))
    for i in range(NUM_ENVS):
        events[i].append(("start", row(obs, i), row_info(infos, i)))
    ended = np.zeros(NUM_ENVS, dtype=bool)
    for _ in range(CALLS):
        if mode == AutoresetMode.DISABLED and ended.any():
            before = envs.get_state()
            with pytest.raises(ResetNeededError, match="autoreset is disabled"):
                envs.step(np.stack([random_action(env_id, other) for _ in range(NUM_ENVS)]))
            assert same(envs.get_state(), before)  # the refused step changed nothing
            obs, infos = to_numpy(envs.reset(options={"reset_mask": ended}))
            assert (mask(infos, "index") == ended).all()  # the reset's infos: the restarted sub-envs
            for i in np.flatnonzero(ended):
                events[i].append(("start", row(obs, i), row_info(infos, i)))
            ended[:] = False
        pending = ended if mode == AutoresetMode.NEXT_STEP else np.zeros(NUM_ENVS, dtype=bool)
        # A sub-env being reset (NEXT_STEP) takes an action from elsewhere: its own stream is for its steps.
        sources = [other if pending[i] else streams[i] for i in range(NUM_ENVS)]
        actions = np.stack([random_action(env_id, source) for source in sources])
        result = to_numpy(envs.step(actions))
        obs, rewards, terminated, truncated, infos = result
        if twin is not None:  # NEXT_STEP: another action where a sub-env resets changes nothing
            changed = actions.copy()
            for i in np.flatnonzero(pending):
                changed[i] = (actions[i] + 1) % (BITS + 1) if changed.ndim == 1 else 1 - actions[i]
            assert same(to_numpy(twin.step(changed)), result)
        done = terminated | truncated
        if mode == AutoresetMode.SAME_STEP:
            assert (mask(infos, "final_obs") == done).all() and (mask(infos, "final_info") == done).all()
        else:
            assert "final_obs" not in infos and "final_info" not in infos
        assert (rewards[pending] == 0).all() and not done[pending].any()
        for i in range(NUM_ENVS):
            if pending[i]:
                events[i].append(("start", row(obs, i), row_info(infos, i)))
                continue
            if mode == AutoresetMode.SAME_STEP and done[i]:
                last = (row(infos["final_obs"], i), row_info(infos["final_info"], i))
                events[i].append(("step", rewards[i], terminated[i], truncated[i], *last))
                events[i].append(("start", row(obs, i), row_info(infos, i)))
            else:
                now = (row(obs, i), row_info(infos, i))
                events[i].append(("step", rewards[i], terminated[i], truncated[i], *now))
        ended = done & (mode != AutoresetMode.SAME_STEP)
    return events


@pytest.mark.parametrize("rng", ["batched", "per_env"])
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("env_id", list(ENVS))
def test_every_mode_keeps_gymnasiums_rules_and_gives_the_same_episodes(env_id, backend, rng, data):
    runs = {mode: run_protocol(env_id, data, backend, rng, mode) for mode in MODES}
    for mode, events in runs.items():  # every sub-env saw several episodes end, in every mode
        ends = [sum(1 for e in sub if e[0] == "step" and (e[2] or e[3])) for sub in events]
        assert min(ends) >= 2, (mode, ends)
    if rng == "batched":  # the batched stream's draws are grouped by call: episodes differ by mode
        return
    reference = runs[AutoresetMode.NEXT_STEP]
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
        for i, (ours, theirs) in enumerate(zip(runs[mode], reference, strict=True)):
            common = min(len(ours), len(theirs))
            assert common >= CALLS // 2
            for k in range(common):
                assert same(ours[k], theirs[k]), f"{mode.name}, sub-env {i}, event {k}"


def test_the_documented_defaults():
    """README: RankListHash-v0's batched env resets in the same step; the other two in the next."""
    defaults = {
        env_id: gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", bits=8).metadata
        for env_id in ENVS
    }
    assert defaults["RankListHash-v0"]["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert defaults["SequentialHashBits-v0"]["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert defaults["BinaryCodeTravel-v0"]["autoreset_mode"] == AutoresetMode.NEXT_STEP
    sync = gym.make_vec("RankListHash-v0", num_envs=2, vectorization_mode="sync", bits=8)
    assert sync.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # Gymnasium's own vector env


def test_the_third_party_loop_counts_same_step_episodes_right():
    """examples/third_party_loop.py reads metadata["autoreset_mode"]: every same-step call is an episode."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        import third_party_loop
    finally:
        sys.path.pop(0)
    for mode, episodes in (("vector_entry_point", 4 * 10), ("sync", 4 * 10 // 2)):
        stats = third_party_loop.run("RankListHash-v0", "random", 4, 10, 0, mode)
        assert stats["episodes"] == episodes and stats["mean_length"] == 1.0, (mode, stats)
