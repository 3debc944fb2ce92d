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
