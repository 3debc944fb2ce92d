"""Checks of the batched RankListHash and SequentialHashBits envs against SyncVectorEnv of single envs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode


def to_numpy(x: Any) -> Any:
    """Tensors (also inside dicts and tuples) as numpy arrays; numpy values unchanged."""
    if isinstance(x, dict):
        return {key: to_numpy(value) for key, value in x.items()}
    if isinstance(x, tuple):
        return tuple(to_numpy(value) for value in x)
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def assert_same(ours: Any, theirs: Any, where: str = "", atol: float = 0.0) -> None:
    """Equality of values, shapes and dtypes (dicts key by key; final_obs row by row).

    Exact, except that float arrays may differ by ``atol`` (for float sums done in another order).
    """
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{where}: {type(ours)} is not a dict"
        assert sorted(ours) == sorted(theirs), f"{where}: keys {sorted(ours)} != {sorted(theirs)}"
        for key in theirs:
            if key == "final_obs":
                # SyncVectorEnv keeps an object array of single observations; ours is batched.
                for i in np.flatnonzero(theirs["_final_obs"]):
                    batch = ours[key]
                    row = {k: v[i] for k, v in batch.items()} if isinstance(batch, dict) else batch[i]
                    assert_same(row, theirs[key][i], f"{where}.final_obs[{i}]", atol)
            else:
                assert_same(ours[key], theirs[key], f"{where}.{key}", atol)
        return
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} != {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != {theirs.dtype}"
    if atol and np.issubdtype(ours.dtype, np.floating):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol, err_msg=where)
        return
    assert np.array_equal(ours, theirs), f"{where}: {ours} != {theirs}"


def make_pair(
    env_id: str, num_envs: int, device: Any, mode: AutoresetMode = AutoresetMode.NEXT_STEP, **kwargs: Any
) -> tuple[gym.vector.VectorEnv, gym.vector.VectorEnv]:
    """Our batched env (per-env streams) and SyncVectorEnv over single envs, same arguments."""
    ours = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        device=device,
        rng="per_env",
        autoreset_mode=mode,
        **kwargs,
    )
    sync = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs
    )
    return ours, sync


def step_both(ours: Any, sync: Any, actions: np.ndarray, where: str, atol: float = 0.0) -> tuple[Any, ...]:
    """One step of both with the same actions; asserts the five results equal; returns ours as numpy."""
    result = to_numpy(ours.step(actions))
    expected = sync.step(actions)
    names = ("obs", "reward", "terminated", "truncated", "info")
    for name, a, b in zip(names, result, expected, strict=True):
        assert_same(a, b, f"{where} {name}", atol)
    return result


def reset_both(ours: Any, sync: Any, where: str, **kwargs: Any) -> tuple[Any, Any]:
    """Reset both with the same arguments; asserts observations and infos equal."""
    options = kwargs.pop("options", None)
    result = to_numpy(ours.reset(options=dict(options) if options else None, **kwargs))
    expected = sync.reset(options=dict(options) if options else None, **kwargs)
    assert_same(result[0], expected[0], f"{where} obs")
    assert_same(result[1], expected[1], f"{where} info")
    return result


def run_parity(ours: Any, sync: Any, steps: int, seed: int = 3, atol: float = 0.0) -> None:
    """Reset both with ``seed`` and step both ``steps`` times with the same random valid actions."""
    reset_both(ours, sync, "reset", seed=seed)
    rng = np.random.default_rng(0)
    for t in range(steps):
        actions = rng.integers(0, 2, size=ours.action_space.shape)
        step_both(ours, sync, actions, f"step {t}", atol)


def rollout(envs: Any, seed: int, steps: int) -> list[Any]:
    """Everything a seeded rollout with fixed random actions returns, as numpy."""
    out = [to_numpy(envs.reset(seed=seed))]
    rng = np.random.default_rng(1)
    for _ in range(steps):
        out.append(to_numpy(envs.step(rng.integers(0, 2, size=envs.action_space.shape))))
    return out


def assert_rollouts_equal(a: list[Any], b: list[Any]) -> None:
    """Two rollouts from :func:`rollout` are identical."""
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        for part_x, part_y in zip(x, y, strict=True):
            assert_same(part_x, part_y, f"step {t}")
