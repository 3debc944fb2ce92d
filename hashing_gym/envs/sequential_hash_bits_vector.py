"""SequentialHashBits-v0, batched: ``num_envs`` copies of DRLIH's MDP stepped together (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from hashing_gym.data import HashingDataset
from hashing_gym.device import namespace
from hashing_gym.envs.base import check_code_matrix
from hashing_gym.envs.core import expert
from hashing_gym.envs.core import sequential_hash_bits as core
from hashing_gym.envs.sequential_hash_bits import SequentialHashBitsEnv
from hashing_gym.envs.vector_base import HashingVectorEnv


class SequentialHashBitsVectorEnv(HashingVectorEnv):
    r"""``num_envs`` independent copies of ``SequentialHashBits-v0`` in one batched environment.

    The MDP of each copy is exactly :class:`~hashing_gym.envs.sequential_hash_bits.SequentialHashBitsEnv`'s:
    step t sets bits :math:`[t g, (t + 1) g)` of the item's code and is rewarded by the gain in
    triplet accuracy :math:`acc_t - acc_{t-1}` against the episode's P positives and P negatives
    in the copy's code bank (ties 1/2, all :math:`P \times P` pairs, the same ``margin``). Each
    copy has its own code bank (``code_bank``: a (num_envs, N, bits) copy; ``set_code_bank`` takes
    one (N, bits) matrix for all copies or one per copy). With ``rng="per_env"`` sub-env ``i`` of
    ``reset(seed=s)`` follows the single env reset with ``seed=s + i`` step by step
    (``hashing_gym.envs.vector_base`` states the conventions: devices, seeding, autoreset, infos).

    The rules are those of the MDP core, :mod:`hashing_gym.envs.core.sequential_hash_bits`, which
    the single env runs on one row and this env on ``num_envs`` rows: a step writes every copy's
    group of bits, adds the group's differences with the ``2P`` reference codes of each copy to the
    distances kept over the decided bits (``set_code_bank`` recomputes them from the new bank, so a
    bank replaced in the middle of an episode acts as it does on the single env), and counts the
    correctly ordered and tied pairs. Episodes all last T = ``bits / group`` steps, so the copies
    end together and, with the default ``NEXT_STEP`` autoreset, the step after the last one resets
    them (a ``reset`` with a ``reset_mask`` puts the copies it resets out of step with the others).

    Masked steps (ours; ``HashingVectorEnv``'s): on numpy, and on torch with ``rng="batched"``, with
    autoreset ``NEXT_STEP`` or ``SAME_STEP``, a step runs over every copy at once and restarts the
    copies whose episode ended by masked writes. The host knows, without asking the device, how
    many copies end and restart at each step (every episode lasts T steps: a clock of the resets),
    so on torch a step reads nothing back from the device (with ``check_actions=False``; but for
    multi-label data, whose restarts draw their references on the host from the items drawn on the
    device). Restarts draw what a reset of the restarting copies draws, in the same order (the
    batched torch stream of the row-by-row step before). On torch, ``SAME_STEP`` infos hold
    ``final_obs`` and ``final_info`` at every step, masked (all False where no copy ended).
    ``fuse_step=True`` compiles this step with ``torch.compile``, one graph per kind of step
    (whether an episode ends; whether no copy, every copy or some restart), bit for bit the same.

    Infos: ``index``, ``accuracy`` and ``expert_action`` (each sub-env's next group of its item's
    class codeword, int8 (num_envs, group); ours, see ``SequentialHashBitsEnv``), with ``_key`` masks.

    Memory: each copy holds its bank unpacked, ``num_envs x N x bits`` bytes.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import hashing_gym
    >>> envs = gym.make_vec(
    ...     "SequentialHashBits-v0", num_envs=4, vectorization_mode="vector_entry_point", group=8
    ... )
    >>> obs, infos = envs.reset(seed=0)
    >>> obs["code"].shape, obs["step"].tolist(), envs.action_space.shape
    ((4, 16), [0, 0, 0, 0], (4, 8))
    >>> total = np.zeros(4)
    >>> for _ in range(2):
    ...     obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 8), dtype=np.int8))
    ...     total += rewards
    >>> bool(terminated.all()), np.allclose(total, infos["accuracy"] - 0.5)
    (True, True)

    The keyword arguments of ``SequentialHashBits-v0`` (``dataset``, ``bits``, ``split``, ``group``,
    ``pairs``, ``margin``, ``flatten``) mean the same here, plus
    the arguments of every batched env (``num_envs``, ``device``, ``backend``, ``rng``,
    ``autoreset_mode``, ``check_actions``, ``fuse_step``), listed in ``hashing_gym.envs.vector_base``.
    """

    masked_steps = True
    fuses = True

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        group: int = 1,
        pairs: int = 16,
        margin: float = 0.0,
        flatten: bool = False,
        render_mode: str | None = None,
        device: Any = "cpu",
        backend: str | None = None,
        rng: str = "batched",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        check_actions: bool = True,
        fuse_step: bool = False,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None for the batched env, got {render_mode!r}")
        arguments = {"bits": bits, "group": group, "pairs": pairs, "margin": margin, "flatten": flatten}
        host_params = core.make_params(dataset, split, **arguments)
        # The single env gives the base class its spaces and split; its state is never read.
        self.single_env = SequentialHashBitsEnv(dataset=dataset, split=split, **arguments)
        self._setup(num_envs, device, backend, rng, autoreset_mode, check_actions, fuse_step)
        # fuse_step: the compiled masked steps, by (whether an episode ends, which rows restart).
        self._fused: dict[tuple[bool, str], Any] = {}
        self.bits, self.group, self.num_steps = host_params.bits, host_params.group, host_params.num_steps
        self.pairs, self.margin, self.flatten = host_params.pairs, host_params.margin, host_params.flatten
        self._host_params = host_params  # what the per-env numpy streams draw with
        self.params = core.params_on(host_params, self.torch_device)
        self._state = core.init_state(self.params, self.num_envs)
        self._has_bank = np.zeros(self.num_envs, dtype=bool)
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        self._clock = EpisodeClock(self.num_envs, self.num_steps, same_step)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Set the next ``group`` bits of every sub-env (see ``HashingVectorEnv.step`` for autoreset).

        Args:
            actions: 0/1 of shape (num_envs, group) (numpy or, on the torch backend, a tensor).

        Returns:
            Batched ``(observations, rewards, terminations, truncations, infos)``; rewards are float64.
        """
        self._clock.advance()
        try:
            return super().step(actions)
        except BaseException:
            self._clock.advance(-1)  # refused actions (or a reset needed) leave the env as it was
            raise

    # ----------------------------------------------------------------------------------------------
    # The code banks
    # ----------------------------------------------------------------------------------------------

    @property
    def code_bank(self) -> Any:
        """uint8 (num_envs, N, bits) copy of every sub-env's code bank, or None before they all exist."""
        if not self._has_bank.all():
            return None
        return self._state.bank.clone() if self.torch else self._state.bank.copy()

    def set_code_bank(self, codes: Any) -> None:
        """Replace the code bank of every sub-env, e.g. with an agent's greedy codes of the split.

        Args:
            codes: integer or bool array of 0/1, (N, bits) for the same bank in every sub-env or
                (num_envs, N, bits) for one bank each (numpy, or a tensor for the torch backend).

        Raises:
            ValueError: if ``codes`` has another shape, a non-integer dtype, or a value other than 0 and 1.
        """
        arr = self._to_numpy(codes)
        if arr.ndim == 2:
            bank = check_code_matrix(arr, self.num_items, self.bits)
        elif arr.ndim == 3 and arr.shape[0] == self.num_envs:
            bank = np.stack([check_code_matrix(a, self.num_items, self.bits) for a in arr])
        else:
            raise ValueError(
                f"codes must have shape {(self.num_items, self.bits)} or "
                f"{(self.num_envs, self.num_items, self.bits)}, got shape {arr.shape}"
            )
        core.set_bank(self.params, self._state, None, self._to_backend(bank))
        self._has_bank[:] = True

    # ----------------------------------------------------------------------------------------------
    # The batched MDP: the core's, over the rows
    # ----------------------------------------------------------------------------------------------

    def _reset_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> dict[str, Any]:
        return self._info(self._start_rows(rows, seeded, index))

    def _start_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> Any:
        """Start episodes on ``rows`` (``_reset_rows`` without the infos); returns ``rows`` for the core."""
        fresh = seeded | ~self._has_bank[rows]
        params, given, host_draws = self.params, None if index is None else self._to_backend(index), None
        if self.rng == "per_env":
            params, given = self._host_params, index  # drawn on the host, then moved
            draws: Any = core.RowDraws([self._rngs[i] for i in rows], fresh)
        elif self.torch:
            draws = core.TorchDraws(self._torch_generator())
            # Multi-label references are drawn on the host, from the numpy stream.
            host_draws = core.NumpyDraws(self.np_random) if params.multi_label else None
        else:
            draws = core.NumpyDraws(self.np_random)
        banks, items, references = core.draw_start(
            params, draws, len(rows), int(fresh.sum()), given, host_draws
        )
        if self.rng == "per_env":  # drawn on the host
            banks = None if banks is None else self._to_backend(banks)
            items, references = self._to_backend(items), self._to_backend(references)
        if banks is not None:
            core.set_bank(self.params, self._state, self._rows(rows[fresh]), banks)
            self._has_bank[rows[fresh]] = True
        at = self._rows(rows)
        core.reset(self.params, self._state, at, items, references)
        self._clock.start(rows)
        return at

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, dict[str, Any]]:
        # The unmasked step (rng="per_env" on torch, autoreset DISABLED). Episode ends known on the
        # host, without a device sync: the core skips the bank's masked write on the steps that end
        # no episode.
        terminated = self._clock.ended(None if every else rows)
        at = None if every else self._index(rows)
        reward, _, accuracy = core.step(self.params, self._state, at, actions, bool(terminated.any()))
        return reward, terminated, {**self._info(at), "accuracy": accuracy}

    # Masked steps (numpy, and torch with rng="batched"; autoreset NEXT_STEP or SAME_STEP): every
    # row at once. The host's clock tells how many rows end and restart, so that no step reads the
    # device to learn it; the device's masks tell which.

    def _step_all(self, actions: Any) -> tuple[Any, Any, Any]:
        restarting, n = self._clock.restarting(), self.num_envs
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        if not same_step and restarting == n:  # every row ended at the last step: none steps
            return self._zeros(np.float64), self._zeros(np.bool_), self._zeros(np.bool_)
        # NEXT_STEP: the rows that ended at the last step are stepped too (their step is discarded).
        ended = self._ended if restarting and not same_step else None
        ending = self._clock.ending() > 0
        reward, terminated, _ = core.step(self.params, self._state, None, actions, ending, ended)
        return reward, terminated, self._zeros(np.bool_)

    def _info_all(self) -> dict[str, Any]:
        return infos_of(self.params, self._state)

    def _restart(self, mask: Any) -> None:
        # As HashingVectorEnv._restart, without the restarted rows' infos (_info_all reports every
        # row's), and nothing at all on the steps where the clock says no row restarts.
        if not self._clock.restarting():
            return
        if self.torch:
            self._restart_where(mask)
        else:
            self._start_rows(np.flatnonzero(mask), np.zeros(int(mask.sum()), dtype=bool), None)

    def _restart_where(self, mask: Any) -> None:
        count = self._clock.restarting()
        items, references, uniforms = self._restart_draws(mask, count)
        references = start_references(self.params, items, references, uniforms)
        if count == self.num_envs:  # the usual lockstep case: plain writes, as a reset of every row
            core.reset(self.params, self._state, None, items, references)
        else:
            core.restart(self.params, self._state, mask, items, references)

    def _restart_draws(self, mask: Any, count: int) -> tuple[Any, Any, Any]:
        """The random starts of the ``count`` rows of ``mask`` that restart, laid on every row.

        Drawn as ``_reset_rows`` draws them for those ``count`` rows (the same generator calls,
        shapes and order: the batched torch stream of the unmasked step), then gathered so that row
        ``i`` holds the draws of its rank among the restarting rows (nothing is read back).

        Returns:
            int64 (n,) items, and either int64 (n, 2P) references (multi-label: drawn on the host,
            which reads the items back) or the (n, P) uniforms of :func:`core.reference_uniforms`.
        """
        import torch

        draws = core.TorchDraws(self._torch_generator())
        if self.params.multi_label:
            host_draws = core.NumpyDraws(self.np_random)
            _, items, references = core.draw_start(self.params, draws, count, 0, None, host_draws)
            parts: list[Any] = [items, references]
        else:
            items = draws.integers(self.num_items, (count,))
            parts = [items, *core.reference_uniforms(self.params, draws, count)]
        if count < self.num_envs:
            rank = (torch.cumsum(mask, 0) - 1).clamp(min=0)
            parts = [part[rank] for part in parts]
        if self.params.multi_label:
            return parts[0], parts[1], None
        return parts[0], None, tuple(parts[1:])

    def _step_fused(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        # One compiled call per kind of step; the restarts' draws first, as the masked step draws them.
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        count, ending = self._clock.restarting(), self._clock.ending() > 0
        restart = "" if not count else "all" if count == self.num_envs else "some"
        inputs: tuple[Any, Any, Any] = (None, None, None)
        if restart:
            # The rows that restart: those that end now (SAME_STEP), or ended at the last step.
            mask = self._state.step == self.num_steps - 1 if same_step else self._ended
            inputs = self._restart_draws(mask, count)
        # SAME_STEP restarts run as a second compiled call: in one graph, inductor on CUDA let the
        # restart's in-place writes overtake the copies of the final observation (a CUDA test caught it).
        split = same_step and restart
        fused = self._fused.get((ending, "" if split else restart))
        if fused is None:
            fused = self._compile(fused_masked_step, self.params, same_step, ending, "" if split else restart)
            self._fused[(ending, "" if split else restart)] = fused
        obs, reward, terminated, truncated, info, ended, final_obs, final_info = fused(
            self._state, self._ended, actions, *(inputs if not split else (None, None, None))
        )
        # The observations' code and decided mask are copied here, outside the graph, before anything
        # writes the state again: on CUDA, inductor returned the state's own arrays (updated in place by
        # the graph) for the graph's copies.
        obs, final_obs = _own_copies(obs), _own_copies(final_obs)
        if split:
            then = self._fused.get(("restart", restart))
            if then is None:
                then = self._fused[("restart", restart)] = self._compile(fused_restart, self.params, restart)
            info, obs = then(self._state, ended, *inputs)
            obs = _own_copies(obs)
        infos = self._with_masks(info)
        if not same_step:  # NEXT_STEP: these rows restart at the next step
            self._ended = ended
            return obs, reward, terminated, truncated, infos
        return obs, reward, terminated, truncated, self._final_infos(infos, ended, final_obs, final_info)

    def _rows(self, rows: np.ndarray) -> Any:
        """``rows`` for the core: None (every row: slices, no index arrays) or an index on the backend."""
        return None if len(rows) == self.num_envs else self._index(rows)

    def _info(self, at: Any) -> dict[str, Any]:
        """The info arrays of rows ``at`` (None: all; ``_add_info`` copies them)."""
        if at is None:
            info = {"index": self._state.item, "accuracy": self._state.accuracy}
        else:
            info = {"index": self._state.item[at], "accuracy": self._state.accuracy[at]}
        action = core.teacher_action(self.params, self._state, at)
        return info if action is None else {**info, "expert_action": action}

    def expert_action(self) -> Any:
        """Our expert's actions: each sub-env's next group of its class codeword, int8 (num_envs, group).

        The class docstring of ``SequentialHashBitsEnv`` says why it is ours and what it earns.

        Raises:
            ValueError: where ``2 ** bits`` is below the number of classes (no codebook: no expert).
        """
        action = core.teacher_action(self.params, self._state)
        return expert.require(action, self.bits, self.single_env.dataset.num_classes)

    def _check_actions(self, actions: Any) -> Any:
        return self._check_binary_actions(actions, self.group)

    _bank_arrays = ("bank", "has_bank")

    def _spec(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "group": self.group,
            "pairs": self.pairs,
            "margin": self.margin,
            "flatten": self.flatten,
        }

    def _snapshot_arrays(self) -> dict[str, Any]:
        # The core state (banks, items, references, codes so far, distances, accuracies) and the
        # host's bookkeeping of banks and episode lengths.
        return {**self._state._asdict(), "has_bank": self._has_bank, "steps_taken": self._clock.steps()}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        # In place: the core updates its state arrays in place and some are views of one another.
        for name in core.State._fields:
            if name in arrays:
                self._write(getattr(self._state, name), arrays[name])
        if "has_bank" in arrays:
            self._has_bank[:] = arrays["has_bank"]
        self._clock.set_steps(arrays["steps_taken"])

    def _observations(self) -> Any:
        return core.observe(self.params, self._state)


class EpisodeClock:
    """How many steps each row's episode has taken, on the host, in O(1) per step.

    Every episode lasts T steps, so the host knows which rows end and restart without asking the
    device. A row whose episode started at tick t0 has taken (t - t0) mod L steps at tick t, where
    L = T + 1 when an ended episode waits a step before it restarts (``NEXT_STEP``; ``DISABLED``,
    where an ended row is not stepped until it is reset) and L = T when it restarts on its last
    step (``SAME_STEP``): a step moves the tick, not the rows, and only resets move rows, into the
    cohort of the current tick. A step advances the tick first: counts and steps during a step are
    those of the rows once the step is done.
    """

    def __init__(self, num_rows: int, num_steps: int, same_step: bool) -> None:
        self.num_steps = num_steps
        self.length = num_steps if same_step else num_steps + 1
        self.tick = 0
        self.origin = np.zeros(num_rows, dtype=np.int64)  # each row's start tick, mod length
        self.cohorts = np.bincount(self.origin, minlength=self.length)  # rows per start tick

    def advance(self, by: int = 1) -> None:
        """Move the tick: ``by=1`` as a step begins, ``-1`` to take back a step that was refused."""
        self.tick = (self.tick + by) % self.length

    def steps(self, rows: np.ndarray | None = None) -> np.ndarray:
        """int64 steps taken in their episode by ``rows`` (None: all), in [0, T]."""
        origin = self.origin if rows is None else self.origin[rows]
        return (self.tick - origin) % self.length

    def count(self, steps: int) -> int:
        """How many rows have taken ``steps`` steps in their episode."""
        return int(self.cohorts[(self.tick - steps) % self.length])

    def restarting(self) -> int:
        """Rows whose new episode starts in this step: those that ended at the last (NEXT_STEP), or now."""
        return self.count(0)

    def ending(self) -> int:
        """Rows that take their last step in this step."""
        return self.count(self.num_steps % self.length)

    def ended(self, rows: np.ndarray | None = None) -> np.ndarray:
        """bool: whether ``rows`` (None: all) took their last step in this step."""
        return self.steps(rows) == self.num_steps % self.length

    def start(self, rows: np.ndarray) -> None:
        """``rows`` (distinct host indices) start an episode now: by a reset, or an unmasked autoreset."""
        np.subtract.at(self.cohorts, self.origin[rows], 1)
        self.origin[rows] = self.tick
        self.cohorts[self.tick] += len(rows)

    def set_steps(self, steps: np.ndarray) -> None:
        """Every row's steps taken (a snapshot's ``steps_taken``)."""
        self.origin = (self.tick - np.asarray(steps, dtype=np.int64)) % self.length
        self.cohorts = np.bincount(self.origin, minlength=self.length)


def infos_of(params: core.Params, state: core.State) -> dict[str, Any]:
    """Every row's infos: item and accuracy (copies: the state changes in place), the expert's next group."""
    xp = namespace(state.code)
    info = {"index": xp.asarray(state.item, copy=True), "accuracy": xp.asarray(state.accuracy, copy=True)}
    action = core.teacher_action(params, state)
    return info if action is None else {**info, "expert_action": action}


def start_references(params: core.Params, items: Any, references: Any, uniforms: Any) -> Any:
    """The references of restarting rows: as drawn (``references``), or from their ``uniforms``.

    ``uniforms``: those of :func:`core.reference_uniforms` (single-label), scaled by
    :class:`core.ReplayDraws` into what ``core.sample_references`` would have drawn.
    """
    if references is not None:
        return references
    return core.sample_references(params, items, core.ReplayDraws(uniforms))


def fused_masked_step(
    params: core.Params,
    same_step: bool,
    ending: bool,
    restart: str,
    state: core.State,
    ended: Any,
    actions: Any,
    items: Any,
    references: Any,
    uniforms: Any,
) -> tuple[Any, ...]:
    """The masked step of every row as one function of tensors, for ``torch.compile`` (``fuse_step``).

    What ``HashingVectorEnv._step_masked`` does with this env's hooks (step every row, then restart
    the rows that ended, at the next step for ``NEXT_STEP`` or at once for ``SAME_STEP``), with the
    restarts' draws made beforehand (``_restart_draws``); the state is updated in place, as there. A
    test checks that both give the same trajectories bit for bit.

    Args:
        params: the MDP's params (constants of the compiled graph).
        same_step: the autoreset mode is ``SAME_STEP`` (else ``NEXT_STEP``).
        ending: whether some row takes its last step (the bank's masked write; known on the host).
        restart: ``""`` (no row restarts), ``"all"`` (every row) or ``"some"`` (the rows that
            ended at the last step for ``NEXT_STEP``, that end now for ``SAME_STEP``).
        state: the state, updated in place.
        ended: bool (n,) the rows that ended at the last step (``NEXT_STEP``).
        actions: 0/1 (n, g).
        items: int64 (n,) the restarting rows' items from ``_restart_draws`` (None when none restarts).
        references: int64 (n, 2P) their references where drawn on the host (multi-label), else None.
        uniforms: the uniforms their references come from (single-label), else None.

    Returns:
        ``(obs, reward, terminated, truncated, info, ended, final_obs, final_info)``: ``ended`` the
        rows that end at this step; the last two None for ``NEXT_STEP``; ``final_info`` holds zeros
        in the rows that did not end.
    """
    masked = restart == "some" and not same_step  # some rows ended at the last step: masked out
    if restart == "all" and not same_step:  # every row ended at the last step: none steps
        reward = state.accuracy.new_zeros(state.accuracy.shape)
        terminated = state.valid.new_zeros(state.valid.shape)
    else:
        reward, terminated, _ = core.step(params, state, None, actions, ending, ended if masked else None)
        if masked:
            reward = reward.where(~ended, reward.new_zeros(()))
    truncated = terminated.new_zeros(terminated.shape)
    done = terminated | truncated
    final_obs = final_info = None
    if same_step:
        final_obs = core.observe(params, state)
        final_info = {
            key: value.where(done.reshape((-1,) + (1,) * (value.ndim - 1)), value.new_zeros(()))
            for key, value in infos_of(params, state).items()
        }
    if restart:
        info, obs = fused_restart(
            params, restart, state, done if same_step else ended, items, references, uniforms
        )
    else:
        info, obs = infos_of(params, state), core.observe(params, state)
    return obs, reward, terminated, truncated, info, done, final_obs, final_info


def _own_copies(obs: Any) -> Any:
    """Observations with their ``code`` and ``decided`` copied (None and flat arrays as they are)."""
    if not isinstance(obs, dict):
        return obs
    return {key: value.clone() if key in ("code", "decided") else value for key, value in obs.items()}


def fused_restart(
    params: core.Params,
    restart: str,
    state: core.State,
    mask: Any,
    items: Any,
    references: Any,
    uniforms: Any,
) -> tuple[Any, Any]:
    """The restarts of a masked step (``restart``: ``"all"`` or ``"some"``, the rows of ``mask``), in place.

    Part of :func:`fused_masked_step`, and its own compiled call after a ``SAME_STEP`` step's final
    observation (see ``_step_fused``).

    Returns:
        ``(info, obs)`` of every row after the restarts.
    """
    references = start_references(params, items, references, uniforms)
    if restart == "all":
        core.reset(params, state, None, items, references)
    else:
        core.restart(params, state, mask, items, references)
    return infos_of(params, state), core.observe(params, state)
