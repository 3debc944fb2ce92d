import json

import numpy as np
import pytest
from helpers import METRICS, RESULT_FIELDS

from agents import evaluate, train
from agents.baselines import Args, discrete_cyclic_coordinate_descent, fit_itq, fit_lsh, fit_sdh
from hashing_gym.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_itq_quantization_loss_never_increases(digits):
    model = fit_itq(digits.train.features.astype(np.float64), bits=16, seed=0, iterations=30)
    losses = np.array(model.quantization_loss)
    assert len(losses) == 30
    assert np.all(np.diff(losses) <= 1e-6 * losses[0])
    assert losses[-1] < losses[0]


def test_itq_projection_is_pca_times_a_rotation(digits):
    model = fit_itq(digits.train.features.astype(np.float64), bits=16, seed=0, iterations=5)
    gram = model.projection.T @ model.projection  # orthonormal PCA basis times an orthogonal rotation
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-9)


def test_lsh_bits_are_balanced_on_centred_data():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((20_000, 32))
    codes = fit_lsh(features, bits=64, seed=1).encode(features)
    assert np.abs(codes.mean(axis=0) - 0.5).max() < 0.03


def test_sdh_objective_never_increases(digits):
    model = fit_sdh(digits, Args(bits=16, sdh_iterations=6, anchors=300))
    objective = np.array(model.objective)
    assert len(objective) == 12  # after each W-step and each B-step
    assert np.all(np.diff(objective) <= 1e-9 * objective[0])
    assert objective[-1] < 0.2 * objective[0]


def test_discrete_cyclic_coordinate_descent_finds_each_bit_columns_minimum():
    rng = np.random.default_rng(3)
    n, bits, classes = 40, 6, 4
    classifier = rng.standard_normal((bits, classes))
    target = rng.standard_normal((n, bits))
    codes = np.where(rng.standard_normal((n, bits)) > 0, 1.0, -1.0)

    def loss(b):
        return ((b @ classifier) ** 2).sum() - 2 * (b * target).sum()

    updated = discrete_cyclic_coordinate_descent(codes, classifier, target, sweeps=1)
    assert loss(updated) <= loss(codes)
    # After a full sweep the last column is exactly optimal given the others: no single flip helps.
    for item in range(n):
        flipped = updated.copy()
        flipped[item, -1] *= -1
        assert loss(flipped) >= loss(updated) - 1e-9


def test_itq_refuses_more_bits_than_dimensions(digits):
    with pytest.raises(ValueError, match="itq needs bits <= feature dimension"):
        fit_itq(digits.train.features.astype(np.float64), bits=65, seed=0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # --max-iter 50: a smoke run
@pytest.mark.parametrize("algo", ["lsh", "itq", "sdh", "mlp-code"])
def test_baseline_cli_writes_results_and_evaluate_agrees(algo, tmp_path):
    out = tmp_path / algo
    extra = ["--max-iter", "50"] if algo == "mlp-code" else []
    assert train.main([algo, "--out", str(out), *extra]) == 0
    results = json.loads((out / "results.json").read_text())
    assert RESULT_FIELDS <= set(results)
    assert results["algo"] == algo and results["env_steps"] == 0
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    again = json.loads((out / "results.json").read_text())
    for key in METRICS:
        assert again[key] == results[key]


def test_supervised_methods_beat_itq_beats_lsh(tmp_path):
    scores = {}
    for algo in ("lsh", "itq", "sdh", "mlp-code"):
        assert train.main([algo, "--out", str(tmp_path / algo)]) == 0
        scores[algo] = json.loads((tmp_path / algo / "results.json").read_text())["map"]
    # The supervised methods far above the unsupervised ones, as in every hashing paper's table.
    assert scores["mlp-code"] > 0.95 and scores["sdh"] > 0.9 > scores["itq"] > scores["lsh"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lsh", "--env", "BinaryCodeTravel-v0"], "lsh steps no environment: leave out --env"),
        (["itq", "--bits", "0"], "--bits must be positive, got 0"),
        (["sdh", "--anchors", "0"], "--anchors must be >= 1, got 0"),
    ],
)
def test_baseline_cli_refuses_bad_arguments_in_one_line(argv, message, tmp_path, capsys):
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
