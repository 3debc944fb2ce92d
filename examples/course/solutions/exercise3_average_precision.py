"""Exercise 3, reference solution: average precision of a ranking, and its tie-aware version from counts."""

from __future__ import annotations

import numpy as np


def average_precision(relevance: np.ndarray) -> float:
    """AP of a ranked list: ``relevance`` (n,) is 1 where the item at that rank is relevant.

    The mean, over relevant positions p, of the precision at p (relevant items in the first p / p);
    0 when nothing is relevant.
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    hits = relevance.sum()
    if hits == 0:
        return 0.0
    precision = np.cumsum(relevance) / np.arange(1, len(relevance) + 1)
    return float((precision * relevance).sum() / hits)


def tie_aware_ap(counts: np.ndarray, relevant: np.ndarray) -> float:
    """Expected AP over random orders within equal distances, from one query's histograms.

    ``counts[d]`` items lie at distance d, ``relevant[d]`` of them relevant. Inside bucket d (``n``
    items, ``r`` relevant, after ``N`` items of which ``R`` relevant) position j is relevant with
    probability ``r / n``; given that, the expected number of relevant items up to it is
    ``R + 1 + (j - 1)(r - 1)/(n - 1)``.
    Summing ``P(relevant) * E[hits] / position`` over every position and dividing by all relevant items
    gives the expected AP (the denominator is fixed, so the expectation passes through it).
    """
    counts = np.asarray(counts, dtype=np.int64)
    relevant = np.asarray(relevant, dtype=np.int64)
    total = relevant.sum()
    if total == 0:
        return 0.0
    expected_sum, before, relevant_before = 0.0, 0, 0
    for n, r in zip(counts.tolist(), relevant.tolist(), strict=True):
        if n and r:
            j = np.arange(1, n + 1)
            step = (r - 1) / (n - 1) if n > 1 else 0.0
            expected_hits = relevant_before + 1 + (j - 1) * step
            expected_sum += (r / n) * (expected_hits / (before + j)).sum()
        before += n
        relevant_before += r
    return float(expected_sum / total)
