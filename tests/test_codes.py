import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hashing_gym import codes
from hashing_gym.codes import (
    bch_parameters,
    bit_correlation,
    code_balance,
    error_correcting_radius,
    label_codebook,
    min_distance,
)


def brute_force_min_distance(book):
    return min(int((a != b).sum()) for a, b in itertools.combinations(book, 2))


@pytest.mark.parametrize("kind", codes.CODEBOOK_KINDS)
@pytest.mark.parametrize(("num_classes", "bits"), [(2, 4), (10, 12), (10, 16), (21, 32), (10, 64)])
def test_codebook_shape_dtype_and_distinct_rows(kind, num_classes, bits):
    book = label_codebook(num_classes, bits, kind)
    assert book.shape == (num_classes, bits)
    assert book.dtype == np.uint8
    assert set(np.unique(book)) <= {0, 1}
    assert len(np.unique(book, axis=0)) == num_classes
    assert not book.flags.writeable
    assert min_distance(book) == brute_force_min_distance(book)


@pytest.mark.parametrize(
    ("num_classes", "bits", "expected"),
    [
        (10, 16, (15, 5, 7)),
        (10, 32, (31, 6, 15)),
        (10, 64, (63, 7, 31)),
        (10, 8, (7, 4, 3)),
        (100, 16, (15, 7, 5)),
    ],
)
def test_bch_rule_picks_nearest_length_and_largest_distance(num_classes, bits, expected):
    assert bch_parameters(num_classes, bits) == expected


@pytest.mark.parametrize(
    ("num_classes", "bits"), [(10, 7), (10, 15), (10, 16), (10, 31), (10, 32), (21, 48), (10, 64)]
)
def test_bch_codebook_reaches_designed_distance(num_classes, bits):
    n, _, d = bch_parameters(num_classes, bits)
    book = label_codebook(num_classes, bits)
    # Padding keeps the designed distance; dropping bits may cost one per dropped bit.
    assert min_distance(book) >= d - max(0, n - bits)
    if bits >= n:
        assert error_correcting_radius(book) >= (d - 1) // 2


def test_codebook_is_deterministic_under_seed_and_differs_across_seeds():
    a = label_codebook(10, 16, "bch", seed=1)
    b = label_codebook(10, 16, "bch", seed=1)
    c = label_codebook(10, 16, "bch", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_disk_cache_is_written_reused_and_damaged_files_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHING_GYM_CACHE", str(tmp_path))
    codes._cached_codebook.cache_clear()
    book = label_codebook(5, 16, "random", seed=3)
    (path,) = tmp_path.glob("*.npy")
    np.testing.assert_array_equal(np.load(path), book)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file

    path.write_bytes(b"not a numpy file")
    codes._cached_codebook.cache_clear()
    np.testing.assert_array_equal(label_codebook(5, 16, "random", seed=3), book)
    np.testing.assert_array_equal(np.load(path), book)
    codes._cached_codebook.cache_clear()


def test_a_cold_build_needs_no_galois(tmp_path):
    """BCH codebooks come from a primitive-polynomial table and integer arithmetic, not galois's JIT."""
    env = {**os.environ, "HASHING_GYM_CACHE": str(tmp_path)}
    script = (
        "import sys; from hashing_gym.codes import label_codebook; label_codebook(10, 256); "
        "print('galois' in sys.modules)"
    )
    cold = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert cold.stdout.strip() == "False"
    assert list(tmp_path.glob("*.npy"))  # and the codebook was cached


GALOIS = np.load(Path(__file__).parent / "golden" / "codebooks_galois.npz")


@pytest.mark.parametrize("key", sorted(GALOIS.files))
def test_bch_codebooks_are_bitwise_those_galois_built(key):
    """tests/golden/record_codebooks.py built these with galois.BCH; our construction must agree."""
    classes, bits, seed = (int(part[1:]) for part in key.split("-"))
    codes._cached_codebook.cache_clear()
    built = codes._bch_codebook(classes, bits, np.random.default_rng(seed))
    np.testing.assert_array_equal(built, GALOIS[key])


def test_bch_generator_polynomials_have_the_textbook_degrees():
    """Textbook narrow-sense BCH codes (n, k) by design distance, e.g. (15, 7) at 5 and (255, 131) at 37."""
    for n, designed, k in ((15, 5, 7), (31, 7, 16), (63, 7, 45), (127, 9, 99), (255, 37, 131)):
        generator = dict(codes._bch_generators(n))[designed]
        assert n - (generator.bit_length() - 1) == k, (n, designed)
        # g(x) divides x^n - 1: every codeword's cyclic shift is a codeword
        remainder = (1 << n) | 1
        while remainder.bit_length() >= generator.bit_length():
            remainder ^= generator << (remainder.bit_length() - generator.bit_length())
        assert remainder == 0, (n, designed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 16, "golay"), "kind must be one of"),
        ((1, 16, "bch"), "num_classes must be an integer >= 2"),
        ((10, 0, "bch"), "bits must be a positive integer"),
        ((10, -3, "random"), "bits must be a positive integer"),
        ((10, 3, "bch"), "bits=3 is too small for 10 classes"),
        ((10, 2.5, "bch"), "bits must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        label_codebook(*args)


def test_min_distance_refuses_a_single_row():
    with pytest.raises(ValueError, match="at least 2 rows"):
        min_distance(np.zeros((1, 4), dtype=np.uint8))


def test_code_balance_and_bit_correlation_match_their_definitions():
    rng = np.random.default_rng(0)
    codes = (rng.random((300, 12)) < rng.random(12)).astype(np.uint8)
    shares = codes.mean(axis=0)
    assert code_balance(codes) == pytest.approx(np.mean([1 - abs(2 * p - 1) for p in shares]))
    signs = codes.astype(float) * 2 - 1
    pairs = [abs(np.mean(signs[:, i] * signs[:, j])) for i in range(12) for j in range(12) if i != j]
    assert bit_correlation(codes) == pytest.approx(np.mean(pairs))


def test_code_statistics_of_extreme_codes():
    halves = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=np.uint8)
    assert code_balance(halves) == 1.0
    assert code_balance(np.zeros((5, 4), dtype=np.uint8)) == 0.0
    assert bit_correlation(np.zeros((5, 4), dtype=np.uint8)) == 1.0  # every bit copies every other
    assert bit_correlation(halves[:, :1]) == 0.0


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.zeros(4), np.full((3, 4), 2)])
def test_code_statistics_refuse_bad_codes(bad):
    with pytest.raises(ValueError, match="codes"):
        code_balance(bad)
    with pytest.raises(ValueError, match="codes"):
        bit_correlation(bad)


@settings(max_examples=8, deadline=None)
@given(num_classes=st.integers(2, 60), bits=st.sampled_from([8, 16, 32, 64]), seed=st.integers(0, 99))
def test_property_bch_codebooks_reach_their_designed_distance(num_classes, bits, seed):
    assume(2 ** min(bits, 7) >= num_classes)
    try:
        n, _, d = bch_parameters(num_classes, bits)
    except ValueError:  # no BCH code of that length has enough codewords: refused, not faked
        return
    book = label_codebook(num_classes, bits, seed=seed)
    assert len(np.unique(book, axis=0)) == num_classes
    assert min_distance(book) >= d - max(0, n - bits)
