"""RankListHash-v0, batched: ``num_envs`` copies of the listwise bandit stepped together (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from gymnasium.vector import AutoresetMode
from numba import prange

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import check_code_matrix
from hashing_gym.envs.rank_list_hash import RankListHashEnv
from hashing_gym.envs.vector_base import HashingVectorEnv
from hashing_gym.ranking import _harmonic_table, _stats_row, average_precision_from_counts, pack_codes


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

    A step computes the Hamming distances of all ``num_envs`` codes to their databases at once
    (popcounts of packed 64-bit words, ``num_envs x N`` of them), counts per distance
    the items and the relevant items of each list (the item's own row left out), and turns the
    histograms into AP with :func:`hashing_gym.ranking.average_precision_from_counts`: the
    formula the single env uses, so rewards agree exactly. On numpy the counting is the ranking
    module's numba kernel, run on each copy's database. On torch everything stays on the device:
    XOR, popcount, ``bincount`` and a transcription of the same AP formula, whose float64 row
    sums may differ from numpy's in the last bit (1e-16). ``ties="stable"`` sorts each list
    instead (O(N log N) per copy, on the host).

    Every episode lasts one step, so with the default ``NEXT_STEP`` autoreset every other step is a
    reset step (reward 0, actions ignored); ``autoreset_mode="SameStep"`` acts on every step and
    returns the acted observation in ``infos["final_obs"]``.

    Memory: each copy holds its database packed, ``num_envs x N x ceil(bits / 64)`` 8-byte words.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import hashing_gym
    >>> envs = gym.make_vec("RankListHash-v0", num_envs=4, vectorization_mode="vector_entry_point")
    >>> obs, infos = envs.reset(seed=0)
    >>> obs.shape, envs.action_space.shape, infos["index"].shape
    ((4, 64), (4, 16), (4,))
    >>> obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 16), dtype=np.uint8))
    >>> bool(terminated.all()), bool((rewards >= 0).all() and (rewards <= 1).all())
    (True, True)
    >>> bool((rewards == infos["ap"]).all())
    True

    The keyword arguments of ``RankListHash-v0`` (``dataset``, ``bits``, ``split``, ``ties``, ``topk``,
    ``database``) mean the same here, plus:

    | argument       | default         | meaning                                                        |
    |----------------|-----------------|----------------------------------------------------------------|
    | num_envs       | 1               | number of sub-environments                                     |
    | device         | ``"cpu"``       | ``"cpu"`` (numpy), ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` |
    | backend        | None            | ``"numpy"`` or ``"torch"``; None picks from ``device``         |
    | rng            | ``"batched"``   | ``"batched"`` or ``"per_env"`` (``hashing_gym.envs.vector_base``) |
    | autoreset_mode | ``NEXT_STEP``   | an ``AutoresetMode``, or its name or value (``"SameStep"``)     |
    | check_actions  | True            | check that actions are 0/1 (on CUDA: a host sync per step)     |

    ``render_mode`` must be None (the batched env draws nothing).
    """

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
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        check_actions: bool = True,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None for the batched env, got {render_mode!r}")
        self.single_env = RankListHashEnv(
            dataset=dataset, bits=bits, split=split, ties=ties, topk=topk, database=database
        )
        self._setup(num_envs, device, backend, rng, autoreset_mode, check_actions)
        t = self.single_env
        self.bits, self.ties, self.topk, self.database = t.bits, t.ties, t.topk, t.database
        self._multi = t._multi
        self._features = self._to_backend(t.features)
        # Class ids, or multi-hot rows packed into 64-bit words (int64 on torch: & and != 0 work alike).
        labels = t._labels if not self._multi else t._labels.view(np.int64)
        self._labels = self._to_backend(labels)
        # The same labels as the ranking kernels read them: (N, 1) class ids or (N, words) int64.
        self._label_rows = np.ascontiguousarray(labels.reshape(self.num_items, -1), dtype=np.int64)
        n, num_items = self.num_envs, self.num_items
        # Packed words: uint64 for the numba kernel on numpy; on torch the narrowest signed integer
        # that holds the code (int16 up to 16 bits, int32 up to 32), since memory traffic sets the pace.
        self._word_bits = 64 if not self.torch or self.bits > 32 else (16 if self.bits <= 16 else 32)
        self._num_words = -(-self.bits // self._word_bits)
        word_dtype = {16: np.int16, 32: np.int32, 64: np.int64 if self.torch else np.uint64}[self._word_bits]
        if self.torch:
            import torch

            self._xp = torch
            self._word_dtype = getattr(torch, np.dtype(word_dtype).name)
            self._shifts = torch.arange(self._word_bits, device=self.torch_device, dtype=self._word_dtype)
        else:
            self._xp = np
        self._words = self._zeros(word_dtype, (n, num_items, self._num_words))
        self._has_bank = np.zeros(n, dtype=bool)
        self._harmonic: Any = None  # harmonic numbers on the device, for the torch AP
        self._items = self._zeros(np.int64)

    # ----------------------------------------------------------------------------------------------
    # Database codes
    # ----------------------------------------------------------------------------------------------

    @property
    def database_codes(self) -> Any:
        """uint8 (num_envs, N, bits) copy of every sub-env's database codes, or None before they exist."""
        if not self._has_bank.all():
            return None
        return self._unpack(self._words)

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
        words = self._pack(self._to_backend(checked.reshape(-1, self.bits)))
        self._words[:] = words.reshape(len(checked), self.num_items, self._num_words)  # broadcasts one bank
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
        self._words[:] = self._pack(codes)  # (N, W) broadcast to every sub-env
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
            self._words[self._index(fresh)] = self._random_words(len(fresh))
            self._has_bank[fresh] = True
        if index is not None:
            items = self._to_backend(index)
        elif self.torch:
            generator = self._torch_generator()
            items = self._xp.randint(
                self.num_items, (len(rows),), generator=generator, device=self.torch_device
            )
        else:
            items = self.np_random.integers(self.num_items, size=len(rows))
        self._items[self._index(rows)] = items
        return {"index": items}

    def _random_words(self, count: int) -> Any:
        """Random packed database codes (count, N, W), drawn as whole words (bits past ``bits``: 0)."""
        shape = (count, self.num_items, self._num_words)
        width, rest = self._word_bits, self.bits % self._word_bits
        if not self.torch:
            words = self.np_random.integers(0, 1 << 64, size=shape, dtype=np.uint64)
            if rest:
                words[..., -1] &= np.uint64((1 << rest) - 1)
            return words
        torch, generator = self._xp, self._torch_generator()
        if width == 64:
            high, low = (
                torch.randint(1 << 32, shape, generator=generator, device=self.torch_device) for _ in range(2)
            )
            words = (high << 32) | low
        else:  # the int64 draws wrap into the narrow signed type, top bit included
            words = torch.randint(1 << width, shape, generator=generator, device=self.torch_device)
            words = words.to(self._word_dtype)
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
            words = self._pack(self._to_backend(np.concatenate(banks)))
            self._words[self._index(np.array(fresh))] = words.reshape(len(fresh), self.num_items, -1)
            self._has_bank[fresh] = True
        items_b = self._to_backend(items)
        self._items[self._index(rows)] = items_b
        return {"index": items_b}

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, dict[str, Any]]:
        xp, m = self._xp, len(rows)
        index = self._index(rows)
        items = self._items if every else self._items[index]
        words = self._pack(actions)  # (m, W)
        if not self.torch and self.ties == "average":
            counts, relevant = self._numba_counts(rows, items, words)
            ap = average_precision_from_counts(counts, relevant, topk=self.topk)
            if self.database == "bank":
                self._words[rows, items] = words
            info = {"index": items, "ap": ap, "relevant": relevant.sum(axis=1)}
            return ap, np.ones(m, dtype=bool), info
        database = self._words if every else self._words[index]  # (m, N, W)
        popcounts = self._popcount(database ^ words[:, None, :])
        distance = popcounts[..., 0] if self._num_words == 1 else popcounts.sum(-1)  # (m, N)
        rows_m = self._arange(m)
        if self._multi:
            item_labels = self._take(self._labels, items)
            relevant_mask = ((item_labels[:, None, :] & self._labels[None, :, :]) != 0).any(-1)
        else:
            relevant_mask = self._take(self._labels, items)[:, None] == self._labels[None, :]
        bins = self.bits + 2
        if self.ties == "average":  # torch (numpy took the numba path above)
            # One bincount over keys row * 2 bins + 2 d + relevant, in int32 to halve the traffic; the
            # item's own row goes to distance bits + 1, outside the histograms.
            key = distance.to(xp.int32).mul_(2).add_(relevant_mask)
            key[rows_m, items] = 2 * (self.bits + 1)
            key.add_((rows_m * (2 * bins)).to(xp.int32)[:, None])
            hist = xp.bincount(key.reshape(-1), minlength=m * bins * 2).reshape(m, bins, 2)
            counts, relevant = hist.sum(-1)[:, : self.bits + 1], hist[:, : self.bits + 1, 1]
            ap, num_relevant = self._torch_tie_aware_ap(counts, relevant), relevant.sum(-1)
        else:
            distance = distance.to(xp.int64) if self.torch else distance.astype(np.int64)
            distance[rows_m, items] = self.bits + 1  # the own row, last and out of the list
            relevant_mask[rows_m, items] = False
            ap, num_relevant = self._stable_ap(distance, relevant_mask)
            ap, num_relevant = self._to_backend(ap), self._to_backend(num_relevant)
        if self.database == "bank":
            self._words[index, items] = words
        info = {"index": items, "ap": ap, "relevant": num_relevant}
        return info["ap"], np.ones(m, dtype=bool), info  # one decision per episode

    def _numba_counts(self, rows: np.ndarray, items: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-distance histograms of each list (numpy backend), the item's own row taken out.

        The ranking module's counting kernel runs on each sub-env's own database; the own row is then
        subtracted, as the single env does.
        """
        m = len(rows)
        counts = np.zeros((m, self.bits + 1), dtype=np.int64)
        relevant = np.zeros((m, self.bits + 1), dtype=np.int64)
        lq = self._label_rows[items]
        parallel = m * self.num_items >= _PARALLEL_MIN_PAIRS
        kernel = _bank_counts_parallel if parallel else _bank_counts_serial
        kernel(words, lq, self._words, rows, self._label_rows, self._multi, counts, relevant)
        own = self._popcount(words ^ self._words[rows, items]).sum(-1, dtype=np.int64)
        counts[np.arange(m), own] -= 1
        relevant[np.arange(m), own] -= self.single_env._self_relevant[items]
        return counts, relevant

    def _torch_tie_aware_ap(self, counts: Any, relevant: Any) -> Any:
        """``hashing_gym.ranking``'s closed-form tie-aware AP, transcribed to torch to stay on the device.

        Same formula, operation by operation (the module docstring of ``hashing_gym.ranking`` derives
        it); only the order of float64 row sums may differ from numpy's, by an ulp or so.
        """
        torch = self._xp

        def ratio(num: Any, den: Any) -> Any:
            return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0.0)

        if self._harmonic is None:
            self._harmonic = self._to_backend(_harmonic_table(self.num_items))
        k = counts.sum(1, keepdim=True) if self.topk is None else torch.full_like(counts[:, :1], self.topk)
        before = counts.cumsum(1) - counts
        inside = torch.minimum(torch.clamp(k - before, min=0), counts)
        rel_before = relevant.cumsum(1) - relevant
        n, r = counts.to(torch.float64), relevant.to(torch.float64)
        slope = ratio(r - 1.0, n - 1.0)
        intercept = rel_before + 1.0 - slope * (1.0 + before)
        harmonic_gap = self._harmonic[before + inside] - self._harmonic[before]
        expected_sum = ratio(r, n) * (slope * inside + intercept * harmonic_gap)
        full = inside == counts
        partial = torch.where(full, 0.0, r * ratio(inside.to(torch.float64), n))
        hits = torch.where(full, relevant, 0).sum(1) + partial.sum(1)
        return ratio(expected_sum.sum(1), hits)

    def _stable_ap(self, distance: Any, relevant_mask: Any) -> tuple[np.ndarray, np.ndarray]:
        """Stable-order AP of each list (ties by database index), summed as ``hashing_gym.ranking`` does."""
        distance, relevant_mask = self._to_numpy(distance), self._to_numpy(relevant_mask)
        m, length = distance.shape
        k = length - 1 if self.topk is None else min(self.topk, length - 1)  # the own row is not listed
        order = np.argsort(distance, axis=1, kind="stable")
        rel_sorted = np.take_along_axis(relevant_mask, order, axis=1)
        found = np.cumsum(rel_sorted, axis=1)
        position = np.arange(1, length + 1)
        precision_sorted = np.where(rel_sorted & (position <= k), found / position, 0.0)
        precision = np.empty_like(precision_sorted)
        np.put_along_axis(precision, order, precision_sorted, axis=1)
        # Sequential sums in database-index order, the order of the ranking module's counting scan.
        ap_sum = np.cumsum(precision, axis=1)[:, -1]
        hits = found[:, k - 1]
        ap = np.zeros(m, dtype=np.float64)
        np.divide(ap_sum, hits, out=ap, where=hits > 0)
        return ap, relevant_mask.sum(axis=1)

    def _check_actions(self, actions: Any) -> Any:
        return self._check_binary_actions(actions, self.bits)

    def _observations(self) -> Any:
        return self._take(self._features, self._items)

    # ----------------------------------------------------------------------------------------------
    # Packed codes on either backend
    # ----------------------------------------------------------------------------------------------

    def _arange(self, m: int) -> Any:
        if self.torch:
            return self._xp.arange(m, device=self.torch_device)
        return np.arange(m)

    def _pack(self, codes: Any) -> Any:
        """uint8 (m, bits) 0/1 -> words (m, W), bit j in bit j % w of word j // w (w: the word width).

        On numpy ``pack_codes`` (w = 64); on torch the same layout in the env's word type.
        """
        if not self.torch:
            return pack_codes(codes)
        torch, width = self._xp, self._word_bits
        m = codes.shape[0]
        padded = torch.zeros((m, self._num_words * width), dtype=torch.int64, device=self.torch_device)
        padded[:, : self.bits] = codes
        shifts = torch.arange(width, device=self.torch_device)
        # Sums of distinct powers of two; the top bit wraps to the sign bit, as unsigned bits viewed signed.
        return (padded.view(m, self._num_words, width) << shifts).sum(-1).to(self._word_dtype)

    def _unpack(self, words: Any) -> Any:
        if not self.torch:
            unpacked = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
            return unpacked[..., : self.bits]
        bits = (words[..., None] >> self._shifts) & 1
        return bits.reshape(*words.shape[:-1], -1)[..., : self.bits].to(self._xp.uint8)

    def _popcount(self, words: Any) -> Any:
        if not self.torch:
            return np.bitwise_count(words) if hasattr(np, "bitwise_count") else _popcount_table(words)
        # SWAR popcount on signed words: the masks (top bit clear) keep arithmetic right shifts from
        # leaking the sign bit, and the byte sums use shifts rather than a multiply that would overflow.
        width = self._word_bits

        def mask(byte: int) -> int:
            return int.from_bytes(bytes([byte]) * (width // 8), "little")

        x = words - ((words >> 1) & mask(0x55))
        x = (x & mask(0x33)) + ((x >> 2) & mask(0x33))
        x = (x + (x >> 4)) & mask(0x0F)
        shift = 8
        while shift < width:
            x = x + (x >> shift)
            shift *= 2
        return x & 0x7F


# Below this many (code, database item) pairs a step runs serially: waking numba's threads costs more.
_PARALLEL_MIN_PAIRS = 1 << 18


def _bank_counts(xq, lq, banks, rows, lb, multi, counts, relevant):  # noqa: D103 (jitted twice below)
    no_dist = np.zeros((0, 0), dtype=np.int32)
    no_ks = np.zeros(0, dtype=np.int64)
    no_sums = np.zeros((xq.shape[0], 0), dtype=np.float64)
    no_hits = np.zeros((xq.shape[0], 0), dtype=np.int64)
    for e in prange(xq.shape[0]):
        # Query e against the database of sub-env rows[e]: hashing_gym.ranking's counting kernel.
        sums = (no_ks, False, counts, relevant, no_sums, no_hits)
        _stats_row(no_dist, xq, banks[rows[e]], lq, lb, e, multi, *sums)


_bank_counts_parallel = numba.njit(cache=True, parallel=True)(_bank_counts)
_bank_counts_serial = numba.njit(cache=True)(_bank_counts)

_BYTE_COUNTS = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def _popcount_table(words: np.ndarray) -> np.ndarray:
    """Popcount of uint64 words for numpy < 2.0 (no ``np.bitwise_count``)."""
    return _BYTE_COUNTS[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1)
