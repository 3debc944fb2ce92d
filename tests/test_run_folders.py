"""Run folders are never lost or mixed: --out, --overwrite, --resume checks, the lock, umask (issue #16)."""

import json
import os
import stat
import subprocess
import sys

import pytest
from filelock import FileLock

from agents import train
from agents.common import UsageError, parse_options

LSH = ["lsh", "--dataset", "blobs", "--bits", "8"]


def snapshot(folder):
    """Every file under ``folder`` (path -> bytes), to show that a refused command changed nothing."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refuse(argv, capsys):
    """Run the CLI, expect exit 2 and one ``error: ...`` line; return that line."""
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished lsh run's folder."""
    folder = tmp_path_factory.mktemp("runs") / "lsh"
    assert train.main([*LSH, "--out", str(folder)]) == 0
    return folder


def test_a_non_empty_out_is_refused_and_left_as_it_was(finished, capsys):
    before = snapshot(finished)
    err = refuse([*LSH, "--seed", "3", "--out", str(finished)], capsys)
    assert err == (
        f"error: --out {finished} is not empty: continue its run with --resume {finished}, "
        "or replace it with --overwrite"
    )
    assert snapshot(finished) == before


def test_a_refused_argument_leaves_a_finished_run_byte_identical(finished, capsys):
    before = snapshot(finished)
    err = refuse([*LSH, "--bits", "0", "--out", str(finished)], capsys)
    assert err == "error: --bits must be positive, got 0"
    assert snapshot(finished) == before


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    folder = tmp_path / "new" / "run"
    err = refuse([*LSH, "--topk", "0", "--out", str(folder)], capsys)
    assert err == "error: --topk must be positive, got 0"
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_the_run_files_only(tmp_path, capsys):
    folder = tmp_path / "run"
    assert train.main([*LSH, "--out", str(folder)]) == 0
    (folder / "notes.txt").write_text("mine\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "old.pt").write_bytes(b"old")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    assert train.main([*LSH, "--seed", "5", "--out", str(folder), "--overwrite"]) == 0
    assert json.loads((folder / "args.json").read_text())["seed"] == 5
    assert json.loads((folder / "results.json").read_text())["seed"] == 5
    assert not (folder / "checkpoints").exists()
    assert (folder / "notes.txt").read_text() == "mine\n" and outside.read_text() == "keep\n"


def test_resume_names_the_options_that_differ_from_the_run(finished, capsys):
    before = snapshot(finished)
    err = refuse(["lsh", "--resume", str(finished), "--bits", "16", "--seed", "0"], capsys)
    assert err == (
        f"error: --resume {finished}: options differ from the run's args.json: --bits 16 (run: 8); "
        "leave them out to resume the run as recorded"
    )
    err = refuse(["lsh", "--resume", str(finished), "--overwrite"], capsys)
    assert err == f"error: --resume {finished}: --overwrite cannot be combined with --resume"
    assert snapshot(finished) == before


def test_resume_accepts_options_equal_to_the_run():
    given = {"bits": 8, "dataset": "blobs", "resume": "x"}
    recorded = {"algo": "lsh", "bits": 8, "dataset": "blobs"}
    import agents.train as module

    original = module.read_run_args
    module.read_run_args = lambda folder: dict(recorded)
    try:
        assert module.resumed_arguments("lsh", "x", given)["bits"] == 8
    finally:
        module.read_run_args = original


def test_a_second_process_on_a_run_folder_fails_at_once(tmp_path, capsys):
    folder = tmp_path / "busy"
    folder.mkdir()
    lock = FileLock(str(folder / ".lock"), timeout=0)
    with lock:
        (folder / ".lock").write_text(f"{os.getpid()}\n")
        err = refuse([*LSH, "--out", str(folder)], capsys)
    assert err == f"error: {folder} is in use by another run (pid {os.getpid()})"
    assert sorted(os.listdir(folder)) == [".lock"]
    assert train.main([*LSH, "--out", str(folder)]) == 0  # released: the folder is free again
    assert train.main([*LSH, "--out", str(folder), "--overwrite"]) == 0  # and the lock was released at exit


def test_a_trainer_in_another_process_fails_at_once_on_a_locked_folder(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    with FileLock(str(folder / ".lock"), timeout=0):
        (folder / ".lock").write_text(f"{os.getpid()}\n")
        process = subprocess.run(
            [sys.executable, "-m", "agents.train", *LSH, "--out", str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert process.returncode == 2
    assert process.stderr.strip() == f"error: {folder} is in use by another run (pid {os.getpid()})"
    assert sorted(os.listdir(folder)) == [".lock"]


@pytest.mark.parametrize("algo", list(train.ALGORITHMS))
def test_every_trainer_checks_its_arguments_before_writing(algo, tmp_path, capsys):
    folder = tmp_path / "new" / "run"
    err = refuse([algo, "--bits", "0", "--out", str(folder)], capsys)
    assert err == "error: --bits must be positive, got 0"
    assert not (tmp_path / "new").exists()


def test_run_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = tmp_path / "run"
        assert train.main([*LSH, "--out", str(folder)]) == 0
    finally:
        os.umask(old)
    for name in ("args.json", "results.json", "model.npz", "model.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name
    old = os.umask(0o027)
    try:
        assert train.main([*LSH, "--out", str(folder), "--overwrite"]) == 0
    finally:
        os.umask(old)
    for name in ("args.json", "results.json", "model.npz", "model.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("multi_label=False", False),
        ("multi_label=no", False),
        ("multi_label=0", False),
        ("multi_label=TRUE", True),
        ("multi_label=Yes", True),
        ("multi_label=1", True),
    ],
)
def test_boolean_dataset_options_parse_strictly(text, expected):
    assert parse_options(text) == {"multi_label": expected}


def test_a_bad_boolean_dataset_option_is_refused(tmp_path, capsys):
    with pytest.raises(
        UsageError, match="--dataset-options standardize must be true/false, 1/0 or yes/no, got 'maybe'"
    ):
        parse_options("standardize=maybe")
    folder = tmp_path / "run"
    err = refuse([*LSH, "--dataset-options", "multi_label=nope", "--out", str(folder)], capsys)
    assert err == "error: --dataset-options multi_label must be true/false, 1/0 or yes/no, got 'nope'"
    assert not folder.exists()


def test_resume_sweeps_the_temporary_files_of_a_killed_write(finished, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished, folder, ignore=shutil.ignore_patterns(".lock"))
    leftovers = [folder / ".results.json.4242.tmp", folder / ".model.npz.4243.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    keep = folder / ".hidden-by-the-user"
    keep.write_text("mine")
    assert train.main(["lsh", "--resume", str(folder)]) == 0
    assert not any(path.exists() for path in leftovers)
    assert keep.read_text() == "mine"
