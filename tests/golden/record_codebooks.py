"""Record galois-built BCH label codebooks, the oracle of ``hashing_gym.codes``'s own BCH construction.

Run from the repository root: ``python -m tests.golden.record_codebooks`` (minutes: galois JIT-compiles
every code it builds). It writes ``tests/golden/codebooks_galois.npz``: for each (classes, bits, seed)
of ``SIZES``, key ``c{classes}-b{bits}-s{seed}``, the codebook that galois (``galois.BCH``, its default
MATLAB primitive polynomial, systematic encoding) gives through the construction of
``label_codebook(classes, bits, "bch", seed)`` before it stopped using galois (commit 0025bcd): the
nearest length n = 2^m - 1, the largest design distance with 2^k >= classes, distinct messages drawn
with the seed, codewords cut or padded with seeded random bits. ``tests/test_codes.py`` checks that
``hashing_gym.codes`` gives every one of them bitwise.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from hashing_gym import codes

# Every size the environments, agents and benchmarks used (the codebook cache of the development
# machine), plus longer codes.
SIZES = sorted(
    {(c, b, 0) for c in (2, 3, 4, 5, 10, 21, 100) for b in (8, 12, 16, 24, 32, 48, 64) if 2**b >= c}
    | {(10, 16, s) for s in range(8)}
    | {(10, 32, 3), (15, 32, 33), (16, 32, 44), (23, 16, 49), (14, 64, 36), (27, 64, 60), (30, 64, 48)}
    | {(10, 128, 0), (21, 128, 0), (10, 256, 0)}
)
OUT = Path(__file__).with_name("codebooks_galois.npz")


def galois_codebook(classes: int, bits: int, seed: int) -> np.ndarray | None:
    """The construction of ``label_codebook(..., "bch")`` with galois, as it was."""
    import galois

    rng = np.random.default_rng(seed)
    n = codes._bch_length(bits)
    best = None
    for designed in range(3, n + 1, 2):
        code = galois.BCH(n, d=designed)
        if 2**code.k < classes:
            break
        best = code
    if best is None:  # no BCH code of that length has enough codewords (label_codebook refuses it)
        return None
    messages = codes._distinct_messages(classes, best.k, rng)
    codewords = np.asarray(best.encode(galois.GF2(messages)), dtype=np.uint8)
    return codes._fit_length(codewords, bits, rng)


def main() -> None:
    """Build every codebook of ``SIZES`` with galois and write them (reproducible bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for classes, bits, seed in SIZES:
            codebook = galois_codebook(classes, bits, seed)
            if codebook is None:
                continue
            array = io.BytesIO()
            np.save(array, codebook)
            info = zipfile.ZipInfo(f"c{classes}-b{bits}-s{seed}.npy", date_time=(2026, 12, 1, 0, 0, 0))
            archive.writestr(info, array.getvalue())
            print(classes, bits, seed, flush=True)
    OUT.write_bytes(buffer.getvalue())


if __name__ == "__main__":
    main()
