"""A test's child process: run ``agents.train`` and SIGKILL itself at the n-th event of a kind.

``python tests/kill_child.py KIND N ALGO [OPTIONS ...]`` runs ``python -m agents.train ALGO
[OPTIONS ...]`` in this process (from the global RNG states every in-process run of
``tests/resume_check.py`` starts from) and kills itself with SIGKILL, which no handler sees and
which writes nothing, at the ``N``-th event of ``KIND`` (``resume_check.event_hooks``):

- ``backward``: right after the n-th backward pass, in the middle of an update, between checkpoints;
- ``checkpoint-write``: right after the n-th checkpoint file (``step_N.pt`` or ``state.json``) is
  written to its temporary name, before the rename that commits it: in the middle of a checkpoint.

It exits with agents.train's status if the run ends first (the test then fails: no SIGKILL).
Kept out of the production code: nothing in ``agents`` knows about it.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    """Parse ``KIND N ALGO [OPTIONS ...]``, train, and die at the chosen event."""
    kind, ordinal, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    from resume_check import KILL_KINDS, event_hooks, is_kill_event, seed_globals

    from agents import train

    if kind not in KILL_KINDS:
        raise SystemExit(f"KIND must be one of {', '.join(KILL_KINDS)}, got {kind!r}")
    count = 0

    def on_event(event: str, detail: str) -> None:
        nonlocal count
        if is_kill_event(kind, event, detail):
            count += 1
            if count == ordinal:
                os.kill(os.getpid(), signal.SIGKILL)

    seed_globals()
    with event_hooks(on_event):
        return train.main(argv)


if __name__ == "__main__":
    sys.exit(main())
