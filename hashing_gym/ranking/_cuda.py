"""CUDA kernels of the torch backend (NVIDIA GPUs; compiled at first use by NVRTC through CuPy).

The kernels' source is ``kernels.cu`` in this package, read with :mod:`importlib.resources`.
"""

from __future__ import annotations

import functools
import importlib.resources
import warnings
from typing import Any

import numpy as np

from hashing_gym.ranking._checks import Data

# Why CUDA C and not Triton: the stable AP needs, per query, running counters indexed by a run-time
# distance; a thread's private shared-memory row does that in one instruction, while Triton's block
# tensors can only update such counters through a one-hot compare over all bits + 1 bins.
#
# Layout: one thread per query, one block of T queries per (query block, database segment). Each thread
# keeps its bins + 1 counters in shared memory, bin-major (cnt[b * T + t]), so the threads of a warp never
# share a bank whatever their distances. A counter packs the items of its bucket seen in this segment
# (low 16 bits) and the relevant ones (high 16 bits), so segments hold at most 32767 items. Pass 1 writes
# each segment's packed histograms; `prefixes` (and a cumulative sum over distances) turns them into each
# segment's starting positions; pass 2 scans each segment again in index order, so every relevant item
# knows its stable position and the hits up to it, and sums the precisions at each cutoff. Nothing of
# size nq x nb ever reaches memory. Queries are sorted by label first (see stats). With class ids and a
# resident database (ClassRuns), pass 1 reads a copy of the database regrouped by (segment, class)
# instead: its counts per segment are the same, since pass 1 counts and does not order; and pass 2 reads
# relevance from per-class bitmaps, a word per 32 items.
#
# Where the time goes (H200, N = 1M, Q = 10k, 64 bits, stable mAP@all): pass 1 is compute-bound (5.7
# ms: a popcount and a shared-memory add per pair); pass 2 likewise plus, on each relevant item, a read
# of its segment's base that misses the L1 (4 ms of its 13.9). Bases kept in shared memory instead cost
# more in occupancy than the reads (measured: 17-20 ms); a GEMM of the same shapes takes 7.9 ms.
# benchmarks/RESULTS.md (session 24) has the variants measured, tensor-core distances among them.


@functools.lru_cache(maxsize=1)
def _source() -> str:
    """The kernels' CUDA C source."""
    return importlib.resources.files("hashing_gym.ranking").joinpath("kernels.cu").read_text()


# Shared memory per block for the counters (the static limit), and the most items per segment (the
# counters' 16-bit halves hold at most 32767 without reaching the sign bit).
SHARED_BYTES = 48 * 1024
MAX_SEGMENT = 32767
# Widest multi-hot labels (64-bit words) the kernels take; wider ones, and codes of more than 383 bits
# (whose counters leave fewer than 32 queries a block), use plain torch.
MAX_LABEL_WORDS = 16
# False makes the torch backend use plain torch on CUDA too (the benchmark's reference; tests).
ENABLED = True
# Bytes of the per-segment arrays of one chunk of queries.
CHUNK_BYTES = 1 << 30


@functools.lru_cache(maxsize=16)
def _resident_blocks(device: int, shared_bytes: int, threads: int) -> int:
    """Blocks of ``threads`` threads and ``shared_bytes`` of shared memory resident on the GPU at once."""
    import torch

    props = torch.cuda.get_device_properties(device)
    per_sm = getattr(props, "shared_memory_per_multiprocessor", 0) or 100 * 1024
    # The driver reserves 1 KiB of shared memory per block.
    threads_per_sm = getattr(props, "max_threads_per_multi_processor", 0) or 2048
    blocks = min(per_sm // (shared_bytes + 1024), threads_per_sm // threads, 32)
    return max(1, blocks) * props.multi_processor_count


def block_threads(nbins: int) -> int:
    """Queries per block: as many as the counters' shared memory allows, a multiple of 32, at most 128."""
    return min(128, (SHARED_BYTES // (4 * nbins)) // 32 * 32)


@functools.lru_cache(maxsize=1)
def _cupy() -> Any:
    """The ``cupy`` module, or None where it is not installed (optional: plain torch does the work)."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _torch_stream(dev: Any) -> Any:
    """Torch's current stream on ``dev`` as a CuPy stream, to launch the kernels in torch's order.

    Kept per CUDA stream: a step of RankListHash-v0's batched env launches a kernel, and building the
    wrapper (with its warnings filter) cost more host time than the launch.
    """
    import torch

    return _external_stream(torch.cuda.current_stream(dev).cuda_stream)


@functools.lru_cache(maxsize=64)
def _external_stream(pointer: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # CuPy >= 14 prefers Stream.from_external
        return _cupy().cuda.ExternalStream(pointer)


# The C type of packed words of each width (``own_counts``).
_WORD_TYPES = {16: "unsigned short", 32: "unsigned int", 64: "unsigned long long"}


@functools.lru_cache(maxsize=32)
def _module(
    words: int, label_words: int, multi: bool, nbins: int, nks: int, threads: int, word_bits: int = 64
) -> Any:
    """The kernels for one shape, as a CuPy ``RawModule`` (NVRTC compiles it at the first launch)."""
    cupy = _cupy()
    defines = {"W": words, "LW": label_words, "MULTI": int(multi), "NBINS": nbins, "NK": max(nks, 1)}
    defines["T"] = threads
    # own_histograms' words (the other kernels take 64-bit words) and queries per block.
    defines["WT"] = _WORD_TYPES[word_bits]  # own_histograms' words (the other kernels take 64-bit words)
    if own_warps(nbins):  # own_histograms exists where its counters fit (own_usable)
        defines["OW"] = own_warps(nbins)
    header = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return cupy.RawModule(code=header + _source(), options=("--std=c++17",))


class ClassRuns:
    """A database's class ids as indices into its sorted classes, and what the kernels derive from them.

    Its codes regrouped for pass 1, and relevance bitmaps for pass 2:
    ``histograms_by_class`` reads each segment's items class by class, so that relevance is a constant
    inside a run; ``stable_sums_bitmaps`` reads one bitmap word per 32 items instead of 32 labels. Built
    once per database (a ``Resident`` keeps it in its kernel cache: one host sync, for the number of
    classes); the regrouped copy of the codes (as many bytes as the database's codes) is kept for the last
    segment length used, the bitmaps (at most as many bytes, see ``bitmaps_fit``) once built.

    Args:
        lb: the database's class ids, int64 CUDA tensor (nb, 1).
    """

    def __init__(self, lb: Any) -> None:
        import torch

        self.classes, dense = torch.unique(lb[:, 0], return_inverse=True)
        self.dense = dense.to(torch.int64)
        self.count = int(self.classes.numel())  # the host sync
        self._layout: tuple[int, Any, Any] | None = None
        self._bitmaps: Any = None

    def query_classes(self, lq: Any) -> Any:
        """int32 (nq,): each query's class as an index into ``classes``, -1 where no item has it."""
        import torch

        at = torch.searchsorted(self.classes, lq[:, 0]).clamp_(max=self.count - 1)
        return torch.where(self.classes[at] == lq[:, 0], at, -1).to(torch.int32)

    def bitmaps(self) -> Any:
        """Relevance bitmaps for pass 2, int32 ((count + 1) x ceil(nb / 32)), built at the first call.

        Bit j % 32 of word j // 32 of row c is whether item j has class c. Row ``count`` is all zeros (a
        query class no item has).
        """
        import torch

        if self._bitmaps is None:
            nb = self.dense.shape[0]
            words = -(-nb // 32)
            item = torch.arange(nb, device=self.dense.device)
            flat = torch.zeros((self.count + 1) * words, dtype=torch.int64, device=item.device)
            # Each bit is set once, so adding the bits of a word is or-ing them.
            flat.index_add_(0, self.dense * words + item // 32, torch.ones_like(item) << item % 32)
            # Two's complement: bit 31 becomes the sign of the int32 word the kernel reads as unsigned.
            flat = torch.where(flat >= 2**31, flat - 2**32, flat)
            self._bitmaps = flat.to(torch.int32).view(self.count + 1, words)
        return self._bitmaps

    def bitmaps_fit(self, words: int) -> bool:
        """Whether the bitmaps take at most the bytes of the database's codes (``words`` 64-bit words each).

        They hold a row per class: databases of many classes have pass 2 read labels instead.
        """
        return (self.count + 1) / 8 <= words * 8

    def layout(self, xb: Any, seg_len: int, segments: int) -> tuple[Any, Any]:
        """``(xs, run_start)``: codes sorted by (segment, class), int32 run starts (segments x count + 1)."""
        import torch

        if self._layout is None or self._layout[0] != seg_len:
            self._layout = None  # the old copy goes before the new one is made
            nb = xb.shape[0]
            key = torch.arange(nb, device=xb.device) // seg_len * self.count + self.dense
            key, perm = torch.sort(key)
            bounds = torch.arange(segments * self.count + 1, device=xb.device)
            run_start = torch.searchsorted(key, bounds).to(torch.int32)
            self._layout = (seg_len, xb[perm].contiguous(), run_start)
        return self._layout[1], self._layout[2]


def class_runs(cache: dict[str, Any], lb: Any) -> ClassRuns:
    """The ``ClassRuns`` of a database: from ``cache`` (a ``Resident``'s), else built and kept there."""
    if "class_runs" not in cache:
        cache["class_runs"] = ClassRuns(lb)
    return cache["class_runs"]


# Class runs replace the label loads when segments hold at least this many items per class (each class
# costs every thread of pass 1 a loop setup per segment, empty or not).
ITEMS_PER_CLASS_RUN = 8
# False makes pass 2 load labels even where the database has class runs (tests).
BITMAPS = True


def usable(data: Data, dev: Any) -> bool:
    """Whether the CUDA kernels take this problem (NVIDIA device, CuPy present, widths within limits)."""
    label_words = 1 if not data.multi else (data.yq.shape[1] + 63) // 64
    return usable_for(data.nb, data.xq.shape[1], label_words, dev)


def usable_for(nb: int, bits: int, label_words: int, dev: Any) -> bool:
    """:func:`usable` from the sizes: database items, code length and label words (1 for class ids)."""
    import torch

    if not ENABLED or dev.type != "cuda" or torch.version.cuda is None or nb >= 2**31:
        return False
    if label_words > MAX_LABEL_WORDS or block_threads(bits + 1) < 32:
        return False
    return _cupy() is not None


def stats(
    xq: Any,
    lq: Any,
    xb: Any,
    lb: Any,
    bits: int,
    multi: bool,
    ks: tuple[int, ...],
    stable: bool,
    cache: dict[str, Any] | None = None,
) -> tuple[Any, Any, Any, Any]:
    """Histograms and stable AP sums from packed codes and label words already on one CUDA device.

    Args:
        xq: query codes packed by ``pack_words``, as an int64 CUDA tensor (nq, ceil(bits / 64)).
        lq: query labels from ``label_words``, int64 CUDA tensor (nq, 1) or (nq, label words).
        xb: database codes, like ``xq`` (nb, ceil(bits / 64)).
        lb: database labels, like ``lq``.
        bits: code length.
        multi: whether the labels are multi-hot words (relevant = any shared bit) or class ids.
        ks: stable cutoffs, each in 1..nb.
        stable: whether to compute the stable AP sums and hits at ``ks``.
        cache: where the database's ``ClassRuns`` are kept between calls (a resident ``Resident``'s
            dict), or None: pass 1 then loads each item's label (nothing to build for one call).

    Returns:
        ``(counts, relevant, ap_sum, hits)`` as CUDA tensors: int64 (nq, bits + 1) twice, then float64 and
        int64 (nq, len(ks)) (zeros when not ``stable``).
    """
    import cupy
    import torch

    nq, nb, nbins = xq.shape[0], xb.shape[0], bits + 1
    xb, lb = xb.contiguous(), lb.contiguous()
    # Pass 2 reads one-word codes and class ids two items per 16-byte load: the arrays must start at a
    # multiple of 16 bytes, which a slice of a larger tensor may not (a copy is a fresh allocation).
    xb = xb if xb.data_ptr() % 16 == 0 else xb.clone()
    lb = lb if lb.data_ptr() % 16 == 0 else lb.clone()
    dev = xq.device
    threads = block_threads(nbins)
    nks = len(ks) if stable else 0
    module = _module(xq.shape[1], lq.shape[1], multi, nbins, nks, threads)
    q_blocks_max = -(-nq // threads)
    # Enough segments to fill the GPU, none longer than the counters can hold.
    # Enough segments for whole waves of pass 1's blocks (at least two), none longer than the counters
    # hold, none shorter than 256 items (each segment costs every thread a pass over its bins).
    resident = _resident_blocks(dev.index, 4 * nbins * threads, threads)
    fewest = -(-nb // MAX_SEGMENT)
    waves = max(2, -(-fewest * q_blocks_max // resident))
    segments = max(fewest, min(waves * resident // q_blocks_max, -(-nb // 256)))
    seg_len = -(-nb // segments)
    if MAX_SEGMENT >= 32:
        # Multiples of 32 items, for pass 2's bitmap words; on every path, so that a HammingIndex (whose
        # pass 2 reads bitmaps) sums each segment's precisions in the order the functions do (bitwise).
        seg_len = min(-(-seg_len // 32) * 32, MAX_SEGMENT // 32 * 32)
    segments = -(-nb // seg_len)
    # Queries of one label side by side: the threads of a warp then agree on each item's relevance, so
    # the float64 work on relevant items does not diverge (results go back to the callers' order).
    order = torch.arange(nq, device=dev)
    for w in reversed(range(lq.shape[1])):  # lexicographic, one stable sort per word (no host sync)
        order = order[torch.argsort(lq[order, w], stable=True)]
    xq, lq = xq[order].contiguous(), lq[order].contiguous()
    runs = None  # built for a database that serves many calls (its cache): it costs a sort and a sync
    if cache is not None and not multi and nb >= ITEMS_PER_CLASS_RUN * segments:
        runs = class_runs(cache, lb)
        if runs.count * segments * ITEMS_PER_CLASS_RUN > nb:
            runs = None
    bitmaps = None
    if runs is not None:
        if BITMAPS and nks and runs.bitmaps_fit(xb.shape[1]) and seg_len % 32 == 0:
            bitmaps = runs.bitmaps()
        xs, run_start = runs.layout(xb, seg_len, segments)
        lq_class = runs.query_classes(lq)
    # Queries per chunk: pass 1's output and pass 2's bases (two int32 each), int32.
    chunk = max(threads, CHUNK_BYTES // (segments * nbins * 4 * 3) // threads * threads)
    counts = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    relevant = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    ap_sum = torch.zeros((nq, len(ks)), dtype=torch.float64, device=dev)
    hits = torch.zeros((nq, len(ks)), dtype=torch.int64, device=dev)
    ks_dev = torch.tensor(ks if ks else (1,), dtype=torch.int32, device=dev)

    def arg(tensor: Any) -> Any:
        # A device pointer passed by value (8 bytes, as the kernel's pointer parameter), which spares a
        # CuPy array view per argument and launch.
        return np.uint64(tensor.data_ptr())

    with cupy.cuda.Device(dev.index), _torch_stream(dev):
        for s in range(0, nq, chunk):
            e = min(s + chunk, nq)
            n = e - s
            grid = (-(-n // threads), segments)
            packed = torch.empty((segments, nbins, n), dtype=torch.int32, device=dev)
            qs, ls = xq[s:e].contiguous(), lq[s:e].contiguous()
            common = (arg(qs), arg(xb), arg(ls), arg(lb), np.int32(n), np.int32(nb), np.int32(seg_len))
            if runs is None:
                module.get_function("histograms")(grid, (threads,), (*common, arg(packed)))
            else:
                by_class = (arg(qs), arg(xs), arg(lq_class[s:e]), arg(run_start), np.int32(n))
                by_class += (np.int32(runs.count), arg(packed))
                module.get_function("histograms_by_class")(grid, (threads,), by_class)
            base = torch.empty((segments, nbins, n, 2), dtype=torch.int32, device=dev) if nks else packed
            total = torch.empty((nbins, n), dtype=torch.int32, device=dev)
            total_rel = torch.empty((nbins, n), dtype=torch.int32, device=dev)
            module.get_function("prefixes")(
                (-(-n * nbins // 256),),
                (256,),
                (arg(packed), np.int32(n), np.int32(segments), np.int32(bool(nks)), arg(base))
                + (arg(total), arg(total_rel)),
            )
            counts[s:e] = total.T
            relevant[s:e] = total_rel.T
            if not nks:
                continue
            del packed
            seg_sums = torch.empty((segments, nks, n), dtype=torch.float64, device=dev)
            seg_hits = torch.empty((segments, nks, n), dtype=torch.int32, device=dev)
            # Add the items at smaller distances to each bucket's starting position.
            base[..., 0] += (torch.cumsum(total, 0, dtype=torch.int32) - total)[None]
            base[..., 1] += (torch.cumsum(total_rel, 0, dtype=torch.int32) - total_rel)[None]
            if bitmaps is None:
                name, relevance = "stable_sums", (np.uint64(0), np.uint64(0), np.int32(0))
            else:
                name, relevance = "stable_sums_bitmaps", (arg(bitmaps), arg(lq_class[s:e]))
                relevance += (np.int32(runs.count),)
            module.get_function(name)(
                grid,
                (threads,),
                (*common[:4], *relevance, *common[4:], arg(base), arg(ks_dev), arg(seg_sums))
                + (arg(seg_hits),),
            )
            ap_sum[s:e] = seg_sums.sum(0).T
            hits[s:e] = seg_hits.sum(0, dtype=torch.int64).T
    back = torch.empty_like(order)
    back[order] = torch.arange(nq, device=dev)
    return counts[back], relevant[back], ap_sum[back], hits[back]


def own_usable(xq: Any, lq: Any, xb: Any, bits: int) -> bool:
    """Whether ``own_counts`` takes these packed queries (CUDA tensors, CuPy present, sizes within limits)."""
    import torch

    if not ENABLED or not xq.is_cuda or torch.version.cuda is None or xb.shape[-2] >= 2**31:
        return False
    if _cupy() is None:
        return False
    label_words = lq.shape[1] if lq.ndim == 2 else 1
    return label_words <= MAX_LABEL_WORDS and own_warps(bits + 1) >= 1


def own_warps(nbins: int) -> int:
    """Queries (warps) per block of ``own_histograms``: each lane's two 32-bit counters per bucket."""
    return min(8, SHARED_BYTES // (2 * 4 * 32 * nbins))


def own_counts(xq: Any, lq: Any, xb: Any, lb: Any, bits: int, exclude: Any) -> tuple[Any, Any]:
    """Histograms of packed queries, each against its own database or one shared (``own_histograms``).

    Args:
        xq: packed queries, int16/int32/int64 CUDA tensor (nq, W).
        lq: query labels: int64 class ids (nq,) or multi-hot words (nq, LW).
        xb: packed databases (nq, nb, W), one per query, or one shared (nb, W); xq's dtype.
        lb: the database items' labels, like ``lq`` (nb,) or (nb, LW).
        bits: code length.
        exclude: None, or int64 (nq,): the item left out of each query's list.

    Returns:
        ``(counts, relevant)``: int64 CUDA tensors (nq, bits + 1).
    """
    import torch

    cupy = _cupy()
    nq, words = xq.shape
    nb, nbins = xb.shape[-2], bits + 1
    multi = lq.ndim == 2
    warps = own_warps(nbins)
    word_bits = xq.element_size() * 8
    module = _module(words, lq.shape[1] if multi else 1, multi, nbins, 0, block_threads(nbins), word_bits)
    dev = xq.device
    counts = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    relevant = torch.empty((nq, nbins), dtype=torch.int64, device=dev)
    tensors = [t.contiguous() for t in (xq, xb, lq.long(), lb.long())]
    skip = None if exclude is None else exclude.to(torch.int64).contiguous()

    def arg(tensor: Any) -> Any:
        return np.uint64(0 if tensor is None else tensor.data_ptr())

    with cupy.cuda.Device(dev.index), _torch_stream(dev):
        module.get_function("own_histograms")(
            (-(-nq // warps),),
            (32 * warps,),
            (*(arg(t) for t in tensors), arg(skip), np.int32(nq), np.int32(nb), np.int32(xb.ndim == 2))
            + (arg(counts), arg(relevant)),
        )
    return counts, relevant
