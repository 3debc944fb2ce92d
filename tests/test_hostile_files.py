"""Files are data, never code (issue #16): every file of a run folder carries a payload, none runs.

Each test plants, in an otherwise genuine run folder, a file whose loading by pickle would create a
marker file: a pickled ``__reduce__`` (the baselines' old ``model.pkl``, an SB3 replay ``.pkl``), a
torch checkpoint holding a pickled object, an SB3 zip whose ``data`` entry carries a serialized
object, an ``.npz`` holding an object array, and CIFAR-10 batches reached through ``args.json``'s
``data_path``. ``agents.evaluate`` and ``agents.train --resume`` must refuse each with one
``error: ...`` line naming the file (exit 2), and the marker must never appear. A last test greps the
code for the loaders that run code.
"""

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Payload, hostile_zip

from agents import evaluate, train
from agents.checkpoint import CheckpointError, read_arrays

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a file of the run folder ran code"


def pickled(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def torch_payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weights": Payload(marker)}, buffer)
    return buffer.getvalue()


def refuse(main, argv, capsys, *names):
    """``main(argv)`` exits 2 with one ``error:`` line naming each of ``names``; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


RUNS = {
    "lsh": ["lsh", "--dataset", "blobs", "--bits", "8"],
    "reinforce": [
        "reinforce", "--bits", "8", "--timesteps", "512", "--batch-size", "128", "--eval-every", "0",
        "--checkpoint-every", "2",
    ],
    "ppo": [
        "ppo", "--bits", "8", "--timesteps", "512", "--num-envs", "2", "--n-steps", "128",
        "--batch-size", "128", "--n-epochs", "1", "--eval-every", "0", "--checkpoint-every", "256",
    ],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One genuine finished run folder per trainer kind (baseline, torch, SB3)."""
    folders = {}
    for name, argv in RUNS.items():
        folder = tmp_path_factory.mktemp("runs") / name
        assert train.main([*argv, "--out", str(folder)]) == 0
        folders[name] = folder
    return folders


def copy_run(finished, name, tmp_path) -> Path:
    folder = tmp_path / name
    shutil.copytree(finished[name], folder, ignore=shutil.ignore_patterns(".lock"))
    return folder


def drop_models(folder: Path) -> None:
    for path in folder.glob("model.*"):
        path.unlink()


def plant_checkpoint(folder: Path, trainer: str, model: str, content: bytes, replay: tuple | None = None):
    """Replace the run's checkpoints by one ``state.json`` naming ``model`` (and a replay buffer)."""
    directory = folder / "checkpoints"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    (directory / model).write_bytes(content)
    state = {"format": 1, "trainer": trainer, "num_timesteps": 128, "train_seconds": 1.0, "model": model}
    state["replay_buffer"] = None
    if replay:
        (directory / replay[0]).write_bytes(replay[1])
        state["replay_buffer"] = replay[0]
    (directory / "state.json").write_text(json.dumps(state))


def test_a_pickled_baseline_model_is_refused_with_the_conversion_command(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "lsh", tmp_path)
    drop_models(folder)
    (folder / "model.pkl").write_bytes(pickled(marker))
    line = refuse(evaluate.main, [str(folder)], capsys, "model.pkl")
    assert "agents.convert" in line and "--trust-pickle" in line


def test_a_torch_model_holding_an_object_is_refused(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "reinforce", tmp_path)
    (folder / "model.pt").write_bytes(torch_payload(marker))
    refuse(evaluate.main, [str(folder)], capsys, "model.pt")


def test_a_torch_checkpoint_holding_an_object_is_refused_on_resume(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "reinforce", tmp_path)
    plant_checkpoint(folder, "reinforce", "step_128.pt", torch_payload(marker))
    refuse(train.main, ["reinforce", "--resume", str(folder)], capsys, "step_128.pt")


def test_an_sb3_zip_model_is_refused(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "ppo", tmp_path)
    drop_models(folder)
    (folder / "model.zip").write_bytes(hostile_zip(marker))
    line = refuse(evaluate.main, [str(folder)], capsys, "model.zip")
    assert "agents.convert" in line


@pytest.mark.parametrize("kind", ["zip", "torch"])
def test_an_sb3_checkpoint_carrying_code_is_refused_on_resume(kind, finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "ppo", tmp_path)
    if kind == "zip":
        plant_checkpoint(folder, "ppo", "step_128.zip", hostile_zip(marker))
    else:
        plant_checkpoint(folder, "ppo", "step_128.pt", torch_payload(marker))
    refuse(train.main, ["ppo", "--resume", str(folder)], capsys, f"step_128.{kind.replace('torch', 'pt')}")


def test_a_pickled_replay_buffer_is_refused_on_resume(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "ppo", tmp_path)
    checkpoint = json.loads((folder / "checkpoints" / "state.json").read_text())
    model = (folder / "checkpoints" / checkpoint["model"]).read_bytes()
    name = Path(checkpoint["model"]).stem
    replay = (f"{name}_replay.pkl", pickled(marker))
    plant_checkpoint(folder, "ppo", checkpoint["model"], model, replay=replay)
    refuse(train.main, ["ppo", "--resume", str(folder)], capsys, "_replay.pkl")


def test_an_npz_holding_pickled_objects_is_refused(tmp_path, marker):
    path = tmp_path / "replay.npz"
    np.savez(path, observations=np.array([Payload(marker)], dtype=object))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_arrays(path)


def cifar_payload_folder(tmp_path: Path, marker: Path) -> Path:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickled(marker))
    return folder


def test_a_cifar_pickle_named_by_a_run_folder_is_refused_by_evaluate(finished, tmp_path, marker, capsys):
    folder = copy_run(finished, "lsh", tmp_path)
    args = json.loads((folder / "args.json").read_text())
    args.update(dataset="cifar10", data_path=str(cifar_payload_folder(tmp_path, marker)))
    (folder / "args.json").write_text(json.dumps(args))
    line = refuse(evaluate.main, [str(folder)], capsys, "--trust-pickle")
    assert "cifar" in line
    # evaluate says which file it was sent to by the folder, before anything is opened
    assert args["data_path"] in capsys.readouterr().out + line


def test_a_cifar_pickle_is_refused_by_train_without_trust(tmp_path, marker, capsys):
    data = cifar_payload_folder(tmp_path, marker)
    argv = ["lsh", "--dataset", "cifar10", "--data-path", str(data), "--bits", "8"]
    argv += ["--out", str(tmp_path / "run")]
    refuse(train.main, argv, capsys, "--trust-pickle")
    assert not (tmp_path / "run").exists()


# Loaders that run code. The only ones allowed are behind an explicit per-call trust flag: the
# converter of old run folders (--trust-pickle) and the CIFAR-10 reader (trust_pickle=True).
CODE_RUNNING = re.compile(
    r"pickle\.loads?\(|cloudpickle|weights_only\s*=\s*False|allow_pickle\s*=\s*True"
    r"|\b(?:DQN|PPO|A2C|RecurrentPPO|GuidedDQN|MultiBinaryRecurrentPPO|model_class|BaseAlgorithm)\.load\("
    r"|\.load_replay_buffer\("
)
ALLOWED = {"agents/convert.py", "hashing_gym/data.py"}


def test_no_code_running_loader_outside_the_trusted_paths():
    found = []
    for package in ("agents", "hashing_gym", "benchmarks", "examples"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if CODE_RUNNING.search(line) and relative not in ALLOWED:
                    found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_trusted_paths_are_gated_by_their_flag():
    convert = (ROOT / "agents" / "convert.py").read_text()
    assert "trust_pickle" in convert and "--trust-pickle" in convert
    data = (ROOT / "hashing_gym" / "data.py").read_text()
    loads = [m.start() for m in re.finditer(r"pickle\.loads?\(", data)]
    assert len(loads) == 1, "one CIFAR-10 reader"
    reader = data[: loads[0]]
    assert "trust_pickle" in reader[reader.rfind("\ndef ") :], "the CIFAR-10 reader checks trust_pickle"
