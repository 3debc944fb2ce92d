"""Tests of hashing_gym.ranking against an independent brute-force reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hashing_gym import ranking as R
from hashing_gym.ranking import _checks, _cuda, _numba, _torch

BACKENDS = R.BACKENDS
BITS = (8, 12, 16, 64, 100)
TOL = 1e-9

# ---------------------------------------------------------------------------------------------------------
# Brute-force reference (loops over sorted lists; shares no code with the module)
# ---------------------------------------------------------------------------------------------------------


def ref_distances(xq, xb):
    return (xq[:, None, :] != xb[None, :, :]).sum(axis=-1)


def ref_relevance(yq, yb):
    if yq.ndim == 1:
        return yq[:, None] == yb[None, :]
    return (yq.astype(np.int64) @ yb.T.astype(np.int64)) > 0


def ref_ap_stable(d, rel, k=None):
    """AP over the first k of the stable argsort; denominator = relevant items retrieved (CalcTopMap)."""
    order = np.argsort(d, kind="stable")[:k]
    hits, total = 0, 0.0
    for position, idx in enumerate(order, start=1):
        if rel[idx]:
            hits += 1
            total += hits / position
    return total / hits if hits else 0.0


def ref_hits_stable(d, rel, k):
    return int(rel[np.argsort(d, kind="stable")[:k]].sum())


def ref_tie_aware_direct(d, rel, k=None):
    """Tie-aware AP from the per-position expectation (no closed form): E[sum of precisions] / E[hits]."""
    k = len(d) if k is None else min(k, len(d))
    num = den = 0.0
    before = rel_before = 0
    for value in sorted(set(d.tolist())):
        mask = d == value
        n, r = int(mask.sum()), int(rel[mask].sum())
        for j in range(1, n + 1):
            position = before + j
            if position > k:
                break
            p = r / n
            expected_found = rel_before + 1 + ((j - 1) * (r - 1) / (n - 1) if n > 1 else 0.0)
            num += p * expected_found / position
            den += p
        before += n
        rel_before += r
    return num / den if den > 0 else 0.0


def ref_tie_aware_permutations(d, rel, k=None):
    """Enumerate every order within tie groups: (mean AP@k, mean sum of precisions, mean hits)."""
    groups = [np.flatnonzero(d == value) for value in sorted(set(d.tolist()))]
    aps, sums, hits = [], [], []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        r = rel[np.concatenate(perms).astype(np.int64)][:k].astype(np.float64)
        found = np.cumsum(r)
        s = float((r * found / np.arange(1, len(r) + 1)).sum())
        aps.append(s / found[-1] if found[-1] else 0.0)
        sums.append(s)
        hits.append(found[-1])
    return np.mean(aps), np.mean(sums), np.mean(hits)


def ref_histograms(d, rel, bits):
    counts = np.zeros((d.shape[0], bits + 1), dtype=np.int64)
    relevant = np.zeros_like(counts)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            counts[i, d[i, j]] += 1
            relevant[i, d[i, j]] += rel[i, j]
    return counts, relevant


def ref_precision_radius(d, rel, radius):
    out = []
    for i in range(d.shape[0]):
        inside = d[i] <= radius
        out.append(rel[i][inside].sum() / inside.sum() if inside.any() else 0.0)
    return float(np.mean(out))


def ref_pr_curve(d, rel, bits):
    precision = np.zeros(bits + 1)
    recall = np.zeros(bits + 1)
    for radius in range(bits + 1):
        for i in range(d.shape[0]):
            inside = d[i] <= radius
            found = rel[i][inside].sum()
            precision[radius] += found / inside.sum() if inside.any() else 0.0
            recall[radius] += found / rel[i].sum() if rel[i].any() else 0.0
    return precision / d.shape[0], recall / d.shape[0]


# ---------------------------------------------------------------------------------------------------------
# Deterministic synthetic data: class codewords with flipped bits, some queries without relevant items
# ---------------------------------------------------------------------------------------------------------


def make_data(bits, nq=12, nb=120, multi=False, flip=0.2, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    book = rng.integers(0, 2, size=(classes, bits), dtype=np.uint8)
    if multi:
        yq = (rng.random((nq, classes)) < 0.3).astype(np.uint8)
        yb = (rng.random((nb, classes)) < 0.3).astype(np.uint8)
        yq[0] = 0  # a query with no label: nothing is relevant
        yq[1] = 0
        yq[1, -1] = 1
        yb[:, -1] = 0  # the last class exists only in query 1: nothing relevant
        cq = np.array([np.flatnonzero(row)[0] if row.any() else 0 for row in yq])
        cb = np.array([np.flatnonzero(row)[0] if row.any() else 0 for row in yb])
    else:
        yq = rng.integers(0, classes - 1, size=nq)
        yb = rng.integers(0, classes - 1, size=nb)
        yq[0] = classes + 7  # a label absent from the database
        cq, cb = yq % classes, yb
    xq = book[cq] ^ (rng.random((nq, bits)) < flip).astype(np.uint8)
    xb = book[cb] ^ (rng.random((nb, bits)) < flip).astype(np.uint8)
    return xq, yq, xb, yb


# ---------------------------------------------------------------------------------------------------------
# Every backend against the reference
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(backend, bits, multi):
    xq, yq, xb, yb = make_data(bits, multi=multi, seed=bits)
    d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
    nq, nb = d.shape
    kw = {"backend": backend}

    np.testing.assert_array_equal(R.hamming_distance(xq, xb, **kw), d)

    dists, ids = R.rank(xq, xb, 17, **kw)
    order = np.argsort(d, axis=1, kind="stable")[:, :17]
    assert dists.dtype == np.int32 and ids.dtype == np.int64 and dists.shape == (nq, 17)
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_array_equal(dists, np.take_along_axis(d, order, axis=1))

    counts, relevant = R.distance_counts(xq, yq, xb, yb, **kw)
    ref_counts, ref_relevant = ref_histograms(d, rel, bits)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(relevant, ref_relevant)

    for k in (None, 1, 10, nb + 50):
        stable = R.average_precision(xq, yq, xb, yb, topk=k, **kw)
        expected = [ref_ap_stable(d[i], rel[i], k) for i in range(nq)]
        np.testing.assert_allclose(stable, expected, rtol=0, atol=TOL)
        tie = R.average_precision(xq, yq, xb, yb, topk=k, ties="average", **kw)
        expected = [ref_tie_aware_direct(d[i], rel[i], k) for i in range(nq)]
        np.testing.assert_allclose(tie, expected, rtol=0, atol=TOL)
        assert stable[0] == 0.0 and tie[0] == 0.0  # query 0 has no relevant item
    assert math.isclose(
        R.mean_average_precision(xq, yq, xb, yb, **kw),
        np.mean([ref_ap_stable(d[i], rel[i]) for i in range(nq)]),
        abs_tol=TOL,
    )

    for k in (1, 7, nb):
        p = R.precision_at_k(xq, yq, xb, yb, k, **kw)
        assert math.isclose(
            p, np.mean([ref_hits_stable(d[i], rel[i], k) / k for i in range(nq)]), abs_tol=TOL
        )
    for radius in (0, 2, bits // 4, bits + 5):
        p = R.precision_at_radius(xq, yq, xb, yb, radius=radius, **kw)
        assert math.isclose(p, ref_precision_radius(d, rel, radius), abs_tol=TOL)

    precision, recall = R.precision_recall_curve(xq, yq, xb, yb, **kw)
    ref_precision, ref_recall = ref_pr_curve(d, rel, bits)
    np.testing.assert_allclose(precision, ref_precision, rtol=0, atol=TOL)
    np.testing.assert_allclose(recall, ref_recall, rtol=0, atol=TOL)

    result = R.evaluate_retrieval(xq, yq, xb, yb, topk=25, **kw)
    expected = {
        "map": np.mean([ref_ap_stable(d[i], rel[i]) for i in range(nq)]),
        "map_tie_aware": np.mean([ref_tie_aware_direct(d[i], rel[i]) for i in range(nq)]),
        "map_at_k": np.mean([ref_ap_stable(d[i], rel[i], 25) for i in range(nq)]),
        "topk": 25,
        "precision_radius2": ref_precision_radius(d, rel, 2),
        "precision_at_k": np.mean([ref_hits_stable(d[i], rel[i], 25) / 25 for i in range(nq)]),
    }
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(result[key], value, abs_tol=TOL), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_heavy_ties(backend):
    """4-bit codes: 300 items in 5 distances, so nearly every position is tied."""
    xq, yq, xb, yb = make_data(4, nq=9, nb=300, flip=0.3, seed=4)
    d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
    for k in (None, 5, 100):
        stable = R.average_precision(xq, yq, xb, yb, topk=k, backend=backend)
        tie = R.average_precision(xq, yq, xb, yb, topk=k, ties="average", backend=backend)
        np.testing.assert_allclose(
            stable, [ref_ap_stable(d[i], rel[i], k) for i in range(9)], atol=TOL, rtol=0
        )
        np.testing.assert_allclose(
            tie, [ref_tie_aware_direct(d[i], rel[i], k) for i in range(9)], atol=TOL, rtol=0
        )
    for k in (3, 50):
        p = R.precision_at_k(xq, yq, xb, yb, k, ties="average", backend=backend)
        counts, relevant = ref_histograms(d, rel, 4)
        expected = []
        for i in range(9):
            before = 0
            hits = 0.0
            for n, r in zip(counts[i], relevant[i], strict=True):
                hits += r * min(max(k - before, 0), n) / n if n else 0.0
                before += n
            expected.append(hits / k)
        assert math.isclose(p, np.mean(expected), abs_tol=TOL)
    dists, ids = R.rank(xq, xb, 250, backend=backend)
    np.testing.assert_array_equal(ids, np.argsort(d, axis=1, kind="stable")[:, :250])


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_parallel_and_serial_kernels(backend, parallel, monkeypatch):
    """Both numba variants (parallel over queries, serial for small work) against the reference."""
    monkeypatch.setattr(_numba, "PARALLEL_MIN_PAIRS", 0 if parallel else 10**12)
    xq, yq, xb, yb = make_data(12, nq=16, nb=200, multi=True, seed=12)
    d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
    np.testing.assert_array_equal(R.hamming_distance(xq, xb, backend=backend), d)
    _, ids = R.rank(xq, xb, 40, backend=backend)
    np.testing.assert_array_equal(ids, np.argsort(d, axis=1, kind="stable")[:, :40])
    result = R.evaluate_retrieval(xq, yq, xb, yb, topk=30, backend=backend)
    assert math.isclose(result["map"], np.mean([ref_ap_stable(d[i], rel[i]) for i in range(16)]), abs_tol=TOL)
    expected = np.mean([ref_ap_stable(d[i], rel[i], 30) for i in range(16)])
    assert math.isclose(result["map_at_k"], expected, abs_tol=TOL)
    expected = np.mean([ref_tie_aware_direct(d[i], rel[i]) for i in range(16)])
    assert math.isclose(result["map_tie_aware"], expected, abs_tol=TOL)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
@pytest.mark.parametrize("segments", [True, False], ids=["class-segments", "label-compare"])
def test_blocked_histogram_kernels_equal_reference(segments, parallel, monkeypatch):
    """The blocked kernels (4 queries at a time, one shared database) count exactly what the reference does.

    1 to 4 words (bits 5 ... 256, padding bits in the last word), numbers of queries that are not
    multiples of the block, odd databases and a 1-item one, database tiles of 2 to 8 items shared by
    2 blocks (serial), multi-hot labels over 1 and 3 words (label-compare only), class ids far apart,
    negative and at both ends of int64 (the segments' argsort branch), and an excluded item per query.
    """
    monkeypatch.setattr(_numba, "PARALLEL_MIN_PAIRS", 0 if parallel else 10**12)
    monkeypatch.setattr(_numba, "SEGMENT_MIN_QUERIES", 1 if segments else 10**9)
    monkeypatch.setattr(_numba, "GROUP_BLOCKS", 2)  # 2 blocks share each tile ...
    monkeypatch.setattr(_numba, "TILE_WORDS", 8)  # ... of 8 words: tiles end inside segments and blocks
    cases = [(5, 4, 37), (64, 5, 1), (64, 7, 2), (65, 9, 37), (128, 6, 41), (150, 4, 12), (256, 11, 30)]
    for (bits, nq, nb), multi in itertools.product(cases, [False, True]):
        xq, yq, xb, yb = make_data(bits, nq=nq, nb=nb, multi=multi, flip=0.1, seed=bits + nq)
        if not multi and bits == 65:
            yq, yb = yq * 10**15 - 3, yb * 10**15 - 3  # ids spread over 1e16: the argsort branch
        if not multi and bits == 150:  # ids at both ends of int64 (high - low would overflow)
            ids = np.array([-(2**63), 2**63 - 1, 0, 5, 6, -1, 1, 2, 3, 4, 7, 8, 9], dtype=np.int64)
            yq, yb = ids[yq], ids[yb]
        if multi and bits >= 128:  # 130 classes: 3 label words, sparse, so each word decides some pairs
            rng = np.random.default_rng(bits)
            yq = (rng.random((nq, 130)) < 0.03).astype(np.uint8)
            yb = (rng.random((nb, 130)) < 0.03).astype(np.uint8)
        d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
        counts, relevant = R.distance_counts(xq, yq, xb, yb)
        want = ref_histograms(d, rel, bits)
        np.testing.assert_array_equal(counts, want[0])
        np.testing.assert_array_equal(relevant, want[1])
        if nb < 2:
            continue
        lq, lb = (R.pack_codes(yq), R.pack_codes(yb)) if multi else (yq, yb)
        items = np.arange(nq) * 7 % nb
        got = R.packed_distance_counts(R.pack_codes(xq), lq, R.pack_codes(xb), lb, bits, exclude=items)
        for i, item in enumerate(items):  # the excluded item comes out of its distance's bins
            want[0][i, d[i, item]] -= 1
            want[1][i, d[i, item]] -= rel[i, item]
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("tiles", [False, True], ids=["one-tile", "7-item-tiles"])
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_blocked_kernels_give_bitwise_the_per_query_kernels_metrics(multi, tiles, monkeypatch):
    """Every metric is bitwise the same through the blocked and the per-query kernels (many ties); with
    tiles of 7 items shared by groups of 3 blocks, the stable scan carries its sums across odd tiles."""
    monkeypatch.setattr(_numba, "SEGMENT_MIN_QUERIES", 8)
    if tiles:
        monkeypatch.setattr(_numba, "TILE_WORDS", 7)
        monkeypatch.setattr(_numba, "GROUP_BLOCKS", 3)
    xq, yq, xb, yb = make_data(8, nq=70, nb=333, multi=multi, flip=0.3, seed=5)

    def metrics():
        return (
            R.mean_average_precision(xq, yq, xb, yb),  # stable: the blocked stable scan
            R.mean_average_precision(xq, yq, xb, yb, topk=50),
            R.average_precision(xq, yq, xb, yb, topk=7),
            R.precision_at_k(xq, yq, xb, yb, 20),
            tuple(R.evaluate_retrieval(xq, yq, xb, yb, topk=30).values()),
            R.mean_average_precision(xq, yq, xb, yb, ties="average"),
            R.mean_average_precision(xq, yq, xb, yb, topk=50, ties="average"),
            R.precision_at_k(xq, yq, xb, yb, 20, ties="average"),
            R.precision_at_radius(xq, yq, xb, yb, radius=3),
            *R.precision_recall_curve(xq, yq, xb, yb),
            *R.distance_counts(xq, yq, xb, yb),
        )

    blocked = metrics()
    monkeypatch.setattr(_numba, "BLOCKED", False)
    per_query = metrics()
    for got, want in zip(blocked, per_query, strict=True):
        np.testing.assert_array_equal(got, want)


def test_stable_rank_many_queries_faiss_threads():
    """Enough queries and ties that faiss runs its multi-threaded search path."""
    xq, _, xb, _ = make_data(8, nq=200, nb=2000, flip=0.1, seed=8)
    d = ref_distances(xq, xb)
    for backend in BACKENDS:
        dists, ids = R.rank(xq, xb, 300, backend=backend)
        np.testing.assert_array_equal(ids, np.argsort(d, axis=1, kind="stable")[:, :300], err_msg=backend)


# ---------------------------------------------------------------------------------------------------------
# Tie-aware AP: the closed form against enumeration of all tie orders
# ---------------------------------------------------------------------------------------------------------


def tiny_cases(count=40):
    rng = np.random.default_rng(123)
    for _ in range(count):
        bits = int(rng.integers(1, 4))
        nb = int(rng.integers(1, 8))
        xb = rng.integers(0, 2, size=(nb, bits), dtype=np.uint8)
        xq = rng.integers(0, 2, size=(1, bits), dtype=np.uint8)
        yb = rng.integers(0, 2, size=nb)
        yq = rng.integers(0, 2, size=1)
        d = ref_distances(xq, xb)[0]
        if math.prod(math.factorial(int(c)) for c in np.bincount(d)) <= 5040:
            yield xq, yq, xb, yb


@pytest.mark.parametrize("case", list(tiny_cases()), ids=lambda case: f"nb{case[2].shape[0]}")
def test_tie_aware_equals_mean_over_all_tie_orders(case):
    xq, yq, xb, yb = case
    d, rel = ref_distances(xq, xb)[0], ref_relevance(yq, yb)[0]
    mean_ap, _, _ = ref_tie_aware_permutations(d, rel)
    assert math.isclose(R.average_precision(xq, yq, xb, yb, ties="average")[0], mean_ap, abs_tol=TOL)
    for k in (1, 2, 4):
        _, mean_sum, mean_hits = ref_tie_aware_permutations(d, rel, k)
        expected = mean_sum / mean_hits if mean_hits else 0.0  # ratio of expectations (documented)
        got = R.average_precision(xq, yq, xb, yb, topk=k, ties="average")[0]
        assert math.isclose(got, expected, abs_tol=TOL), k
        p = R.precision_at_k(xq, yq, xb, yb, k, ties="average")
        assert math.isclose(p, mean_hits / min(k, len(d)), abs_tol=TOL)


def test_tie_aware_closed_form_large_buckets():
    """Buckets of up to 100,000 items: the harmonic-number closed form keeps 1e-9 accuracy."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 100_000, size=(3, 9))
    counts[:, 3] = 1
    counts[1, :4] = 0
    relevant = rng.integers(0, counts + 1)
    relevant[2] = 0
    for k in (None, 1, 54_321, 350_000, 10**7):
        got = R.average_precision_from_counts(counts, relevant, topk=k)
        expected = []
        for i in range(3):
            kk = counts[i].sum() if k is None else min(k, counts[i].sum())
            num = den = 0.0
            before = rel_before = 0
            for n, r in zip(counts[i].tolist(), relevant[i].tolist(), strict=True):
                m = min(max(kk - before, 0), n)
                if m and r:
                    j = np.arange(1, m + 1, dtype=np.float64)
                    found = rel_before + 1 + ((j - 1) * (r - 1) / (n - 1) if n > 1 else 0.0)
                    num += math.fsum(r / n * found / (before + j))
                    den += r * m / n
                before += n
                rel_before += r
            expected.append(num / den if den else 0.0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert got[2] == 0.0


def test_average_precision_from_counts_matches_codes():
    xq, yq, xb, yb = make_data(16, seed=3)
    counts, relevant = R.distance_counts(xq, yq, xb, yb)
    for k in (None, 10):
        np.testing.assert_allclose(
            R.average_precision_from_counts(counts, relevant, topk=k),
            R.average_precision(xq, yq, xb, yb, topk=k, ties="average"),
            rtol=0,
            atol=1e-12,
        )


# ---------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------


@st.composite
def retrieval_problems(draw, max_bits=70, max_nb=30):
    bits = draw(st.integers(1, max_bits))
    nq = draw(st.integers(1, 4))
    nb = draw(st.integers(1, max_nb))
    binary = st.integers(0, 1)
    xq = draw(hnp.arrays(np.uint8, (nq, bits), elements=binary))
    xb = draw(hnp.arrays(np.uint8, (nb, bits), elements=binary))
    if draw(st.booleans()):
        classes = draw(st.integers(1, 4))
        yq = draw(hnp.arrays(np.uint8, (nq, classes), elements=binary))
        yb = draw(hnp.arrays(np.uint8, (nb, classes), elements=binary))
    else:
        yq = draw(hnp.arrays(np.int64, nq, elements=st.integers(-2, 3)))
        yb = draw(hnp.arrays(np.int64, nb, elements=st.integers(-2, 3)))
    return xq, yq, xb, yb


@settings(max_examples=60, deadline=None)
@given(problem=retrieval_problems(), backend=st.sampled_from(BACKENDS), k=st.integers(1, 40))
def test_property_stable_equals_brute_force(problem, backend, k):
    xq, yq, xb, yb = problem
    d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
    for topk in (None, k):
        got = R.average_precision(xq, yq, xb, yb, topk=topk, backend=backend)
        expected = [ref_ap_stable(d[i], rel[i], topk) for i in range(len(xq))]
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@settings(max_examples=60, deadline=None)
@given(problem=retrieval_problems(), k=st.integers(1, 40), radius=st.integers(0, 8))
def test_property_metrics_in_unit_interval(problem, k, radius):
    xq, yq, xb, yb = problem
    values = [
        R.mean_average_precision(xq, yq, xb, yb),
        R.mean_average_precision(xq, yq, xb, yb, ties="average"),
        R.mean_average_precision(xq, yq, xb, yb, topk=k),
        R.mean_average_precision(xq, yq, xb, yb, topk=k, ties="average"),
        R.precision_at_k(xq, yq, xb, yb, k),
        R.precision_at_k(xq, yq, xb, yb, k, ties="average"),
        R.precision_at_radius(xq, yq, xb, yb, radius=radius),
        *R.precision_recall_curve(xq, yq, xb, yb)[0],
        *R.precision_recall_curve(xq, yq, xb, yb)[1],
    ]
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in values), values


@settings(max_examples=60, deadline=None)
@given(problem=retrieval_problems(), seed=st.integers(0, 2**32 - 1), k=st.integers(1, 40))
def test_property_tie_aware_invariant_to_database_order(problem, seed, k):
    xq, yq, xb, yb = problem
    perm = np.random.default_rng(seed).permutation(len(xb))
    for topk in (None, k):
        a = R.average_precision(xq, yq, xb, yb, topk=topk, ties="average")
        b = R.average_precision(xq, yq, xb[perm], yb[perm], topk=topk, ties="average")
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    a = R.precision_recall_curve(xq, yq, xb, yb)
    b = R.precision_recall_curve(xq, yq, xb[perm], yb[perm])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bits=st.integers(2, 20), classes=st.integers(2, 6))
def test_property_perfect_codes_give_map_one(data, bits, classes):
    classes = min(classes, 2**bits)
    words = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=classes, max_size=classes, unique=True))
    book = np.array([[(w >> b) & 1 for b in range(bits)] for w in words], dtype=np.uint8)
    yb = np.array(
        data.draw(st.permutations(list(range(classes))))
        + data.draw(st.lists(st.integers(0, classes - 1), max_size=25))
    )
    yq = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=1, max_size=5)))
    for ties in R.TIES:
        assert R.mean_average_precision(book[yq], yq, book[yb], yb, ties=ties) == pytest.approx(
            1.0, abs=1e-12
        )
    assert R.precision_at_radius(book[yq], yq, book[yb], yb, radius=0) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Packing, validation, edge cases
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", (1, 12, 64, 65, 130))
def test_pack_codes(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2, size=(7, bits), dtype=np.uint8)
    packed = R.pack_codes(codes)
    assert packed.dtype == np.uint64 and packed.shape == (7, (bits + 63) // 64)
    unpacked = np.unpackbits(packed.view(np.uint8), axis=1, bitorder="little")[:, :bits]
    np.testing.assert_array_equal(unpacked, codes)
    assert not np.unpackbits(packed.view(np.uint8), axis=1, bitorder="little")[:, bits:].any()


def test_accepts_bool_int_and_float_codes():
    xq, yq, xb, yb = make_data(12, seed=1)
    expected = R.mean_average_precision(xq, yq, xb, yb)
    for dtype in (bool, np.int64, np.float32):
        assert R.mean_average_precision(xq.astype(dtype), yq, xb.astype(dtype), yb) == expected
    assert R.mean_average_precision(xq, yq.astype(np.int8), xb, yb.astype(np.uint16)) == expected


def test_topk_is_capped_to_database_size():
    xq, yq, xb, yb = make_data(16, nb=30, seed=2)
    dists, ids = R.rank(xq, xb, 1000)
    assert dists.shape == ids.shape == (len(xq), 30)
    np.testing.assert_array_equal(
        R.average_precision(xq, yq, xb, yb, topk=1000), R.average_precision(xq, yq, xb, yb)
    )
    result = R.evaluate_retrieval(xq, yq, xb, yb, topk=1000)
    assert result["topk"] == 30 and result["map_at_k"] == result["map"]
    assert "precision_radius3" in R.evaluate_retrieval(xq, yq, xb, yb, radius=3)


def test_single_database_item_and_single_bit():
    xq = np.array([[1], [0]], dtype=np.uint8)
    xb = np.array([[1]], dtype=np.uint8)
    np.testing.assert_array_equal(R.average_precision(xq, [3, 4], xb, [3]), [1.0, 0.0])
    counts, relevant = R.distance_counts(xq, [3, 4], xb, [3])
    np.testing.assert_array_equal(counts, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(relevant, [[1, 0], [0, 0]])


def _call(function, **overrides):
    xq, yq, xb, yb = make_data(8, nq=3, nb=10, seed=0)
    args = {"xq": xq, "yq": yq, "xb": xb, "yb": yb}
    args.update(overrides)
    positional = [args.pop(name) for name in ("xq", "yq", "xb", "yb")]
    return function(*positional, **args)


bad_inputs = [
    (
        R.mean_average_precision,
        {"xq": np.array([[0, 2, 1, 0, 0, 0, 0, 0]] * 3)},
        r"query codes must hold only 0 and 1, got 2",
    ),
    (
        R.mean_average_precision,
        {"xq": np.array([[0, 1, 1, 0, 0, 0, 0, 255]] * 3, dtype=np.uint8)},
        r"query codes must hold only 0 and 1, got 255 at index \(0, 7\)",
    ),
    (
        R.mean_average_precision,
        {"xb": np.full((10, 8), np.nan)},
        r"database codes must hold only 0 and 1, got nan",
    ),
    (R.mean_average_precision, {"xq": np.zeros(8, dtype=np.uint8)}, r"query codes must be a 2-D array"),
    (
        R.mean_average_precision,
        {"xb": np.zeros((0, 8), dtype=np.uint8), "yb": np.zeros(0, int)},
        r"database codes is empty",
    ),
    (R.mean_average_precision, {"xq": np.zeros((3, 9), dtype=np.uint8)}, r"same number of bits, got 9 and 8"),
    (
        R.mean_average_precision,
        {"xb": np.array([["a"] * 8] * 10)},
        r"database codes must hold the numbers 0 and 1",
    ),
    (
        R.mean_average_precision,
        {"yq": np.zeros(4, dtype=int)},
        r"query labels has 4 rows but the codes have 3",
    ),
    (
        R.mean_average_precision,
        {"yb": np.zeros(10, dtype=float)},
        r"database labels .* must be integers, got dtype float64",
    ),
    (
        R.mean_average_precision,
        {"yq": np.zeros((3, 4), dtype=np.uint8)},
        r"query labels are multi-hot .* database labels are single-label",
    ),
    (
        R.mean_average_precision,
        {"yq": np.zeros((3, 4), np.uint8), "yb": np.zeros((10, 5), np.uint8)},
        r"same number of classes, got 4 and 5",
    ),
    (
        R.mean_average_precision,
        {"yb": np.full((10, 4), 3, dtype=np.uint8), "yq": np.zeros((3, 4), np.uint8)},
        r"database labels \(multi-hot\) must hold only 0 and 1",
    ),
    (R.mean_average_precision, {"yq": np.zeros((3, 1, 1), dtype=int)}, r"query labels must be 1-D .* or 2-D"),
    (
        R.mean_average_precision,
        {"ties": "random"},
        r"ties must be one of \('stable', 'average'\), got 'random'",
    ),
    (R.mean_average_precision, {"backend": "cupy"}, r"backend must be one of .*, got 'cupy'"),
    (R.mean_average_precision, {"topk": 0}, r"topk must be a positive integer, got 0"),
    (R.mean_average_precision, {"topk": -3}, r"topk must be a positive integer, got -3"),
    (R.mean_average_precision, {"topk": 2.5}, r"topk must be a positive integer, got 2.5"),
    (R.mean_average_precision, {"topk": float("nan")}, r"topk must be a positive integer, got nan"),
    (R.mean_average_precision, {"topk": True}, r"topk must be a positive integer, got True"),
    (R.mean_average_precision, {"device": "cpu"}, r"device='cpu' is only used by backend='torch'"),
    (
        R.mean_average_precision,
        {"backend": "torch", "device": "tpu9"},
        r"device='tpu9' is not one of auto, cpu, cuda",
    ),
    (R.precision_at_k, {"k": 0}, r"k must be a positive integer, got 0"),
    (R.precision_at_radius, {"radius": -1}, r"radius must be a non-negative integer, got -1"),
    (R.precision_at_radius, {"radius": 1.5}, r"radius must be a non-negative integer, got 1.5"),
    (R.evaluate_retrieval, {"topk": None}, r"topk must be a positive integer, got None"),
]


@pytest.mark.parametrize(("function", "overrides", "match"), bad_inputs)
def test_bad_inputs_raise(function, overrides, match):
    if function is R.precision_at_k:
        overrides = {"k": 5, **overrides}
    with pytest.raises(ValueError, match=match):
        _call(function, **overrides)


def test_bad_inputs_of_code_functions():
    codes = np.zeros((4, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"codes must hold only 0 and 1, got -1"):
        R.pack_codes(codes - 1.0)
    with pytest.raises(ValueError, match=r"codes must be a 2-D array"):
        R.pack_codes(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"same number of bits, got 8 and 16"):
        R.hamming_distance(codes, np.zeros((4, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"topk must be a positive integer, got 0"):
        R.rank(codes, codes, 0)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        R.rank(codes, codes, 1, backend="annoy")


def test_bad_histograms():
    good = np.array([[2, 1]])
    with pytest.raises(ValueError, match=r"relevant\[0, 1\] = 2 exceeds counts\[0, 1\] = 1"):
        R.average_precision_from_counts(good, [[0, 2]])
    with pytest.raises(ValueError, match=r"same shape"):
        R.average_precision_from_counts(good, [[0, 0, 0]])
    with pytest.raises(ValueError, match=r"counts must hold non-negative integer counts, got -1"):
        R.average_precision_from_counts([[-1, 1]], [[0, 0]])
    with pytest.raises(ValueError, match=r"relevant must hold non-negative integer counts, got nan"):
        R.average_precision_from_counts(good, [[np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"counts must be 2-D"):
        R.average_precision_from_counts([2, 1], [0, 0])
    with pytest.raises(ValueError, match=r"topk must be a positive integer"):
        R.average_precision_from_counts(good, good, topk=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_torch_cuda_equals_numpy():
    for xq, yq, xb, yb in (make_data(48, nq=50, nb=3000, seed=48), make_data(100, nq=20, nb=500, multi=True)):
        cpu = R.evaluate_retrieval(xq, yq, xb, yb, topk=100)
        cuda = R.evaluate_retrieval(xq, yq, xb, yb, topk=100, backend="torch", device="cuda")
        for key, value in cpu.items():
            assert math.isclose(cuda[key], value, abs_tol=TOL), key
        np.testing.assert_array_equal(
            R.rank(xq, xb, 64, backend="torch", device="cuda")[1], R.rank(xq, xb, 64)[1]
        )


def test_cuda_kernel_block_sizes():
    """Counters of a block fit the static shared memory; too many bins leave the work to plain torch."""
    for nbins in (2, 5, 65, 101, 161, 257, 384):
        assert 2 * 4 * 32 * nbins * _cuda.own_warps(nbins) <= _cuda.SHARED_BYTES
        threads = _cuda.block_threads(nbins)
        assert threads % 32 == 0 and 32 <= threads <= 128
        assert 4 * nbins * threads <= _cuda.SHARED_BYTES
    assert _cuda.block_threads(65) == 128
    assert _cuda.block_threads(385) < 32  # 384 bits: plain torch
    data = _checks.prepare(*make_data(384, nq=2, nb=3), "torch", "cpu")
    assert not _cuda.usable(data, torch.device("cuda"))


def test_cuda_kernels_not_used_on_cpu():
    xq, yq, xb, yb = make_data(16)
    data = _checks.prepare(xq, yq, xb, yb, "torch", "cpu")
    assert not _cuda.usable(data, torch.device("cpu"))


CUDA_CASES = [
    # (bits, multi, classes, nq, nb, flip): one word, two words with three label words, five words (32
    # queries a block), and 4 bits (5 distances: long runs of equal distance inside every segment).
    (64, False, 10, 300, 5000, 0.2),
    (100, True, 130, 77, 3001, 0.2),
    (300, False, 7, 40, 2000, 0.3),
    (4, False, 5, 129, 4000, 0.3),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("segment", [37, _cuda.MAX_SEGMENT], ids=["short-segments", "default"])
@pytest.mark.parametrize(
    ("case", "runs"),
    # Class ids: pass 1 over class runs (0 items a run suffice) and over labels loaded item by item
    # (runs never long enough); multi-hot labels have no class runs, so one case.
    [(case, runs) for case in CUDA_CASES for runs in ((10**9,) if case[1] else (0, 10**9))],
    ids=lambda v: f"{v[0]}bits-{'multi' if v[1] else 'single'}" if isinstance(v, tuple) else
    ("class-runs" if v == 0 else "label-loads"),
)
def test_cuda_kernels_equal_numpy(case, segment, runs, monkeypatch):
    """The CUDA kernels against numba, with segments split everywhere and queries in several chunks; in
    a HammingIndex (whose pass 1 reads class runs, for class ids) and in the functions (labels loaded
    item by item), and in the index with class runs turned off."""
    pytest.importorskip("cupy")
    bits, multi, classes, nq, nb, flip = case
    monkeypatch.setattr(_cuda, "MAX_SEGMENT", segment)
    monkeypatch.setattr(_cuda, "CHUNK_BYTES", 1 if segment == 37 else _cuda.CHUNK_BYTES)
    monkeypatch.setattr(_cuda, "ITEMS_PER_CLASS_RUN", runs)
    xq, yq, xb, yb = make_data(bits, nq=nq, nb=nb, multi=multi, classes=classes, flip=flip, seed=bits)
    if not multi:
        yq[:3] = [classes + 7, -2, 0]  # classes no database item has, and the first class
    data = _checks.prepare(xq, yq, xb, yb, "torch", "cuda")
    assert _cuda.usable(data, _torch.device_of("cuda"))
    cpu = {"backend": "numpy"}
    gpu = {"backend": "torch", "device": "cuda"}
    got, want_counts = R.distance_counts(xq, yq, xb, yb, **gpu), R.distance_counts(xq, yq, xb, yb, **cpu)
    np.testing.assert_array_equal(got[0], want_counts[0])
    np.testing.assert_array_equal(got[1], want_counts[1])
    for k in (None, 1, 10, nb // 3, nb):
        for ties in R.TIES:
            np.testing.assert_allclose(
                R.average_precision(xq, yq, xb, yb, topk=k, ties=ties, **gpu),
                R.average_precision(xq, yq, xb, yb, topk=k, ties=ties, **cpu),
                rtol=0,
                atol=TOL,
            )
    for k in (1, 9, nb):
        p_gpu, p_cpu = R.precision_at_k(xq, yq, xb, yb, k, **gpu), R.precision_at_k(xq, yq, xb, yb, k, **cpu)
        assert math.isclose(p_gpu, p_cpu, abs_tol=TOL)
    got, want = R.evaluate_retrieval(xq, yq, xb, yb, **gpu), R.evaluate_retrieval(xq, yq, xb, yb, **cpu)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, abs_tol=TOL), key
    index = R.HammingIndex(xb, yb, device="cuda")
    counts = index.distance_counts(xq, yq)
    np.testing.assert_array_equal(counts[0], want_counts[0])
    np.testing.assert_array_equal(counts[1], want_counts[1])
    assert index.evaluate(xq, yq) == got  # bitwise the functions'
    assert ("class_runs" in index._database.kernel_cache) == (not multi and runs == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_class_runs_are_built_once_per_index_and_laid_out_per_segment_length():
    pytest.importorskip("cupy")
    xq, yq, xb, yb = make_data(16, nq=300, nb=6000, classes=6, seed=5)
    index = R.HammingIndex(xb, yb, device="cuda")
    want = R.mean_average_precision(xq, yq, xb, yb, ties="stable")
    assert index.mean_average_precision(xq, yq, ties="stable") == pytest.approx(want, abs=TOL)
    runs = index._database.kernel_cache["class_runs"]
    assert runs.count == 5 and runs.dense.shape == (6000,)  # make_data's database has classes - 1
    layout = runs._layout
    xs, run_start = layout[1], layout[2]
    # Every run holds its segment's items of its class, all items once.
    assert int(run_start[-1]) == 6000 and bool((run_start[1:] >= run_start[:-1]).all())
    assert sorted(map(tuple, xs.cpu().tolist())) == sorted(map(tuple, index._database.codes.cpu().tolist()))
    assert index.mean_average_precision(xq[:40], yq[:40], ties="stable") == pytest.approx(
        R.mean_average_precision(xq[:40], yq[:40], xb, yb, ties="stable"), abs=TOL
    )
    assert index._database.kernel_cache["class_runs"] is runs  # built once


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("bitmaps", [True, False], ids=["bitmaps-on", "bitmaps-off"])
@pytest.mark.parametrize(("bits", "classes"), [(64, 6), (16, 100), (130, 5)])
def test_cuda_pass_two_reads_relevance_from_bitmaps_or_labels(bits, classes, bitmaps, monkeypatch):
    """Pass 2 of a resident database of class ids reads relevance from per-class bitmaps where they fit
    (at most the codes' bytes: not for 100 classes of 16-bit codes), else labels; both equal numba. The
    database's 3,333 items end in a partial bitmap word; one query's class no item has."""
    pytest.importorskip("cupy")
    monkeypatch.setattr(_cuda, "BITMAPS", bitmaps)
    monkeypatch.setattr(_cuda, "ITEMS_PER_CLASS_RUN", 0)
    monkeypatch.setattr(_cuda, "MAX_SEGMENT", 1000)  # several segments, not multiples of 32 before rounding
    xq, yq, xb, yb = make_data(bits, nq=70, nb=3333, classes=classes, seed=bits)
    yq[0] = classes + 3
    index = R.HammingIndex(xb, yb, device="cuda")
    for topk in (1000, 3333):
        got, want = index.evaluate(xq, yq, topk=topk), R.evaluate_retrieval(xq, yq, xb, yb, topk=topk)
        for key, value in want.items():
            assert math.isclose(got[key], value, abs_tol=TOL), key
    runs = index._database.kernel_cache["class_runs"]
    assert (runs._bitmaps is not None) == (bitmaps and classes < 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("cache", [None, {}], ids=["labels", "class-runs"])
def test_cuda_kernels_take_databases_at_any_address(cache):
    """Pass 2 reads one-word codes and class ids two items per 16-byte load: a database that is a slice
    starting at an odd item (8 bytes past a 16-byte address) gives what an aligned copy gives."""
    pytest.importorskip("cupy")
    from hashing_gym.ranking import _packing

    xq, yq, xb, yb = make_data(64, nq=50, nb=2001, classes=6, seed=3)
    dev = torch.device("cuda")
    def on_device(array):
        return torch.from_numpy(array.view(np.int64)).to(dev)

    words = on_device(_packing.pack_words(xq)), on_device(_packing.label_words(yq))
    xb_words, yb_words = on_device(_packing.pack_words(xb)), on_device(_packing.label_words(yb))
    sliced = xb_words[1:], yb_words[1:]
    assert sliced[0].data_ptr() % 16 == 8 and sliced[1].data_ptr() % 16 == 8
    aligned = sliced[0].clone(), sliced[1].clone()
    ks = (1, 100, 2000)
    got = _cuda.stats(words[0], words[1], *sliced, 64, False, ks, True, cache)
    want = _cuda.stats(words[0], words[1], *aligned, 64, False, ks, True, None if cache is None else {})
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    counts = R.distance_counts(xq, yq, xb[1:], yb[1:])
    np.testing.assert_array_equal(got[0].cpu().numpy(), counts[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_plain_torch_equals_kernels(monkeypatch):
    """Plain torch on CUDA (the path without CuPy) gives what the kernels give."""
    xq, yq, xb, yb = make_data(32, nq=64, nb=2000, multi=True, seed=32)
    with_kernels = R.evaluate_retrieval(xq, yq, xb, yb, topk=50, backend="torch", device="cuda")
    monkeypatch.setattr(_cuda, "ENABLED", False)
    plain = R.evaluate_retrieval(xq, yq, xb, yb, topk=50, backend="torch", device="cuda")
    for key, value in plain.items():
        assert math.isclose(with_kernels[key], value, abs_tol=TOL), key


@pytest.mark.parametrize("topk", [None, 1, 7, 40])
def test_tie_aware_math_is_one_formula_on_numpy_torch_and_numba(topk, monkeypatch):
    """The vectorised tie-aware AP (numpy and torch) equals its numba transcription bitwise."""
    from hashing_gym.ranking import _metrics

    xq, yq, xb, yb = make_data(12, nq=40, nb=300, seed=3)
    counts, relevant = R.distance_counts(xq, yq, xb, yb)
    compiled = R.average_precision_from_counts(counts, relevant, topk=topk)
    on_torch = R.average_precision_from_counts(torch.as_tensor(counts), torch.as_tensor(relevant), topk=topk)
    monkeypatch.setattr(_metrics, "_VECTORISED_ON_NUMPY", True)
    vectorised = R.average_precision_from_counts(counts, relevant, topk=topk)
    np.testing.assert_array_equal(vectorised, compiled)
    np.testing.assert_allclose(on_torch.numpy(), compiled, rtol=0, atol=1e-15)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize(("bits", "multi"), [(16, False), (70, False), (16, True), (130, True)])
def test_blocked_stable_scan_leaves_excluded_items_out(bits, multi, parallel, monkeypatch):
    """The blocked stable scan (4 queries a pass over one shared database, in label order) leaves each
    query's excluded item out: bitwise the per-query AP of the list without it. 9 queries (a partial
    block), labels shared by some blocks and not others."""
    monkeypatch.setattr(_numba, "PARALLEL_MIN_PAIRS", 0 if parallel else 10**12)
    rng = np.random.default_rng(bits)
    nq, nb = 9, 61
    xq, xb = rng.integers(0, 2, (nq, bits)), rng.integers(0, 2, (nb, bits))
    xb[1::3] = xb[::3][: xb[1::3].shape[0]]  # repeated codes: ties at every distance
    yb = rng.integers(0, 2, (nb, 9)) if multi else rng.integers(0, 3, nb)
    yq = rng.integers(0, 2, (nq, 9)) if multi else np.array([0, 0, 0, 0, 1, 2, 1, 0, 2])
    items = rng.integers(0, nb, nq)
    lq, lb = (R.pack_codes(yq), R.pack_codes(yb)) if multi else (yq, yb)
    packed = R.pack_codes(xq), lq, R.pack_codes(xb), lb, bits
    for topk in (None, 5, 40):
        want = [
            R.average_precision(
                xq[i : i + 1], yq[i : i + 1], np.delete(xb, item, 0), np.delete(yb, item, 0), topk=topk
            )[0]
            for i, item in enumerate(items)
        ]
        got = R.packed_average_precision(*packed, topk=topk, exclude=items)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("ties", R.TIES)
def test_packed_functions_with_exclude_and_one_database_per_query(multi, ties):
    """Packed AP with the query's own row left out equals average_precision on the list without it."""
    rng = np.random.default_rng(int(multi))
    bits, nq, nb = 70 if multi else 16, 6, 50
    xq, db = rng.integers(0, 2, (nq, bits)), rng.integers(0, 2, (nq, nb, bits))
    labels = rng.integers(0, 2, (nb, 9)) if multi else rng.integers(0, 3, nb)
    items = rng.integers(0, nb, nq)
    packed_labels = R.pack_codes(labels) if multi else labels
    xb = np.stack([R.pack_codes(d) for d in db])
    for topk in (None, 5):
        want = np.array(
            [
                R.average_precision(
                    xq[i : i + 1],
                    labels[items[i] : items[i] + 1],
                    np.delete(db[i], items[i], 0),
                    np.delete(labels, items[i], 0),
                    topk=topk,
                    ties=ties,
                )[0]
                for i in range(nq)
            ]
        )
        args = (R.pack_codes(xq), packed_labels[items], xb, packed_labels, bits)
        got = R.packed_average_precision(*args, topk=topk, ties=ties, exclude=items)
        np.testing.assert_array_equal(got, want)
        t = torch.as_tensor
        tl = t(packed_labels.view(np.int64)) if multi else t(packed_labels)
        for word_bits in (16, 32, 64):
            targs = (R.pack_codes(t(xq), word_bits=word_bits), tl[t(items)])
            targs += (R.pack_codes(t(db), word_bits=word_bits), tl, bits)
            got = R.packed_average_precision(*targs, topk=topk, ties=ties, exclude=t(items))
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(R.unpack_codes(targs[2], bits).numpy(), db)


def test_import_has_no_side_effects():
    """Importing the package imports no backend and leaves numba's threading layer alone."""
    import subprocess
    import sys

    code = (
        "import sys, hashing_gym.ranking; "
        "print([m for m in ('numba', 'faiss', 'torch', 'cupy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("bits", [16, 20, 32, 64, 70])
def test_cuda_own_database_kernel_equals_plain_torch(multi, bits, monkeypatch):
    """RankListHash's histograms (each query against its own database or a shared one, one item left
    out) from the CUDA kernel equal plain torch's, for every word width, with many ties."""
    from hashing_gym.ranking import _torch

    rng = np.random.default_rng(bits + multi)
    nq, nb = 300, 257
    # Few distinct codes: many ties at each distance.
    pool = rng.integers(0, 2, (6, bits))
    xq, db = pool[rng.integers(0, 6, nq)], pool[rng.integers(0, 6, (nq, nb))]
    labels = (rng.random((nb, 70)) < 0.05).astype(np.uint8) if multi else rng.integers(0, 4, nb)
    tl = torch.as_tensor(R.pack_codes(labels).view(np.int64) if multi else labels).cuda()
    items = torch.as_tensor(rng.integers(0, nb, nq)).cuda()
    for word_bits in (16, 32, 64):
        q = R.pack_codes(torch.as_tensor(xq).cuda(), word_bits=word_bits)
        own = R.pack_codes(torch.as_tensor(db).cuda(), word_bits=word_bits)
        for xb, exclude in ((own, items), (own, None), (own[0], items)):
            assert _cuda.own_usable(q, tl[items], xb, bits)
            got = _torch.packed_counts(q, tl[items], xb, tl, bits, exclude)
            with monkeypatch.context() as patch:
                patch.setattr(_cuda, "ENABLED", False)
                want = _torch.packed_counts(q, tl[items], xb, tl, bits, exclude)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == torch.int64 and torch.equal(g, w)
            assert int(got[0].sum()) == nq * (nb - (exclude is not None))
