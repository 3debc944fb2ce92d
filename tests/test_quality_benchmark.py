"""``python -m benchmarks.quality``: the method x bits table is built from the runs' results.json."""

import json

import numpy as np
import pytest

from benchmarks import quality


def test_quality_table_reports_each_runs_map_and_gap_to_the_reference(tmp_path, capsys):
    """On a user's features file (the way CIFAR-10 GIST features are brought)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 130)
    features = rng.standard_normal((len(labels), 24)) + 3 * np.eye(4, 24)[labels]
    np.savez(tmp_path / "gist.npz", features=features.astype(np.float32), labels=labels)
    out = tmp_path / "quality"
    argv = ["--datasets", "features", "--data-path", str(tmp_path / "gist.npz"), "--methods", "lsh,mlp-code"]
    argv += ["--bits", "16", "--out", str(out), "--jobs", "2"]
    assert quality.main(argv) == 0
    report = capsys.readouterr().out
    assert report == (out / "quality.md").read_text()
    assert (out / "quality.png").read_bytes()[:4] == b"\x89PNG"
    maps = {
        m: json.loads((out / "features" / "16" / m / "results.json").read_text())["map"]
        for m in ("lsh", "mlp-code")
    }
    rows = {line.split("|")[2].strip(): line for line in report.splitlines() if line.startswith("| features")}
    for method, value in maps.items():
        cells = [cell.strip() for cell in rows[method].strip("|").split("|")]
        assert float(cells[3]) == pytest.approx(value, abs=5e-4)
        assert float(cells[4]) == pytest.approx(value - maps["mlp-code"], abs=1e-3)
    assert "machine:" in report

    # A finished run is reused, not retrained.
    stamp = (out / "features" / "16" / "lsh" / "results.json").stat().st_mtime_ns
    assert quality.main([*argv[:4], "--methods", "lsh", "--bits", "16", "--out", str(out)]) == 0
    assert (out / "features" / "16" / "lsh" / "results.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--methods", "lsh,nope"], "unknown method(s) nope"), (["--bits", "16,0"], "--bits must be positive")],
)
def test_quality_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_digits28_is_real_digits_resampled_shifted_and_noisy():
    from benchmarks.datasets import digits28

    features, labels = digits28(variants=2, seed=1)
    assert features.shape == (2 * 1797, 784) and features.dtype == np.float32
    np.testing.assert_array_equal(labels[:1797], labels[1797:])  # two copies of every image
    assert np.bincount(labels).min() > 300  # ten classes, all present
    # The two variants of an image differ (shift and noise) but stay closer to each other than to others.
    same = np.linalg.norm(features[:200] - features[1797 : 1797 + 200], axis=1)
    assert (same > 0).all()
    np.testing.assert_array_equal(digits28(variants=2, seed=1)[0], features)  # seeded
    with pytest.raises(ValueError, match="0 <= shift <= 4"):
        digits28(shift=5)


def test_quality_builds_digits28_and_trains_on_it_as_a_features_file(tmp_path, monkeypatch):
    built = []

    def small(path):  # the real set takes seconds to build and minutes to train on: one variant of it
        from benchmarks.datasets import digits28

        features, labels = digits28(variants=1)
        built.append(path)
        np.savez(path, features=features, labels=labels)
        return path

    monkeypatch.setitem(quality.BUILT, "digits28", small)
    out = tmp_path / "quality"
    argv = ["--datasets", "digits28", "--methods", "mlp-code", "--bits", "16", "--out", str(out)]
    assert quality.main(argv) == 0
    assert built == [out / "digits28.npz"]
    results = json.loads((out / "digits28" / "16" / "mlp-code" / "results.json").read_text())
    assert results["dataset"] == "features" and results["map"] > 0.5
