"""Resume checks for the torch trainers: a stopped and resumed run must end as the uninterrupted one.

For a trainer (:data:`TRAINERS`: ``dqn-torch``, ``reinforce-torch``, ``reinforce``, ``drlih``, each
on a tiny data set), :func:`reference` trains a seeded run without interruption (once per test
session) and :func:`final_state` reads what a run ends with:

- ``results``: results.json without its timings (``train_seconds``, a curve point's ``seconds``);
- ``model``: the tensors of model.pt;
- ``checkpoint``: the last checkpoint's whole training state (weights, optimizer state, replay
  buffer, RNG states of torch, numpy and the env, step counts; without ``train_seconds``) and the
  step that ``state.json`` records; every trainer here checkpoints at its final step;
- ``globals``: the process's global RNG states (torch, numpy, python ``random``) after the run,
  every in-process run starting from the same ones: a trainer that drew from one and did not
  checkpoint it would end elsewhere.

:func:`differences` lists where two final states differ (bitwise: tensors with ``torch.equal``,
floats with ``==``). :func:`stop_after_checkpoint` runs a trainer in this process and stops it
(as a crash would: no Ctrl-C checkpoint) right after its n-th checkpoint; :func:`resume_final_state`
resumes a run folder with ``--resume`` and reads its final state.

:func:`dropping` makes the resumed process lose one component of the checkpoint (``weights``,
``optimizer``, ``replay``, ``rng``, ``step``, ``env``, ``baseline``): each saved key of the component
is replaced, when the trainer loads it, by the value that the resumed process's own object had
before loading (a fresh network, optimizer, empty buffer, freshly seeded generators, step 0),
which is what a saver that left it out would give. The tests assert that then the check fails.

:func:`event_hooks` reports the points where ``tests/kill_child.py`` may SIGKILL a run: after each
backward pass (mid-update) and after each file an ``agents.checkpoint`` writer has written to its
temporary name, before the rename.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import checkpoint as checkpoint_module
from agents import train
from agents.checkpoint import Checkpoints, read_json, read_tensors
from agents.resume_state import env_snapshot

# Three blobs of 20 items at 8 bits: every trainer runs in about a second.
DATA = (
    "--dataset", "blobs", "--dataset-options", "num_classes=3,n_per_class=20,dim=8,query_per_class=4",
    "--bits", "8", "--device", "cpu", "--seed", "3",
)  # fmt: skip
GLOBAL_SEED = 20240611  # the process's global RNGs before every in-process run


def _fresh_state_dicts(*names: str) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Getters of the ``state_dict()`` of the caller's objects (networks, optimizer, buffer), key = name."""
    return {name: lambda local, name=name: local[name].state_dict() for name in names}


def _learner(attribute: str, read: Callable[[Any], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda local: read(getattr(local["learner"], attribute))


def _numpy_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _codes(codes: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(codes))


@dataclass(frozen=True)
class Trainer:
    """A torch trainer's tiny run and the checkpoint keys of each component of its training state.

    ``components``: component -> checkpoint key -> the value a resumed process would have without
    it, from the locals of the function that calls ``Checkpoints.load_torch`` (before it loads).
    """

    algo: str
    argv: tuple[str, ...]
    checkpoints: int  # checkpoints an uninterrupted run writes (the last at its final step)
    components: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = field(repr=False)


TRAINERS: dict[str, Trainer] = {
    trainer.algo: trainer
    for trainer in (
        Trainer(
            "dqn-torch",
            (
                *DATA, "--num-envs", "4", "--timesteps", "96", "--learning-starts", "16", "--batch-size", "8",
                "--gradient-steps", "1", "--buffer-size", "40", "--hidden", "16",
                "--target-update-interval", "5", "--eval-every", "32", "--checkpoint-every", "16",
            ),  # fmt: skip
            6,
            {
                "weights": _fresh_state_dicts("q_network", "target_network"),
                "optimizer": _fresh_state_dicts("optimizer"),
                "replay": _fresh_state_dicts("replay"),
                "rng": {
                    "generator": lambda local: local["generator"].get_state(),
                    "torch_rng": lambda local: torch.get_rng_state(),
                },
                "step": {"env_steps": lambda local: 0, "updates": lambda local: 0},
                "env": {  # the env's snapshot: its episodes in progress and its random streams
                    "env": lambda local: env_snapshot(local["envs"]),
                    **{key: lambda local, key=key: local[key] for key in ("obs", "info", "ended")},
                },
            },
        ),
        Trainer(
            "reinforce-torch",
            (
                *DATA, "--timesteps", "128", "--batch-size", "16", "--num-envs", "8", "--hidden", "16",
                "--checkpoint-every", "2", "--db-refresh", "3", "--eval-every", "3",
            ),  # fmt: skip
            4,
            {
                "weights": _fresh_state_dicts("query_net", "database_net", "value_net"),
                "optimizer": _fresh_state_dicts("optimizer"),
                "rng": {
                    "generator": lambda local: local["generator"].get_state(),
                    "item_generator": lambda local: local["item_generator"].get_state(),
                },
                "env": {"env": lambda local: env_snapshot(local["envs"], banks=False)},
                "step": {"update": lambda local: 0, "env_steps": lambda local: 0},
                "baseline": {
                    "running_mean": lambda local: None,
                    "reward_sum": lambda local: local["reward_sum"],
                    "reward_count": lambda local: 0,
                },
            },
        ),
        Trainer(
            "reinforce",
            (
                *DATA, "--timesteps", "128", "--batch-size", "16", "--hidden", "16",
                "--checkpoint-every", "2", "--db-refresh", "3", "--eval-every", "3",
            ),  # fmt: skip
            4,
            {
                "weights": {
                    name: _learner(name, lambda net: net.state_dict())
                    for name in ("query_net", "database_net", "value_net")
                },
                "optimizer": {"optimizer": _learner("optimizer", lambda opt: opt.state_dict())},
                "rng": {
                    "rng": _learner("rng", _numpy_state),
                    "generator": _learner("generator", lambda generator: generator.get_state()),
                    "env_rng": lambda local: _numpy_state(local["env"].np_random),
                },
                "step": {"update": lambda local: 0, "env_steps": lambda local: 0},
                "env": {"database_codes": lambda local: _codes(local["env"].database_codes)},
                "baseline": {"running_mean": lambda local: None},
            },
        ),
        Trainer(
            "drlih",
            (
                *DATA, "--group", "2", "--timesteps", "256", "--batch-size", "4", "--samples", "2",
                "--hidden", "8", "--checkpoint-every", "2", "--bank-refresh", "3", "--eval-every", "0",
            ),  # fmt: skip
            4,
            {
                "weights": {"model": lambda local: local["model"].state_dict()},
                "optimizer": _fresh_state_dicts("optimizer"),
                "rng": {
                    "numpy_rng": lambda local: _numpy_state(local["rng"]),
                    "torch_rng": lambda local: torch.get_rng_state(),
                    "env_rng": lambda local: _numpy_state(local["env"].np_random),
                },
                "step": {"update": lambda local: 0, "env_steps": lambda local: 0},
                "env": {"code_bank": lambda local: _codes(local["env"].code_bank)},
            },
        ),
    )
}


# --------------------------------------------------------------------------- running


def seed_globals() -> None:
    """The same global RNG states before every in-process run."""
    random.seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED)
    torch.manual_seed(GLOBAL_SEED)


def global_rng_states() -> dict[str, Any]:
    """The process's global RNG states: torch's, numpy's legacy one, python's ``random``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys, position, has_gauss, cached],
        "random": list(random.getstate()),
    }


def train_here(argv: list[str]) -> dict[str, Any]:
    """``agents.train`` in this process from the seeded global RNGs; their states afterwards."""
    seed_globals()
    status = train.main(argv)
    assert status == 0, f"agents.train {' '.join(argv)} exited {status}"
    return global_rng_states()


class Stop(BaseException):
    """Ends a run in this process as a crash would: no Ctrl-C handler sees it, nothing is saved."""


@contextlib.contextmanager
def stop_after_save(count: int) -> Iterator[None]:
    """Raise :class:`Stop` right after the ``count``-th checkpoint is committed."""
    real = Checkpoints.save_torch
    saves = 0

    def save_torch(self: Checkpoints, *args: Any, **kwargs: Any) -> Any:
        nonlocal saves
        written = real(self, *args, **kwargs)
        saves += 1
        if saves == count:
            raise Stop(f"stopped after checkpoint {count} ({written.model})")
        return written

    Checkpoints.save_torch = save_torch
    try:
        yield
    finally:
        Checkpoints.save_torch = real


def stop_after_checkpoint(trainer: Trainer, out: Path, count: int) -> None:
    """Run ``trainer`` into ``out`` and stop it right after its ``count``-th checkpoint."""
    if not 0 < count < trainer.checkpoints:
        raise ValueError(f"count must be in 1..{trainer.checkpoints - 1}, got {count}")
    seed_globals()
    with stop_after_save(count):
        try:
            train.main([trainer.algo, *trainer.argv, "--out", str(out)])
        except Stop:
            pass
        else:
            raise AssertionError(f"{trainer.algo} finished without reaching checkpoint {count}")
    assert not (out / "results.json").exists()


@contextlib.contextmanager
def dropping(trainer: Trainer, component: str) -> Iterator[list[str]]:
    """The resumed process loses ``component``: its keys get the caller's fresh values on load.

    Yields the list of keys replaced so far (a test can check the loss really happened).
    """
    getters = trainer.components[component]
    real = Checkpoints.load_torch
    replaced: list[str] = []

    def load_torch(self: Checkpoints, map_location: Any = "cpu") -> Any:
        loaded, state = real(self, map_location)
        caller = sys._getframe(1).f_locals  # the trainer's objects, built and not yet loaded
        for key, fresh in getters.items():
            assert key in state, f"{trainer.algo} checkpoints hold no {key!r}"
            state[key] = fresh(caller)
            replaced.append(key)
        return loaded, state

    Checkpoints.load_torch = load_torch
    try:
        yield replaced
    finally:
        Checkpoints.load_torch = real


# --------------------------------------------------------------------------- events (kill points)


@contextlib.contextmanager
def event_hooks(callback: Callable[[str, str], None]) -> Iterator[None]:
    """Call ``callback(kind, detail)`` after each backward pass and each file written, before its rename.

    ``kind`` is ``"backward"`` or ``"write"`` (``detail``: the final path, e.g.
    ``DIR/checkpoints/step_16.pt``). Patches ``torch.autograd.backward`` and
    ``agents.checkpoint.atomic_path``, which every ``agents.checkpoint`` writer goes through.
    """
    real_backward, real_atomic_path = torch.autograd.backward, checkpoint_module.atomic_path

    def backward(*args: Any, **kwargs: Any) -> Any:
        result = real_backward(*args, **kwargs)
        callback("backward", "")
        return result

    @contextlib.contextmanager
    def atomic_path(path: str | Path) -> Iterator[Path]:
        with real_atomic_path(path) as temporary:
            yield temporary
            callback("write", str(path))  # the temporary file is complete; the rename comes next

    torch.autograd.backward, checkpoint_module.atomic_path = backward, atomic_path
    try:
        yield
    finally:
        torch.autograd.backward, checkpoint_module.atomic_path = real_backward, real_atomic_path


def is_checkpoint_write(detail: str) -> bool:
    """Whether a ``write`` event is a checkpoint's file (``step_N.pt`` or ``state.json``)."""
    return Path(detail).parent.name == "checkpoints"


KILL_KINDS: tuple[str, ...] = ("backward", "checkpoint-write")


def is_kill_event(kind: str, event: str, detail: str) -> bool:
    """Whether an event of :func:`event_hooks` counts for a kill of ``kind`` (:data:`KILL_KINDS`)."""
    if kind == "backward":
        return event == "backward"
    return event == "write" and is_checkpoint_write(detail)


# --------------------------------------------------------------------------- reference runs

_REFERENCES: dict[str, tuple[Path, dict[str, Any], list[tuple[str, str]]]] = {}
_STOPPED: dict[tuple[str, int], Path] = {}


@functools.cache
def _session() -> Path:
    """A folder for the runs shared by the tests of a session (deleted at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="resume_check_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def reference(trainer: Trainer) -> tuple[Path, dict[str, Any], list[tuple[str, str]]]:
    """The uninterrupted run of ``trainer`` (trained once per session): folder, final state, events."""
    if trainer.algo not in _REFERENCES:
        out = _session() / f"{trainer.algo}-reference"
        events: list[tuple[str, str]] = []
        with event_hooks(lambda kind, detail: events.append((kind, detail))):
            rng_states = train_here([trainer.algo, *trainer.argv, "--out", str(out)])
        _REFERENCES[trainer.algo] = (out, final_state(out, trainer.algo, rng_states), events)
    return _REFERENCES[trainer.algo]


def resume_final_state(trainer: Trainer, folder: Path, command: str | None = None) -> dict[str, Any]:
    """Resume the run in ``folder`` to its end in this process; its final state.

    ``command``: the algorithm named on the command line (default: the trainer's), e.g. ``dqn``,
    which resumes with the trainer that wrote the run.
    """
    rng_states = train_here([command or trainer.algo, "--resume", str(folder)])
    return final_state(folder, trainer.algo, rng_states)


def stopped_run(trainer: Trainer, count: int, to: Path) -> Path:
    """A copy at ``to`` of ``trainer``'s run stopped after checkpoint ``count`` (stopped once per session)."""
    key = (trainer.algo, count)
    if key not in _STOPPED:
        _STOPPED[key] = _session() / f"{trainer.algo}-stopped-{count}"
        stop_after_checkpoint(trainer, _STOPPED[key], count)
    shutil.copytree(_STOPPED[key], to)
    return to


# --------------------------------------------------------------------------- comparing


def _without_timings(results: dict[str, Any]) -> dict[str, Any]:
    results = {key: value for key, value in results.items() if key != "train_seconds"}
    if "curve" in results:
        results["curve"] = [{k: v for k, v in point.items() if k != "seconds"} for point in results["curve"]]
    return results


def final_state(folder: Path, algo: str, rng_states: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a finished run ends with (see the module docstring)."""
    recorded, state = Checkpoints(folder, algo).load_torch()
    return {
        "results": _without_timings(json.loads((folder / "results.json").read_text())),
        "model": read_tensors(folder / "model.pt"),
        "checkpoint": {"num_timesteps": recorded.num_timesteps, **_without_timings(state)},
        "state.json": _without_timings(read_json(folder / "checkpoints" / "state.json")),
        "globals": rng_states,
    }


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ (dicts, lists, tensors, arrays, numbers, nested), bitwise; [] if same."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}: key {key!r} only in one" for key in sorted(set(a) ^ set(b), key=str)]
        for key in a.keys() & b.keys():
            found += differences(a[key], b[key], f"{where}.{key}")
        return found
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [line for i, (x, y) in pairs for line in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device)
            and torch.equal(a, b)
        )
        return [] if same else [f"{where}: tensors differ"]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
        same = same and np.array_equal(a, b)
        return [] if same else [f"{where}: arrays differ"]
    if type(a) is not type(b) or a != b:
        return [f"{where}: {a!r} != {b!r}"]
    return []


def assert_same_run(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Fail naming every difference between two final states."""
    found = differences(got, expected)
    assert not found, "resumed run differs from the uninterrupted one:\n" + "\n".join(found[:20])
