"""Checks of the arguments that several layers share (bits, counts, code and feature matrices).

One function per kind of argument, so that every environment, encoder, ranking call and trainer
refuses the same mistake with the same ``ValueError`` message.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


def _check_int(value: Any, name: str, minimum: int, kind: str) -> int:
    """``value`` as an int >= ``minimum``, else ``ValueError`` saying it must be a ``kind`` integer."""
    number = None if isinstance(value, (bool, np.bool_)) else _index(value)
    if number is None or number < minimum:
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return number


def _index(value: Any) -> int | None:
    """``operator.index(value)``, or None for a non-integer."""
    try:
        return int(operator.index(value))
    except TypeError:
        return None


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int, or ``ValueError`` if it is not a positive integer (bools refused)."""
    return _check_int(value, name, 1, "positive")


def check_non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int, or ``ValueError`` if it is not a non-negative integer (bools refused)."""
    return _check_int(value, name, 0, "non-negative")


def check_bits(bits: Any) -> int:
    """``bits`` (the code length) as an int, or ``ValueError`` if it is not a positive integer."""
    return check_positive_int(bits, "bits")


def check_code_matrix(codes: Any, num_items: int, bits: int, name: str = "codes") -> np.ndarray:
    """A copy of ``codes`` as uint8 (num_items, bits), or ``ValueError`` naming what is wrong.

    Integer or bool arrays of 0/1 are accepted; nothing is cast silently from floats or clipped.
    """
    arr = np.asarray(codes)
    expected = (num_items, bits)
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape {expected} (items, bits), got shape {arr.shape}")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be an integer or bool array of 0/1, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must hold only 0 and 1, got {arr[where].item()!r} at index {where}")
    return np.array(arr, dtype=np.uint8)


def check_feature_matrix(features: Any, name: str = "features") -> np.ndarray:
    """``features`` as a float32 (n, D) array, or ``ValueError`` if it is not 2-D, empty or not finite."""
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items, dimension) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{name} must be finite, got NaN or inf in row {row}")
    return arr
