"""Speed of the ranking metrics on every backend, against references measured in the same run.

CPU (default): ``python -m benchmarks.ranking [--queries 1000] [--database 20000] [--bits 64] [--repeats 5]``
times mAP@all on every backend against a numpy argsort reference: each query ranked with
``np.argsort(d, kind="stable")`` and a cumsum-based AP, the way published hashing code (DPSH/DSDH
``CalcMap``) does it; its mAP is checked to equal the stable mAP of every backend to 1e-9.

Memory: ``--memory`` runs the numpy backend's stable and tie-aware mAP@all in a child process each (default
``--queries 10000 --database 1000000``) and reports the child's peak resident memory, against the size of
the inputs and of the ``nq x nb`` int64 matrix that is never made.

GPU: ``--device cuda`` (default ``--queries 10000``, ``--database 50000 1000000``) times the torch
backend's CUDA kernels on codes already on the GPU, through the public functions from numpy arrays, and
through a ``HammingIndex`` (built from numpy, then queried from numpy and from queries already on the
GPU), against two references in the same run: an fp16 matrix product of +-1 codes (distances alone,
nothing counted; the "vs fp16 GEMM" column is each row's speed over it) and the plain torch path
(``scatter_add`` histograms, a sort for the stable order). The device-resident rows keep what the kernels
derive from the database once (its class runs) between calls, as a
``HammingIndex`` does. The index's build is timed three ways: from
numpy through the staged pinned copy (chunks packed while the next is in flight), from numpy with one
blocking copy (``_resident.OVERLAP = False``), and from uint8 codes already on the GPU. Every metric of
``evaluate_retrieval`` and every histogram is checked to equal the numpy (numba) backend's, and the
index's results to equal the functions' bitwise.

Histogram kernel: ``--kernel`` (default ``--queries 2000 --database 1000000``) times the CPU kernel that
every histogram metric is computed from (per query and distance: all items and relevant items; tie-aware
mAP, P@r and PR curves read nothing else) on packed codes and labels, without the API's checks and
packing. The blocked kernels (the default) and the per-query kernel are timed interleaved in one
process, with 1 thread and with all of numba's threads, as pairs per CPU-second (``time.process_time``:
every thread of the process, so the figure is per core even on a loaded machine) and per wall second,
for class ids and for the same labels as one-hot multi-hot words. The counts of both kernels are
checked to be equal.

The data are class codewords with independently flipped bits (deterministic under ``--seed``),
single-label.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import numba
import numpy as np

from hashing_gym import ranking

# Internals, for what the public API cannot show: the kernels' thresholds, the device-resident CUDA pass and
# the staged copy's switch.
from hashing_gym.ranking import _cuda, _numba, _packing, _resident


def machine() -> str:
    """CPU model, core count and, if torch sees one, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores (numba threads: {numba.get_num_threads()})"
    import torch

    if torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name(0)}"
    return text


def make_codes(nq: int, nb: int, bits: int, classes: int, flip: float, seed: int):
    """Class codewords with each bit flipped with probability ``flip``: (xq, yq, xb, yb).

    Rows are drawn in blocks, so no float array of the full size exists (the memory benchmark measures
    the metric, not this).
    """
    rng = np.random.default_rng(seed)
    book = rng.integers(0, 2, size=(classes, bits), dtype=np.uint8)
    yq = rng.integers(0, classes, size=nq)
    yb = rng.integers(0, classes, size=nb)

    def noisy(labels: np.ndarray) -> np.ndarray:
        codes = book[labels]
        for s in range(0, len(labels), 1 << 16):
            codes[s : s + (1 << 16)] ^= (rng.random((len(labels[s : s + (1 << 16)]), bits)) < flip).astype(
                np.uint8
            )
        return codes

    return noisy(yq), yq, noisy(yb), yb


def reference_map(xq: np.ndarray, yq: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> float:
    """mAP@all as published hashing code computes it: per query a stable argsort, then a cumsum-based AP."""
    bits = xq.shape[1]
    sq, sb = 2.0 * xq - 1.0, 2.0 * xb - 1.0
    positions = np.arange(1, xb.shape[0] + 1, dtype=np.float64)
    aps = []
    for i in range(xq.shape[0]):
        d = 0.5 * (bits - sb @ sq[i])
        gnd = (yb[np.argsort(d, kind="stable")] == yq[i]).astype(np.float64)
        hits = np.cumsum(gnd)
        aps.append(float((hits / positions)[gnd == 1].mean()) if hits[-1] else 0.0)
    return float(np.mean(aps))


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds over ``repeats`` calls after one warm-up call (JIT, caches), and the last result."""
    result = function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def cpu_table(args: argparse.Namespace) -> None:
    """mAP@all on the CPU backends against the argsort reference."""
    import torch

    xq, yq, xb, yb = make_codes(args.queries, args.database[0], args.bits, args.classes, 0.2, args.seed)
    pairs = args.queries * args.database[0]
    rows: list[tuple[str, str, float, float]] = []
    ref_seconds, ref_map = timed(lambda: reference_map(xq, yq, xb, yb), args.repeats)
    rows.append(("mAP@all, numpy argsort reference", "numpy", ref_seconds, ref_map))
    try:
        import faiss  # noqa: F401

        backends = ["numpy", "faiss", "torch"]
    except ImportError:
        backends = ["numpy", "torch"]
    for ties in ranking.TIES:
        for backend in backends:

            def run(backend: str = backend, ties: str = ties) -> float:
                device = "cpu" if backend == "torch" else None
                return ranking.mean_average_precision(
                    xq, yq, xb, yb, ties=ties, backend=backend, device=device
                )

            seconds, value = timed(run, args.repeats)
            if ties == "stable" and abs(value - ref_map) > 1e-9:
                raise AssertionError(f"{backend}: stable mAP {value} != reference {ref_map}")
            name = "mAP@all stable" if ties == "stable" else "mAP@all tie-aware"
            rows.append((name, "torch (cpu)" if backend == "torch" else backend, seconds, value))
    seconds, result = timed(
        lambda: ranking.evaluate_retrieval(xq, yq, xb, yb, topk=1000)["map"], args.repeats
    )
    rows.append(("evaluate_retrieval (all metrics)", "numpy", seconds, result))

    print(f"Machine: {machine()}")
    print(
        f"Q={args.queries:,} queries, N={args.database[0]:,} database items, {args.bits} bits, "
        f"{args.classes} classes; median of {args.repeats} runs; numpy {np.__version__}, "
        f"numba {numba.__version__}, torch {torch.__version__}; {date.today()}"
    )
    print()
    print("| metric | backend | median s | pairs/s | speed-up vs reference | mAP |")
    print("|---|---|---:|---:|---:|---:|")
    for name, backend, seconds, value in rows:
        print(
            f"| {name} | {backend} | {seconds:.4f} | {pairs / seconds:.3g} | "
            f"{ref_seconds / seconds:.1f}x | {value:.6f} |"
        )


def kernel_table(args: argparse.Namespace) -> None:
    """The CPU kernels alone, blocked against per-query: pairs per CPU-second, 1 and all threads.

    Two workloads: the histograms (tie-aware mAP, P@r, PR curves) and the stable mAP@all (histograms,
    then the scan in database order).
    """
    nq, nb, bits = args.queries, args.database[0], args.bits
    xq, yq, xb, yb = make_codes(nq, nb, bits, args.classes, 0.2, args.seed)
    codes = _packing.pack_words(xq), _packing.pack_words(xb)
    del xq, xb
    one_hot = _packing.pack_words(np.eye(args.classes, dtype=np.uint8)).view(np.int64)
    labels = {
        "class ids": (False, _packing.label_words(yq), _packing.label_words(yb)),
        "multi-hot (one-hot)": (True, one_hot[yq], one_hot[yb]),
    }
    all_threads = numba.config.NUMBA_NUM_THREADS
    load = os.getloadavg()
    print(f"Machine: {machine()}; load average before: {load[0]:.1f}")
    print(
        f"Q={nq:,} queries, N={nb:,} database items, {bits} bits, {args.classes} classes; packed inputs; "
        f"median of {args.repeats} interleaved runs; numba {numba.__version__}; {date.today()}"
    )
    print()
    print(
        "| what | labels | threads | kernel | median CPU s | median wall s | pairs per CPU-second "
        "| pairs/s (wall) | CPU-s speed-up |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for what, stable in (("histograms", False), ("stable mAP@all", True)):
        ks = np.array([nb] if stable else [], dtype=np.int64)
        for name, (multi, lq, lb) in labels.items():
            for threads in sorted({1, all_threads}):
                _numba.set_num_threads(threads)
                times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                results = {}
                for repeat in range(args.repeats + 1):  # the first round warms the JIT and caches
                    for blocked in (False, True):
                        out = (
                            np.zeros((nq, bits + 1), dtype=np.int64),
                            np.zeros((nq, bits + 1), dtype=np.int64),
                            np.zeros((nq, ks.size), dtype=np.float64),
                            np.zeros((nq, ks.size), dtype=np.int64),
                        )
                        _numba.BLOCKED = blocked
                        cpu, wall = time.process_time(), time.perf_counter()
                        _numba.stats_into(None, codes[0], codes[1], lq, lb, multi, ks, stable, out)
                        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                        if repeat:
                            times[blocked].append((cpu, wall))
                        results[blocked] = out
                _numba.BLOCKED = True
                for part in range(4):  # bitwise: the stable sums are added in the same order
                    if not np.array_equal(results[True][part], results[False][part]):
                        raise AssertionError(f"{what}, {name}, {threads} threads: the kernels differ")
                old_cpu = statistics.median(cpu for cpu, _ in times[False])
                for blocked, kernel in ((False, "per query (before)"), (True, "blocked (after)")):
                    cpu = statistics.median(cpu for cpu, _ in times[blocked])
                    wall = statistics.median(wall for _, wall in times[blocked])
                    print(
                        f"| {what} | {name} | {threads} | {kernel} | {cpu:.3f} | {wall:.3f} | "
                        f"{nq * nb / cpu:.3g} | {nq * nb / wall:.3g} | {old_cpu / cpu:.2f}x |",
                        flush=True,
                    )
    _numba.set_num_threads(all_threads)
    print(f"\nLoad average after: {os.getloadavg()[0]:.1f}; both kernels' results bitwise equal, every row.")


def memory_child(args: argparse.Namespace) -> None:
    """One metric in this process; prints JSON with the RSS before it and the peak RSS during it (bytes)."""
    xq, yq, xb, yb = make_codes(args.queries, args.database[0], args.bits, args.classes, 0.2, args.seed)
    # Warm the JIT (parallel kernels) on a tiny problem: compilation is not the metric's memory.
    threshold, _numba.PARALLEL_MIN_PAIRS = _numba.PARALLEL_MIN_PAIRS, 0
    ranking.mean_average_precision(xq[:2], yq[:2], xb[:50], yb[:50], ties=args.child)
    _numba.PARALLEL_MIN_PAIRS = threshold
    with open("/proc/self/statm") as handle:  # resident now (inputs, imports, JIT)
        inputs = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to what is resident now
        handle.write("5")
    start = time.perf_counter()
    value = ranking.mean_average_precision(xq, yq, xb, yb, ties=args.child)
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as handle:
        peak = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    print(json.dumps({"before": inputs, "peak": peak, "seconds": seconds, "map": value}))


def memory_table(args: argparse.Namespace) -> None:
    """Peak resident memory of the numpy backend's mAP@all in child processes."""
    nq, nb = args.queries, args.database[0]
    print(f"Machine: {machine()}")
    print(f"Q={nq:,} queries, N={nb:,} database items, {args.bits} bits, numpy backend; {date.today()}")
    print(
        f"Inputs: codes {(nq + nb) * args.bits / 2**20:.0f} MiB as uint8 0/1, labels "
        f"{(nq + nb) * 8 / 2**20:.0f} MiB; a Q x N int64 matrix would be {nq * nb * 8 / 2**30:.0f} GiB"
    )
    print()
    print(
        "| metric | seconds | pairs/s | RSS before (inputs, JIT) MiB | peak RSS in the call MiB | added MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for ties in ranking.TIES:
        command = [sys.executable, "-m", "benchmarks.ranking", "--child", ties, "--queries", str(nq)]
        command += ["--database", str(nb), "--bits", str(args.bits), "--seed", str(args.seed)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        mib = 2**20
        print(
            f"| mAP@all {'tie-aware' if ties == 'average' else ties} | {result['seconds']:.2f} | "
            f"{nq * nb / result['seconds']:.3g} | "
            f"{result['before'] / mib:.0f} | {result['peak'] / mib:.0f} | "
            f"{(result['peak'] - result['before']) / mib:.0f} |"
        )


def gpu_timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """:func:`timed` with the GPU synchronised before each clock read."""
    import torch

    def synced() -> Any:
        result = function()
        torch.cuda.synchronize()
        return result

    return timed(synced, repeats)


def cuda_table(args: argparse.Namespace) -> None:
    """The CUDA kernels against an fp16 GEMM and plain torch, on device-resident data and end to end."""
    import torch

    print(f"Machine: {machine()}")
    print(
        f"Q={args.queries:,} queries, {args.bits} bits, {args.classes} classes; median of {args.repeats} "
        f"runs (after a warm-up); torch {torch.__version__}, CUDA {torch.version.cuda}; {date.today()}"
    )
    print("'device-resident': packed codes and labels already on the GPU, results left there;")
    print("'API': the public function from numpy arrays (validation, packing, copies included);")
    print("'HammingIndex': the database resident on the GPU (built once), queries from numpy or the GPU;")
    print("builds: the database's bytes (uint8 codes and int64 labels) per second in the pairs/s column.")
    print()
    print("| N | what | path | median ms | pairs/s | vs fp16 GEMM | vs plain torch |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for nb in args.database:
        cuda_rows(args, nb)


def cuda_rows(args: argparse.Namespace, nb: int) -> None:
    """The rows of :func:`cuda_table` for one database size."""
    import torch

    dev = torch.device("cuda", torch.cuda.current_device())
    nq = args.queries
    pairs = nq * nb
    xq, yq, xb, yb = make_codes(nq, nb, args.bits, args.classes, 0.2, args.seed)
    rows: list[tuple[Any, ...]] = []

    # Reference 1: distances alone from an fp16 matrix product of +-1 codes, in chunks of queries.
    sq = torch.as_tensor(xq, device=dev).half() * 2 - 1
    sb = torch.as_tensor(xb, device=dev).half() * 2 - 1
    step = max(1, (1 << 31) // (2 * nb))

    def gemm() -> None:
        for s in range(0, nq, step):
            torch.mm(sq[s : s + step], sb.T)

    gemm_seconds, _ = gpu_timed(gemm, args.repeats)
    rows.append(("distances only (reference)", "fp16 GEMM, device-resident", gemm_seconds))

    def api(function: Callable[..., Any], **kwargs: Any) -> Callable[[], Any]:
        return lambda: function(xq, yq, xb, yb, backend="torch", **kwargs)

    # Reference 2: plain torch (what runs without CuPy), through the API.
    _cuda.ENABLED = False
    plain_seconds, _ = gpu_timed(api(ranking.mean_average_precision, ties="average"), 1)
    rows.append(("mAP@all tie-aware (reference)", "plain torch, API", plain_seconds))
    if nb <= 100_000:  # the stable order sorts every row: minutes at N = 1,000,000
        seconds, _ = gpu_timed(api(ranking.mean_average_precision), 1)
        rows.append(("mAP@all stable (reference)", "plain torch, API", seconds))
    _cuda.ENABLED = True

    arrays = (
        _packing.pack_words(xq),
        _packing.label_words(yq),
        _packing.pack_words(xb),
        _packing.label_words(yb),
    )
    packed = [torch.from_numpy(a.view(np.int64)).to(dev) for a in arrays]
    cache: dict[str, Any] = {}  # what the kernels derive from the database once, as a HammingIndex keeps it
    for name, ks in (
        ("histograms (tie-aware mAP, P@r, PR curve)", ()),
        ("stable mAP@all", (nb,)),
        ("stable mAP@all + mAP@1000 + P@1000", (nb, 1000)),
    ):
        seconds, _ = gpu_timed(
            lambda ks=ks: _cuda.stats(*packed, args.bits, False, ks, bool(ks), cache), args.repeats
        )
        rows.append((name, "CUDA kernels, device-resident", seconds))
    for name, function in (
        ("mAP@all stable", api(ranking.mean_average_precision)),
        ("mAP@all tie-aware", api(ranking.mean_average_precision, ties="average")),
        ("evaluate_retrieval (all metrics)", api(ranking.evaluate_retrieval)),
    ):
        seconds, _ = gpu_timed(function, args.repeats)
        rows.append((name, "CUDA kernels, API", seconds))

    rows.extend(index_rows(args, xq, yq, xb, yb, dev))

    # Equality with the CPU (numba) backend, which is also timed once.
    start = time.perf_counter()
    cpu = ranking.evaluate_retrieval(xq, yq, xb, yb)
    rows.append(("evaluate_retrieval (all metrics)", "numba on the CPU, API", time.perf_counter() - start))
    gpu = api(ranking.evaluate_retrieval)()
    for key, value in cpu.items():
        if abs(gpu[key] - value) > 1e-9:
            raise AssertionError(f"N={nb}: {key} on CUDA {gpu[key]} != CPU {value}")
    got, want = api(ranking.distance_counts)(), ranking.distance_counts(xq, yq, xb, yb)
    if not (np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])):
        raise AssertionError(f"N={nb}: histograms on CUDA differ from the CPU's")
    for name, path, seconds, *size in rows:
        if size:  # a build: bytes per second, no ratio to the ranking references
            print(f"| {nb:,} | {name} | {path} | {seconds * 1e3:.3f} | {size[0] / seconds:.3g} B/s | | |")
            continue
        print(
            f"| {nb:,} | {name} | {path} | {seconds * 1e3:.3f} | {pairs / seconds:.3g} | "
            f"{gemm_seconds / seconds:.2f}x | {plain_seconds / seconds:.1f}x |"
        )
    print(f"| {nb:,} | all metrics and histograms equal to the numpy backend's | | | | | |", flush=True)
    print(f"<!-- N={nb:,}: {json.dumps({k: round(v, 9) for k, v in gpu.items()})} -->")


def index_rows(
    args: argparse.Namespace, xq: np.ndarray, yq: np.ndarray, xb: np.ndarray, yb: np.ndarray, dev: Any
) -> list[tuple[Any, ...]]:
    """HammingIndex rows: builds (staged, one copy, from the GPU), then metrics from numpy and GPU queries.

    Raises AssertionError if the index's results differ from the public functions' (bitwise).
    """
    import torch

    rows: list[tuple[Any, ...]] = []
    size = xb.nbytes + yb.nbytes
    for name, overlap in (("staged pinned copy", True), ("one blocking copy", False)):
        _resident.OVERLAP = overlap
        seconds, index = gpu_timed(lambda: ranking.HammingIndex(xb, yb, device=dev), args.repeats)
        rows.append((f"HammingIndex build from numpy ({name})", "HammingIndex", seconds, size))
    _resident.OVERLAP = True
    on_gpu = torch.as_tensor(xb, device=dev), torch.as_tensor(yb, device=dev)
    seconds, _ = gpu_timed(lambda: ranking.HammingIndex(*on_gpu, device=dev), args.repeats)
    rows.append(("HammingIndex build from uint8 codes on the GPU", "HammingIndex", seconds, size))

    queries = {"numpy": (xq, yq), "GPU": (torch.as_tensor(xq, device=dev), torch.as_tensor(yq, device=dev))}
    for where, (codes, labels) in queries.items():
        for name, function in (
            ("mAP@all stable", lambda c=codes, lab=labels: index.mean_average_precision(c, lab)),
            (
                "mAP@all tie-aware",
                lambda c=codes, lab=labels: index.mean_average_precision(c, lab, ties="average"),
            ),
            ("evaluate (all metrics)", lambda c=codes, lab=labels: index.evaluate(c, lab)),
        ):
            seconds, _ = gpu_timed(function, args.repeats)
            rows.append((name, f"HammingIndex, queries from {where}", seconds))

    # The index shares the functions' kernels: bitwise their results.
    api = {"backend": "torch", "device": dev}
    for codes, labels in queries.values():
        if index.evaluate(codes, labels) != ranking.evaluate_retrieval(xq, yq, xb, yb, **api):
            raise AssertionError("HammingIndex.evaluate differs from evaluate_retrieval")
        for ties in ranking.TIES:
            got = index.mean_average_precision(codes, labels, ties=ties)
            if got != ranking.mean_average_precision(xq, yq, xb, yb, ties=ties, **api):
                raise AssertionError(f"HammingIndex mAP ({ties}) differs from mean_average_precision")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="which table")
    parser.add_argument("--memory", action="store_true", help="peak memory of the numpy backend")
    parser.add_argument(
        "--kernel", action="store_true", help="the CPU histogram kernel, pairs per CPU-second"
    )
    parser.add_argument("--queries", type=int, default=None, help="number of queries nq")
    parser.add_argument("--database", type=int, nargs="+", default=None, help="database sizes nb")
    parser.add_argument("--bits", type=int, default=64, help="code length")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median reported)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic codes")
    parser.add_argument("--child", choices=ranking.TIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    large = args.memory or args.child or args.device == "cuda"
    if args.queries is None:
        args.queries = 2000 if args.kernel else 10_000 if large else 1000
    if args.kernel and args.database is None:
        args.database = [1_000_000]
    if args.database is None:
        args.database = (
            [1_000_000] if args.memory or args.child else [50_000, 1_000_000] if large else [20_000]
        )
    if args.child:
        memory_child(args)
    elif args.memory:
        memory_table(args)
    elif args.kernel:
        kernel_table(args)
    elif args.device == "cuda":
        cuda_table(args)
    else:
        cpu_table(args)


if __name__ == "__main__":
    main()
