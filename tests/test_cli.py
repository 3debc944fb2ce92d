import json

import numpy as np
import pytest

from agents import evaluate, train
from agents.common import parse_options


@pytest.mark.parametrize(
    ("algo", "rest", "expected"),
    [
        ("reinforce", ["--env", "SequentialHashBits-v0"], "drlih"),
        ("reinforce", ["--env=SequentialHashBits-v0", "--bits", "32"], "drlih"),
        ("reinforce", ["--env", "RankListHash-v0"], "reinforce"),
        ("reinforce", [], "reinforce"),
        ("dqn", ["--env", "SequentialHashBits-v0"], "dqn"),
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
