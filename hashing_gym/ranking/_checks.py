"""Argument checks of the ranking functions: codes, labels, cutoffs, backends, histograms, packed words."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hashing_gym.validation import check_non_negative_int, check_positive_int

BACKENDS: tuple[str, ...] = ("numpy", "faiss", "torch")
TIES: tuple[str, ...] = ("stable", "average")
# Widths of the words that packed codes may use (numpy: 64 only; torch: the narrowest that holds a code).
WORD_BITS: tuple[int, ...] = (16, 32, 64)


class Data(NamedTuple):
    """Validated inputs of a metric: 0/1 uint8 codes and labels, plus the backend choice."""

    xq: np.ndarray
    yq: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    multi: bool
    backend: str
    device: Any

    @property
    def nb(self) -> int:
        """Number of database items."""
        return self.xb.shape[0]


def is_torch(array: Any) -> bool:
    """Whether ``array`` is a torch tensor (checked without importing torch)."""
    return type(array).__module__.startswith("torch")


def check_codes(codes: Any, name: str) -> np.ndarray:
    """0/1 codes (n, bits), n and bits >= 1, as contiguous uint8."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, bits) of 0/1, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    return check_binary(arr, name)


def check_binary(arr: np.ndarray, name: str) -> np.ndarray:
    """An array of 0/1 numbers (bool, integer or float) as contiguous uint8."""
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold the numbers 0 and 1, got dtype {arr.dtype}")
    # Unsigned integers: one comparison, one temporary (large databases are checked on every call).
    bad = arr > 1 if np.issubdtype(arr.dtype, np.unsignedinteger) else (arr != 0) & (arr != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must hold only 0 and 1, got {arr[where].item()!r} at index {where}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def check_code_pair(xq: Any, xb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Query and database codes of the same width."""
    xq = check_codes(xq, "query codes")
    xb = check_codes(xb, "database codes")
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(
            f"query and database codes must have the same number of bits, got {xq.shape[1]} and {xb.shape[1]}"
        )
    return xq, xb


def check_labels(labels: Any, n: int, name: str) -> np.ndarray:
    """Class ids int64 (n,) or multi-hot 0/1 uint8 (n, C)."""
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} (single-label, 1-D) must be integers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    elif arr.ndim == 2:
        if arr.shape[1] == 0:
            raise ValueError(f"{name} (multi-hot, 2-D) has no classes: shape {arr.shape}")
        arr = check_binary(arr, f"{name} (multi-hot)")
    else:
        raise ValueError(f"{name} must be 1-D (single-label) or 2-D (multi-hot), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the codes have {n}")
    return arr


def check_backend(backend: str, device: Any) -> None:
    """A known backend; a device only with the torch backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device is not None and backend != "torch":
        raise ValueError(f"device={device!r} is only used by backend='torch', got backend={backend!r}")


def check_ties(ties: str) -> None:
    """One of ``TIES``."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def check_cutoff(value: Any, name: str, n: int | None) -> int:
    """A positive integer, capped to ``n`` when given."""
    k = check_positive_int(value, name)
    return k if n is None else min(k, n)


def check_radius(radius: Any) -> int:
    """A non-negative integer."""
    return check_non_negative_int(radius, "radius")


def check_histogram(values: Any, name: str) -> Any:
    """Non-negative integer counts (nq, bits + 1): int64 numpy, or a torch tensor (shape checked only).

    Tensor values are not checked: that would wait for the device.
    """
    if is_torch(values):
        if values.ndim != 2 or values.shape[1] == 0:
            raise ValueError(f"{name} must be 2-D (nq, bits + 1), got shape {tuple(values.shape)}")
        return values
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D (nq, bits + 1), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold counts, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr)) if arr.dtype.kind == "f" else arr < 0
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must hold non-negative integer counts, got {arr[where].item()!r} at index {where}"
        )
    return arr.astype(np.int64)


def check_histogram_pair(counts: Any, relevant: Any) -> tuple[Any, Any]:
    """``counts`` and ``relevant`` histograms of one shape, ``relevant <= counts`` (numpy: checked)."""
    counts = check_histogram(counts, "counts")
    relevant = check_histogram(relevant, "relevant")
    if tuple(counts.shape) != tuple(relevant.shape):
        raise ValueError(
            f"counts and relevant must have the same shape, got {tuple(counts.shape)} and "
            f"{tuple(relevant.shape)}"
        )
    if not is_torch(counts) and (relevant > counts).any():
        q, d = np.argwhere(relevant > counts)[0]
        raise ValueError(f"relevant[{q}, {d}] = {relevant[q, d]} exceeds counts[{q}, {d}] = {counts[q, d]}")
    return counts, relevant


def prepare(xq: Any, yq: Any, xb: Any, yb: Any, backend: str, device: Any) -> Data:
    """Validated codes and labels of a metric call."""
    xq, xb = check_code_pair(xq, xb)
    check_backend(backend, device)
    yq = check_labels(yq, xq.shape[0], "query labels")
    yb = check_labels(yb, xb.shape[0], "database labels")
    if yq.ndim != yb.ndim:
        kinds = {1: "single-label (1-D)", 2: "multi-hot (2-D)"}
        raise ValueError(f"query labels are {kinds[yq.ndim]} but database labels are {kinds[yb.ndim]}")
    if yq.ndim == 2 and yq.shape[1] != yb.shape[1]:
        raise ValueError(
            f"query and database multi-hot labels must have the same number of classes, "
            f"got {yq.shape[1]} and {yb.shape[1]}"
        )
    return Data(xq, yq, xb, yb, yq.ndim == 2, backend, device)


def word_bits_of(words: Any) -> int:
    """The word width of packed codes from their dtype (uint64 or int64: 64; int32: 32; int16: 16)."""
    return {"uint64": 64, "int64": 64, "int32": 32, "int16": 16}.get(str(words.dtype).split(".")[-1], 0)


def check_packed(name: str, words: Any, bits: int, per_query: bool, padding: bool = True) -> None:
    """Packed codes (n, words) (or (nq, n, words) when ``per_query``) of ``bits``; numpy: padding checked."""
    torch_input = is_torch(words)
    width = word_bits_of(words) if torch_input else (64 if getattr(words, "dtype", None) == np.uint64 else 0)
    ndim = 3 if per_query else 2
    count = -(-bits // (width or 64))
    kind = "int16, int32 or int64 tensors" if torch_input else "uint64"
    if width == 0 or words.ndim not in (2, ndim) or words.shape[-1] != count:
        raise ValueError(
            f"{name} must be packed codes, {kind} (n, {count}) for {bits} bits from pack_codes, got "
            f"{getattr(words, 'dtype', type(words).__name__)} of shape {tuple(np.shape(words))}"
        )
    # Set padding bits would give distances above `bits`, out of the histograms' range.
    if (
        padding
        and not torch_input
        and bits % 64
        and words.size
        and (words[..., -1] >> np.uint64(bits % 64)).any()
    ):
        raise ValueError(f"{name} has bits set beyond bit {bits}: pack codes with pack_codes")


def check_packed_labels(lq: Any, lb: Any, nq: int, nb: int) -> None:
    """Class ids (n,) or packed multi-hot words (n, words), of one kind, one row per code."""
    if lq.ndim != lb.ndim or lq.ndim not in (1, 2) or (lq.ndim == 2 and lq.shape[1] != lb.shape[1]):
        raise ValueError(
            f"lq and lb must both be class ids (n,) or both packed multi-hot labels (n, words), "
            f"got shapes {tuple(lq.shape)} and {tuple(lb.shape)}"
        )
    if lq.shape[0] != nq or lb.shape[0] != nb:
        raise ValueError(
            f"labels must have one row per code, got {lq.shape[0]} and {lb.shape[0]} labels "
            f"for {nq} and {nb} codes"
        )
    if is_torch(lq):
        return
    if lq.ndim == 2 and (lq.dtype != np.uint64 or lb.dtype != np.uint64):
        raise ValueError(
            f"packed multi-hot labels must be uint64 from pack_codes, got {lq.dtype} and {lb.dtype}"
        )
    if lq.ndim == 1 and not (np.issubdtype(lq.dtype, np.integer) and np.issubdtype(lb.dtype, np.integer)):
        raise ValueError(f"class ids must be integers, got {lq.dtype} and {lb.dtype}")
