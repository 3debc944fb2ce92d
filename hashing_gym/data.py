"""Data sets and retrieval protocols for hashing: train, query and database splits.

`load_dataset` returns a `HashingDataset` holding three `Split`s (``train``, ``query`` and
``database``), each with ``features`` (float32 ``(n, D)``, C-contiguous, read-only) and ``labels``
(int64 ``(n,)`` class indices ``0..C-1`` for single-label data, uint8 ``(n, C)`` multi-hot for
multi-label data).

==========  ===========================================================================
name        what it is
==========  ===========================================================================
digits      scikit-learn's bundled 8x8 digits (1,797 images, 64 features, 10 classes)
blobs       synthetic Gaussian classes of any size and dimension, optionally multi-label
features    your own features and labels: arrays, or a ``.npz`` / ``.mat`` file
mnist       the four MNIST IDX files (optionally gzipped) in a folder you already have
cifar10     the CIFAR-10 python-pickle batches in a folder you already have (``trust_pickle=True``)
==========  ===========================================================================

Nothing is ever downloaded. Query items are drawn per class with ``np.random.default_rng(seed)``;
the database is everything else; train is the database unless a protocol says otherwise, in which
case train is a subset of the database. Multi-label data use the NUS-WIDE-style protocol: for each
class in turn, ``query_per_class`` not-yet-chosen items carrying that label join the query set.

Two protocols share the classes between learning and retrieval (``split_protocol``). ``"standard"``
(the default, the papers'): every split holds every class, so a method is scored on the classes it
learned, and encoding a plain classifier's output wins (Sablayrolles et al., "How should we evaluate
supervised hashing?", ICASSP 2017). ``"unseen-classes"`` (after that paper; the details are ours):
`split_classes` draws 75% of the classes (rounded down) with ``seed`` as *seen*; train keeps the
standard train split's items of the seen classes, query and database keep the standard query and
database items of the other (*held-out*) classes, so retrieval is among classes no method saw. Labels
are renumbered per side (train: ``0..S-1``; query and database: ``0..U-1``, their own numbering);
``seen_classes`` and ``held_out_classes`` map them back, and ``num_classes`` is ``S``. The seen
classes' standard queries are left out (a seen class trains on as many items as under the standard
protocol), and standardisation statistics come from the seen classes alone.

Standardisation (``standardize=True``, the default): each feature is centred and scaled with the
mean and standard deviation of the *train* split only, and the same statistics are applied to the
query and database splits. Each feature's standard deviation is floored at 0.1 times the mean
standard deviation over all features (and at 1e-6 if every feature is constant), so near-constant
features, such as pixels at image borders, cannot blow up to huge values in the query split.

Bad data raise errors that name the problem: NaN/inf features, labels that do not match the
features or are not exact integers, fewer than 2 classes, a class that would appear only in the
query split, a missing, corrupt or mistyped file (the error names the file). Nothing is silently
dropped, clipped or fixed.

Files are data, never code: ``.npz`` files are read without pickle (``allow_pickle=False``); the
CIFAR-10 batches are Python pickles, and unpickling a file can run any code it carries, so they
are read only with ``trust_pickle=True`` (``--trust-pickle`` on the command line), given per call.

Example:
    >>> from hashing_gym.data import load_dataset
    >>> ds = load_dataset("digits", seed=0)
    >>> ds.query.n, ds.database.n, ds.feature_dim, ds.num_classes, ds.multi_label
    (300, 1497, 64, 10, False)
    >>> ds.train is ds.database
    True
"""

from __future__ import annotations

import gzip
import inspect
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "SPLIT_PROTOCOLS",
    "DatasetOptionError",
    "HashingDataset",
    "Split",
    "load_dataset",
    "split_classes",
    "validate_features",
    "validate_labels",
]

DATASETS: tuple[str, ...] = ("digits", "blobs", "features", "mnist", "cifar10")
# How the classes are shared between learning and retrieval (load_dataset's split_protocol).
SPLIT_PROTOCOLS: tuple[str, ...] = ("standard", "unseen-classes")
# The unseen-classes protocol: the share of classes a method learns from (Sablayrolles et al. 2017: 75%).
SEEN_FRACTION = 0.75

_STD_FLOOR_RATIO = 0.1
_STD_EPS = 1e-6

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_PROTOCOLS = {"small": (100, 500), "full": (1000, None)}


class DatasetOptionError(TypeError):
    """A data set option that the data set does not take, or a required one that is missing.

    A ``TypeError``, as Python raises for a wrong keyword argument; the command lines catch this
    class (not every TypeError) and print its message as one ``error: ...`` line.
    """


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype}{tuple(array.shape)}"


@dataclass(frozen=True, repr=False)
class Split:
    """One split of a data set: features and labels of ``n`` items.

    Attributes:
        features: float32 ``(n, D)``, C-contiguous.
        labels: int64 ``(n,)`` class indices (single-label) or uint8 ``(n, C)`` multi-hot (multi-label).
    """

    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"Split features must be 2-D (n, D), got shape {self.features.shape}")
        if self.labels.shape[0] != self.features.shape[0]:
            raise ValueError(
                f"Split has {self.features.shape[0]} feature rows but {self.labels.shape[0]} labels"
            )

    @property
    def n(self) -> int:
        """Number of items (rows)."""
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={self.n}, features={_describe(self.features)}, labels={_describe(self.labels)})"


@dataclass(frozen=True, repr=False)
class HashingDataset:
    """A data set split for retrieval: learn on ``train``, search ``database`` with ``query``.

    Attributes:
        name: The data set's name, one of `DATASETS`.
        train: Items to learn the hash function from (the database itself, or a subset of it).
        query: Items whose neighbours are searched for; disjoint from the database.
        database: Items that are searched.
        num_classes: Number of classes ``C`` (under ``"unseen-classes"``: of the train split).
        multi_label: Whether labels are uint8 ``(n, C)`` multi-hot rather than int64 ``(n,)``.
        protocol: ``"standard"`` (every split draws from every class) or ``"unseen-classes"``
            (train holds the seen classes, query and database the others: `unseen_classes`).
        seen_classes: Under ``"unseen-classes"``, the classes of the train split, as indices of the
            standard protocol's labels (train label ``k`` is class ``seen_classes[k]``); else ``()``.
        held_out_classes: Under ``"unseen-classes"``, the classes of the query and database splits
            (their label ``k`` is class ``held_out_classes[k]``); else ``()``.
    """

    name: str
    train: Split
    query: Split
    database: Split
    num_classes: int
    multi_label: bool
    protocol: str = "standard"
    seen_classes: tuple[int, ...] = ()
    held_out_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        dims = {s.features.shape[1] for s in (self.train, self.query, self.database)}
        if len(dims) != 1:
            raise ValueError(f"train, query and database have different feature dimensions: {sorted(dims)}")
        # A multi-label item without a label has no relevant neighbour: the envs' rewards and the
        # metrics are undefined for it. load_dataset refuses it too; this catches hand-built splits.
        for split_name in ("train", "query", "database"):
            labels = getattr(self, split_name).labels
            if labels.ndim == 2:
                empty = ~labels.any(axis=1)
                if empty.any():
                    raise ValueError(
                        f"multi-label {split_name} labels: the item at index {int(np.argmax(empty))} has "
                        f"no label ({int(empty.sum())} of {labels.shape[0]} items have none); "
                        "every item needs one"
                    )

    @property
    def feature_dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.train.features.shape[1])

    def __repr__(self) -> str:
        classes = (
            ""
            if self.protocol == "standard"
            else f", protocol={self.protocol!r}, seen_classes={self.seen_classes}, "
            f"held_out_classes={self.held_out_classes}"
        )
        return (
            f"HashingDataset(name={self.name!r}, train={self.train}, query={self.query}, "
            f"database={self.database}, num_classes={self.num_classes}, multi_label={self.multi_label}"
            f"{classes})"
        )


# ---------------------------------------------------------------------------------------------------
# Validation


def validate_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """Check a feature matrix and return it as float32 ``(n, D)``, C-contiguous.

    The input is not modified; it is returned as is when already float32 and C-contiguous.

    Args:
        features: Array-like ``(n, D)`` of real numbers (bool, integer or floating dtype).
        name: What to call the array in error messages.

    Returns:
        The features as a float32 C-contiguous ``(n, D)`` array.

    Raises:
        ValueError: If the array is not 2-D, is empty, is not numeric, or holds NaN or inf
            (also values too large for float32).
    """
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, D), got {array.ndim}-D array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {array.shape}")
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = ~np.isfinite(array).all(axis=1)
    if bad_rows.any():
        raise ValueError(
            f"{name} hold NaN or inf (or values beyond float32 range) in {int(bad_rows.sum())} of "
            f"{array.shape[0]} rows; first bad row: {int(np.argmax(bad_rows))}"
        )
    return array


def validate_labels(labels: np.ndarray, num_rows: int | None = None, name: str = "labels") -> np.ndarray:
    """Check labels and return them in canonical form.

    Single-label data are a 1-D array of non-negative integers (a floating array is accepted when
    every value is a whole number that int64 holds exactly, as MATLAB files store them); they are
    returned as int64 with their values unchanged, so two distinct labels never become one class.
    Multi-label data are a 2-D 0/1 matrix ``(n, C)`` with at least one 1 per row; they are
    returned as uint8. A 2-D one-hot matrix stays multi-label.

    Args:
        labels: Array-like ``(n,)`` or ``(n, C)``.
        num_rows: If given, the number of feature rows the labels must match.
        name: What to call the array in error messages.

    Returns:
        int64 ``(n,)`` or uint8 ``(n, C)`` labels.

    Raises:
        ValueError: On a wrong dtype or number of dimensions, a length that differs from
            ``num_rows``, negative or fractional class labels, labels beyond int64 (such as 1e19,
            which int64 cannot hold: 1e19 and 2e19 would merge), multi-hot values other than 0/1,
            multi-label rows with no label, or fewer than 2 classes.
    """
    array = np.asarray(labels)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be integers (or 0/1 for multi-label), got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n,) or 2-D multi-hot (n, C), got shape {array.shape}")
    if num_rows is not None and array.shape[0] != num_rows:
        raise ValueError(f"{name} have {array.shape[0]} rows but features have {num_rows} rows")
    if array.shape[0] == 0:
        raise ValueError(f"{name} are empty")
    if array.dtype.kind == "f":
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            where = tuple(np.argwhere(fractional)[0].tolist())
            at = where[0] if len(where) == 1 else where
            raise ValueError(f"{name} must be whole numbers, got {array[where].item()!r} at index {at}")

    if array.ndim == 1:
        if array.min() < 0:
            first = int(np.argmax(array < 0))
            raise ValueError(
                f"{name} must be non-negative class labels, got {array[first].item()!r} at index {first}"
            )
        # int64 holds every label below 2**63 exactly (a whole float below 2**63 converts exactly);
        # larger ones (uint64, or floats such as 1e19) would wrap or saturate and merge classes.
        too_large = array >= 2.0**63 if array.dtype.kind == "f" else array > np.iinfo(np.int64).max
        if too_large.any():
            first = int(np.argmax(too_large))
            raise ValueError(
                f"{name} must be integers that int64 holds exactly (below 2**63), got "
                f"{array[first].item()!r} at index {first}"
            )
        out = array.astype(np.int64)
        num_classes = np.unique(out).size
        if num_classes < 2:
            raise ValueError(f"{name} need at least 2 classes, got {num_classes} (label {out[0]})")
        return out

    not_binary = (array != 0) & (array != 1)
    if not_binary.any():
        where = tuple(np.argwhere(not_binary)[0].tolist())
        raise ValueError(f"multi-label {name} must be 0/1, got {array[where].item()!r} at index {where}")
    out = array.astype(np.uint8)
    if out.shape[1] < 2:
        raise ValueError(f"multi-label {name} need at least 2 classes (columns), got {out.shape[1]}")
    empty = ~out.any(axis=1)
    if empty.any():
        raise ValueError(
            f"multi-label {name}: the item at index {int(np.argmax(empty))} has no label "
            f"({int(empty.sum())} of {out.shape[0]} items have none); every item needs one"
        )
    return out


def _check_flag(value: object, option: str) -> bool:
    # A string such as "False" is truthy: flags must be real booleans, or they would do the opposite.
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{option} must be True or False, got {value!r}")
    return bool(value)


def _check_count(value: object, option: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------
# Protocols: index arrays into a pooled set of items


class _Pool(NamedTuple):
    """All items of a data set and how they split (``train=None`` means train is the database)."""

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray | None


def _draw_per_class(
    codes: np.ndarray,
    candidates: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    role: str,
    classes: np.ndarray,
) -> np.ndarray:
    """Draw ``per_class`` of ``candidates`` (indices into ``codes``) from each class; sorted indices.

    ``codes`` are class indices ``0..C-1``; ``classes`` holds the original label of each, for messages.
    """
    sub = codes[candidates]
    order = np.argsort(sub, kind="stable")
    counts = np.bincount(sub, minlength=classes.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = []
    for code, (start, count) in enumerate(zip(starts, counts, strict=True)):
        if count < per_class:
            raise ValueError(
                f"class {classes[code]} has {count} items available for the {role} split, "
                f"fewer than {role}_per_class={per_class}"
            )
        chosen.append(rng.choice(candidates[order[start : start + count]], size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def _single_label_split(
    codes: np.ndarray,
    classes: np.ndarray,
    query_per_class: int,
    rng: np.random.Generator,
    train_per_class: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Query: ``query_per_class`` per class; database: the rest; train: database or a per-class subset."""
    everything = np.arange(codes.shape[0])
    query = _draw_per_class(codes, everything, query_per_class, rng, "query", classes)
    database = np.setdiff1d(everything, query, assume_unique=True)
    if database.size == 0:
        raise ValueError(f"query_per_class={query_per_class} takes every item; the database would be empty")
    train = None
    if train_per_class is not None:
        train = _draw_per_class(codes, database, train_per_class, rng, "train", classes)
    return query, database, train


def _multi_label_split(
    labels: np.ndarray, query_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, None]:
    """NUS-WIDE style: per class in turn, draw up to ``query_per_class`` unchosen items with that label."""
    chosen = np.zeros(labels.shape[0], dtype=bool)
    for c in range(labels.shape[1]):
        candidates = np.flatnonzero((labels[:, c] == 1) & ~chosen)
        take = min(query_per_class, candidates.size)
        chosen[rng.choice(candidates, size=take, replace=False)] = True
    if chosen.all():
        raise ValueError(f"query_per_class={query_per_class} takes every item; the database would be empty")
    return np.flatnonzero(chosen), np.flatnonzero(~chosen), None


def _check_database_classes(
    labels: np.ndarray,
    query: np.ndarray,
    database: np.ndarray,
    query_per_class: int,
    classes: np.ndarray | None = None,
) -> None:
    """Refuse a split whose query holds a class that the database lacks (it could retrieve nothing).

    ``labels``: class indices ``0..C-1`` (then ``classes`` holds their original values, for the
    message) or a multi-hot matrix (classes are its columns).
    """
    if labels.ndim == 1:
        num_classes = classes.size
        in_query = np.bincount(labels[query], minlength=num_classes) > 0
        in_database = np.bincount(labels[database], minlength=num_classes) > 0
    else:
        num_classes = labels.shape[1]
        in_query, in_database = labels[query].any(axis=0), labels[database].any(axis=0)
    only_query = np.flatnonzero(in_query & ~in_database)
    if only_query.size:
        code = int(only_query[0])
        name = f"class {classes[code]}" if classes is not None else f"class {code} (label column {code})"
        count = int((labels == code).sum()) if labels.ndim == 1 else int(labels[:, code].sum())
        raise ValueError(
            f"{name} would appear only in the query split: all {count} of its items are drawn as queries "
            f"(query_per_class={query_per_class}), so the database would hold none of them; lower "
            "query_per_class or give that class more items"
        )


def _pool(
    features: np.ndarray,
    labels: np.ndarray,
    query_per_class: int,
    rng: np.random.Generator,
    train_per_class: int | None = None,
) -> _Pool:
    """Validate features and labels, encode single labels as ``0..C-1``, and draw the split."""
    features = validate_features(features)
    labels = validate_labels(labels, num_rows=features.shape[0])
    query_per_class = _check_count(query_per_class, "query_per_class")
    if train_per_class is not None:
        train_per_class = _check_count(train_per_class, "train_per_class")
    if labels.ndim == 2:
        if train_per_class is not None:
            raise ValueError("train_per_class is only supported for single-label data")
        split = _multi_label_split(labels, query_per_class, rng)
        _check_database_classes(labels, split[0], split[1], query_per_class)
        return _Pool(features, labels, labels.shape[1], *split)
    classes, codes = np.unique(labels, return_inverse=True)
    codes = codes.astype(np.int64)
    split = _single_label_split(codes, classes, query_per_class, rng, train_per_class)
    _check_database_classes(codes, split[0], split[1], query_per_class, classes)
    return _Pool(features, codes, classes.size, *split)


def split_classes(
    num_classes: int, seed: int = 0, seen_fraction: float = SEEN_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """The seen and held-out classes of the ``"unseen-classes"`` protocol, as sorted class indices.

    ``floor(seen_fraction * num_classes)`` classes drawn without replacement with
    ``np.random.default_rng(seed)`` are seen (digits: 7 of 10); the others are held out. Each side
    needs at least 2 classes: a single seen class teaches nothing to tell apart, and with a single
    held-out class every database item is relevant to every query (mAP 1 for any code).

    >>> seen, held_out = split_classes(10, seed=0)
    >>> len(seen), len(held_out), sorted({*seen, *held_out}) == list(range(10))
    (7, 3, True)

    Raises:
        ValueError: if ``seen_fraction`` is not in (0, 1), or a side would hold fewer than 2
            classes (at 75%: data sets of fewer than 5 classes).
    """
    num_classes = _check_count(num_classes, "num_classes")
    fraction = float(seen_fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"seen_fraction must be in (0, 1), got {seen_fraction!r}")
    seen_count = int(np.floor(fraction * num_classes + 1e-9))  # (0.29 * 100 is 28.999...)
    held_out_count = num_classes - seen_count
    if seen_count < 2 or held_out_count < 2:
        raise ValueError(
            f"the unseen-classes protocol needs at least 2 seen and 2 held-out classes; {num_classes} "
            f"classes give {seen_count} seen ({fraction:.0%} of them, rounded down) and {held_out_count} "
            "held out: use a data set with more classes (at 75%, at least 5)"
        )
    order = np.random.default_rng(seed).permutation(num_classes)
    return np.sort(order[:seen_count]), np.sort(order[seen_count:])


class _Assembly(NamedTuple):
    """Index arrays into a pool and the labels of each split: what `load_dataset` copies out."""

    train: np.ndarray | None  # None: train is the database (the same Split object)
    query: np.ndarray
    database: np.ndarray
    train_labels: np.ndarray | None
    query_labels: np.ndarray
    database_labels: np.ndarray
    num_classes: int
    seen: tuple[int, ...] = ()
    held_out: tuple[int, ...] = ()


def _standard_assembly(pool: _Pool) -> _Assembly:
    labels = pool.labels
    train_labels = None if pool.train is None else labels[pool.train]
    return _Assembly(
        pool.train, pool.query, pool.database, train_labels, labels[pool.query], labels[pool.database],
        int(pool.num_classes),
    )  # fmt: skip


def _unseen_classes_assembly(pool: _Pool, name: str, seed: int) -> _Assembly:
    """The standard split restricted by class: train to the seen classes, query and database to the others."""
    if pool.labels.ndim == 2:
        raise ValueError(
            f"the unseen-classes protocol needs single-label data; {name} is multi-label (an item can "
            "carry a seen and a held-out class at once)"
        )
    seen, held_out = split_classes(pool.num_classes, seed)
    is_seen = np.zeros(pool.num_classes, dtype=bool)
    is_seen[seen] = True
    # Renumber each side 0..S-1 / 0..U-1: the train split is then an S-class data set like any other.
    number = np.empty(pool.num_classes, dtype=np.int64)
    number[seen], number[held_out] = np.arange(seen.size), np.arange(held_out.size)
    base_train = pool.database if pool.train is None else pool.train
    train = base_train[is_seen[pool.labels[base_train]]]
    query = pool.query[~is_seen[pool.labels[pool.query]]]
    database = pool.database[~is_seen[pool.labels[pool.database]]]
    return _Assembly(
        train, query, database,
        number[pool.labels[train]], number[pool.labels[query]], number[pool.labels[database]],
        int(seen.size), tuple(int(c) for c in seen), tuple(int(c) for c in held_out),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Loaders: each returns a _Pool; its keyword arguments are the data set's options


def _load_digits(rng: np.random.Generator, *, query_per_class: int = 30) -> _Pool:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    return _pool(features, labels, query_per_class, rng)


def _load_blobs(
    rng: np.random.Generator,
    *,
    num_classes: int = 10,
    n_per_class: int = 200,
    dim: int = 32,
    separation: float = 1.0,
    multi_label: bool = False,
    query_per_class: int = 10,
) -> _Pool:
    num_classes = _check_count(num_classes, "num_classes", minimum=2)
    multi_label = _check_flag(multi_label, "multi_label")
    n_per_class = _check_count(n_per_class, "n_per_class")
    dim = _check_count(dim, "dim")
    if isinstance(separation, bool) or not isinstance(separation, int | float | np.number):
        raise ValueError(f"separation must be a finite number >= 0, got {separation!r}")
    if not np.isfinite(separation) or separation < 0:
        raise ValueError(f"separation must be a finite number >= 0, got {separation!r}")
    centres = (rng.standard_normal((num_classes, dim)) * separation).astype(np.float32)
    n = num_classes * n_per_class
    if not multi_label:
        labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), n_per_class))
        features = centres[labels]
        features += rng.standard_normal((n, dim), dtype=np.float32)
        return _pool(features, labels, query_per_class, rng)

    # 1 to 3 distinct labels per item, drawn without replacement by shifting past earlier draws.
    count = rng.integers(1, min(3, num_classes) + 1, size=n)
    first = rng.integers(num_classes, size=n)
    second = rng.integers(num_classes - 1, size=n)
    second += second >= first
    low, high = np.minimum(first, second), np.maximum(first, second)
    third = rng.integers(max(num_classes - 2, 1), size=n)
    third += third >= low
    third += third >= high
    labels = np.zeros((n, num_classes), dtype=np.uint8)
    rows = np.arange(n)
    labels[rows, first] = 1
    labels[rows[count >= 2], second[count >= 2]] = 1
    labels[rows[count >= 3], third[count >= 3]] = 1
    features = centres[first]
    features[count >= 2] += centres[second[count >= 2]]
    features[count >= 3] += centres[third[count >= 3]]
    features /= count[:, None].astype(np.float32)
    features += rng.standard_normal((n, dim), dtype=np.float32)
    return _pool(features, labels, query_per_class, rng)


def _read_arrays(path: Path, feature_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            # numpy takes a file that is neither a zip nor a .npy for a pickle, and refuses it.
            raise ValueError(f"{path}: not a readable .npz archive (corrupt or another format)") from err
        if isinstance(archive, np.ndarray):
            raise ValueError(
                f"{path}: a single .npy array, not a .npz archive; "
                "save features and labels with np.savez(path, features=..., labels=...)"
            )
        with archive:
            keys = list(archive.files)
            try:
                found = {key: archive[key] for key in keys if key in (feature_key, label_key)}
            except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
                # ValueError also covers object arrays, which would need pickle (refused).
                raise ValueError(
                    f"{path}: corrupt .npz archive or an entry that needs pickle ({err})"
                ) from err
    elif suffix == ".mat":
        from scipy.io import loadmat

        try:
            contents = loadmat(path)
        except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
            raise ValueError(f"{path}: cannot read this .mat file with scipy ({err})") from None
        except Exception as err:  # scipy's parser raises many types on a corrupt file (IndexError, ...)
            raise ValueError(
                f"{path}: corrupt or unreadable .mat file ({type(err).__name__}: {err})"
            ) from err
        keys = [key for key in contents if not key.startswith("__")]
        found = {key: contents[key] for key in keys if key in (feature_key, label_key)}
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npz or .mat")
    missing = [key for key in (feature_key, label_key) if key not in found]
    if missing:
        raise ValueError(
            f"{path} has no key(s) {missing}; keys found: {keys}. "
            "Choose others with feature_key=... and label_key=..."
        )
    labels = found[label_key]
    if suffix == ".mat" and labels.ndim == 2 and 1 in labels.shape:
        labels = labels.ravel()  # MATLAB has no 1-D arrays: a row or column vector is a label vector
    return found[feature_key], labels


def _load_features(
    rng: np.random.Generator,
    *,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    path: str | os.PathLike[str] | None = None,
    feature_key: str = "features",
    label_key: str = "labels",
    query_per_class: int = 100,
) -> _Pool:
    if path is not None:
        if features is not None or labels is not None:
            raise ValueError("give either path=... or features=... and labels=..., not both")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        features, labels = _read_arrays(path, feature_key, label_key)
    elif features is None or labels is None:
        raise ValueError("the 'features' data set needs features=... and labels=..., or path=...")
    return _pool(features, labels, query_per_class, rng)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``magic`` 2051 for images, 2049 for labels)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as file:
            data = file.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({err})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file, {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: wrong IDX magic number {found}, expected {magic}")
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file, {len(data)} bytes but the header needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "overlong"
        raise ValueError(
            f"{path}: {kind} IDX file, {len(data)} bytes but the header (dims {dims}) says {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_files(
    folder: str | os.PathLike[str] | None, names: tuple[str, ...], dataset: str, *, gz: bool
) -> list[Path]:
    if folder is None:
        raise DatasetOptionError(
            f"data set {dataset!r} needs path=... (command line: --data-path), "
            f"a folder holding {', '.join(names)}"
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    found, missing = [], []
    for name in names:
        candidates = [folder / name] + ([folder / f"{name}.gz"] if gz else [])
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(name + ("[.gz]" if gz else ""))
        found.append(path)
    if missing:
        raise FileNotFoundError(f"{folder} lacks file(s): {', '.join(missing)}")
    return found


def _load_mnist(
    rng: np.random.Generator,
    *,
    path: str | os.PathLike[str] | None = None,
    query_per_class: int = 100,
    train_per_class: int | None = None,
) -> _Pool:
    train_images, train_labels, test_images, test_labels = _find_files(path, _MNIST_FILES, "mnist", gz=True)
    parts = []
    for images_path, labels_path in ((train_images, train_labels), (test_images, test_labels)):
        images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
        labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels"
            )
        parts.append((images.reshape(images.shape[0], -1), labels))
    features = np.concatenate([images for images, _ in parts]).astype(np.float32)
    features /= 255
    labels = np.concatenate([labels for _, labels in parts])
    return _pool(features, labels, query_per_class, rng, train_per_class)


def _read_cifar_batch(path: Path, trust_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    # pickle can run any code the file carries: only with the caller's explicit trust, per call.
    if not trust_pickle:
        raise ValueError(
            f"{path}: CIFAR-10 batches are Python pickles, and unpickling a file can run any code it "
            "carries; read them only if you trust the file (such as the official CIFAR-10 download), "
            "with trust_pickle=True (command line: --trust-pickle)"
        )
    try:
        with open(path, "rb") as file:
            batch = pickle.load(file, encoding="bytes")
    except Exception as err:  # a corrupt pickle raises many types (UnpicklingError, EOFError, KeyError, ...)
        raise ValueError(f"{path}: not a CIFAR-10 pickle batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: needs keys b'data' and b'labels'; keys found: {list(batch)}")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' must be uint8 (n, 3072), got {_describe(data)}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    return data, labels


def _load_cifar10(
    rng: np.random.Generator,
    *,
    path: str | os.PathLike[str] | None = None,
    protocol: str = "small",
    query_per_class: int | None = None,
    train_per_class: int | None = None,
    trust_pickle: bool = False,
) -> _Pool:
    if protocol not in _CIFAR_PROTOCOLS:
        raise ValueError(f"unknown CIFAR-10 protocol {protocol!r}; choose one of {sorted(_CIFAR_PROTOCOLS)}")
    default_query, default_train = _CIFAR_PROTOCOLS[protocol]
    if protocol == "full" and train_per_class is not None:
        raise ValueError("protocol 'full' trains on the whole database; train_per_class applies to 'small'")
    files = _find_files(path, _CIFAR_FILES, "cifar10", gz=False)
    batches = [_read_cifar_batch(p, trust_pickle) for p in files]
    features = np.concatenate([data for data, _ in batches]).astype(np.float32)
    features /= 255
    labels = np.concatenate([labels for _, labels in batches])
    return _pool(
        features,
        labels,
        default_query if query_per_class is None else query_per_class,
        rng,
        default_train if train_per_class is None else train_per_class,
    )


_LOADERS: dict[str, Callable[..., _Pool]] = {
    "digits": _load_digits,
    "blobs": _load_blobs,
    "features": _load_features,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
}


# ---------------------------------------------------------------------------------------------------
# Standardisation and assembly


def _standardize(train: np.ndarray, *others: np.ndarray) -> None:
    """Standardise ``train`` and ``others`` in place with train's mean and floored standard deviation."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    floor = max(_STD_FLOOR_RATIO * float(std.mean()), _STD_EPS)
    mean, scale = mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)
    for x in (train, *others):
        x -= mean
        x /= scale


def _frozen(features: np.ndarray, labels: np.ndarray) -> Split:
    features.flags.writeable = False
    labels.flags.writeable = False
    return Split(features, labels)


def load_dataset(
    name: str = "digits",
    *,
    seed: int = 0,
    standardize: bool = True,
    trust_pickle: bool = False,
    split_protocol: str = "standard",
    **options,
) -> HashingDataset:
    """Load a data set and split it into train, query and database.

    Query items are drawn per class with ``np.random.default_rng(seed)`` and never appear in the
    database; train is the database itself (the same `Split` object) unless a protocol draws a
    per-class subset of it. Returned arrays are read-only.

    Options by data set (an unknown option raises `DatasetOptionError`, a ``TypeError``):

    - ``digits``: ``query_per_class=30`` (300 queries, 1,497 database items, 64 features).
    - ``blobs``: ``num_classes=10``, ``n_per_class=200``, ``dim=32``, ``separation=1.0`` (class
      centres are ``N(0, separation**2)`` per coordinate; noise is ``N(0, 1)``),
      ``multi_label=False`` (if True, ``num_classes * n_per_class`` items with 1 to 3 labels each;
      features are the mean of their labels' centres plus noise), ``query_per_class=10``.
    - ``features``: ``features=X, labels=Y``, or ``path=`` a ``.npz`` or ``.mat`` file with keys
      ``feature_key="features"`` and ``label_key="labels"`` (a ``.mat`` row or column label vector
      counts as 1-D); ``query_per_class=100``.
    - ``mnist``: ``path=`` a folder with the four IDX files (each optionally ``.gz``); the 70,000
      images are pooled, pixels scaled to [0, 1]; ``query_per_class=100``,
      ``train_per_class=None`` (e.g. 500 to train on a per-class subset of the database).
    - ``cifar10``: ``path=`` a folder with ``data_batch_1``..``data_batch_5`` and ``test_batch``
      (Python pickles: read only with ``trust_pickle=True``), pixels scaled to [0, 1];
      ``protocol="small"`` (100 query and 500 train per class, database = all but the queries) or
      ``"full"`` (1,000 query per class, train = database = the rest); ``query_per_class`` and
      ``train_per_class`` override the protocol's.

    Single labels become int64 class indices ``0..C-1`` in the sorted order of their values
    (1-based MATLAB labels become 0-based). 2-D 0/1 labels are multi-label (uint8 multi-hot, even if
    one-hot) and use the NUS-WIDE-style protocol: for each class in turn, up to
    ``query_per_class`` not-yet-chosen items carrying that label join the query set.

    ``split_protocol="unseen-classes"`` (single-label data of at least 5 classes) then keeps, of
    that split, the train items of the seen classes and the query and database items of the
    held-out ones (`split_classes`: 75% of the classes seen, drawn with ``seed``); labels are
    renumbered per side and ``seen_classes`` / ``held_out_classes`` say which classes they are.

    >>> ds = load_dataset("digits", seed=0, split_protocol="unseen-classes")
    >>> ds.train.n, ds.query.n, ds.database.n, ds.num_classes, ds.seen_classes, ds.held_out_classes
    (1053, 90, 444, 7, (2, 3, 4, 5, 6, 7, 9), (0, 1, 8))

    With ``standardize=True`` each feature is centred and scaled by the mean and standard deviation
    of the train split alone, applied to all three splits; each standard deviation is floored at
    0.1 times the mean standard deviation over features (at least 1e-6), so near-constant train
    features (border pixels) stay bounded in the query split. ``standardize=False`` leaves the
    features as loaded, as float32.

    Args:
        name: One of `DATASETS`.
        seed: Seed of the generator drawing the split (and the synthetic ``blobs`` data).
        standardize: Whether to standardise features with train statistics.
        trust_pickle: Whether files that only pickle can read (the CIFAR-10 batches) may be
            unpickled. Unpickling runs any code a file carries, so this is False unless the caller
            trusts the files; a data set that reads no pickle ignores it.
        split_protocol: ``"standard"`` or ``"unseen-classes"`` (`SPLIT_PROTOCOLS`; the module
            docstring says what each is).
        **options: Data-set options, listed above.

    Returns:
        The `HashingDataset`.

    Raises:
        ValueError: On an unknown name, bad option values, bad data (NaN/inf features, labels not
            matching the features or not exact integers, fewer than 2 classes, a class with fewer
            items than asked for or only in the query split), corrupt or mistyped files (the
            message names the file), CIFAR-10 pickles without ``trust_pickle=True``, an unknown
            ``split_protocol``, and ``"unseen-classes"`` on multi-label data or too few classes.
        DatasetOptionError: (a ``TypeError``) On an option the data set does not take, or a
            missing required one.
        FileNotFoundError: On a missing file or folder.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    _check_flag(standardize, "standardize")
    _check_flag(trust_pickle, "trust_pickle")
    if split_protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"split_protocol must be one of {SPLIT_PROTOCOLS}, got {split_protocol!r}")
    loader = _LOADERS[name]
    valid = [p for p in inspect.signature(loader).parameters if p not in ("rng", "trust_pickle")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DatasetOptionError(
            f"data set {name!r} takes no option(s) {unknown} (load_dataset keywords, --dataset-options "
            f"keys); valid options: {valid}"
        )
    if "trust_pickle" in inspect.signature(loader).parameters:
        options["trust_pickle"] = trust_pickle
    pool = loader(np.random.default_rng(seed), **options)
    if split_protocol == "unseen-classes":
        parts = _unseen_classes_assembly(pool, name, seed)
    else:
        parts = _standard_assembly(pool)

    # Fancy indexing copies, so the caller's arrays are never modified.
    query_x, database_x = pool.features[parts.query], pool.features[parts.database]
    train_x = database_x if parts.train is None else pool.features[parts.train]
    if standardize:
        _standardize(train_x, query_x, *(() if train_x is database_x else (database_x,)))
    database = _frozen(database_x, parts.database_labels)
    return HashingDataset(
        name=name,
        train=database if parts.train is None else _frozen(train_x, parts.train_labels),
        query=_frozen(query_x, parts.query_labels),
        database=database,
        num_classes=parts.num_classes,
        multi_label=pool.labels.ndim == 2,
        protocol=split_protocol,
        seen_classes=parts.seen,
        held_out_classes=parts.held_out,
    )
