"""Convert a run folder of an earlier version, whose files are pickle-based, to safe files.

``python -m agents.convert RUN --trust-pickle``.

Earlier versions wrote pickle-based files: stable-baselines3's zips (``model.zip`` and
``checkpoints/step_n.zip``, whose ``data`` entry holds pickled objects), replay buffers as
``checkpoints/step_n_replay.pkl`` and the baselines' ``model.pkl``. Loading such a file runs any
code it carries, so ``agents.evaluate`` and ``--resume`` refuse them. If you trust where the run
came from (you wrote it, or its author), this command loads them once, with SB3 and pickle, and
writes the safe files beside them:

- ``model.zip`` -> ``model.pt`` (the policy's parameters and spaces, ``agents.sb3_state``);
- ``checkpoints/step_n.zip`` (+ ``step_n_replay.pkl``) -> ``step_n.pt`` (+ ``step_n_replay.npz``),
  named by ``checkpoints/state.json``. The old files held no random-generator or env state, so a
  run resumed from a converted checkpoint starts its envs afresh (as SB3's own resume did) and is
  not bitwise the run that was never interrupted;
- a baseline's ``model.pkl`` -> its safe format (``agents.baselines.convert_legacy_model``).

The old files are left in place (delete them when the converted run evaluates as before). Without
``--trust-pickle`` nothing is opened: the command says which files it would load and why it does not.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.checkpoint import (
    CHECKPOINT_DIR,
    LEGACY_SUFFIXES,
    STATE_FILE,
    CheckpointError,
    Checkpoints,
    read_json,
)
from agents.common import SB3_MODEL_FILE, UsageError, read_run_args

SB3_TRAINERS: tuple[str, ...] = ("dqn-sb3", "ppo", "a2c", "rppo")
BASELINES: tuple[str, ...] = ("lsh", "itq", "sdh", "mlp-code")
LEGACY_SB3_MODEL = "model.zip"
LEGACY_BASELINE_MODEL = "model.pkl"


def legacy_files(folder: Path, algo: str) -> list[Path]:
    """The files of ``folder`` in an old pickle-based format (nothing is opened but ``state.json``)."""
    if algo in BASELINES:
        return [folder / LEGACY_BASELINE_MODEL] if (folder / LEGACY_BASELINE_MODEL).is_file() else []
    found = [folder / LEGACY_SB3_MODEL] if (folder / LEGACY_SB3_MODEL).is_file() else []
    state = _legacy_checkpoint(folder)
    if state is not None:
        found += [folder / CHECKPOINT_DIR / name for name in _checkpoint_files(state)]
    return found


def _checkpoint_files(state: dict[str, Any]) -> list[str]:
    names = [state.get("model"), state.get("replay_buffer")]
    return [name for name in names if isinstance(name, str) and name and Path(name).name == name]


def _legacy_checkpoint(folder: Path) -> dict[str, Any] | None:
    """``checkpoints/state.json`` if it names an old-format checkpoint, else None."""
    path = folder / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    state = read_json(path)
    if any(Path(name).suffix in LEGACY_SUFFIXES for name in _checkpoint_files(state)):
        return state
    return None


def convert_run(folder: str | Path, trust_pickle: bool = False) -> list[Path]:
    """Convert the old-format files of a run folder (module docstring); return the files written.

    Raises:
        UsageError: ``trust_pickle`` not given (the message names the files and why), or a
            folder whose algorithm has nothing to convert.
        FileNotFoundError: no run in ``folder``.
        CheckpointError: an old file that SB3 or pickle cannot read, or a baseline conversion
            this version does not have.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    algo = read_run_args(folder).get("algo")
    if algo not in SB3_TRAINERS + BASELINES:
        raise UsageError(f"{folder} is a run of {algo!r}, whose files have no older format to convert")
    old = legacy_files(folder, str(algo))
    if not old:
        return []
    if not trust_pickle:
        names = ", ".join(str(path) for path in old)
        raise UsageError(
            f"{names}: pickle-based files, which run any code they carry when loaded; give --trust-pickle "
            "to load them once and convert them, only if you trust where the run came from"
        )
    if algo in BASELINES:
        return _convert_baseline(folder)
    return _convert_sb3(folder, str(algo))


def _convert_baseline(folder: Path) -> list[Path]:
    from agents.baselines import convert_legacy_model
    path = folder / LEGACY_BASELINE_MODEL
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: nothing to convert")
    try:
        legacy = pickle.loads(path.read_bytes())  # runs the file's code: the user trusts it (--trust-pickle)
    except Exception as error:  # unpickling raises whatever the pickled classes raise
        raise CheckpointError(f"{path} is not a readable pickled model ({error})") from None
    before = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    convert_legacy_model(folder, legacy)
    return sorted(path for path in folder.iterdir() if before.get(path) != path.stat().st_mtime_ns)


def _convert_sb3(folder: Path, algo: str) -> list[Path]:
    from agents.sb3_state import capture_partial, replay_arrays, save_policy
    from agents.train import ALGORITHMS

    module = importlib.import_module(ALGORITHMS[algo])
    written = []
    if (folder / LEGACY_SB3_MODEL).is_file():
        model = _load_zip(module.MODEL_CLASS, folder / LEGACY_SB3_MODEL)
        save_policy(folder / SB3_MODEL_FILE, model, algo)
        try:  # the model that the run's args.json builds must take these parameters
            module.load_model(folder, device="cpu")
        except CheckpointError:
            (folder / SB3_MODEL_FILE).unlink()
            raise
        written.append(folder / SB3_MODEL_FILE)
    state = _legacy_checkpoint(folder)
    if state is not None:
        directory = folder / CHECKPOINT_DIR
        model = _load_zip(module.MODEL_CLASS, directory / str(state["model"]))
        replay = None
        if state.get("replay_buffer"):
            path = directory / str(state["replay_buffer"])
            try:
                model.load_replay_buffer(path)  # pickle: the user trusts this run (--trust-pickle)
            except Exception as error:  # unpickling raises anything the pickled classes raise
                raise CheckpointError(f"{path} is not a readable replay buffer ({error})") from None
            replay = replay_arrays(model.replay_buffer)
        checkpoint = Checkpoints(folder, algo).save_sb3(
            capture_partial(model),
            replay,
            int(model.num_timesteps),
            float(state.get("train_seconds", 0.0)),
            delete_previous=False,
        )
        written += [directory / name for name in checkpoint.files()]
    return written


def _load_zip(model_class: Any, path: Path) -> Any:
    """``model_class.load(path)``: SB3 unpickles the zip's data (the user trusts it: --trust-pickle)."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return model_class.load(path, device="cpu")
    except Exception as error:  # zipfile, unpickling and SB3 raise many kinds on a bad file
        raise CheckpointError(f"{path} is not a readable {model_class.__name__} model ({error})") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m agents.convert``."""
    parser = argparse.ArgumentParser(prog="python -m agents.convert", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="run folder written by an earlier version of agents.train")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load the old pickle-based files (this runs any code they carry: only for runs you trust)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Convert one run folder; return the exit status (2 with one ``error: ...`` line on a mistake)."""
    parsed = build_parser().parse_args(argv)
    try:
        written = convert_run(parsed.folder, parsed.trust_pickle)
    except (ValueError, FileNotFoundError) as error:  # UsageError and CheckpointError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not written:
        print(f"{parsed.folder}: no file in an old format, nothing to convert")
        return 0
    for path in written:
        print(f"wrote {path}")
    print(f"the old files are left in place; check the run with: python -m agents.evaluate {parsed.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
