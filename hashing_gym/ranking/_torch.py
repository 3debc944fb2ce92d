"""The ``"torch"`` backend: distances from a matmul of +-1 codes, and packed codes on a torch device.

Two parts. The metric functions' backend (:func:`hamming_words`, :func:`rank_words`, :func:`stats_words`)
takes codes and labels checked and packed into int64 words on the device (``_resident``) and returns
numpy results (:func:`rank_words`: tensors); on an NVIDIA GPU with CuPy its histograms and stable sums
come from the CUDA kernels (``_cuda``), else from plain torch: distances ``d = (bits - <x, y>) / 2`` of
+-1 float32 codes unpacked from the words (exact for ``bits < 2**24``) in chunks of queries,
``scatter_add`` histograms, and a stable sort for the stable sums. The packed functions
(:func:`packed_counts`, :func:`packed_stable`) keep everything on the device for callers whose codes
live there (the batched environments).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from hashing_gym.device import torch_device
from hashing_gym.ranking import _cuda, _metrics
from hashing_gym.ranking._checks import word_bits_of
from hashing_gym.ranking._packing import torch_popcount, torch_unpack

# Bytes of one chunk of the sort keys and distance matrices (16 times more on a GPU).
CHUNK_BYTES = 1 << 26


def device_of(device: Any) -> Any:
    """The torch device of a ranking call (None: CUDA when available, else the CPU)."""
    return torch_device("auto" if device is None else device)


def _unpacked(words: Any, bits: int, dtype: Any) -> Any:
    """0/1 (n, bits) in ``dtype`` from int64 words (n, W), in chunks of rows (the shifts' temporaries)."""
    import torch

    n = words.shape[0]
    out = torch.empty((n, bits), dtype=dtype, device=words.device)
    step = max(1, (1 << 16) // words.shape[1])  # 32 MB of int64 shifts a chunk
    for s in range(0, n, step):
        out[s : s + step] = torch_unpack(words[s : s + step], bits, 64)
    return out


def _signs(words: Any, bits: int) -> Any:
    """+-1 float32 codes (n, bits) of int64 words."""
    import torch

    return _unpacked(words, bits, torch.float32).mul_(2.0).sub_(1.0)


def _step(nb: int, arrays: int, dev: Any) -> int:
    """Queries per chunk so that ``arrays`` 8-byte (chunk, nb) tensors fit in the chunk budget."""
    budget = CHUNK_BYTES * (16 if dev.type == "cuda" else 1)
    return max(1, budget // (8 * arrays * nb))


def _distances(sq: Any, sb: Any, bits: int) -> Any:
    """int64 distances from +-1 float32 codes: (bits - <x, y>) / 2 (exact integers in float32)."""
    import torch

    return torch.round((bits - sq @ sb.T) * 0.5).to(torch.int64)


def hamming_words(xq: Any, xb: Any, bits: int) -> np.ndarray:
    """int32 (nq, nb) distances of int64 words on one device, as numpy."""
    import torch

    nq, nb = xq.shape[0], xb.shape[0]
    sb = _signs(xb, bits)
    out = np.empty((nq, nb), dtype=np.int32)
    step = _step(nb, 2, xq.device)
    with torch.no_grad():
        for s in range(0, nq, step):
            d = _distances(_signs(xq[s : s + step], bits), sb, bits)
            out[s : s + step] = d.to(torch.int32).cpu().numpy()
    return out


def rank_words(xq: Any, xb: Any, bits: int, k: int) -> tuple[Any, Any]:
    """Stable top ``k`` of int64 words: the ``k`` smallest unique keys ``d * nb + index``.

    Returns int32 distances and int64 indices (nq, k), tensors on the words' device.
    """
    import torch

    dev = xq.device
    nq, nb = xq.shape[0], xb.shape[0]
    sb = _signs(xb, bits)
    index = torch.arange(nb, device=dev)
    D = torch.empty((nq, k), dtype=torch.int32, device=dev)
    I = torch.empty((nq, k), dtype=torch.int64, device=dev)  # noqa: E741 (faiss' name)
    step = _step(nb, 3, dev)
    with torch.no_grad():
        for s in range(0, nq, step):
            key = _distances(_signs(xq[s : s + step], bits), sb, bits) * nb + index
            top = torch.topk(key, k, dim=1, largest=False, sorted=True).values
            D[s : s + step] = top // nb
            I[s : s + step] = top % nb
    return D, I


def to_host(tensors: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    """CUDA tensors as numpy arrays, through pinned buffers and one wait for the stream.

    ``.cpu()`` copies into pageable memory, about 2 GB/s on an H200 host (5 ms for the two (10,000, 65)
    int64 histograms); pinned buffers (torch's caching host allocator keeps them) run at the link's speed.
    """
    import torch

    if not tensors or not tensors[0].is_cuda:
        return tuple(tensor.cpu().numpy() for tensor in tensors)
    hosts = []
    for tensor in tensors:
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        hosts.append(host)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return tuple(host.numpy() for host in hosts)


def tie_aware_ap_words(
    xq: Any, lq: Any, xb: Any, lb: Any, bits: int, classes: int, k: int, cache: dict[str, Any] | None = None
) -> np.ndarray | None:
    """Tie-aware AP at cutoff ``k`` of every query, computed on the GPU from the CUDA kernels' histograms.

    Only the (nq,) APs come back to the host: the closed form over (nq, bits + 1) histograms takes an
    H200 about 0.1 ms, numba on the host about 9 ms (N = 1M, Q = 10k). The arguments are
    :func:`stats_words`'; None where the CUDA kernels do not take the problem (the caller then computes
    the AP from :func:`stats_words`' histograms on the host).
    """
    if not _cuda.usable_for(xb.shape[0], bits, lq.shape[1], xq.device):
        return None
    counts, relevant, _, _ = _cuda.stats(xq, lq, xb, lb, bits, classes > 0, (), False, cache)
    return to_host((_metrics.tie_aware_ap(counts, relevant, k, num_items=xb.shape[0]),))[0]


def stats_words(
    xq: Any,
    lq: Any,
    xb: Any,
    lb: Any,
    bits: int,
    classes: int,
    ks: tuple[int, ...],
    stable: bool,
    cache: dict[str, Any] | None = None,
) -> tuple[np.ndarray, ...]:
    """``(counts, relevant, ap_sum, hits)`` of every query, as numpy arrays (see ``_numba.stats_into``).

    Args:
        xq: query codes, int64 words (nq, ceil(bits / 64)) on the device (``_resident``'s loading).
        lq: query labels, int64 (nq, 1) class ids, or multi-hot labels of ``classes`` classes in int64 words.
        xb: database codes, like ``xq``.
        lb: database labels, like ``lq``.
        bits: the code length.
        classes: C of multi-hot labels, 0 for class ids.
        ks: stable cutoffs, each in 1..nb.
        stable: whether to compute the stable AP sums and hits at ``ks``.
        cache: the database's kernel cache (``Resident``'s), kept between calls; or None.
    """
    import torch

    dev = xq.device
    multi = classes > 0
    if _cuda.usable_for(xb.shape[0], bits, lq.shape[1], dev):
        return to_host(_cuda.stats(xq, lq, xb, lb, bits, multi, ks, stable and bool(ks), cache))
    nq, nb = xq.shape[0], xb.shape[0]
    sb = _signs(xb, bits)
    yb = _unpacked(lb, classes, torch.float32) if multi else lb[:, 0]
    counts = np.empty((nq, bits + 1), dtype=np.int64)
    relevant = np.empty((nq, bits + 1), dtype=np.int64)
    ap_sum = np.zeros((nq, len(ks)), dtype=np.float64)
    hits = np.zeros((nq, len(ks)), dtype=np.int64)
    step = _step(nb, 8, dev)
    with torch.no_grad():
        for s in range(0, nq, step):
            e = min(s + step, nq)
            d = _distances(_signs(xq[s:e], bits), sb, bits)
            if multi:
                rel = (_unpacked(lq[s:e], classes, torch.float32) @ yb.T) > 0
            else:
                rel = lq[s:e, 0][:, None] == yb[None, :]
            rel = rel.to(torch.int64)
            hist = torch.zeros((e - s, bits + 1), dtype=torch.int64, device=dev)
            counts[s:e] = hist.scatter_add(1, d, torch.ones_like(d)).cpu().numpy()
            relevant[s:e] = hist.scatter_add(1, d, rel).cpu().numpy()
            if stable and ks:
                sums, found = _metrics.stable_sums(d, rel, ks)
                ap_sum[s:e] = sums.cpu().numpy()
                hits[s:e] = found.cpu().numpy()
    return counts, relevant, ap_sum, hits


# ---------------------------------------------------------------------------------------------------------
# Packed codes on the device
# ---------------------------------------------------------------------------------------------------------


def _lists(xq: Any, lq: Any, xb: Any, lb: Any) -> tuple[Any, Any]:
    """Distances (nq, nb) in the words' dtype and relevance (nq, nb) bool (xb shared or one per query)."""
    width = word_bits_of(xq)
    database = xb if xb.ndim == 3 else xb[None]
    popcounts = torch_popcount(database ^ xq[:, None, :], width)
    distance = popcounts[..., 0] if xq.shape[1] == 1 else popcounts.sum(-1)
    if lq.ndim == 2:
        relevant = ((lq[:, None, :] & lb[None, :, :]) != 0).any(-1)
    else:
        relevant = lq[:, None] == lb[None, :]
    return distance, relevant


def packed_counts(xq: Any, lq: Any, xb: Any, lb: Any, bits: int, exclude: Any) -> tuple[Any, Any]:
    """Histograms (nq, bits + 1) int64 of packed codes on the device (item ``exclude[i]`` left out)."""
    import torch

    if _cuda.own_usable(xq, lq, xb, bits):  # one CUDA kernel, no (nq, nb) matrices
        return _cuda.own_counts(xq, lq, xb, lb, bits, exclude)

    m = xq.shape[0]
    distance, relevant = _lists(xq, lq, xb, lb)
    bins = bits + 2  # bin bits + 1 takes the item left out of each list
    # One bincount over keys row * 2 bins + 2 d + relevant, in int32 to halve the traffic.
    key = distance.to(torch.int32).mul_(2).add_(relevant)
    rows = torch.arange(m, device=xq.device)
    if exclude is not None:
        key[rows, exclude] = 2 * (bits + 1)
    key.add_((rows * (2 * bins)).to(torch.int32)[:, None])
    hist = torch.bincount(key.reshape(-1), minlength=m * bins * 2).reshape(m, bins, 2)
    return hist.sum(-1)[:, : bits + 1], hist[:, : bits + 1, 1]


# The torch.library registrations of this package: an operator lives as long as its Library object.
_LIBRARIES: list[Any] = []


@functools.lru_cache(maxsize=1)
def counts_operator() -> Any:
    """:func:`packed_counts` as the torch operator ``hashing_gym::packed_counts`` (registered at first call).

    ``torch.compile`` cannot trace the CUDA kernel's CuPy launch, and would split a graph around it; it
    calls an operator as one opaque node, so a compiled step can run its scan without leaving its graph
    (RankListHash-v0's ``fuse_step``). Same arguments and results as :func:`packed_counts`, with an
    ``exclude`` tensor. Registered through ``torch.library.Library`` rather than ``custom_op``, whose
    Python wrappers cost 2.5x the host time per call (on this project's 2-core development machine).
    """
    import torch

    library = torch.library.Library("hashing_gym", "FRAGMENT")
    arguments = "Tensor xq, Tensor lq, Tensor xb, Tensor lb, int bits, Tensor exclude"
    library.define(f"packed_counts({arguments}) -> (Tensor, Tensor)")
    library.impl("packed_counts", packed_counts, "CompositeExplicitAutograd")

    def shapes(xq: Any, lq: Any, xb: Any, lb: Any, bits: int, exclude: Any) -> tuple[Any, Any]:
        shape = (xq.shape[0], bits + 1)
        return xq.new_empty(shape, dtype=torch.int64), xq.new_empty(shape, dtype=torch.int64)

    torch.library.register_fake("hashing_gym::packed_counts", shapes, lib=library)
    _LIBRARIES.append(library)
    return torch.ops.hashing_gym.packed_counts.default


def packed_stable(
    xq: Any, lq: Any, xb: Any, lb: Any, bits: int, k: int, exclude: Any
) -> tuple[Any, Any, Any]:
    """Stable AP sums and hits (nq, 1) at cutoff ``k``, and relevant items (nq,), of packed codes."""
    import torch

    distance, relevant = _lists(xq, lq, xb, lb)
    distance = distance.to(torch.int64)
    if exclude is not None:  # last, and not relevant: out of the first nb - 1 positions
        rows = torch.arange(xq.shape[0], device=xq.device)
        distance[rows, exclude] = bits + 1
        relevant[rows, exclude] = False
    return (*_metrics.stable_sums(distance, relevant, (k,)), relevant.sum(1))
