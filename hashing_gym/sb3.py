"""stable-baselines3 on the batched environments: an SB3 ``VecEnv`` over one ``HashingVectorEnv``.

SB3 cannot consume a Gymnasium ``VectorEnv`` (its own ``VecEnv`` resets a finished copy in the same
step and returns the last observation as ``info["terminal_observation"]``), so SB3 users otherwise get
``DummyVecEnv``: one Python env object per copy, stepped in a loop. :func:`make_vec_env` gives SB3 the
batched implementation instead (one array step for all copies) with SB3's semantics:

- ``reset()`` seeds copy ``i`` with ``seed + i`` after ``venv.seed(seed)`` (as ``DummyVecEnv`` does),
  and returns the batched first observations; ``reset_infos`` holds their infos.
- ``step_wait()`` returns ``(obs, rewards, dones, infos)``: ``dones = terminated | truncated``; a copy
  that finished is reset in the same step (Gymnasium's ``SAME_STEP`` autoreset), its ``obs`` row is
  the new episode's first observation, and its ``infos[i]`` is the finished step's info plus
  ``"terminal_observation"`` (the last observation) and ``"TimeLimit.truncated"`` (truncated and not
  terminated); ``reset_infos[i]`` is the new episode's info.
- rewards are float32 and observations numpy arrays (copied from the device when the batched env
  runs on CUDA), as SB3's buffers expect.

With ``rng="per_env"`` (the default here) copy ``i`` follows exactly the trajectory that
``DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * n_envs)`` gives it (``tests/test_sb3_adapter.py``
checks observations, rewards, dones and infos step by step); ``rng="batched"`` draws the random starts
of all copies at once (faster at thousands of copies, another random stream). ``monitor=True`` wraps
the result in SB3's ``VecMonitor`` (episode returns and lengths in ``infos[i]["episode"]``), which is
what SB3's logger reads for ``rollout/ep_rew_mean``.

Methods of the batched env answer for all copies at once: :meth:`HashingVecEnv.batch_method` calls
one and returns its result (``batch_method("expert_action")``: BinaryCodeTravel's teacher action of
every copy, an ``(n_envs,)`` array). :meth:`HashingVecEnv.get_state` and
:meth:`HashingVecEnv.set_state` are the batched env's snapshots (``HashingVectorEnv.get_state``):
what ``agents.sb3_state`` checkpoints for exact resumes.

>>> from stable_baselines3 import PPO
>>> from hashing_gym.sb3 import make_vec_env
>>> venv = make_vec_env("RankListHash-v0", n_envs=4, bits=8)
>>> model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0).learn(64)
>>> venv.num_envs, model.num_timesteps
(4, 64)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from hashing_gym.envs.vector_base import HashingVectorEnv

__all__ = ["HashingVecEnv", "make_vec_env"]


def _to_numpy(value: Any) -> Any:
    """A numpy array of a batch (a torch tensor is copied to the host), dicts item by item."""
    if isinstance(value, dict):
        return {key: _to_numpy(item) for key, item in value.items()}
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _rows(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's batched infos (arrays with ``_key`` masks) as one dict per copy."""
    rows: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = np.asarray(_to_numpy(infos.get(f"_{key}", np.ones(num_envs, dtype=bool))), dtype=bool)
        if isinstance(value, dict):  # a nested batched info (final_info)
            nested = _rows(value, num_envs)
            for i in np.flatnonzero(mask):
                rows[i][key] = nested[i]
            continue
        value = _to_numpy(value)
        items = value.tolist() if value.ndim == 1 else value  # one conversion to Python scalars per key
        for i in np.flatnonzero(mask).tolist():
            rows[i][key] = items[i]
    return rows


class HashingVecEnv(VecEnv):
    """An SB3 ``VecEnv`` stepping one batched hashing environment (see the module docstring).

    Args:
        venv: a ``HashingVectorEnv`` built with ``autoreset_mode=SAME_STEP`` (what :func:`make_vec_env`
            builds); its copies become this ``VecEnv``'s environments.
    """

    def __init__(self, venv: HashingVectorEnv) -> None:
        if not isinstance(venv, HashingVectorEnv):
            raise TypeError(f"venv must be a HashingVectorEnv, got {type(venv).__name__}")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"venv must autoreset in the same step (autoreset_mode='SameStep'), as SB3 expects; "
                f"got {venv.autoreset_mode.name}"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # SB3's VecEnv API --------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every copy (with the seeds and options given since the last reset); their observations."""
        seed = self._seeds[0]
        options = self._options[0] or None
        if any(o != self._options[0] for o in self._options):
            raise ValueError("HashingVecEnv resets every copy with one options dict; got different ones")
        obs, infos = self.venv.reset(seed=seed, options=options)
        self.reset_infos = _rows(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return _to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the copies' actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every copy; finished copies restart in the same step (module docstring)."""
        if self._actions is None:
            raise RuntimeError("step_wait called without step_async")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        obs = _to_numpy(obs)
        terminated = np.asarray(_to_numpy(terminated), dtype=bool)
        truncated = np.asarray(_to_numpy(truncated), dtype=bool)
        dones = terminated | truncated
        rows = _rows({k: v for k, v in infos.items() if "final_" not in k}, self.num_envs)
        if dones.any():
            final_obs = _to_numpy(infos["final_obs"])
            final_info = _rows(infos["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = rows[i]
                row = final_info[i]
                row["terminal_observation"] = (
                    {key: value[i] for key, value in final_obs.items()}
                    if isinstance(final_obs, dict)
                    else final_obs[i]
                )
                row["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                rows[i] = row
        for i in np.flatnonzero(~dones):
            rows[i]["TimeLimit.truncated"] = False
        return obs, np.asarray(_to_numpy(rewards), dtype=np.float32), dones, rows

    def close(self) -> None:
        """Close the batched environment."""
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of the batched env, once per copy asked for (the copies share one object)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batched env; only for all copies at once."""
        if len(list(self._indices(indices))) != self.num_envs:
            raise ValueError("HashingVecEnv sets attributes of all copies at once (indices=None)")
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the batched env once; its result, once per copy asked for."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def batch_method(self, method_name: str, *method_args: Any, **method_kwargs: Any) -> Any:
        """Call a method of the batched env once; its result for all copies (tensors as numpy arrays).

        ``env_method`` gives SB3's per-copy form (the result once per copy); this one is for methods
        whose result already has a row per copy, such as ``expert_action``.
        """
        return _to_numpy(getattr(self.venv, method_name)(*method_args, **method_kwargs))

    def get_state(self) -> dict[str, Any]:
        """A snapshot of every copy between two steps: the batched env's ``get_state()``.

        (The adapter itself keeps nothing between steps that decides how they continue: pending
        seeds and options are spent by the first ``reset``, ``reset_infos`` only inform.)
        """
        return self.venv.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` snapshot of an adapter built with the same arguments.

        Raises:
            ValueError: from the batched env, for a snapshot of another env or of other arguments.
        """
        self.venv.set_state(state)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No copy is a Gymnasium wrapper (they are rows of one array env)."""
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    *,
    seed: int | None = None,
    device: Any = "cpu",
    rng: str = "per_env",
    monitor: bool = True,
    **kwargs: Any,
) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of a hashing env, stepped as one batch.

    Args:
        env_id: ``"BinaryCodeTravel-v0"``, ``"SequentialHashBits-v0"`` or ``"RankListHash-v0"``.
        n_envs: number of copies.
        seed: if given, the first ``reset()`` seeds copy ``i`` with ``seed + i`` (SB3's ``make_vec_env``).
        device: where the batched env steps: ``"cpu"`` (numpy), ``"cuda[:N]"`` or ``"auto"`` (torch);
            observations reach SB3 as numpy arrays either way.
        rng: ``"per_env"`` (each copy draws as the single env does: ``DummyVecEnv``'s trajectories) or
            ``"batched"`` (one generator for all copies).
        monitor: wrap in SB3's ``VecMonitor`` (episode statistics for SB3's logger).
        **kwargs: the env's own arguments (``dataset``, ``bits``, ...).

    Raises:
        ValueError: for an id that is not a hashing env, or bad env arguments (named by the env).
    """
    venv = gym.make_vec(
        env_id,
        num_envs=n_envs,
        vectorization_mode="vector_entry_point",
        device=device,
        rng=rng,
        autoreset_mode=AutoresetMode.SAME_STEP,
        **kwargs,
    )
    if not isinstance(venv, HashingVectorEnv):
        raise ValueError(f"{env_id!r} is not a hashing-gym environment with a batched implementation")
    vec_env: VecEnv = HashingVecEnv(venv)
    if seed is not None:
        vec_env.seed(seed)
    return VecMonitor(vec_env) if monitor else vec_env

