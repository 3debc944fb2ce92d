"""What every test of the suite shares.

Trainers draw report.md's pictures when a run ends (``agents.report``: about a second each); the
suite trains a few hundred tiny runs, so it leaves them out (``HASHING_GYM_RUN_PLOTS=0``, which
subprocesses inherit). ``tests/test_logs.py`` turns them back on where it checks them.

Tests that raise SIGINT (the trainers' Ctrl-C handling) need Python's own handler: a suite started in
the background of a non-interactive shell inherits SIGINT ignored, where the trainers leave it ignored
(``agents.common.InterruptRequest``). Every test runs with the default handler, restored after it.
"""

import os
import signal

import pytest

os.environ.setdefault("HASHING_GYM_RUN_PLOTS", "0")


@pytest.fixture(autouse=True)
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
