"""numba kernels of the ``"numpy"`` backend (the counting kernel also serves ``"faiss"`` and the envs).

Importing this module chooses numba's threading layer, so it is imported at the backend's first use
(never by ``import hashing_gym.ranking``): numba's default OpenMP layer resets OpenMP's thread count
the first time a parallel kernel runs, which silently lifts torch (in the same process) from the
threads its user set to every core, and small networks then train up to 20x slower. The workqueue
layer leaves OpenMP alone. A user's explicit ``NUMBA_THREADING_LAYER`` wins.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# Below this many query-item pairs the serial kernels run: waking the thread pool costs more than the
# work (milliseconds on a loaded machine; an env's reward is one query).
PARALLEL_MIN_PAIRS = 1 << 18


def set_num_threads(count: int) -> None:
    """Threads of the parallel kernels (at most numba's ``NUMBA_NUM_THREADS``)."""
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))


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
def _masked_distance(xq, i, xb, j, last_mask):
    """:func:`_distance` with the last word's padding bits masked off (the database's are not checked)."""
    last = xq.shape[1] - 1
    d = _popcount((xq[i, last] ^ xb[j, last]) & last_mask)
    for w in range(last):
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
    """One query's stable-order AP sums and hits at each cutoff, from keys ``2 d + relevant`` by index.

    A key ``2 * nbins`` marks an item left out of the list.
    """
    nbins = counts.shape[0]
    before = np.empty(nbins, dtype=np.int64)  # N_<: items at smaller distances
    rel_before = np.empty(nbins, dtype=np.int64)  # R_<: relevant items at smaller distances
    n = 0
    r = 0
    for d in range(nbins):
        before[d] = n
        rel_before[d] = r
        n += counts[d]
        r += relevant[d]
    scan_keys(keys, before, rel_before, np.zeros(2 * nbins + 1, dtype=np.int64), ks, ap_sum, hits)


@numba.njit(cache=True, inline="always")
def scan_keys(keys, start, rel_start, seen, ks, ap_sum, hits):
    """The stable AP's sums over a run of items in database order: the one place of that formula.

    ``keys[j] = 2 d + relevant`` of the run's item j (``2 * nbins``: left out); ``start[d]`` and
    ``rel_start[d]`` count the items and relevant items ranked before the run's first item at distance
    ``d`` (all items at smaller distances, plus those at ``d`` in earlier runs); ``seen`` counts this
    run's items per key so far (one increment per item). A relevant item's position is
    ``start[d] + items at d seen so far`` and its precision ``(rel_start[d] + relevant at d so far) /
    position``; ``ap_sum[c]`` and ``hits[c]`` add them for positions within ``ks[c]``, in database
    order (:func:`_add_relevant`). ``hashing_gym.ranking.distributed`` chains runs across ranks with the
    same additions; the blocked scan (:func:`_stable_group`) makes them for 4 queries at a time, and
    :func:`_relevant_at` is the same expression with its sums in registers (bitwise: tests compare).
    """
    for j in range(keys.shape[0]):
        key = keys[j]
        seen[key] += 1
        if key & 1:
            d = key >> 1
            _add_relevant(start[d] + seen[key - 1] + seen[key], rel_start[d] + seen[key], ks, ap_sum, hits)


@numba.njit(cache=True, inline="always")
def _add_relevant(position, rank, ks, ap_sum, hits):
    """A relevant item at ``position`` (1-based), the ``rank``-th relevant one, added to the sums.

    Its precision ``rank / position`` goes to ``ap_sum[c]`` and ``hits[c]`` for each cutoff ``ks[c]``
    it is within.
    """
    precision = rank / position
    for c in range(ks.shape[0]):
        if position <= ks[c]:
            ap_sum[c] += precision
            hits[c] += 1


@numba.njit(cache=True, inline="always")
def _keys_one_word(q, label, xb, lb, last_mask, stable, hist, keys):
    """:func:`_stats_row`'s loop for one-word codes and class ids (3x faster than the general loop)."""
    if stable:
        for j in range(xb.shape[0]):
            key = 2 * _popcount((q ^ xb[j, 0]) & last_mask) + (1 if label == lb[j, 0] else 0)
            hist[key] += 1
            keys[j] = key
    else:  # the branch-free loop on its own: the compiler vectorises it
        for j in range(xb.shape[0]):
            hist[2 * _popcount((q ^ xb[j, 0]) & last_mask) + (1 if label == lb[j, 0] else 0)] += 1


@numba.njit(cache=True)
def _stats_row(dist, xq, xb, lq, lb, i, skip, multi, ks, stable, counts, relevant, ap_sum, hits):
    """Histograms of query ``i`` and, if ``stable``, its stable AP sums and hits.

    Distances come from ``dist[i]`` when ``dist`` has rows (faiss), else from the packed codes ``xq``,
    ``xb``. Database item ``skip`` (when >= 0) is left out of the list.
    """
    nb, nbins = lb.shape[0], counts.shape[1]
    from_codes = dist.shape[0] == 0
    bits = nbins - 1
    last_mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - bits % 64) % 64)
    keys = np.empty(nb if stable else 0, dtype=np.int32)
    hist = np.zeros(2 * nbins, dtype=np.int64)  # per key 2 d + relevant: one increment per item
    if from_codes and xq.shape[1] == 1 and not multi:
        _keys_one_word(xq[i, 0], lq[i, 0], xb, lb, last_mask, stable, hist, keys)
    else:
        for j in range(nb):
            d = _masked_distance(xq, i, xb, j, last_mask) if from_codes else dist[i, j]
            key = 2 * d + _is_relevant(lq, i, lb, j, multi)
            hist[key] += 1
            if stable:
                keys[j] = key
    if skip >= 0:  # counted above with the others (the loops stay branch-free), taken out here
        d = _masked_distance(xq, i, xb, skip, last_mask) if from_codes else dist[i, skip]
        hist[2 * d + _is_relevant(lq, i, lb, skip, multi)] -= 1
        if stable:
            keys[skip] = 2 * nbins
    for d in range(nbins):
        counts[i, d] = hist[2 * d] + hist[2 * d + 1]
        relevant[i, d] = hist[2 * d + 1]
    if stable:
        _stable_scan(keys, counts[i], relevant[i], ks, ap_sum[i], hits[i])


# Histograms of many queries against one shared database (no stable sums): the CPU's bulk path
# (tie-aware mAP, P@r, PR curves). Our design, measured in benchmarks/RESULTS.md: a block of
# QUERY_BLOCK queries walks the database once, so each database word loaded serves 4 queries (held
# in registers), and each query counts into 2 histogram copies (even and odd items) so increments of
# a repeated bin do not wait on each other's store. With class-id labels and enough queries the
# database is first grouped by class (_segments): inside a class's segment each query's relevance
# is one constant, so the loop loads no labels and compares nothing, it only picks the relevant or
# the other half of the histogram once per segment. Histograms do not depend on the database
# order, so the counts are exactly those of the per-query loop. A group of GROUP_BLOCKS blocks scans
# the database one L2-sized tile at a time, so the database streams from memory once per group.
# What bounds it: one histogram increment (a load and a store) per pair, about 1 cycle per pair
# (see _one_word_run); the popcounts alone run at 0.2 cycles per pair.

QUERY_BLOCK = 4
# False sends every query through the per-query kernel (_stats_row): the tests' and benchmark's "old" path.
BLOCKED = True
# Query blocks that scan each database tile of TILE_WORDS words (128 KiB, in L2) in turn.
GROUP_BLOCKS = 4
TILE_WORDS = 1 << 14
# Fewer queries than this take the label-comparing block loop (2.4 cycles per pair against 1.05):
# grouping the database by class costs about as much as ranking 20-35 queries against it.
SEGMENT_MIN_QUERIES = 64


@numba.njit(cache=True, inline="always")
def _block_rows(q0, nq):
    """The 4 query rows of block ``q0``: past the last query, repeats of it (their results are dropped)."""
    return q0, min(q0 + 1, nq - 1), min(q0 + 2, nq - 1), min(q0 + 3, nq - 1)


@numba.njit(cache=True)
def _block_finish(xq, xb, lq, lb, multi, skip, last_mask, q0, hist, counts, relevant):
    """Sum a block's histogram copies into ``counts``/``relevant`` and take out each query's ``skip``."""
    nq, nbins = counts.shape
    for t in range(min(QUERY_BLOCK, nq - q0)):
        i = q0 + t
        if skip[i] >= 0:  # counted with the others (the loops stay branch-free), taken out here
            d = _masked_distance(xq, i, xb, skip[i], last_mask)
            hist[t, 0, _is_relevant(lq, i, lb, skip[i], multi), d] -= 1
        for d in range(nbins):
            rel = hist[t, 0, 1, d] + hist[t, 1, 1, d]
            counts[i, d] = hist[t, 0, 0, d] + hist[t, 1, 0, d] + rel
            relevant[i, d] = rel


@numba.njit(cache=True, inline="always")
def _block_distances(xq, i0, i1, i2, i3, xb, j, words):
    """Distances of database item ``j`` (padding masked already) to 4 queries, over ``words`` words."""
    d0 = d1 = d2 = d3 = 0
    for w in range(words):
        x = xb[j, w]
        d0 += _popcount(xq[i0, w] ^ x)
        d1 += _popcount(xq[i1, w] ^ x)
        d2 += _popcount(xq[i2, w] ^ x)
        d3 += _popcount(xq[i3, w] ^ x)
    return d0, d1, d2, d3


@numba.njit(cache=True)
def _one_word_run(xq, i0, i1, i2, i3, items, hist, r0, r1, r2, r3):
    """Count one-word codes ``items`` (a segment) for 4 queries of relevance ``r0..r3`` into ``hist``.

    A function of its own, with the database as a contiguous vector read through unsigned indices, so
    that the 8 histogram pointers and 4 query words stay in registers and no negative-index check is
    left in the loop: 1.05 cycles per pair on AMD EPYC (Zen 4), against 1.7 inlined into the segment
    loop with signed indices. One histogram increment (a load and a store) per pair bounds it: the same
    loop with increments at addresses that do not depend on the data runs at 1.02 cycles per pair.
    """
    a0, a1, a2, a3 = xq[i0, 0], xq[i1, 0], xq[i2, 0], xq[i3, 0]
    h0, h1, h2, h3 = hist[0, 0, r0], hist[1, 0, r1], hist[2, 0, r2], hist[3, 0, r3]
    g0, g1, g2, g3 = hist[0, 1, r0], hist[1, 1, r1], hist[2, 1, r2], hist[3, 1, r3]
    n = items.shape[0]
    for k in range(n >> 1):
        u = np.uint64(2 * k)  # unsigned indices: no negative-index wraparound in the loop
        x, y = items[u], items[u + np.uint64(1)]
        h0[_popcount(a0 ^ x)] += 1
        h1[_popcount(a1 ^ x)] += 1
        h2[_popcount(a2 ^ x)] += 1
        h3[_popcount(a3 ^ x)] += 1
        g0[_popcount(a0 ^ y)] += 1
        g1[_popcount(a1 ^ y)] += 1
        g2[_popcount(a2 ^ y)] += 1
        g3[_popcount(a3 ^ y)] += 1
    if n & 1:
        x = items[n - 1]
        h0[_popcount(a0 ^ x)] += 1
        h1[_popcount(a1 ^ x)] += 1
        h2[_popcount(a2 ^ x)] += 1
        h3[_popcount(a3 ^ x)] += 1


@numba.njit(cache=True)
def _words_run(xq, i0, i1, i2, i3, items, hist, r0, r1, r2, r3):
    """:func:`_one_word_run` for codes of several words, ``items`` (n, W)."""
    h0, h1, h2, h3 = hist[0, 0, r0], hist[1, 0, r1], hist[2, 0, r2], hist[3, 0, r3]
    g0, g1, g2, g3 = hist[0, 1, r0], hist[1, 1, r1], hist[2, 1, r2], hist[3, 1, r3]
    n, words = items.shape
    for k in range(n >> 1):
        u = np.uint64(2 * k)  # unsigned indices: no negative-index wraparound in the loop
        d0, d1, d2, d3 = _block_distances(xq, i0, i1, i2, i3, items, u, words)
        h0[d0] += 1
        h1[d1] += 1
        h2[d2] += 1
        h3[d3] += 1
        d0, d1, d2, d3 = _block_distances(xq, i0, i1, i2, i3, items, u + np.uint64(1), words)
        g0[d0] += 1
        g1[d1] += 1
        g2[d2] += 1
        g3[d3] += 1
    if n & 1:
        d0, d1, d2, d3 = _block_distances(xq, i0, i1, i2, i3, items, n - 1, words)
        h0[d0] += 1
        h1[d1] += 1
        h2[d2] += 1
        h3[d3] += 1


@numba.njit(cache=True)
def _segment_tile(xq, lq, xs, c, j, end, q0, hist):
    """Histograms of queries ``q0..q0 + 3`` over items ``j..end - 1`` of a segment of class ``c``.

    ``xs`` is the database grouped by class (see ``_segments``). ``hist[t, c, r, d]``: query ``t``'s copy
    ``c`` (even or odd item), relevant ``r``, distance ``d``. In a segment each query's relevance is
    one constant, so the loop compares no labels: it counts into the relevant or the other half.
    """
    i0, i1, i2, i3 = _block_rows(q0, xq.shape[0])
    r0, r1, r2, r3 = int(c == lq[i0, 0]), int(c == lq[i1, 0]), int(c == lq[i2, 0]), int(c == lq[i3, 0])
    if xs.shape[1] == 1:  # the common case, without the loop over words
        _one_word_run(xq, i0, i1, i2, i3, xs.reshape(xs.shape[0])[j:end], hist, r0, r1, r2, r3)
    else:
        _words_run(xq, i0, i1, i2, i3, xs[j:end], hist, r0, r1, r2, r3)


@numba.njit(cache=True, inline="always")
def _relevant_any(lq, i, lb, j, multi):
    """:func:`_is_relevant` without early exit (branch-free over the label words)."""
    if multi:
        shared = 0
        for w in range(lq.shape[1]):
            shared |= lq[i, w] & lb[j, w]
        return int(shared != 0)
    return int(lq[i, 0] == lb[j, 0])


@numba.njit(cache=True)
def _label_block(xq, lq, xb, lb, multi, last_mask, q0, hist):
    """Add the items ``xb`` in their order to ``hist`` (see :func:`_segment_tile`), relevance item by item."""
    i0, i1, i2, i3 = _block_rows(q0, xq.shape[0])
    nb, words = xb.shape
    nbins = hist.shape[3]
    keyed = np.zeros((QUERY_BLOCK, 2, 2 * nbins), dtype=np.int64)  # [t, c, 2 d + r]: one index per item
    h0, h1, h2, h3 = keyed[0, 0], keyed[1, 0], keyed[2, 0], keyed[3, 0]
    g0, g1, g2, g3 = keyed[0, 1], keyed[1, 1], keyed[2, 1], keyed[3, 1]
    j = 0
    if words == 1 and lq.shape[1] == 1:  # the common case, without the loops over words
        a0, a1, a2, a3 = xq[i0, 0], xq[i1, 0], xq[i2, 0], xq[i3, 0]
        l0, l1, l2, l3 = lq[i0, 0], lq[i1, 0], lq[i2, 0], lq[i3, 0]
        for k in range(nb >> 1 if multi else 0):  # one loop per label kind: a test inside costs 50%
            u = np.uint64(2 * k)  # unsigned indices: no negative-index wraparound in the loop
            x, y = xb[u, 0] & last_mask, xb[u + np.uint64(1), 0] & last_mask
            lx, ly = lb[u, 0], lb[u + np.uint64(1), 0]
            h0[2 * _popcount(a0 ^ x) + int(lx & l0 != 0)] += 1
            h1[2 * _popcount(a1 ^ x) + int(lx & l1 != 0)] += 1
            h2[2 * _popcount(a2 ^ x) + int(lx & l2 != 0)] += 1
            h3[2 * _popcount(a3 ^ x) + int(lx & l3 != 0)] += 1
            g0[2 * _popcount(a0 ^ y) + int(ly & l0 != 0)] += 1
            g1[2 * _popcount(a1 ^ y) + int(ly & l1 != 0)] += 1
            g2[2 * _popcount(a2 ^ y) + int(ly & l2 != 0)] += 1
            g3[2 * _popcount(a3 ^ y) + int(ly & l3 != 0)] += 1
        for k in range(0 if multi else nb >> 1):
            u = np.uint64(2 * k)
            x, y = xb[u, 0] & last_mask, xb[u + np.uint64(1), 0] & last_mask
            lx, ly = lb[u, 0], lb[u + np.uint64(1), 0]
            h0[2 * _popcount(a0 ^ x) + int(lx == l0)] += 1
            h1[2 * _popcount(a1 ^ x) + int(lx == l1)] += 1
            h2[2 * _popcount(a2 ^ x) + int(lx == l2)] += 1
            h3[2 * _popcount(a3 ^ x) + int(lx == l3)] += 1
            g0[2 * _popcount(a0 ^ y) + int(ly == l0)] += 1
            g1[2 * _popcount(a1 ^ y) + int(ly == l1)] += 1
            g2[2 * _popcount(a2 ^ y) + int(ly == l2)] += 1
            g3[2 * _popcount(a3 ^ y) + int(ly == l3)] += 1
        j = nb - (nb & 1)
    while j < nb:
        h0[2 * _masked_distance(xq, i0, xb, j, last_mask) + _relevant_any(lq, i0, lb, j, multi)] += 1
        h1[2 * _masked_distance(xq, i1, xb, j, last_mask) + _relevant_any(lq, i1, lb, j, multi)] += 1
        h2[2 * _masked_distance(xq, i2, xb, j, last_mask) + _relevant_any(lq, i2, lb, j, multi)] += 1
        h3[2 * _masked_distance(xq, i3, xb, j, last_mask) + _relevant_any(lq, i3, lb, j, multi)] += 1
        j += 1
    for t in range(QUERY_BLOCK):
        for c in range(2):
            for d in range(nbins):
                hist[t, c, 0, d] += keyed[t, c, 2 * d]
                hist[t, c, 1, d] += keyed[t, c, 2 * d + 1]


@numba.njit(cache=True)
def _segments(xb, lb, last_mask):
    """The database grouped by class id: codes (padding masked), each segment's class, its start offsets.

    A counting sort when the ids span at most 4 nb values (the usual 0..C - 1), else an argsort.
    """
    nb, words = xb.shape
    labels = lb[:, 0]
    low, high = labels.min(), labels.max()
    if -(1 << 62) <= low and high <= 1 << 62 and high - low < 4 * nb + 16:  # no overflow in high - low
        tally = np.zeros(high - low + 2, dtype=np.int64)
        for j in range(nb):
            tally[labels[j] - low + 1] += 1
        order = np.empty(nb, dtype=np.int64)
        for v in range(1, tally.shape[0]):
            tally[v] += tally[v - 1]  # tally[v]: first slot of value low + v
        for j in range(nb):
            v = labels[j] - low
            order[tally[v]] = j
            tally[v] += 1
    else:
        order = np.argsort(labels)
    xs = np.empty((nb, words), dtype=np.uint64)
    segments = 1
    for p in range(nb):
        j = order[p]
        for w in range(words - 1):
            xs[p, w] = xb[j, w]
        xs[p, words - 1] = xb[j, words - 1] & last_mask
        if p and labels[j] != labels[order[p - 1]]:
            segments += 1
    classes = np.empty(segments, dtype=np.int64)
    starts = np.empty(segments + 1, dtype=np.int64)
    s = 0
    for p in range(nb):
        if p == 0 or labels[order[p]] != labels[order[p - 1]]:
            classes[s] = labels[order[p]]
            starts[s] = p
            s += 1
    starts[segments] = nb
    return xs, classes, starts


@numba.njit(cache=True)
def _block_group(xq, lq, xb, lb, multi, skip, xs, classes, starts, g, group, tile, counts, relevant):
    """Histograms of query blocks ``g group .. (g + 1) group - 1``, the database scanned tile by tile.

    Every block of the group scans a tile (``tile`` items) before the next tile is read, so the
    database streams from memory once per group rather than once per block. The database is ``xs``
    grouped by class if it has rows, else ``xb`` in its order with labels ``lb``.
    """
    nq, nbins = counts.shape
    bits = nbins - 1
    last_mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - bits % 64) % 64)
    b0 = g * group
    b1 = min(b0 + group, (nq + QUERY_BLOCK - 1) // QUERY_BLOCK)
    hist = np.zeros((b1 - b0, QUERY_BLOCK, 2, 2, nbins), dtype=np.int64)
    if xs.shape[0]:
        for s in range(classes.shape[0]):
            for j in range(starts[s], starts[s + 1], tile):
                end = min(j + tile, starts[s + 1])
                for b in range(b0, b1):
                    _segment_tile(xq, lq, xs, classes[s], j, end, QUERY_BLOCK * b, hist[b - b0])
    else:
        for j in range(0, xb.shape[0], tile):
            end = min(j + tile, xb.shape[0])
            for b in range(b0, b1):
                _label_block(xq, lq, xb[j:end], lb[j:end], multi, last_mask, QUERY_BLOCK * b, hist[b - b0])
    for b in range(b0, b1):
        _block_finish(xq, xb, lq, lb, multi, skip, last_mask, QUERY_BLOCK * b, hist[b - b0], counts, relevant)


# The stable AP of many queries against one shared database (our design, measured in
# benchmarks/RESULTS.md): the histograms first (the blocked kernels above), then a block of
# QUERY_BLOCK queries walks the database once in its order, as scan_keys does for one query, so each
# database word and label loaded serves 4 queries and no per-query keys array goes through memory;
# GROUP_BLOCKS blocks share each database tile of TILE_WORDS items, as the histogram kernels' groups do.
# Queries are taken in label order, so a block's 4 queries usually share their class and each item's
# relevance is one compare. Sums are added in database order per query, as scan_keys adds them: the
# results are bitwise the per-query kernel's.


@numba.njit(cache=True, inline="always", error_model="numpy")
def _relevant_item(d, seen, seen_rel, start, rel_start, ks, sums, found):
    """A relevant item at distance ``d`` (already counted in ``seen``): scan_keys's sums, one query."""
    seen_rel[d] += 1
    _add_relevant(start[d] + seen[d], rel_start[d] + seen_rel[d], ks, sums, found)


# Bins a query takes in _stable_one_word_run's flat counters (one-word codes: at most 65 distances), so
# that every counter's offset is a constant and one base pointer serves the 4 queries' 2 copies.
_STRIDE = 128


@numba.njit(cache=True, inline="always", error_model="numpy")
def _relevant_at(at, seen, seen_rel, first, rel_first, k0, k1, sum0, sum1, hits0, hits1):
    """A relevant item in counter ``at`` (a query's bin), counted already in ``seen``'s even or odd copy.

    Its precision is added to the sums and hits of the cutoffs ``k0`` and ``k1`` that it is within.
    """
    seen_rel[at] += 1
    position = first[at] + seen[at] + seen[QUERY_BLOCK * _STRIDE + at]
    precision = (rel_first[at] + seen_rel[at]) / position
    if position <= k0:
        sum0 += precision
        hits0 += 1
    if position <= k1:
        sum1 += precision
        hits1 += 1
    return sum0, sum1, hits0, hits1


@numba.njit(cache=True, error_model="numpy")
def _stable_one_word_run(a, items, labels, label, seen, seen_rel, first, rel_first, k0, k1, acc, acc_hits):
    """:func:`_stable_group`'s loop over a tile: one-word codes, 4 queries of one class, 2 cutoffs at most.

    ``items``/``labels``: the tile's codes (padding masked) and class ids; ``a``: the 4 queries' words;
    ``label``: their class. The block's state goes from tile to tile: ``seen`` (2 x 4 x _STRIDE: each
    query counts even and odd items in 2 copies, so increments of a repeated bin do not wait on each
    other's store, as in :func:`_one_word_run`), ``seen_rel`` and the bucket starts ``first``/``rel_first``
    (4 x _STRIDE), all flat at constant offsets; ``acc``/``acc_hits`` [cutoff * 4 + query] are carried
    in scalars through the tile (so each sum is added in database order, bitwise the per-query kernel's).
    The loop's few pointers and the 4 query words then stay in registers: 2.2 cycles per pair with no
    relevant item on AMD EPYC Zen 4, against 3.1 with the sums in an array.
    """
    a0, a1, a2, a3 = a[0], a[1], a[2], a[3]
    m00, m10, m20, m30, m01, m11, m21, m31 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]
    h00, h10, h20, h30 = acc_hits[0], acc_hits[1], acc_hits[2], acc_hits[3]
    h01, h11, h21, h31 = acc_hits[4], acc_hits[5], acc_hits[6], acc_hits[7]
    block = QUERY_BLOCK * _STRIDE
    n = items.shape[0]
    for k in range(n + 1 >> 1):
        u = np.uint64(2 * k)  # unsigned indices: no negative-index wraparound in the loop
        for copy in range(2):  # the even item, then the odd one
            if copy and u == n:  # an odd tile's last item was an even one
                break
            x = items[u]
            d0, d1, d2, d3 = _popcount(a0 ^ x), _popcount(a1 ^ x), _popcount(a2 ^ x), _popcount(a3 ^ x)
            at = copy * block
            seen[at + d0] += 1
            seen[at + _STRIDE + d1] += 1
            seen[at + 2 * _STRIDE + d2] += 1
            seen[at + 3 * _STRIDE + d3] += 1
            if labels[u] == label:
                m00, m01, h00, h01 = _relevant_at(
                    d0, seen, seen_rel, first, rel_first, k0, k1, m00, m01, h00, h01
                )
                m10, m11, h10, h11 = _relevant_at(
                    _STRIDE + d1, seen, seen_rel, first, rel_first, k0, k1, m10, m11, h10, h11
                )
                m20, m21, h20, h21 = _relevant_at(
                    2 * _STRIDE + d2, seen, seen_rel, first, rel_first, k0, k1, m20, m21, h20, h21
                )
                m30, m31, h30, h31 = _relevant_at(
                    3 * _STRIDE + d3, seen, seen_rel, first, rel_first, k0, k1, m30, m31, h30, h31
                )
            u += np.uint64(1)
    acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7] = m00, m10, m20, m30, m01, m11, m21, m31
    acc_hits[0], acc_hits[1], acc_hits[2], acc_hits[3] = h00, h10, h20, h30
    acc_hits[4], acc_hits[5], acc_hits[6], acc_hits[7] = h01, h11, h21, h31


@numba.njit(cache=True)
def _stable_starts(rows, counts, relevant):
    """Per query of ``rows`` and distance: items and relevant items ranked before the bucket's first."""
    nbins = counts.shape[1]
    start = np.empty((QUERY_BLOCK, nbins), dtype=np.int64)
    rel_start = np.empty((QUERY_BLOCK, nbins), dtype=np.int64)
    for t in range(QUERY_BLOCK):
        n = 0
        r = 0
        for d in range(nbins):
            start[t, d] = n
            rel_start[t, d] = r
            n += counts[rows[t], d]
            r += relevant[rows[t], d]
    return start, rel_start


@numba.njit(cache=True)
def _stable_group(
    xq, lq, xb, lb, items, labels, multi, skip, last_mask, order, g, group, tile, ks, counts, relevant, out
):
    """Stable AP sums and hits of query blocks ``g group .. (g + 1) group - 1`` (in ``order``).

    Blocks of 4 one-word queries of one class (the common case; ``items``, ``labels``: the database's
    masked words and class ids, empty for longer codes or multi-hot labels) scan the database tile by
    tile (``tile`` items, in L2), every block of the group a tile before the next is read:
    :func:`_stable_one_word_run`. Other blocks (several classes, multi-hot labels, longer codes,
    excluded items, more than 2 cutoffs) take :func:`_stable_block`. ``out``: (ap_sum, hits), added to.
    """
    nb = xb.shape[0]
    nbins = counts.shape[1]
    b0 = g * group
    size = min(group, (order.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK - b0)
    block = QUERY_BLOCK * _STRIDE
    fast_rows = np.empty((size, QUERY_BLOCK), dtype=np.int64)
    words = np.empty((size, QUERY_BLOCK), dtype=np.uint64)
    classes = np.empty(size, dtype=np.int64)
    seen = np.zeros((size, 2 * block), dtype=np.int64)
    seen_rel = np.zeros((size, block), dtype=np.int64)
    first = np.zeros((size, block), dtype=np.int64)
    rel_first = np.zeros((size, block), dtype=np.int64)
    acc = np.zeros((size, 2 * QUERY_BLOCK), dtype=np.float64)
    acc_hits = np.zeros((size, 2 * QUERY_BLOCK), dtype=np.int64)
    fast = 0
    for b in range(b0, b0 + size):
        rows = _stable_rows(order, b)
        start, rel_start = _stable_starts(rows, counts, relevant)
        label = lq[rows[0], 0]
        one_label = not multi
        skipped = False
        for t in range(QUERY_BLOCK):
            one_label = one_label and lq[rows[t], 0] == label
            skipped = skipped or skip[rows[t]] >= 0
        if items.shape[0] and labels.shape[0] and one_label and not skipped and ks.shape[0] <= 2:
            fast_rows[fast] = rows
            classes[fast] = label
            for t in range(QUERY_BLOCK):
                words[fast, t] = xq[rows[t], 0]
                first[fast, t * _STRIDE : t * _STRIDE + nbins] = start[t]
                rel_first[fast, t * _STRIDE : t * _STRIDE + nbins] = rel_start[t]
            fast += 1
        else:
            _stable_block(xq, lq, xb, lb, multi, skip, last_mask, rows, start, rel_start, ks, out)
    k0 = ks[0] if ks.shape[0] else -1
    k1 = ks[1] if ks.shape[0] > 1 else -1
    for j in range(0, nb, tile):
        end = min(j + tile, nb)
        for f in range(fast):
            _stable_one_word_run(
                words[f], items[j:end], labels[j:end], classes[f], seen[f], seen_rel[f], first[f],
                rel_first[f], k0, k1, acc[f], acc_hits[f],
            )
    for f in range(fast):
        sums = acc[f].reshape(2, QUERY_BLOCK).T.copy()
        found = acc_hits[f].reshape(2, QUERY_BLOCK).T.copy()
        _stable_write(fast_rows[f], sums, found, out)


@numba.njit(cache=True)
def _stable_block(xq, lq, xb, lb, multi, skip, last_mask, rows, start, rel_start, ks, out):
    """Stable AP sums and hits of the 4 queries ``rows`` (repeats allowed), item by item.

    Any code length, labels and cutoffs, and excluded items. ``start``/``rel_start``: :func:`_stable_starts`.
    """
    nb, words = xb.shape
    nbins = start.shape[1]
    seen = np.zeros((QUERY_BLOCK, nbins), dtype=np.int64)  # items of bucket d so far
    seen_rel = np.zeros((QUERY_BLOCK, nbins), dtype=np.int64)
    sums = np.zeros((QUERY_BLOCK, ks.shape[0]), dtype=np.float64)
    found = np.zeros((QUERY_BLOCK, ks.shape[0]), dtype=np.int64)
    i0, i1, i2, i3 = rows[0], rows[1], rows[2], rows[3]
    a0, a1, a2, a3 = seen[0], seen[1], seen[2], seen[3]
    e0, e1, e2, e3 = seen_rel[0], seen_rel[1], seen_rel[2], seen_rel[3]
    s0, s1, s2, s3 = start[0], start[1], start[2], start[3]
    t0, t1, t2, t3 = rel_start[0], rel_start[1], rel_start[2], rel_start[3]
    one_label = not multi and lq[i0, 0] == lq[i1, 0] and lq[i0, 0] == lq[i2, 0] and lq[i0, 0] == lq[i3, 0]
    label = lq[i0, 0]
    skipped = max(skip[i0], skip[i1], skip[i2], skip[i3]) >= 0
    for j in range(nb):
        if words == 1:
            x = xb[j, 0] & last_mask
            d0 = _popcount(xq[i0, 0] ^ x)
            d1 = _popcount(xq[i1, 0] ^ x)
            d2 = _popcount(xq[i2, 0] ^ x)
            d3 = _popcount(xq[i3, 0] ^ x)
        else:
            d0 = _masked_distance(xq, i0, xb, j, last_mask)
            d1 = _masked_distance(xq, i1, xb, j, last_mask)
            d2 = _masked_distance(xq, i2, xb, j, last_mask)
            d3 = _masked_distance(xq, i3, xb, j, last_mask)
        if one_label:
            r0 = r1 = r2 = r3 = lb[j, 0] == label
        else:
            r0 = _relevant_any(lq, i0, lb, j, multi) == 1
            r1 = _relevant_any(lq, i1, lb, j, multi) == 1
            r2 = _relevant_any(lq, i2, lb, j, multi) == 1
            r3 = _relevant_any(lq, i3, lb, j, multi) == 1
        if skipped:  # an item left out of a query's list counts for nothing there
            k0, k1, k2, k3 = j != skip[i0], j != skip[i1], j != skip[i2], j != skip[i3]
            a0[d0] += k0
            a1[d1] += k1
            a2[d2] += k2
            a3[d3] += k3
            r0, r1, r2, r3 = r0 and k0, r1 and k1, r2 and k2, r3 and k3
        else:
            a0[d0] += 1
            a1[d1] += 1
            a2[d2] += 1
            a3[d3] += 1
        if r0:
            _relevant_item(d0, a0, e0, s0, t0, ks, sums[0], found[0])
        if r1:
            _relevant_item(d1, a1, e1, s1, t1, ks, sums[1], found[1])
        if r2:
            _relevant_item(d2, a2, e2, s2, t2, ks, sums[2], found[2])
        if r3:
            _relevant_item(d3, a3, e3, s3, t3, ks, sums[3], found[3])
    _stable_write(rows, sums, found, out)


@numba.njit(cache=True)
def _stable_write(rows, sums, found, out):
    """Add a block's sums and hits (4 x cutoffs) to ``out = (ap_sum, hits)``, repeated rows left out."""
    ap_sum, hits = out
    for t in range(QUERY_BLOCK):
        if t and rows[t] == rows[t - 1]:  # a repeat past the last query
            break
        for c in range(ap_sum.shape[1]):
            ap_sum[rows[t], c] += sums[t, c]
            hits[rows[t], c] += found[t, c]


@numba.njit(cache=True, inline="always")
def _stable_rows(order, b):
    """The 4 query rows of block ``b`` in ``order``; past the last query, repeats of it."""
    last = order.shape[0] - 1
    rows = np.empty(QUERY_BLOCK, dtype=np.int64)
    for t in range(QUERY_BLOCK):
        rows[t] = order[min(QUERY_BLOCK * b + t, last)]
    return rows


# Each kernel comes twice: parallel over queries, and serial for small work (PARALLEL_MIN_PAIRS).


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
def _stats_parallel(
    dist, xq, banks, bank_of, lq, lb, skip, multi, ks, stable, counts, relevant, ap_sum, hits
):
    for i in prange(counts.shape[0]):
        xb = banks[bank_of[i]]
        _stats_row(dist, xq, xb, lq, lb, i, skip[i], multi, ks, stable, counts, relevant, ap_sum, hits)


@numba.njit(cache=True)
def _stats_serial(dist, xq, banks, bank_of, lq, lb, skip, multi, ks, stable, counts, relevant, ap_sum, hits):
    for i in range(counts.shape[0]):
        xb = banks[bank_of[i]]
        _stats_row(dist, xq, xb, lq, lb, i, skip[i], multi, ks, stable, counts, relevant, ap_sum, hits)


@numba.njit(cache=True, parallel=True)
def _blocks_parallel(xq, lq, xb, lb, multi, skip, xs, classes, starts, group, tile, counts, relevant):
    groups = ((counts.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK + group - 1) // group
    for g in prange(groups):
        _block_group(xq, lq, xb, lb, multi, skip, xs, classes, starts, g, group, tile, counts, relevant)


@numba.njit(cache=True)
def _blocks_serial(xq, lq, xb, lb, multi, skip, xs, classes, starts, group, tile, counts, relevant):
    groups = ((counts.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK + group - 1) // group
    for g in range(groups):
        _block_group(xq, lq, xb, lb, multi, skip, xs, classes, starts, g, group, tile, counts, relevant)


@numba.njit(cache=True, parallel=True)
def _stable_groups_parallel(
    xq, lq, xb, lb, items, labels, multi, skip, last_mask, order, group, tile, ks, counts, relevant, out
):
    groups = ((order.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK + group - 1) // group
    for g in prange(groups):
        args = (items, labels, multi, skip, last_mask, order, g, group, tile, ks, counts, relevant, out)
        _stable_group(xq, lq, xb, lb, *args)


@numba.njit(cache=True)
def _stable_groups_serial(
    xq, lq, xb, lb, items, labels, multi, skip, last_mask, order, group, tile, ks, counts, relevant, out
):
    groups = ((order.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK + group - 1) // group
    for g in range(groups):
        args = (items, labels, multi, skip, last_mask, order, g, group, tile, ks, counts, relevant, out)
        _stable_group(xq, lq, xb, lb, *args)


_KERNELS = {
    "hamming": (_hamming_parallel, _hamming_serial),
    "rank": (_rank_parallel, _rank_serial),
    "stats": (_stats_parallel, _stats_serial),
    "blocks": (_blocks_parallel, _blocks_serial),
    "stable_groups": (_stable_groups_parallel, _stable_groups_serial),
}


def _launch(kernel: str, pairs: int, *args: Any) -> None:
    parallel, serial = _KERNELS[kernel]
    (parallel if pairs >= PARALLEL_MIN_PAIRS else serial)(*args)


def hamming(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """int32 (nq, nb) distances between packed uint64 codes."""
    out = np.empty((xq.shape[0], xb.shape[0]), dtype=np.int32)
    _launch("hamming", out.size, xq, xb, out)
    return out


def rank(xq: np.ndarray, xb: np.ndarray, bits: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable top ``k`` of packed uint64 codes: int32 distances and int64 indices (nq, k)."""
    D = np.empty((xq.shape[0], k), dtype=np.int32)
    I = np.empty((xq.shape[0], k), dtype=np.int64)  # noqa: E741 (faiss' name)
    _launch("rank", xq.shape[0] * xb.shape[0], xq, xb, bits + 1, D, I)
    return D, I


def stats_into(
    dist: np.ndarray | None,
    xq: np.ndarray | None,
    xb: np.ndarray | None,
    lq: np.ndarray,
    lb: np.ndarray,
    multi: bool,
    ks: np.ndarray,
    stable: bool,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    skip: np.ndarray | None = None,
    bank_of: np.ndarray | None = None,
) -> None:
    """Fill ``out = (counts, relevant, ap_sum, hits)`` of every query (see ``_stats_row``).

    Args:
        dist: int32 (nq, nb) distances (faiss), or None to compute them from ``xq`` and ``xb``.
        xq: packed query codes uint64 (nq, W), or None with ``dist``.
        xb: packed database codes uint64 (nb, W), or (nq, nb, W) for one database per query; None with
            ``dist``.
        lq: query labels from ``label_words`` int64 (nq, LW).
        lb: database labels int64 (nb, LW).
        multi: whether labels are multi-hot words.
        ks: int64 stable cutoffs.
        stable: whether to compute the stable AP sums and hits.
        out: ``counts``, ``relevant`` int64 (nq, bits + 1), ``ap_sum`` float64 and ``hits`` int64
            (nq, len(ks)), zero-filled for the sums.
        skip: int64 (nq,): the database item left out of each query's list (-1: none); None for none.
        bank_of: int64 (nq,): the database of each query when ``xb`` is (nd, nb, W); None for database
            ``i`` for query ``i``.
    """
    nq = out[0].shape[0]
    if dist is None:
        dist = np.zeros((0, 0), dtype=np.int32)
    else:
        xq = np.zeros((0, 0), dtype=np.uint64)
        xb = np.zeros((0, 0), dtype=np.uint64)
    if xb.ndim == 2:
        banks, bank_of = xb[None], np.zeros(nq, dtype=np.int64)
    else:
        banks = xb
        bank_of = np.arange(nq, dtype=np.int64) if bank_of is None else bank_of
    skip = np.full(nq, -1, dtype=np.int64) if skip is None else np.ascontiguousarray(skip, dtype=np.int64)
    pairs = nq * lb.shape[0]
    xq, banks = np.ascontiguousarray(xq), np.ascontiguousarray(banks)
    if BLOCKED and dist.shape[0] == 0 and banks.shape[0] == 1 and nq >= QUERY_BLOCK:
        # Many queries against one database: the blocked kernels (see QUERY_BLOCK), histograms first.
        counts, relevant = out[0], out[1]
        xb = banks[0]
        if not multi and nq >= SEGMENT_MIN_QUERIES:
            bits = counts.shape[1] - 1
            last_mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - bits % 64) % 64)
            xs, classes, starts = _segments(xb, lb, last_mask)
        else:
            xs, classes, starts = np.zeros((0, 1), dtype=np.uint64), lb[:0, 0], np.zeros(1, dtype=np.int64)
        # Blocks per group (sharing each database tile): GROUP_BLOCKS, fewer if the parallel kernel
        # would have fewer than 4 groups a thread.
        group = GROUP_BLOCKS
        if pairs >= PARALLEL_MIN_PAIRS:
            blocks = (nq + QUERY_BLOCK - 1) // QUERY_BLOCK
            group = max(1, min(GROUP_BLOCKS, blocks // (4 * numba.get_num_threads())))
        tile = max(TILE_WORDS // xb.shape[1], 1)
        args = (xq, lq, xb, lb, multi, skip, xs, classes, starts, group, tile, counts, relevant)
        _launch("blocks", pairs, *args)
        if stable:
            bits = counts.shape[1] - 1
            last_mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - bits % 64) % 64)
            # Label order (stable): a block's queries then share their class, its relevance one compare.
            order = np.argsort(lq[:, 0], kind="stable") if not multi else np.arange(nq, dtype=np.int64)
            items = xb[:, 0] & last_mask if xb.shape[1] == 1 else np.zeros(0, dtype=np.uint64)
            labels = np.ascontiguousarray(lb[:, 0]) if not multi else np.zeros(0, dtype=np.int64)
            args = (xq, lq, xb, lb, items, labels, multi, skip, last_mask, order, group, tile, ks)
            args += (counts, relevant)
            _launch("stable_groups", pairs, *args, (out[2], out[3]))
        return
    _launch("stats", pairs, dist, xq, banks, bank_of, lq, lb, skip, multi, ks, stable, *out)


def tie_aware_sums(
    counts: np.ndarray, relevant: np.ndarray, k: Any, harmonic: np.ndarray
) -> tuple[np.ndarray, ...]:
    """``_metrics.tie_aware_sums`` on numpy, compiled: the same expressions in the same order, bitwise.

    The vectorised form costs about 30 numpy calls (60 us for one query, an env's reward) against this
    kernel's few microseconds; tests check that both agree.
    """
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    relevant = np.ascontiguousarray(relevant, dtype=np.int64)
    if isinstance(k, int):  # np.broadcast_to costs more than the kernel for one query
        cutoffs = np.full(counts.shape[0], k, dtype=np.int64)
    else:
        cutoffs = np.ascontiguousarray(np.broadcast_to(np.asarray(k, dtype=np.int64), counts.shape[:1]))
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


@functools.lru_cache(maxsize=8)
def harmonic_block(length: int) -> np.ndarray:
    """Harmonic numbers ``H[0..length - 1]`` in float64 (compensated sums), read-only and cached."""
    table = _harmonic_kernel(length)
    table.flags.writeable = False
    return table
