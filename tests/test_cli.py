import dataclasses
import json
import re

import numpy as np
import pytest

from agents import evaluate, train
from agents.common import UsageError, check_common_args, parse_hidden, parse_options, save_args


@pytest.mark.parametrize(
    ("algo", "rest", "expected"),
    [
        ("reinforce", ["--env", "SequentialHashBits-v0"], "drlih"),
        ("reinforce", ["--env=SequentialHashBits-v0", "--bits", "32"], "drlih"),
        ("reinforce", ["--env", "RankListHash-v0"], "reinforce"),
        ("reinforce", [], "reinforce"),
        ("dqn", ["--env", "SequentialHashBits-v0"], "dqn-torch"),  # the trainer refuses the env itself
    ],
)
def test_reinforce_dispatches_by_environment(algo, rest, expected):
    assert train.resolve_algorithm(algo, rest) == expected


def test_every_algorithm_module_has_the_trainer_interface():
    import importlib

    for module_name in train.ALGORITHMS.values():
        module = importlib.import_module(module_name)
        for name in ("Args", "main", "load_model", "encode_split"):
            assert hasattr(module, name), f"{module_name} lacks {name}"


def test_dataset_options_are_parsed():
    assert parse_options("n_per_class=50, dim=8,separation=2.5,multi_label=true") == {
        "n_per_class": 50, "dim": 8, "separation": 2.5, "multi_label": True
    }  # fmt: skip


def test_evaluate_rebuilds_the_data_set_with_its_dataset_options(tmp_path):
    """A run on a custom blobs set is re-evaluated on that set, not on the default blobs."""
    out = tmp_path / "run"
    options = "num_classes=3,n_per_class=40,dim=6,separation=4.0,query_per_class=5"
    argv = ["lsh", "--dataset", "blobs", "--dataset-options", options, "--bits", "8", "--out", str(out)]
    assert train.main(argv) == 0
    before = json.loads((out / "results.json").read_text())
    run = evaluate.evaluate_folder(out)
    assert run.dataset.query.n == 15 and run.dataset.num_classes == 3
    assert run.results["map"] == before["map"]


def test_bad_dataset_options_are_refused(tmp_path, capsys):
    argv = ["lsh", "--dataset", "blobs", "--dataset-options", "dim", "--out", str(tmp_path / "run")]
    assert train.main(argv) == 2
    assert "--dataset-options wants key=value pairs, got 'dim'" in capsys.readouterr().err


def test_dataset_options_reach_the_mat_loader_keys(tmp_path):
    """A .mat file with other key names trains from the command line through --dataset-options."""
    import scipy.io

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    scipy.io.savemat(
        tmp_path / "gist.mat", {"gist": rng.normal(size=(90, 8)) + labels[:, None], "cls": labels}
    )
    argv = ["lsh", "--dataset", "features", "--data-path", str(tmp_path / "gist.mat"), "--bits", "8"]
    argv += [
        "--dataset-options",
        "feature_key=gist,label_key=cls,query_per_class=5",
        "--out",
        str(tmp_path / "r"),
    ]
    assert train.main(argv) == 0
    assert evaluate.evaluate_folder(tmp_path / "r").dataset.query.n == 15


@pytest.fixture
def cuda_seen(monkeypatch):
    """torch (and so hashing_gym.device) sees a GPU: what agents.train does on a CUDA machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("algo", "rest", "expected"),
    [
        ("dqn", [], "dqn-torch"),
        ("dqn", ["--device", "auto"], "dqn-torch"),
        ("dqn", ["--device=auto", "--bits", "32"], "dqn-torch"),
        ("dqn", ["--device", "cpu"], "dqn-torch"),  # guided DQN is the torch trainer on every device
        ("dqn-sb3", [], "dqn-sb3"),
        ("reinforce", [], "reinforce-torch"),
        ("reinforce", ["--env", "RankListHash-v0"], "reinforce-torch"),
        ("reinforce", ["--device", "cpu"], "reinforce"),
        ("reinforce", ["--env", "SequentialHashBits-v0"], "drlih"),  # no GPU trainer: the CPU one
        ("ppo", [], "ppo"),
        ("dqn-torch", [], "dqn-torch"),
    ],
)
def test_device_auto_on_a_cuda_machine_runs_the_gpu_trainer(cuda_seen, algo, rest, expected):
    assert train.resolve_algorithm(algo, rest) == expected


@pytest.mark.parametrize(
    ("algo", "rest", "expected"),
    [
        ("dqn", [], "dqn-torch"),
        ("dqn", ["--device", "auto"], "dqn-torch"),
        ("reinforce", [], "reinforce"),
        ("reinforce", ["--device", "cuda"], "reinforce-torch"),  # named: the GPU trainer refuses no GPU
        ("reinforce", ["--device", "tpu"], "reinforce"),  # not a device: the trainer's own check says so
    ],
)
def test_device_auto_without_cuda_runs_the_cpu_trainer(no_cuda, algo, rest, expected):
    assert train.resolve_algorithm(algo, rest) == expected


def test_the_cli_says_when_it_runs_the_gpu_trainer(cuda_seen, capsys):
    with pytest.raises(SystemExit):  # --help: the reinforce-torch parser's help, printed after the line
        train.main(["reinforce", "--help"])
    out = capsys.readouterr().out
    expected = "reinforce on a CUDA device (--device auto): running the GPU trainer reinforce-torch"
    assert out.startswith(expected)
    assert "python -m agents.train reinforce-torch" in out


def test_resume_runs_the_trainer_that_wrote_the_run(cuda_seen, tmp_path):
    from agents import dqn

    save_args(tmp_path, dqn.Args(out=str(tmp_path)), "reinforce")  # a CPU run, resumed on a CUDA machine
    assert train.resolve_algorithm("reinforce", ["--resume", str(tmp_path)]) == "reinforce"
    assert train.resolve_algorithm("dqn", ["--resume", str(tmp_path)]) == "dqn-torch"  # not its family


@pytest.mark.parametrize(
    ("text", "sizes"), [("256", [256]), ("256,128", [256, 128]), (" 64 , 32 ,", [64, 32]), ("", [])]
)
def test_hidden_sizes_are_parsed(text, sizes):
    assert parse_hidden(text) == sizes


@pytest.mark.parametrize(
    ("text", "message"),
    [("64,x", "--hidden must be comma-separated integers, got '64,x'"), ("64,0", "sizes must be positive")],
)
def test_bad_hidden_sizes_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        parse_hidden(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bits": 0}, "--bits must be positive, got 0"),
        ({"timesteps": 0}, "--timesteps must be positive, got 0"),
        ({"seed": -1}, "--seed must be >= 0, got -1"),
        ({"topk": 0}, "--topk must be positive, got 0"),
        ({"threads": 0}, "--threads must be positive, got 0"),
        ({"device": "tpu"}, "--device: device='tpu' is not one of"),
        ({"dataset_options": "dim"}, "--dataset-options wants key=value pairs"),
        ({"eval_every": -1}, "--eval-every must be >= 0, got -1"),
        ({"checkpoint_every": 0}, "--checkpoint-every must be positive, got 0"),
        ({"batch_size": 0}, "--batch-size must be positive, got 0"),
        ({"learning_starts": -5}, "--learning-starts must be >= 0, got -5"),
    ],
)
def test_the_validator_refuses_bad_arguments(changes, message):
    from agents import dqn

    args = dataclasses.replace(dqn.Args(), **changes)
    with pytest.raises(UsageError, match=re.escape(message)):
        check_common_args(
            args, positive=("batch_size", "checkpoint_every"), non_negative=("learning_starts",)
        )
    check_common_args(dqn.Args(), positive=("batch_size", "steps_per_item"))  # None: decided by the data


@pytest.mark.parametrize(
    "algo",
    ["dqn", "dqn-torch", "dqn-sb3", "reinforce", "reinforce-torch", "ppo", "a2c", "rppo", "drlih", "lsh"],
)
def test_bad_shared_arguments_are_refused_before_anything_is_written(algo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([algo, "--device", "cpu", "--seed", "-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --seed must be >= 0, got -1\n"
    assert not out.exists()


def test_resume_of_a_folder_without_a_run_keeps_the_algorithm(tmp_path):
    assert train.resolve_algorithm("ppo", ["--resume", str(tmp_path)]) == "ppo"
    assert train.resolve_algorithm("dqn", ["--resume", str(tmp_path / "none")]) == "dqn-torch"
