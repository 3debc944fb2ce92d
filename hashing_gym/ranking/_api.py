"""The public functions of :mod:`hashing_gym.ranking` (documented in the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hashing_gym.ranking import _metrics, _resident
from hashing_gym.ranking._checks import (
    WORD_BITS,
    Data,
    check_backend,
    check_code_pair,
    check_codes,
    check_cutoff,
    check_histogram_pair,
    check_packed,
    check_packed_labels,
    check_radius,
    check_ties,
    is_torch,
    prepare,
    word_bits_of,
)
from hashing_gym.ranking._packing import label_words, pack_words, torch_pack, torch_unpack, unpack_words
from hashing_gym.validation import check_positive_int

if TYPE_CHECKING:  # _index imports this module (HammingIndex shares the metrics' formulas)
    from hashing_gym.ranking._index import PackedDatabase


class _Stats(NamedTuple):
    """Per-query results of one pass: histograms (nq, bits + 1) and stable AP sums and hits (nq, len(ks))."""

    counts: np.ndarray
    relevant: np.ndarray
    ap_sum: np.ndarray
    hits: np.ndarray


def pack_codes(codes: Any, *, word_bits: int = 64) -> Any:
    """Validate 0/1 codes and pack them into machine words.

    Args:
        codes: array-like (n, bits) of 0/1; or a torch tensor (..., bits) of 0/1, packed on its device
            without a value check (that would wait for the device).
        word_bits: bits per word: 64 (numpy: the only width), or 16 or 32 for tensors (the narrowest
            width that holds a code halves or quarters the memory traffic of a scan).

    Returns:
        uint64 array (n, ceil(bits / 64)), or for a tensor int16/int32/int64 words (..., ceil(bits /
        word_bits)) (bit ``j`` in bit ``j % word_bits`` of word ``j // word_bits``; the top bit of a
        word is its sign bit). Unused high bits of the last word are 0, so the Hamming distance between
        two packed rows is the popcount of their XOR.

    Raises:
        ValueError: if ``codes`` is not 2-D, is empty, or holds a value other than 0 and 1, or
            ``word_bits`` is not a width of its kind.

    >>> pack_codes(np.array([[1, 0, 1], [0, 0, 0]])).tolist()
    [[5], [0]]
    """
    if is_torch(codes):
        if word_bits not in WORD_BITS:
            raise ValueError(f"word_bits must be one of {WORD_BITS} for a tensor, got {word_bits!r}")
        return torch_pack(codes, word_bits)
    if word_bits != 64:
        raise ValueError(f"word_bits must be 64 for numpy codes, got {word_bits!r}")
    return pack_words(check_codes(codes, "codes"))


def unpack_codes(words: Any, bits: int) -> Any:
    """The 0/1 codes of words packed by :func:`pack_codes` (numpy or a tensor on its device).

    Args:
        words: packed codes (..., ceil(bits / word bits)): uint64 numpy, or int16/int32/int64 tensor.
        bits: the code length.

    Returns:
        uint8 0/1 (..., bits), of the input's kind.

    >>> unpack_codes(pack_codes([[1, 0, 1], [0, 1, 1]]), 3).tolist()
    [[1, 0, 1], [0, 1, 1]]
    """
    bits = check_positive_int(bits, "bits")
    check_packed("words", words, bits, per_query=words.ndim == 3)
    if is_torch(words):
        return torch_unpack(words, bits, word_bits_of(words))
    return unpack_words(words, bits)


def hamming_distance(a: Any, b: Any, *, backend: str = "numpy", device: str | None = None) -> np.ndarray:
    """All pairwise Hamming distances.

    Args:
        a: query codes, 0/1 (nq, bits).
        b: database codes, 0/1 (nb, bits).
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"`` (default: cuda if available, else cpu).

    Returns:
        int32 array (nq, nb).
    """
    if backend == "torch":
        check_backend(backend, device)
        database, xq = _resident.load_code_pair(a, b, _resident.resolve_device(device), "torch")
        return database.hamming(xq)
    a, b = check_code_pair(a, b)
    check_backend(backend, device)
    if backend == "numpy":
        from hashing_gym.ranking import _numba

        return _numba.hamming(pack_words(a), pack_words(b))
    if backend == "faiss":
        from hashing_gym.ranking import _faiss

        return _faiss.hamming(a, b)


def rank(
    query: Any, database: Any, topk: int, *, backend: str = "numpy", device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest database items of each query in Hamming distance.

    Args:
        query: query codes, 0/1 (nq, bits).
        database: database codes, 0/1 (nb, bits).
        topk: number of results per query (>= 1; capped to nb).
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.

    Returns:
        ``(D, I)``: int32 distances (nq, k) and int64 database indices (nq, k), ``k = min(topk, nb)``, in
        ascending distance with ties by database index.
    """
    if backend == "torch":
        check_backend(backend, device)
        k = check_cutoff(topk, "topk", None)
        resident, xq = _resident.load_code_pair(query, database, _resident.resolve_device(device), "torch")
        D, I = resident.rank(xq, min(k, resident.nb))  # noqa: E741 (faiss' name)
        return D.cpu().numpy(), I.cpu().numpy()
    query, database = check_code_pair(query, database)
    check_backend(backend, device)
    k = check_cutoff(topk, "topk", database.shape[0])
    if backend == "numpy":
        from hashing_gym.ranking import _numba

        return _numba.rank(pack_words(query), pack_words(database), query.shape[1], k)
    if backend == "faiss":
        from hashing_gym.ranking import _faiss

        return _faiss.rank(query, database, k)


def distance_counts(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    backend: str = "numpy",
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query histograms over Hamming distance 0..bits.

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels`` (nb,) or (nb, C).
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.

    Returns:
        ``(counts, relevant)``, int64 (nq, bits + 1): the number of database items, and of relevant ones, at
        each distance. They are all :func:`average_precision_from_counts` needs.
    """
    data = _inputs(q_codes, q_labels, db_codes, db_labels, backend, device)
    stats = _query_stats(data, (), stable=False)
    return stats.counts, stats.relevant


def packed_distance_counts(
    xq: Any, lq: Any, xb: Any, lb: Any, bits: int, *, exclude: Any = None
) -> tuple[Any, Any]:
    """:func:`distance_counts` of codes and labels packed once by :func:`pack_codes` (a reward's hot path).

    An environment that ranks a few codes against the same database at every step packs the database
    once, so each call costs O(nq nb ceil(bits / 64)) on the numba kernel: nothing is validated element by
    element or packed again (only shapes, dtypes and the queries' zero padding are checked; the
    database's padding bits are masked off). One that calls at every step keeps a
    :class:`PackedDatabase`, which checks the database once rather than at each call.
    Tensors (packed by :func:`pack_codes` on a torch device) are counted there, and the results stay
    there.

    Args:
        xq: packed query codes, uint64 (nq, ceil(bits / 64)) from :func:`pack_codes` (or a tensor).
        lq: query labels: int class ids (nq,), or multi-hot labels packed by :func:`pack_codes`,
            uint64 (nq, ceil(C / 64)) (int64 for tensors).
        xb: packed database codes, uint64 (nb, ceil(bits / 64)), or (nq, nb, ceil(bits / 64)) for one
            database per query.
        lb: database labels, of the same kind as ``lq``.
        bits: code length (the packed words do not record it).
        exclude: None, or int (nq,): the database item left out of each query's list (e.g. the query
            itself, when the database is the query's own split).

    Returns:
        ``(counts, relevant)``, int64 (nq, bits + 1), as :func:`distance_counts` returns them.

    >>> xb = pack_codes([[0, 0, 0], [1, 1, 1], [0, 0, 1]])
    >>> counts, relevant = packed_distance_counts(xb[:1], np.array([0]), xb, np.array([0, 1, 0]), bits=3)
    >>> counts.tolist(), relevant.tolist()
    ([[1, 1, 0, 1]], [[1, 1, 0, 0]])
    >>> packed_distance_counts(xb[:1], np.array([0]), xb, np.array([0, 1, 0]), 3, exclude=[0])[0].tolist()
    [[0, 1, 0, 1]]
    """
    return _check_packed_call(xq, lq, xb, lb, bits).distance_counts(xq, lq, exclude=exclude)


def packed_average_precision(
    xq: Any,
    lq: Any,
    xb: Any,
    lb: Any,
    bits: int,
    *,
    topk: int | None = None,
    ties: str = "stable",
    exclude: Any = None,
) -> Any:
    """:func:`average_precision` of packed codes and labels (see :func:`packed_distance_counts`).

    Args:
        xq: packed query codes (nq, W).
        lq: query labels, class ids (nq,) or packed multi-hot (nq, LW).
        xb: packed database codes (nb, W), or (nq, nb, W) for one database per query.
        lb: database labels, of the same kind as ``lq``.
        bits: code length.
        topk: AP over the first ``topk`` positions (capped to the list's length); None for all.
        ties: ``"stable"`` (ties by database index) or ``"average"`` (tie-aware expected AP).
        exclude: None, or int (nq,): the database item left out of each query's list.

    Returns:
        float64 (nq,) (a tensor on the codes' device for tensors). On numpy, the numba kernels give
        bitwise what :func:`average_precision` gives on the list without the excluded items; tensors
        sum the stable precisions in rank order, which may differ in the last bits.

    >>> xb = pack_codes([[0, 0, 0], [1, 1, 1], [0, 0, 1]])
    >>> ap = packed_average_precision(xb[:1], np.array([0]), xb, np.array([0, 1, 0]), 3, exclude=[0])
    >>> ap.tolist()  # the list without item 0: item 2 (relevant) at distance 1, then item 1
    [1.0]
    """
    database = _check_packed_call(xq, lq, xb, lb, bits)
    return database.average_precision(xq, lq, topk=topk, ties=ties, exclude=exclude)


def _check_packed_call(xq: Any, lq: Any, xb: Any, lb: Any, bits: Any) -> PackedDatabase:
    """The database of a packed function's call, checked, after the checks that only it makes."""
    from hashing_gym.ranking._index import PackedDatabase

    bits = check_positive_int(bits, "bits")
    check_packed("xq", xq, bits, per_query=False)  # numpy: the queries' padding too
    if not is_torch(xq) == is_torch(xb) == is_torch(lq) == is_torch(lb):
        raise ValueError("xq, lq, xb and lb must all be numpy arrays or all be torch tensors")
    if is_torch(xq):
        check_packed_labels(lq, lb, xq.shape[0], xb.shape[-2])
    else:
        check_packed_labels(np.asarray(lq), np.asarray(lb), xq.shape[0], xb.shape[-2])
    return PackedDatabase(xb, lb, bits)


def average_precision(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    topk: int | None = None,
    ties: str = "stable",
    backend: str = "numpy",
    device: str | None = None,
) -> np.ndarray:
    """Average precision of each query (see the module docstring for the definitions).

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels``.
        topk: AP over the first ``topk`` positions (capped to nb); None for AP over the whole database.
        ties: ``"stable"`` (ties by database index) or ``"average"`` (tie-aware expected AP).
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.

    Returns:
        float64 array (nq,) in [0, 1].
    """
    return average_precision_of(_inputs(q_codes, q_labels, db_codes, db_labels, backend, device), topk, ties)


def average_precision_of(data: Data | _resident.Loaded, topk: int | None, ties: str) -> np.ndarray:
    """:func:`average_precision` of checked inputs (also :class:`HammingIndex`'s: one formula)."""
    check_ties(ties)
    k = data.nb if topk is None else check_cutoff(topk, "topk", data.nb)
    if ties == "average":
        if isinstance(data, _resident.Loaded):  # on a GPU, the AP is computed where the histograms are
            ap = data.database.tie_aware_ap(data.xq, data.lq, k)
            if ap is not None:
                return ap
        stats = _query_stats(data, (), stable=False)
        return _metrics.tie_aware_ap(stats.counts, stats.relevant, k)
    stats = _query_stats(data, (k,), stable=True)
    return _metrics.ratio(stats.ap_sum[:, 0], stats.hits[:, 0])


def average_precision_from_counts(
    counts: Any, relevant: Any, *, topk: int | None = None, num_items: int | None = None
) -> Any:
    """Tie-aware average precision from per-query distance histograms alone.

    Args:
        counts: number of database items at each distance, integers (nq, bits + 1).
        relevant: number of relevant database items at each distance, integers (nq, bits + 1), each
            ``<= counts``.
        topk: AP over the first ``topk`` positions (capped to each query's total); None for all.
        num_items: None, or an upper bound of each query's total count (the database size): on a GPU
            it spares reading the totals back from the device.

    Tensors are computed on their device (their values are not checked: that would wait for it).

    Returns:
        float64 array (nq,) (a tensor for tensors): the expected AP over random orders within equal
        distances (ratio of expectations with ``topk``; see the module docstring).

    >>> counts = np.array([[1, 2, 1]])  # 1 item at distance 0, 2 at distance 1, 1 at distance 2
    >>> relevant = np.array([[1, 1, 0]])
    >>> average_precision_from_counts(counts, relevant).round(6).tolist()  # (1 + (2/2 + 2/3) / 2) / 2
    [0.916667]
    """
    counts, relevant = check_histogram_pair(counts, relevant)
    k = counts.sum(1) if topk is None else check_cutoff(topk, "topk", None)
    return _metrics.tie_aware_ap(counts, relevant, k, num_items)


def mean_average_precision(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    topk: int | None = None,
    ties: str = "stable",
    backend: str = "numpy",
    device: str | None = None,
) -> float:
    """Mean over queries of :func:`average_precision` (mAP@all, or mAP@topk)."""
    return float(
        average_precision(
            q_codes, q_labels, db_codes, db_labels, topk=topk, ties=ties, backend=backend, device=device
        ).mean()
    )


def precision_at_k(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    k: int,
    *,
    ties: str = "stable",
    backend: str = "numpy",
    device: str | None = None,
) -> float:
    """Mean over queries of (relevant items among the first ``k``) / ``k``.

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels``.
        k: list length (>= 1; capped to nb).
        ties: ``"stable"``, or ``"average"`` for the expectation over tie orders.
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.
    """
    data = _inputs(q_codes, q_labels, db_codes, db_labels, backend, device)
    check_ties(ties)
    k = check_cutoff(k, "k", data.nb)
    if ties == "average":
        stats = _query_stats(data, (), stable=False)
        return float((_metrics.expected_hits(stats.counts, stats.relevant, k) / k).mean())
    stats = _query_stats(data, (k,), stable=True)
    return float((stats.hits[:, 0] / k).mean())


def precision_at_radius(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    radius: int = 2,
    backend: str = "numpy",
    device: str | None = None,
) -> float:
    """Mean over queries of the precision of the items within Hamming distance ``radius``.

    A query that retrieves nothing counts precision 0.

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels``.
        radius: Hamming radius (>= 0).
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.
    """
    data = _inputs(q_codes, q_labels, db_codes, db_labels, backend, device)
    radius = check_radius(radius)
    stats = _query_stats(data, (), stable=False)
    return float(_metrics.precision_within(stats.counts, stats.relevant, radius).mean())


def precision_recall_curve(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    backend: str = "numpy",
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of Hamming-ball retrieval at every radius 0..bits, averaged over queries.

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels``.
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.

    Returns:
        ``(precision, recall)``, float64 (bits + 1,) each, indexed by radius.
    """
    data = _inputs(q_codes, q_labels, db_codes, db_labels, backend, device)
    stats = _query_stats(data, (), stable=False)
    retrieved = np.cumsum(stats.counts, axis=1)
    hits = np.cumsum(stats.relevant, axis=1)
    precision = _metrics.ratio(hits, retrieved)
    recall = _metrics.ratio(hits, hits[:, -1:])
    return precision.mean(axis=0), recall.mean(axis=0)


def evaluate_retrieval(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    topk: int = 1000,
    radius: int = 2,
    backend: str = "numpy",
    device: str | None = None,
) -> dict[str, float]:
    """All headline retrieval metrics from one pass over the database.

    Args:
        q_codes: query codes, 0/1 (nq, bits).
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C).
        db_codes: database codes, 0/1 (nb, bits).
        db_labels: database labels, of the same kind as ``q_labels``.
        topk: cutoff of ``map_at_k`` and ``precision_at_k`` (>= 1; capped to nb).
        radius: Hamming radius of ``precision_radius{radius}``.
        backend: one of ``BACKENDS``.
        device: torch device for ``backend="torch"``.

    Returns:
        ``{"map": stable mAP@all, "map_tie_aware": tie-aware mAP@all, "map_at_k": stable mAP@topk,
        "topk": the cutoff used (int, after capping), f"precision_radius{radius}": P@radius,
        "precision_at_k": stable P@topk}``.
    """
    data = _inputs(q_codes, q_labels, db_codes, db_labels, backend, device)
    return evaluate_retrieval_of(data, topk, radius)


def evaluate_retrieval_of(data: Data | _resident.Loaded, topk: Any, radius: Any) -> dict[str, float]:
    """:func:`evaluate_retrieval` of checked inputs (also :class:`HammingIndex`'s: one formula)."""
    k = check_cutoff(topk, "topk", data.nb)
    radius = check_radius(radius)
    return retrieval_metrics(_query_stats(data, (data.nb, k), stable=True), data.nb, k, radius)


def retrieval_metrics(stats: _Stats, nb: int, k: int, radius: int) -> dict[str, float]:
    """:func:`evaluate_retrieval`'s dictionary from histograms and stable sums at the cutoffs ``(nb, k)``.

    One place for the formulas, so that the sharded evaluation (``distributed``), which gathers the
    same arrays across processes, returns bitwise the same numbers.
    """
    return {
        "map": float(_metrics.ratio(stats.ap_sum[:, 0], stats.hits[:, 0]).mean()),
        "map_tie_aware": float(_metrics.tie_aware_ap(stats.counts, stats.relevant, nb).mean()),
        "map_at_k": float(_metrics.ratio(stats.ap_sum[:, 1], stats.hits[:, 1]).mean()),
        "topk": k,
        f"precision_radius{radius}": float(
            _metrics.precision_within(stats.counts, stats.relevant, radius).mean()
        ),
        "precision_at_k": float((stats.hits[:, 1] / k).mean()),
    }


def _inputs(
    q_codes: Any, q_labels: Any, db_codes: Any, db_labels: Any, backend: str, device: Any
) -> Data | _resident.Loaded:
    """A metric call's inputs, checked: on the host (numpy, faiss) or loaded onto the torch device."""
    if backend != "torch":
        return prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    check_backend(backend, device)
    dev = _resident.resolve_device(device)
    return _resident.load_call(q_codes, q_labels, db_codes, db_labels, dev, "torch")


def _query_stats(data: Data | _resident.Loaded, ks: tuple[int, ...], *, stable: bool) -> _Stats:
    """Histograms of every query and, if ``stable``, stable-order AP sums and hits at each cutoff ``ks``."""
    if isinstance(data, _resident.Loaded):
        return _Stats(*data.database.stats(data.xq, data.lq, ks, stable))
    nq, bits = data.xq.shape
    out = _Stats(
        np.zeros((nq, bits + 1), dtype=np.int64),
        np.zeros((nq, bits + 1), dtype=np.int64),
        np.zeros((nq, len(ks)), dtype=np.float64),
        np.zeros((nq, len(ks)), dtype=np.int64),
    )
    cutoffs = np.asarray(ks, dtype=np.int64)
    lq, lb = label_words(data.yq), label_words(data.yb)
    if data.backend == "numpy":
        from hashing_gym.ranking import _numba

        xq, xb = pack_words(data.xq), pack_words(data.xb)
        _numba.stats_into(None, xq, xb, lq, lb, data.multi, cutoffs, stable, out)
    else:
        from hashing_gym.ranking import _faiss

        _faiss.stats_into(data, lq, lb, cutoffs, stable, out)
    return out


def set_num_threads(count: int) -> None:
    """Threads of the ``"numpy"`` backend's parallel kernels (numba's; capped to its ``NUMBA_NUM_THREADS``).

    Use this rather than ``numba.set_num_threads``: it first chooses numba's threading layer as the
    backend does (workqueue, which leaves torch's OpenMP threads alone; see the package docstring),
    while numba's own call would start its default layer.
    """
    from hashing_gym.ranking import _numba

    _numba.set_num_threads(check_positive_int(count, "count"))
