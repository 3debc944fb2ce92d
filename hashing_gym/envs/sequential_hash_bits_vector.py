"""SequentialHashBits-v0, batched: ``num_envs`` copies of DRLIH's MDP stepped together (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from hashing_gym.data import HashingDataset
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
    correctly ordered and tied pairs. Episodes all last ``bits / group`` steps, so the copies end
    together and, with the default ``NEXT_STEP`` autoreset, the step after the last one resets them.

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
    ``autoreset_mode``, ``check_actions``), listed in ``hashing_gym.envs.vector_base``.
    """

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
        self._fused: dict[bool, Any] = {}  # fuse_step: the compiled steps, by whether an episode ends
        self.bits, self.group, self.num_steps = host_params.bits, host_params.group, host_params.num_steps
        self.pairs, self.margin, self.flatten = host_params.pairs, host_params.margin, host_params.flatten
        self._host_params = host_params  # what the per-env numpy streams draw with
        self.params = core.params_on(host_params, self.torch_device)
        self._state = core.init_state(self.params, self.num_envs)
        self._has_bank = np.zeros(self.num_envs, dtype=bool)
        self._steps_taken = np.zeros(self.num_envs, dtype=np.int64)  # the host's copy of the state's step

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
        self._steps_taken[rows] = 0
        return self._info(at)

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, dict[str, Any]]:
        # Episode ends known on the host, without a device sync: the core skips the bank's
        # masked write on the steps that end no episode.
        if every:
            self._steps_taken += 1
            terminated = core.is_terminal(self.params, self._steps_taken)
        else:
            self._steps_taken[rows] += 1
            terminated = core.is_terminal(self.params, self._steps_taken[rows])
        at = None if every else self._index(rows)
        ending = bool(terminated.any())
        if every and self.fuse_step:  # one compiled call per kind of step (ending or not)
            fused = self._fused.get(ending)
            if fused is None:
                fused = self._fused[ending] = self._compile(fused_step, self.params, ending)
            reward, info = fused(self._state, actions)
            return reward, terminated, info
        reward, _, accuracy = core.step(self.params, self._state, at, actions, ending)
        return reward, terminated, {**self._info(at), "accuracy": accuracy}

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
        return {**self._state._asdict(), "has_bank": self._has_bank, "steps_taken": self._steps_taken}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        # In place: the core updates its state arrays in place and some are views of one another.
        for name in core.State._fields:
            if name in arrays:
                self._write(getattr(self._state, name), arrays[name])
        if "has_bank" in arrays:
            self._has_bank[:] = arrays["has_bank"]
        self._steps_taken[:] = arrays["steps_taken"]

    def _observations(self) -> Any:
        return core.observe(self.params, self._state)


def fused_step(
    params: core.Params, ending: bool, state: core.State, actions: Any
) -> tuple[Any, dict[str, Any]]:
    """A step of every row and its infos as one function of tensors, for ``torch.compile`` (``fuse_step``).

    What ``_step_rows`` does for all rows (``core.step``, then the infos of ``_info``); the state is
    updated in place, as there. A test checks that both give the same trajectories bit for bit.
    """
    reward, _, accuracy = core.step(params, state, None, actions, ending)
    info = {"index": state.item, "accuracy": accuracy}
    action = core.teacher_action(params, state)
    return reward, info if action is None else {**info, "expert_action": action}
