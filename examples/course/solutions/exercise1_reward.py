"""Exercise 1, reference solution: DRLH's label-embedding reward, and why the flip rewards telescope."""

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
    d = distances(code, codebook)
    positive = np.asarray(positive, dtype=bool)
    d_pos = d[positive].min()
    d_neg = d[~positive].mean() if (~positive).any() else 0.0
    return float(d_pos - d_neg)


def flip_reward(code: np.ndarray, bit: int, codebook: np.ndarray, positive: np.ndarray) -> float:
    """DRLH Eq. 1: the margin before flipping ``bit`` minus the margin after."""
    flipped = np.array(code, copy=True)
    flipped[bit] ^= 1
    return margin(code, codebook, positive) - margin(flipped, codebook, positive)


def terminate_reward(
    code: np.ndarray, codebook: np.ndarray, positive: np.ndarray, eta: int, sigma: float
) -> float:
    """DRLH Eq. 2: ``+sigma`` if the code is within ``eta`` of its nearest class codeword, else ``-sigma``."""
    d_pos = distances(code, codebook)[np.asarray(positive, dtype=bool)].min()
    return sigma if d_pos <= eta else -sigma


def episode_flip_return(
    start: np.ndarray, end: np.ndarray, codebook: np.ndarray, positive: np.ndarray
) -> float:
    """The sum of the flip rewards of any flip sequence from ``start`` to ``end``.

    Each flip reward is ``m(e_t) - m(e_{t+1})``, so the sum telescopes to ``m(e_0) - m(e_T)``: it depends
    on the two end points only, not on the path (nor on its length).
    """
    return margin(start, codebook, positive) - margin(end, codebook, positive)
