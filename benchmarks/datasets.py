"""Data sets that the benchmarks build on the fly (offline, nothing shipped, nothing downloaded).

``digits28``: scikit-learn's 1,797 bundled 8x8 digits, each resampled to 28x28 (bilinear) and
copied ``variants`` times with a random shift of up to ``shift`` pixels in each direction and
Gaussian pixel noise: 10,782 real-image items of 784 dimensions at the default 6 variants, the
scale at which a DQN recipe tuned on 1,797 items is known to break (issue #15). It is written as a
``features`` ``.npz`` (keys ``features``, ``labels``) that every trainer reads with
``--dataset features --data-path FILE``.

The variants of one image share its label and may land in both the query and the database split;
that is the usual protocol for augmented sets and is said here so that nobody mistakes the
benchmark's mAP for one on independent images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def digits28(
    variants: int = 6, shift: int = 3, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 (1797 * variants, 784) in [0, 1] plus noise, and int64 labels.

    Args:
        variants: copies of each image, each with its own shift and noise.
        shift: largest shift in pixels (at most 4, the margin), uniform in ``-shift..shift`` per axis.
        noise: standard deviation of the Gaussian noise added to pixels in [0, 1].
        seed: seed of the shifts and the noise.

    Raises:
        ValueError: for ``variants < 1``, a shift outside 0..4 or ``noise < 0``.
    """
    if variants < 1 or not 0 <= shift <= 4 or noise < 0:
        raise ValueError(f"need variants >= 1, 0 <= shift <= 4, noise >= 0; got {variants}, {shift}, {noise}")
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    # As MNIST: the digit zoomed (bilinear) to 20x20 in a 28x28 canvas; its 4-pixel margin is wider
    # than any shift, so np.roll never wraps ink around the border.
    big = ndimage.zoom(images, (1, 20 / 8, 20 / 8), order=1)  # (1797, 20, 20)
    canvas = np.zeros((len(images), 28, 28), dtype=np.float32)
    canvas[:, 4:24, 4:24] = np.clip(big, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    out = np.empty((variants, len(images), 28, 28), dtype=np.float32)
    for v in range(variants):
        dy, dx = rng.integers(-shift, shift + 1, size=(2, len(images)))
        for i in range(len(images)):
            out[v, i] = np.roll(canvas[i], (dy[i], dx[i]), axis=(0, 1))
        out[v] += rng.normal(0.0, noise, size=out[v].shape).astype(np.float32)
    features = out.reshape(variants * len(images), 28 * 28)
    labels = np.tile(digits.target.astype(np.int64), variants)
    return features, labels


def write_digits28(path: Path, **options: int | float) -> Path:
    """Write :func:`digits28` to ``path`` (a ``.npz`` with ``features`` and ``labels``), atomically."""
    features, labels = digits28(**options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, features=features, labels=labels)
        mask = os.umask(0o022)  # mkstemp makes 0600 files: give the data set the user's umask
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.datasets OUT.npz [--variants 6]``: write the digits28 set."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets", description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args(argv)
    path = write_digits28(parsed.out, variants=parsed.variants, seed=parsed.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
