"""``python -m agents.evaluate``: per-run results, the comparison table and its pictures."""

import json

import numpy as np
import pytest

from agents import evaluate, train
from hashing_gym.codes import bit_correlation, code_balance
from hashing_gym.data import load_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three quick baseline runs in one parent folder."""
    parent = tmp_path_factory.mktemp("runs")
    for algo, bits in (("lsh", 16), ("itq", 16), ("sdh", 32)):
        assert train.main([algo, "--bits", str(bits), "--out", str(parent / f"{algo}{bits}")]) == 0
    return parent


def table_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def test_comparison_table_and_pictures(runs, capsys):
    folders = [str(runs / name) for name in ("lsh16", "itq16", "sdh32")]
    assert evaluate.main([*folders, "--embedding", "pca"]) == 0
    out = runs / "evaluation"  # the default for several runs: beside them
    printed = capsys.readouterr().out
    table = (out / "evaluation.md").read_text()
    assert table in printed
    rows = table_rows(table)
    assert [row["run"] for row in rows] == ["lsh16", "itq16", "sdh32"]
    for row, folder in zip(rows, folders, strict=True):
        results = json.loads((runs / folder / "results.json").read_text())
        assert row["algo"] == results["algo"] and int(row["bits"]) == results["bits"]
        assert float(row["mAP"]) == pytest.approx(results["map"], abs=5e-5)
        assert float(row["P@r2"]) == pytest.approx(results["precision_radius2"], abs=5e-5)
        assert float(row["balance"]) == pytest.approx(results["code_balance"], abs=5e-5)
    for picture in ("pr_curves.png", "codes.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp*"))
    for folder in folders:  # each run's page refreshed, with its own PR curve and codes picture
        assert sorted(path.name for path in (runs / folder).glob("*.png")) == ["codes.png", "pr_curve.png"]
        assert "](codes.png)" in (runs / folder / "report.md").read_text()
    assert f"wrote: {runs / 'lsh16' / 'report.md'}" in printed


def test_code_statistics_in_results_are_those_of_the_database_codes(runs):
    from agents.baselines import load_model

    results = json.loads((runs / "itq16" / "results.json").read_text())
    codes = load_model(runs / "itq16").encode(load_dataset("digits").database.features)
    assert results["code_balance"] == pytest.approx(code_balance(codes))
    assert results["bit_correlation"] == pytest.approx(bit_correlation(codes))
    assert 0.0 <= results["precision_at_k"] <= 1.0


def test_single_run_reports_into_its_folder_with_tsne(runs, tmp_path):
    assert evaluate.main([str(runs / "sdh32"), "--max-points", "80"]) == 0
    assert (runs / "sdh32" / "codes.png").stat().st_size > 0
    assert "![database codes](codes.png)" in (runs / "sdh32" / "report.md").read_text()
    assert not (runs / "sdh32" / "pr_curves.png").exists()  # one PR-curve file: the run's own
    assert (runs / "sdh32" / "evaluation.md").read_text().count("| sdh32 |") == 1


def test_embedding_coordinates_are_deterministic():
    codes = (np.random.default_rng(0).random((50, 16)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(
        evaluate.embed_codes(codes, "tsne", seed=1), evaluate.embed_codes(codes, "tsne", seed=1)
    )
    assert evaluate.embed_codes(codes, "pca", seed=0).shape == (50, 2)


def test_runs_with_the_same_folder_name_get_distinct_labels(runs, tmp_path):
    other = tmp_path / "lsh16"
    assert train.main(["lsh", "--seed", "1", "--out", str(other)]) == 0
    assert (
        evaluate.main([str(runs / "lsh16"), str(other), "--embedding", "none", "--out", str(tmp_path / "r")])
        == 0
    )
    rows = table_rows((tmp_path / "r" / "evaluation.md").read_text())
    assert len({row["run"] for row in rows}) == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{missing}"], "holds no run"),
        (["{lsh}", "{lsh}"], "given twice"),
        (["{lsh}", "--max-points", "1"], "--max-points must be >= 2"),
    ],
)
def test_evaluate_refuses_bad_arguments_in_one_line(runs, tmp_path, capsys, arguments, message):
    names = {"missing": str(tmp_path / "nothing"), "lsh": str(runs / "lsh16")}
    assert evaluate.main([argument.format(**names) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
