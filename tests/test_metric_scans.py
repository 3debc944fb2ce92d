"""The torch scans of ``_metrics.tie_aware_sums``: every layout adds the buckets left to right, bitwise.

On a GPU the buckets lie along axis 0 (one coalesced outer-dimension scan); inside ``torch.compile``
the sums are one addition per bucket. Both are forced here on the CPU and compared bit for bit with
the default CPU path and with numpy's (the numba kernel's) results.
"""

from __future__ import annotations

import numpy as np
import pytest

from hashing_gym.ranking import _metrics

torch = pytest.importorskip("torch")


def histograms(nq: int, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random per-distance counts with many ties and empty buckets, and relevant counts within them."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, size=(nq, bits + 1)) * (rng.random((nq, bits + 1)) < 0.6)
    relevant = rng.integers(0, counts + 1)
    relevant[0] = 0  # a query with nothing relevant
    counts[1] = relevant[1] = 0
    counts[1, 3] = relevant[1, 3] = 5  # one bucket, all relevant
    return counts.astype(np.int64), relevant.astype(np.int64)


CUTOFFS = [None, 1, 13, "per-query"]


def cutoff(k, counts):
    total = int(counts.sum(1).max())
    if k is None:
        return total
    if k == "per-query":
        return np.random.default_rng(1).integers(1, total + 1, size=counts.shape[0])
    return k


@pytest.mark.parametrize("k", CUTOFFS)
def test_buckets_on_axis_0_equal_the_inner_axis_bitwise(k, monkeypatch):
    counts, relevant = histograms(300, 16, seed=2)
    k = cutoff(k, counts)
    tk = k if isinstance(k, int) else torch.as_tensor(k)
    t_counts, t_relevant = torch.as_tensor(counts), torch.as_tensor(relevant)
    inner = _metrics.tie_aware_sums(t_counts, t_relevant, tk, int(counts.sum(1).max()))
    calls = []

    def first(array):
        calls.append(array.shape)
        return True

    monkeypatch.setattr(_metrics, "_buckets_first", first)  # the GPU layout, on the CPU
    outer = _metrics.tie_aware_sums(t_counts, t_relevant, tk, int(counts.sum(1).max()))
    assert calls == [(300, 17)]
    numba = _metrics.tie_aware_sums(counts, relevant, k, int(counts.sum(1).max()))
    for a, b, c in zip(inner, outer, numba, strict=True):
        assert a.shape == (300,) and b.shape == (300,)
        assert torch.equal(a, b)
        np.testing.assert_array_equal(a.numpy(), c)  # the numba kernel's loop, bit for bit


@pytest.mark.parametrize("k", CUTOFFS)
def test_compiled_tie_aware_ap_equals_eager_bitwise(k):
    counts, relevant = histograms(64, 12, seed=3)
    k = cutoff(k, counts)
    num_items = int(counts.sum(1).max())
    t_counts, t_relevant = torch.as_tensor(counts), torch.as_tensor(relevant)
    harmonic = _metrics.harmonic_numbers(num_items, t_counts)
    torch._dynamo.reset()
    if isinstance(k, int):

        def ap(c, r, h):
            return _metrics.tie_aware_ap(c, r, k, harmonic=h)

        args = (t_counts, t_relevant, harmonic)
    else:

        def ap(c, r, h, kk):
            return _metrics.tie_aware_ap(c, r, kk, harmonic=h)

        args = (t_counts, t_relevant, harmonic, torch.as_tensor(k))
    compiled = torch.compile(ap, backend="aot_eager", fullgraph=True, dynamic=False)(*args)
    eager = ap(*args)
    assert torch.equal(compiled, eager)
    np.testing.assert_array_equal(eager.numpy(), _metrics.tie_aware_ap(counts, relevant, k, num_items))


def test_scan_on_both_axes_and_totals():
    values = torch.arange(12, dtype=torch.float64).reshape(3, 4) / 7
    assert torch.equal(_metrics._scan(values, 1), torch.cumsum(values, 1))
    assert torch.equal(_metrics._scan(values, 0), torch.cumsum(values, 0))
    assert torch.equal(_metrics.row_sum(values), torch.cumsum(values, 1)[:, -1])
    assert torch.equal(_metrics.row_sum(values, 0), torch.cumsum(values, 0)[-1])

    def compiled_scan(x):
        return _metrics._scan(x, 1), _metrics._scan(x, 0), _metrics.row_sum(x, 0)

    torch._dynamo.reset()
    got = torch.compile(compiled_scan, backend="aot_eager", fullgraph=True)(values)
    for a, b in zip(got, compiled_scan(values), strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("k", CUTOFFS)
def test_cuda_tie_aware_sums_equal_numba_bitwise(k):
    # On the GPU the buckets lie along axis 0: one sequential loop per query, as the numba kernel's.
    counts, relevant = histograms(5000, 64, seed=4)
    k = cutoff(k, counts)
    num_items = int(counts.sum(1).max())
    tk = k if isinstance(k, int) else torch.as_tensor(k, device="cuda")
    got = _metrics.tie_aware_sums(
        torch.as_tensor(counts, device="cuda"), torch.as_tensor(relevant, device="cuda"), tk, num_items
    )
    want = _metrics.tie_aware_sums(counts, relevant, k, num_items)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.cpu().numpy(), b)
