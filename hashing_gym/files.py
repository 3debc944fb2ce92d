"""Atomic file writes, shared by the codebook cache, the shard folders and ``agents.checkpoint``.

A file is written to a temporary name beside its final one, flushed to disk (``fsync``) and renamed
over it (``os.replace``), so a reader sees the old file or the new one, never half of one, and a
process killed mid-write leaves the previous file complete (plus, at worst, its ``.NAME.PID.tmp``).
The file gets the user's umask whatever the writer created.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it to disk and rename it over ``path``.

    A writer that raises leaves ``path`` as it was (the temporary file is deleted).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # the user's umask, whatever the writer created
        _fsync(temporary)
        os.replace(temporary, path)
        if os.name == "posix":  # the rename itself reaches the disk with the folder's entry
            _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
