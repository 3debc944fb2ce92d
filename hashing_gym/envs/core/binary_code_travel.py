r"""BinaryCodeTravel-v0's rules (DRLH), once, for a batch of travels through the hypercube.

Each row of the batch is one episode: an item ``index`` of the split, its current code
:math:`e_t \in \{0, 1\}^b`, the last ``history`` flips (bit indices, newest first) and the
Hamming distances from :math:`e_t` to every class codeword :math:`w_c`. Action :math:`k < b`
flips bit :math:`k`; action :math:`b` terminates. With :math:`d_{pos}` the distance to the
item's target codeword (its class's; for a multi-label item the nearest of its classes', lowest
class index on ties) and :math:`d_{neg}` the mean distance to the other classes' codewords (0 if
the item carries every class):

- a flip earns Eq. 1, :math:`(d^t_{pos} - d^t_{neg}) - (d^{t+1}_{pos} - d^{t+1}_{neg})`;
- terminating earns Eq. 2, :math:`+\sigma` if :math:`d^t_{pos} \le \eta`, else :math:`-\sigma`;
- an episode truncates after ``max_steps`` steps unless that step terminates;
- the teacher (ours: DRLH names guided exploration by an expert but not the expert) flips, while
  :math:`d_{pos} > 0`, the wrong bit (one where the code differs from the target codeword) whose
  flip earns the largest Eq. 1 reward, lowest index on ties, and terminates at :math:`d_{pos} = 0`.
  A wrong bit's flip lowers :math:`d_{pos}` by exactly one and its reward does not depend on the
  other bits, so this order maximises the discounted return of the flips; going on to
  :math:`d_{pos} = 0` instead of stopping at :math:`\eta` earns every remaining flip reward
  (each at least :math:`(1 - \gamma)\sigma` for the defaults) before the :math:`+\sigma`.

A flip changes the distance to codeword :math:`c` by +1 where the code agreed with :math:`w_c` at
that bit and by -1 where it differed, so a step adds one row of a precomputed table instead of
recomputing the distances (``Params.flip_delta``).

The functions take and return arrays of one namespace (``array_api_compat``: numpy, or torch on
any device), so ``BinaryCodeTravelEnv`` (one row), ``BinaryCodeTravelVectorEnv`` (a batch of
``num_envs``, numpy or torch) and ``encode_batch`` (a batch of items) run the same code.
Randomness is drawn by those shells and passed in (``reset``'s ``code``).

Batch shapes: a batch has one leading axis of rows, ``(n,)``; on numpy a single row may also be
given without it, batch shape ``()`` (``index`` a numpy integer, ``code`` of shape ``(b,)``), and
every state field and result then comes back without the row axis (numpy scalars where a batch
has ``(n,)``). That is how the single env steps: numpy's operations on scalars cost a tenth of
those on arrays of one row, and a single env pays them at every step. The rules are the same
code either way; only the small indexing helpers below (``_pick``, ``_bits_at``, ``_push``,
``_select``) say how they read a row.

>>> import numpy as np
>>> from hashing_gym.envs.core import binary_code_travel as core
>>> params = core.make_params("digits", "train", bits=16, init="zeros")
>>> state = core.reset(params, np.array([0, 1]), np.zeros((2, 16), dtype=np.int8))
>>> state, reward, terminated, truncated = core.step(params, state, core.teacher_action(params, state))
>>> state.code.shape, terminated.tolist()
((2, 16), [False, False])
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from hashing_gym.codes import error_correcting_radius, label_codebook
from hashing_gym.data import HashingDataset
from hashing_gym.device import namespace as _xp
from hashing_gym.envs.base import label_mask, resolve_dataset, resolve_split
from hashing_gym.validation import check_bits, check_positive_int

INITS: tuple[str, ...] = ("random", "zeros")


@dataclass(frozen=True)
class Params:
    """The constants of one BinaryCodeTravel-v0 MDP (arrays on one device, see ``params_on``)."""

    bits: int
    """Code length b; action b terminates."""
    eta: int
    """Termination threshold on d_pos."""
    sigma: float
    """Termination reward."""
    max_steps: int
    """Truncation after this many steps."""
    history: int
    """Number of past flips in the observation."""
    flatten: bool
    """Whether ``observe`` returns one float32 array instead of a dict."""
    init: str
    """Start code: ``"random"`` (drawn by the shell) or ``"zeros"``."""
    radius: int
    """Error-correcting radius R of the codebook."""
    multi_label: bool
    """Whether items may carry several classes (then d_pos is the nearest positive codeword)."""
    codebook: Any
    """uint8 (C, b): one codeword per class."""
    features: Any
    """float32 (N, D): the split's features."""
    labels: Any
    """int64 (N,): each item's class (single-label data; zeros for multi-label data)."""
    positive: Any
    """bool (N, C): the classes each item carries."""
    num_negative: Any
    """int64 (N,): number of classes each item does not carry."""
    other_classes: Any
    """float64: C - 1, the number of negative classes of a single-label item (a numpy scalar, and a
    tensor on torch, so that int64 divided by it is float64; not a 0-d array, which numpy divides by
    at an array's cost)."""
    codewords: Any
    """int8 (C, b): the codebook, to compare with codes."""
    flip_delta: Any
    """int64 (2 (b + 1), C): change of the distances when bit k flips from value v (row 2 k + v); rows
    2 b and 2 b + 1 (the terminate action) are 0."""
    flip_total: Any
    """int64 (2 (b + 1),): ``flip_delta`` summed over the classes: the change of the distances' sum."""
    stop_reward: Any
    """float64 (b + 1,): the terminate reward (Eq. 2) at each d_pos, +sigma up to eta, -sigma above."""
    one_hot: Any
    """int8 (b + 1, b): one-hot rows of the bits; row b (the terminate action, an empty history slot) is 0."""
    flip_gain: Any
    """float32 (C, b): 1 - 2 w_ck, the change of the distance to codeword c when bit k flips from 0
    (the multi-label teacher's matrix product)."""
    codeword_weight: Any
    """int64 (C,): the number of ones of each codeword (the distance from the all-zeros code)."""
    teacher_rank: Any
    """int8 (int32 beyond 127 bits) (C, b): single-label teacher's preference among the wrong bits of
    an item of class c, b for the best, down to 1 (see ``teacher_action``); the codes' dtype, so that
    the teacher's product casts nothing."""
    no_gain: int
    """A teacher score below every wrong bit's (-C): marks the bits that are already right."""
    teacher_stop: Any
    """int64 (b + 1,): added to the teacher's best bit at each d_pos: b at d_pos = 0 (where no bit is
    wrong, so the best bit is 0), else 0."""


class State(NamedTuple):
    """A batch of episodes (leading axis: the rows; none for one row on numpy, see the module docstring)."""

    index: Any
    """int64 (n,): the item of each row."""
    code: Any
    """int8 (n, b): the current codes."""
    history: Any
    """int64 (n, H): the last flipped bits, newest first; b marks an empty slot."""
    distances: Any
    """int64 (n, C): Hamming distances from the code to every codeword."""
    total: Any
    """int64 (n,): the sum of ``distances`` (kept by the steps, so that d_neg needs no sum)."""
    steps: Any
    """int64 (n,): steps taken in the episode."""
    target: Any
    """int64 (n,): the target class (the nearest positive one)."""
    d_pos: Any
    """int64 (n,): distance to the target codeword."""
    d_neg: Any
    """float64 (n,): mean distance to the other classes' codewords (0 if there are none)."""
    margin: Any
    """float64 (n,): d_pos - d_neg (Eq. 1 is the margin before a flip minus the margin after)."""


# DRLH Table 1: the best eta per data set and length. CIFAR-10 (10 classes, single-label) peaks at
# eta = 2 of R = 3 (16 bits) and eta = 5 of R = 7 (32 bits); NUS-WIDE (21 classes, multi-label) at
# eta = 1 of R = 3 and eta = 3 of R = 7. Keyed by (multi-label, bits, R): a table entry applies only
# where our codebook has the paper's radius at that length.
TABLE1_ETA: dict[tuple[bool, int, int], int] = {
    (False, 16, 3): 2,
    (False, 32, 7): 5,
    (True, 16, 3): 1,
    (True, 32, 7): 3,
}


def default_eta(radius: int, bits: int, multi_label: bool) -> int:
    """The default termination threshold eta (our rule, from DRLH's Table 1 and its "around R/2").

    Where Table 1 reports the best eta for this kind of data, length and radius, that value;
    elsewhere ``ceil(R / 2)`` for single-label data and ``floor(R / 2)`` for multi-label data: the
    roundings of R/2 that give Table 1's best eta at 16 bits on CIFAR-10 (single-label, 2 of R = 3)
    and on NUS-WIDE (multi-label, 1 of R = 3), and that stay on the side of Table 1's best at 32 bits.

    >>> [default_eta(3, 16, False), default_eta(7, 32, False), default_eta(15, 64, False)]
    [2, 5, 8]
    >>> default_eta(15, 64, multi_label=True)
    7
    """
    table = TABLE1_ETA.get((bool(multi_label), int(bits), int(radius)))
    if table is not None:
        return table
    return radius // 2 if multi_label else (radius + 1) // 2


def make_params(
    dataset: str | HashingDataset = "digits",
    split: str = "train",
    *,
    bits: int = 16,
    codebook: str = "bch",
    eta: int | None = None,
    sigma: float = 5.0,
    init: str = "random",
    max_steps: int | None = None,
    history: int = 10,
    flatten: bool = False,
    seed: int = 0,
) -> Params:
    """Check the environment's arguments and build its constants (numpy arrays).

    The arguments are ``BinaryCodeTravelEnv``'s (see its docstring).

    Raises:
        ValueError: for a bad argument, naming it.
    """
    data = resolve_dataset(dataset)
    items = resolve_split(data, split)
    bits = check_bits(bits)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    max_steps = check_positive_int(bits + 1 if max_steps is None else max_steps, "max_steps")
    history = check_positive_int(history, "history")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    words = label_codebook(data.num_classes, bits, kind=codebook, seed=seed)
    radius = error_correcting_radius(words)
    if eta is None:
        eta = default_eta(radius, bits, data.multi_label)
    if isinstance(eta, bool) or not isinstance(eta, (int, np.integer)) or not 0 <= eta <= radius:
        raise ValueError(
            f"eta must be an integer in [0, R={radius}] (DRLH: 0 <= eta <= R_BCH; R is the codebook's "
            f"error-correcting radius at {bits} bits), got {eta!r}"
        )

    positive = label_mask(items, data.num_classes)
    flip_delta = np.zeros((bits + 1, 2, data.num_classes), dtype=np.int64)
    flip_delta[:bits, 0] = 1 - 2 * words.T.astype(np.int64)  # from 0: +1 where w_c has a 0
    flip_delta[:bits, 1] = -flip_delta[:bits, 0]
    gain = 1 - 2 * words.astype(np.int64)  # (C, b)
    # Single-label teacher: at a wrong bit k the code is 1 - w_ck, so the flip changes the summed
    # distance to the other classes by (2 w_ck - 1) * S_ck with S_ck = sum over c' != c of
    # (1 - 2 w_c'k): a score fixed by the class. Rank the bits by (score, then lowest index).
    score = (2 * words.astype(np.int64) - 1) * (gain.sum(axis=0)[None, :] - gain)
    order = np.argsort(-score, axis=1, kind="stable")  # stable: lowest index first on ties
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(bits, 0, -1)[None, :].repeat(len(words), 0), axis=1)
    return Params(
        bits=bits,
        eta=int(eta),
        sigma=float(sigma),
        max_steps=max_steps,
        history=history,
        flatten=bool(flatten),
        init=init,
        radius=radius,
        multi_label=data.multi_label,
        codebook=words,
        features=items.features,
        labels=np.zeros(items.n, dtype=np.int64) if data.multi_label else items.labels.astype(np.int64),
        positive=positive,
        num_negative=(~positive).sum(axis=1).astype(np.int64),
        other_classes=np.float64(data.num_classes - 1),
        codewords=words.astype(np.int8),
        flip_delta=flip_delta.reshape(2 * (bits + 1), -1),
        flip_total=flip_delta.sum(axis=2).reshape(-1),
        stop_reward=np.where(np.arange(bits + 1) <= eta, float(sigma), -float(sigma)),
        one_hot=np.eye(bits + 1, bits, dtype=np.int8),
        flip_gain=gain.astype(np.float32),
        codeword_weight=words.astype(np.int64).sum(axis=1),
        teacher_rank=rank.astype(np.int8 if bits < 128 else np.int32),
        no_gain=-data.num_classes,
        teacher_stop=np.where(np.arange(bits + 1) == 0, bits, 0).astype(np.int64),
    )


def params_on(params: Params, to_array: Any) -> Params:
    """``params`` with every array and numpy scalar converted by ``to_array`` (e.g. to torch tensors)."""
    values = {f.name: getattr(params, f.name) for f in fields(params)}
    arrays = (np.ndarray, np.generic)
    return replace(params, **{k: to_array(v) for k, v in values.items() if isinstance(v, arrays)})




# The hot path uses operators, indexing and the methods numpy and torch share (sum, argmax, argmin,
# clip, reshape): a namespace function costs about a microsecond more per call on numpy, which a
# single env pays at every step. Axes count from the end, so that the same lines read a batch of
# rows (n, ...) and, on numpy, a single row (...) of numpy scalars and short arrays.


def _take(table: Any, index: Any) -> Any:
    """Rows ``index`` (any shape; or a numpy integer, see below) of ``table``: ``np.take`` on numpy.

    For one numpy integer on numpy: ``table[index]``, a view of the table's row that callers only
    read (a take costs four times as much there).
    """
    if isinstance(table, np.ndarray):
        if isinstance(index, np.generic):  # one row: a scalar, or a view of the table's row (read it only)
            return table[index]
        return table.take(index, axis=0)
    # index_select, not table[index]: torch's advanced-indexing gather is several times slower
    # (~100 GB/s on an H100, and a per-element loop on CPU).
    if index.ndim == 1:
        return table.index_select(0, index)
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, *table.shape[1:])


_BIT_IDS: dict[tuple[Any, int], Any] = {}


def _one_hot(one_hot: Any, index: Any) -> Any:
    """Rows ``index`` (any shape) of ``one_hot`` (``Params.one_hot``: row b is zeros).

    For one numpy integer, a view of the table's row (the callers only read it).
    """
    if isinstance(one_hot, np.ndarray):
        if isinstance(index, np.generic):
            return one_hot[index]
        return one_hot.take(index, axis=0)
    # A comparison writes the rows at memory speed; a gather from the table does not.
    key = (one_hot.device, one_hot.shape[1])
    bit_ids = _BIT_IDS.get(key)
    if bit_ids is None:
        bit_ids = _BIT_IDS[key] = _xp(one_hot).arange(one_hot.shape[1], device=one_hot.device)
    rows = index[..., None] == bit_ids
    if one_hot.dtype.itemsize == 1 and not _compiling():
        # bool and int8 share their bytes: a view, not a copy of the (n, H, b) observation. (Under
        # torch.compile the comparison and the cast fuse into one kernel; inductor has no bool view.)
        return rows.view(one_hot.dtype)
    return rows.to(one_hot.dtype)


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (``torch`` is imported wherever tensors exist)."""
    import torch

    return torch.compiler.is_compiling()


def _pick(array: Any, column: Any) -> Any:
    """``array[i, column[i]]`` for every row i of a 2-D ``array`` (``array[column]`` for one row)."""
    if isinstance(array, np.ndarray):  # (np.take_along_axis costs several µs of Python)
        if array.ndim == 1:
            return array[column]
        return array[np.arange(array.shape[0]), column]
    return array.gather(1, column[:, None])[:, 0]


def _select(mask: Any, yes: Any, no: Any) -> Any:
    """``yes`` in the rows where ``mask`` (bool (n,)) holds, else ``no`` (both (n,) or (n, m)).

    ``where`` over rows: the mask is broadcast over the second axis of ``yes``. For one row on
    numpy the mask is a numpy bool and this is a plain choice between the two values (np.where
    would cost a microsecond and make a 0-d array).
    """
    if isinstance(mask, np.generic):
        return yes if mask else no
    return _xp(mask).where(mask if yes.ndim == 1 else mask[:, None], yes, no)


def _filled(like: Any, shape: tuple[int, ...], value: int) -> Any:
    """A new int64 array of ``shape`` filled with ``value``, on ``like``'s device (or a numpy integer)."""
    if isinstance(like, np.ndarray):  # (np.full, or the namespace's, costs microseconds more)
        if not shape:
            return np.int64(value)
        array = np.empty(shape, dtype=np.int64)
        array.fill(value)
        return array
    return like.new_full(shape, value, dtype=_xp(like).int64)


def reset(params: Params, index: Any, code: Any) -> State:
    """Start episodes on items ``index`` (int64 (n,)) from start codes ``code`` (int8 (n, b)).

    One row on numpy: ``index`` a numpy integer and ``code`` of shape (b,) (module docstring).
    """
    *batch, b = code.shape
    history = _filled(code, (*batch, params.history), b)
    return _derive(params, _xp(code), index, code, history, _filled(code, tuple(batch), 0))


def restart(params: Params, state: State, mask: Any, index: Any, code: Any) -> State:
    """``state`` with the rows where ``mask`` (bool (n,)) started on items ``index`` from codes ``code``.

    ``index`` and ``code`` hold a draw for every row; the others' are ignored. Runs over every row
    with masks (no row indices, so nothing is read back from a device): the autoreset of a vector
    env on the GPU. Only the episode's inputs are chosen row-wise; the distances and what follows
    from them are derived for every row, as ``reset`` does (the same integers the steps kept).
    """
    xp = _xp(code)
    column = mask[:, None]
    return _derive(
        params,
        xp,
        xp.where(mask, index, state.index),
        xp.where(column, code, state.code),
        xp.where(column, code.shape[1], state.history),
        xp.where(mask, 0, state.steps),
    )


def _derive(params: Params, xp: Any, index: Any, code: Any, history: Any, steps: Any) -> State:
    """The state of rows on items ``index`` with these codes, histories and step counts."""
    distances = _distances(params, xp, code)
    total = distances.sum(axis=-1)
    if not params.multi_label:
        target = _take(params.labels, index)
        d_pos = _pick(distances, target)
        return _single_label(params, index, code, history, distances, total, steps, target, d_pos)
    return _multi_label(params, xp, index, code, history, distances, total, steps)


def _distances(params: Params, xp: Any, code: Any) -> Any:
    """Int64 (n, C): the Hamming distances from each code to every codeword."""
    if isinstance(code, np.ndarray):  # small batches (a single env, a few restarting rows): xor and sum
        rows = code[None] if code.ndim == 1 else code[:, None]  # (no ``...`` index: see _push)
        return (rows ^ params.codewords).sum(axis=-1, dtype=np.int64)
    # |w_c| + sum_k e_k (1 - 2 w_ck): one (n, b) x (b, C) product, no (n, C, b) temporary (a masked
    # torch step starts every row); small integers, exact in float32 (torch has no integer matmul on CUDA).
    return xp.astype(xp.astype(code, xp.float32) @ params.flip_gain.T, xp.int64) + params.codeword_weight


def _single_label(
    params: Params,
    index: Any,
    code: Any,
    history: Any,
    distances: Any,
    total: Any,
    steps: Any,
    target: Any,
    d_pos: Any,
) -> State:
    """The state of single-label rows (the target is the item's class; d_pos given)."""
    # int64 / float64 array: an exact division (no reciprocal), as the single env's int / int was.
    d_neg = (total - d_pos) / params.other_classes
    return State(index, code, history, distances, total, steps, target, d_pos, d_neg, d_pos - d_neg)


def _multi_label(
    params: Params, xp: Any, index: Any, code: Any, history: Any, distances: Any, total: Any, steps: Any
) -> State:
    """The state of multi-label rows: the target, d_pos and d_neg derived from the distances."""
    positive = _take(params.positive, index)
    target = xp.where(positive, distances, params.bits + 1).argmin(axis=-1)  # lowest class index on ties
    d_pos = _pick(distances, target)
    negative_sum = xp.where(positive, 0, distances).sum(axis=-1)
    num_negative = _take(params.num_negative, index)
    divisor = xp.astype(num_negative.clip(min=1), xp.float64)
    d_neg = xp.where(num_negative > 0, xp.astype(negative_sum, xp.float64) / divisor, 0.0)
    return State(index, code, history, distances, total, steps, target, d_pos, d_neg, d_pos - d_neg)


def move(code: Any, history: Any, action: Any, one_hot: Any) -> tuple[Any, Any]:
    """Codes and histories after ``action`` (int64 (n,)): bit k < b flips and is pushed; b changes nothing.

    ``one_hot`` is ``Params.one_hot``. The transition of the code alone, for ``encode_batch`` too.
    """
    code = code ^ _one_hot(one_hot, action)
    return code, _push(history, action, action < code.shape[-1])


def _bits_at(code: Any, action: Any) -> Any:
    """``code[i, action[i]]`` for every row i: the bits that ``action`` flips (any 0/1 where it is b)."""
    if isinstance(code, np.ndarray):  # one flat take, clipped: the terminate action reads a neighbour
        if code.ndim == 1:  # one row: clip as take does, in Python (take costs a microsecond here)
            return code[min(action, code.shape[0] - 1)]
        n, b = code.shape
        return code.take(np.arange(0, n * b, b) + action, mode="clip")
    # int64: torch indexes with int64, not int8.
    return code.gather(1, action.clamp(max=code.shape[1] - 1)[:, None])[:, 0].long()


_SHIFTS: dict[int, np.ndarray] = {}


def _push(history: Any, action: Any, flip: Any) -> Any:
    """The histories with ``action`` pushed (newest first) where ``flip``."""
    if history.shape[-1] == 0:
        return history
    if isinstance(history, np.ndarray):
        if history.ndim == 1:  # one row: no array op when it terminates, else a gather (a copy)
            if not flip:
                return history
            length = history.shape[0]
            shift = _SHIFTS.get(length)
            if shift is None:  # entry j of the pushed history is entry j - 1 (entry 0: overwritten)
                shift = _SHIFTS[length] = np.arange(-1, length - 1)
            pushed = history[shift]
            pushed[0] = action
            return pushed
        pushed = np.empty_like(history)
        pushed[:, 0] = action
        pushed[:, 1:] = history[:, :-1]
        return np.where(flip[:, None], pushed, history)
    xp = _xp(history)
    pushed = xp.concat([action[:, None], history[:, :-1]], axis=1)
    return xp.where(flip[:, None], pushed, history)


def step(params: Params, state: State, action: Any) -> tuple[State, Any, Any, Any]:
    """One step of every row with ``action`` (int64 (n,), each in [0, bits]; one row: a numpy integer).

    Returns:
        The next state (new arrays; ``index`` and ``target`` are ``state``'s), the rewards
        (float64 (n,)), terminated and truncated (bool (n,)).
    """
    flip = action < params.bits
    # Flipping bit k from value v adds row 2 k + v of flip_delta to the distances; terminating adds
    # zeros. (One gather by a row number, not numpy's slower fancy indexing by two index arrays.)
    row = 2 * action + _bits_at(state.code, action)
    delta = _take(params.flip_delta, row)
    distances = state.distances + delta
    total = state.total + _take(params.flip_total, row)
    history = _push(state.history, action, flip)
    steps = state.steps + 1
    code = state.code ^ _one_hot(params.one_hot, action)  # a zero row for the terminate action
    if params.multi_label:
        new = _multi_label(params, _xp(code), state.index, code, history, distances, total, steps)
    else:
        d_pos = state.d_pos + _pick(delta, state.target)
        new = _single_label(params, state.index, code, history, distances, total, steps, state.target, d_pos)
    # Eq. 1 (the margins are d_pos - d_neg, as the reward's terms) or Eq. 2.
    reward = _select(flip, state.margin - new.margin, _take(params.stop_reward, state.d_pos))
    return new, reward, ~flip, flip & (steps >= params.max_steps)


def teacher_action(params: Params, state: State) -> Any:
    """The teacher (int64 (n,)): the wrong bit whose flip earns the most, or terminate at d_pos = 0.

    A wrong bit k (the code differs from the target codeword there) lowers d_pos by one when flipped,
    and changes the summed distance to the negative classes by ``(1 - 2 e_k) * S_k`` with
    ``S_k = sum over negative classes c of (1 - 2 w_ck)``; so the largest reward (Eq. 1) is the
    largest integer ``(1 - 2 e_k) S_k`` among the wrong bits (lowest index on ties: numpy's and
    torch's argmax both return the first maximum). For single-label items that order depends on
    the class alone (``Params.teacher_rank``).
    """
    wrong = state.code ^ _take(params.codewords, state.target)  # 1 at the wrong bits
    if params.multi_label:
        xp = _xp(state.code)
        sign = 1 - 2 * xp.astype(state.code, xp.int64)  # (n, b): +1 where the bit is 0, -1 where 1
        negative = xp.astype(~_take(params.positive, state.index), xp.float32)
        # Small integers: exact in float32 (torch has no integer matmul on CUDA).
        sums = xp.astype(negative @ params.flip_gain, xp.int64)
        score = xp.where(wrong != 0, sign * sums, params.no_gain)
    else:
        score = wrong * _take(params.teacher_rank, state.target)  # 0 at the right bits
    # At d_pos = 0 every score is the lowest, so argmax is 0 and teacher_stop adds b (terminate).
    return score.argmax(axis=-1) + _take(params.teacher_stop, state.d_pos)


def teacher_mask(params: Params, state: State) -> Any:
    """Bool (n, b + 1): the actions the teacher counts as right: any wrong bit, or terminate at d_pos = 0.

    Every wrong bit's flip lowers d_pos by one and earns a reward of at least 0, so each is right
    in the teacher's sense; ``teacher_action`` is the most rewarding of them.
    """
    done = (state.d_pos == 0)[..., None]
    wrong = state.code != params.codewords[state.target]
    return _xp(state.code).concat([wrong, done], axis=-1)


def info(params: Params, state: State) -> dict[str, Any]:
    """The info values of every row: ``index``, ``d_pos``, ``d_neg`` and ``expert_action``."""
    return {
        "index": state.index,
        "d_pos": state.d_pos,
        "d_neg": state.d_neg,
        "expert_action": teacher_action(params, state),
    }


def observe(params: Params, state: State) -> Any:
    """The observations: a dict of ``features``, ``code`` and ``history`` (one-hot), or flattened."""
    features = _take(params.features, state.index)
    if isinstance(state.index, np.generic):  # one row: _take's view of the data set, copied
        features = features.copy()
    return observation(features, state.code, state.history, params.one_hot, params.flatten)


def observation(features: Any, code: Any, history: Any, one_hot: Any, flatten: bool) -> Any:
    """The observation of rows with these features, codes and histories (bit indices; ``Params.one_hot``)."""
    history = _one_hot(one_hot, history)  # (n, H, b)
    if flatten:
        xp = _xp(code)
        rows = [features, code, history.reshape(*history.shape[:-2], -1)]
        return xp.concat([xp.astype(part, xp.float32) for part in rows], axis=-1)
    return {
        "features": features,
        "code": code.copy() if isinstance(code, np.ndarray) else code.clone(),
        "history": history,
    }
