"""The ``"faiss"`` backend: distances from faiss, counted by the numba kernels.

Codes whose width is not a multiple of 8 are padded with zero bits on both sides by ``np.packbits``,
which leaves distances unchanged.
"""

from __future__ import annotations

import numpy as np

from hashing_gym.ranking._checks import Data

# Bytes of one chunk of the distance matrix.
CHUNK_BYTES = 1 << 26


def distances(bq: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """int32 (nq, nb) distances between codes packed by ``np.packbits`` (uint8 (n, nbytes))."""
    import faiss

    bq, bb = np.ascontiguousarray(bq), np.ascontiguousarray(bb)
    out = np.empty((bq.shape[0], bb.shape[0]), dtype=np.int32)
    faiss.hammings(
        faiss.swig_ptr(bq), faiss.swig_ptr(bb), bq.shape[0], bb.shape[0], bq.shape[1], faiss.swig_ptr(out)
    )
    return out


def hamming(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """int32 (nq, nb) distances of 0/1 codes."""
    return distances(np.packbits(xq, axis=1), np.packbits(xb, axis=1))


def rank(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable top ``k`` (IndexBinaryFlat; GpuIndexBinaryFlat when faiss sees GPUs)."""
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


def stats_into(
    data: Data, lq: np.ndarray, lb: np.ndarray, ks: np.ndarray, stable: bool, out: tuple[np.ndarray, ...]
) -> None:
    """Fill ``out = (counts, relevant, ap_sum, hits)`` from faiss distances, in chunks of queries."""
    from hashing_gym.ranking import _numba

    bq, bb = np.packbits(data.xq, axis=1), np.packbits(data.xb, axis=1)
    nq = bq.shape[0]
    step = max(1, CHUNK_BYTES // (4 * data.nb))
    for s in range(0, nq, step):
        e = min(s + step, nq)
        chunk = tuple(array[s:e] for array in out)
        _numba.stats_into(distances(bq[s:e], bb), None, None, lq[s:e], lb, data.multi, ks, stable, chunk)
