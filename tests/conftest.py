"""What every test of the suite shares.

Trainers draw report.md's pictures when a run ends (``agents.report``: about a second each); the
suite trains a few hundred tiny runs, so it leaves them out (``HASHING_GYM_RUN_PLOTS=0``, which
subprocesses inherit). ``tests/test_logs.py`` turns them back on where it checks them.

Tests that raise SIGINT (the trainers' Ctrl-C handling) need Python's own handler: a suite started in
the background of a non-interactive shell inherits SIGINT ignored, where the trainers leave it ignored
(``agents.common.InterruptRequest``). Every test runs with the default handler, restored after it.

The small data sets the environment tests share (a test module that needs other sizes defines its own
fixture of the same name, which takes precedence there), and ``aot_eager``: ``fuse_step`` compiled with
dynamo's ``aot_eager`` backend, which needs no C compiler and runs in seconds.
"""

import os
import signal

import pytest

from hashing_gym.data import load_dataset

os.environ.setdefault("HASHING_GYM_RUN_PLOTS", "0")


@pytest.fixture(autouse=True)
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def small():
    return load_dataset("blobs", num_classes=4, n_per_class=15, dim=6, query_per_class=3)


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=5, n_per_class=12, dim=6, multi_label=True, query_per_class=2)


@pytest.fixture
def aot_eager(monkeypatch):
    from hashing_gym.envs import vector_base

    monkeypatch.setattr(vector_base, "FUSE_BACKEND", "aot_eager")
