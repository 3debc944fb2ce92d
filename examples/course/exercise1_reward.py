"""Exercise 1: DRLH's label-embedding reward, and why the flip rewards telescope.

Task sheet: exercise1_reward.md. Fill in the parts between ``YOUR CODE`` markers, then grade with
``python -m examples.course.check 1 examples/course/exercise1_reward.py``.
"""

from __future__ import annotations

import numpy as np


def distances(code: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Hamming distance from ``code`` (bits,) to every class codeword of ``codebook`` (C, bits): int (C,)."""
    return (np.asarray(codebook) != np.asarray(code)).sum(axis=1)


def margin(code: np.ndarray, codebook: np.ndarray, positive: np.ndarray) -> float:
    """``d_pos - d_neg`` of a code for an item whose classes are ``positive`` (bool (C,)).

    ``d_pos`` is the distance to the nearest of the item's class codewords, ``d_neg`` the mean distance
    to the other classes' codewords (0 when the item carries every class).
    """
    # ----- YOUR CODE (1a) ------------------------------------------------------------------------------
    raise NotImplementedError("1a: margin")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def flip_reward(code: np.ndarray, bit: int, codebook: np.ndarray, positive: np.ndarray) -> float:
    """DRLH Eq. 1: the margin before flipping ``bit`` minus the margin after (do not modify ``code``)."""
    # ----- YOUR CODE (1b) ------------------------------------------------------------------------------
    raise NotImplementedError("1b: flip_reward")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def terminate_reward(
    code: np.ndarray, codebook: np.ndarray, positive: np.ndarray, eta: int, sigma: float
) -> float:
    """DRLH Eq. 2: ``+sigma`` if the code is within ``eta`` of its nearest class codeword, else ``-sigma``."""
    # ----- YOUR CODE (1b) ------------------------------------------------------------------------------
    raise NotImplementedError("1b: terminate_reward")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------


def episode_flip_return(
    start: np.ndarray, end: np.ndarray, codebook: np.ndarray, positive: np.ndarray
) -> float:
    """The sum of the flip rewards of any flip sequence from ``start`` to ``end``, without the path."""
    # ----- YOUR CODE (1c) ------------------------------------------------------------------------------
    raise NotImplementedError("1c: episode_flip_return")
    # ----- END OF YOUR CODE ----------------------------------------------------------------------------
