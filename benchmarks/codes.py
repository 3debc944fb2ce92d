"""Label codebook construction time, cold (galois import + JIT + build) and warm (disk cache).

Run: ``python -m benchmarks.codes``. Each measurement runs in a fresh Python process, so "cold"
really pays galois' import and JIT, with an empty cache folder; "warm" is a second fresh process
reading the codebook that the first one cached on disk; "in process" is a repeated call in the
same process (the in-memory cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from benchmarks.envs import machine

SIZES = [(10, 16), (10, 32), (10, 48), (10, 64), (21, 32)]

SCRIPT = """
import time
t = time.perf_counter()
from hashing_gym.codes import label_codebook
label_codebook({classes}, {bits})
first = time.perf_counter() - t
t = time.perf_counter()
label_codebook({classes}, {bits})
print(first, time.perf_counter() - t)
"""


def timed(classes: int, bits: int, cache: str) -> tuple[float, float]:
    """Seconds of the first and of a repeated ``label_codebook`` call in a fresh process."""
    env = {**os.environ, "HASHING_GYM_CACHE": cache}
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(classes=classes, bits=bits)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(output[0]), float(output[1])


def main() -> None:
    """Measure and print the table."""
    print(f"Machine: {machine()}\n")
    print("| classes | bits | cold (s) | warm, new process (s) | in process (s) |")
    print("|---:|---:|---:|---:|---:|")
    for classes, bits in SIZES:
        with tempfile.TemporaryDirectory() as cache:
            cold, _ = timed(classes, bits, cache)
            warm, repeat = timed(classes, bits, cache)
        print(f"| {classes} | {bits} | {cold:.2f} | {warm:.4f} | {repeat:.6f} |")


if __name__ == "__main__":
    main()
