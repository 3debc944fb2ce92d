"""RankListHash-v0, batched: ``num_envs`` copies of the listwise bandit stepped together (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import check_code_matrix
from hashing_gym.envs.core import expert
from hashing_gym.envs.core import rank_list_hash as core
from hashing_gym.envs.rank_list_hash import RankListHashEnv
from hashing_gym.envs.vector_base import HashingVectorEnv
from hashing_gym.ranking import unpack_codes


class RankListHashVectorEnv(HashingVectorEnv):
    r"""``num_envs`` independent copies of ``RankListHash-v0`` in one batched environment.

    The MDP of each copy is exactly :class:`~hashing_gym.envs.rank_list_hash.RankListHashEnv`'s:
    one step per episode, the action is the item's code, the reward the (tie-aware, by default)
    average precision of that code ranked against the copy's database codes of all other items.
    Each copy has its own database (with ``database="bank"`` its own bank of last acted codes);
    ``database_codes`` is a (num_envs, N, bits) copy of them and ``set_database_codes`` takes one
    (N, bits) matrix for all copies or one per copy. With ``rng="per_env"`` sub-env ``i`` of
    ``reset(seed=s)`` follows the single env reset with ``seed=s + i`` step by step
    (``hashing_gym.envs.vector_base`` states the conventions: devices, seeding, autoreset, infos).

    A step runs the rules of ``hashing_gym.envs.core.rank_list_hash`` (the single env's) on all
    ``num_envs`` rows at once: :mod:`hashing_gym.ranking`'s packed functions count, per distance,
    the items and the relevant items of each list (the item's own row left out) against each
    copy's database and turn the histograms into AP, so rewards agree with the single env's
    exactly on numpy. On torch everything stays on the device (XOR, popcount, ``bincount``, the
    same AP formula; ``ties="stable"`` sorts each list there), and float64 row sums may differ
    from numpy's in the last bit (1e-16).

    ## Autoreset: same-step by default (our choice)

    Every episode lasts one step. This env therefore defaults to ``autoreset_mode=SAME_STEP``
    (``metadata["autoreset_mode"]`` says so): every ``step`` acts for every sub-env, returns the
    reward of the code just acted and the *next* item's observation, and puts the acted item's
    observation and info in ``infos["final_obs"]`` / ``infos["final_info"]`` (masks
    ``infos["_final_obs"]``, all True). With Gymnasium's usual ``NEXT_STEP`` (the default of
    ``SyncVectorEnv`` and of the other two batched envs, and what a Gymnasium 1.x loop assumes unless
    it reads ``metadata["autoreset_mode"]``) every other call would only reset: reward 0, actions
    ignored, half the calls wasted. We weighed that a loop written for ``NEXT_STEP`` and run on
    this env without reading the metadata drops every other (valid) step's reward: it loses data,
    it never mixes episodes, and every one-step episode's reward is also in its own ``step`` return.
    ``autoreset_mode="NextStep"`` (or ``"Disabled"``) restores Gymnasium's default behaviour; the
    ``"sync"`` and ``"async"`` vectorization modes of ``gym.make_vec`` keep Gymnasium's default.

    Infos: ``index`` and ``expert_action`` (each sub-env's item's class codeword, int8 (num_envs,
    bits); ours, see ``RankListHashEnv``) at every reset and step, ``ap`` and ``relevant`` after a
    step (in ``final_info`` under same-step autoreset), with ``_key`` masks.

    Memory: each copy holds its database packed, ``num_envs x N x ceil(bits / 64)`` 8-byte words.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import hashing_gym
    >>> envs = gym.make_vec("RankListHash-v0", num_envs=4, vectorization_mode="vector_entry_point")
    >>> obs, infos = envs.reset(seed=0)
    >>> obs.shape, envs.action_space.shape, infos["index"].shape
    ((4, 64), (4, 16), (4,))
    >>> envs.metadata["autoreset_mode"]
    <AutoresetMode.SAME_STEP: 'SameStep'>
    >>> acted = infos["index"]
    >>> obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 16), dtype=np.uint8))
    >>> bool(terminated.all()), bool((rewards >= 0).all() and (rewards <= 1).all())
    (True, True)
    >>> final = infos["final_info"]  # the acted items' infos; infos["index"] holds the next items
    >>> bool((rewards == final["ap"]).all()), bool((final["index"] == acted).all())
    (True, True)
    >>> obs, rewards, terminated, truncated, infos = envs.step(infos["expert_action"])  # the next items

    The keyword arguments of ``RankListHash-v0`` (``dataset``, ``bits``, ``split``, ``ties``, ``topk``,
    ``database``) mean the same here, plus
    the arguments of every batched env (``num_envs``, ``device``, ``backend``, ``rng``,
    ``autoreset_mode``, ``check_actions``), listed in ``hashing_gym.envs.vector_base``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        ties: str = "average",
        topk: int | None = None,
        database: str = "bank",
        render_mode: str | None = None,
        device: Any = "cpu",
        backend: str | None = None,
        rng: str = "batched",
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        check_actions: bool = True,
        fuse_step: bool = False,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None for the batched env, got {render_mode!r}")
        self.single_env = RankListHashEnv(
            dataset=dataset, bits=bits, split=split, ties=ties, topk=topk, database=database
        )
        self._setup(num_envs, device, backend, rng, autoreset_mode, check_actions, fuse_step)
        params = core.make_params(
            self.single_env.dataset, split, bits=bits, ties=ties, topk=topk, database=database
        )
        self._params = core.params_on(params, self.torch_device) if self.torch else params
        self.bits, self.ties, self.topk, self.database = (
            params.bits,
            params.ties,
            params.topk,
            params.database,
        )
        # Packed databases: uint64 words on numpy; on torch the narrowest signed type holding a code.
        word_dtype = {16: np.int16, 32: np.int32, 64: np.int64 if self.torch else np.uint64}
        self._bank = self._zeros(
            word_dtype[self._params.word_bits], (self.num_envs, self.num_items, self._params.num_words)
        )
        self._database = core.database(self._params, self._bank)  # checked once; bank writes are in place
        self._has_bank = np.zeros(self.num_envs, dtype=bool)
        self._items = self._zeros(np.int64)

    # ----------------------------------------------------------------------------------------------
    # Database codes
    # ----------------------------------------------------------------------------------------------

    @property
    def database_codes(self) -> Any:
        """uint8 (num_envs, N, bits) copy of every sub-env's database codes, or None before they exist."""
        if not self._has_bank.all():
            return None
        return unpack_codes(self._bank, self.bits)

    def set_database_codes(self, codes: Any) -> None:
        """Replace the database codes of every sub-env (e.g. the database network's codes of the split).

        Args:
            codes: integer or bool array of 0/1, (N, bits) for the same database in every sub-env or
                (num_envs, N, bits) for one database each (numpy, or a tensor for the torch backend).

        Raises:
            ValueError: if ``codes`` has another shape, a non-integer dtype, or a value other than 0 and 1.
        """
        arr = self._to_numpy(codes)
        if arr.ndim == 2:
            checked = check_code_matrix(arr, self.num_items, self.bits)[None]
        elif arr.ndim == 3 and arr.shape[0] == self.num_envs:
            checked = np.stack([check_code_matrix(a, self.num_items, self.bits) for a in arr])
        else:
            raise ValueError(
                f"codes must have shape {(self.num_items, self.bits)} or "
                f"{(self.num_envs, self.num_items, self.bits)}, got shape {arr.shape}"
            )
        words = core.pack(self._params, self._to_backend(checked))
        self._bank[:] = words  # (1, N, W) broadcasts one database to every sub-env
        self._has_bank[:] = True

    def set_device_database(self, codes: Any) -> None:
        """``set_database_codes`` for a torch-backend env, without the check that reads codes back.

        For a trainer whose database network writes codes on the device at every refresh: the
        host-side 0/1 check would copy them back each time. ``codes`` must be a 0/1 (N, bits)
        tensor (one database for every sub-env); only its shape is checked.
        """
        if not self.torch or not hasattr(codes, "shape") or tuple(codes.shape) != (self.num_items, self.bits):
            raise ValueError(
                f"codes must be a ({self.num_items}, {self.bits}) tensor for a torch-backend env, "
                f"got {type(codes).__name__} of shape {tuple(getattr(codes, 'shape', ()))}"
            )
        self._bank[:] = core.pack(self._params, codes)  # (N, W) broadcast to every sub-env
        self._has_bank[:] = True

    def set_device_items(self, items: Any) -> None:
        """Set the item of every sub-env for the next step, from an int64 (num_envs,) tensor on the device.

        What ``reset(options={"index": items})`` does to the items, without its host-side range check
        (which would read them back from the device at every step): the caller guarantees
        ``0 <= items < N``. Only the shape is checked.
        """
        if not self.torch or not hasattr(items, "shape") or tuple(items.shape) != (self.num_envs,):
            raise ValueError(
                f"items must be a ({self.num_envs},) tensor for a torch-backend env, "
                f"got {type(items).__name__} of shape {tuple(getattr(items, 'shape', ()))}"
            )
        self._items.copy_(items)

    # ----------------------------------------------------------------------------------------------
    # The batched MDP
    # ----------------------------------------------------------------------------------------------

    def _reset_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> dict[str, Any]:
        if self.rng == "per_env":
            return self._reset_rows_per_env(rows, seeded, index)
        fresh = rows[seeded | ~self._has_bank[rows]]
        if len(fresh):
            self._bank[self._index(fresh)] = self._random_words(len(fresh))
            self._has_bank[fresh] = True
        if index is not None:
            items = self._to_backend(index)
        elif self.torch:
            import torch

            generator = self._torch_generator()
            items = torch.randint(self.num_items, (len(rows),), generator=generator, device=self.torch_device)
        else:
            items = self.np_random.integers(self.num_items, size=len(rows))
        self._items[self._index(rows)] = items
        return self._with_expert({"index": items})

    def _random_words(self, count: int) -> Any:
        """Random packed database codes (count, N, W), drawn as whole words (bits past ``bits``: 0)."""
        shape = (count, self.num_items, self._params.num_words)
        width = self._params.word_bits
        rest = self.bits % width
        if not self.torch:
            words = self.np_random.integers(0, 1 << 64, size=shape, dtype=np.uint64)
            if rest:
                words[..., -1] &= np.uint64((1 << rest) - 1)
            return words
        import torch

        generator = self._torch_generator()
        if width == 64:
            high, low = (
                torch.randint(1 << 32, shape, generator=generator, device=self.torch_device) for _ in range(2)
            )
            words = (high << 32) | low
        else:  # the int64 draws wrap into the narrow signed type, top bit included
            words = torch.randint(1 << width, shape, generator=generator, device=self.torch_device)
            words = words.to(self._bank.dtype)
        if rest:
            words[..., -1] &= (1 << rest) - 1
        return words

    def _reset_rows_per_env(
        self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None
    ) -> dict[str, Any]:
        items = np.empty(len(rows), dtype=np.int64)
        fresh: list[int] = []
        banks: list[np.ndarray] = []
        for k, i in enumerate(rows):
            rng = self._rngs[i]
            # The single env's reset: the database first (seeded or first reset), then the item.
            if seeded[k] or not self._has_bank[i]:
                fresh.append(i)
                banks.append(rng.integers(0, 2, size=(self.num_items, self.bits), dtype=np.uint8))
            items[k] = int(rng.integers(self.num_items)) if index is None else index[k]
        if fresh:
            words = core.pack(self._params, self._to_backend(np.stack(banks)))
            self._bank[self._index(np.array(fresh))] = words
            self._has_bank[fresh] = True
        items_b = self._to_backend(items)
        self._items[self._index(rows)] = items_b
        return self._with_expert({"index": items_b})

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, dict[str, Any]]:
        index = None if every else self._index(rows)
        state = core.State(self._items, self._database)
        words = core.pack(self._params, actions)
        _, ap, terminated, _, relevant = core.step(self._params, state, words, index)
        items = self._items if every else self._take(self._items, index)
        return ap, terminated, self._with_expert({"index": items, "ap": ap, "relevant": relevant})

    def expert_action(self) -> Any:
        """Our expert's actions: each sub-env's item's class codeword, int8 (num_envs, bits) (backend).

        The class docstring of ``RankListHashEnv`` says why it is ours and what it earns.

        Raises:
            ValueError: where ``2 ** bits`` is below the number of classes (no codebook: no expert).
        """
        codes = core.teacher_action(self._params, self._items)
        return expert.require(codes, self.bits, self.single_env.dataset.num_classes)

    def _with_expert(self, info: dict[str, Any]) -> dict[str, Any]:
        """``info`` (of the rows of its ``index``) with their ``expert_action``, where there is an expert."""
        codes = core.teacher_action(self._params, info["index"])
        return info if codes is None else {**info, "expert_action": codes}

    def _check_actions(self, actions: Any) -> Any:
        return self._check_binary_actions(actions, self.bits)

    _bank_arrays = ("bank", "has_bank")

    def _spec(self) -> dict[str, Any]:
        return {"bits": self.bits, "ties": self.ties, "topk": self.topk, "database": self.database}

    def _snapshot_arrays(self) -> dict[str, Any]:
        return {"items": self._items, "bank": self._bank, "has_bank": self._has_bank}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        # In place: the packed database (self._database) reads the bank array it was built over.
        self._write(self._items, arrays["items"])
        if "bank" in arrays:
            self._write(self._bank, arrays["bank"])
            self._has_bank[:] = arrays["has_bank"]

    def _observations(self) -> Any:
        return core.observe(self._params, core.State(self._items, self._database))
