"""The metrics' math from per-query histograms and sums, written once over numpy or torch arrays.

``xp = namespace(x)`` is numpy or torch (CPU or CUDA); every function here returns arrays of
its inputs' namespace and device, so an environment on a GPU never copies its rewards to the host.
Row sums are cumulative sums read at their last column: sequential on numpy, the order the
per-query loops of the numba kernels used, so results are bitwise those of a loop over buckets. Torch
adds in the same left-to-right order on every device (see :func:`_scan`), where its scans are fast.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from hashing_gym.device import namespace as _namespace_of


def namespace(*arrays: Any) -> Any:
    """The arrays' namespace: numpy itself for numpy arrays (the compat layer costs microseconds a call).

    Arrays of one type take the namespace remembered per type (``hashing_gym.device.namespace``): under
    torch.compile, dynamo cannot trace ``array_namespace``'s own caches (it fails with "dictionary
    changed size during iteration").
    """
    if all(isinstance(array, np.ndarray) for array in arrays):
        return np
    if all(type(array) is type(arrays[0]) for array in arrays):
        return _namespace_of(arrays[0])
    return array_namespace(*arrays)


# numpy arrays take the numba transcription of tie_aware_sums (speed: see _numba.tie_aware_sums);
# True runs this module's vectorised form on numpy too (tests compare the two).
_VECTORISED_ON_NUMPY = False


def ratio(num: Any, den: Any) -> Any:
    """``num / den`` in float64, 0 where ``den == 0`` (``den`` broadcasts)."""
    xp = namespace(num, den)
    if xp is np:  # one division into zeros: fewer temporaries than the where form below
        num = np.asarray(num, dtype=np.float64)
        out = np.zeros(num.shape, dtype=np.float64)
        den = np.asarray(den, dtype=np.float64)
        if den.shape != num.shape:  # np.broadcast_to costs microseconds: an env step's budget
            den = np.broadcast_to(den, num.shape)
        np.divide(num, den, out=out, where=den > 0)
        return out
    num = xp.astype(num, xp.float64, copy=False)  # (copy=False: the array API's astype copies by default)
    den = xp.astype(den, xp.float64, copy=False)
    positive = den > 0
    return xp.where(positive, num / xp.where(positive, den, 1.0), 0.0)


def row_sum(values: Any, axis: int = 1) -> Any:
    """Sum of each row (the lines along ``axis`` of a 2-D array), added left to right."""
    return _scan(values, axis, total=True)


def _scan(values: Any, axis: int, total: bool = False) -> Any:
    """Inclusive prefix sums of a 2-D array along ``axis`` (``total``: the last ones), left to right.

    Numpy, and torch on the CPU: ``cumulative_sum`` (a sequential loop over the axis). Torch on a GPU
    scans rows of a few buckets slowly along the inner axis (a tree scan per row, one short row per
    block), and along the outer axis in one coalesced kernel with one sequential loop per column: the
    callers lay the buckets along axis 0 there (``tie_aware_sums``). Inside ``torch.compile``: one
    addition per bucket, which the compiler fuses (its own scan need not add left to right).
    """
    xp = namespace(values)
    if xp is not np:
        import torch

        if torch.compiler.is_compiling():
            lines = [values[i] if axis == 0 else values[:, i] for i in range(values.shape[axis])]
            sums = [lines[0]]
            for line in lines[1:]:
                sums.append(sums[-1] + line)
            return sums[-1] if total else torch.stack(sums, dim=axis)
    sums = xp.cumulative_sum(values, axis=axis)
    if not total:
        return sums
    return sums[-1] if axis == 0 else sums[:, -1]


def precision_within(counts: Any, relevant: Any, radius: int) -> Any:
    """Precision of the items within ``radius`` of each query (0 when none is retrieved) (nq,)."""
    xp = namespace(counts)
    r = min(radius, counts.shape[1] - 1)
    return ratio(xp.sum(relevant[:, : r + 1], axis=1), xp.sum(counts[:, : r + 1], axis=1))


def harmonic_numbers(n: int, like: Any) -> Any:
    """Harmonic numbers ``H[0..>=n]`` in float64 (compensated sums) on ``like``'s namespace and device."""
    length = 1 << max(10, (n + 1).bit_length())  # power-of-two lengths: few tables, all cached
    if isinstance(like, np.ndarray):
        return _harmonic_numpy(length)
    return _harmonic_on(length, device(like))


def _harmonic_numpy(length: int) -> np.ndarray:
    from hashing_gym.ranking import _numba

    return _numba.harmonic_block(length)


@functools.lru_cache(maxsize=8)
def _harmonic_on(length: int, where: Any) -> Any:
    import torch

    return torch.as_tensor(_harmonic_numpy(length).copy(), device=where)


def _lookup(table: Any, index: Any) -> Any:
    """``table[index]`` for a 1-D table and an array of indices, all >= 0 (index's shape)."""
    if isinstance(table, np.ndarray):
        return np.take(table, index)
    # (index_select: array_api_compat's take adds three kernels that wrap negative indices.)
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


def _buckets_first(counts: Any) -> bool:
    """Whether ``tie_aware_sums`` lays the buckets along axis 0: torch on a GPU, outside ``torch.compile``.

    There the prefix sums run along the outer axis, one coalesced kernel each (see :func:`_scan`).
    """
    if isinstance(counts, np.ndarray) or counts.device.type == "cpu":
        return False
    import torch

    return not torch.compiler.is_compiling()


def tie_aware_sums(
    counts: Any, relevant: Any, k: Any, num_items: int | None = None, harmonic: Any = None
) -> tuple[Any, Any]:
    """Expected sum of precisions and expected hits in the top ``k`` of each query, (nq,) twice.

    The closed form of the package docstring, bucket by bucket: ``N_<`` items (``R_<`` relevant) before
    bucket ``d``, its ``m`` positions inside the top ``k``, and harmonic numbers.

    Args:
        counts: int64 (nq, bits + 1) items at each distance.
        relevant: int64 (nq, bits + 1) relevant items at each distance.
        k: the cutoff, an int or an int64 (nq,) array (one per query).
        num_items: an upper bound of each query's total count; None to read it from ``counts`` (on a
            GPU, a wait for the device).
        harmonic: None, or the table ``harmonic_numbers(num_items, counts)`` (callers that compile this
            function pass it in: the table's cache is plain Python).
    """
    xp = namespace(counts, relevant)
    if harmonic is None:
        if num_items is None:
            num_items = int(xp.max(xp.sum(counts, axis=1))) if counts.shape[0] else 0
        harmonic = harmonic_numbers(num_items, counts)
    if isinstance(counts, np.ndarray) and not _VECTORISED_ON_NUMPY:
        from hashing_gym.ranking import _numba

        return _numba.tie_aware_sums(counts, relevant, k, harmonic)
    counts = xp.astype(counts, xp.int64, copy=False)
    relevant = xp.astype(relevant, xp.int64, copy=False)
    axis = 1  # the buckets' axis
    if _buckets_first(counts):
        counts, relevant, axis = counts.T.contiguous(), relevant.T.contiguous(), 0
    shape = (1, -1) if axis == 0 else (-1, 1)
    if not isinstance(k, int):
        k = xp.reshape(xp.asarray(k, dtype=xp.int64, device=device(counts)), shape)
    before = _scan(counts, axis) - counts  # N_<
    rel_before = _scan(relevant, axis) - relevant  # R_<
    inside = xp.minimum(xp.clip(k - before, min=0), counts)  # m
    n = xp.astype(counts, xp.float64)
    r = xp.astype(relevant, xp.float64)
    some = relevant > 0
    slope = xp.where(counts > 1, (r - 1.0) / xp.where(counts > 1, n - 1.0, 1.0), 0.0)  # B
    intercept = (xp.astype(rel_before, xp.float64) + 1.0) - slope * (1.0 + xp.astype(before, xp.float64))
    gap = _lookup(harmonic, before + inside) - _lookup(harmonic, before)
    safe_n = xp.where(some, n, 1.0)
    inside_f = xp.astype(inside, xp.float64)
    terms = xp.where(some, (r / safe_n) * (slope * inside_f + intercept * gap), 0.0)
    hits = xp.where(inside == counts, r, r * (inside_f / safe_n))
    return row_sum(terms, axis), row_sum(xp.where(some, hits, 0.0), axis)


def tie_aware_ap(
    counts: Any, relevant: Any, k: Any, num_items: int | None = None, harmonic: Any = None
) -> Any:
    """Closed-form tie-aware AP over the first ``k`` positions of each query (nq,); see ``tie_aware_sums``."""
    expected_sum, expected_hits = tie_aware_sums(counts, relevant, k, num_items, harmonic)
    return ratio(expected_sum, expected_hits)


def expected_hits(counts: Any, relevant: Any, k: Any) -> Any:
    """Expected number of relevant items in the top ``k`` over random orders within ties (nq,)."""
    return tie_aware_sums(counts, relevant, k)[1]


def stable_sums(distance: Any, relevant: Any, ks: tuple[int, ...]) -> tuple[Any, Any]:
    """Stable-order AP sums and hits at each cutoff from distances and relevance, by sorting.

    Args:
        distance: int (nq, nb) distances (an item to leave out of its list: any distance above the
            others' and not relevant).
        relevant: bool or 0/1 (nq, nb).
        ks: cutoffs, each in 1..nb.

    Returns:
        ``(ap_sum, hits)``: float64 and int64 (nq, len(ks)). The sums run in rank order, so they may
        differ from the numba scan's (in database order) in the last bits.
    """
    xp = namespace(distance, relevant)
    order = xp.argsort(distance, axis=1, stable=True)  # ties by database index
    rel_sorted = xp.astype(xp.take_along_axis(xp.astype(relevant, xp.int64), order, axis=1), xp.float64)
    found = xp.cumulative_sum(rel_sorted, axis=1)
    positions = xp.arange(1, distance.shape[1] + 1, dtype=xp.float64, device=device(distance))
    prefix = xp.cumulative_sum(found / positions * rel_sorted, axis=1)
    columns = xp.asarray([k - 1 for k in ks], dtype=xp.int64, device=device(distance))
    return xp.take(prefix, columns, axis=1), xp.astype(xp.take(found, columns, axis=1), xp.int64)
