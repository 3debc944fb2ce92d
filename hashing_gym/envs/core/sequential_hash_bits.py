r"""SequentialHashBits-v0's rules (DRLIH), once, batched, over numpy or torch arrays.

An episode encodes one item of a split in :math:`T = b / g` steps; step t (0-based) sets bits
:math:`[t g, (t + 1) g)` of its code to the action. Each row of a batch keeps a *code bank* (one
code per item of the split), the item's P positives and P negatives (rows of the bank), and the
Hamming distances :math:`d_{\pm}` from the item's code to them over the bits decided so far. With
m the margin, the triplet accuracy over all :math:`P \times P` (positive, negative) pairs is

.. math:: acc_t = \frac{1}{P^2} \sum_{i, j} \Big( [d^t_{-,j} - d^t_{+,i} > m]
          + \tfrac{1}{2} [d^t_{-,j} - d^t_{+,i} = m] \Big),
          \qquad r_t = acc_t - acc_{t-1}, \quad acc_0 = \tfrac{1}{2};

an item without a positive or a negative keeps :math:`acc = 1/2`. The episode terminates after T
steps, and the finished code replaces the item's row of the bank. A step adds only the new
group's differences to the kept distances (O(P g) gathers instead of O(P b)), and counts pairs in
small integers, so the float64 accuracy is the same bit for bit on numpy and torch.

Shells: ``SequentialHashBitsEnv`` (one row, Gymnasium's API), ``SequentialHashBitsVectorEnv``
(``num_envs`` rows, numpy or torch on a device) and ``encode_sequential`` (the transition and the
observation over a batch of items). Randomness stays with the shells: they wrap their generators
in :class:`NumpyDraws` (one numpy stream for all rows), :class:`RowDraws` (a numpy stream per row:
``rng="per_env"`` and the single env) or :class:`TorchDraws` (a device stream), and
:func:`draw_start` draws from them in the same order and shapes as the shells always have: fresh
banks, then items, then references. A compiled step draws nothing itself: it takes the uniforms of
:func:`reference_uniforms` and scales them with :class:`ReplayDraws`, bit for bit as ``TorchDraws`` does.

The state is updated in place (``reset``, ``restart``, ``step``, ``set_bank``, ``decide``): the banks
are ``rows x N x b`` bytes, which a copy per step would cost more than the step itself. ``rows=None``
means every row of the state: slices (views) instead of gathers and scatters of index arrays.
``restart`` and the ``ended`` argument of ``step`` serve the masked vector step, which steps every
row and restarts some of them without an index array of those rows (on a device, which rows end is
not read back).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj

from hashing_gym.data import HashingDataset
from hashing_gym.device import namespace as _namespace
from hashing_gym.envs.base import resolve_dataset, resolve_split
from hashing_gym.envs.core.expert import expert_codewords
from hashing_gym.validation import check_bits, check_positive_int

START_ACCURACY = 0.5  # acc_0, and the accuracy of an item that has no triplet


@dataclass(frozen=True, eq=False)
class Params:
    """The constants of the MDP: code geometry, reward options, the split's features and label blocks.

    Array fields live where the state lives (numpy, or torch on a device: :func:`params_on`),
    except ``label_sets``, which stays numpy: multi-label references are drawn on the host.
    """

    bits: int
    """b, the code length."""
    group: int
    """g, the bits decided per step (divides b)."""
    pairs: int
    """P, positives and negatives per episode (0 for the encoder, which has no reward)."""
    margin: float
    """m, the Hamming margin of a correctly ordered pair."""
    flatten: bool
    """Whether observations are one float32 array instead of a dict."""
    num_items: int
    """N, the number of items of the split (the rows of a bank)."""
    features: Any
    """float32 (N, D) features of the split's items (None for the encoder)."""
    offsets: Any
    """int64 (g,): 0..g-1, the bit offsets inside a group."""
    multi_label: bool = False
    """Whether items carry sets of labels (positives share at least one)."""
    label_sets: np.ndarray | None = None
    """bool (N, C), multi-label only (numpy)."""
    labels: Any = None
    """int64 (N,) class of each item, single-label only."""
    order: Any = None
    """int64 (N,) items sorted by class (stable): class c is ``order[start[c] : start[c] + size[c]]``."""
    class_start: Any = None
    """int64 (C,) where each class's block starts in ``order``."""
    class_size: Any = None
    """int64 (C,) the size of each class."""
    rank: Any = None
    """int64 (N,) each item's position in ``order``."""
    codewords: Any = None
    """int8 (C, b): the class codewords the expert acts (``hashing_gym.envs.core.expert``); None: none."""
    item_class: Any = None
    """int64 (N,): the class whose codeword each item's expert acts (None for the encoder)."""

    @property
    def num_steps(self) -> int:
        """T = b / g, the episode length."""
        return self.bits // self.group


class State(NamedTuple):
    """The batched state: one row per episode (arrays of the namespace and device of the params).

    ``reference_start`` and ``distance``, which only the step reads, put the batch axis last: the
    step's gathers and its P x P pair count then run along the batch, numpy's fast (contiguous)
    axis, instead of along axes of 2P or P entries (5x faster at 4,096 rows).
    """

    bank: Any
    """uint8 (B, N, b): each row's code bank."""
    item: Any
    """int64 (B,): the item each row encodes."""
    references: Any
    """int64 (B, 2P): bank rows of the P positives then the P negatives (0 where ``valid`` is False)."""
    valid: Any
    """bool (B,): whether the item has a positive and a negative (a triplet)."""
    code: Any
    """int8 (B, b): the bits decided so far, undecided bits 0."""
    decided: Any
    """int8 (B, b): 1 where a bit is decided (a prefix)."""
    step: Any
    """int64 (B,): t, the number of groups decided."""
    row_numbers: Any
    """int64 (B,): 0..B-1, the index of every row (for gathers and scatters by row and column)."""
    reference_start: Any
    """int64 (2P, B): where each reference's code starts in the flattened banks, (row N + reference) b."""
    distance: Any
    """int8 (2P, B) (a wider integer for long codes: :func:`distance_dtype`): Hamming distances to
    the references over the decided bits."""
    accuracy: Any
    """float64 (B,): acc_t."""


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------


def check_group(bits: int, group: Any) -> int:
    """``group`` as an int, or ``ValueError`` if it is not a positive integer that divides ``bits``."""
    message = f"group must be a positive integer dividing bits={bits}, got {group!r}"
    try:
        group = check_positive_int(group, "group")
    except ValueError:
        raise ValueError(message) from None
    if bits % group:
        raise ValueError(f"{message} (bits={bits} is not a multiple of group={group}: a step decides g bits)")
    return group


def make_params(
    dataset: str | HashingDataset,
    split: str,
    bits: Any = 16,
    group: Any = 1,
    pairs: Any = 16,
    margin: Any = 0.0,
    flatten: bool = False,
) -> Params:
    """Validate the env's arguments (``ValueError`` naming the first bad one) and build its numpy params.

    Args:
        dataset: a data set name or a ``HashingDataset``.
        split: ``"train"``, ``"query"`` or ``"database"``.
        bits: code length b.
        group: bits decided per step; divides ``bits``.
        pairs: P, positives and negatives drawn per episode.
        margin: m in [0, bits).
        flatten: one float32 array observation instead of a dict.

    Returns:
        The params, arrays on the host (numpy).
    """
    data = resolve_dataset(dataset)
    items = resolve_split(data, split)
    bits = check_bits(bits)
    group = check_group(bits, group)
    pairs = check_positive_int(pairs, "pairs")
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.number)) or not 0 <= margin < bits:
        raise ValueError(f"margin must be a number in [0, bits={bits}), got {margin!r}")
    if items.n < 2:
        raise ValueError(f"the {split!r} split needs at least 2 items to compare, got {items.n}")
    geometry = {
        "bits": bits,
        "group": group,
        "pairs": pairs,
        "margin": float(margin),
        "flatten": bool(flatten),
        "num_items": items.n,
        "features": items.features,
        "offsets": np.arange(group, dtype=np.int64),
    }
    codewords, item_class = expert_codewords(data, items, bits)
    geometry.update(codewords=codewords, item_class=item_class)
    labels = items.labels
    if labels.ndim == 2:
        return Params(**geometry, multi_label=True, label_sets=labels.astype(bool))
    labels = labels.astype(np.int64)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=data.num_classes).astype(np.int64)
    rank = np.empty(items.n, dtype=np.int64)
    rank[order] = np.arange(items.n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return Params(**geometry, labels=labels, order=order, class_start=starts, class_size=sizes, rank=rank)


def encoder_params(bits: Any, group: Any, flatten: bool) -> Params:
    """Params of the transition alone (no split, no references), for ``encode_sequential``."""
    bits = check_bits(bits)
    group = check_group(bits, group)
    return Params(
        bits=bits,
        group=group,
        pairs=0,
        margin=0.0,
        flatten=bool(flatten),
        num_items=0,
        features=None,
        offsets=np.arange(group, dtype=np.int64),
    )


def params_on(params: Params, torch_device: Any) -> Params:
    """The params with their arrays as torch tensors on ``torch_device`` (None: unchanged, numpy)."""
    if torch_device is None:
        return params
    import torch

    def move(array: Any) -> Any:
        if array is None:
            return None
        # torch refuses to share read-only memory (e.g. a data set's features).
        array = np.ascontiguousarray(array)
        return torch.as_tensor(array if array.flags.writeable else array.copy(), device=torch_device)

    names = ("features", "offsets", "labels", "order", "class_start", "class_size", "rank")
    names += ("codewords", "item_class")
    return dataclasses.replace(params, **{name: move(getattr(params, name)) for name in names})


def init_state(params: Params, num_rows: int) -> State:
    """A state of ``num_rows`` rows, all zeros (banks included), in the params' namespace and device."""
    xp, where = _namespace(params.offsets), device(params.offsets)
    bank_items = params.num_items if params.pairs else 0  # the encoder keeps no bank

    def zeros(shape: tuple[int, ...], dtype: Any) -> Any:
        return xp.zeros(shape, dtype=dtype, device=where)

    return State(
        bank=zeros((num_rows, bank_items, params.bits), xp.uint8),
        item=zeros((num_rows,), xp.int64),
        references=zeros((num_rows, 2 * params.pairs), xp.int64),
        valid=zeros((num_rows,), xp.bool),
        code=zeros((num_rows, params.bits), xp.int8),
        decided=zeros((num_rows, params.bits), xp.int8),
        step=zeros((num_rows,), xp.int64),
        row_numbers=xp.arange(num_rows, device=where),
        reference_start=zeros((2 * params.pairs, num_rows), xp.int64),
        distance=zeros((2 * params.pairs, num_rows), distance_dtype(params, xp)),
        accuracy=xp.full((num_rows,), START_ACCURACY, dtype=xp.float64, device=where),
    )


# ------------------------------------------------------------------------------------------------
# Random draws: the shells' generators behind one interface
# ------------------------------------------------------------------------------------------------


class NumpyDraws:
    """Draws for all rows from one ``numpy.random.Generator`` (a vector env's ``rng="batched"`` stream).

    Every draw method takes a ``shape`` whose first axis is the rows; ``integers`` also takes the
    ``row`` that draws alone (multi-label references: one item at a time).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def codes(self, shape: tuple[int, ...]) -> np.ndarray:
        """uint8 uniform 0/1 of ``shape`` (banks: one per fresh row)."""
        return self.rng.integers(0, 2, size=shape, dtype=np.uint8)

    def integers(self, high: Any, shape: tuple[int, ...], row: int | None = None) -> np.ndarray:
        """int64 uniform in [0, high) of ``shape`` (``high``: an int, or an array broadcast to ``shape``)."""
        return self.rng.integers(0, high, size=shape)


class RowDraws:
    """Draws for rows that each own a ``numpy.random.Generator`` (``rng="per_env"``, the single env's row).

    Each row draws from its generator what it would draw alone, in the same order (bank, item,
    positives, negatives), so a row follows the single env step by step. Scalar bounds draw the
    same numbers as the (1, 1) array bounds of a batch of one, with a third of numpy's overhead.
    """

    def __init__(self, rngs: list[np.random.Generator], fresh: np.ndarray) -> None:
        self.rngs = rngs
        self.fresh = fresh  # bool (rows,): which rows draw a new bank

    def codes(self, shape: tuple[int, ...]) -> np.ndarray:
        """uint8 uniform 0/1 banks ``shape[1:]``, one from each fresh row's generator."""
        banks = [
            rng.integers(0, 2, size=shape[1:], dtype=np.uint8)
            for rng, new in zip(self.rngs, self.fresh, strict=True)
            if new
        ]
        return np.stack(banks)

    def integers(self, high: Any, shape: tuple[int, ...], row: int | None = None) -> np.ndarray:
        """int64 uniform in [0, high): ``row``'s draw of ``shape``, or one draw of ``shape[1:]`` per row.

        ``high``: an int, or an int array (rows, 1) of per-row bounds.
        """
        if row is not None:
            return self.rngs[row].integers(0, high, size=shape)
        if isinstance(high, int):  # one number per row (items)
            return np.array([rng.integers(high) for rng in self.rngs], dtype=np.int64)
        bounds = high[:, 0].tolist()  # high is (rows, 1): one bound per row
        return np.concatenate(
            [rng.integers(0, h, size=(1, *shape[1:])) for rng, h in zip(self.rngs, bounds, strict=True)]
        )


class TorchDraws:
    """Draws for all rows from a ``torch.Generator``, on its device (``rng="batched"`` on torch)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def codes(self, shape: tuple[int, ...]) -> Any:
        """uint8 uniform 0/1 of ``shape``."""
        import torch

        return torch.randint(
            0, 2, shape, generator=self.generator, device=self.generator.device, dtype=torch.uint8
        )

    def integers(self, high: Any, shape: tuple[int, ...], row: int | None = None) -> Any:
        """int64 uniform in [0, high): ``randint`` for an int bound, scaled uniforms for tensor bounds."""
        import torch

        if isinstance(high, int):
            return torch.randint(high, shape, generator=self.generator, device=self.generator.device)
        return _scale(self.uniforms(shape), high)

    def uniforms(self, shape: tuple[int, ...]) -> Any:
        """float64 uniform in [0, 1) of ``shape``: what :meth:`integers` scales for a tensor bound."""
        import torch

        return torch.rand(shape, generator=self.generator, device=self.generator.device, dtype=torch.float64)


class ReplayDraws:
    """Uniforms drawn beforehand (:meth:`TorchDraws.uniforms`), scaled as :meth:`TorchDraws.integers` does.

    For steps compiled by ``torch.compile`` (the vector env's ``fuse_step``), which take their random
    numbers as inputs: :func:`sample_references` over these draws gives, bit for bit, what it gives
    over the ``TorchDraws`` that drew them (:func:`reference_uniforms` draws them in its order).
    """

    def __init__(self, uniforms: tuple[Any, ...]) -> None:
        self.pending = list(uniforms)

    def integers(self, high: Any, shape: tuple[int, ...], row: int | None = None) -> Any:
        """int64 uniform in [0, high) from the next uniforms (tensor bounds only, as the references draw)."""
        if isinstance(high, int) or not self.pending:
            raise ValueError("ReplayDraws scales pre-drawn uniforms for tensor bounds only")
        uniforms = self.pending.pop(0)
        if tuple(uniforms.shape) != tuple(shape):
            raise ValueError(f"pre-drawn uniforms of shape {tuple(uniforms.shape)}, the draw asks {shape}")
        return _scale(uniforms, high)


def _scale(uniforms: Any, high: Any) -> Any:
    """int64 in [0, high) from float64 uniforms in [0, 1) (torch; ``high`` an int64 tensor broadcast)."""
    return (uniforms * high).long().clamp(max=high - 1)


Draws = NumpyDraws | RowDraws | TorchDraws | ReplayDraws


def sample_references(params: Params, items: Any, draws: Draws) -> Any:
    """P positives and P negatives per item, with replacement, never the item itself.

    Positives share a label with the item (multi-label: at least one), negatives share none.
    Single-label items draw a position inside their class block (skipping their own) and one
    outside it: two batched draws, in the namespace of ``items``. Multi-label items draw from their
    candidate lists one item at a time, on the host (numpy ``items`` and draws).

    Args:
        params: the MDP's params (single-label arrays in the namespace of ``items``).
        items: int64 (n,) rows of the split.
        draws: the caller's generator.

    Returns:
        int64 (n, 2P): positives then negatives; a row of -1 for an item without a triplet.
    """
    xp, n, pairs = _namespace(items), params.num_items, params.pairs
    count = items.shape[0]
    if params.multi_label:
        sets = params.label_sets
        references = np.full((count, 2 * pairs), -1, dtype=np.int64)
        for row in range(count):
            item = int(items[row])
            shared = (sets[item] & sets).any(axis=1)
            others = np.ones(n, dtype=bool)
            others[item] = False
            positives, negatives = np.flatnonzero(shared & others), np.flatnonzero(~shared & others)
            if len(positives) and len(negatives):
                references[row, :pairs] = positives[draws.integers(len(positives), (pairs,), row)]
                references[row, pairs:] = negatives[draws.integers(len(negatives), (pairs,), row)]
        return references
    if count == 0:
        return xp.full((0, 2 * pairs), -1, dtype=xp.int64, device=device(items))
    shape = (count, pairs)
    label = params.labels[items]
    start, size = params.class_start[label][:, None], params.class_size[label][:, None]
    # Positive: one of the size - 1 other members of the class, skipping the item's own position.
    # (clip, a method of both: array-api-compat's maximum with a Python int breaks torch.compile.)
    draw = draws.integers((size - 1).clip(min=1), shape)
    draw = draw + xp.astype(draw >= params.rank[items][:, None] - start, xp.int64)
    positives = params.order[(start + draw).clip(max=n - 1)]
    # Negative: one of the N - size positions outside the class block.
    draw = draws.integers((n - size).clip(min=1), shape)
    draw = draw + size * xp.astype(draw >= start, xp.int64)
    negatives = params.order[draw.clip(max=n - 1)]
    valid = (size > 1) & (size < n)
    return xp.where(valid, xp.concat([positives, negatives], axis=1), -1)


def reference_uniforms(params: Params, draws: TorchDraws, count: int) -> tuple[Any, Any]:
    """The uniforms :func:`sample_references` draws for ``count`` single-label items, in its order.

    Positives then negatives, float64 (count, P) each: :class:`ReplayDraws` over them gives the
    references that ``sample_references(params, items, draws)`` would have drawn.
    """
    if params.multi_label:
        raise ValueError("multi-label references are drawn on the host, one item at a time")
    shape = (count, params.pairs)
    return draws.uniforms(shape), draws.uniforms(shape)


def draw_start(
    params: Params,
    draws: Draws,
    count: int,
    fresh: int,
    items: Any = None,
    host_draws: NumpyDraws | RowDraws | None = None,
) -> tuple[Any, Any, Any]:
    """The random part of ``count`` resets, in this order: ``fresh`` new banks, the items, their references.

    Args:
        params: the MDP's params, in the namespace of ``draws``.
        draws: the caller's generator.
        count: how many episodes start.
        fresh: how many of them get a new bank (the first reset, and seeded ones).
        items: int64 (count,) given items (``options["index"]``), or None to draw them.
        host_draws: for multi-label data under ``TorchDraws``: the numpy generator that draws the
            references on the host.

    Returns:
        uint8 (fresh, N, b) banks (None if ``fresh`` is 0), int64 (count,) items and int64
        (count, 2P) references (-1 rows: no triplet).
    """
    banks = draws.codes((fresh, params.num_items, params.bits)) if fresh else None
    if items is None:
        items = draws.integers(params.num_items, (count,))
    if not params.multi_label or not isinstance(draws, TorchDraws):
        return banks, items, sample_references(params, items, draws)
    if host_draws is None:
        raise ValueError("multi-label references are drawn on the host: pass host_draws with TorchDraws")
    xp = _namespace(items)
    host_items = np.asarray(items.cpu()) if hasattr(items, "cpu") else np.asarray(items)
    references = sample_references(params, host_items, host_draws)
    return banks, items, xp.asarray(references, device=device(items))


# ------------------------------------------------------------------------------------------------
# The MDP
# ------------------------------------------------------------------------------------------------


def reset(params: Params, state: State, rows: Any, items: Any, references: Any) -> None:
    """Start episodes in ``rows``: no bit decided, accuracy 1/2 (in place).

    Args:
        params: the MDP's params.
        state: the state to update.
        rows: int64 (m,) rows of the state (distinct), or None for all of them.
        items: int64 (m,) the items they encode.
        references: int64 (m, 2P) from :func:`sample_references` (-1 rows: no triplet).
    """
    xp, at = _namespace(state.code), _at(rows)
    state.item[at] = items
    state.valid[at] = xp.all(references >= 0, axis=1)
    references = references.clip(min=0)
    state.references[at] = references
    start = (_row_numbers(state, rows)[:, None] * params.num_items + references) * params.bits
    state.reference_start[:, at] = xp.permute_dims(start, (1, 0))
    state.code[at] = 0
    state.decided[at] = 0
    state.step[at] = 0
    state.distance[:, at] = 0
    state.accuracy[at] = START_ACCURACY


def restart(params: Params, state: State, mask: Any, items: Any, references: Any) -> None:
    """:func:`reset` of the rows where ``mask``, as masked writes over every row (in place).

    The vector env's autoreset on a device: which rows restart stays on the device (no index
    array of them), and the other rows keep their state.

    Args:
        params: the MDP's params.
        state: the state to update.
        mask: bool (B,) the rows that restart.
        items: int64 (B,) the items they encode (read where ``mask`` only).
        references: int64 (B, 2P) from :func:`sample_references` (-1 rows: no triplet; read where
            ``mask`` only).
    """
    xp, column = _namespace(state.code), mask[:, None]
    state.item[...] = xp.where(mask, items, state.item)
    state.valid[...] = xp.where(mask, xp.all(references >= 0, axis=1), state.valid)
    references = references.clip(min=0)
    state.references[...] = xp.where(column, references, state.references)
    start = (state.row_numbers[:, None] * params.num_items + references) * params.bits
    state.reference_start[...] = xp.where(
        mask[None, :], xp.permute_dims(start, (1, 0)), state.reference_start
    )
    state.code[...] = xp.where(column, 0, state.code)
    state.decided[...] = xp.where(column, 0, state.decided)
    state.step[...] = xp.where(mask, 0, state.step)
    state.distance[...] = xp.where(mask[None, :], 0, state.distance)
    state.accuracy[...] = xp.where(mask, START_ACCURACY, state.accuracy)


def set_bank(params: Params, state: State, rows: Any, banks: Any) -> None:
    """Replace the banks of ``rows`` (None: all; one (N, b) bank or one each); recompute their distances."""
    xp, at = _namespace(state.code), _at(rows)
    state.bank[at] = banks
    reference_codes = state.bank[_row_numbers(state, rows)[:, None], state.references[at]]  # (m, 2P, b)
    differ = _differ(xp, reference_codes, state.code[at]) & (state.decided[at][:, None, :] != 0)
    distance = xp.permute_dims(xp.sum(differ, axis=-1, dtype=xp.int64), (1, 0))
    state.distance[:, at] = xp.astype(distance, state.distance.dtype)


def decide(params: Params, state: State, rows: Any, action: Any, ended: Any = None) -> Any:
    """The transition: set the next ``group`` bits of ``rows`` to ``action`` (in place).

    Args:
        params: the MDP's params.
        state: the state to update.
        rows: int64 (m,) rows of the state (distinct), or None for all of them; their episodes
            have not ended, unless ``ended`` says which have.
        action: 0/1 (m, g).
        ended: None, or bool (m,) the rows whose episode has ended (a masked vector step steps
            every row): they rewrite their last group instead of writing past the code's end, and
            the caller restarts them.

    Returns:
        int64 (g, m): the bit positions just decided (batch last).
    """
    xp, at = _namespace(state.code), _at(rows)
    t = state.step[at]
    if ended is not None:
        t = t.clip(max=params.num_steps - 1)
    columns = params.offsets[:, None] + t * params.group
    row_numbers = _row_numbers(state, rows)[None, :]
    state.code[row_numbers, columns] = xp.astype(action, xp.int8, copy=False).T
    # A 0-d array on the state's device, not the Python 1: torch copies a Python scalar from the host
    # for an index_put, a wait for the device at every step.
    state.decided[row_numbers, columns] = xp.ones((), dtype=state.decided.dtype, device=device(state.decided))
    state.step[at] = t + 1
    return columns


def step(
    params: Params, state: State, rows: Any, action: Any, ending: bool | None = None, ended: Any = None
) -> tuple[Any, Any, Any]:
    """Decide the next group of ``rows``; reward the accuracy gained; bank the codes that finish (in place).

    Takes the arguments of :func:`decide` (the transition it applies first), then adds the new
    group's differences to the kept distances and counts the ordered pairs. ``ending``: whether
    any of the rows ends on this step, where the caller knows it on the host (None: not known).
    ``ended``: as in :func:`decide`; those rows' rewards and accuracies mean nothing, they do not
    terminate again, and their banks are left as they are.

    Returns:
        float64 (m,) rewards :math:`acc_t - acc_{t-1}`, bool (m,) terminations and float64 (m,)
        accuracies :math:`acc_t`.
    """
    xp, at = _namespace(state.code), _at(rows)
    action = xp.astype(action, xp.uint8, copy=False)
    columns = decide(params, state, rows, action, ended)
    # Add the new group's differences: gather just those bits of the 2P reference codes.
    reference_bits = state.bank.reshape(-1)[state.reference_start[:, at] + columns[:, None, :]]  # (g, 2P, m)
    differ = (reference_bits != action.T[:, None, :]).sum(axis=0, dtype=state.distance.dtype)
    if rows is None:
        state.distance[...] += differ
        distance = state.distance
    else:
        distance = state.distance[:, rows] + differ
        state.distance[:, rows] = distance
    accuracy = _accuracy(params, xp, distance[: params.pairs], distance[params.pairs :], state.valid[at])
    reward = accuracy - state.accuracy[at]
    state.accuracy[at] = accuracy
    terminated = is_terminal(params, state.step[at])
    if ended is not None:
        terminated = terminated & ~ended
    # The finished code replaces the item's row of its bank. A masked write, so that a device need
    # not report which rows ended; skipped when none does (as ``ending`` or numpy tells). References
    # never include the item: the kept distances stay exact.
    if ending is None:
        ending = not isinstance(terminated, np.ndarray) or bool(terminated.any())
    if ending:
        row_numbers, items = _row_numbers(state, rows), state.item[at]
        banked = state.bank[row_numbers, items]
        code = xp.astype(state.code[at], xp.uint8)
        state.bank[row_numbers, items] = xp.where(terminated[:, None], code, banked)
    return reward, terminated, accuracy


def teacher_action(params: Params, state: State, rows: Any = None) -> Any:
    """The expert's next group of ``rows`` (None: all): int8 (m, g), or None where there is no expert.

    Our expert (``hashing_gym.envs.core.expert``; DRLIH names none): the bits of the item's class
    codeword that the row's next step decides, those of the last step once the episode has ended.
    """
    if params.codewords is None:
        return None
    if rows is None and isinstance(state.code, np.ndarray) and state.code.shape[0] == 1:
        # The single env's one row: plain indexing (a tenth of the array calls below, every step).
        start = min(int(state.step[0]), params.num_steps - 1) * params.group
        return params.codewords[params.item_class[state.item[0]], start : start + params.group][None].copy()
    xp, at = _namespace(state.code), _at(rows)
    # clip, a method of both: array-api-compat's minimum with a Python int breaks torch.compile's graph.
    t = state.step[at].clip(max=params.num_steps - 1)
    # One gather from the flattened codebook: row r takes codeword c's bits t g .. t g + g - 1.
    start = xp.take(params.item_class, state.item[at], axis=0) * params.bits + t * params.group
    return xp.reshape(params.codewords, (-1,))[start[:, None] + params.offsets[None, :]]


def is_terminal(params: Params, steps: Any) -> Any:
    """Whether episodes that have taken ``steps`` steps (an int or an array, any namespace) have ended."""
    return steps >= params.num_steps


def observation(features: Any, code: Any, decided: Any, step: Any, num_steps: int, flatten: bool) -> Any:
    """Batched observations: a dict (``code`` and ``decided`` copied) or one float32 (n, D + 2 b + T) array.

    Args:
        features: float32 (n, D).
        code: int8 (n, b), undecided bits 0.
        decided: int8 (n, b), 1 where a bit is set.
        step: int64 (n,) step index, in [0, T), shown as it is: an array that the caller does not change.
        num_steps: T (the size of the step one-hot when flattened).
        flatten: return one array instead of the dict.

    Returns:
        A dict of arrays (``features``, ``code``, ``decided``, ``step``) or a float32 array.
    """
    xp = _namespace(code)
    if flatten:
        one_hot = step[:, None] == xp.arange(num_steps, device=device(step))
        parts = [features, code, decided, one_hot]
        return xp.concat([xp.astype(part, xp.float32) for part in parts], axis=1)
    return {
        "features": features,
        # Copies by the arrays' own methods: under torch.compile (inductor on CUDA) asarray(copy=True) of
        # a state array that the same graph then resets in place came out as the reset array.
        "code": _copied(code),
        "decided": _copied(decided),
        "step": step,
    }


def _copied(array: Any) -> Any:
    """A copy of a numpy array or a torch tensor."""
    return array.copy() if isinstance(array, np.ndarray) else array.clone()


def observe(params: Params, state: State) -> Any:
    """What every row shows: its item's features, the code so far, the decided mask, the step.

    The step is shown as at most T - 1 (the last index the space holds), also after termination.
    """
    xp = _namespace(state.code)
    features = xp.take(params.features, state.item, axis=0)
    step = state.step.clip(max=params.num_steps - 1)  # (clip: see teacher_action)
    return observation(features, state.code, state.decided, step, params.num_steps, params.flatten)


# ------------------------------------------------------------------------------------------------
# The reward of finished codes, and the triplet accuracy itself
# ------------------------------------------------------------------------------------------------


def accuracies(params: Params, bank: Any, codes: Any, references: Any) -> Any:
    """:math:`acc_t` of codes after each step t = 1..T against one bank (nothing changes).

    Only the bits decided by step t count at step t, so a partly decided code (later bits 0)
    gives the right :math:`acc_t` for every t it has reached.

    Args:
        params: the MDP's params.
        bank: uint8 (N, b).
        codes: 0/1 (n, b).
        references: int64 (n, 2P) from :func:`sample_references` (-1 rows: no triplet).

    Returns:
        float64 (n, T).
    """
    xp = _namespace(bank)
    n, pairs = codes.shape[0], params.pairs
    valid = xp.all(references >= 0, axis=1)
    differ = _differ(xp, bank[xp.maximum(references, 0)], codes)  # (n, 2P, b)
    per_group = xp.sum(
        xp.reshape(differ, (n, 2 * pairs, params.num_steps, params.group)), axis=3, dtype=xp.int64
    )
    distance = xp.permute_dims(xp.cumulative_sum(per_group, axis=2), (1, 0, 2))  # (2P, n, T)
    return _accuracy(params, xp, distance[:pairs], distance[pairs:], valid[:, None])


def rewards(params: Params, bank: Any, codes: Any, references: Any) -> Any:
    """Per-step rewards :math:`acc_t - acc_{t-1}` (:math:`acc_0 = 1/2`) of codes: float64 (n, T)."""
    accuracy = accuracies(params, bank, codes, references)
    xp = _namespace(accuracy)
    start = xp.full((accuracy.shape[0], 1), START_ACCURACY, dtype=xp.float64, device=device(accuracy))
    return accuracy - xp.concat([start, accuracy[:, :-1]], axis=1)


def triplet_accuracy(d_pos: Any, d_neg: Any, margin: float = 0.0) -> Any:
    r"""Fraction of (positive, negative) pairs that a code orders correctly; ties count one half.

    Every positive is compared with every negative (all :math:`P \times P` pairs): a pair scores 1
    if :math:`d_{neg} - d_{pos} > m`, 1/2 if :math:`d_{neg} - d_{pos} = m` and 0 otherwise.

    Args:
        d_pos: distances (..., P) from the item's code to its positives' codes (numpy or torch).
        d_neg: distances (..., P) from the item's code to its negatives' codes.
        margin: the margin m (0: a plain ordering test).

    Returns:
        float64 (...): the accuracy of each row.

    >>> float(triplet_accuracy(np.array([1, 2]), np.array([2, 3])))  # pairs: 1<2, 1<3, 2=2, 2<3
    0.875
    """
    d_pos = d_pos if is_array_api_obj(d_pos) else np.asarray(d_pos)
    d_neg = d_neg if is_array_api_obj(d_neg) else np.asarray(d_neg)
    xp = array_namespace(d_pos, d_neg)
    gap = d_neg[..., None, :] - d_pos[..., :, None]
    if xp.isdtype(gap.dtype, "integral"):
        return _ordered_fraction(xp, gap, math.floor(margin), float(margin).is_integer(), (-2, -1))
    return _ordered_fraction(xp, gap - margin, 0, True, (-2, -1))


def _at(rows: Any) -> Any:
    """The index of ``rows`` on the batch axis: all of them (a slice: views, no copies) when None."""
    return slice(None) if rows is None else rows


def _row_numbers(state: State, rows: Any) -> Any:
    """``rows`` as an index array (0..B-1 when None), for gathers and scatters by (row, column)."""
    return state.row_numbers if rows is None else rows


def _differ(xp: Any, reference_codes: Any, codes: Any) -> Any:
    """Where each of the R reference codes of row i differs from code i: bool (n, R, b)."""
    return reference_codes != xp.astype(codes, xp.uint8)[:, None, :]


def distance_dtype(params: Params, xp: Any) -> Any:
    """The smallest signed integer that holds the distances plus the margin (the pair count's gaps)."""
    largest = params.bits + math.floor(params.margin)
    return xp.int8 if largest < 1 << 7 else xp.int16 if largest < 1 << 15 else xp.int64


def _accuracy(params: Params, xp: Any, d_pos: Any, d_neg: Any, valid: Any) -> Any:
    """:math:`acc` from distances (P, ...) to the positives and to the negatives; 1/2 where not ``valid``."""
    # For an integer gap: gap > m iff gap > floor(m); gap == m only when m is an integer. The
    # threshold goes on the P positives' distances, not on the P x P gaps.
    threshold = math.floor(params.margin)
    if threshold:
        d_pos = d_pos + threshold
    gap = d_neg[None] - d_pos[:, None]  # (P, P, ...)
    # Counts up to 2 P^2: int16 sums are 4x faster than int64 ones on numpy.
    count = xp.int16 if 2 * params.pairs**2 < 1 << 15 else xp.int64
    accuracy = _ordered_fraction(xp, gap, 0, params.margin.is_integer(), (0, 1), count)
    return xp.where(valid, accuracy, START_ACCURACY)


def _ordered_fraction(
    xp: Any, gap: Any, threshold: int, ties: bool, axis: tuple[int, int], count: Any = None
) -> Any:
    """Mean over ``axis`` of 1 (gap > threshold), 1/2 (gap == threshold if ``ties``), else 0.

    ``count``: the integer dtype of the sums (None: the default), wide enough for 2 x the pairs.

    The count 2 wins + ties is an exact integer, divided once: the same float64 as a mean of
    sign(gap - threshold) + 1, halved (halving is exact, so dividing by 2 x pairs rounds the same).
    """
    pairs = gap.shape[axis[0]] * gap.shape[axis[1]]
    if threshold:
        gap = gap - threshold
    if ties:  # sum(sign + 1) = sum(sign) + pairs: one reduction, no pass for the + 1
        # numpy's own ufunc where it can: array-api-compat's sign wrapper costs ~1.5 us a call.
        sign = np.sign if isinstance(gap, np.ndarray) else xp.sign
        doubled = sign(gap).sum(axis=axis, dtype=count) + pairs
    else:
        doubled = 2 * (gap > 0).sum(axis=axis, dtype=count)
    return xp.astype(doubled, xp.float64) / (2 * pairs)
