r"""RankListHash-v0's rules (deep policy hashing with listwise supervision), once, for a batch of bandits.

Each row of the batch is one episode of one step: an item ``index`` of the split and a database
of packed codes, one per item of the split (each row its own database, or one shared by all).
The action is the item's code :math:`h \in \{0, 1\}^b`; the reward is the average precision of
the list of all *other* items ranked by Hamming distance :math:`\|h \oplus b_j\|_1` to their
database codes :math:`b_j` (relevant: same label, or a shared label for multi-label data), with
ties ``"average"`` (tie-aware expected AP) or ``"stable"`` (by database index), over the first
``topk`` positions or all. With ``database="bank"`` the acted code then replaces the item's
database code. The episode terminates after that step and never truncates.

Every number comes from :mod:`hashing_gym.ranking`'s public ``PackedDatabase`` (the
database-resident index over the bank, checked once and kept by the shells) and its
``average_precision`` with the item ``exclude``\ d from its own list, so the rewards are those of
``average_precision`` on the list without the item, bitwise on numpy.

The functions take and return arrays of one namespace (numpy, or torch on any device), so
``RankListHashEnv`` (a batch of one, and its batched ``rewards`` / ``act``) and
``RankListHashVectorEnv`` (``num_envs`` rows, numpy or torch) run the same code. Randomness (the
items and the random start databases) is drawn by those shells and passed in.

>>> import numpy as np
>>> from hashing_gym.envs.core import rank_list_hash as core
>>> from hashing_gym.ranking import pack_codes
>>> params = core.make_params("digits", "train", bits=16)
>>> bank = pack_codes(np.zeros((params.num_items, 16), dtype=np.uint8))
>>> state = core.reset(params, np.array([0, 1]), np.stack([bank, bank]))
>>> state, reward, terminated, truncated, relevant = core.step(params, state, pack_codes(np.ones((2, 16))))
>>> reward.shape, terminated.tolist(), relevant.tolist()  # relevant: the other items of the class
((2,), [True, True], [151, 146])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import resolve_dataset, resolve_split
from hashing_gym.envs.core.expert import expert_codewords
from hashing_gym.ranking import TIES, PackedDatabase, _metrics, pack_codes
from hashing_gym.validation import check_bits, check_positive_int

DATABASES: tuple[str, ...] = ("bank", "fixed")


@dataclass(frozen=True)
class Params:
    """The constants of one RankListHash-v0 MDP (arrays on one device, see ``params_on``)."""

    bits: int
    """Code length b."""
    ties: str
    """Order within equal distances: ``"average"`` or ``"stable"``."""
    topk: int | None
    """AP over the first k positions; None for the whole list."""
    database: str
    """``"bank"`` (acted codes replace the item's database code) or ``"fixed"``."""
    features: Any
    """float32 (N, D): the split's features (the observations)."""
    labels: Any
    """The split's labels as the ranking functions take them: int64 class ids (N,), or multi-hot
    labels packed into 64-bit words (N, ceil(C / 64)) (uint64 on numpy, int64 on torch)."""
    word_bits: int
    """Bits per word of the packed codes: 64 on numpy; on torch the narrowest of 16, 32, 64 that holds
    a code (memory traffic sets the pace of a scan)."""
    codewords: Any = None
    """int8 (C, b): the class codewords the expert acts (``hashing_gym.envs.core.expert``); None: none."""
    item_class: Any = None
    """int64 (N,): the class whose codeword each item's expert acts."""

    @property
    def num_items(self) -> int:
        """N, the number of items of the split (the database's length)."""
        return int(self.features.shape[0])

    @property
    def num_words(self) -> int:
        """Words per packed code."""
        return -(-self.bits // self.word_bits)


class State(NamedTuple):
    """A batch of episodes: arrays with a leading batch axis."""

    items: Any
    """int64 (m,): each row's item."""
    bank: PackedDatabase
    """The ranking index over the packed database codes (``bank.codes``): (m, N, W), one database per
    row, or (N, W) shared by all rows."""


def _namespace(array: Any) -> Any:
    """Numpy itself for numpy arrays (array_namespace costs microseconds a call: a step's budget)."""
    return np if isinstance(array, np.ndarray) else array_namespace(array)


def make_params(
    dataset: str | HashingDataset,
    split: str = "train",
    *,
    bits: int = 16,
    ties: str = "average",
    topk: int | None = None,
    database: str = "bank",
) -> Params:
    """Check the arguments of RankListHash-v0 and build its constants on numpy.

    Raises:
        ValueError: for a bad argument, or a split of fewer than 2 items (nothing to rank).
    """
    bits = check_bits(bits)
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if topk is not None:
        try:
            topk = check_positive_int(topk, "topk")
        except ValueError:
            raise ValueError(f"topk must be None or a positive integer, got {topk!r}") from None
    if database not in DATABASES:
        raise ValueError(f"database must be one of {DATABASES}, got {database!r}")
    items = resolve_split(resolve_dataset(dataset), split)
    if items.n < 2:
        raise ValueError(f"the {split!r} split needs at least 2 items to rank, got {items.n}")
    labels = items.labels
    labels = pack_codes(labels) if labels.ndim == 2 else np.ascontiguousarray(labels, dtype=np.int64)
    codewords, item_class = expert_codewords(resolve_dataset(dataset), items, bits)
    return Params(bits, ties, topk, database, items.features, labels, 64, codewords, item_class)


def params_on(params: Params, device: Any) -> Params:
    """``params`` with its arrays as torch tensors on ``device`` and the narrowest word type."""
    import torch

    labels = params.labels.view(np.int64) if params.labels.ndim == 2 else params.labels
    word_bits = 16 if params.bits <= 16 else 32 if params.bits <= 32 else 64
    codewords = None if params.codewords is None else torch.as_tensor(params.codewords, device=device)
    return replace(
        params,
        features=torch.as_tensor(np.array(params.features), device=device),
        labels=torch.as_tensor(np.array(labels), device=device),
        word_bits=word_bits,
        codewords=codewords,
        item_class=torch.as_tensor(params.item_class, device=device),
    )


def pack(params: Params, codes: Any) -> Any:
    """0/1 codes (..., b) packed as ``params`` stores them (numpy codes are checked to be 0/1)."""
    if isinstance(codes, np.ndarray) and codes.ndim > 2:  # numpy packs (n, b) matrices
        words = pack_codes(codes.reshape(-1, codes.shape[-1]))
        return words.reshape(*codes.shape[:-1], words.shape[-1])
    return pack_codes(codes, word_bits=params.word_bits)


def database(params: Params, bank: Any) -> PackedDatabase:
    """The ranking index over a bank of packed codes (N, W) or (m, N, W): checked once, held by reference.

    The shells keep it as long as their bank array: writes into the bank are seen by the next step.
    """
    return PackedDatabase(bank, params.labels, params.bits)


def reset(params: Params, items: Any, bank: Any) -> State:
    """Start episodes on ``items`` (int64 (m,)) with the packed databases ``bank`` (m, N, W).

    ``bank`` may be a :func:`database` already built over them (a shell's, kept across steps).
    """
    return State(items, bank if isinstance(bank, PackedDatabase) else database(params, bank))


def rewards(params: Params, bank: Any, items: Any, words: Any, rows: Any = None) -> tuple[Any, Any]:
    """AP of each packed code against the database of all other items; changes nothing.

    Args:
        params: the MDP's constants.
        bank: a :func:`database` (or its packed codes): (N, W) shared by every row, or (m', N, W)
            one per row.
        items: int64 (m,) the rows' items.
        words: packed codes (m, W), one per row.
        rows: None, or int64 (m,) the database of each code in a bank (m', N, W) (None: row i's).

    Returns:
        ``(ap, relevant)``: float64 (m,) rewards and int64 (m,) numbers of other items relevant to
        each item.
    """
    index = bank if isinstance(bank, PackedDatabase) else database(params, bank)
    return index.average_precision(
        words,
        params.labels[items],
        topk=params.topk,
        ties=params.ties,
        exclude=items,
        databases=rows,
        with_relevant=True,
    )


def step(params: Params, state: State, words: Any, rows: Any = None) -> tuple[State, Any, Any, Any, Any]:
    """Act packed codes (m, W): the rewards, then (bank mode) each code joins its row's database.

    Args:
        params: the MDP's constants.
        state: the batch.
        words: packed codes, one per row stepped.
        rows: int64 indices of the rows stepped (m of them), or None for all.

    The bank is written in place (``state`` is returned): a copy of every database at every step
    would cost more than the reward.

    Returns:
        ``(state, reward, terminated, truncated, relevant)``: float64 (m,) AP, numpy bool (m,) flags
        (all True, all False: the episode length is known on the host, so nothing waits for a device)
        and int64 (m,) numbers of other items relevant to each item.
    """
    bank = state.bank.codes
    items = state.items if rows is None else state.items[rows]
    reward, relevant = rewards(params, state.bank, items, words, None if bank.ndim == 2 else rows)
    if bank.ndim == 2:
        write_bank(params, bank, items, words)
    elif params.database == "bank":
        if rows is None:
            rows = _namespace(words).arange(words.shape[0], device=device(words))
        bank[rows, items] = words
    m = words.shape[0]
    return state, reward, np.ones(m, dtype=bool), np.zeros(m, dtype=bool), relevant


def write_bank(params: Params, bank: Any, items: Any, words: Any) -> None:
    """Write codes into one shared bank (N, W) in bank mode; a repeated item keeps its last code."""
    if params.database != "bank":
        return
    if len(items) > 1:
        # np.unique on the reversed items finds each item's last occurrence.
        _, last = np.unique(items[::-1], return_index=True)
        keep = len(items) - 1 - last
        items, words = items[keep], words[keep]
    bank[items] = words


def write_rows(params: Params, bank: Any, rows: Any, items: Any, words: Any, live: Any = None) -> None:
    """Bank mode: row ``i``'s code ``words[i]`` replaces item ``items[i]``'s code in database ``rows[i]``.

    Args:
        params: the MDP's constants.
        bank: packed databases (m', N, W), written in place.
        rows: int64 (m,) the database of each code (all rows: ``arange(m')``, built once by the caller).
        items: int64 (m,) the rows' items.
        words: packed codes (m, W).
        live: None (every code joins), or bool (m,): only these rows' codes join (the others act
            nothing: rows that restart in a masked step).
    """
    if params.database != "bank":
        return
    if live is not None:
        xp = _namespace(words)
        words = xp.where(live[:, None], words, bank[rows, items])
    bank[rows, items] = words


def queries(params: Params, items: Any, codes: Any) -> tuple[Any, Any]:
    """What the ranking takes for 0/1 codes (m, b) acted on ``items``: their packed words and labels."""
    return pack(params, codes), _rows_of(params.labels, items)


def average_precision(params: Params, k: int, harmonic: Any, counts: Any, relevant: Any) -> tuple[Any, Any]:
    """Tie-aware AP and relevant items of each row from its histograms (int64 (m, bits + 1) each).

    What ``PackedDatabase.average_precision`` computes after its scan (``k``: the cutoff it takes,
    ``harmonic``: ``hashing_gym.ranking._metrics.harmonic_numbers(N, counts)``), as one function of
    arrays that ``torch.compile`` can trace: the shells' ``fuse_step`` runs the scan outside it.
    """
    return _metrics.tie_aware_ap(counts, relevant, k, harmonic=harmonic), relevant.sum(1)


def cutoff(params: Params) -> int:
    """The AP cutoff of every list (of N - 1 items): ``topk`` capped to the list, or the whole list."""
    length = params.num_items - 1
    return length if params.topk is None else min(params.topk, length)


def teacher_action(params: Params, items: Any) -> Any:
    """The expert's codes of ``items`` (int64 (m,)): their class codewords, int8 (m, b); None if no expert.

    Our expert (``hashing_gym.envs.core.expert``): the paper names none.
    """
    if params.codewords is None:
        return None
    return _rows_of(params.codewords, _rows_of(params.item_class, items))


def observe(params: Params, state: State) -> Any:
    """The rows' observations: their items' features (m, D)."""
    return _rows_of(params.features, state.items)


def _rows_of(table: Any, index: Any) -> Any:
    """Rows ``index`` (int64 (m,), all >= 0) of ``table``: a copy (fancy indexing; ``index_select``)."""
    if isinstance(index, np.ndarray):
        return table[index]
    # (array_api_compat's take adds three kernels that wrap negative indices: none here.)
    return table.index_select(0, index)
