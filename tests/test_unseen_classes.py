"""The held-out-class protocol (issue #18 item 7): train on 75% of the classes, retrieve among the rest.

The split's invariants (disjoint classes, which items each split keeps, sizes, renumbered labels,
determinism under the seed, train-only standardisation), its refusals, and the protocol through
``agents.train``, ``agents.evaluate`` and ``benchmarks.quality``.
"""

import json

import numpy as np
import pytest

from agents import evaluate, train
from benchmarks import quality
from hashing_gym.data import load_dataset, split_classes

BLOBS = "num_classes=6,n_per_class=25,dim=8,query_per_class=5"


def standard_and_unseen(seed, **options):
    """The standard split and the unseen-classes one of the same data, both unstandardised."""
    standard = load_dataset("digits", seed=seed, standardize=False, **options)
    unseen = load_dataset("digits", seed=seed, standardize=False, split_protocol="unseen-classes", **options)
    return standard, unseen


@pytest.mark.parametrize("seed", [0, 3])
def test_the_split_keeps_the_standard_items_of_disjoint_classes(seed):
    standard, unseen = standard_and_unseen(seed)
    seen, held_out = np.array(unseen.seen_classes), np.array(unseen.held_out_classes)
    assert len(seen) == 7 and len(held_out) == 3  # floor(0.75 * 10)
    assert not set(seen) & set(held_out) and sorted({*seen, *held_out}) == list(range(10))
    assert unseen.protocol == "unseen-classes" and unseen.num_classes == 7 and not unseen.multi_label

    # train: the standard train items of the seen classes, in order; labels renumbered 0..6
    keep = np.isin(standard.train.labels, seen)
    np.testing.assert_array_equal(unseen.train.features, standard.train.features[keep])
    np.testing.assert_array_equal(seen[unseen.train.labels], standard.train.labels[keep])
    assert set(unseen.train.labels) == set(range(7))
    # query and database: the standard ones of the held-out classes; labels renumbered 0..2
    for name in ("query", "database"):
        mine, theirs = getattr(unseen, name), getattr(standard, name)
        keep = np.isin(theirs.labels, held_out)
        np.testing.assert_array_equal(mine.features, theirs.features[keep])
        np.testing.assert_array_equal(held_out[mine.labels], theirs.labels[keep])
        assert set(mine.labels) == {0, 1, 2}
    assert unseen.query.n == 3 * 30  # query_per_class of each held-out class
    assert unseen.train.n + unseen.database.n == standard.database.n  # digits: train = database
    assert unseen.train is not unseen.database


def test_the_split_is_fixed_by_the_seed():
    a, b = (load_dataset("digits", seed=5, split_protocol="unseen-classes") for _ in range(2))
    assert a.seen_classes == b.seen_classes
    for name in ("train", "query", "database"):
        np.testing.assert_array_equal(getattr(a, name).features, getattr(b, name).features)
        np.testing.assert_array_equal(getattr(a, name).labels, getattr(b, name).labels)
    draws = {split_classes(10, seed=seed)[1].tobytes() for seed in range(6)}
    assert len(draws) > 1  # other seeds hold out other classes
    np.testing.assert_array_equal(split_classes(10, seed=5)[0], np.array(a.seen_classes))


def test_features_are_standardised_with_the_seen_classes_alone():
    unseen = load_dataset("digits", seed=0, split_protocol="unseen-classes")
    train = unseen.train.features.astype(np.float64)
    assert np.abs(train.mean(axis=0)).max() < 1e-4
    assert np.abs(unseen.query.features.mean(axis=0)).max() > 0.1  # other classes: not centred by them


@pytest.mark.parametrize(("classes", "seen"), [(5, 3), (8, 6), (10, 7), (11, 8), (100, 75)])
def test_seventy_five_percent_of_the_classes_rounded_down_are_seen(classes, seen):
    kept, held_out = split_classes(classes, seed=1)
    assert (len(kept), len(held_out)) == (seen, classes - seen)
    assert (np.diff(kept) > 0).all() and (np.diff(held_out) > 0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: split_classes(4), "4 classes give 3 seen .* and 1 held out"),
        (lambda: split_classes(10, seen_fraction=1.0), "seen_fraction must be in"),
        (
            lambda: load_dataset("blobs", num_classes=4, split_protocol="unseen-classes"),
            "at least 2 seen and 2 held-out classes",
        ),
        (
            lambda: load_dataset("blobs", multi_label=True, split_protocol="unseen-classes"),
            "needs single-label data; blobs is multi-label",
        ),
        (lambda: load_dataset("digits", split_protocol="held-out"), "split_protocol must be one of"),
    ],
)
def test_data_the_protocol_cannot_split_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- through the command lines


def one_error_line(capsys, *names):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, (name, err)


def tiny_run(algo, out, *extra):
    argv = [algo, "--dataset", "blobs", "--dataset-options", BLOBS, "--bits", "8", "--out", str(out)]
    return train.main([*argv, *extra])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a tiny mlp-code run
def test_a_run_trains_and_evaluates_on_the_held_out_classes(tmp_path, capsys):
    out = tmp_path / "mlp"
    assert tiny_run("mlp-code", out, "--protocol", "unseen-classes") == 0
    assert json.loads((out / "args.json").read_text())["protocol"] == "unseen-classes"
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "unseen-classes"

    # evaluate rebuilds the same split from args.json: the same figures, with or without --protocol
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    assert "blobs (unseen-classes)" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["map"] == results["map"]
    assert evaluate.main([str(out), "--embedding", "none", "--protocol", "unseen-classes"]) == 0
    capsys.readouterr()
    # and refuses to score it under another protocol, or a standard run on held-out classes
    assert evaluate.main([str(out), "--embedding", "none", "--protocol", "standard"]) == 2
    one_error_line(capsys, "trained under --protocol unseen-classes, not standard")
    standard = tmp_path / "standard"
    assert tiny_run("lsh", standard) == 0
    capsys.readouterr()
    assert evaluate.main([str(standard), "--embedding", "none", "--protocol", "unseen-classes"]) == 2
    one_error_line(capsys, "trained under --protocol standard, not unseen-classes")


def test_an_rl_trainer_learns_on_the_seen_classes_and_resumes_with_them(tmp_path, capsys):
    """A2C through the SB3 adapter: its env holds the 4 seen classes, its evaluation the 2 others."""
    out = tmp_path / "a2c"
    extra = ["--protocol", "unseen-classes", "--timesteps", "128", "--num-envs", "2", "--n-steps", "16"]
    extra += ["--hidden", "16", "--eval-every", "0", "--checkpoint-every", "64"]
    assert tiny_run("a2c", out, *extra) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "unseen-classes" and 0 < results["map"] <= 1
    assert train.main(["a2c", "--resume", str(out), "--protocol", "standard"]) == 2
    one_error_line(capsys, "--protocol standard (run: unseen-classes)")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "held-out"], "--protocol must be one of standard, unseen-classes"),
        (["--dataset-options", "split_protocol=unseen-classes"], "give --protocol"),
    ],
)
def test_a_bad_protocol_is_one_error_line(extra, message, tmp_path, capsys):
    argv = ["lsh", "--dataset", "blobs", "--out", str(tmp_path / "run"), *extra]
    assert train.main(argv) == 2
    one_error_line(capsys, message)
    assert not (tmp_path / "run" / "results.json").exists()


def test_too_few_classes_is_one_error_line(tmp_path, capsys):
    argv = ["lsh", "--dataset", "blobs", "--dataset-options", "num_classes=4", "--protocol", "unseen-classes"]
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "at least 2 seen and 2 held-out classes")


def test_the_quality_table_has_both_protocols(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 130)
    features = rng.standard_normal((len(labels), 16)) + 3 * np.eye(6, 16)[labels]
    np.savez(tmp_path / "six.npz", features=features.astype(np.float32), labels=labels)
    out = tmp_path / "quality"
    argv = ["--datasets", "features", "--data-path", str(tmp_path / "six.npz"), "--methods", "lsh,mlp-code"]
    argv += ["--bits", "16", "--out", str(out), "--protocols", "standard,unseen-classes", "--jobs", "2"]
    assert quality.main(argv) == 0
    report = capsys.readouterr().out
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in report.splitlines()}
    for protocol, folder in (
        ("features", out / "features"),
        ("features (unseen-classes)", out / "unseen-classes" / "features"),
    ):
        for method in ("lsh", "mlp-code"):
            results = json.loads((folder / "16" / method / "results.json").read_text())
            assert results["protocol"] == ("standard" if folder.parent == out else "unseen-classes")
            cells = [c.strip() for c in rows[(protocol, method)].strip("|").split("|")]
            assert float(cells[3]) == pytest.approx(results["map"], abs=5e-4)
    with pytest.raises(SystemExit):
        quality.main(["--protocols", "held-out"])
    assert "unknown protocol(s) held-out" in capsys.readouterr().err
