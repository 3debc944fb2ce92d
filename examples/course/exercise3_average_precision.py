"""Exercise 3: average precision of a ranking, and its tie-aware version from per-distance counts.

Task sheet: exercise3_average_precision.md. Fill in the parts between ``YOUR CODE`` markers, then grade
with ``python -m examples.course.check 3 examples/course/exercise3_average_precision.py``.
"""

from __future__ import annotations

import numpy as np


def average_precision(relevance: np.ndarray) -> float:
    """AP of a ranked list: ``relevance`` (n,) is 1 where the item at that rank is relevant.

    The mean, over relevant positions p, of the precision at p (relevant items in the first p / p);
    0 when nothing is relevant.
    """
    # ----- YOUR CODE (3a) ------------------------------------------------------------------------------
    raise NotImplementedError("3a: average_precision")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def tie_aware_ap(counts: np.ndarray, relevant: np.ndarray) -> float:
    """Expected AP over random orders within equal distances, from one query's histograms.

    ``counts[d]`` database items lie at Hamming distance d from the query, ``relevant[d]`` of them
    relevant. Do not enumerate orders: a bucket may hold thousands of items.
    """
    # ----- YOUR CODE (3b) ------------------------------------------------------------------------------
    raise NotImplementedError("3b: tie_aware_ap")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------
