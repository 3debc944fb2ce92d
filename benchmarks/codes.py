"""Label codebook construction time, cold (import + build) and warm (disk cache).

Run: ``python -m benchmarks.codes``. Each measurement runs in a fresh Python process, so "cold"
really pays the import of ``hashing_gym.codes`` and the build, with an empty cache folder (the target
of issue #17: every length the envs accept builds in <= 2 s on first use and <= 50 ms from the cache);
"warm" is a second fresh process
reading the codebook that the first one cached on disk; "in process" is a repeated call in the
same process (the in-memory cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from benchmarks.envs import machine
from hashing_gym.codes import bch_parameters

SIZES = [(10, 16), (10, 32), (10, 48), (10, 64), (21, 32), (10, 128), (100, 256), (10, 1024), (10, 4096)]

SCRIPT = """
import time
t = time.perf_counter()
from hashing_gym.codes import label_codebook
imported = time.perf_counter() - t
t = time.perf_counter()
label_codebook({classes}, {bits})
first = time.perf_counter() - t
t = time.perf_counter()
label_codebook({classes}, {bits})
print(imported, first, time.perf_counter() - t)
"""


def timed(classes: int, bits: int, cache: str) -> tuple[float, float, float]:
    """Seconds of the import, the first and a repeated ``label_codebook`` call, in a fresh process."""
    env = {**os.environ, "HASHING_GYM_CACHE": cache}
    output = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(classes=classes, bits=bits)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(output[0]), float(output[1]), float(output[2])


def main() -> None:
    """Measure and print the table."""
    print(f"Machine: {machine()}\n")
    print("| classes | bits | BCH (n, k, d) | import (s) | cold (s) | warm, from disk (s) | in process (s) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for classes, bits in SIZES:
        with tempfile.TemporaryDirectory() as cache:
            imported, cold, _ = timed(classes, bits, cache)
            _, warm, repeat = timed(classes, bits, cache)
        code = bch_parameters(classes, bits)
        print(f"| {classes} | {bits} | {code} | {imported:.2f} | {cold:.4f} | {warm:.4f} | {repeat:.6f} |")


if __name__ == "__main__":
    main()
