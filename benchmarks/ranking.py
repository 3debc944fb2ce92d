"""Speed of mAP@all on every ranking backend against a numpy argsort reference measured in the same run.

Run ``python -m benchmarks.ranking [--queries 1000] [--database 20000] [--bits 64] [--repeats 5]``. The data
are class codewords with independently flipped bits (deterministic under ``--seed``), single-label. The
reference ranks each query with ``np.argsort(d, kind="stable")`` and takes a cumsum-based AP, the way
published hashing code (DPSH/DSDH ``CalcMap``) does it; its mAP is checked to equal the stable mAP of every
backend to 1e-9.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np

from hashing_gym import ranking


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
    """Class codewords with each bit flipped with probability ``flip``: (xq, yq, xb, yb)."""
    rng = np.random.default_rng(seed)
    book = rng.integers(0, 2, size=(classes, bits), dtype=np.uint8)
    yq = rng.integers(0, classes, size=nq)
    yb = rng.integers(0, classes, size=nb)
    xq = book[yq] ^ (rng.random((nq, bits)) < flip).astype(np.uint8)
    xb = book[yb] ^ (rng.random((nb, bits)) < flip).astype(np.uint8)
    return xq, yq, xb, yb


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


def timed(function: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median seconds over ``repeats`` calls after one warm-up call (JIT, caches), and the last result."""
    result = function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000, help="number of queries nq")
    parser.add_argument("--database", type=int, default=20000, help="number of database items nb")
    parser.add_argument("--bits", type=int, default=64, help="code length")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median reported)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic codes")
    args = parser.parse_args()

    import torch

    xq, yq, xb, yb = make_codes(args.queries, args.database, args.bits, args.classes, 0.2, args.seed)
    pairs = args.queries * args.database
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    rows: list[tuple[str, str, float, float]] = []
    ref_seconds, ref_map = timed(lambda: reference_map(xq, yq, xb, yb), args.repeats)
    rows.append(("mAP@all, numpy argsort reference", "numpy", ref_seconds, ref_map))
    configs = [("numpy", None), ("faiss", None)] + [("torch", device) for device in devices]
    for ties in ranking.TIES:
        for backend, device in configs:

            def run(backend: str = backend, device: str | None = device, ties: str = ties) -> float:
                return ranking.mean_average_precision(
                    xq, yq, xb, yb, ties=ties, backend=backend, device=device
                )

            seconds, value = timed(run, args.repeats)
            if ties == "stable" and abs(value - ref_map) > 1e-9:
                raise AssertionError(f"{backend}: stable mAP {value} != reference {ref_map}")
            name = "mAP@all stable" if ties == "stable" else "mAP@all tie-aware"
            rows.append((name, backend if device is None else f"torch ({device})", seconds, value))
    seconds, result = timed(
        lambda: ranking.evaluate_retrieval(xq, yq, xb, yb, topk=1000)["map"], args.repeats
    )
    rows.append(("evaluate_retrieval (all metrics)", "numpy", seconds, result))

    print(f"Machine: {machine()}")
    print(
        f"Q={args.queries:,} queries, N={args.database:,} database items, {args.bits} bits, "
        f"{args.classes} classes; median of {args.repeats} runs; numpy {np.__version__}, "
        f"numba {numba.__version__}, torch {torch.__version__}"
    )
    print()
    print("| metric | backend | median s | pairs/s | speed-up vs reference | mAP |")
    print("|---|---|---:|---:|---:|---:|")
    for name, backend, seconds, value in rows:
        print(
            f"| {name} | {backend} | {seconds:.4f} | {pairs / seconds:.3g} | "
            f"{ref_seconds / seconds:.1f}x | {value:.6f} |"
        )


if __name__ == "__main__":
    main()
