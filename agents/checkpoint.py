"""What a checkpoint is, and the one module that writes and reads the files of a run folder.

A run folder ``DIR`` keeps its newest complete checkpoint in ``DIR/checkpoints``:

- ``state.json`` names it: ``{"format": 1, "trainer": "dqn-torch", "num_timesteps": n,
  "train_seconds": s, "model": "step_n.pt", "replay_buffer": null}``. ``trainer`` is the
  ``agents.train`` algorithm that wrote it (``dqn``, ``dqn-torch``, ``reinforce``, ...): a trainer
  refuses to resume another's checkpoint.
- the files it names. The torch trainers write one ``step_n.pt`` holding their whole training state
  (a dict of tensors, numbers, strings, lists and dicts: weights, optimizer state, RNG states,
  counters, and what the trainer needs to continue exactly, e.g. the env's code bank), plus a
  ``"checkpoint"`` header repeating trainer, format and step. The stable-baselines3 trainers write
  the same kind of ``step_n.pt`` (``agents.sb3_state`` says what it holds: the model's parameters
  and optimizer state, counters, RNG states, the envs' snapshots) and, for off-policy models, the
  replay buffer's filled rows as ``step_n_replay.npz``. A run's final SB3 model is ``model.pt``
  (the policy's parameters and the spaces); the model is rebuilt from ``args.json`` to read it.

Nothing here runs code when it reads a file: no unpickling, no SB3 ``load``. The formats before
this one (SB3's ``model.zip`` and ``step_n.zip``, whose ``data`` entry holds pickled objects,
replay buffers as ``step_n_replay.pkl``, the baselines' ``model.pkl``) are refused with
:func:`legacy_format_error`, which names the file and the command that converts a run whose
author the user trusts (``python -m agents.convert RUN --trust-pickle``).

Writes are atomic: every file goes to a temporary name in the same folder, is flushed to disk
(``fsync``), then renamed over its final name (``os.replace``); ``state.json`` is renamed last, then
the previous checkpoint's files are deleted. A run killed at any moment, or a write that fails,
leaves the previous checkpoint (or the new one) complete. Reads raise :class:`CheckpointError` (a
``ValueError``: the CLI prints it on one line and exits 2) naming the file that is missing,
unreadable, or written by another trainer.

File formats live here only, one function per kind: :func:`write_json` / :func:`read_json`,
:func:`write_tensors` / :func:`read_tensors` (``torch.load(weights_only=True)``: no code runs on
load), :func:`write_arrays` / :func:`read_arrays` (``.npz`` with ``allow_pickle=False``),
:func:`write_pickle` / :func:`read_pickle` (the baselines' fitted models, until they move to
``.npz``). Changing a format is a change to this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hashing_gym.files import atomic_path

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint (or a run's model file) that is missing, unreadable, or written by another trainer."""


# --------------------------------------------------------------------------- atomic writes


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (a reader sees the old or the new file)."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`CheckpointError` naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no JSON object")
    return data


def write_tensors(path: str | Path, state: dict[str, Any]) -> None:
    """Write a dict of tensors, numbers, strings, lists and dicts atomically (``torch.save``)."""
    import torch  # agents.common imports this module; the baselines need no torch here

    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def read_tensors(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A dict written by :func:`write_tensors`, loaded with ``weights_only=True`` (no code runs).

    Raises:
        CheckpointError: naming ``path`` if it is missing or not such a file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no checkpoint dict")
    return state


def write_arrays(path: str | Path, arrays: dict[str, Any]) -> None:
    """Write a dict of numpy arrays (or scalars) as an uncompressed ``.npz``, atomically.

    Object arrays are refused: what :func:`read_arrays` reads back must need no unpickling.
    """
    import numpy as np

    values = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in values.items():
        if value.dtype.hasobject:
            raise TypeError(f"write_arrays: {name!r} is an object array, which only pickle could store")
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **values)


def read_arrays(path: str | Path) -> dict[str, Any]:
    """The arrays written by :func:`write_arrays` (``allow_pickle=False``: no code runs).

    Raises:
        CheckpointError: naming ``path`` if it is missing or not such a file.
    """
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if not zipfile.is_zipfile(path):  # np.load would otherwise try the file as a pickle
        raise CheckpointError(f"{path} is not an .npz array file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a readable .npz array file ({error})") from None


# The pickle-based files of earlier versions (and SB3's own format): refused, never opened.
LEGACY_SUFFIXES: tuple[str, ...] = (".zip", ".pkl")
CONVERT_COMMAND = "python -m agents.convert {folder} --trust-pickle"


def legacy_format_error(path: str | Path, folder: str | Path) -> CheckpointError:
    """The error for a run file in a pickle-based format of earlier versions (not opened).

    Args:
        path: the file (``model.zip``, ``step_n.zip``, ``step_n_replay.pkl``, ``model.pkl``).
        folder: its run folder, which the conversion command takes.
    """
    command = CONVERT_COMMAND.format(folder=folder)
    return CheckpointError(
        f"{path} is in a pickle-based format (earlier versions of this project, stable-baselines3's "
        f"zip) that runs any code the file carries when it is loaded, so it is not opened; if you "
        f"trust where the run came from, convert it with `{command}`"
    )


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """What ``state.json`` says of the newest complete checkpoint (file names inside ``checkpoints/``)."""

    trainer: str
    num_timesteps: int
    train_seconds: float
    model: str
    replay_buffer: str | None = None

    def files(self) -> list[str]:
        """The files of this checkpoint."""
        return [name for name in (self.model, self.replay_buffer) if name]


class Checkpoints:
    """The checkpoints of one run folder, as one trainer writes and reads them.

    Args:
        folder: the run folder (``checkpoints/`` is created on the first save).
        trainer: the ``agents.train`` algorithm name recorded in, and required of, every checkpoint.
    """

    def __init__(self, folder: str | Path, trainer: str) -> None:
        self.folder = Path(folder)
        self.directory = self.folder / CHECKPOINT_DIR
        self.trainer = trainer

    @property
    def state_file(self) -> Path:
        """``checkpoints/state.json``."""
        return self.directory / STATE_FILE

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None if the run has none yet.

        Raises:
            CheckpointError: if ``state.json`` is unreadable, or names another trainer or a missing file.
        """
        if not self.state_file.exists():
            return None
        data = read_json(self.state_file)
        # state.json before this module had no trainer: its run's args.json (checked by agents.train) says.
        trainer = data.get("trainer", self.trainer)
        if trainer != self.trainer:
            raise CheckpointError(
                f"{self.state_file} was written by {trainer}, not {self.trainer}: "
                f"resume it with `python -m agents.train {trainer} --resume {self.folder}`"
            )
        try:
            checkpoint = Checkpoint(
                trainer=trainer,
                num_timesteps=int(data["num_timesteps"]),
                train_seconds=float(data["train_seconds"]),
                model=str(data["model"]),
                replay_buffer=data.get("replay_buffer"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{self.state_file} is not a checkpoint state ({error!r})") from None
        for name in checkpoint.files():  # refused unopened, whether or not its companion is there
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise CheckpointError(f"{self.state_file} names {name!r}, not a file of {self.directory}")
            if Path(name).suffix in LEGACY_SUFFIXES:
                raise legacy_format_error(self.directory / name, self.folder)
        for name in checkpoint.files():
            if not (self.directory / name).is_file():
                raise CheckpointError(f"{self.state_file} names {name}, which is missing")
        return checkpoint

    def resume_point(self) -> Checkpoint:
        """The checkpoint that ``--resume`` continues from; :class:`CheckpointError` if there is none."""
        checkpoint = self.latest()
        if checkpoint is None:
            raise CheckpointError(f"--resume {self.folder}: the run has no checkpoint to continue from")
        return checkpoint

    def train_seconds(self) -> float:
        """Training seconds recorded by the newest checkpoint (0 without one)."""
        checkpoint = self.latest()
        return checkpoint.train_seconds if checkpoint else 0.0

    # torch trainers -----------------------------------------------------------------------

    def save_torch(self, state: dict[str, Any], num_timesteps: int, train_seconds: float) -> Checkpoint:
        """Write ``state`` (the trainer's whole training state) as ``step_{num_timesteps}.pt``; commit it."""
        step = int(num_timesteps)
        checkpoint = Checkpoint(self.trainer, step, float(train_seconds), f"step_{step}.pt")
        header = {"trainer": self.trainer, "format": FORMAT, "num_timesteps": step}
        payload = {"checkpoint": header, **state}
        return self._commit(checkpoint, lambda: write_tensors(self.directory / checkpoint.model, payload))

    def load_torch(self, map_location: Any = "cpu") -> tuple[Checkpoint, dict[str, Any]]:
        """The resume point and the state dict saved with it (``weights_only`` load)."""
        checkpoint = self.resume_point()
        path = self.directory / checkpoint.model
        state = read_tensors(path, map_location=map_location)
        header = state.pop("checkpoint", {})
        if not isinstance(header, dict):
            raise CheckpointError(f"{path} has no checkpoint header")
        trainer = header.get("trainer", self.trainer)
        if trainer != self.trainer:
            raise CheckpointError(f"{path} was written by {trainer}, not {self.trainer}")
        return checkpoint, state

    # stable-baselines3 trainers -----------------------------------------------------------

    def save_sb3(
        self,
        state: dict[str, Any],
        replay: dict[str, Any] | None,
        num_timesteps: int,
        train_seconds: float,
        delete_previous: bool = True,
    ) -> Checkpoint:
        """Write an SB3 model's training state (``agents.sb3_state.capture``) and commit it.

        ``state`` goes to ``step_{num_timesteps}.pt`` (with the ``"checkpoint"`` header, as
        :meth:`save_torch`), ``replay`` (the replay buffer's arrays, or None for on-policy models)
        to ``step_{num_timesteps}_replay.npz``. ``delete_previous=False`` keeps the files of the
        checkpoint this one replaces (``agents.convert`` leaves the converted files in place).
        """
        step = int(num_timesteps)
        checkpoint = Checkpoint(
            self.trainer,
            step,
            float(train_seconds),
            f"step_{step}.pt",
            f"step_{step}_replay.npz" if replay is not None else None,
        )
        header = {"trainer": self.trainer, "format": FORMAT, "num_timesteps": step}

        def write() -> None:
            write_tensors(self.directory / checkpoint.model, {"checkpoint": header, **state})
            if checkpoint.replay_buffer:
                write_arrays(self.directory / checkpoint.replay_buffer, replay or {})

        return self._commit(checkpoint, write, delete_previous)

    def load_sb3(self) -> tuple[Checkpoint, dict[str, Any], dict[str, Any] | None]:
        """The resume point, its training state and its replay buffer's arrays (None if it has none).

        Raises:
            CheckpointError: no checkpoint, a file in an old pickle-based format, a file that is
                missing or unreadable, or one written by another trainer.
        """
        checkpoint, state = self.load_torch()
        replay = None
        if checkpoint.replay_buffer:
            replay = read_arrays(self.directory / checkpoint.replay_buffer)
        return checkpoint, state, replay

    # -------------------------------------------------------------------------------------

    def _commit(
        self, checkpoint: Checkpoint, write: Callable[[], None], delete_previous: bool = True
    ) -> Checkpoint:
        """Write the checkpoint's files, then ``state.json`` naming them, then drop the previous files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        previous = self._previous_files() if delete_previous else set()
        write()
        write_json(self.state_file, {"format": FORMAT, **asdict(checkpoint)})
        for name in previous - set(checkpoint.files()):
            (self.directory / name).unlink(missing_ok=True)
        # Temporary files of a process killed mid-write (atomic_path's): the run's lock keeps every
        # other process out, and this one's writes are done, so any left here is stale.
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return checkpoint

    def _previous_files(self) -> set[str]:
        """The files that ``state.json`` names now, whoever wrote them (a fresh run may reuse a folder)."""
        try:
            data = read_json(self.state_file)
        except CheckpointError:  # none yet, or unreadable: nothing known to delete
            return set()
        names = (data.get("model"), data.get("replay_buffer"))
        # Only plain names inside checkpoints/: state.json must not steer a delete elsewhere.
        return {name for name in names if isinstance(name, str) and name and Path(name).name == name}
