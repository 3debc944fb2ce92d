"""What every test of the suite shares.

Trainers draw report.md's pictures when a run ends (``agents.report``: about a second each); the
suite trains a few hundred tiny runs, so it leaves them out (``HASHING_GYM_RUN_PLOTS=0``, which
subprocesses inherit). ``tests/test_logs.py`` turns them back on where it checks them.
"""

import os

os.environ.setdefault("HASHING_GYM_RUN_PLOTS", "0")
