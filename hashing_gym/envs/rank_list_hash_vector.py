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
from hashing_gym.ranking import _metrics, unpack_codes

EXACT = {"emulate_precision_casts": True}
"""Inductor's options for the fused step: no fused multiply-adds in the generated kernels (Triton
contracts ``a * b + c`` by default), so the compiled AP is bitwise the eager one."""


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

    Memory: each copy holds its database packed, ``num_envs x N x ceil(bits / 64)`` 8-byte words
    (on torch, words of 16, 32 or 64 bits: the narrowest that holds a code).

    Speed on torch: with ``rng="batched"`` and NEXT_STEP or SAME_STEP autoreset, a step acts for all
    rows at once with masks (the infos and draws are those of stepping the rows one index array at a
    time) and, with ``check_actions=False``, reads nothing back from the device. ``fuse_step=True``
    compiles the array work before and after the ranking scan with ``torch.compile`` (the scan's
    CUDA kernel is launched through CuPy, which it cannot trace): the same results, bit for bit.

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
    masked_steps = True
    fuses = True

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
        # Each row's item: replaced, never written in place (infos hand it out; see _set_items).
        self._items = self._zeros(np.int64)
        self._cutoff = core.cutoff(params)
        self._rows = np.arange(self.num_envs)  # the bank's rows, for the masked step's writes
        self._harmonic: Any = None  # torch: the harmonic numbers of the AP formula, on the device
        self._acted: dict[str, Any] = {}  # the infos of the rows' last action (masked steps)
        self._fused: dict[str, Any] = {}  # fuse_step: the compiled parts, by name (compiled at first use)
        if self.torch:
            import torch

            self._rows = torch.arange(self.num_envs, device=self.torch_device)
            self._harmonic = _metrics.harmonic_numbers(self.num_items, self._rows)

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
        import torch

        self._items = items.to(device=self.torch_device, dtype=torch.int64, copy=True)

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
            items = self._draw_items(len(rows))
        else:
            items = self.np_random.integers(self.num_items, size=len(rows))
        self._set_items(rows, items)
        return self._with_expert({"index": items})

    def _set_items(self, rows: np.ndarray, items: Any) -> None:
        """Give ``rows`` the items ``items`` in a new items array (returned infos may hold the old one)."""
        if len(rows) == self.num_envs:  # sorted and distinct: every row, in order
            self._items = items
        elif self.torch:
            self._items = self._items.index_put((self._index(rows),), items)
        else:
            self._items = self._items.copy()
            self._items[rows] = items

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
        self._set_items(rows, items_b)
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

    def set_state(self, state: dict[str, Any]) -> None:
        """``HashingVectorEnv.set_state``; also takes snapshots from before this env's masked steps.

        Those hold ``ended=None``; here a row has ended exactly where ``autoreset`` says so (every
        row that acts ends, and restarts at the next step), which the snapshot holds.
        """
        if isinstance(state, dict) and self._ended is not None and state.get("ended", False) is None:
            state = {**state, "ended": state.get("autoreset")}
        super().set_state(state)

    def _spec(self) -> dict[str, Any]:
        return {"bits": self.bits, "ties": self.ties, "topk": self.topk, "database": self.database}

    def _snapshot_arrays(self) -> dict[str, Any]:
        return {"items": self._items, "bank": self._bank, "has_bank": self._has_bank}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        # The bank in place: the packed database (self._database) reads the array it was built over.
        self._items = self._to_backend(arrays["items"])  # (a checked copy: nothing else holds it)
        if "bank" in arrays:
            self._write(self._bank, arrays["bank"])
            self._has_bank[:] = arrays["has_bank"]

    def _observations(self) -> Any:
        return core.observe(self._params, core.State(self._items, self._database))

    # ----------------------------------------------------------------------------------------------
    # Masked steps: every row at once, no row index arrays (numpy; torch with rng="batched")
    # ----------------------------------------------------------------------------------------------

    def _step_masked(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``step`` over all rows, with the autoreset as masks (NEXT_STEP or SAME_STEP).

        Every episode lasts one step, so every row that acts ends there: which rows restart is known
        on the host (``self._autoreset``, NEXT_STEP only), and with it the infos' keys and how many
        items to draw. This step therefore returns what the row path (``_step_rows``) returns, key
        for key and draw for draw, while on torch it reads nothing back from the device and builds
        no row index arrays there (``HashingVectorEnv._step_masked`` would restart every row that
        ended through masks and report every key at every step).
        """
        restarting = self._autoreset  # NEXT_STEP: the rows that ended at the last step (not changed below)
        count = int(np.count_nonzero(restarting))
        if self.fuse_step and count in (0, self.num_envs):  # (steps where some rows restart: unfused)
            return self._step_fused(actions, restarts=count > 0)
        if count == self.num_envs:  # NEXT_STEP, all ended: a reset step (reward 0, actions ignored)
            self._restart_where(None)
            self._autoreset[:] = False
            self._ended = ~self._ended
            info = self._masked_info(self._info_all(), self._all())
            return self._observations(), self._zeros(np.float64), *self._flags(False), info
        live = None if count == 0 else ~self._ended
        reward, terminated, truncated = self._step_all(actions, live)
        acted = self._acted
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            # As SyncVectorEnv: the acted observation and info move to final_obs and final_info.
            final_obs = self._observations()
            self._restart_where(None)
            every = self._all()
            infos = {"final_obs": final_obs, "_final_obs": every}
            infos.update(final_info=self._masked_info(acted, every), _final_info=self._all())
            infos.update(self._masked_info(self._info_all(), every))
            return self._observations(), reward, terminated, truncated, infos
        self._autoreset = ~restarting
        ended, self._ended = self._ended, ~self._ended
        if live is None:  # every row acted: each restarts at the next step
            return self._observations(), reward, terminated, truncated, self._masked_info(acted, self._all())
        # Some rows restart (their episode ended before a reset with a reset_mask): they act nothing,
        # report no ap and draw their new item; the others act and end. Keys in the row path's order.
        self._restart_where(ended, count)
        now, every = self._info_all(), self._all()
        infos = {"index": now["index"], "_index": every}
        for key in ("ap", "relevant"):
            infos.update({key: self._or_zero(live, acted[key]), f"_{key}": live})
        if "expert_action" in now:
            infos.update(expert_action=now["expert_action"], _expert_action=every)
        return self._observations(), self._or_zero(live, reward), terminated & live, truncated, infos

    def _step_all(self, actions: Any, live: Any = None) -> tuple[Any, Any, Any]:
        """Every row acts: its reward, and (bank mode) its code joins its database.

        ``live``: None, or a bool array of the rows that act; the others' codes stay out of their
        databases (their rewards are computed, and dropped by the caller). The acted rows' infos go
        to ``self._acted``.
        """
        words = core.pack(self._params, actions)
        items = self._items
        ap, relevant = core.rewards(self._params, self._database, items, words)
        core.write_rows(self._params, self._bank, self._rows, items, words, live)
        index = items if self.torch else items.copy()  # (numpy infos are the caller's to change)
        self._acted = self._with_expert({"index": index, "ap": ap, "relevant": relevant})
        return self._copy(ap), *self._flags(True)

    def _info_all(self) -> dict[str, Any]:
        """The infos of every row's current item (``index``, ``expert_action``), as a reset reports them."""
        return self._with_expert({"index": self._items if self.torch else self._items.copy()})

    def _restart_where(self, mask: Any, count: int | None = None) -> None:
        """New items for the rows where ``mask`` (None: every row), drawn as the row path draws them.

        ``count`` is the number of rows of ``mask`` (known on the host): the batched torch generator
        draws that many items, given to those rows in row order (``masked_scatter``: no row index
        array on the device, nothing read back).
        """
        if not self.torch or self.rng != "batched":
            rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(self._to_numpy(mask))
            self._reset_rows(rows, np.zeros(len(rows), dtype=bool), None)
            return
        draws = self._draw_items(self.num_envs if mask is None else count)
        self._items = draws if mask is None else self._items.masked_scatter(mask, draws)

    def _draw_items(self, size: int) -> Any:
        """``size`` random items from the batched torch generator (what a reset of ``size`` rows draws)."""
        import torch

        generator = self._torch_generator()
        return torch.randint(self.num_items, (size,), generator=generator, device=self.torch_device)

    def _masked_info(self, values: dict[str, Any], mask: Any) -> dict[str, Any]:
        """``values`` with the mask ``_key`` (one array, shared) after each key."""
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos.update({key: value, f"_{key}": mask})
        return infos

    def _all(self) -> Any:
        """A new all-True bool array (num_envs,)."""
        if not self.torch:
            return np.ones(self.num_envs, dtype=bool)
        return self._all_true()

    def _flags(self, terminated: bool) -> tuple[Any, Any]:
        """New terminations (all ``terminated``) and truncations (none) of every row."""
        return (self._all() if terminated else self._zeros(np.bool_)), self._zeros(np.bool_)

    def _copy(self, array: Any) -> Any:
        return array.clone() if self.torch else array.copy()

    # ----------------------------------------------------------------------------------------------
    # fuse_step: the masked torch step as compiled parts around the scan
    # ----------------------------------------------------------------------------------------------

    def _step_fused(self, actions: Any, restarts: bool) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``_step_masked`` with its array work compiled (``fuse_step``), bitwise its results.

        ``restarts``: NEXT_STEP, every row ended at the last step (this step restarts them all);
        else every row acts. Tie-aware (``ties="average"``): one compiled call, ``fused_act`` (pack
        the codes, the histograms' scan as a torch operator, the AP, infos, observations and the
        restart), then the bank write. Stable (and tie-aware with ``SCAN_IN_GRAPH = False``): three
        calls, ``fused_queries`` (compiled: pack the codes, gather their labels), the scan, then the
        bank write and ``fused_finish``.
        """
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        if restarts:  # nothing acts
            draws = self._draw_items(self.num_envs)
            restart = self._fused_part("restart", fused_restart, self._params)
            obs, reward, terminated, truncated, info, every, self._ended = restart(draws, self._ended)
            self._items = draws
            self._autoreset[:] = False
            return obs, reward, terminated, truncated, self._masked_info(info, every)
        items = self._items
        if self.ties == "average" and SCAN_IN_GRAPH:  # one compiled call: the scan is an operator in it
            draws = self._draw_items(self.num_envs) if same_step else None
            constants = (same_step, self._cutoff, self._harmonic, self._database.counts_operator())
            act = self._fused_part("act", fused_act, self._params, *constants)
            database = (self._database.codes, self._database.labels)
            words, *results = act(items, actions, *database, draws, self._ended)
            core.write_rows(self._params, self._bank, self._rows, items, words)  # after the scan read it
        else:
            words, labels = self._fused_part("queries", fused_queries, self._params)(items, actions)
            if self.ties == "average":
                first, second = self._database.distance_counts(words, labels, exclude=items)
            else:
                first, second = self._database.average_precision(
                    words, labels, topk=self.topk, ties="stable", exclude=items, with_relevant=True
                )
            core.write_rows(self._params, self._bank, self._rows, items, words)
            draws = self._draw_items(self.num_envs) if same_step else None
            constants = (same_step, self.ties == "average", self._cutoff, self._harmonic)
            finish = self._fused_part("finish", fused_finish, self._params, *constants)
            results = finish(items, first, second, draws, self._ended)
        obs, reward, terminated, truncated, info, every, ended, final_obs, final_info, final_mask = results
        if not same_step:
            self._ended = ended
            self._autoreset[:] = True
            return obs, reward, terminated, truncated, self._masked_info(info, every)
        self._items = draws
        infos = {"final_obs": final_obs, "_final_obs": every}
        infos.update(final_info=self._masked_info(final_info, every), _final_info=final_mask)
        infos.update(self._masked_info(info, every))
        return obs, reward, terminated, truncated, infos

    def _fused_part(self, name: str, function: Any, *bound: Any) -> Any:
        """The compiled ``function`` with ``bound`` first (compiled at its first call, kept by ``name``)."""
        if name not in self._fused:
            self._fused[name] = self._compile(function, *bound, options=EXACT)
        return self._fused[name]


# False: the tie-aware fused step in three calls, the scan between two compiled graphs (the step before
# ``counts_operator``; benchmarks compare the two).
SCAN_IN_GRAPH = True


def fused_queries(params: core.Params, items: Any, actions: Any) -> tuple[Any, Any]:
    """The packed codes and the labels the scan takes (``core.queries``), for ``torch.compile``."""
    return core.queries(params, items, actions)


def fused_act(
    params: core.Params,
    same_step: bool,
    k: int,
    harmonic: Any,
    counts_operator: Any,
    items: Any,
    actions: Any,
    codes: Any,
    labels: Any,
    draws: Any,
    ended: Any,
) -> tuple[Any, ...]:
    """A tie-aware step where every row acts, as one function: pack, scan, then :func:`fused_finish`.

    ``counts_operator`` is the database's ``PackedDatabase.counts_operator()`` over ``codes`` and
    ``labels`` (its arrays): ``torch.compile`` keeps the scan (a CUDA kernel launched through CuPy) as
    one node of the graph, so the step is one compiled call. Returns the packed codes (for the bank
    write, after the call), then what :func:`fused_finish` returns.
    """
    words, query_labels = core.queries(params, items, actions)
    counts, relevant = counts_operator(words, query_labels, codes, labels, params.bits, items)
    return words, *fused_finish(params, same_step, True, k, harmonic, items, counts, relevant, draws, ended)


def fused_finish(
    params: core.Params,
    same_step: bool,
    tie_aware: bool,
    k: int,
    harmonic: Any,
    items: Any,
    first: Any,
    second: Any,
    draws: Any,
    ended: Any,
) -> tuple[Any, ...]:
    """After the scan of a step where every row acts: what ``_step_masked`` computes, as one function.

    Args:
        params: the MDP's constants (this and the next four are bound before compiling).
        same_step: whether the autoreset is SAME_STEP (else NEXT_STEP).
        tie_aware: whether ``first`` and ``second`` are histograms (ties="average").
        k: the AP cutoff (``core.cutoff``).
        harmonic: the harmonic numbers of the AP formula, on the device.
        items: int64 (n,) the items acted on.
        first: the scan's histograms of all items (tie-aware), or the stable AP of each row.
        second: the scan's histograms of relevant items (tie-aware), or the relevant items of each row.
        draws: SAME_STEP: int64 (n,) the rows' next items; else None.
        ended: bool (n,) the rows that ended at the last step (NEXT_STEP: none, here).

    Returns:
        ``(obs, reward, terminated, truncated, info, every, ended, final_obs, final_info, final_mask)``:
        ``every`` is the infos' all-True mask; the last three are None but for SAME_STEP.
    """
    import torch

    if tie_aware:
        ap, relevant = core.average_precision(params, k, harmonic, first, second)
    else:
        ap, relevant = first, second
    acted = {"index": items, "ap": ap, "relevant": relevant}
    expert = core.teacher_action(params, items)
    if expert is not None:
        acted["expert_action"] = expert
    obs = core.observe(params, core.State(items, None))
    terminated = items.new_ones(items.shape, dtype=torch.bool)
    truncated = items.new_zeros(items.shape, dtype=torch.bool)
    every = items.new_ones(items.shape, dtype=torch.bool)
    if not same_step:
        return obs, ap.clone(), terminated, truncated, acted, every, ~ended, None, None, None
    info = {"index": draws}
    expert = core.teacher_action(params, draws)
    if expert is not None:
        info["expert_action"] = expert
    final_mask = items.new_ones(items.shape, dtype=torch.bool)
    new_obs = core.observe(params, core.State(draws, None))
    return new_obs, ap.clone(), terminated, truncated, info, every, ended, obs, acted, final_mask


def fused_restart(params: core.Params, draws: Any, ended: Any) -> tuple[Any, ...]:
    """A NEXT_STEP reset step (every row restarts on its drawn item), for ``torch.compile``.

    Returns ``(obs, reward, terminated, truncated, info, every, ended)``.
    """
    import torch

    info = {"index": draws}
    expert = core.teacher_action(params, draws)
    if expert is not None:
        info["expert_action"] = expert
    zeros = draws.new_zeros(draws.shape, dtype=torch.bool)
    reward = draws.new_zeros(draws.shape, dtype=torch.float64)
    every = draws.new_ones(draws.shape, dtype=torch.bool)
    obs = core.observe(params, core.State(draws, None))
    return obs, reward, zeros, draws.new_zeros(draws.shape, dtype=torch.bool), info, every, ~ended
