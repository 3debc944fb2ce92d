import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import METRICS, RESULT_FIELDS

from agents import baselines, evaluate, train
from agents.baselines import (
    Args,
    ClassifierCode,
    convert_legacy_model,
    discrete_cyclic_coordinate_descent,
    fit_itq,
    fit_lsh,
    fit_mlp_code,
    fit_sdh,
    load_model,
    save_model,
)
from agents.checkpoint import CheckpointError, read_arrays, write_arrays
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
    assert results["model_file"] == "model.npz" and not (out / "model.pkl").exists()
    assert json.loads((out / "model.json").read_text())["format"] == 1
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


# --------------------------------------------------------------------------- model files without pickle


def fitted_mlp(dataset, activation="relu", classes=None, seed=0):
    from sklearn.neural_network import MLPClassifier

    features, labels = dataset.train.features, dataset.train.labels
    if classes is not None:  # a subset of the classes (2: the binary, one-output-unit classifier)
        keep = np.isin(labels, classes)
        features, labels = features[keep], labels[keep]
    classifier = MLPClassifier(
        hidden_layer_sizes=(16, 8), activation=activation, max_iter=30, random_state=seed
    )
    return classifier.fit(features, labels)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 30 epochs: enough to differ
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("classes", [None, [1, 7]], ids=["multiclass", "binary"])
def test_the_stored_classifiers_forward_pass_is_sklearns_predict(digits, activation, classes):
    classifier = fitted_mlp(digits, activation, classes)
    n_classes = len(classifier.classes_)
    codebook = np.random.default_rng(0).integers(0, 2, (n_classes, 16), dtype=np.uint8)
    model = ClassifierCode.from_classifier(classifier, codebook)
    assert model.out_activation == ("logistic" if classes else "softmax")
    for split in (digits.query, digits.database):
        features = split.features.astype(np.float32)
        predicted = classifier.predict(features)
        assert len(set(predicted)) > 1  # the check compares real decisions
        np.testing.assert_array_equal(model.predict(features), predicted)
        np.testing.assert_array_equal(model.predict_proba(features), classifier.predict_proba(features))
        # encode: the predicted class's codeword, as the pickled classifier gave it.
        expected = codebook[np.argmax(classifier.predict_proba(features), axis=1)]
        np.testing.assert_array_equal(model.encode(split.features), expected)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("algo", ["lsh", "itq", "sdh", "mlp-code"])
def test_models_are_stored_as_arrays_and_json_and_rebuilt_exactly(algo, tmp_path, digits):
    args = Args(bits=16, anchors=100, max_iter=20, hidden="16")
    features = digits.train.features.astype(np.float64)
    model = {
        "lsh": lambda: fit_lsh(features, 16, 0),
        "itq": lambda: fit_itq(features, 16, 0, 5),
        "sdh": lambda: fit_sdh(digits, args),
        "mlp-code": lambda: fit_mlp_code(digits, args),
    }[algo]()
    save_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.npz"]
    arrays = read_arrays(tmp_path / "model.npz")  # allow_pickle=False: plain arrays only
    assert all(value.dtype != object for value in arrays.values())
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model)
    for split in (digits.query, digits.database):
        np.testing.assert_array_equal(loaded.encode(split.features), model.encode(split.features))
    if algo != "mlp-code":
        assert loaded.__dict__.keys() == model.__dict__.keys()
        for key, value in model.__dict__.items():
            np.testing.assert_array_equal(getattr(loaded, key), value)


def test_a_damaged_model_file_is_refused_naming_it(tmp_path):
    save_model(fit_lsh(np.ones((4, 3)), 2, 0), tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**info, "kind": "forest"}))
    with pytest.raises(CheckpointError, match=r"model.json and .*model.npz are not a fitted baseline"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(info))
    write_arrays(tmp_path / "model.npz", {"mean": np.zeros(3)})  # the projection is gone
    with pytest.raises(CheckpointError, match="not a fitted baseline \\(missing 'projection'\\)"):
        load_model(tmp_path)
    (tmp_path / "model.npz").write_bytes(b"\x80\x04junk")  # a pickle, not an .npz
    with pytest.raises(CheckpointError, match=r"model.npz is not an .npz array file"):
        load_model(tmp_path)


class Payload:
    """Unpickling it creates a marker file: what a hostile model.pkl would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def legacy_run(tmp_path):
    """A finished lsh run folder of the older format: model.pkl instead of model.npz + model.json."""
    out = tmp_path / "run"
    assert train.main(["lsh", "--bits", "8", "--out", str(out)]) == 0
    for name in ("model.npz", "model.json"):
        (out / name).unlink()
    return out


def test_an_older_run_folder_is_refused_with_how_to_convert_it_and_nothing_is_unpickled(legacy_run, capsys):
    marker = legacy_run.parent / "executed"
    (legacy_run / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    assert evaluate.main([str(legacy_run), "--embedding", "none"]) == 2
    assert capsys.readouterr().err == (
        f"error: {legacy_run / 'model.pkl'} is a pickled model from an older version, which is not opened "
        f"(unpickling runs any code the file carries); if you trust its author, `python -m agents.convert "
        f"{legacy_run} --trust-pickle` converts it\n"
    )
    with pytest.raises(CheckpointError, match="python -m agents.convert .* --trust-pickle"):
        load_model(legacy_run)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_convert_legacy_model_rewrites_every_older_pickle(tmp_path, digits):
    features = digits.train.features.astype(np.float64)
    classifier = fitted_mlp(digits)
    codebook = np.random.default_rng(1).integers(0, 2, (len(classifier.classes_), 16), dtype=np.uint8)
    old_classifier_code = object.__new__(ClassifierCode)  # the older dataclass: the classifier itself
    old_classifier_code.__dict__.update(classifier=classifier, codebook=codebook)
    old_encode = codebook[np.argmax(classifier.predict_proba(digits.query.features), axis=1)]
    for name, legacy, expected in [
        ("lsh", fit_lsh(features, 16, 0), None),
        ("sdh", fit_sdh(digits, Args(bits=16, anchors=50, sdh_iterations=1)), None),
        ("mlp-code", old_classifier_code, old_encode),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.pkl").write_bytes(pickle.dumps(legacy))
        convert_legacy_model(folder, pickle.loads((folder / "model.pkl").read_bytes()))  # our own file
        assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.npz", "model.pkl"]
        if expected is None:
            expected = legacy.encode(digits.query.features)
        np.testing.assert_array_equal(load_model(folder).encode(digits.query.features), expected)


def test_convert_legacy_model_refuses_what_it_cannot_convert(tmp_path):
    with pytest.raises(CheckpointError, match=r"model.pkl holds a dict, not a fitted baseline"):
        convert_legacy_model(tmp_path, {"weights": [1, 2]})
    assert list(tmp_path.iterdir()) == []
    from agents.convert import _convert_baseline

    with pytest.raises(CheckpointError, match=r"model.pkl is missing: nothing to convert"):
        _convert_baseline(tmp_path)
    (tmp_path / "model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"model.pkl is not a readable pickled model"):
        _convert_baseline(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl"]


def test_the_baselines_module_never_unpickles():
    source = Path(baselines.__file__).read_text()
    for call in ("pickle.load", "read_pickle", "write_pickle", "pickle.dump", "allow_pickle=True"):
        assert call not in source, call
