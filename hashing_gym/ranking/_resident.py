"""Arrays of any kind onto one device, checked and packed there: the resident path of the ranking API.

:class:`~hashing_gym.ranking.HammingIndex` and the ``"torch"`` backend's functions take codes and labels
as numpy arrays (or anything ``np.asarray`` takes), torch tensors on any device, or any DLPack array
(CuPy, JAX, ...: ``torch.from_dlpack``, no copy when it already lives on the target device), and load
them here, in three steps (our design):

1. Metadata first (shapes, dtypes, rows, label kinds): the functions' ``ValueError`` messages, raised
   before anything is copied.
2. The values then travel in chunks of rows (``CHUNK_BYTES``). A numpy array bound for a GPU is staged
   through two pinned host buffers and copied ``non_blocking`` on a side stream, so chunk ``i + 1`` is
   staged and in flight while chunk ``i`` is checked and packed on the compute stream (``OVERLAP``;
   without it, one blocking copy of the whole array). Tensors already on the device are read in place.
3. Each chunk is checked on the device (0/1: a comparison and a reduction into a flag) and packed into
   int64 words, ``pack_words``'s layout, the words the CUDA and numba kernels take (multi-hot labels
   likewise; class ids become int64 (n, 1)). The flags of every array of a call are read back together,
   one host sync (:class:`Checks`); only when one is set is the first bad value looked up, for the
   message the functions give (the error path may wait for the device again).

:class:`Resident` holds a database loaded so and ranks loaded queries against it: on the CPU with the
numba kernels over the same words viewed as uint64 (``engine="numba"``, bitwise the ``"numpy"``
backend), or on a torch device with the CUDA kernels where they take the problem and plain torch
otherwise (``engine="torch"``, the ``"torch"`` backend).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from hashing_gym.ranking._checks import check_binary, is_torch

# Host bytes of one chunk of rows: 8 chunks for the 64 MB of a million 64-bit codes as uint8.
CHUNK_BYTES = 8 << 20
# False: a numpy array bound for a GPU goes there in one blocking copy, then is packed (the benchmark's
# comparison of the staged pipeline against it).
OVERLAP = True
ENGINES = ("numba", "torch")
_KINDS = {1: "single-label (1-D)", 2: "multi-hot (2-D)"}


def resolve_device(device: Any) -> Any:
    """The torch device of a ``"torch"`` backend call (:func:`hashing_gym.device.torch_device`; None: auto).

    A CUDA device gets its index (the current device for ``"cuda"``), so that streams and tensors agree.
    """
    from hashing_gym.device import torch_device

    return _indexed(torch_device("auto" if device is None else device))


def placement(device: Any, like: Any = None) -> tuple[Any, str]:
    """Where a resident database lives and which kernels rank it: ``(torch device, engine)``.

    ``device`` as :func:`hashing_gym.device.array_device` reads it (the project's convention): ``"cpu"``
    is the numba kernels (engine ``"numba"``), a CUDA device or any ``torch.device`` (also
    ``torch.device("cpu")``, how CPU tests check the torch code) the ``"torch"`` backend's kernels there.
    ``None`` is the device of ``like`` when that is a CUDA tensor (no copy), else ``"auto"`` (CUDA when
    torch sees one, else the numba kernels).
    """
    import torch

    from hashing_gym.device import array_device

    if device is None and is_torch(like) and like.device.type == "cuda":
        return _indexed(like.device), "torch"
    where = array_device("auto" if device is None else device)
    if where is None:
        return torch.device("cpu"), "numba"
    return _indexed(where), "torch"


def _indexed(dev: Any) -> Any:
    import torch

    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


# ---------------------------------------------------------------------------------------------------------
# Inputs: metadata checked at once, values loaded later
# ---------------------------------------------------------------------------------------------------------


def _normalised(array: Any) -> Any:
    """A numpy array for host data (numpy, array-likes, CPU tensors numpy can view), else a torch tensor."""
    if isinstance(array, np.ndarray):
        return array
    if is_torch(array):
        tensor = array.detach()
        if tensor.device.type == "cpu":
            try:  # a view: the host path (pinned staging) then serves CPU tensors too
                return tensor.resolve_conj().resolve_neg().numpy()
            except (TypeError, RuntimeError):  # bfloat16 and other dtypes numpy lacks
                return tensor
        return tensor
    if hasattr(array, "__dlpack__"):
        import torch

        return _normalised(torch.from_dlpack(array))
    return np.asarray(array)


def _kind(array: Any) -> str:
    """The dtype's kind letter as numpy spells it (``b i u f c``, others), of an array or a tensor."""
    if isinstance(array, np.ndarray):
        return array.dtype.kind
    import torch

    dtype = array.dtype
    if dtype == torch.bool:
        return "b"
    if dtype.is_complex:
        return "c"
    if dtype.is_floating_point:
        return "f"
    if dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        return "u"
    if dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return "i"
    return "?"


class _Input:
    """One array of a call: as given (for messages), normalised, and in the dtype that is loaded."""

    def __init__(self, array: Any, name: str) -> None:
        self.name = name
        self.given = _normalised(array)
        self.shape = tuple(int(n) for n in self.given.shape)
        self.kind = _kind(self.given)
        self.array = self.given
        # Unsigned integers wider than a byte: torch offers few operations on them, so int64 (a value
        # above 2**63 wraps negative and is still not 0 or 1; the message reads the array as given).
        if self.kind == "u" and self.given.dtype.itemsize > 1:
            if isinstance(self.given, np.ndarray):
                self.array = self.given.astype(np.int64)
            else:
                import torch

                self.array = self.given.to(torch.int64)

    def check_binary_dtype(self, name: str) -> None:
        """Bool, integer or floating values (0/1 are checked on the device)."""
        if self.kind not in "biuf":
            raise ValueError(f"{name} must hold the numbers 0 and 1, got dtype {self.given.dtype}")


class Codes(_Input):
    """0/1 codes (n, bits), n and bits >= 1: metadata checked here, values by :meth:`load`."""

    def __init__(self, array: Any, name: str) -> None:
        super().__init__(array, name)
        if len(self.shape) != 2:
            raise ValueError(f"{name} must be a 2-D array (n, bits) of 0/1, got shape {self.shape}")
        if 0 in self.shape:
            raise ValueError(f"{name} is empty: shape {self.shape}")
        self.check_binary_dtype(name)
        self.n, self.bits = self.shape

    def load(self, dev: Any, checks: Checks) -> Any:
        """int64 words (n, ceil(bits / 64)) on ``dev``; the 0/1 check is added to ``checks``."""
        return _load_binary(self, self.name, dev, checks)


class Labels(_Input):
    """Class ids (n,) of integers or multi-hot 0/1 (n, C): metadata checked here, values by :meth:`load`."""

    def __init__(self, array: Any, n: int, name: str) -> None:
        super().__init__(array, name)
        if len(self.shape) == 1:
            if self.kind not in "iu":
                raise ValueError(
                    f"{name} (single-label, 1-D) must be integers, got dtype {self.given.dtype}"
                )
        elif len(self.shape) == 2:
            if self.shape[1] == 0:
                raise ValueError(f"{name} (multi-hot, 2-D) has no classes: shape {self.shape}")
            self.check_binary_dtype(f"{name} (multi-hot)")
        else:
            raise ValueError(
                f"{name} must be 1-D (single-label) or 2-D (multi-hot), got shape {self.shape}"
            )
        if self.shape[0] != n:
            raise ValueError(f"{name} has {self.shape[0]} rows but the codes have {n}")
        self.classes = self.shape[1] if len(self.shape) == 2 else 0
        """C for multi-hot labels, 0 for class ids."""

    def load(self, dev: Any, checks: Checks) -> Any:
        """int64 (n, 1) class ids, or multi-hot labels packed into int64 words (n, ceil(C / 64))."""
        if self.classes:
            return _load_binary(self, f"{self.name} (multi-hot)", dev, checks)
        import torch

        out = torch.empty((self.shape[0], 1), dtype=torch.int64, device=dev)
        for s, e, chunk in _chunks(self.array, dev):
            out[s:e, 0] = chunk
        return out


def check_bits(bits: int, database_bits: int, first: str = "query and database codes") -> None:
    """Codes of the database's width."""
    if bits != database_bits:
        raise ValueError(
            f"{first} must have the same number of bits, got {bits} and {database_bits}"
        )


def check_label_kinds(labels: Labels, classes: int, first: str = "query", second: str = "database") -> None:
    """Labels of the database's kind (class ids, or multi-hot of its number of classes ``classes``)."""
    if bool(labels.classes) != bool(classes):
        raise ValueError(
            f"{first} labels are {_KINDS[1 + bool(labels.classes)]} but {second} labels are "
            f"{_KINDS[1 + bool(classes)]}"
        )
    if labels.classes != classes:
        raise ValueError(
            f"{first} and {second} multi-hot labels must have the same number of classes, "
            f"got {labels.classes} and {classes}"
        )


# ---------------------------------------------------------------------------------------------------------
# Checks on the device, read back once
# ---------------------------------------------------------------------------------------------------------


class Checks:
    """The value checks of one call: a flag on the device per array, all read back with one host sync."""

    def __init__(self) -> None:
        self._pending: list[tuple[Any, Callable[[], None]]] = []

    def add(self, flag: Any, fail: Callable[[], None]) -> None:
        """``flag``: a 0-d bool tensor, set if the array is bad; ``fail()`` raises its ValueError."""
        self._pending.append((flag, fail))

    def verify(self) -> None:
        """Raise the first failed check's ValueError (in the order they were added)."""
        if not self._pending:
            return
        import torch

        pending, self._pending = self._pending, []
        flags = torch.stack([flag for flag, _ in pending]).tolist()  # the call's one host sync
        for bad, (_, fail) in zip(flags, pending, strict=True):
            if bad:
                fail()
                raise AssertionError("a failed check found nothing to report")  # pragma: no cover


def _binary_chunk(x: Any) -> tuple[Any, Any]:
    """(flag: some value is not 0 or 1, or None for bool; the chunk as uint8 0/1 (bad values: any bits)).

    Integers take one reduction (min and max; uint8, the usual codes, only the max), which is faster
    than a comparison into a mask and an ``any`` (10x on a CPU); floats need the mask (0.5, NaN).
    """
    import torch

    if x.dtype == torch.bool:
        return None, x.view(torch.uint8)
    if x.dtype == torch.uint8:
        return x.amax() > 1, x
    if not x.dtype.is_floating_point:
        low, high = torch.aminmax(x)
        return (low < 0) | (high > 1), x.to(torch.uint8)
    nonzero = x != 0
    return (nonzero & (x != 1)).any(), nonzero.view(torch.uint8)


def _raise_first_bad(source: _Input, name: str) -> None:
    """The functions' message for the first value that is not 0 or 1 (the error path only)."""
    if isinstance(source.given, np.ndarray):
        check_binary(source.given, name)  # raises, with the host's own message
        return
    import torch

    x = source.array
    bad = (x != 0) & (x != 1)
    flat = int(torch.nonzero(bad.reshape(-1))[0, 0])
    where = tuple(int(i) for i in np.unravel_index(flat, tuple(x.shape)))
    value = source.given[where].item()
    raise ValueError(f"{name} must hold only 0 and 1, got {value!r} at index {where}")


def _load_binary(source: _Input, name: str, dev: Any, checks: Checks) -> Any:
    """0/1 (n, b) values checked and packed chunk by chunk into int64 words (n, ceil(b / 64)) on ``dev``."""
    import torch

    from hashing_gym.ranking._packing import torch_pack_rows

    n, bits = source.shape
    words = torch.empty((n, -(-bits // 64)), dtype=torch.int64, device=dev)
    array = source.array
    if isinstance(array, np.ndarray) and array.dtype.itemsize > 8:  # long double: no torch dtype
        array = check_binary(array, name)  # on the host, raising the same message
    flags = []
    for s, e, chunk in _chunks(array, dev):
        bad, bits01 = _binary_chunk(chunk)
        if bad is not None:
            flags.append(bad)
        words[s:e] = torch_pack_rows(bits01)
    if flags:
        flag = flags[0] if len(flags) == 1 else torch.stack(flags).any()
        checks.add(flag, lambda: _raise_first_bad(source, name))
    return words


# ---------------------------------------------------------------------------------------------------------
# Chunks of rows onto the device
# ---------------------------------------------------------------------------------------------------------


def _rows_per_chunk(array: Any) -> int:
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def _from_numpy(array: np.ndarray) -> Any:
    """A CPU tensor viewing ``array`` (a read-only memory map too: the rows are only read)."""
    import torch

    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


def _chunks(array: Any, dev: Any) -> Iterator[tuple[int, int, Any]]:
    """``(start, end, rows start..end - 1 on dev)``, in order; each chunk is the caller's until the next.

    The caller queues its work on the current stream of ``dev``; a staged chunk is recorded on that
    stream, so its memory is not reused before that work has read it.
    """
    n, rows = array.shape[0], _rows_per_chunk(array)
    if isinstance(array, np.ndarray):
        if dev.type == "cuda" and OVERLAP and n > rows:
            yield from _staged(array, dev, rows)
            return
        whole = _from_numpy(array)
        if dev.type == "cuda":  # one blocking copy: small arrays (a chunk or less), or OVERLAP off
            whole = whole.to(dev)
    else:
        whole = array  # a tensor: each chunk moves on its own (a no-op on its own device)
    for s in range(0, n, rows):
        yield s, min(s + rows, n), whole[s : s + rows].to(dev)


def _staged(array: np.ndarray, dev: Any, rows: int) -> Iterator[tuple[int, int, Any]]:
    """Chunks of a host array through two pinned buffers, copied on a side stream ahead of their use.

    Order (our design): chunk ``i``'s copy is queued, the caller queues chunk ``i``'s work on the
    compute stream (waiting for that copy on the device, not on the host), and then chunk ``i + 1`` is
    staged into the other buffer (host memcpy) while the copy and the work of chunk ``i`` run, and
    queued. A buffer is written again only after its previous copy has left it (an event).
    """
    import torch

    n = array.shape[0]
    compute = torch.cuda.current_stream(dev)
    side = torch.cuda.Stream(device=dev)
    dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
    buffers = [torch.empty((rows, *array.shape[1:]), dtype=dtype, pin_memory=True) for _ in range(2)]
    left: list[Any] = [None, None]  # per buffer: the event after its last copy to the device

    def stage(s: int) -> tuple[int, int, Any, Any]:
        e, b = min(s + rows, n), (s // rows) % 2
        if left[b] is not None:
            left[b].synchronize()
        np.copyto(buffers[b][: e - s].numpy(), array[s:e])
        with torch.cuda.stream(side):
            chunk = buffers[b][: e - s].to(dev, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
        left[b] = event
        return s, e, chunk, event

    pending: tuple[int, int, Any, Any] | None = stage(0)
    while pending is not None:
        s, e, chunk, event = pending
        compute.wait_event(event)
        chunk.record_stream(compute)
        yield s, e, chunk
        pending = stage(e) if e < n else None


# ---------------------------------------------------------------------------------------------------------
# A database on its device, and the queries of a call
# ---------------------------------------------------------------------------------------------------------


class Resident:
    """Packed database codes and label words on one device, and the kernels that rank queries against it.

    Args:
        codes: int64 words (nb, ceil(bits / 64)) from :meth:`Codes.load`.
        labels: int64 (nb, 1) class ids or (nb, ceil(C / 64)) multi-hot words from :meth:`Labels.load`;
            None for a database that is only searched (:meth:`rank`, :meth:`hamming`).
        bits: the code length.
        classes: C of multi-hot labels, 0 for class ids.
        engine: ``"numba"`` (CPU tensors; the numba kernels over the words viewed as uint64) or
            ``"torch"`` (the ``"torch"`` backend: CUDA kernels where they take the problem, else plain
            torch).
        resident: whether the database serves many calls (a ``HammingIndex``): the CUDA kernels then
            derive what pays off across calls from it once and keep it (``_cuda.ClassRuns``, a copy of
            the codes grouped by class); a database loaded for one call derives nothing.
    """

    def __init__(
        self, codes: Any, labels: Any, bits: int, classes: int, engine: str, resident: bool = False
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.codes = codes
        self.labels = labels
        self.bits = bits
        self.classes = classes
        self.engine = engine
        self.device = codes.device
        # What the CUDA kernels derive from this database once and reuse (``_cuda.ClassRuns``).
        self.kernel_cache: dict[str, Any] | None = {} if resident else None
        if engine == "numba":
            if self.device.type != "cpu":
                raise ValueError(f"engine='numba' runs on the CPU, got device {self.device}")
            self._xb = codes.numpy().view(np.uint64)  # views: the words are shared, not copied
            self._lb = None if labels is None else labels.numpy()

    @property
    def nb(self) -> int:
        """The number of database items."""
        return int(self.codes.shape[0])

    @property
    def multi(self) -> bool:
        """Whether the labels are multi-hot."""
        return self.classes > 0

    def queries(self, q_codes: Any, q_labels: Any) -> Loaded:
        """Queries and their labels checked against this database, loaded onto its device (one sync)."""
        query = Codes(q_codes, "query codes")
        check_bits(query.bits, self.bits)
        labels = Labels(q_labels, query.n, "query labels")
        check_label_kinds(labels, self.classes)
        checks = Checks()
        loaded = Loaded(self, query.load(self.device, checks), labels.load(self.device, checks))
        checks.verify()
        return loaded

    def query_codes(self, q_codes: Any) -> Any:
        """Query codes checked against this database and loaded onto its device (one sync)."""
        query = Codes(q_codes, "query codes")
        check_bits(query.bits, self.bits)
        checks = Checks()
        xq = query.load(self.device, checks)
        checks.verify()
        return xq

    def stats(self, xq: Any, lq: Any, ks: tuple[int, ...], stable: bool) -> tuple[np.ndarray, ...]:
        """``(counts, relevant, ap_sum, hits)`` of loaded queries, as numpy arrays (``_numba.stats_into``)."""
        if self.engine == "torch":
            from hashing_gym.ranking import _torch

            return _torch.stats_words(
                xq, lq, self.codes, self.labels, self.bits, self.classes, ks, stable, self.kernel_cache
            )
        from hashing_gym.ranking import _numba

        nq = xq.shape[0]
        out = (
            np.zeros((nq, self.bits + 1), dtype=np.int64),
            np.zeros((nq, self.bits + 1), dtype=np.int64),
            np.zeros((nq, len(ks)), dtype=np.float64),
            np.zeros((nq, len(ks)), dtype=np.int64),
        )
        cutoffs = np.asarray(ks, dtype=np.int64)
        xq_words = xq.numpy().view(np.uint64)
        _numba.stats_into(None, xq_words, self._xb, lq.numpy(), self._lb, self.multi, cutoffs, stable, out)
        return out

    def tie_aware_ap(self, xq: Any, lq: Any, k: int) -> np.ndarray | None:
        """Tie-aware AP of loaded queries computed on the device (CUDA kernels), or None where it is not.

        None: :meth:`stats`' histograms come to the host and the caller computes the AP there.
        """
        if self.engine != "torch":
            return None
        from hashing_gym.ranking import _torch

        return _torch.tie_aware_ap_words(
            xq, lq, self.codes, self.labels, self.bits, self.classes, k, self.kernel_cache
        )

    def rank(self, xq: Any, k: int) -> tuple[Any, Any]:
        """Stable top ``k`` of loaded queries: int32 distances, int64 indices (numba: numpy; else tensors)."""
        if self.engine == "torch":
            from hashing_gym.ranking import _torch

            return _torch.rank_words(xq, self.codes, self.bits, k)
        from hashing_gym.ranking import _numba

        return _numba.rank(xq.numpy().view(np.uint64), self._xb, self.bits, k)

    def hamming(self, xq: Any) -> np.ndarray:
        """int32 (nq, nb) distances of loaded queries, as numpy."""
        if self.engine == "torch":
            from hashing_gym.ranking import _torch

            return _torch.hamming_words(xq, self.codes, self.bits)
        from hashing_gym.ranking import _numba

        return _numba.hamming(xq.numpy().view(np.uint64), self._xb)

    def extended(self, codes: Any, labels: Any) -> Resident:
        """This database with loaded rows appended (a new object; the words are copied once)."""
        import torch

        more = torch.cat([self.codes, codes]), torch.cat([self.labels, labels])
        return Resident(*more, self.bits, self.classes, self.engine, self.kernel_cache is not None)


class Loaded(NamedTuple):
    """A call's queries loaded onto the device of its database."""

    database: Resident
    xq: Any
    lq: Any

    @property
    def nb(self) -> int:
        """The number of database items."""
        return self.database.nb


def load_words(words: Any, dev: Any) -> Any:
    """Packed words (uint64 or int64 (n, W), numpy or a tensor; class ids (n, 1)) as int64 on ``dev``.

    Not checked (the caller has). Viewed, not copied, where they already are on ``dev`` (a memory map
    on the CPU stays one); numpy arrays bound for a GPU are staged through pinned memory like 0/1 inputs.
    """
    import torch

    if isinstance(words, np.ndarray):
        words = words.view(np.int64) if words.dtype == np.uint64 else words
        if dev.type == "cpu" and words.dtype == np.int64:
            return _from_numpy(words)
    else:
        words = words.view(torch.int64) if words.dtype == torch.uint64 else words
        if words.device == dev and words.dtype == torch.int64:
            return words
    out = torch.empty(tuple(words.shape), dtype=torch.int64, device=dev)
    for s, e, chunk in _chunks(words, dev):
        out[s:e] = chunk
    return out


def load_call(q_codes: Any, q_labels: Any, db_codes: Any, db_labels: Any, dev: Any, engine: str) -> Loaded:
    """A metric call's four arrays checked and loaded onto ``dev``, with one host sync for every value check.

    Metadata in the order of the numpy path's checks (query codes, database codes, their widths, query
    labels, database labels, their kinds); the values are checked on the device, queries first.
    """
    query = Codes(q_codes, "query codes")
    database = Codes(db_codes, "database codes")
    check_bits(query.bits, database.bits)
    q_lab = Labels(q_labels, query.n, "query labels")
    db_lab = Labels(db_labels, database.n, "database labels")
    check_label_kinds(q_lab, db_lab.classes)
    checks = Checks()  # its messages in the numpy path's order too
    xq, xb = query.load(dev, checks), database.load(dev, checks)
    lq, lb = q_lab.load(dev, checks), db_lab.load(dev, checks)
    checks.verify()
    return Loaded(Resident(xb, lb, database.bits, db_lab.classes, engine), xq, lq)


def load_code_pair(q_codes: Any, db_codes: Any, dev: Any, engine: str) -> tuple[Resident, Any]:
    """Query and database codes (no labels: distances and rankings), loaded onto ``dev`` (one sync)."""
    query = Codes(q_codes, "query codes")
    database = Codes(db_codes, "database codes")
    check_bits(query.bits, database.bits)
    checks = Checks()
    xq = query.load(dev, checks)
    xb = database.load(dev, checks)
    checks.verify()
    return Resident(xb, None, database.bits, 0, engine), xq
