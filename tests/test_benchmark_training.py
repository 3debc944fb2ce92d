"""benchmarks.training: the end-to-end throughput table of the torch trainers (issue #17 item 5)."""

import json
import shutil

import pytest
import torch

from benchmarks import training


def table(text):
    """The markdown table of the benchmark's output: header cells and rows of cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


def number(cell):
    return float(cell.replace(",", ""))


def test_quick_cpu_mode_prints_the_table_with_positive_rates(tmp_path, capsys):
    rows_file = tmp_path / "rows.json"
    argv = ["--quick", "--cases", "tiny:8", "--seconds", "0.5", "--json", str(rows_file)]
    assert training.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and "device cpu" in out.splitlines()[0]
    header, rows = table(out)
    assert header == list(training.COLUMNS)
    assert [row[:3] for row in rows] == [["dqn-torch", "tiny", "8"], ["reinforce-torch", "tiny", "8"]]
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert number(cells["env steps/s"]) > 0 and number(cells["gradient updates/s"]) > 0
        assert number(cells["env steps"]) > 0 and number(cells["train s"]) > 0
        assert 0.0 <= number(cells["mAP"]) <= 1.0
        assert cells["GPU util %"] == "n/a" and cells["peak GPU MiB"] == "n/a"  # a CPU run measures no GPU
    dqn, reinforce = json.loads(rows_file.read_text())["rows"]
    # The rates are the trainers' own counts over their train_seconds (no re-timing).
    for row in (dqn, reinforce):
        assert row["env steps/s"] == pytest.approx(row["env steps"] / row["train s"])
    assert dqn["num envs"] == 16 and dqn["env steps"] % 16 == 0  # whole vector steps
    assert reinforce["batch"] == 64 and reinforce["env steps"] % 64 == 0  # whole updates
    # dqn-torch: 2 updates per vector step once learning starts; reinforce-torch: one per batch.
    assert dqn["gradient updates/s"] < 2 * dqn["env steps/s"] / 16
    assert reinforce["gradient updates/s"] == pytest.approx(reinforce["env steps/s"] / 64)


def test_utilisation_is_averaged_over_the_training_window(tmp_path):
    bench = training.Bench("cpu", 1.0, True, tmp_path, read_utilisation=lambda: 42.0)  # ~1 s: several samples
    row = bench.measure("reinforce-torch", training.Case("tiny", 8))
    assert row["GPU util %"] == 42.0 and row["env steps/s"] > 0

    sampler = training.Sampler(lambda: None)
    sampler.samples = [(1.0, 10.0), (2.0, 20.0), (3.0, 90.0)]
    assert sampler.mean(1.5, 2.5) == 20.0 and sampler.mean(0.0, 2.0) == 15.0
    assert sampler.mean(4.0, 5.0) is None


def test_utilisation_reader_says_when_nothing_works(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)

    def broken(device=None):
        raise RuntimeError("pynvml is not installed")

    monkeypatch.setattr(torch.cuda, "utilization", broken)
    how, read = training.utilisation_reader(0)
    assert read is None and how.startswith("n/a")
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: 37)
    how, read = training.utilisation_reader(0)
    assert "torch.cuda.utilization" in how and read() == 37.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "mnist:16"], "--cases wants DATASET:BITS"),
        (["--cases", "digits:0"], "--cases wants DATASET:BITS"),
        (["--dqn", "num_env=8"], "dqn-torch has no option(s) ['num_env']"),
        (["--seconds", "0"], "--seconds must be positive"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    assert training.main(["--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
