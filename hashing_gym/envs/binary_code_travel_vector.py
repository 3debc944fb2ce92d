"""BinaryCodeTravel-v0 batched: n travels through the hypercube, stepped by the MDP's core."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode

from hashing_gym.data import HashingDataset
from hashing_gym.envs.binary_code_travel import BinaryCodeTravelEnv
from hashing_gym.envs.core import binary_code_travel as core
from hashing_gym.envs.vector_base import HashingVectorEnv

BACKENDS: tuple[str, ...] = ("numpy", "torch")


class BinaryCodeTravelVectorEnv(HashingVectorEnv):
    r"""``num_envs`` copies of ``BinaryCodeTravel-v0`` stepped together: numpy on CPU, torch on CUDA.

    The MDP of every sub-environment is exactly ``BinaryCodeTravelEnv``'s: both run the rules of
    ``hashing_gym.envs.core.binary_code_travel`` (this env over ``num_envs`` rows at once), with the
    constants of the single env built from the same keyword arguments (its ``params``, which also
    checks them, and its spaces). Observations, rewards, flags and infos carry a leading
    ``num_envs`` axis. The shared conventions (device, random streams, autoreset, infos) are
    ``HashingVectorEnv``'s (``hashing_gym.envs.vector_base``).

    ## Backends

    ``device="cpu"`` (a string) uses numpy arrays; any ``torch.device``, or a string naming a CUDA
    device, uses torch tensors on that device, so ``device=torch.device("cpu")`` (or
    ``backend="torch"``) runs the torch code on CPU, e.g. for tests without a GPU. With
    ``rng="batched"`` and autoreset ``NEXT_STEP`` or ``SAME_STEP`` a torch step runs over all
    sub-envs with masks and reads nothing back from the device but the range check of the actions
    (skipped with ``check_actions=False``); ``rng="per_env"`` and ``DISABLED`` decide the autoreset
    on the host (one flag array read back per step).

    ## Autoreset and seeding

    ``autoreset_mode`` (also in ``metadata["autoreset_mode"]``; https://farama.org/Vector-Autoreset-Mode):

    - ``NEXT_STEP`` (default, as Gymnasium's own vector envs): the step after a sub-env terminates
      or truncates resets it instead, ignoring its action and returning the start observation with
      reward 0, ``terminated=truncated=False`` and the reset's info.
    - ``SAME_STEP``: the ending step returns the new episode's start observation and info, with the
      episode's last ones in ``infos["final_obs"]`` (batched like the observations) and
      ``infos["final_info"]``, valid where ``infos["_final_obs"]`` is True.
    - ``DISABLED``: stepping while a sub-env's episode has ended raises ``ResetNeededError``; reset
      it with ``reset(options={"reset_mask": mask})``.

    ``rng`` picks where the start states (item and start code) come from:

    - ``"batched"`` (default): one generator draws them for all sub-envs at once, numpy's
      ``self.np_random`` (seeded by ``reset(seed=s)``) or a ``torch.Generator`` on the device
      (seeded ``s``). Same distribution as the single env, a different stream. On torch every
      step (but with ``autoreset_mode=DISABLED``) draws an item and a start code for every sub-env
      and keeps those of the sub-envs that restart.
    - ``"per_env"``: sub-env ``i`` owns a numpy generator and draws exactly what a single
      ``BinaryCodeTravelEnv`` reset with ``seed=s + i`` (or ``seed[i]`` for a list) draws, reset
      after reset, as ``SyncVectorEnv`` does: the vector env then reproduces n single envs step by
      step, autoresets included. The draws loop over the sub-envs being reset (and, on torch,
      copy them to the device), so it is the slow mode, for parity checks.

    ## Infos

    ``reset`` and ``step`` return ``{"index", "d_pos", "d_neg", "expert_action"}``, each an array
    over the sub-envs (int64, int64, float64, int64), the single env's keys, with a bool mask
    ``"_index"``, ``"_d_pos"``, ... of the sub-envs that carry them (all at every step; those reset
    by a ``reset`` with a ``reset_mask``), as ``SyncVectorEnv`` builds them.

    ## Arguments

    >>> import gymnasium as gym
    >>> import hashing_gym
    >>> envs = gym.make_vec("BinaryCodeTravel-v0", num_envs=4, vectorization_mode="vector_entry_point")
    >>> obs, info = envs.reset(seed=0)
    >>> obs["history"].shape, envs.action_space
    ((4, 10, 16), MultiDiscrete([17 17 17 17]))
    >>> obs, reward, terminated, truncated, info = envs.step(info["expert_action"])

    The keyword arguments of ``BinaryCodeTravelEnv`` (``dataset``, ``bits``, ``split``,
    ``codebook``, ``eta``, ``sigma``, ``init``, ``max_steps``, ``history``, ``flatten``, ``seed``)
    mean the same here, plus
    the arguments of every batched env (``num_envs``, ``device``, ``backend``, ``rng``,
    ``autoreset_mode``, ``check_actions``), listed in ``hashing_gym.envs.vector_base``.

    Bad actions (not integers, a wrong shape, out of range) raise ``InvalidActionError``; a step
    before the first reset raises ``ResetNeededError``.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    masked_steps = True
    fuses = True

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        codebook: str = "bch",
        eta: int | None = None,
        sigma: float = 5.0,
        init: str = "random",
        max_steps: int | None = None,
        history: int = 10,
        flatten: bool = False,
        seed: int = 0,
        render_mode: str | None = None,
        device: Any = "cpu",
        backend: str | None = None,
        rng: str = "batched",
        check_actions: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        fuse_step: bool = False,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (the vector env draws nothing), got {render_mode!r}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
        self.single_env = BinaryCodeTravelEnv(
            dataset=dataset,
            bits=bits,
            split=split,
            codebook=codebook,
            eta=eta,
            sigma=sigma,
            init=init,
            max_steps=max_steps,
            history=history,
            flatten=flatten,
            seed=seed,
        )
        self._setup(num_envs, device, backend, rng, autoreset_mode, check_actions, fuse_step)
        params = self.single_env.params
        self.bits = params.bits
        self.eta = params.eta
        self.sigma = params.sigma
        self.init = params.init
        self.max_steps = params.max_steps
        self.history_length = params.history
        self.flatten = params.flatten
        self.codebook = params.codebook
        self.feature_dim = self.single_env.feature_dim
        self.multi_label = params.multi_label
        self.params = core.params_on(params, self._to_backend) if self.torch else params
        n = self.num_envs
        self._state = core.reset(self.params, self._zeros(np.int64), self._zeros(np.int8, (n, self.bits)))
        self._in_step = False  # rng="batched" on torch: whether this step has drawn its start states
        self._step_drawn = False
        self._fused: Any = None  # fuse_step: the compiled masked step (compiled at the first step)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Flip bit ``actions[i]`` of sub-env ``i`` or terminate it (``actions[i] == bits``).

        Sub-envs that ended at the previous step are reset instead (their action is ignored),
        unless ``autoreset_mode`` says otherwise (see the class docstring).

        Args:
            actions: ``num_envs`` integer actions in ``[0, bits]`` (numpy array, list or, on the
                torch backend, a tensor).

        Returns:
            observations, rewards (float64), terminated, truncated (bool) and infos.
        """
        self._in_step, self._step_drawn = True, False
        try:
            result = super().step(actions)
            if self._draws_every_step() and not self._step_drawn:
                self._draw_torch(None)  # the batched torch stream draws once per step, restarts or not
            return result
        finally:
            self._in_step = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the sub-envs (all, or those of ``options["reset_mask"]``); see ``HashingVectorEnv.reset``."""
        unknown = set(options or {}) - {"index", "reset_mask"}
        if unknown:
            raise ValueError(f"options may hold 'index' and 'reset_mask', got unknown keys {sorted(unknown)}")
        result = super().reset(seed=seed, options=options)
        if self.rng == "per_env" and seed is not None:
            # As this env always did: a seed reseeds the sub-envs outside reset_mask too.
            seeds = self._seed_list(seed)
            for i in np.flatnonzero(~self._reset_mask((options or {}).get("reset_mask"))).tolist():
                if seeds[i] is not None:
                    self._rngs[i] = seeding.np_random(seeds[i])[0]
        return result

    def expert_action(self) -> Any:
        """The teacher's action of every sub-env, int64 ``(num_envs,)`` (backend): ``info["expert_action"]``.

        What the single env's ``expert_action()`` returns, for all sub-envs at once in their current state.
        """
        return core.teacher_action(self.params, self._state)

    def teacher_actions(self) -> Any:
        """Bool ``(num_envs, bits + 1)``: the actions the teacher counts as right in each state.

        While d_pos > 0, flipping any bit where the code differs from the target codeword
        (``info["expert_action"]`` is the most rewarding such bit); at d_pos = 0, terminating. A
        diagnostic of how far a policy matches the teacher, whichever right bit it flips first, and
        the label set of ``agents.dqn_torch``'s teacher margin loss.
        """
        return core.teacher_mask(self.params, self._state)

    # ----------------------------------------------------------------------------------------------
    # HashingVectorEnv hooks
    # ----------------------------------------------------------------------------------------------

    def _check_actions(self, actions: Any) -> Any:
        return self._check_discrete_actions(actions, self.bits)

    def _spec(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "eta": self.eta,
            "sigma": self.sigma,
            "init": self.init,
            "max_steps": self.max_steps,
            "history": self.history_length,
            "flatten": self.flatten,
            "multi_label": self.multi_label,
        }

    def _snapshot_arrays(self) -> dict[str, Any]:
        # The core state of every row (item, code, history, distances, steps, target, ...): the
        # codebook and the other constants are rebuilt from the arguments.
        return self._state._asdict()

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        # New arrays, as core.step makes: nothing else holds the state's arrays.
        self._state = core.State(**{name: self._to_backend(arrays[name]) for name in core.State._fields})

    def _reset_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> dict[str, Any]:
        return core.info(self.params, self._start_rows(rows, index))

    def _restart(self, mask: Any) -> None:
        # As HashingVectorEnv._restart, without the restarted rows' infos: the masked step reports
        # every row's info afterwards (_info_all), so a teacher pass over those rows would be lost.
        if self.torch:
            self._restart_where(mask)
            return
        rows = np.flatnonzero(mask)
        if len(rows):
            self._start_rows(rows, None)

    def _start_rows(self, rows: np.ndarray, index: np.ndarray | None) -> core.State:
        """Start episodes on ``rows`` (items ``index`` if given, else drawn); returns their start states."""
        items, codes = self._draw_starts(rows, index)
        start = core.reset(self.params, items, codes)
        every = len(rows) == self.num_envs
        if every:
            self._state = start
        elif self.torch:  # new tensors: the infos returned earlier hold the old ones
            where = self._index(rows)
            self._state = core.State(
                *(full.index_put((where,), part) for full, part in zip(self._state, start, strict=True))
            )
        else:
            for full, part in zip(self._state, start, strict=True):
                full[rows] = part
        return start

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, Any, dict[str, Any]]:
        if every:
            self._state, reward, terminated, truncated = core.step(self.params, self._state, actions)
            state = self._state
        else:
            where = self._index(rows)
            state, reward, terminated, truncated = core.step(
                self.params, core.State(*(part[where] for part in self._state)), actions
            )
            for full, part in zip(self._state, state, strict=True):
                full[where] = part
        return reward, self._to_numpy(terminated), self._to_numpy(truncated), core.info(self.params, state)

    def _observations(self) -> Any:
        return core.observe(self.params, self._state)

    def _step_all(self, actions: Any) -> tuple[Any, Any, Any]:
        self._state, reward, terminated, truncated = core.step(self.params, self._state, actions)
        return reward, terminated, truncated

    def _info_all(self) -> dict[str, Any]:
        info = core.info(self.params, self._state)
        if self.torch:  # every step and restart makes new tensors (core.step, core.restart, index_put)
            return info
        # Copies: numpy autoresets write the state's rows in place, and ``index`` lives across steps.
        return {key: value if key == "expert_action" else value.copy() for key, value in info.items()}

    def _restart_where(self, mask: Any) -> None:
        items, codes = self._draw_torch(None)
        self._state = core.restart(self.params, self._state, mask, items, codes)

    def _step_fused(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        # One compiled call: draws first, in the order the masked step draws them (one per step).
        if self._fused is None:
            same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
            self._fused = self._compile(fused_masked_step, self.params, same_step)
        items, codes = self._draw_torch(None)
        state, ended, obs, reward, terminated, truncated, info, final_obs, final_info = self._fused(
            self._state, self._ended, actions, items, codes
        )
        self._state = state
        infos = self._with_masks(info)
        if final_obs is None:  # NEXT_STEP: these rows restart at the next step
            self._ended = ended
            return obs, reward, terminated, truncated, infos
        return obs, reward, terminated, truncated, self._final_infos(infos, ended, final_obs, final_info)

    # ----------------------------------------------------------------------------------------------
    # Start states, drawn as before the core existed (same generators, order and shapes)
    # ----------------------------------------------------------------------------------------------

    def _draws_every_step(self) -> bool:
        return self.torch and self.rng == "batched" and self.autoreset_mode != AutoresetMode.DISABLED

    def _draw_starts(self, rows: np.ndarray, index: np.ndarray | None) -> tuple[Any, Any]:
        """Items and start codes of ``rows`` (``index``: the items given by ``options["index"]``)."""
        k, b, random = len(rows), self.bits, self.init == "random"
        if self.rng == "per_env":
            # What each single env's reset draws from its np_random: the item, then the code.
            items = np.empty(k, dtype=np.int64)
            codes = np.zeros((k, b), dtype=np.int8)
            for j, i in enumerate(rows.tolist()):
                generator = self._rngs[i]
                items[j] = index[j] if index is not None else generator.integers(self.num_items)
                if random:
                    codes[j] = generator.integers(0, 2, size=b, dtype=np.int8)
            return self._to_backend(items), self._to_backend(codes)
        if self.torch:
            items, codes = self._draw_torch(index is not None)
            where = self._index(rows)
            items = self._to_backend(index) if index is not None else items[where]
            return items, codes[where]
        items = index if index is not None else self.np_random.integers(self.num_items, size=k)
        if random:
            return items, self.np_random.integers(0, 2, size=(k, b), dtype=np.int8)
        return items, np.zeros((k, b), dtype=np.int8)

    def _draw_torch(self, index_given: bool | None) -> tuple[Any, Any]:
        """Items and codes of every sub-env from the device's generator (items only if not given)."""
        import torch

        generator, shape = self._torch_generator(), (self.num_envs, self.bits)
        self._step_drawn = self._in_step
        items = None
        if not index_given:
            items = torch.randint(
                self.num_items, (self.num_envs,), generator=generator, device=self.torch_device
            )
        if self.init != "random":
            return items, torch.zeros(shape, dtype=torch.int8, device=self.torch_device)
        codes = torch.randint(0, 2, shape, generator=generator, device=self.torch_device, dtype=torch.int8)
        return items, codes


def fused_masked_step(
    params: core.Params, same_step: bool, state: core.State, ended: Any, actions: Any, items: Any, codes: Any
) -> tuple[Any, ...]:
    """The masked step of every row as one pure function of tensors, for ``torch.compile`` (``fuse_step``).

    What ``HashingVectorEnv._step_masked`` does with this env's hooks (step every row, then restart
    the rows that ended, at the next step for ``NEXT_STEP`` or at once for ``SAME_STEP``), with the
    start draws ``items`` and ``codes`` made beforehand; a test checks that both give the same
    trajectories bit for bit.

    Returns:
        ``(state, ended, obs, reward, terminated, truncated, info, final_obs, final_info)``; the last two
        are None for ``NEXT_STEP``; ``final_info`` holds zeros in the rows that did not end.
    """
    new, reward, terminated, truncated = core.step(params, state, actions)
    if not same_step:  # the rows that ended at the last step restart: their step above is discarded
        live = ~ended
        reward = reward.where(live, reward.new_zeros(()))
        terminated, truncated = terminated & live, truncated & live
        new = core.restart(params, new, ended, items, codes)
        info = core.info(params, new)
        obs = core.observe(params, new)
        return new, terminated | truncated, obs, reward, terminated, truncated, info, None, None
    ended = terminated | truncated
    final_obs, final_info = core.observe(params, new), core.info(params, new)
    final_info = {key: value.where(ended, value.new_zeros(())) for key, value in final_info.items()}
    new = core.restart(params, new, ended, items, codes)
    info = core.info(params, new)
    return new, ended, core.observe(params, new), reward, terminated, truncated, info, final_obs, final_info
