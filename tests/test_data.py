"""Tests of hashing_gym.data: loaders on tiny files written here, protocols, standardisation, errors."""

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from hashing_gym.data import (
    DATASETS,
    DatasetOptionError,
    HashingDataset,
    Split,
    load_dataset,
    validate_features,
    validate_labels,
)

# ---------------------------------------------------------------------------------------------------
# Helpers: tiny files in the real formats


def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = False) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_mnist(folder: Path, *, train_per_class=12, test_per_class=4, gz=False, side=6) -> Path:
    rng = np.random.default_rng(123)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(labels.size, side, side), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 2051, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz=gz)
    return folder


def make_cifar(folder: Path, *, per_class_per_batch=20, dim=3072) -> Path:
    rng = np.random.default_rng(7)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.repeat(np.arange(10), per_class_per_batch)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(labels.size, dim), dtype=np.uint8)
        with open(folder / name, "wb") as file:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, file)
    return folder


def toy_arrays(n_per_class=30, num_classes=4, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    features = rng.standard_normal((labels.size, dim)) + labels[:, None]
    return features, labels


def toy_multi_label(n=200, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, num_classes)) < 0.3).astype(np.uint8)
    labels[np.arange(n), rng.integers(num_classes, size=n)] = 1  # at least one label each
    return rng.standard_normal((n, 8)), labels


def row_set(features: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in features}


def check_split_invariants(ds: HashingDataset) -> None:
    """Shapes and dtypes, read-only arrays, and query disjoint from a database that contains train."""
    for split in (ds.train, ds.query, ds.database):
        assert split.features.dtype == np.float32
        assert split.features.flags.c_contiguous
        assert split.features.shape == (split.n, ds.feature_dim)
        assert not split.features.flags.writeable and not split.labels.flags.writeable
        if ds.multi_label:
            assert split.labels.dtype == np.uint8 and split.labels.shape == (split.n, ds.num_classes)
        else:
            assert split.labels.dtype == np.int64 and split.labels.shape == (split.n,)
            assert split.labels.min() >= 0 and split.labels.max() < ds.num_classes


def load_raw_with_ids(labels, **options):
    """Load arrays whose single feature column is the row id, unstandardised, to recover the split."""
    ids = np.arange(len(labels), dtype=np.float64)[:, None]
    ds = load_dataset("features", features=ids, labels=labels, standardize=False, **options)
    return (
        ds.train.features[:, 0].astype(int),
        ds.query.features[:, 0].astype(int),
        ds.database.features[:, 0].astype(int),
    )


# ---------------------------------------------------------------------------------------------------
# digits and the dataclasses


def test_digits_default_protocol():
    ds = load_dataset()
    assert ds.name == "digits" and ds.num_classes == 10 and not ds.multi_label
    assert (ds.query.n, ds.database.n, ds.feature_dim) == (300, 1497, 64)
    assert ds.train is ds.database
    np.testing.assert_array_equal(np.bincount(ds.query.labels), np.full(10, 30))
    check_split_invariants(ds)
    raw = load_dataset(standardize=False)
    assert not row_set(raw.query.features) & row_set(raw.database.features)
    assert raw.query.features.max() == 16.0  # pixel counts as loaded, as float32


def test_digits_query_per_class_option():
    ds = load_dataset("digits", query_per_class=5)
    assert (ds.query.n, ds.database.n) == (50, 1747)


def test_seed_determinism_and_difference():
    a, b, c = (load_dataset("digits", seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.query.features, b.query.features)
    np.testing.assert_array_equal(a.database.labels, b.database.labels)
    assert not np.array_equal(a.query.features, c.query.features)


def test_returned_arrays_are_read_only():
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match="read-only"):
        ds.query.features[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        ds.database.labels[0] = 3


def test_dataclasses_are_frozen_and_checked():
    ds = load_dataset("digits")
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="3 feature rows but 2 labels"):
        Split(np.zeros((3, 2), np.float32), np.zeros(2, np.int64))
    assert "n=300" in repr(ds.query)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="'imagenet'.*digits.*blobs.*features.*mnist.*cifar10"):
        load_dataset("imagenet")
    assert DATASETS == ("digits", "blobs", "features", "mnist", "cifar10")


@pytest.mark.parametrize("name", ["digits", "blobs", "features", "mnist", "cifar10"])
def test_unknown_option_is_named(name):
    with pytest.raises(TypeError, match="'foo'"):
        load_dataset(name, foo=1)


# ---------------------------------------------------------------------------------------------------
# standardisation


def test_standardisation_uses_train_statistics_only():
    features, labels = toy_arrays(n_per_class=40)
    features[:, 2] *= 3.0
    raw = load_dataset("features", features=features, labels=labels, query_per_class=10, standardize=False)
    ds = load_dataset("features", features=features, labels=labels, query_per_class=10)
    np.testing.assert_allclose(ds.train.features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train.features.std(axis=0), 1.0, rtol=1e-4)
    mean = raw.train.features.mean(axis=0, dtype=np.float64)
    std = raw.train.features.std(axis=0, dtype=np.float64)
    np.testing.assert_allclose(ds.query.features, (raw.query.features - mean) / std, rtol=1e-4, atol=1e-5)
    # Statistics fitted on train + query would differ: the query is not standardised on its own.
    pooled = np.concatenate([raw.train.features, raw.query.features])
    assert not np.allclose(
        ds.query.features, (raw.query.features - pooled.mean(0)) / pooled.std(0), atol=1e-4
    )


def test_standardisation_fitted_on_train_subset_when_train_is_smaller(tmp_path):
    folder = make_mnist(tmp_path)
    ds = load_dataset("mnist", path=folder, query_per_class=3, train_per_class=5)
    np.testing.assert_allclose(ds.train.features.mean(axis=0), 0.0, atol=1e-5)
    assert abs(ds.database.features.mean()) > 1e-4  # database carries train's statistics, not its own


def test_std_floor_bounds_features_constant_in_train():
    labels = np.repeat(np.arange(3), 20)
    _, query_ids, _ = load_raw_with_ids(labels, query_per_class=5)
    # The split depends on labels and seed only: build features whose column 0 is constant (0) on the
    # train split and 1 on the query split.
    features = np.random.default_rng(1).standard_normal((labels.size, 4))
    features[:, 0] = 0.0
    features[query_ids, 0] = 1.0
    ds = load_dataset("features", features=features, labels=labels, query_per_class=5)
    _, query_again, _ = load_raw_with_ids(labels, query_per_class=5)
    np.testing.assert_array_equal(query_ids, query_again)
    train_std = np.asarray(features[np.setdiff1d(np.arange(labels.size), query_ids)]).std(axis=0)
    floor = 0.1 * train_std.mean()
    np.testing.assert_allclose(ds.query.features[:, 0], 1.0 / floor, rtol=1e-4)
    assert np.abs(ds.query.features).max() < 100
    np.testing.assert_array_equal(ds.train.features[:, 0], 0.0)


def test_standardize_false_keeps_values_as_float32():
    features, labels = toy_arrays()
    ds = load_dataset("features", features=features, labels=labels, query_per_class=5, standardize=False)
    assert ds.query.features.dtype == np.float32
    assert row_set(ds.query.features) <= row_set(features.astype(np.float32))


def test_caller_arrays_are_not_modified():
    features, labels = toy_arrays()
    features32 = features.astype(np.float32)
    before = features32.copy()
    load_dataset("features", features=features32, labels=labels, query_per_class=5)
    np.testing.assert_array_equal(features32, before)
    assert features32.flags.writeable


# ---------------------------------------------------------------------------------------------------
# blobs


def test_blobs_shapes_and_protocol():
    ds = load_dataset("blobs", num_classes=4, n_per_class=50, dim=7, query_per_class=10)
    assert (ds.query.n, ds.database.n, ds.feature_dim, ds.num_classes) == (40, 160, 7, 4)
    assert ds.train is ds.database
    check_split_invariants(ds)
    np.testing.assert_array_equal(np.bincount(ds.query.labels), [10] * 4)


def test_blobs_separation_controls_class_structure():
    def centre_spread(separation):
        ds = load_dataset("blobs", n_per_class=100, dim=16, separation=separation, standardize=False)
        x, y = ds.database.features, ds.database.labels
        return np.stack([x[y == c].mean(0) for c in range(ds.num_classes)]).std()

    assert centre_spread(0.0) < 0.2 < 2.0 < centre_spread(5.0)


def test_blobs_multi_label():
    ds = load_dataset("blobs", num_classes=6, n_per_class=50, multi_label=True, query_per_class=5)
    assert ds.multi_label and ds.num_classes == 6
    check_split_invariants(ds)
    counts = np.concatenate([ds.query.labels, ds.database.labels]).sum(axis=1)
    assert counts.min() == 1 and counts.max() == 3 and set(np.unique(counts)) == {1, 2, 3}
    assert ds.query.n + ds.database.n == 300
    assert ds.query.n <= 30
    assert (ds.query.labels.sum(axis=0) >= 5).all()


def test_blobs_two_classes_multi_label_has_at_most_two_labels():
    ds = load_dataset("blobs", num_classes=2, n_per_class=30, multi_label=True, query_per_class=3)
    assert ds.database.labels.sum(axis=1).max() <= 2


def test_blobs_large_is_fast_enough():
    ds = load_dataset("blobs", num_classes=10, n_per_class=10_000, dim=128, query_per_class=100)
    assert (ds.query.n, ds.database.n, ds.feature_dim) == (1000, 99_000, 128)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("num_classes", 1, "num_classes must be an integer >= 2"),
        ("n_per_class", 0, "n_per_class must be an integer >= 1"),
        ("dim", 2.5, "dim must be an integer"),
        ("separation", -1.0, "separation must be"),
        ("query_per_class", 0, "query_per_class must be an integer >= 1, got 0"),
    ],
)
def test_blobs_bad_options(option, value, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("blobs", **{option: value})


# ---------------------------------------------------------------------------------------------------
# features: arrays, .npz, .mat


def test_features_arrays_protocol_and_disjointness():
    features, labels = toy_arrays(n_per_class=30, num_classes=4)
    ds = load_dataset("features", features=features, labels=labels, query_per_class=7)
    assert (ds.query.n, ds.database.n, ds.num_classes) == (28, 92, 4)
    assert ds.train is ds.database
    check_split_invariants(ds)
    train, query, database = load_raw_with_ids(labels, query_per_class=7)
    assert not set(query) & set(database)
    assert set(query) | set(database) == set(range(labels.size))
    np.testing.assert_array_equal(train, database)


def test_features_default_query_per_class_is_100():
    features, labels = toy_arrays(n_per_class=120, num_classes=2)
    ds = load_dataset("features", features=features, labels=labels)
    assert (ds.query.n, ds.database.n) == (200, 40)


def test_features_labels_are_encoded_in_sorted_order():
    features, labels = toy_arrays(n_per_class=10, num_classes=3)
    ds = load_dataset("features", features=features, labels=labels * 5 + 1, query_per_class=2)
    assert ds.num_classes == 3
    assert set(np.unique(ds.database.labels)) == {0, 1, 2}


def test_features_npz(tmp_path):
    features, labels = toy_arrays()
    path = tmp_path / "toy.npz"
    np.savez(path, features=features, labels=labels)
    ds = load_dataset("features", path=path, query_per_class=5, standardize=False)
    assert (ds.query.n, ds.database.n, ds.feature_dim) == (20, 100, 5)
    assert row_set(ds.database.features) <= row_set(features.astype(np.float32))
    np.savez(tmp_path / "other.npz", X=features, Y=labels)
    ds2 = load_dataset(
        "features", path=str(tmp_path / "other.npz"), feature_key="X", label_key="Y", query_per_class=5
    )
    assert ds2.query.n == 20


def test_features_mat_with_matlab_style_labels(tmp_path):
    features, labels = toy_arrays(n_per_class=20, num_classes=3)
    path = tmp_path / "gist.mat"
    # MATLAB stores labels as a double column vector, here 1-based.
    scipy.io.savemat(path, {"X": features, "Y": (labels + 1).astype(float)[:, None]})
    ds = load_dataset("features", path=path, feature_key="X", label_key="Y", query_per_class=4)
    assert not ds.multi_label and ds.num_classes == 3
    assert (ds.query.n, ds.database.n) == (12, 48)
    assert ds.query.labels.dtype == np.int64


def test_features_mat_missing_keys_are_listed(tmp_path):
    features, labels = toy_arrays()
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"gist": features, "cls": labels})
    with pytest.raises(ValueError, match=r"no key\(s\) \['features', 'labels'\].*'gist'.*'cls'"):
        load_dataset("features", path=path)


def test_features_npz_missing_key(tmp_path):
    path = tmp_path / "half.npz"
    np.savez(path, features=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"no key\(s\) \['labels'\]; keys found: \['features'\]"):
        load_dataset("features", path=path)


def test_features_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset("features", path=tmp_path / "nowhere.npz")
    csv = tmp_path / "x.csv"
    csv.write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_dataset("features", path=csv)


def test_features_argument_combinations():
    features, labels = toy_arrays()
    with pytest.raises(ValueError, match="needs features=... and labels=..."):
        load_dataset("features", features=features)
    with pytest.raises(ValueError, match="not both"):
        load_dataset("features", features=features, labels=labels, path="x.npz")


def test_multi_label_protocol_nus_wide_style():
    features, labels = toy_multi_label(n=200, num_classes=5)
    ds = load_dataset("features", features=features, labels=labels, query_per_class=6)
    assert ds.multi_label and ds.num_classes == 5
    check_split_invariants(ds)
    assert ds.train is ds.database
    assert ds.query.n + ds.database.n == 200
    assert 6 <= ds.query.n <= 30
    assert (ds.query.labels.sum(axis=0) >= 6).all()  # every class has at least its quota of queries
    _, query, database = load_raw_with_ids(labels, query_per_class=6)
    assert not set(query) & set(database)
    np.testing.assert_array_equal(labels[query], ds.query.labels)


def test_a_multi_label_class_only_in_the_query_split_is_refused():
    features, labels = toy_multi_label(n=100, num_classes=4)
    labels[:, 3] = 0
    labels[:, 0] = 1  # every item keeps a label
    labels[:2, 3] = 1  # only two items carry class 3: both would be queries
    with pytest.raises(ValueError, match=r"class 3 \(label column 3\) would appear only in the query split"):
        load_dataset("features", features=features, labels=labels, query_per_class=5)
    labels[:6, 3] = 1  # six items: five queries, one left for the database
    ds = load_dataset("features", features=features, labels=labels, query_per_class=5)
    assert ds.query.labels[:, 3].sum() >= 5 and ds.database.labels[:, 3].sum() >= 1


def test_a_single_label_class_only_in_the_query_split_is_refused():
    labels = np.array([0] * 10 + [1] * 10 + [7] * 3)  # class 7: exactly query_per_class items
    features = np.random.default_rng(0).standard_normal((labels.size, 3))
    with pytest.raises(ValueError, match="class 7 would appear only in the query split: all 3 of its items"):
        load_dataset("features", features=features, labels=labels, query_per_class=3)
    assert load_dataset("features", features=features, labels=labels, query_per_class=2).num_classes == 3


def test_one_hot_matrix_stays_multi_label():
    features, labels = toy_arrays(n_per_class=20, num_classes=3)
    ds = load_dataset("features", features=features, labels=np.eye(3)[labels], query_per_class=4)
    assert ds.multi_label and ds.query.labels.shape == (12, 3)
    np.testing.assert_array_equal(ds.query.labels.sum(axis=0), [4, 4, 4])


def test_multi_label_determinism():
    features, labels = toy_multi_label()
    a, b, c = (
        load_dataset("features", features=features, labels=labels, query_per_class=4, seed=s)
        for s in (1, 1, 2)
    )
    np.testing.assert_array_equal(a.query.features, b.query.features)
    assert not np.array_equal(a.query.features, c.query.features)


# ---------------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_features_name_rows(bad):
    features, labels = toy_arrays()
    features[[7, 9, 30], 1] = bad
    with pytest.raises(ValueError, match="in 3 of 120 rows; first bad row: 7"):
        load_dataset("features", features=features, labels=labels, query_per_class=5)


def test_float32_overflow_is_reported():
    with pytest.raises(ValueError, match="first bad row: 1"):
        validate_features(np.array([[1.0, 2.0], [1e300, 0.0]]))


def test_label_length_mismatch_names_both():
    features, labels = toy_arrays()
    with pytest.raises(ValueError, match="119 rows but features have 120 rows"):
        load_dataset("features", features=features, labels=labels[:-1])


def test_fewer_than_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        load_dataset("features", features=np.zeros((10, 3)), labels=np.full(10, 4))
    with pytest.raises(ValueError, match="at least 2 classes"):
        validate_labels(np.ones((5, 1)))


def test_class_smaller_than_query_per_class_is_named():
    labels = np.array([0] * 10 + [1] * 10 + [7] * 5)  # errors name label values, not class indices
    features = np.random.default_rng(0).standard_normal((labels.size, 3))
    with pytest.raises(ValueError, match="class 7 has 5 items .* fewer than query_per_class=6"):
        load_dataset("features", features=features, labels=labels, query_per_class=6)


def test_query_taking_everything_is_an_error():
    features, labels = toy_arrays(n_per_class=5, num_classes=2)
    with pytest.raises(ValueError, match="database would be empty"):
        load_dataset("features", features=features, labels=labels, query_per_class=5)


@pytest.mark.parametrize(
    ("features", "match"),
    [
        (np.zeros(5), "must be 2-D"),
        (np.zeros((2, 3, 4)), "must be 2-D"),
        (np.zeros((0, 3)), "at least one row"),
        (np.array([["a", "b"]]), "must be real numbers"),
    ],
)
def test_bad_features(features, match):
    with pytest.raises(ValueError, match=match):
        validate_features(features)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array(["a", "b", "a"]), "must be integers"),
        (np.zeros((3, 2, 2)), "must be 1-D"),
        (np.array([0, 1, 2.5]), "whole numbers, got 2.5"),
        (np.array([0, -1, 1]), "non-negative class labels, got -1 at index 1"),
        (np.array([[1, 0], [0, 2], [1, 1]]), "must be 0/1, got 2 at index"),
        (np.array([[1, 0], [0, 0], [0, 0], [1, 1]]), r"the item at index 1 has no label \(2 of 4 items"),
        (np.array([1e19, 2e19, 1e19]), r"int64 holds exactly \(below 2\*\*63\), got 1e\+19 at index 0"),
        (np.array([0, 2**63 + 1], dtype=np.uint64), "got 9223372036854775809 at index 1"),
        (np.array([0.0, 1.0, np.inf]), "whole numbers, got inf at index 2"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        validate_labels(labels)


def test_large_integral_labels_stay_distinct_classes():
    """Labels are kept exactly: 2**62 and 2**62 + 1 are two classes, and 1e19 is refused, not merged."""
    labels = np.array([2**62, 2**62 + 1] * 10)
    features = np.random.default_rng(0).standard_normal((20, 3))
    assert load_dataset("features", features=features, labels=labels, query_per_class=2).num_classes == 2
    floats = np.array([2.0**62, 2.0**62 + 1024] * 10)  # distinct whole floats that int64 holds exactly
    assert load_dataset("features", features=features, labels=floats, query_per_class=2).num_classes == 2
    with pytest.raises(ValueError, match=r"got 1e\+19 at index 0"):
        load_dataset("features", features=features, labels=np.array([1e19, 2e19] * 10), query_per_class=2)


def test_a_hand_built_data_set_refuses_a_label_less_multi_label_item():
    ds = load_dataset("blobs", num_classes=3, n_per_class=20, dim=4, multi_label=True, query_per_class=2)
    labels = ds.database.labels.copy()
    labels[4] = 0
    database = Split(ds.database.features, labels)
    with pytest.raises(ValueError, match="multi-label train labels: the item at index 4 has no label"):
        HashingDataset("blobs", database, ds.query, database, 3, True)
    with pytest.raises(ValueError, match="multi-label database labels: the item at index 4 has no label"):
        HashingDataset("blobs", ds.query, ds.query, database, 3, True)  # train valid, database not


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"standardize": "false"}, "standardize must be True or False, got 'false'"),
        ({"trust_pickle": "no"}, "trust_pickle must be True or False, got 'no'"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
    ],
)
def test_bad_load_dataset_keywords(options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **options)


def test_blobs_flags_must_be_booleans():
    with pytest.raises(ValueError, match="multi_label must be True or False, got 'False'"):
        load_dataset("blobs", multi_label="False")
    with pytest.raises(ValueError, match="separation must be a finite number >= 0, got 'abc'"):
        load_dataset("blobs", separation="abc")


def test_validate_returns_canonical_dtypes():
    assert validate_labels(np.array([0.0, 1.0, 1.0])).dtype == np.int64
    assert validate_labels(np.array([[True, False], [True, True]])).dtype == np.uint8
    x = np.ones((2, 2), dtype=np.float32)
    assert validate_features(x) is x
    assert validate_features(np.ones((2, 2), dtype=np.int64)).dtype == np.float32


# ---------------------------------------------------------------------------------------------------
# mnist


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_pooled_idx_files(tmp_path, gz):
    folder = make_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", path=folder, query_per_class=3, standardize=False)
    assert (ds.query.n, ds.database.n, ds.feature_dim, ds.num_classes) == (30, 130, 36, 10)
    assert ds.train is ds.database
    check_split_invariants(ds)
    assert 0.0 <= ds.database.features.min() and ds.database.features.max() <= 1.0
    # Pixel values are bytes / 255, and every pooled image appears in exactly one split.
    images = [
        np.frombuffer(gzip.decompress(p.read_bytes()) if gz else p.read_bytes(), np.uint8, offset=16)
        for p in sorted(folder.glob("*images*"))
    ]
    pixels = np.concatenate(images).reshape(-1, 36).astype(np.float32) / np.float32(255)
    assert row_set(ds.query.features) | row_set(ds.database.features) == row_set(pixels)


def test_mnist_train_per_class_subsamples_database(tmp_path):
    folder = make_mnist(tmp_path)
    ds = load_dataset("mnist", path=folder, query_per_class=3, train_per_class=5, standardize=False)
    assert (ds.query.n, ds.train.n, ds.database.n) == (30, 50, 130)
    np.testing.assert_array_equal(np.bincount(ds.train.labels), [5] * 10)
    assert row_set(ds.train.features) <= row_set(ds.database.features)
    with pytest.raises(ValueError, match="class 0 has 13 items available for the train split"):
        load_dataset("mnist", path=folder, query_per_class=3, train_per_class=14)


def test_mnist_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_dataset("mnist", path=tmp_path / "no-such-dir")
    folder = make_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="lacks file.*t10k-labels-idx1-ubyte"):
        load_dataset("mnist", path=folder)
    with pytest.raises(DatasetOptionError, match=r"'mnist' needs path=\.\.\. \(command line: --data-path\)"):
        load_dataset("mnist")


def test_mnist_wrong_magic_names_file(tmp_path):
    folder = make_mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(120, np.uint8), 2051)
    with pytest.raises(
        ValueError, match="train-labels-idx1-ubyte: wrong IDX magic number 2051, expected 2049"
    ):
        load_dataset("mnist", path=folder)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file_names_file(tmp_path, gz):
    folder = make_mnist(tmp_path, gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = folder / name
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    data = data[:-10]
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=f"{name}: truncated IDX file"):
        load_dataset("mnist", path=folder)
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    if gz:
        with pytest.raises(ValueError, match=f"{name}: corrupt or truncated gzip"):
            load_dataset("mnist", path=folder)
    else:
        with pytest.raises(ValueError, match=f"{name}: truncated IDX file, 6 bytes but the header needs 16"):
            load_dataset("mnist", path=folder)


def test_mnist_image_label_count_mismatch(tmp_path):
    folder = make_mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(100, dtype=np.uint8) % 10, 2049)
    with pytest.raises(ValueError, match="120 images but .*train-labels-idx1-ubyte 100 labels"):
        load_dataset("mnist", path=folder)


# ---------------------------------------------------------------------------------------------------
# cifar10


def test_cifar_small_protocol(tmp_path):
    folder = make_cifar(tmp_path)
    ds = load_dataset(
        "cifar10", path=folder, query_per_class=10, train_per_class=50, standardize=False, trust_pickle=True
    )
    assert (ds.query.n, ds.train.n, ds.database.n, ds.feature_dim) == (100, 500, 1100, 3072)
    check_split_invariants(ds)
    np.testing.assert_array_equal(np.bincount(ds.train.labels), [50] * 10)
    np.testing.assert_array_equal(np.bincount(ds.query.labels), [10] * 10)
    assert row_set(ds.train.features) <= row_set(ds.database.features)
    assert not row_set(ds.query.features) & row_set(ds.database.features)
    assert ds.database.features.max() <= 1.0


def test_cifar_full_protocol(tmp_path):
    folder = make_cifar(tmp_path)
    ds = load_dataset("cifar10", path=folder, protocol="full", query_per_class=20, trust_pickle=True)
    assert (ds.query.n, ds.database.n) == (200, 1000)
    assert ds.train is ds.database
    with pytest.raises(ValueError, match="class 0 has 120 items .* fewer than query_per_class=1000"):
        load_dataset("cifar10", path=folder, protocol="full", trust_pickle=True)


def test_cifar_small_defaults_need_500_train_per_class(tmp_path):
    folder = make_cifar(tmp_path, per_class_per_batch=2, dim=12)
    with pytest.raises(ValueError, match="class 0 has 12 items .* fewer than query_per_class=100"):
        load_dataset("cifar10", path=folder, trust_pickle=True)


def test_cifar_bad_protocol_and_missing_files(tmp_path):
    folder = make_cifar(tmp_path, per_class_per_batch=2, dim=12)
    with pytest.raises(ValueError, match="unknown CIFAR-10 protocol 'tiny'"):
        load_dataset("cifar10", path=folder, protocol="tiny", trust_pickle=True)
    with pytest.raises(ValueError, match="train_per_class applies to 'small'"):
        load_dataset("cifar10", path=folder, protocol="full", train_per_class=5, trust_pickle=True)
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="lacks file.*data_batch_3, test_batch"):
        load_dataset("cifar10", path=folder, trust_pickle=True)


def test_cifar_malformed_batch(tmp_path):
    folder = make_cifar(tmp_path, per_class_per_batch=2, dim=12)
    with open(folder / "data_batch_2", "wb") as file:
        pickle.dump({b"images": np.zeros((3, 12), np.uint8)}, file)
    with pytest.raises(ValueError, match=r"data_batch_2: needs keys .*keys found: \[b'images'\]"):
        load_dataset("cifar10", path=folder, trust_pickle=True)


class _Payload:
    """Unpickling this creates the file ``marker``: a stand-in for code a hostile pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar_pickles_need_trust_per_call(tmp_path):
    """Without trust_pickle=True no batch is unpickled: a payload never runs; the error says why and how."""
    folder = make_cifar(tmp_path, per_class_per_batch=2, dim=12)
    marker = tmp_path / "marker"
    with open(folder / "data_batch_1", "wb") as file:
        batch = {b"data": np.zeros((20, 12), np.uint8), b"labels": [0] * 20, b"x": _Payload(marker)}
        pickle.dump(batch, file)
    message = (
        r"data_batch_1: CIFAR-10 batches are Python pickles, and unpickling a file can run any code it "
        r"carries; .* with trust_pickle=True \(command line: --trust-pickle\)"
    )
    with pytest.raises(ValueError, match=message):
        load_dataset("cifar10", path=folder, query_per_class=1, train_per_class=1)
    assert not marker.exists()
    load_dataset("cifar10", path=folder, query_per_class=1, train_per_class=1, trust_pickle=True)
    assert marker.exists()  # the trusted pickle did run its code: that is what the refusal prevents


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    folder = make_cifar(tmp_path, per_class_per_batch=2, dim=12)
    (folder / "data_batch_4").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_4: not a CIFAR-10 pickle batch"):
        load_dataset("cifar10", path=folder, trust_pickle=True)


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


CORRUPT_NPZ = [
    ("garbage", lambda: b"not a zip file at all", "bad.npz: not a readable .npz archive"),
    (
        "truncated",
        lambda: _npz_bytes(features=np.zeros((4, 2)), labels=np.arange(4))[:150],
        "bad.npz: not a readable .npz archive",
    ),
    (
        "object array",
        lambda: _npz_bytes(features=np.zeros((2, 2)), labels=np.array([{"a": 1}, None], dtype=object)),
        "corrupt .npz archive or an entry that needs pickle",
    ),
]


@pytest.mark.parametrize(("content", "match"), [c[1:] for c in CORRUPT_NPZ], ids=[c[0] for c in CORRUPT_NPZ])
def test_corrupt_npz_names_the_file(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(content())
    with pytest.raises(ValueError, match=match):
        load_dataset("features", path=path)


def test_a_npy_renamed_npz_is_named(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    (tmp_path / "x.npy").rename(tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"x\.npz: a single \.npy array, not a \.npz archive; .*np\.savez"):
        load_dataset("features", path=tmp_path / "x.npz")


@pytest.mark.parametrize("content", [b"", b"MATLAB 5.0 MAT-file" * 4, b"\x00" * 200])
def test_corrupt_mat_names_the_file(tmp_path, content):
    path = tmp_path / "bad.mat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.mat: corrupt or unreadable .mat file"):
        load_dataset("features", path=path)


def test_corrupt_gzip_idx_names_the_file(tmp_path):
    folder = make_mnist(tmp_path, gz=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: corrupt or truncated gzip file"):
        load_dataset("mnist", path=folder)
