"""Compare the training state of two stable-baselines3 runs: what every SB3 resume test asserts.

A run's newest checkpoint (``checkpoints/state.json`` and the files it names) holds its whole
training state (``agents.sb3_state``): weights, optimizer state, counters (the step count), RNG
states, the envs' snapshots and, for DQN, the replay buffer. Every SB3 trainer writes one at the
end of training, so two finished runs are compared by their final checkpoints, value by value and
bit for bit (plus their results.json metrics).
"""

import json
import signal
from pathlib import Path

import numpy as np
import torch
from helpers import METRICS

from agents.checkpoint import Checkpoints

# The parts of the state a resume test names: a difference under a prefix belongs to that part.
COMPONENTS = {
    "optimizer": ".parameters.policy.optimizer",
    "weights": ".parameters.policy.",
    "step count": ".counters",
    "rng": ".rng",
    "replay": ".replay",
    "env": ".env",
}


def training_state(folder, trainer):
    """The newest checkpoint of ``folder``: its step, state dict and replay arrays (None if none)."""
    checkpoint, state, replay = Checkpoints(Path(folder), trainer).load_sb3()
    return {"num_timesteps": checkpoint.num_timesteps, **state, "replay": replay}


def differences(a, b, path=""):
    """Paths at which two nested states (dicts, lists, tensors, arrays, numbers) differ, bit for bit."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} (keys {sorted(set(a) ^ set(b))})"]
        return [found for key in a for found in differences(a[key], b[key], f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (length {len(a)} != {len(b)})"]
        return [
            found
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for found in differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if same and a.shape == b.shape and torch.equal(a, b) else [path]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
        return [] if same and np.array_equal(a, b) else [path]
    if path.startswith(".episode_info") and path.endswith(".t"):
        return []  # Monitor's wall-clock time of an episode: the one value no rerun repeats
    return [] if type(a) is type(b) and a == b else [f"{path} ({a!r} != {b!r})"]


def components(found):
    """The parts of the state (:data:`COMPONENTS`) that ``differences`` found different."""
    parts = set()
    for path in found:
        for name, prefix in COMPONENTS.items():
            if path.startswith(prefix):
                parts.add(name)
                break
    return parts


def assert_same_training_state(folder, reference, trainer):
    """``folder``'s run ended bitwise where ``reference``'s did: state, replay, step count, results."""
    found = differences(training_state(folder, trainer), training_state(reference, trainer))
    assert not found, f"{len(found)} differences, e.g. {found[:8]}"
    results = [json.loads((Path(run) / "results.json").read_text()) for run in (folder, reference)]
    for key in (*METRICS, "env_steps"):
        assert results[0][key] == results[1][key], key


def interrupt_at_env_step(monkeypatch, step):
    """Ctrl-C (SIGINT) during the ``step``-th step of the vec env: the run checkpoints and stops.

    The trainers step ``hashing_gym.sb3``'s batched env (``HashingVecEnv``).
    """
    from hashing_gym.sb3 import HashingVecEnv

    step_wait = HashingVecEnv.step_wait
    calls = {"n": 0}

    def interrupting(self):
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signal.SIGINT)
        return step_wait(self)

    monkeypatch.setattr(HashingVecEnv, "step_wait", interrupting)
    return lambda: monkeypatch.setattr(HashingVecEnv, "step_wait", step_wait)


# A child process that runs ``agents.train`` and SIGKILLs itself at a chosen point: ``write N``
# (the N-th atomic file write, after its temporary file is written and before the rename: a kill
# in the middle of a checkpoint) or ``step N`` (the N-th step of the vec env).
KILLED_CHILD = """
import contextlib, os, signal, sys
import agents.checkpoint as checkpoint
from hashing_gym.sb3 import HashingVecEnv
mode, at = sys.argv[1], int(sys.argv[2])
count = {"n": 0}
def kill():
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "write":
    atomic_path = checkpoint.atomic_path
    @contextlib.contextmanager
    def killing(path):
        with atomic_path(path) as temporary:
            yield temporary
            count["n"] += 1
            if count["n"] == at:
                kill()
    checkpoint.atomic_path = killing
else:
    step_wait = HashingVecEnv.step_wait
    def killing_step(self):
        count["n"] += 1
        if count["n"] == at:
            kill()
        return step_wait(self)
    HashingVecEnv.step_wait = killing_step
from agents import train
sys.exit(train.main(sys.argv[3:]))
"""


def run_killed(argv, mode, at):
    """Run ``python -m agents.train *argv`` in a child that SIGKILLs itself at ``mode`` ``at``."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", KILLED_CHILD, mode, str(at), *argv]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)


def record_writes(monkeypatch):
    """Record the names of the files that what runs next writes atomically, in order."""
    import contextlib

    import agents.checkpoint as checkpoint

    atomic_path = checkpoint.atomic_path
    names = []

    @contextlib.contextmanager
    def recording(path):
        with atomic_path(path) as temporary:
            yield temporary
            names.append(Path(path).name)

    monkeypatch.setattr(checkpoint, "atomic_path", recording)
    return names
