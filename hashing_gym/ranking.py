"""Hamming ranking and retrieval metrics: the one implementation used by the envs, evaluation and benchmarks.

Codes are ``uint8 (n, bits)`` arrays of 0/1 in the whole public API (bool, integer or float arrays holding
only 0 and 1 are accepted too), with at least one row and one bit; packing into machine words is internal.
Shapes follow faiss' ``contrib/evaluation.py``: ``nq`` queries, ``nb`` database items, ``D`` distances and
``I`` database indices of a ranking.

Relevance:
    ``labels`` are either int64 ``(n,)`` (single-label: relevant = same label) or uint8 ``(n, C)`` multi-hot
    (multi-label: relevant = at least one shared label). Queries and database must use the same kind
    (and the same ``C``), otherwise ``ValueError``.

Ranking order (``ties="stable"``):
    ascending Hamming distance, ties broken by database index. This is what most published hashing code
    effectively reports (a stable ``argsort`` of the distances) and it is what :func:`rank` returns.

Average precision over the first ``k`` positions (``k = nb`` for mAP@all):
    the mean, over the relevant items within the first ``k`` positions, of the precision at their position.
    The denominator is the number of relevant items retrieved in the top ``k`` (the convention of
    DPSH/DSDH's ``CalcTopMap``), so for mAP@all it is the query's number of relevant items. A query with no
    relevant item in its list has AP 0 and is still averaged in.

Tie-aware AP (``ties="average"``; He et al., "Hashing as Tie-Aware Learning to Rank", CVPR 2018):
    the expectation of AP over random orders inside each group of equal distance. For distance bucket ``d``
    with ``n_d`` items, ``r_d`` of them relevant, and ``N_<`` items (``R_<`` relevant) at smaller distances,
    position ``j = 1..n_d`` inside the bucket is relevant with probability ``r_d / n_d``; given that, the
    expected number of relevant items up to and including it is ``A + (j - 1) B`` with ``A = R_< + 1`` and
    ``B = (r_d - 1) / (n_d - 1)`` (``B = 0`` when ``n_d = 1``). The expected sum of precisions over the bucket
    is therefore ``(r_d / n_d) [B n_d + (A - B (1 + N_<)) (H(N_< + n_d) - H(N_<))]`` with harmonic numbers
    ``H``. For mAP@all the denominator (the number of relevant items) is fixed, so this is the exact expected
    AP, computed from two per-query histograms in O(bits) per query. With ``topk``, only positions ``<= k``
    count (the boundary bucket contributes its first ``m = k - N_<`` positions) and the expected sum is
    divided by the *expected* number of relevant items in the top ``k``: a ratio of expectations, not the
    expectation of the ratio (which has no closed form); it equals the exact expectation when ``k >= nb``.

Other metrics:
    - ``precision_at_k``: relevant items among the first ``k`` divided by ``k`` (stable order; with
      ``ties="average"`` the expected value over tie orders).
    - ``precision_at_radius``: the items at distance ``<= radius`` are retrieved; precision = relevant
      retrieved / retrieved, and a query that retrieves nothing counts 0 (it is averaged in).
    - ``precision_recall_curve``: at each radius ``r = 0..bits``, precision as above and recall = relevant
      within ``r`` / all relevant (0 for a query without relevant items); both averaged over queries.

``topk`` and ``k`` larger than the database are capped to ``nb`` (the usual convention: mAP@1000 on a
database of 500 items is mAP@all). Non-positive values raise ``ValueError``.

mAP@all never sorts: with b-bit codes there are only ``b + 1`` distances. The ``"numpy"`` backend builds the
per-query histograms (all items and relevant items per distance), which give the tie-aware AP, P@r, the PR
curve and the expected P@k, and then finds the stable-order AP in one more scan of the database in index
order, placing each item at its stable position ``offset[d] + seen[d] + 1``: O(nb) per query.

Backends (``BACKENDS``):
    - ``"numpy"``: numba-jitted kernels over codes packed into uint64 words (hardware popcount), parallel
      over queries; memory per query is O(nb) small buffers, never a ``nq x nb`` matrix (except for
      :func:`hamming_distance`, whose result is that matrix).
    - ``"faiss"``: distances from faiss (``IndexBinaryFlat`` search for :func:`rank`, ``faiss.hammings`` for
      distance matrices, computed in chunks of queries); the metrics reuse the numba counting kernels on each
      chunk. Codes whose width is not a multiple of 8 are padded with zero bits on both sides, which leaves
      distances unchanged. When faiss sees GPUs, :func:`rank` uses ``GpuIndexBinaryFlat``; there the set of
      items kept from the last tied distance is faiss' choice (the order within ties is still by index).
      That GPU branch is untested here: faiss-gpu needs CUDA 12's cuBLAS, and the GPU machine this was
      developed on has CUDA 13 (the torch backend is the tested GPU path).
    - ``"torch"``: on ``device`` (default: ``"cuda"`` when available, else ``"cpu"``).
      On an NVIDIA GPU with CuPy installed (optional; it compiles the kernels with NVRTC at first use), the
      metrics run as two CUDA kernels over codes packed into 64-bit words: popcount of XOR, per-query
      counters in shared memory, the database split into segments (pass 1: histograms per segment; pass 2:
      each segment again in index order, from its starting positions, for the stable AP sums), so nothing
      of size ``nq x nb`` is ever stored. Codes of up to 383 bits; wider codes, or no CuPy, use plain torch:
      distances from a matmul of +-1 float32 codes, ``d = (bits - <x, y>) / 2`` (exact for
      ``bits < 2**24``), in chunks of queries; histograms with ``scatter_add``; the stable AP with a stable
      sort of the distances (O(nb log nb) per query). :func:`rank` and :func:`hamming_distance` always use
      the matmul; :func:`rank` takes ``topk`` of the unique keys ``d * nb + index``, which is exactly the
      stable order.

All backends give the same results (tests check them against a brute-force reference to 1e-9).

>>> xb = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=np.uint8)
>>> yb = np.array([0, 1, 0, 1])
>>> D, I = rank(xb[:1], xb, topk=3)
>>> D.tolist(), I.tolist()
([[0, 1, 3]], [[0, 2, 3]])
>>> mean_average_precision(xb, yb, xb, yb)
1.0
"""

from __future__ import annotations

import functools
import operator
import os
import warnings
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

# numba's default OpenMP threading layer resets OpenMP's thread count the first time a parallel kernel
# runs, which silently lifts torch (in the same process) from the threads its user set to every core:
# small networks then train up to 20x slower. The workqueue layer leaves OpenMP alone. A user's
# explicit NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

BACKENDS: tuple[str, ...] = ("numpy", "faiss", "torch")
TIES: tuple[str, ...] = ("stable", "average")

# Bytes of one chunk of the distance matrix (faiss) or of the sort keys (torch).
_CHUNK_BYTES = 1 << 26


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def pack_codes(codes: Any) -> np.ndarray:
    """Validate 0/1 codes and pack them into 64-bit words.

    Args:
        codes: array-like (n, bits) of 0/1.

    Returns:
        uint64 array (n, ceil(bits / 64)); unused high bits of the last word are 0, so the Hamming distance
        between two packed rows is the popcount of their XOR.

    Raises:
        ValueError: if ``codes`` is not 2-D, is empty, or holds a value other than 0 and 1.

    >>> pack_codes(np.array([[1, 0, 1], [0, 0, 0]])).tolist()
    [[5], [0]]
    """
    return _pack_words(_check_codes(codes, "codes"))


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
    a, b = _check_code_pair(a, b)
    _check_backend(backend, device)
    if backend == "numpy":
        out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
        _launch("hamming", out.size, _pack_words(a), _pack_words(b), out)
        return out
    if backend == "faiss":
        return _faiss_distances(np.packbits(a, axis=1), np.packbits(b, axis=1))
    return _torch_hamming(a, b, device)


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
    query, database = _check_code_pair(query, database)
    _check_backend(backend, device)
    k = _check_cutoff(topk, "topk", database.shape[0])
    if backend == "numpy":
        D = np.empty((query.shape[0], k), dtype=np.int32)
        I = np.empty((query.shape[0], k), dtype=np.int64)  # noqa: E741 (faiss' name)
        pairs = query.shape[0] * database.shape[0]
        _launch("rank", pairs, _pack_words(query), _pack_words(database), query.shape[1] + 1, D, I)
        return D, I
    if backend == "faiss":
        return _faiss_rank(query, database, k)
    return _torch_rank(query, database, k, device)


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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    stats = _query_stats(data, (), stable=False)
    return stats.counts, stats.relevant


def packed_distance_counts(
    xq: np.ndarray, lq: np.ndarray, xb: np.ndarray, lb: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distance_counts` of codes and labels packed once by :func:`pack_codes` (a reward's hot path).

    An environment that ranks a few codes against the same database at every step packs the database
    once, so each call costs O(nq nb ceil(bits / 64)) on the numba kernel: nothing is validated element by
    element or packed again (only shapes, dtypes and the zero padding of the last word are checked).

    Args:
        xq: packed query codes, uint64 (nq, ceil(bits / 64)) from :func:`pack_codes`.
        lq: query labels: int class ids (nq,), or multi-hot labels packed by :func:`pack_codes`,
            uint64 (nq, ceil(C / 64)).
        xb: packed database codes, uint64 (nb, ceil(bits / 64)).
        lb: database labels, of the same kind as ``lq``.
        bits: code length (the packed words do not record it).

    Returns:
        ``(counts, relevant)``, int64 (nq, bits + 1), as :func:`distance_counts` returns them.

    >>> xb = pack_codes([[0, 0, 0], [1, 1, 1], [0, 0, 1]])
    >>> counts, relevant = packed_distance_counts(xb[:1], np.array([0]), xb, np.array([0, 1, 0]), bits=3)
    >>> counts.tolist(), relevant.tolist()
    ([[1, 1, 0, 1]], [[1, 1, 0, 0]])
    """
    bits = operator.index(bits)
    words = (bits + 63) // 64
    for name, arr in (("xq", xq), ("xb", xb)):
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype != np.uint64
            or arr.ndim != 2
            or arr.shape[1] != words
        ):
            raise ValueError(
                f"{name} must be packed codes, uint64 (n, {words}) for {bits} bits from pack_codes, got "
                f"{getattr(arr, 'dtype', type(arr).__name__)} of shape {np.shape(arr)}"
            )
        # Set padding bits would give distances above `bits`, out of the histograms' range.
        if bits % 64 and arr.size and (arr[:, -1] >> np.uint64(bits % 64)).any():
            raise ValueError(f"{name} has bits set beyond bit {bits}: pack codes with pack_codes")
    lq, lb = np.asarray(lq), np.asarray(lb)
    if lq.ndim != lb.ndim or lq.ndim not in (1, 2) or (lq.ndim == 2 and lq.shape[1] != lb.shape[1]):
        raise ValueError(
            f"lq and lb must both be class ids (n,) or both packed multi-hot labels (n, words), "
            f"got shapes {lq.shape} and {lb.shape}"
        )
    if lq.shape[0] != xq.shape[0] or lb.shape[0] != xb.shape[0]:
        raise ValueError(
            f"labels must have one row per code, got {lq.shape[0]} and {lb.shape[0]} labels "
            f"for {xq.shape[0]} and {xb.shape[0]} codes"
        )
    multi = lq.ndim == 2
    if multi:
        if lq.dtype != np.uint64 or lb.dtype != np.uint64:
            raise ValueError(
                f"packed multi-hot labels must be uint64 from pack_codes, got {lq.dtype} and {lb.dtype}"
            )
        lq, lb = np.ascontiguousarray(lq).view(np.int64), np.ascontiguousarray(lb).view(np.int64)
    else:
        if not (np.issubdtype(lq.dtype, np.integer) and np.issubdtype(lb.dtype, np.integer)):
            raise ValueError(f"class ids must be integers, got {lq.dtype} and {lb.dtype}")
        lq = np.ascontiguousarray(lq, dtype=np.int64).reshape(-1, 1)
        lb = np.ascontiguousarray(lb, dtype=np.int64).reshape(-1, 1)
    nq = xq.shape[0]
    counts = np.zeros((nq, bits + 1), dtype=np.int64)
    relevant = np.zeros((nq, bits + 1), dtype=np.int64)
    no_ks, no_sums, no_hits = np.zeros(0, np.int64), np.zeros((nq, 0)), np.zeros((nq, 0), np.int64)
    no_dist = np.zeros((0, 0), dtype=np.int32)
    args = (lq, lb, multi, no_ks, False, counts, relevant, no_sums, no_hits)
    _launch("stats", nq * xb.shape[0], no_dist, np.ascontiguousarray(xq), np.ascontiguousarray(xb), *args)
    return counts, relevant


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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    _check_ties(ties)
    k = data.nb if topk is None else _check_cutoff(topk, "topk", data.nb)
    if ties == "average":
        stats = _query_stats(data, (), stable=False)
        return _tie_aware_ap(stats.counts, stats.relevant, k)
    stats = _query_stats(data, (k,), stable=True)
    return _ratio(stats.ap_sum[:, 0], stats.hits[:, 0])


def average_precision_from_counts(counts: Any, relevant: Any, *, topk: int | None = None) -> np.ndarray:
    """Tie-aware average precision from per-query distance histograms alone.

    Args:
        counts: number of database items at each distance, integers (nq, bits + 1).
        relevant: number of relevant database items at each distance, integers (nq, bits + 1), each
            ``<= counts``.
        topk: AP over the first ``topk`` positions (capped to each query's total); None for all.

    Returns:
        float64 array (nq,): the expected AP over random orders within equal distances (ratio of
        expectations with ``topk``; see the module docstring).

    >>> counts = np.array([[1, 2, 1]])  # 1 item at distance 0, 2 at distance 1, 1 at distance 2
    >>> relevant = np.array([[1, 1, 0]])
    >>> average_precision_from_counts(counts, relevant).round(6).tolist()  # (1 + (2/2 + 2/3) / 2) / 2
    [0.916667]
    """
    counts = _check_histogram(counts, "counts")
    relevant = _check_histogram(relevant, "relevant")
    if counts.shape != relevant.shape:
        raise ValueError(
            f"counts and relevant must have the same shape, got {counts.shape} and {relevant.shape}"
        )
    if (relevant > counts).any():
        q, d = np.argwhere(relevant > counts)[0]
        raise ValueError(f"relevant[{q}, {d}] = {relevant[q, d]} exceeds counts[{q}, {d}] = {counts[q, d]}")
    if topk is None:
        k: int | np.ndarray = counts.sum(axis=1)
    else:
        k = _check_cutoff(topk, "topk", None)
    return _tie_aware_ap(counts, relevant, k)


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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    _check_ties(ties)
    k = _check_cutoff(k, "k", data.nb)
    if ties == "average":
        stats = _query_stats(data, (), stable=False)
        return float((_expected_hits(stats.counts, stats.relevant, k) / k).mean())
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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    radius = _check_radius(radius)
    stats = _query_stats(data, (), stable=False)
    return float(_precision_within(stats.counts, stats.relevant, radius).mean())


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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    stats = _query_stats(data, (), stable=False)
    retrieved = np.cumsum(stats.counts, axis=1)
    hits = np.cumsum(stats.relevant, axis=1)
    precision = _ratio(hits, retrieved)
    recall = _ratio(hits, hits[:, -1:])
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
    data = _prepare(q_codes, q_labels, db_codes, db_labels, backend, device)
    k = _check_cutoff(topk, "topk", data.nb)
    radius = _check_radius(radius)
    stats = _query_stats(data, (data.nb, k), stable=True)
    return {
        "map": float(_ratio(stats.ap_sum[:, 0], stats.hits[:, 0]).mean()),
        "map_tie_aware": float(_tie_aware_ap(stats.counts, stats.relevant, data.nb).mean()),
        "map_at_k": float(_ratio(stats.ap_sum[:, 1], stats.hits[:, 1]).mean()),
        "topk": k,
        f"precision_radius{radius}": float(_precision_within(stats.counts, stats.relevant, radius).mean()),
        "precision_at_k": float((stats.hits[:, 1] / k).mean()),
    }


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


class _Data(NamedTuple):
    """Validated inputs of a metric: 0/1 uint8 codes and labels, plus the backend choice."""

    xq: np.ndarray
    yq: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    multi: bool
    backend: str
    device: str | None

    @property
    def nb(self) -> int:
        return self.xb.shape[0]


class _Stats(NamedTuple):
    """Per-query results of one pass: histograms (nq, bits + 1) and stable AP sums and hits (nq, len(ks))."""

    counts: np.ndarray
    relevant: np.ndarray
    ap_sum: np.ndarray
    hits: np.ndarray


def _check_codes(codes: Any, name: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, bits) of 0/1, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    return _check_binary(arr, name)


def _check_binary(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold the numbers 0 and 1, got dtype {arr.dtype}")
    # Unsigned integers: one comparison, one temporary (large databases are checked on every call).
    bad = arr > 1 if np.issubdtype(arr.dtype, np.unsignedinteger) else (arr != 0) & (arr != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must hold only 0 and 1, got {arr[where].item()!r} at index {where}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _check_code_pair(xq: Any, xb: Any) -> tuple[np.ndarray, np.ndarray]:
    xq = _check_codes(xq, "query codes")
    xb = _check_codes(xb, "database codes")
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(
            f"query and database codes must have the same number of bits, got {xq.shape[1]} and {xb.shape[1]}"
        )
    return xq, xb


def _check_labels(labels: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} (single-label, 1-D) must be integers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    elif arr.ndim == 2:
        if arr.shape[1] == 0:
            raise ValueError(f"{name} (multi-hot, 2-D) has no classes: shape {arr.shape}")
        arr = _check_binary(arr, f"{name} (multi-hot)")
    else:
        raise ValueError(f"{name} must be 1-D (single-label) or 2-D (multi-hot), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the codes have {n}")
    return arr


def _check_backend(backend: str, device: str | None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device is not None and backend != "torch":
        raise ValueError(f"device={device!r} is only used by backend='torch', got backend={backend!r}")


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def _check_cutoff(value: Any, name: str, n: int | None) -> int:
    """A positive integer, capped to ``n`` when given."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        k = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if k <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return k if n is None else min(k, n)


def _check_radius(radius: Any) -> int:
    if isinstance(radius, (bool, np.bool_)):
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    try:
        r = operator.index(radius)
    except TypeError:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}") from None
    if r < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return r


def _check_histogram(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D (nq, bits + 1), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold counts, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr)) if arr.dtype.kind == "f" else arr < 0
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must hold non-negative integer counts, got {arr[where].item()!r} at index {where}"
        )
    return arr.astype(np.int64)


def _prepare(xq: Any, yq: Any, xb: Any, yb: Any, backend: str, device: str | None) -> _Data:
    xq, xb = _check_code_pair(xq, xb)
    _check_backend(backend, device)
    yq = _check_labels(yq, xq.shape[0], "query labels")
    yb = _check_labels(yb, xb.shape[0], "database labels")
    if yq.ndim != yb.ndim:
        kinds = {1: "single-label (1-D)", 2: "multi-hot (2-D)"}
        raise ValueError(f"query labels are {kinds[yq.ndim]} but database labels are {kinds[yb.ndim]}")
    if yq.ndim == 2 and yq.shape[1] != yb.shape[1]:
        raise ValueError(
            f"query and database multi-hot labels must have the same number of classes, "
            f"got {yq.shape[1]} and {yb.shape[1]}"
        )
    return _Data(xq, yq, xb, yb, yq.ndim == 2, backend, device)


# ---------------------------------------------------------------------------------------------------------
# Metrics from histograms and sums (shared by all backends)
# ---------------------------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _precision_within(counts: np.ndarray, relevant: np.ndarray, radius: int) -> np.ndarray:
    r = min(radius, counts.shape[1] - 1)
    return _ratio(relevant[:, : r + 1].sum(axis=1), counts[:, : r + 1].sum(axis=1))


def _expected_hits(counts: np.ndarray, relevant: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Expected number of relevant items in the top ``k`` over random orders within ties (nq,)."""
    return _tie_aware(counts, relevant, k)[1]


def _tie_aware_ap(counts: np.ndarray, relevant: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Closed-form tie-aware AP over the first ``k`` positions (module docstring) (nq,)."""
    expected_sum, expected_hits = _tie_aware(counts, relevant, k)
    return _ratio(expected_sum, expected_hits)


def _tie_aware(
    counts: np.ndarray, relevant: np.ndarray, k: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expected sum of precisions and expected hits in the top ``k`` of each query (nq,) twice."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    relevant = np.ascontiguousarray(relevant, dtype=np.int64)
    cutoffs = np.ascontiguousarray(np.broadcast_to(np.asarray(k, dtype=np.int64), counts.shape[:1]))
    harmonic = _harmonic_table(int(counts.sum(axis=1).max()))
    expected_sum = np.empty(counts.shape[0], dtype=np.float64)
    expected_hits = np.empty(counts.shape[0], dtype=np.float64)
    _tie_aware_kernel(counts, relevant, cutoffs, harmonic, expected_sum, expected_hits)
    return expected_sum, expected_hits


@numba.njit(cache=True)
def _tie_aware_kernel(counts, relevant, cutoffs, harmonic, expected_sum, expected_hits):
    """Per query, bucket by bucket: ``N_<``, ``R_<``, the ``m`` positions inside the top k, closed form."""
    for i in range(counts.shape[0]):
        before = 0  # N_<
        rel_before = 0  # R_<
        total = 0.0
        hits = 0.0
        for d in range(counts.shape[1]):
            n = counts[i, d]
            r = relevant[i, d]
            inside = min(max(cutoffs[i] - before, 0), n)
            if r > 0:
                slope = (r - 1.0) / (n - 1.0) if n > 1 else 0.0  # B
                intercept = rel_before + 1.0 - slope * (1.0 + before)  # A - B (1 + N_<)
                gap = harmonic[before + inside] - harmonic[before]
                total += (r / n) * (slope * inside + intercept * gap)
                hits += r if inside == n else r * (inside / n)
            before += n
            rel_before += r
        expected_sum[i] = total
        expected_hits[i] = hits


@functools.lru_cache(maxsize=8)
def _harmonic_block(length: int) -> np.ndarray:
    table = _harmonic_kernel(length)
    table.flags.writeable = False
    return table


def _harmonic_table(n: int) -> np.ndarray:
    """Harmonic numbers ``H[0..>=n]`` in float64 (compensated sums), cached in power-of-two lengths."""
    return _harmonic_block(1 << max(10, (n + 1).bit_length()))


# ---------------------------------------------------------------------------------------------------------
# Backend dispatch
# ---------------------------------------------------------------------------------------------------------


def _query_stats(data: _Data, ks: tuple[int, ...], *, stable: bool) -> _Stats:
    """Histograms of every query and, if ``stable``, stable-order AP sums and hits at each cutoff ``ks``."""
    if data.backend == "torch":
        return _torch_stats(data, ks, stable)
    nq, bits = data.xq.shape
    counts = np.zeros((nq, bits + 1), dtype=np.int64)
    relevant = np.zeros((nq, bits + 1), dtype=np.int64)
    ap_sum = np.zeros((nq, len(ks)), dtype=np.float64)
    hits = np.zeros((nq, len(ks)), dtype=np.int64)
    cutoffs = np.asarray(ks, dtype=np.int64)
    lq, lb = _label_words(data.yq), _label_words(data.yb)
    pairs = nq * data.nb
    if data.backend == "numpy":
        no_dist = np.zeros((0, 0), dtype=np.int32)
        xq, xb = _pack_words(data.xq), _pack_words(data.xb)
        args = (lq, lb, data.multi, cutoffs, stable, counts, relevant, ap_sum, hits)
        _launch("stats", pairs, no_dist, xq, xb, *args)
    else:
        no_codes = np.zeros((0, 0), dtype=np.uint64)
        bq, bb = np.packbits(data.xq, axis=1), np.packbits(data.xb, axis=1)
        step = max(1, _CHUNK_BYTES // (4 * data.nb))
        for s in range(0, nq, step):
            e = min(s + step, nq)
            chunk = (
                lq[s:e],
                lb,
                data.multi,
                cutoffs,
                stable,
                counts[s:e],
                relevant[s:e],
                ap_sum[s:e],
                hits[s:e],
            )
            _launch("stats", pairs, _faiss_distances(bq[s:e], bb), no_codes, no_codes, *chunk)
    return _Stats(counts, relevant, ap_sum, hits)


def _pack_words(codes: np.ndarray) -> np.ndarray:
    """uint8 0/1 (n, bits) -> uint64 (n, ceil(bits / 64)), zero-padded."""
    n, bits = codes.shape
    words = (bits + 63) // 64
    packed = np.zeros((n, 8 * words), dtype=np.uint8)
    packed[:, : (bits + 7) // 8] = np.packbits(codes, axis=1, bitorder="little")
    return packed.view(np.uint64)


def _label_words(labels: np.ndarray) -> np.ndarray:
    """Labels as int64 (n, w) for the kernels: (n, 1) class ids, or multi-hot packed into 64-bit words."""
    if labels.ndim == 1:
        return labels.reshape(-1, 1)
    return _pack_words(labels).view(np.int64)


# ---------------------------------------------------------------------------------------------------------
# numba kernels ("numpy" backend; the counting kernel is shared with "faiss")
# ---------------------------------------------------------------------------------------------------------


@intrinsic
def _popcount(typingctx, x):  # noqa: D103 (numba intrinsic)
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@numba.njit(cache=True, inline="always")
def _distance(xq, i, xb, j):
    d = 0
    for w in range(xq.shape[1]):
        d += _popcount(xq[i, w] ^ xb[j, w])
    return d


@numba.njit(cache=True, inline="always")
def _is_relevant(lq, i, lb, j, multi):
    if multi:
        for w in range(lq.shape[1]):
            if lq[i, w] & lb[j, w] != 0:
                return 1
        return 0
    return 1 if lq[i, 0] == lb[j, 0] else 0


@numba.njit(cache=True, inline="always")
def _hamming_row(xq, xb, i, out):
    for j in range(xb.shape[0]):
        out[i, j] = _distance(xq, i, xb, j)


@numba.njit(cache=True)
def _rank_row(xq, xb, i, nbins, D, I):  # noqa: E741
    """Stable top k of query ``i`` by counting sort: histogram, offsets, one scan in index order."""
    nb, k = xb.shape[0], D.shape[1]
    dist = np.empty(nb, dtype=np.int32)
    offset = np.zeros(nbins, dtype=np.int64)
    for j in range(nb):
        d = _distance(xq, i, xb, j)
        dist[j] = d
        offset[d] += 1
    total = 0
    for d in range(nbins):
        c = offset[d]
        offset[d] = total
        total += c
    for j in range(nb):
        d = dist[j]
        p = offset[d]
        if p < k:
            D[i, p] = d
            I[i, p] = j
        offset[d] = p + 1


@numba.njit(cache=True)
def _stable_scan(keys, counts, relevant, ks, ap_sum, hits):
    """One query's stable-order AP sums and hits at each cutoff, from keys ``2 d + relevant`` by index."""
    nbins = counts.shape[0]
    before = np.empty(nbins, dtype=np.int64)  # N_<: items at smaller distances
    rel_before = np.empty(nbins, dtype=np.int64)  # R_<: relevant items at smaller distances
    seen = np.zeros(2 * nbins, dtype=np.int64)  # items seen so far per key: one increment per item
    n = 0
    r = 0
    for d in range(nbins):
        before[d] = n
        rel_before[d] = r
        n += counts[d]
        r += relevant[d]
    for j in range(keys.shape[0]):
        key = keys[j]
        seen[key] += 1
        if key & 1:
            d = key >> 1
            position = before[d] + seen[key - 1] + seen[key]
            precision = (rel_before[d] + seen[key]) / position
            for c in range(ks.shape[0]):
                if position <= ks[c]:
                    ap_sum[c] += precision
                    hits[c] += 1


@numba.njit(cache=True, inline="always")
def _keys_one_word(q, label, xb, lb, stable, hist, keys):
    """:func:`_stats_row`'s loop for one-word codes and class ids (3x faster than the general loop)."""
    for j in range(xb.shape[0]):
        key = 2 * _popcount(q ^ xb[j, 0]) + (1 if label == lb[j, 0] else 0)
        hist[key] += 1
        if stable:
            keys[j] = key


@numba.njit(cache=True)
def _stats_row(dist, xq, xb, lq, lb, i, multi, ks, stable, counts, relevant, ap_sum, hits):
    """Histograms of query ``i`` and, if ``stable``, its stable AP sums and hits.

    Distances come from ``dist[i]`` when ``dist`` has rows (faiss), else from the packed codes ``xq``, ``xb``.
    """
    nb, nbins = lb.shape[0], counts.shape[1]
    from_codes = dist.shape[0] == 0
    keys = np.empty(nb if stable else 0, dtype=np.int32)
    hist = np.zeros(2 * nbins, dtype=np.int64)  # per key 2 d + relevant: one increment per item
    if from_codes and xq.shape[1] == 1 and not multi:
        _keys_one_word(xq[i, 0], lq[i, 0], xb, lb, stable, hist, keys)
    else:
        for j in range(nb):
            d = _distance(xq, i, xb, j) if from_codes else dist[i, j]
            key = 2 * d + _is_relevant(lq, i, lb, j, multi)
            hist[key] += 1
            if stable:
                keys[j] = key
    for d in range(nbins):
        counts[i, d] = hist[2 * d] + hist[2 * d + 1]
        relevant[i, d] = hist[2 * d + 1]
    if stable:
        _stable_scan(keys, counts[i], relevant[i], ks, ap_sum[i], hits[i])


# Each kernel comes twice: parallel over queries, and serial for small work, where waking the thread pool
# costs more than the work (milliseconds on a loaded machine; an env's reward is one query).


@numba.njit(cache=True, parallel=True)
def _hamming_parallel(xq, xb, out):
    for i in prange(xq.shape[0]):
        _hamming_row(xq, xb, i, out)


@numba.njit(cache=True)
def _hamming_serial(xq, xb, out):
    for i in range(xq.shape[0]):
        _hamming_row(xq, xb, i, out)


@numba.njit(cache=True, parallel=True)
def _rank_parallel(xq, xb, nbins, D, I):  # noqa: E741
    for i in prange(xq.shape[0]):
        _rank_row(xq, xb, i, nbins, D, I)


@numba.njit(cache=True)
def _rank_serial(xq, xb, nbins, D, I):  # noqa: E741
    for i in range(xq.shape[0]):
        _rank_row(xq, xb, i, nbins, D, I)


@numba.njit(cache=True, parallel=True)
def _stats_parallel(dist, xq, xb, lq, lb, multi, ks, stable, counts, relevant, ap_sum, hits):
    for i in prange(counts.shape[0]):
        _stats_row(dist, xq, xb, lq, lb, i, multi, ks, stable, counts, relevant, ap_sum, hits)


@numba.njit(cache=True)
def _stats_serial(dist, xq, xb, lq, lb, multi, ks, stable, counts, relevant, ap_sum, hits):
    for i in range(counts.shape[0]):
        _stats_row(dist, xq, xb, lq, lb, i, multi, ks, stable, counts, relevant, ap_sum, hits)


_KERNELS = {
    "hamming": (_hamming_parallel, _hamming_serial),
    "rank": (_rank_parallel, _rank_serial),
    "stats": (_stats_parallel, _stats_serial),
}

# Below this many query-item pairs the serial kernels run.
_PARALLEL_MIN_PAIRS = 1 << 18


def _launch(kernel: str, pairs: int, *args: Any) -> None:
    parallel, serial = _KERNELS[kernel]
    (parallel if pairs >= _PARALLEL_MIN_PAIRS else serial)(*args)


@numba.njit(cache=True)
def _harmonic_kernel(length):
    table = np.empty(length, dtype=np.float64)
    table[0] = 0.0
    total = 0.0
    carry = 0.0  # Kahan compensation
    for i in range(1, length):
        y = 1.0 / i - carry
        t = total + y
        carry = (t - total) - y
        total = t
        table[i] = total
    return table


# ---------------------------------------------------------------------------------------------------------
# faiss backend
# ---------------------------------------------------------------------------------------------------------


def _faiss_distances(bq: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """int32 (nq, nb) distances between codes packed by ``np.packbits`` (uint8 (n, nbytes))."""
    import faiss

    bq, bb = np.ascontiguousarray(bq), np.ascontiguousarray(bb)
    out = np.empty((bq.shape[0], bb.shape[0]), dtype=np.int32)
    faiss.hammings(
        faiss.swig_ptr(bq), faiss.swig_ptr(bb), bq.shape[0], bb.shape[0], bq.shape[1], faiss.swig_ptr(out)
    )
    return out


def _faiss_rank(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    bq, bb = np.packbits(xq, axis=1), np.packbits(xb, axis=1)
    nbits = 8 * bb.shape[1]
    if faiss.get_num_gpus() > 0:  # k is limited by faiss' GPU k-selection (2048)
        resources = faiss.StandardGpuResources()
        index = faiss.GpuIndexBinaryFlat(resources, nbits)
    else:
        resources, index = None, faiss.IndexBinaryFlat(nbits)
    index.add(bb)
    D, I = index.search(bq, k)  # noqa: E741
    if resources is not None:  # order ties by index (the CPU heap already breaks ties by id)
        order = np.lexsort((I, D))
        D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)  # noqa: E741
    return D.astype(np.int32, copy=False), I.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------------------
# torch backend
# ---------------------------------------------------------------------------------------------------------


def _torch_device(device: str | None) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device")
    return dev


def _torch_signs(codes: np.ndarray, dev: Any) -> Any:
    import torch

    return torch.as_tensor(codes, device=dev).to(torch.float32).mul_(2.0).sub_(1.0)


def _torch_step(nb: int, arrays: int, dev: Any) -> int:
    """Queries per chunk so that ``arrays`` 8-byte (chunk, nb) tensors fit in the chunk budget."""
    budget = _CHUNK_BYTES * (16 if dev.type == "cuda" else 1)
    return max(1, budget // (8 * arrays * nb))


def _torch_distances(sq: Any, sb: Any, bits: int) -> Any:
    """int64 distances from +-1 float32 codes: (bits - <x, y>) / 2 (exact integers in float32)."""
    import torch

    return torch.round((bits - sq @ sb.T) * 0.5).to(torch.int64)


def _torch_hamming(xq: np.ndarray, xb: np.ndarray, device: str | None) -> np.ndarray:
    import torch

    dev = _torch_device(device)
    nq, nb, bits = xq.shape[0], xb.shape[0], xq.shape[1]
    sb = _torch_signs(xb, dev)
    out = np.empty((nq, nb), dtype=np.int32)
    step = _torch_step(nb, 2, dev)
    with torch.no_grad():
        for s in range(0, nq, step):
            d = _torch_distances(_torch_signs(xq[s : s + step], dev), sb, bits)
            out[s : s + step] = d.to(torch.int32).cpu().numpy()
    return out


def _torch_rank(xq: np.ndarray, xb: np.ndarray, k: int, device: str | None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    dev = _torch_device(device)
    nq, nb, bits = xq.shape[0], xb.shape[0], xq.shape[1]
    sb = _torch_signs(xb, dev)
    index = torch.arange(nb, device=dev)
    D = np.empty((nq, k), dtype=np.int32)
    I = np.empty((nq, k), dtype=np.int64)  # noqa: E741
    step = _torch_step(nb, 3, dev)
    with torch.no_grad():
        for s in range(0, nq, step):
            # Unique keys d * nb + index: the k smallest are exactly the stable top k.
            key = _torch_distances(_torch_signs(xq[s : s + step], dev), sb, bits) * nb + index
            top = torch.topk(key, k, dim=1, largest=False, sorted=True).values
            D[s : s + step] = (top // nb).to(torch.int32).cpu().numpy()
            I[s : s + step] = (top % nb).cpu().numpy()
    return D, I


def _torch_stats(data: _Data, ks: tuple[int, ...], stable: bool) -> _Stats:
    import torch

    dev = _torch_device(data.device)
    if _cuda_usable(data, dev):
        tensors = [
            torch.from_numpy(array).to(dev)
            for array in (
                _pack_words(data.xq).view(np.int64),
                _label_words(data.yq),
                _pack_words(data.xb).view(np.int64),
                _label_words(data.yb),
            )
        ]
        result = _cuda_stats(*tensors, data.xq.shape[1], data.multi, ks, stable and bool(ks))
        return _Stats(*(tensor.cpu().numpy() for tensor in result))
    nq, bits = data.xq.shape
    nb = data.nb
    sb = _torch_signs(data.xb, dev)
    if data.multi:
        yb = torch.as_tensor(data.yb, device=dev).to(torch.float32)
    else:
        yb = torch.as_tensor(data.yb, device=dev)
    counts = np.empty((nq, bits + 1), dtype=np.int64)
    relevant = np.empty((nq, bits + 1), dtype=np.int64)
    ap_sum = np.zeros((nq, len(ks)), dtype=np.float64)
    hits = np.zeros((nq, len(ks)), dtype=np.int64)
    positions = torch.arange(1, nb + 1, device=dev, dtype=torch.float64)
    step = _torch_step(nb, 8, dev)
    with torch.no_grad():
        for s in range(0, nq, step):
            e = min(s + step, nq)
            d = _torch_distances(_torch_signs(data.xq[s:e], dev), sb, bits)
            if data.multi:
                rel = (torch.as_tensor(data.yq[s:e], device=dev).to(torch.float32) @ yb.T) > 0
            else:
                rel = torch.as_tensor(data.yq[s:e], device=dev)[:, None] == yb[None, :]
            rel = rel.to(torch.int64)
            hist = torch.zeros((e - s, bits + 1), dtype=torch.int64, device=dev)
            counts[s:e] = hist.scatter_add(1, d, torch.ones_like(d)).cpu().numpy()
            relevant[s:e] = hist.scatter_add(1, d, rel).cpu().numpy()
            if stable and ks:
                order = torch.sort(d, dim=1, stable=True).indices  # ties by database index
                rel_sorted = torch.gather(rel, 1, order).to(torch.float64)
                found = torch.cumsum(rel_sorted, dim=1)
                precision = found / positions * rel_sorted
                prefix = torch.cumsum(precision, dim=1)
                for c, k in enumerate(ks):
                    ap_sum[s:e, c] = prefix[:, k - 1].cpu().numpy()
                    hits[s:e, c] = found[:, k - 1].to(torch.int64).cpu().numpy()
    return _Stats(counts, relevant, ap_sum, hits)


# ---------------------------------------------------------------------------------------------------------
# CUDA kernels of the torch backend (NVIDIA GPUs; compiled at first use by NVRTC through CuPy)
# ---------------------------------------------------------------------------------------------------------

# Why CUDA C and not Triton: the stable AP needs, per query, running counters indexed by a run-time
# distance; a thread's private shared-memory row does that in one instruction, while Triton's block
# tensors can only update such counters through a one-hot compare over all bits + 1 bins.
#
# Layout: one thread per query, one block of T queries per (query block, database segment). Each thread
# keeps its bins + 1 counters in shared memory, bin-major (cnt[b * T + t]), so the threads of a warp never
# share a bank whatever their distances. A counter packs the items of its bucket seen in this segment
# (low 16 bits) and the relevant ones (high 16 bits), so segments hold at most 32767 items. Pass 1 writes
# each segment's packed histograms; `prefixes` (and a cumulative sum over distances) turns them into each
# segment's starting positions; pass 2 scans each segment again in index order, so every relevant item
# knows its stable position and the hits up to it, and sums the precisions at each cutoff. Nothing of
# size nq x nb ever reaches memory. Queries are sorted by label first (see _cuda_stats).
_CUDA_SOURCE = r"""
typedef unsigned long long u64;
typedef long long i64;

__device__ __forceinline__ int distance(const u64 (&q)[W], const u64* __restrict__ xb, i64 j) {
    int d = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) d += __popcll(q[w] ^ __ldg(xb + j * W + w));
    return d;
}

__device__ __forceinline__ int is_relevant(const i64 (&l)[LW], const i64* __restrict__ lb, i64 j) {
#if MULTI
    i64 shared = 0;
#pragma unroll
    for (int w = 0; w < LW; ++w) shared |= l[w] & __ldg(lb + j * LW + w);
    return shared != 0;
#else
    return l[0] == __ldg(lb + j);
#endif
}

// hit / position in float64 without the division's slow path: a reciprocal estimate refined by two
// Newton steps on the quotient, within a few units in the last place of the rounded quotient.
__device__ __forceinline__ double quotient(int hit, int position) {
    const double p = (double)position, h = (double)hit;
    double inv;
    asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(inv) : "d"(p));
    double q = h * inv;
    q = fma(fma(-q, p, h), inv, q);
    return fma(fma(-q, p, h), inv, q);
}

// Packed per-segment histograms: out[(seg * NBINS + d) * nq + i] = items + (relevant << 16).
extern "C" __global__ void __launch_bounds__(T) histograms(
    const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, int nq, int nb, int seg_len, int* __restrict__ out) {
    __shared__ int cnt[NBINS * T];
    const int t = threadIdx.x, i = blockIdx.x * T + t, seg = blockIdx.y;
    if (i >= nq) return;  // threads never synchronise: each owns its column of cnt
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) cnt[b * T + t] = 0;
    u64 q[W];
    i64 l[LW];
#pragma unroll
    for (int w = 0; w < W; ++w) q[w] = xq[(i64)i * W + w];
#pragma unroll
    for (int w = 0; w < LW; ++w) l[w] = lq[(i64)i * LW + w];
    const i64 start = (i64)seg * seg_len, end = min(start + seg_len, (i64)nb);
#pragma unroll 4
    for (i64 j = start; j < end; ++j) {
        const int d = distance(q, xb, j);
        cnt[d * T + t] += 1 + (is_relevant(l, lb, j) << 16);
    }
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) out[((i64)seg * NBINS + b) * nq + i] = cnt[b * T + t];
}

// Per (query, bucket), over segments in order: base_pos / base_rel[(seg * NBINS + d) * nq + i] = items /
// relevant items of bucket d in earlier segments (when write_bases), and the totals over all segments,
// total[d * nq + i] and total_rel[d * nq + i]. One thread per (query, bucket): neighbours read neighbours.
extern "C" __global__ void prefixes(
    const int* __restrict__ packed, int nq, int nseg, int write_bases, int* __restrict__ base_pos,
    int* __restrict__ base_rel, int* __restrict__ total, int* __restrict__ total_rel) {
    const i64 at0 = (i64)blockIdx.x * blockDim.x + threadIdx.x;  // d * nq + i
    if (at0 >= (i64)nq * NBINS) return;
    int n = 0, r = 0;
    for (int seg = 0; seg < nseg; ++seg) {
        const i64 at = (i64)seg * NBINS * nq + at0;
        const int v = packed[at];
        if (write_bases) { base_pos[at] = n; base_rel[at] = r; }
        n += v & 0xFFFF;
        r += v >> 16;
    }
    total[at0] = n;
    total_rel[at0] = r;
}

// Pass 2: stable-order AP sums and hits at each cutoff, per segment: ap[(seg * NK + c) * nq + i], hits
// likewise. The counters are pass 1's again; a relevant item adds its bucket's starting position and hits
// in this segment, base_pos / base_rel (pass 1's layout: items / relevant items ranked before the
// segment's first item of the bucket), read from memory: with the queries sorted by label, the threads
// of a warp take this branch together, on the relevant items only.
extern "C" __global__ void __launch_bounds__(T) stable_sums(
    const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, int nq, int nb, int seg_len, const int* __restrict__ base_pos,
    const int* __restrict__ base_rel, const int* __restrict__ ks, double* __restrict__ ap,
    int* __restrict__ hits) {
    __shared__ int cnt[NBINS * T];
    const int t = threadIdx.x, i = blockIdx.x * T + t, seg = blockIdx.y;
    if (i >= nq) return;
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) cnt[b * T + t] = 0;
    u64 q[W];
    i64 l[LW];
    int k[NK], found[NK];
    double sums[NK];
#pragma unroll
    for (int w = 0; w < W; ++w) q[w] = xq[(i64)i * W + w];
#pragma unroll
    for (int w = 0; w < LW; ++w) l[w] = lq[(i64)i * LW + w];
#pragma unroll
    for (int c = 0; c < NK; ++c) { k[c] = ks[c]; sums[c] = 0.0; found[c] = 0; }
    const int* pos0 = base_pos + (i64)seg * NBINS * nq + i;
    const int* rel0 = base_rel + (i64)seg * NBINS * nq + i;
    const i64 start = (i64)seg * seg_len, end = min(start + seg_len, (i64)nb);
#pragma unroll 4
    for (i64 j = start; j < end; ++j) {
        const int d = distance(q, xb, j);
        const int r = is_relevant(l, lb, j);
        const int v = cnt[d * T + t];
        cnt[d * T + t] = v + 1 + (r << 16);
        if (r) {
            const int position = __ldg(pos0 + (i64)d * nq) + (v & 0xFFFF) + 1;
            const double precision = quotient(__ldg(rel0 + (i64)d * nq) + (v >> 16) + 1, position);
#pragma unroll
            for (int c = 0; c < NK; ++c) {
                if (position <= k[c]) { sums[c] += precision; found[c] += 1; }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < NK; ++c) {
        ap[((i64)seg * NK + c) * nq + i] = sums[c];
        hits[((i64)seg * NK + c) * nq + i] = found[c];
    }
}
"""

# Shared memory per block for the counters (the static limit), and the most items per segment (the
# counters' 16-bit halves hold at most 32767 without reaching the sign bit).
_CUDA_SHARED_BYTES = 48 * 1024
_CUDA_MAX_SEGMENT = 32767
# Widest multi-hot labels (64-bit words) the kernels take; wider ones, and codes of more than 383 bits
# (whose counters leave fewer than 32 queries a block), use plain torch.
_CUDA_MAX_LABEL_WORDS = 16
# False makes the torch backend use plain torch on CUDA too (the benchmark's reference; tests).
_CUDA_KERNELS = True
# Bytes of the per-segment arrays of one chunk of queries.
_CUDA_CHUNK_BYTES = 1 << 30


@functools.lru_cache(maxsize=16)
def _cuda_resident_blocks(device: int, shared_bytes: int, threads: int) -> int:
    """Blocks of ``threads`` threads and ``shared_bytes`` of shared memory resident on the GPU at once."""
    import torch

    props = torch.cuda.get_device_properties(device)
    per_sm = getattr(props, "shared_memory_per_multiprocessor", 0) or 100 * 1024
    # The driver reserves 1 KiB of shared memory per block.
    threads_per_sm = getattr(props, "max_threads_per_multi_processor", 0) or 2048
    blocks = min(per_sm // (shared_bytes + 1024), threads_per_sm // threads, 32)
    return max(1, blocks) * props.multi_processor_count


def _cuda_threads(nbins: int) -> int:
    """Queries per block: as many as the counters' shared memory allows, a multiple of 32, at most 128."""
    return min(128, (_CUDA_SHARED_BYTES // (4 * nbins)) // 32 * 32)


@functools.lru_cache(maxsize=1)
def _cupy() -> Any:
    """The ``cupy`` module, or None where it is not installed (optional: plain torch does the work)."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


@functools.lru_cache(maxsize=32)
def _cuda_module(words: int, label_words: int, multi: bool, nbins: int, nks: int, threads: int) -> Any:
    """The kernels for one shape, as a CuPy ``RawModule`` (NVRTC compiles it at the first launch)."""
    cupy = _cupy()
    defines = {"W": words, "LW": label_words, "MULTI": int(multi), "NBINS": nbins, "NK": max(nks, 1)}
    defines["T"] = threads
    header = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return cupy.RawModule(code=header + _CUDA_SOURCE, options=("--std=c++17",))


def _cuda_usable(data: _Data, dev: Any) -> bool:
    """Whether the CUDA kernels take this problem (NVIDIA device, CuPy present, widths within limits)."""
    import torch

    if not _CUDA_KERNELS or dev.type != "cuda" or torch.version.cuda is None or data.nb >= 2**31:
        return False
    bits = data.xq.shape[1]
    label_words = 1 if not data.multi else (data.yq.shape[1] + 63) // 64
    if label_words > _CUDA_MAX_LABEL_WORDS or _cuda_threads(bits + 1) < 32:
        return False
    return _cupy() is not None


def _cuda_stats(
    xq: Any, lq: Any, xb: Any, lb: Any, bits: int, multi: bool, ks: tuple[int, ...], stable: bool
) -> tuple[Any, Any, Any, Any]:
    """Histograms and stable AP sums from packed codes and label words already on one CUDA device.

    Args:
        xq: query codes packed by ``_pack_words``, as an int64 CUDA tensor (nq, ceil(bits / 64)).
        lq: query labels from ``_label_words``, int64 CUDA tensor (nq, 1) or (nq, label words).
        xb: database codes, like ``xq`` (nb, ceil(bits / 64)).
        lb: database labels, like ``lq``.
        bits: code length.
        multi: whether the labels are multi-hot words (relevant = any shared bit) or class ids.
        ks: stable cutoffs, each in 1..nb.
        stable: whether to compute the stable AP sums and hits at ``ks``.

    Returns:
        ``(counts, relevant, ap_sum, hits)`` as CUDA tensors: int64 (nq, bits + 1) twice, then float64 and
        int64 (nq, len(ks)) (zeros when not ``stable``).
    """
    import cupy
    import torch

    nq, nb, nbins = xq.shape[0], xb.shape[0], bits + 1
    xb, lb = xb.contiguous(), lb.contiguous()
    dev = xq.device
    threads = _cuda_threads(nbins)
    nks = len(ks) if stable else 0
    module = _cuda_module(xq.shape[1], lq.shape[1], multi, nbins, nks, threads)
    q_blocks_max = -(-nq // threads)
    # Enough segments to fill the GPU, none longer than the counters can hold.
    # Enough segments for whole waves of pass 1's blocks (at least two), none longer than the counters
    # hold, none shorter than 256 items (each segment costs every thread a pass over its bins).
    resident = _cuda_resident_blocks(dev.index, 4 * nbins * threads, threads)
    fewest = -(-nb // _CUDA_MAX_SEGMENT)
    waves = max(2, -(-fewest * q_blocks_max // resident))
    segments = max(fewest, min(waves * resident // q_blocks_max, -(-nb // 256)))
    seg_len = -(-nb // segments)
    segments = -(-nb // seg_len)
    # Queries per chunk: pass 1's output and pass 2's two base arrays, int32.
    chunk = max(threads, _CUDA_CHUNK_BYTES // (segments * nbins * 4 * 3) // threads * threads)
    # Queries of one label side by side: the threads of a warp then agree on each item's relevance, so
    # the float64 work on relevant items does not diverge (results go back to the callers' order).
    order = torch.arange(nq, device=dev)
    for w in reversed(range(lq.shape[1])):  # lexicographic, one stable sort per word (no host sync)
        order = order[torch.argsort(lq[order, w], stable=True)]
    xq, lq = xq[order].contiguous(), lq[order].contiguous()
    counts = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    relevant = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    ap_sum = torch.zeros((nq, len(ks)), dtype=torch.float64, device=dev)
    hits = torch.zeros((nq, len(ks)), dtype=torch.int64, device=dev)
    ks_dev = torch.tensor(ks if ks else (1,), dtype=torch.int32, device=dev)

    def arg(tensor: Any) -> Any:
        # A device pointer passed by value (8 bytes, as the kernel's pointer parameter), which spares a
        # CuPy array view per argument and launch.
        return np.uint64(tensor.data_ptr())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # CuPy >= 14 prefers Stream.from_external
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(dev).cuda_stream)
    with cupy.cuda.Device(dev.index), stream:
        for s in range(0, nq, chunk):
            e = min(s + chunk, nq)
            n = e - s
            grid = (-(-n // threads), segments)
            packed = torch.empty((segments, nbins, n), dtype=torch.int32, device=dev)
            qs, ls = xq[s:e].contiguous(), lq[s:e].contiguous()
            common = (arg(qs), arg(xb), arg(ls), arg(lb), np.int32(n), np.int32(nb), np.int32(seg_len))
            module.get_function("histograms")(grid, (threads,), (*common, arg(packed)))
            base_pos = torch.empty_like(packed) if nks else packed
            base_rel = torch.empty_like(packed) if nks else packed
            total = torch.empty((nbins, n), dtype=torch.int32, device=dev)
            total_rel = torch.empty((nbins, n), dtype=torch.int32, device=dev)
            module.get_function("prefixes")(
                (-(-n * nbins // 256),),
                (256,),
                (arg(packed), np.int32(n), np.int32(segments), np.int32(bool(nks)), arg(base_pos))
                + (arg(base_rel), arg(total), arg(total_rel)),
            )
            counts[s:e] = total.T
            relevant[s:e] = total_rel.T
            if not nks:
                continue
            del packed
            seg_sums = torch.empty((segments, nks, n), dtype=torch.float64, device=dev)
            seg_hits = torch.empty((segments, nks, n), dtype=torch.int32, device=dev)
            # Add the items at smaller distances to each bucket's starting position.
            base_pos += (torch.cumsum(total, 0, dtype=torch.int32) - total)[None]
            base_rel += (torch.cumsum(total_rel, 0, dtype=torch.int32) - total_rel)[None]
            module.get_function("stable_sums")(
                grid,
                (threads,),
                (*common, arg(base_pos), arg(base_rel), arg(ks_dev), arg(seg_sums), arg(seg_hits)),
            )
            ap_sum[s:e] = seg_sums.sum(0).T
            hits[s:e] = seg_hits.sum(0, dtype=torch.int64).T
    back = torch.empty_like(order)
    back[order] = torch.arange(nq, device=dev)
    return counts[back], relevant[back], ap_sum[back], hits[back]
