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
      stable order. Its inputs may be numpy arrays, torch tensors on any device or DLPack arrays (CuPy,
      ...); they are checked (0/1 values, with one host sync per call) and packed on ``device``, numpy
      arrays bound for a GPU copied in chunks through pinned memory while the previous chunk is packed.

The resident index: :class:`HammingIndex` ``(codes, labels, device=...)`` checks, packs and copies a
database to its device once, the way faiss users hold an index, and then offers ``evaluate`` (what
:func:`evaluate_retrieval` returns), ``average_precision``, ``mean_average_precision``,
``distance_counts``, ``search(queries, k) -> (D, I)`` (as :func:`rank`; numpy in, numpy out; tensors in,
tensors on the index's device out) and ``add``; each call checks and packs only its queries. On a GPU it
runs the ``"torch"`` backend's kernels, on the CPU the ``"numpy"`` backend's numba kernels, with bitwise
their results.

All backends give the same results (tests check them against a brute-force reference to 1e-9).

Packed codes (the envs' hot path): :func:`pack_codes` packs codes once (numpy uint64 words, or torch
int16/int32/int64 words on the tensor's device) and :func:`unpack_codes` undoes it;
:func:`packed_distance_counts` and :func:`packed_average_precision` rank packed queries against one
database, or one database per query, optionally leaving one database item out of each list (the
query itself, when the database is its own split); tensors stay on their device. A caller that ranks
against the same database at every step (an environment's reward) keeps a :class:`PackedDatabase`,
the database-resident index: it checks the database once, holds it by reference (in-place writes are
seen), and offers the same counts and AP per call, checking only the queries. The metrics' math
(AP from histograms, the stable AP sums) is written once over numpy and torch arrays.

Sharded evaluation (:mod:`hashing_gym.ranking.distributed`): :func:`evaluate_retrieval_sharded` and
:func:`evaluate_shard_folder` return on every rank of a ``torch.distributed`` process group bitwise what
:func:`evaluate_retrieval` returns for the ranks' database blocks concatenated in rank order; its CLI runs
under ``torchrun`` on a folder of memory-mapped shards (:func:`write_shards` writes one).

Nothing happens at import: numba, faiss, torch and CuPy are imported when a backend first runs, and
numba's threading layer is chosen then (workqueue, which leaves torch's OpenMP threads alone; a
user's ``NUMBA_THREADING_LAYER`` wins). :func:`set_num_threads` sets the numba kernels' threads.

>>> xb = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=np.uint8)
>>> yb = np.array([0, 1, 0, 1])
>>> D, I = rank(xb[:1], xb, topk=3)
>>> D.tolist(), I.tolist()
([[0, 1, 3]], [[0, 2, 3]])
>>> mean_average_precision(xb, yb, xb, yb)
1.0
"""

import numpy as np  # noqa: F401 - the docstring's examples use it

from hashing_gym.ranking._api import (
    average_precision,
    average_precision_from_counts,
    distance_counts,
    evaluate_retrieval,
    hamming_distance,
    mean_average_precision,
    pack_codes,
    packed_average_precision,
    packed_distance_counts,
    precision_at_k,
    precision_at_radius,
    precision_recall_curve,
    rank,
    set_num_threads,
    unpack_codes,
)
from hashing_gym.ranking._checks import BACKENDS, TIES
from hashing_gym.ranking._index import HammingIndex, PackedDatabase

# The sharded evaluation over torch.distributed (``hashing_gym.ranking.distributed``, also its CLI) is
# imported at first use of one of these names, so that importing this package imports no more than before.
_DISTRIBUTED = (
    "distance_counts_sharded",
    "evaluate_packed_sharded",
    "evaluate_retrieval_sharded",
    "evaluate_shard_folder",
    "open_shards",
    "write_shards",
)


def __getattr__(name: str) -> object:
    """The sharded evaluation's names, from :mod:`hashing_gym.ranking.distributed` at first use."""
    if name in _DISTRIBUTED:
        from hashing_gym.ranking import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "TIES",
    "HammingIndex",
    "PackedDatabase",
    "average_precision",
    "average_precision_from_counts",
    "distance_counts",
    "distance_counts_sharded",
    "evaluate_packed_sharded",
    "evaluate_retrieval",
    "evaluate_retrieval_sharded",
    "evaluate_shard_folder",
    "hamming_distance",
    "mean_average_precision",
    "open_shards",
    "pack_codes",
    "packed_average_precision",
    "packed_distance_counts",
    "precision_at_k",
    "precision_at_radius",
    "precision_recall_curve",
    "rank",
    "set_num_threads",
    "unpack_codes",
    "write_shards",
]
