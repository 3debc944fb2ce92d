"""Bad input gets one clear refusal: the tables below make each mistake and assert type, exit code, message.

Each row of ``CLI_ROWS`` runs ``python -m agents.train`` or ``python -m agents.evaluate`` (their ``main``,
in-process; two rows also as a subprocess) and asserts exit status 2, a stderr of exactly one line
``error: ...`` that holds the row's message (naming the option or the file), and no traceback; where the
row names the Python API's way to make the same mistake, that call must raise the row's exception type with
the very message the command line printed. ``API_ROWS`` are mistakes that only the library can make.

``docs/bad-input.md`` stays true too: each test it names must exist and mention the message it lists.
"""

import ast
import errno
import functools
import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import evaluate, lsh, reinforce, train
from agents.checkpoint import CheckpointError
from agents.common import UsageError, save_args
from hashing_gym.data import DatasetOptionError, load_dataset

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "bad-input.md"
BLOBS = ["--dataset", "blobs", "--dataset-options", "num_classes=3,n_per_class=20,dim=4,query_per_class=2"]
SMALL_CIFAR = "query_per_class=2,train_per_class=3"


# ---------------------------------------------------------------------------------------------------
# The files the rows read: corrupt, mistyped, hostile; built once


class Payload:
    """Unpickling this creates the file ``marker``: it stands for any code a hostile pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def write_cifar(folder, marker=None):
    """Six tiny CIFAR-10-style pickle batches (3 classes of 5 items each); with ``marker``, hostile ones."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (15, 12), dtype=np.uint8), b"labels": [0, 1, 2] * 5}
        if marker is not None:
            batch[b"payload"] = Payload(marker)
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file)
    return folder


def write_npz(path, features, labels):
    np.savez(path, features=features, labels=labels)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Name -> path of every bad file and folder the rows use."""
    base = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((40, 4))
    paths = {"base": base, "marker": base / "marker"}
    paths["a_file"] = base / "a_file"
    paths["a_file"].write_text("not a folder")
    paths["garbage_npz"] = base / "garbage.npz"
    paths["garbage_npz"].write_bytes(b"not a zip archive")
    np.save(base / "single.npy", features)
    paths["npy_as_npz"] = (base / "single.npy").rename(base / "single.npz")
    paths["bad_mat"] = base / "bad.mat"
    paths["bad_mat"].write_bytes(b"MATLAB 5.0 MAT-file" * 4)
    paths["huge_labels"] = write_npz(base / "huge.npz", features, np.array([1e19, 2e19] * 20))
    # class 9 has exactly query_per_class=2 items: both would be queries, none in the database
    query_only = np.array([0] * 19 + [1] * 19 + [9] * 2)
    paths["query_only"] = write_npz(base / "query_only.npz", features, query_only)
    multi = np.zeros((40, 3), np.uint8)
    multi[:, 0] = 1
    multi[3] = 0
    paths["label_less"] = write_npz(base / "label_less.npz", features, multi)
    mnist = base / "mnist"
    mnist.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (mnist / f"{name}.gz").write_bytes(gzip.compress(b"\x00" * 16))
    paths["mnist_missing"] = mnist
    corrupt = base / "mnist_corrupt"
    shutil.copytree(mnist, corrupt)
    (corrupt / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip data")  # the first file read
    (corrupt / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 16))
    paths["mnist_corrupt_gz"] = corrupt
    paths["cifar"] = write_cifar(base / "cifar")
    paths["hostile_cifar"] = write_cifar(base / "hostile_cifar", marker=paths["marker"])

    # A finished run, and copies of it whose files were tampered with.
    run = base / "runs" / "lsh"
    assert train.main(["lsh", *BLOBS, "--bits", "8", "--out", str(run)]) == 0
    paths["run"] = run
    recorded = json.loads((run / "args.json").read_text())
    for name, changes in (("bogus_key", {"bogus": 1}), ("bad_type", {"bits": "8"})):
        paths[name] = base / "runs" / name
        shutil.copytree(run, paths[name])
        (paths[name] / "args.json").write_text(json.dumps({**recorded, **changes}))
    paths["corrupt_model"] = base / "runs" / "corrupt_model"
    shutil.copytree(run, paths["corrupt_model"])
    models = sorted(paths["corrupt_model"].glob("model.*"))
    assert models, "a finished run has a model file"
    for model in models:
        model.write_bytes(b"\x80\x04 not a model file")
    paths["model_file"] = models[0]
    # A run on CIFAR-10 (trusted when it was trained); its args.json now points at hostile pickles
    # and records trust_pickle: true, as a folder shared by someone else could.
    cifar_run = base / "runs" / "cifar"
    argv = ["lsh", "--dataset", "cifar10", "--data-path", str(paths["cifar"]), "--trust-pickle"]
    assert train.main([*argv, "--dataset-options", SMALL_CIFAR, "--bits", "8", "--out", str(cifar_run)]) == 0
    shared = json.loads((cifar_run / "args.json").read_text())
    assert shared["trust_pickle"] is True
    shared["data_path"] = str(paths["hostile_cifar"])
    (cifar_run / "args.json").write_text(json.dumps(shared))
    paths["shared_cifar_run"] = cifar_run
    # A reinforce run interrupted with a corrupt checkpoint state.
    resume = base / "runs" / "corrupt_checkpoint"
    (resume / "checkpoints").mkdir(parents=True)
    save_args(resume, reinforce.Args(out=str(resume), bits=8), "reinforce")
    (resume / "checkpoints" / "state.json").write_text('{"num_timesteps": 1')
    paths["corrupt_checkpoint"] = resume
    assert not paths["marker"].exists()
    return paths


# ---------------------------------------------------------------------------------------------------
# The command-line rows: (id, program, argv, message, API exception type, API call)
#
# argv and the message are formatted with the paths of `files` and OUT (a fresh folder per row); the
# API call gets the same paths and must raise the type with the message the command line printed.


def _lsh(paths, **kwargs):
    return lsh.main(lsh.Args(**{"out": str(paths["OUT"]), **kwargs}))


def _features(paths, name, **options):
    return load_dataset("features", path=paths[name], **options)


CLI_ROWS = [
    (
        "unknown --dataset-options key",
        "train",
        ["lsh", "--dataset-options", "foo=1", "--out", "{OUT}"],
        "data set 'digits' takes no option(s) ['foo'] (load_dataset keywords, --dataset-options keys)",
        DatasetOptionError,
        lambda p: load_dataset("digits", foo=1),
    ),
    (
        "trust_pickle given in --dataset-options",
        "train",
        ["lsh", "--dataset", "cifar10", "--data-path", "{cifar}", "--dataset-options", "trust_pickle=yes"]
        + ["--out", "{OUT}"],
        "--dataset-options cannot set trust_pickle; give --trust-pickle on the command line",
        UsageError,
        lambda p: _lsh(p, dataset="cifar10", data_path=str(p["cifar"]), dataset_options="trust_pickle=yes"),
    ),
    (
        "--device tpu",
        "train",
        ["lsh", "--device", "tpu", "--out", "{OUT}"],
        "--device: device='tpu' is not one of auto, cpu, cuda, cuda:N or a torch.device",
        UsageError,
        lambda p: _lsh(p, device="tpu"),
    ),
    (
        "--out naming a file",
        "train",
        ["lsh", "--out", "{a_file}"],
        "--out {a_file} is not a folder",
        UsageError,
        lambda p: _lsh(p, out=str(p["a_file"])),
    ),
    (
        "--out below a file",
        "train",
        ["lsh", "--out", "{a_file}/run"],
        "--out {a_file}/run: cannot create the folder (Not a directory)",
        UsageError,
        lambda p: _lsh(p, out=str(p["a_file"] / "run")),
    ),
    (
        "--dataset mnist without --data-path",
        "train",
        ["lsh", "--dataset", "mnist", "--out", "{OUT}"],
        "data set 'mnist' needs path=... (command line: --data-path), a folder holding train-images",
        DatasetOptionError,
        lambda p: load_dataset("mnist"),
    ),
    (
        "an MNIST folder without one of its files",
        "train",
        ["lsh", "--dataset", "mnist", "--data-path", "{mnist_missing}", "--out", "{OUT}"],
        "{mnist_missing} lacks file(s): t10k-labels-idx1-ubyte[.gz]",
        FileNotFoundError,
        lambda p: load_dataset("mnist", path=p["mnist_missing"]),
    ),
    (
        "a corrupt .gz MNIST file",
        "train",
        ["lsh", "--dataset", "mnist", "--data-path", "{mnist_corrupt_gz}", "--out", "{OUT}"],
        "train-images-idx3-ubyte.gz: corrupt or truncated gzip file",
        ValueError,
        lambda p: load_dataset("mnist", path=p["mnist_corrupt_gz"]),
    ),
    (
        "a corrupt .npz",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{garbage_npz}", "--out", "{OUT}"],
        "{garbage_npz}: not a readable .npz archive (corrupt or another format)",
        ValueError,
        lambda p: _features(p, "garbage_npz"),
    ),
    (
        "a .npy renamed .npz",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{npy_as_npz}", "--out", "{OUT}"],
        "{npy_as_npz}: a single .npy array, not a .npz archive",
        ValueError,
        lambda p: _features(p, "npy_as_npz"),
    ),
    (
        "a corrupt .mat",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{bad_mat}", "--out", "{OUT}"],
        "{bad_mat}: corrupt or unreadable .mat file",
        ValueError,
        lambda p: _features(p, "bad_mat"),
    ),
    (
        "float labels beyond int64 (1e19 and 2e19 would merge)",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{huge_labels}", "--out", "{OUT}"],
        "labels must be integers that int64 holds exactly (below 2**63), got 1e+19 at index 0",
        ValueError,
        lambda p: _features(p, "huge_labels"),
    ),
    (
        "a class only in the query split",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{query_only}"]
        + ["--dataset-options", "query_per_class=2", "--out", "{OUT}"],
        "class 9 would appear only in the query split: all 2 of its items are drawn as queries",
        ValueError,
        lambda p: _features(p, "query_only", query_per_class=2),
    ),
    (
        "a multi-label item without a label",
        "train",
        ["lsh", "--dataset", "features", "--data-path", "{label_less}", "--out", "{OUT}"],
        "multi-label labels: the item at index 3 has no label (1 of 40 items have none)",
        ValueError,
        lambda p: _features(p, "label_less"),
    ),
    (
        "CIFAR-10 pickles without --trust-pickle",
        "train",
        ["lsh", "--dataset", "cifar10", "--data-path", "{hostile_cifar}", "--dataset-options", SMALL_CIFAR]
        + ["--out", "{OUT}"],
        "{hostile_cifar}/data_batch_1: CIFAR-10 batches are Python pickles, and unpickling a file can run "
        "any code it carries; read them only if you trust the file (such as the official CIFAR-10 download), "
        "with trust_pickle=True (command line: --trust-pickle)",
        ValueError,
        lambda p: load_dataset("cifar10", path=p["hostile_cifar"], query_per_class=2, train_per_class=3),
    ),
    (
        "a corrupt checkpoint on --resume",
        "train",
        ["reinforce", "--resume", "{corrupt_checkpoint}"],
        "{corrupt_checkpoint}/checkpoints/state.json is not readable JSON",
        CheckpointError,
        None,  # through the API: the next test (the run folder's lock belongs to the CLI row here)
    ),
    (
        "--out of evaluate naming a file",
        "evaluate",
        ["{run}", "--embedding", "none", "--out", "{a_file}"],
        "--out {a_file} is not a folder",
        UsageError,
        lambda p: evaluate.check_output(p["a_file"]),
    ),
    (
        "a run's args.json with a key the trainer does not take",
        "evaluate",
        ["{bogus_key}", "--embedding", "none"],
        "{bogus_key}/args.json: argument(s) ['bogus'] are not options of this trainer",
        UsageError,
        lambda p: evaluate.evaluate_folder(p["bogus_key"]),
    ),
    (
        "a run's args.json with a value of the wrong type",
        "evaluate",
        ["{bad_type}", "--embedding", "none"],
        "{bad_type}/args.json: bits must be int, got '8'",
        UsageError,
        lambda p: evaluate.evaluate_folder(p["bad_type"]),
    ),
    (
        "a corrupt model file",
        "evaluate",
        ["{corrupt_model}", "--embedding", "none"],
        "{model_file}",
        ValueError,
        lambda p: evaluate.evaluate_folder(p["corrupt_model"]),
    ),
    (
        "a shared run whose args.json points at pickles and says trust_pickle: true",
        "evaluate",
        ["{shared_cifar_run}", "--embedding", "none"],
        "{hostile_cifar}/data_batch_1: CIFAR-10 batches are Python pickles",
        ValueError,
        lambda p: evaluate.evaluate_folder(p["shared_cifar_run"]),
    ),
]


def fill(template, paths):
    return template.format(**{key: str(value) for key, value in paths.items()})


def assert_one_error_line(err, message):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], (message, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("program", "argv", "message", "kind", "api"), [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS]
)
def test_each_command_line_mistake_is_one_error_line_and_exit_2(
    files, tmp_path, capsys, program, argv, message, kind, api
):
    paths = {**files, "OUT": tmp_path / "out"}
    main = train.main if program == "train" else evaluate.main
    assert main([fill(argument, paths) for argument in argv]) == 2
    line = assert_one_error_line(capsys.readouterr().err, fill(message, paths))
    assert not paths["OUT"].exists()  # a refused run leaves no folder behind
    assert not files["marker"].exists()  # no pickle ran
    if api is not None:
        with pytest.raises(kind) as raised:
            api(paths)
        assert line == f"error: {raised.value}"  # the library says the same thing
        assert isinstance(raised.value, ValueError | TypeError | FileNotFoundError)


def test_a_corrupt_checkpoint_through_the_api(files):
    folder = files["corrupt_checkpoint"]
    recorded = json.loads((folder / "args.json").read_text())
    recorded.pop("algo")
    with pytest.raises(CheckpointError) as raised:
        reinforce.main(reinforce.Args(**{**recorded, "resume": str(folder)}))
    assert str(raised.value).startswith(f"{folder}/checkpoints/state.json is not readable JSON")
    assert isinstance(raised.value, ValueError)


def test_the_entry_points_exit_2_without_a_traceback(files, tmp_path):
    """The real ``python -m`` entry points, for one train row and one evaluate row."""
    commands = [
        (["agents.train", "lsh", "--dataset", "mnist", "--out", str(tmp_path / "run")], "--data-path"),
        (["agents.evaluate", str(files["shared_cifar_run"]), "--embedding", "none"], "--trust-pickle"),
    ]
    for command, message in commands:
        process = subprocess.run(
            [sys.executable, "-m", *command], capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert process.returncode == 2, process.stderr
        assert_one_error_line(process.stderr, message)
    assert not (tmp_path / "run").exists()
    assert not files["marker"].exists()


def test_evaluate_says_which_data_path_of_args_json_it_opens(files, capsys):
    run = files["shared_cifar_run"]
    assert evaluate.main([str(run), "--embedding", "none"]) == 2
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{run}: opening the cifar10 data at {files['hostile_cifar']} (data_path from {run}/args.json)"
    ]
    assert not files["marker"].exists()  # args.json's trust_pickle: true granted nothing


def test_evaluate_trusts_a_pickle_only_when_its_own_command_line_says_so(files, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(files["shared_cifar_run"], run)
    recorded = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**recorded, "data_path": str(files["cifar"])}))
    assert evaluate.main([str(run), "--embedding", "none"]) == 2
    assert_one_error_line(capsys.readouterr().err, "with trust_pickle=True (command line: --trust-pickle)")
    assert evaluate.main([str(run), "--embedding", "none", "--trust-pickle"]) == 0
    assert f"(data_path from {run}/args.json)" in capsys.readouterr().out


def test_resume_takes_trust_from_its_command_line_not_from_args_json(files, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(files["shared_cifar_run"], folder)
    given = {"trust_pickle": True}
    assert train.resumed_arguments("lsh", str(folder))["trust_pickle"] is False  # args.json says true
    assert train.resumed_arguments("lsh", str(folder), given)["trust_pickle"] is True
    # A shared interrupted run whose args.json sends --resume to hostile pickles and claims trust.
    shared = tmp_path / "shared"
    (shared / "checkpoints").mkdir(parents=True)
    hostile = str(files["hostile_cifar"])
    args = reinforce.Args(dataset="cifar10", data_path=hostile, dataset_options=SMALL_CIFAR)
    args.trust_pickle = True  # what the folder records; it must grant nothing
    save_args(shared, args, "reinforce")
    assert train.main(["reinforce", "--resume", str(shared)]) == 2
    out, err = capsys.readouterr()
    assert_one_error_line(err, "CIFAR-10 batches are Python pickles")
    assert out.splitlines()[-1] == (
        f"--resume {shared}: opening the cifar10 data at {hostile} (data_path from {shared}/args.json)"
    )
    assert not files["marker"].exists()


@pytest.mark.parametrize("algo", list(train.ALGORITHMS))
def test_topk_0_is_refused_before_training_by_every_trainer(algo, tmp_path, capsys):
    import importlib

    out = tmp_path / "run"
    assert train.main([algo, "--topk", "0", "--device", "cpu", "--out", str(out)]) == 2
    line = assert_one_error_line(capsys.readouterr().err, "--topk must be positive, got 0")
    assert not out.exists()  # refused before the run folder, so before any training
    module = importlib.import_module(train.ALGORITHMS[algo])
    with pytest.raises(UsageError) as raised:
        module.main(module.Args(topk=0, device="cpu", out=str(out)))
    assert line == f"error: {raised.value}"


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A read-only folder; as root (whom permission bits do not stop) its writes fail as a user's would."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open, real_mkdir = os.open, os.mkdir

        def denied(path):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

        def inside(path):
            return Path(os.fsdecode(path)).absolute().parent == folder

        def open_(path, flags, *args, **kwargs):
            if inside(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
                raise denied(path)
            return real_open(path, flags, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if inside(path):
                raise denied(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "mkdir", mkdir)
    yield folder
    folder.chmod(0o755)


READ_ONLY_ROWS = [
    ("train", ["lsh", "--out", "{ro}/run"], "--out {ro}/run: cannot create the folder (Permission denied)"),
    ("train", ["lsh", "--out", "{ro}"], "{ro}: cannot lock the run folder (Permission denied)"),
    ("evaluate", ["{run}", "--embedding", "none", "--out", "{ro}/rep"], "--out {ro}/rep: cannot create the"),
]


@pytest.mark.parametrize(("program", "argv", "message"), READ_ONLY_ROWS)
def test_an_out_in_a_read_only_folder_is_one_error_line(files, read_only, capsys, program, argv, message):
    paths = {**files, "ro": read_only}
    main = train.main if program == "train" else evaluate.main
    results = (files["run"] / "results.json").read_bytes()
    assert main([fill(argument, paths) for argument in argv]) == 2
    assert_one_error_line(capsys.readouterr().err, fill(message, paths))
    assert os.listdir(read_only) == []
    assert (files["run"] / "results.json").read_bytes() == results  # checked before evaluating anything


# ---------------------------------------------------------------------------------------------------
# Library-only rows: (id, call, exception type, message)

API_ROWS = [
    ("a string where a flag is wanted", lambda: load_dataset("digits", standardize="false"), ValueError,
     "standardize must be True or False, got 'false'"),
    ("multi_label='False'", lambda: load_dataset("blobs", multi_label="False"), ValueError,
     "multi_label must be True or False, got 'False'"),
    ("a fractional label", lambda: load_dataset("features", features=np.zeros((4, 2)), labels=[0, 1, 1.5, 0]),
     ValueError, "labels must be whole numbers, got 1.5 at index 2"),
    ("an unknown option", lambda: load_dataset("blobs", dims=3), TypeError, "takes no option(s) ['dims']"),
    ("a missing features file", lambda: load_dataset("features", path="/nonexistent/x.npz"),
     FileNotFoundError, "no such file: /nonexistent/x.npz"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "kind", "message"), [r[1:] for r in API_ROWS], ids=[r[0] for r in API_ROWS])
def test_each_library_mistake_raises_its_type_and_message(call, kind, message):
    with pytest.raises(kind) as raised:
        call()
    assert message in str(raised.value)


# ---------------------------------------------------------------------------------------------------
# docs/bad-input.md


def table_rows():
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and cells[4].startswith("`tests/"):
            rows.append((cells[3].strip("`"), cells[4].strip("`")))
    return rows


def test_the_table_covers_the_issue_list():
    rows = table_rows()
    assert len(rows) >= 30
    text = TABLE.read_text()
    for case in (
        "NaN or inf",
        "truncated IDX",
        "magic number",
        "CIFAR-10 batches",
        ".mat",
        "not divisible by",
        "not 0/1",
        "action outside",
        "out of range",
        "holds no run",
        "unknown algorithm",
        "--trust-pickle",
        "after the episode ended",
        "only in the query split",
        "int64",
        "corrupt",
    ):
        assert case in text


@functools.cache
def parsed(path):
    """Source, module tree and test functions (name -> source) of a test file, parsed once."""
    source = (ROOT / path).read_text()
    module = ast.parse(source)
    functions = {
        node.name: ast.get_source_segment(source, node)
        for node in ast.walk(module)
        if isinstance(node, ast.FunctionDef)
    }
    return source, module, functions


@pytest.mark.parametrize(("message", "test"), table_rows())
def test_each_refusal_is_asserted_by_the_test_it_names(message, test):
    path, name = test.split("::")
    source, module, functions = parsed(path)
    assert name in functions, f"{test} does not exist"
    # The message may sit in the test's body, in its parametrize list just above it, or in a
    # module-level list of cases that the parametrize names.
    start = source.index(f"def {name}(")
    decorated = source[source.rfind("\n\n\n", 0, start) : start] + functions[name]
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if re.search(rf"\b{node.targets[0].id}\b", decorated):
                decorated += ast.get_source_segment(source, node)
    unescaped = re.sub(r"\\(.)", r"\1", decorated)
    assert message in decorated or message in unescaped, f"{test} does not mention {message!r}"
