r"""Exact retrieval metrics over a database sharded across processes (``torch.distributed``), and its CLI.

Each process (rank) of a process group holds one block of the database (codes and labels) and all the
queries; :func:`evaluate_retrieval_sharded` returns on every rank what :func:`evaluate_retrieval` returns
on one process for the concatenated database, bitwise: stable and tie-aware mAP@all, mAP@k, P@radius,
P@k. The database order is the rank order: rank 0 holds the first items, rank ``N - 1`` the last (the
stable ranking breaks ties by database index, so the order matters).

How (our design, no approximation):
    - Per-distance histograms add across shards: each rank counts, per query and Hamming distance, its
      items and its relevant items ((nq, bits + 1) int64 twice), and one ``all_reduce`` sums them. The
      tie-aware mAP, P@radius and the PR curve are functions of these integers alone, so they are
      bitwise the single-process ones.
    - The stable (database-order) AP places each item at position ``N_<(d) + E(d) + s``: the items at
      smaller distances (all shards), the items at its distance in earlier shards, and its rank among
      the items at its distance in its own shard. The single-process numba kernel sums the relevant
      items' precisions in database order, one float64 addition after another; float addition is not
      associative, so adding per-shard partial sums would differ in the last bits. Here the running
      sum travels along a chain instead: rank ``r`` receives from rank ``r - 1`` the running sums (and
      hits) and the items per distance of the shards before it, continues the same additions over its
      own items in their order, and sends the result on (point-to-point, pipelined over chunks of
      queries, so all ranks work at once but for ``N - 1`` chunks at the start). Every term and every
      addition is the single-process kernel's, in its order: the sums are bitwise equal, and so is
      every metric (the last rank broadcasts the final sums; every rank then runs the formulas of
      :func:`evaluate_retrieval`). ``tests/test_distributed_ranking.py`` checks this bitwise on 1 to 3
      gloo processes with uneven and empty shards, single- and multi-label.
    - Before any of this, one ``all_gather`` of a small signature (bits, number of queries, a checksum
      of the queries' codes and labels, label kind and classes, ``topk``, ``radius``, this rank's items,
      and its own error message if its inputs were bad): every rank then raises the same
      ``ValueError`` naming the rank and the problem, so a bad shard never leaves the others waiting.

Where the local work runs (``device``): each rank's histograms (pass 1) go through the resident path
of :class:`~hashing_gym.ranking.HammingIndex` (its blocks loaded into a ``_resident.Resident``): on the
group's device by default, so with the ``nccl`` backend the CUDA kernels on ``cuda:LOCAL_RANK``
(``LOCAL_RANK`` from torchrun, else the current CUDA device; where they do not take the problem, no
CuPy or codes over 383 bits, numba on the CPU) and with gloo the numba kernels on the CPU;
an explicit ``device`` is read as :func:`hashing_gym.device.array_device` reads it (``"cpu"``: numba;
``"cuda[:N]"`` or a ``torch.device``: the ``"torch"`` backend's kernels there). Histograms are integers,
so every device gives bitwise the same. The chained stable pass runs on the CPU (numba) either way: its
float64 sums must be the single-process kernel's additions in its order. With ``nccl`` the messages are
CUDA tensors on the rank's GPU; with gloo (or a mixed ``cpu:gloo,cuda:nccl`` group) CPU tensors.

Shard folders (our format, version 1; :func:`write_shards` writes one): a database as numbered shards,
each a pair of ``.npy`` files that ``np.load(mmap_mode=...)`` memory-maps (an ``.npz`` member cannot
be), plus small JSON descriptions::

    DIR/meta.json                 {"format": "hashing-gym shards", "version": 1, "bits": b,
                                   "labels": "class ids" | "multi-hot", "classes": C | null,
                                   "items": [n_0, n_1, ...]}
    DIR/shard_00000.codes.npy     uint64 (n_0, ceil(b / 64)): codes packed as pack_codes packs them
    DIR/shard_00000.labels.npy    int64 (n_0,) class ids, or uint64 (n_0, ceil(C / 64)) packed multi-hot
    DIR/shard_00000.json          {"bits": b, "labels": ..., "classes": ..., "items": n_0}
    ...

The shards' order is the database order. A rank of ``N`` takes a contiguous run of shards (shard ``i``
goes to the rank whose ``1/N`` of the items holds the shard's middle item: :func:`shard_ranges`), so that
rank order stays database order; write at least as many shards as ranks, of similar sizes, for an even
load. Each shard's own JSON lets a rank
tell a shard of another database (other bits or label width) from a good one.

Command line (``python -m hashing_gym.ranking.distributed --help``)::

    python -m hashing_gym.ranking.distributed --split db.npz --shards 8 --database shards/
    torchrun --standalone --nproc-per-node=2 -m hashing_gym.ranking.distributed \
        --queries queries.npz --database shards/

``db.npz`` and ``queries.npz`` hold ``codes`` (n, bits) of 0/1 and ``labels`` (n,) or (n, C). Rank 0
prints the metrics (floats in full precision), then the wall time from a barrier of all ranks to the end
(opening the shards and reading the queries included) and query-item pairs per second. A
bad input (a missing shard, a shard of other bits or label width, queries that do not match the
database) is one ``error: ...`` line on every rank and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import prange

from hashing_gym.files import atomic_path
from hashing_gym.ranking import _numba, _resident  # _numba first: it chooses numba's threading layer
from hashing_gym.ranking._api import _Stats, retrieval_metrics
from hashing_gym.ranking._checks import check_binary, check_codes, check_labels, check_packed, check_radius
from hashing_gym.ranking._packing import label_words, pack_words
from hashing_gym.validation import check_positive_int

__all__ = [
    "distance_counts_sharded",
    "evaluate_packed_sharded",
    "evaluate_retrieval_sharded",
    "evaluate_shard_folder",
    "main",
    "open_shards",
    "shard_ranges",
    "write_shards",
]

FORMAT = "hashing-gym shards"
VERSION = 1
# Chunks of queries per rank in the chained pass: the chain's start-up costs N - 1 chunks of the last
# rank's time, so with 4 chunks per rank it is under a quarter of the pass.
CHUNKS_PER_RANK = 4
# Bytes of a rank's error message carried by the agreement's all_gather (longer ones are cut).
MESSAGE_BYTES = 1024
# The fields every rank must agree on, in the order they are checked, with their names in messages.
_AGREED = (
    ("bits", "the code length (bits)"),
    ("nq", "the number of queries"),
    ("kind", "the label kind"),
    ("classes", "the number of classes of the multi-hot labels"),
    ("topk", "topk"),
    ("radius", "radius"),
    ("checksum", "the queries (a checksum of their codes and labels)"),
)
_KINDS = {1: "class ids (1-D)", 2: "multi-hot (2-D)"}


# ---------------------------------------------------------------------------------------------------------
# Kernels: the chained stable scan (pass 2)
# ---------------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _scan_row(xq, xb, lq, lb, i, multi, ks, start, rel_start, ap_sum, hits):
    """Query ``i``'s stable AP sums and hits over one block, continuing ``ap_sum[i]`` and ``hits[i]``.

    ``start[i, d]`` (``rel_start[i, d]``) are the items (relevant items) ranked before this block's
    first item at distance ``d``; on return they count this block's items too, ready for the next
    block. The sums are ``_numba.scan_keys``'s, the single-process kernel's own, and the additions run in
    database order, so a chain of blocks adds exactly what the single-process kernel adds, in its order.
    """
    nbins = start.shape[1]
    bits = nbins - 1
    last_mask = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - bits % 64) % 64)
    keys = np.empty(xb.shape[0], dtype=np.int64)
    one_word = xq.shape[1] == 1 and not multi
    for j in range(xb.shape[0]):
        if one_word:  # the common case without the general loops (as _numba._keys_one_word)
            relevant = 1 if lq[i, 0] == lb[j, 0] else 0
            keys[j] = 2 * _numba._popcount((xq[i, 0] ^ xb[j, 0]) & last_mask) + relevant
        else:
            keys[j] = 2 * _numba._masked_distance(xq, i, xb, j, last_mask) + _numba._is_relevant(
                lq, i, lb, j, multi
            )
    seen = np.zeros(2 * nbins, dtype=np.int64)  # this block's items per key 2 d + relevant
    _numba.scan_keys(keys, start[i], rel_start[i], seen, ks, ap_sum[i], hits[i])
    for d in range(nbins):  # this block's items, ahead of the next block's
        start[i, d] += seen[2 * d] + seen[2 * d + 1]
        rel_start[i, d] += seen[2 * d + 1]


@numba.njit(cache=True, parallel=True)
def _scan_parallel(xq, xb, lq, lb, multi, ks, start, rel_start, ap_sum, hits):
    for i in prange(xq.shape[0]):
        _scan_row(xq, xb, lq, lb, i, multi, ks, start, rel_start, ap_sum, hits)


@numba.njit(cache=True)
def _scan_serial(xq, xb, lq, lb, multi, ks, start, rel_start, ap_sum, hits):
    for i in range(xq.shape[0]):
        _scan_row(xq, xb, lq, lb, i, multi, ks, start, rel_start, ap_sum, hits)


def _scan(xq, xb, lq, lb, multi, ks, start, rel_start, ap_sum, hits) -> None:
    """Continue the stable sums of the queries ``xq`` over the block ``xb`` (parallel for large work)."""
    kernel = _scan_parallel if xq.shape[0] * xb.shape[0] >= _numba.PARALLEL_MIN_PAIRS else _scan_serial
    kernel(xq, xb, lq, lb, multi, ks, start, rel_start, ap_sum, hits)


# ---------------------------------------------------------------------------------------------------------
# One rank's inputs, checked locally
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Local:
    """This rank's checked inputs (packed for the kernels), or the error that its inputs raised."""

    bits: int = -1
    nq: int = -1
    kind: int = -1  # 1: class ids, 2: multi-hot
    classes: int = 0  # C for multi-hot labels, 0 for class ids
    topk: int = -1
    radius: int = -1
    checksum: int = 0
    xq: Any = None  # uint64 (nq, W)
    lq: Any = None  # int64 (nq, LW): label_words' layout
    blocks: list = field(default_factory=list)  # [(uint64 (n, W), int64 (n, LW))], database order
    error: str | None = None
    device: Any = None  # the histograms' (torch device, engine) from _resident.placement; None: the group's

    @property
    def nb(self) -> int:
        """Items of this rank's blocks."""
        return sum(int(codes.shape[0]) for codes, _ in self.blocks)


def _query_checksum(xq: np.ndarray, lq: np.ndarray, bits: int, kind: int, classes: int) -> int:
    """64 bits of a BLAKE2b digest of the packed queries and their labels, as a signed int64."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.array([bits, kind, classes, *xq.shape, *lq.shape], dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(xq).tobytes())
    digest.update(np.ascontiguousarray(lq).tobytes())
    return int.from_bytes(digest.digest(), "little", signed=True)


def _local_queries(q_codes: Any, q_labels: Any, topk: Any, radius: Any) -> _Local:
    """Checked 0/1 queries and the cutoffs; raises ValueError."""
    xq = check_codes(q_codes, "query codes")
    yq = check_labels(q_labels, xq.shape[0], "query labels")
    kind = yq.ndim
    local = _Local(
        bits=xq.shape[1],
        nq=xq.shape[0],
        kind=kind,
        classes=yq.shape[1] if kind == 2 else 0,
        topk=check_positive_int(topk, "topk"),
        radius=check_radius(radius),
        xq=pack_words(xq),
        lq=np.ascontiguousarray(label_words(yq), dtype=np.int64),
    )
    local.checksum = _query_checksum(local.xq, local.lq, local.bits, kind, local.classes)
    return local


def _dense_block(local: _Local, db_codes: Any, db_labels: Any) -> None:
    """Check this rank's 0/1 shard against the queries and append it, packed (an empty shard is allowed)."""
    xb = np.asarray(db_codes)
    if xb.ndim != 2 or xb.shape[1] != local.bits:
        raise ValueError(
            f"database codes (this rank's shard) must be 0/1 (n, {local.bits}) like the queries, "
            f"got shape {xb.shape}"
        )
    n = xb.shape[0]
    yb = np.asarray(db_labels)
    if n == 0 and yb.size == 0 and yb.ndim == local.kind:  # an empty shard of any dtype
        yb = np.zeros((0, local.classes) if local.kind == 2 else (0,), dtype=np.int64)
    else:
        yb = check_labels(yb, n, "database labels")
    if yb.ndim != local.kind:
        raise ValueError(f"query labels are {_KINDS[local.kind]} but database labels are {_KINDS[yb.ndim]}")
    if local.kind == 2 and yb.shape[1] != local.classes:
        raise ValueError(
            f"query and database multi-hot labels must have the same number of classes, got "
            f"{local.classes} and {yb.shape[1]}"
        )
    if n:
        local.blocks.append((pack_words(check_binary(xb, "database codes")), label_words(yb)))


def _packed_block(local: _Local, codes: Any, labels: Any, name: str = "database") -> None:
    """Check one packed block (codes as pack_codes packs them; class ids or packed multi-hot labels)."""
    codes = np.asarray(codes)  # a memory map stays a view of its file
    check_packed(f"{name} codes", codes, local.bits, per_query=False)
    labels = np.asarray(labels)
    n = codes.shape[0]
    if local.kind == 1:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"{name} labels must be integer class ids (n,), got {labels.dtype} {labels.shape}"
            )
        words = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1, 1)
    else:
        width = -(-local.classes // 64)
        if labels.ndim != 2 or labels.dtype != np.uint64 or labels.shape[1] != width:
            raise ValueError(
                f"{name} labels must be multi-hot labels of {local.classes} classes packed by pack_codes, "
                f"uint64 (n, {width}), got {labels.dtype} of shape {labels.shape}"
            )
        words = np.ascontiguousarray(labels).view(np.int64)
    if words.shape[0] != n:
        raise ValueError(f"{name} has {n} codes but {words.shape[0]} labels")
    if n:
        local.blocks.append((np.ascontiguousarray(codes), words))


# ---------------------------------------------------------------------------------------------------------
# Communication
# ---------------------------------------------------------------------------------------------------------


class _Comm:
    """The process group's collectives on int64 numpy arrays (sent as CPU or CUDA tensors)."""

    def __init__(self, group: Any) -> None:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "torch.distributed is not initialized: call torch.distributed.init_process_group first "
                "(torchrun sets up the environment it reads)"
            )
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise ValueError("this process is not a member of the process group it was given")
        self.size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.device = torch.device("cpu")
        if self.backend == "nccl":  # NCCL moves CUDA tensors only: each rank's own GPU
            index = os.environ.get("LOCAL_RANK")
            self.device = torch.device(
                "cuda", int(index) if index is not None else torch.cuda.current_device()
            )

    def global_rank(self, rank: int) -> int:
        """The default group's rank of this group's ``rank``."""
        return rank if self.group is None else self.dist.get_global_rank(self.group, rank)

    def _tensor(self, array: np.ndarray) -> Any:
        """A copy of ``array`` on the group's device (a copy: collectives write into their tensors)."""
        import torch

        return torch.from_numpy(np.array(array, copy=True, order="C")).to(self.device)

    def all_gather(self, array: np.ndarray) -> list[np.ndarray]:
        import torch

        tensor = self._tensor(array)
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        self.dist.all_gather(parts, tensor, group=self.group)
        return [part.cpu().numpy() for part in parts]

    def all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        tensor = self._tensor(array)
        self.dist.all_reduce(tensor, group=self.group)
        return tensor.cpu().numpy()

    def broadcast(self, array: np.ndarray, src: int) -> np.ndarray:
        tensor = self._tensor(array)
        self.dist.broadcast(tensor, src=self.global_rank(src), group=self.group)
        return tensor.cpu().numpy()

    def isend(self, array: np.ndarray, dst: int) -> tuple[Any, Any]:
        """Start sending; the tensor is returned with the request (it must live until the send is done)."""
        tensor = self._tensor(array)
        return self.dist.isend(tensor, dst=self.global_rank(dst), group=self.group), tensor

    def recv(self, shape: tuple[int, ...], src: int) -> np.ndarray:
        import torch

        tensor = torch.empty(shape, dtype=torch.int64, device=self.device)
        self.dist.recv(tensor, src=self.global_rank(src), group=self.group)
        return tensor.cpu().numpy()


def _agree(local: _Local, comm: _Comm) -> int:
    """One all_gather of every rank's signature: the same ValueError on every rank, or the total items."""
    message = np.zeros(MESSAGE_BYTES, dtype=np.uint8)
    if local.error is not None:
        text = local.error.encode("utf-8")[:MESSAGE_BYTES]
        message[: len(text)] = np.frombuffer(text, dtype=np.uint8)
    head = [int(local.error is not None), local.nb if local.error is None else 0]
    head += [int(getattr(local, name)) for name, _ in _AGREED]
    rows = comm.all_gather(np.concatenate([np.array(head, dtype=np.int64), message.view(np.int64)]))
    failed = [rank for rank, row in enumerate(rows) if row[0]]
    if failed:
        rank = failed[0]
        text = rows[rank][len(head) :].view(np.uint8).tobytes().rstrip(b"\0").decode("utf-8", "replace")
        more = f" (ranks {', '.join(map(str, failed[1:]))} failed too)" if len(failed) > 1 else ""
        raise ValueError(f"rank {rank}: {text}{more}")
    for column, (name, words) in enumerate(_AGREED, start=2):
        values = [int(row[column]) for row in rows]
        other = next((rank for rank, value in enumerate(values) if value != values[0]), None)
        if other is not None:

            def show(value: int, name: str = name) -> str:
                if name == "kind":
                    return _KINDS.get(value, str(value))
                return f"{value & (2**64 - 1):016x}" if name == "checksum" else str(value)

            raise ValueError(
                f"the ranks disagree on {words}: rank 0 has {show(values[0])}, rank {other} has "
                f"{show(values[other])} (every rank must hold all the queries and use the same arguments)"
            )
    total = sum(int(row[1]) for row in rows)
    if total == 0:
        raise ValueError("the database is empty: no rank holds an item")
    return total


# ---------------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------------


def _sharded_stats(local: _Local, comm: _Comm, stable: bool) -> tuple[_Stats, int, int]:
    """Global histograms and (if ``stable``) stable sums at ``(nb, k)`` of every query, on every rank.

    Returns the stats, the total number of items ``nb`` and the cutoff ``k = min(topk, nb)``.
    """
    nb = _agree(local, comm)
    k = min(local.topk, nb)
    nq, nbins, multi = local.nq, local.bits + 1, local.kind == 2
    # Pass 1: this rank's histograms, block by block, on its device.
    mine = np.zeros((2, nq, nbins), dtype=np.int64)
    dev, engine = local.device or _group_place(local, comm)
    if local.blocks:
        xq, lq = _resident.load_words(local.xq, dev), _resident.load_words(local.lq, dev)
    for codes, labels in local.blocks:
        block_counts, block_relevant = _histograms_of(local, codes, labels, xq, lq, dev, engine)
        mine[0] += block_counts
        mine[1] += block_relevant
    total = comm.all_reduce_sum(mine)
    counts, relevant = total[0], total[1]
    ks = np.array([nb, k], dtype=np.int64)
    ap_sum = np.zeros((nq, len(ks)), dtype=np.float64)
    hits = np.zeros((nq, len(ks)), dtype=np.int64)
    if stable:
        _chain(local, comm, mine, counts, relevant, ks, ap_sum, hits, multi)
    return _Stats(counts, relevant, ap_sum, hits), nb, k


def _group_place(local: _Local, comm: _Comm) -> tuple[Any, str]:
    """The histograms' default place: the rank's GPU under NCCL when the CUDA kernels take the blocks.

    Otherwise (gloo; or no CuPy, codes over 383 bits: plain torch would hold +-1 float32 copies of the
    blocks) the numba kernels on the CPU, as before there was a GPU path.
    """
    import torch

    from hashing_gym.ranking import _cuda

    if comm.device.type == "cuda":
        largest = max((int(codes.shape[0]) for codes, _ in local.blocks), default=0)
        if _cuda.usable_for(largest, local.bits, local.lq.shape[1], comm.device):
            return comm.device, "torch"
    return torch.device("cpu"), "numba"


def _histograms_of(
    local: _Local, codes: np.ndarray, labels: np.ndarray, xq: Any, lq: Any, dev: Any, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """One block's histograms of the queries (words ``xq``, ``lq`` on ``dev``), as a resident database."""
    words = _resident.load_words(codes, dev)  # the CPU: views of the (memory-mapped) block, not copies
    database = _resident.Resident(words, _resident.load_words(labels, dev), local.bits, local.classes, engine)
    counts, relevant, _, _ = database.stats(xq, lq, (), False)
    return counts, relevant


def _chain(local, comm, mine, counts, relevant, ks, ap_sum, hits, multi) -> None:
    """Pass 2: the stable sums along the chain of ranks, chunk by chunk, into ``ap_sum`` and ``hits``.

    The last rank ends with the final sums and broadcasts them.
    """
    nq, nbins, nks = local.nq, counts.shape[1], len(ks)
    before = np.cumsum(counts, axis=1) - counts  # N_<: items at smaller distances, all shards
    rel_before = np.cumsum(relevant, axis=1) - relevant  # R_<
    last = comm.size - 1
    chunks = 1 if comm.size == 1 else min(nq, CHUNKS_PER_RANK * comm.size)
    bounds = np.linspace(0, nq, chunks + 1).round().astype(np.int64)
    width = 2 * nbins + 2 * nks  # message: earlier shards' items, relevant items, hits, sums (as int64 bits)
    sends = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if e == s:
            continue
        if comm.rank > 0:
            message = comm.recv((e - s, width), comm.rank - 1)
        else:
            message = np.zeros((e - s, width), dtype=np.int64)
        earlier = message[:, :nbins]
        rel_earlier = message[:, nbins : 2 * nbins]
        chunk_hits = np.ascontiguousarray(message[:, 2 * nbins : 2 * nbins + nks])
        chunk_sums = np.ascontiguousarray(message[:, 2 * nbins + nks :]).view(np.float64)
        start = np.ascontiguousarray(before[s:e] + earlier)
        rel_start = np.ascontiguousarray(rel_before[s:e] + rel_earlier)
        xq, lq = local.xq[s:e], local.lq[s:e]
        for codes, labels in local.blocks:  # each scan moves start and rel_start past its block
            _scan(xq, codes, lq, labels, multi, ks, start, rel_start, chunk_sums, chunk_hits)
        if comm.rank < last:
            out = np.concatenate(
                [earlier + mine[0, s:e], rel_earlier + mine[1, s:e], chunk_hits, chunk_sums.view(np.int64)],
                axis=1,
            )
            sends.append(comm.isend(out, comm.rank + 1))
        else:
            ap_sum[s:e] = chunk_sums
            hits[s:e] = chunk_hits
    for request, _ in sends:
        request.wait()
    final = comm.broadcast(np.concatenate([hits, ap_sum.view(np.int64)], axis=1), last)
    hits[:] = final[:, :nks]
    ap_sum[:] = np.ascontiguousarray(final[:, nks:]).view(np.float64)


def _run(local: _Local, group: Any, stable: bool) -> tuple[_Stats, int, int]:
    return _sharded_stats(local, _Comm(group), stable)


def _checked_local(build: Any, device: Any = None) -> _Local:
    """``build()``'s inputs with ``device`` placed, or a record of the ValueError raised (for the others)."""
    try:
        local = build()
        if device is not None:  # a bad device, or CUDA on a rank without it: an error on every rank
            local.device = _resident.placement(device)
        return local
    except ValueError as error:
        return _Local(error=str(error))


def evaluate_retrieval_sharded(
    q_codes: Any,
    q_labels: Any,
    db_codes: Any,
    db_labels: Any,
    *,
    group: Any = None,
    topk: int = 1000,
    radius: int = 2,
    device: Any = None,
) -> dict[str, float]:
    """:func:`evaluate_retrieval` over a database split across the ranks of a process group.

    Call it on every rank of ``group`` (a collective): each passes all the queries and its own block of
    the database; the database is the ranks' blocks concatenated in rank order.

    Args:
        q_codes: query codes, 0/1 (nq, bits): the same on every rank.
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C): the same on every rank.
        db_codes: this rank's database codes, 0/1 (n, bits); n may be 0.
        db_labels: this rank's database labels, of the queries' kind, (n,) or (n, C).
        group: a ``torch.distributed`` process group (gloo or NCCL); None for the default group.
        topk: cutoff of ``map_at_k`` and ``precision_at_k`` (>= 1; capped to the whole database).
        radius: Hamming radius of ``precision_radius{radius}``.
        device: where this rank computes its histograms: None for the group's device (NCCL: the rank's
            GPU, CUDA kernels; gloo: numba on the CPU), ``"cpu"`` (numba), ``"cuda[:N]"`` or a
            ``torch.device`` (the ``"torch"`` backend's kernels there). The stable pass runs on the CPU.

    Returns:
        On every rank, bitwise the dictionary :func:`evaluate_retrieval` returns for the concatenated
        database on one process (numpy backend), whatever the device.

    Raises:
        ValueError: on every rank alike, naming the rank, if any rank's inputs are bad, if the ranks
            disagree on the queries, ``topk`` or ``radius``, or if the whole database is empty; on this
            rank only, if torch.distributed is not initialized.
    """

    def build() -> _Local:
        local = _local_queries(q_codes, q_labels, topk, radius)
        _dense_block(local, db_codes, db_labels)
        return local

    stats, nb, k = _run(_checked_local(build, device), group, stable=True)
    return retrieval_metrics(stats, nb, k, check_radius(radius))


def distance_counts_sharded(
    q_codes: Any, q_labels: Any, db_codes: Any, db_labels: Any, *, group: Any = None, device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distance_counts` of the whole sharded database, on every rank (one all_reduce).

    Arguments as :func:`evaluate_retrieval_sharded`. The histograms are the integers of the whole
    database, so :func:`average_precision_from_counts` and the precision-recall curve computed from
    them are bitwise the single-process ones.

    Returns:
        ``(counts, relevant)``, int64 (nq, bits + 1).
    """

    def build() -> _Local:
        local = _local_queries(q_codes, q_labels, 1, 0)
        _dense_block(local, db_codes, db_labels)
        return local

    stats, _, _ = _run(_checked_local(build, device), group, stable=False)
    return stats.counts, stats.relevant


def evaluate_packed_sharded(
    q_codes: Any,
    q_labels: Any,
    blocks: Sequence[tuple[Any, Any]],
    *,
    group: Any = None,
    topk: int = 1000,
    radius: int = 2,
    device: Any = None,
) -> dict[str, float]:
    """:func:`evaluate_retrieval_sharded` with this rank's database as packed blocks (memory maps, say).

    A database of 10^9 64-bit codes is 8 GB packed and 64 GB as 0/1 bytes: this form never unpacks it.

    Args:
        q_codes: query codes, 0/1 (nq, bits), the same on every rank.
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C), the same on every rank.
        blocks: this rank's part of the database, in database order: ``(codes, labels)`` pairs, codes
            packed by :func:`pack_codes` (uint64 (n, ceil(bits / 64))), labels int class ids (n,) or
            multi-hot labels packed by :func:`pack_codes` (uint64 (n, ceil(C / 64))). May be empty.
        group: a ``torch.distributed`` process group; None for the default group.
        topk: cutoff of ``map_at_k`` and ``precision_at_k`` (>= 1; capped to the whole database).
        radius: Hamming radius of ``precision_radius{radius}``.
        device: where this rank computes its histograms (see :func:`evaluate_retrieval_sharded`).

    Returns:
        The dictionary of :func:`evaluate_retrieval`, bitwise, on every rank.
    """

    def build() -> _Local:
        local = _local_queries(q_codes, q_labels, topk, radius)
        for index, (codes, labels) in enumerate(blocks):
            _packed_block(local, codes, labels, f"database block {index}")
        return local

    stats, nb, k = _run(_checked_local(build, device), group, stable=True)
    return retrieval_metrics(stats, nb, k, check_radius(radius))


# ---------------------------------------------------------------------------------------------------------
# Shard folders
# ---------------------------------------------------------------------------------------------------------


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def _write_atomic(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file next to ``path``, flushed to disk, then renamed over it."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)


def _write_json(path: Path, value: dict) -> None:
    _write_atomic(path, lambda handle: handle.write((json.dumps(value, indent=1) + "\n").encode()))


def write_shards(
    directory: str | os.PathLike, codes: Any, labels: Any, *, shards: int | Sequence[int]
) -> dict:
    """Write a database as a shard folder (the format in the module docstring), in database order.

    Args:
        directory: the folder (created; it must not hold a shard folder already).
        codes: database codes, 0/1 (n, bits).
        labels: class ids (n,) or multi-hot 0/1 (n, C).
        shards: the number of shards (sizes as ``np.array_split`` makes them), or the items of each
            shard (non-negative, summing to n; zeros give empty shards).

    Returns:
        The folder's ``meta.json`` contents. Every file is written atomically, ``meta.json`` last.

    Raises:
        ValueError: on bad codes, labels or sizes, or if ``directory`` already holds ``meta.json``.
    """
    xb = check_codes(codes, "codes")
    yb = check_labels(labels, xb.shape[0], "labels")
    n, bits = xb.shape
    if isinstance(shards, (int, np.integer)) and not isinstance(shards, bool):
        sizes = [len(part) for part in np.array_split(np.arange(n), check_positive_int(shards, "shards"))]
    else:
        sizes = [int(size) for size in shards]
        if not sizes or min(sizes) < 0 or sum(sizes) != n:
            raise ValueError(f"shards must be a count or item counts summing to {n}, got {list(shards)}")
    folder = Path(directory)
    if (folder / "meta.json").exists():
        raise ValueError(f"{folder} already holds a shard folder (meta.json): write into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    kind = "multi-hot" if yb.ndim == 2 else "class ids"
    classes = int(yb.shape[1]) if yb.ndim == 2 else None
    packed_codes = pack_words(xb)
    packed_labels = pack_words(yb) if yb.ndim == 2 else yb
    offset = 0
    for index, size in enumerate(sizes):
        part = slice(offset, offset + size)
        offset += size
        name = _shard_name(index)
        _write_atomic(folder / f"{name}.codes.npy", lambda h, a=packed_codes[part]: np.save(h, a))
        _write_atomic(folder / f"{name}.labels.npy", lambda h, a=packed_labels[part]: np.save(h, a))
        _write_json(
            folder / f"{name}.json", {"bits": bits, "labels": kind, "classes": classes, "items": size}
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "bits": bits,
        "labels": kind,
        "classes": classes,
        "items": sizes,
    }
    _write_json(folder / "meta.json", meta)
    return meta


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return value


def _read_meta(folder: Path) -> dict:
    """The folder's checked ``meta.json``."""
    meta = _read_json(folder / "meta.json")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{folder / 'meta.json'} is not a {FORMAT!r} folder of version {VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    bits, kind, classes, items = meta.get("bits"), meta.get("labels"), meta.get("classes"), meta.get("items")
    good = (
        isinstance(bits, int)
        and bits > 0
        and kind in ("class ids", "multi-hot")
        and (classes is None if kind == "class ids" else isinstance(classes, int) and classes > 0)
        and isinstance(items, list)
        and all(isinstance(size, int) and size >= 0 for size in items)
    )
    if not good:
        raise ValueError(f"{folder / 'meta.json'} has bad fields: {meta!r}")
    return meta


def shard_ranges(items: Sequence[int], world_size: int) -> list[range]:
    """The shards of each rank: contiguous runs in database order, balanced by items.

    Our rule: shard ``i`` goes to the rank whose equal share of the items holds the shard's middle,
    ``floor(world_size * (first_i + items_i / 2) / total)``. Rank order stays database order, as the
    stable ranking needs; a rank may get no shard (when there are fewer shards than ranks, say).

    >>> [list(r) for r in shard_ranges([10, 10, 10, 10], 2)]
    [[0, 1], [2, 3]]
    >>> [list(r) for r in shard_ranges([30, 0, 45, 5, 60], 3)]
    [[0, 1], [2, 3], [4]]
    """
    world_size = check_positive_int(world_size, "world_size")
    total = sum(items)
    owner, first = [], 0
    for size in items:  # integers: 2 * world_size * (first + size / 2) // (2 * total)
        owner.append(min(world_size - 1, world_size * (2 * first + size) // (2 * total)) if total else 0)
        first += size
    ranges = []
    for rank in range(world_size):
        mine = [index for index, who in enumerate(owner) if who == rank]
        ranges.append(range(mine[0], mine[-1] + 1) if mine else range(0))
    return ranges


def _load_array(path: Path, items: int) -> np.ndarray:
    """One ``.npy`` file, memory-mapped copy-on-write (never pickled objects); an empty one read whole."""
    try:
        return np.load(path, mmap_mode=None if items == 0 else "c", allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy array: {error}") from None


def open_shards(
    directory: str | os.PathLike, rank: int = 0, world_size: int = 1
) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]]]:
    """The folder's meta and the memory-mapped, checked shards of ``rank`` among ``world_size`` ranks.

    Returns:
        ``(meta, blocks)``: the folder's ``meta.json`` and ``(codes, labels)`` of the rank's shards (see
        :func:`shard_ranges`), in database order, as :func:`evaluate_packed_sharded` takes them.

    Raises:
        ValueError: naming the file, if ``meta.json`` or one of the rank's shard files is missing or
            unreadable, or a shard does not match ``meta.json`` (bits, label kind or classes, items).
    """
    world_size = check_positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in 0..{world_size - 1}, got {rank!r}")
    folder = Path(directory)
    meta = _read_meta(folder)
    bits, kind, classes = meta["bits"], meta["labels"], meta["classes"]
    blocks = []
    for index in shard_ranges(meta["items"], world_size)[rank]:
        name = _shard_name(index)
        items = meta["items"][index]
        own = _read_json(folder / f"{name}.json")
        mine = {key: own.get(key) for key in ("bits", "labels", "classes", "items")}
        expected = {"bits": bits, "labels": kind, "classes": classes, "items": items}
        if mine != expected:
            wrong = [
                f"{key} {mine[key]!r} (meta.json: {expected[key]!r})"
                for key in expected
                if mine[key] != expected[key]
            ]
            raise ValueError(f"{folder / name}.json does not match the folder: {', '.join(wrong)}")
        codes = _load_array(folder / f"{name}.codes.npy", items)
        labels = _load_array(folder / f"{name}.labels.npy", items)
        words = -(-bits // 64)
        if codes.dtype != np.uint64 or codes.shape != (items, words):
            raise ValueError(
                f"{folder / name}.codes.npy must be uint64 ({items}, {words}) (packed {bits}-bit codes), got "
                f"{codes.dtype} {codes.shape}"
            )
        label_shape = (items,) if kind == "class ids" else (items, -(-classes // 64))
        label_dtype = np.int64 if kind == "class ids" else np.uint64
        if labels.dtype != label_dtype or labels.shape != label_shape:
            raise ValueError(
                f"{folder / name}.labels.npy must be {np.dtype(label_dtype)} {label_shape} ({kind}), got "
                f"{labels.dtype} {labels.shape}"
            )
        if bits % 64 and items and (codes[:, -1] >> np.uint64(bits % 64)).any():
            raise ValueError(
                f"{folder / name}.codes.npy has bits set beyond bit {bits}: codes of another length"
            )
        blocks.append((codes, labels))
    return meta, blocks


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``codes`` and ``labels`` arrays of an ``.npz`` (never pickles); ValueError names the file."""
    try:
        arrays = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an .npz file (codes and labels arrays): it holds one array")
    with arrays:
        missing = {"codes", "labels"} - set(arrays.files)
        if missing:
            raise ValueError(f"{path} has no {' or '.join(sorted(missing))} array (it has {arrays.files})")
        try:
            return arrays["codes"], arrays["labels"]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a readable .npz file: {error}") from None


def _match_meta(codes: Any, labels: Any, meta: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The queries' 0/1 codes and labels, checked against a shard folder's ``meta``."""
    codes = check_codes(codes, f"{name} codes")
    labels = check_labels(labels, codes.shape[0], f"{name} labels")
    if codes.shape[1] != meta["bits"]:
        raise ValueError(f"{name}: {codes.shape[1]}-bit codes, but the database has {meta['bits']}-bit codes")
    kind = "multi-hot" if labels.ndim == 2 else "class ids"
    if kind != meta["labels"] or (labels.ndim == 2 and labels.shape[1] != meta["classes"]):
        width = f" of {labels.shape[1]} classes" if labels.ndim == 2 else ""
        want = f" of {meta['classes']} classes" if meta["classes"] else ""
        raise ValueError(f"{name}: {kind} labels{width}, but the database has {meta['labels']} labels{want}")
    return codes, labels


def _folder_local(
    queries: Any, name: str, directory: Any, rank: int, world: int, topk: Any, radius: Any
) -> _Local:
    """This rank's inputs from a shard folder; ``queries()`` gives the queries' codes and labels."""
    meta, blocks = open_shards(directory, rank, world)
    codes, labels = _match_meta(*queries(), meta, name)
    local = _local_queries(codes, labels, topk, radius)
    indices = shard_ranges(meta["items"], world)[rank]
    for index, (block_codes, block_labels) in zip(indices, blocks, strict=True):
        _packed_block(local, block_codes, block_labels, str(Path(directory) / _shard_name(index)))
    return local


def evaluate_shard_folder(
    q_codes: Any,
    q_labels: Any,
    directory: str | os.PathLike,
    *,
    group: Any = None,
    topk: int = 1000,
    radius: int = 2,
    device: Any = None,
) -> dict[str, float]:
    """:func:`evaluate_retrieval_sharded` of a shard folder: each rank memory-maps its own shards.

    Call it on every rank of ``group``; rank ``r`` of ``N`` opens the shards ``shard_ranges(items,
    N)[r]`` (see :func:`open_shards`). What the CLI runs.

    Args:
        q_codes: query codes, 0/1 (nq, bits), the same on every rank.
        q_labels: query labels, int (nq,) or multi-hot 0/1 (nq, C), the same on every rank.
        directory: the shard folder (see the module docstring), readable by every rank.
        group: a ``torch.distributed`` process group; None for the default group.
        topk: cutoff of ``map_at_k`` and ``precision_at_k`` (>= 1; capped to the whole database).
        radius: Hamming radius of ``precision_radius{radius}``.
        device: where this rank computes its histograms (see :func:`evaluate_retrieval_sharded`).

    Returns:
        The dictionary of :func:`evaluate_retrieval` for the whole folder, bitwise, on every rank.

    Raises:
        ValueError: on every rank alike, naming the rank and the file, if any rank's shards are
            missing or do not match the folder, or the queries do not match the database.
    """
    queries = lambda: (q_codes, q_labels)  # noqa: E731 (read on the rank, inside the shared checks)
    return _evaluate_folder(queries, "the queries", directory, group, topk, radius, device)[0]


def _evaluate_folder(
    queries: Any, name: str, directory: Any, group: Any, topk: Any, radius: Any, device: Any = None
) -> tuple[dict[str, float], _Local, int]:
    """The metrics, this rank's inputs and the total items of a shard folder's evaluation."""
    comm = _Comm(group)
    local = _checked_local(
        lambda: _folder_local(queries, name, directory, comm.rank, comm.size, topk, radius), device
    )
    stats, nb, k = _sharded_stats(local, comm, stable=True)
    return retrieval_metrics(stats, nb, k, local.radius), local, nb


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hashing_gym.ranking.distributed",
        description=(
            "Exact retrieval metrics of queries against a database sharded over processes: run under "
            "torchrun (one process per rank), or alone for one rank. With --split, write a shard folder."
        ),
    )
    parser.add_argument(
        "--queries", type=Path, help=".npz with codes (nq, bits) of 0/1 and labels (nq,) or (nq, C)"
    )
    parser.add_argument("--database", type=Path, required=True, help="shard folder (meta.json, shard_*.npy)")
    parser.add_argument("--topk", type=int, default=1000, help="cutoff of map_at_k and precision_at_k (1000)")
    parser.add_argument("--radius", type=int, default=2, help="Hamming radius of precision_radius (2)")
    parser.add_argument(
        "--backend", choices=("gloo", "nccl"), default="gloo", help="torch.distributed backend"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a collective may wait (600)")
    parser.add_argument("--threads", type=int, help="numba threads per rank (default: CPUs / local ranks)")
    parser.add_argument(
        "--split", type=Path, help="write --database from this .npz (codes, labels), then exit"
    )
    parser.add_argument("--shards", type=int, default=1, help="with --split: number of shards (1)")
    return parser


def _split(args: argparse.Namespace) -> int:
    try:
        codes, labels = _load_npz(args.split)
        meta = write_shards(args.database, codes, labels, shards=args.shards)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(meta['items'])} shards of {sum(meta['items'])} items ({meta['bits']} bits) "
        f"to {args.database}"
    )
    return 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring). Returns the exit status: 0, or 2 on bad input."""
    args = _parser().parse_args(argv)
    if args.split is not None:
        return _split(args)
    problem = None
    if args.queries is None:
        problem = "--queries is required (or --split to write a shard folder)"
    elif not args.timeout > 0:
        problem = f"--timeout must be a positive number of seconds, got {args.timeout}"
    elif args.threads is not None and args.threads < 1:
        problem = f"--threads must be a positive integer, got {args.threads}"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import torch
    import torch.distributed as dist

    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    timeout = timedelta(seconds=args.timeout)
    try:
        if args.backend == "nccl":
            if not torch.cuda.is_available():
                raise ValueError("--backend nccl needs CUDA GPUs; use --backend gloo")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if launched:
            dist.init_process_group(args.backend, timeout=timeout)
        else:  # one process: a group of one, no rendezvous
            dist.init_process_group(
                args.backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
            )
    except (ValueError, RuntimeError) as error:  # no GPU, or a failed rendezvous: on one line
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    try:
        return _evaluate_command(args, dist)
    finally:
        dist.destroy_process_group()


def _evaluate_command(args: argparse.Namespace, dist: Any) -> int:
    """The CLI's evaluation on an initialized default group."""
    from hashing_gym.ranking import set_num_threads

    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    set_num_threads(args.threads if args.threads else max(1, _cpus() // local_world))
    try:
        dist.barrier()
        started = time.perf_counter()
        metrics, local, nb = _evaluate_folder(
            lambda: _load_npz(args.queries), str(args.queries), args.database, None, args.topk, args.radius
        )
        seconds = time.perf_counter() - started  # rank 0 ends after the last rank's broadcast
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # a lost rank or a timeout: torch's message, on one line
        print(f"error: rank {rank}: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if rank == 0:
        print(
            f"queries {local.nq}, database {nb} items on {world} ranks ({dist.get_backend()}), "
            f"{local.bits} bits"
        )
        for name, value in metrics.items():
            print(f"{name} {value!r}")
        pairs = local.nq * nb
        print(f"time {seconds:.3f} s, {pairs / seconds:.3e} pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
