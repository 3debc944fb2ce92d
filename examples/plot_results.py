"""The pictures of a comparison: mAP against code length, and precision-recall curves, from run folders.

Run: ``python examples/plot_results.py RUN_OR_PARENT_FOLDER... [--out DIR] [--pr-bits B]``, or
``python examples/plot_results.py --quick --out DIR``, which first trains the ``lsh`` and ``itq``
baselines at 8, 16 and 32 bits into ``DIR/runs`` (seconds) and then plots them.

Every folder given is searched for the ``results.json`` files that ``python -m agents.train`` writes.
``DIR/map_vs_bits.png`` draws mAP@all (stable ties; tie-aware dashed) against bits, one line per
algorithm and data set, averaged over seeds. ``DIR/pr_curves.png`` re-encodes the query and database
splits with each saved model at ``--pr-bits`` bits (``agents.evaluate``) and draws the precision-recall
curves of Hamming ranking and precision against Hamming radius. A markdown table of the runs is printed.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt

from agents import train
from agents.common import RESULTS_FILE
from agents.evaluate import encode_run, plot_precision_recall
from hashing_gym.ranking import precision_recall_curve

QUICK_ALGORITHMS = ("lsh", "itq")
QUICK_BITS = (8, 16, 32)


def find_runs(folders: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """``(run folder, results)`` of every results.json in or under ``folders``, by algorithm and bits.

    Raises:
        FileNotFoundError: if a folder does not exist or none holds a results.json.
    """
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder: {folder}")
        paths = [folder / RESULTS_FILE] if (folder / RESULTS_FILE).is_file() else folder.rglob(RESULTS_FILE)
        runs.extend((path.parent, json.loads(path.read_text())) for path in paths)
    if not runs:
        raise FileNotFoundError(f"no {RESULTS_FILE} in or under {', '.join(map(str, folders))}")
    return sorted(
        runs, key=lambda run: (run[1]["algo"], run[1]["dataset"], run[1]["bits"], run[1]["seed"], str(run[0]))
    )


def plot_map_vs_bits(runs: list[tuple[Path, dict[str, Any]]], path: Path) -> None:
    """mAP@all against bits, one line per (algorithm, data set), mean over seeds; tie-aware dashed."""
    series: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for _, results in runs:
        key = (results["algo"], results["dataset"])
        series[key][int(results["bits"])].append((results["map"], results["map_tie_aware"]))
    figure, axes = plt.subplots(figsize=(6, 4))
    for (algo, dataset), by_bits in sorted(series.items()):
        bits = sorted(by_bits)
        stable = [sum(m for m, _ in by_bits[b]) / len(by_bits[b]) for b in bits]
        aware = [sum(t for _, t in by_bits[b]) / len(by_bits[b]) for b in bits]
        (line,) = axes.plot(bits, stable, marker="o", label=f"{algo} ({dataset})")
        axes.plot(bits, aware, linestyle="--", color=line.get_color())
    axes.set(
        xlabel="bits", ylabel="mAP@all", title="mAP against code length (dashed: tie-aware)", ylim=(0, 1.02)
    )
    axes.set_xticks(sorted({b for by_bits in series.values() for b in by_bits}))
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_pr_curves(runs: list[tuple[Path, dict[str, Any]]], bits: int, path: Path) -> int:
    """Precision-recall curves of the runs at ``bits`` bits, re-encoded from their saved models.

    Returns:
        The number of runs drawn (0: no run at that code length; nothing is written).
    """
    curves = {}
    for folder, results in runs:
        if int(results["bits"]) != bits:
            continue
        dataset, _, query, database = encode_run(folder)
        label = f"{results['algo']} ({results['dataset']}, seed {results['seed']})"
        curves[label] = precision_recall_curve(query, dataset.query.labels, database, dataset.database.labels)
    if curves:
        plot_precision_recall(curves, path, title=f"{bits} bits")
    return len(curves)


def train_quick_runs(folder: Path) -> None:
    """Train the ``lsh`` and ``itq`` baselines at 8, 16 and 32 bits on digits into ``folder``."""
    for algo in QUICK_ALGORITHMS:
        for bits in QUICK_BITS:
            status = train.main([algo, "--bits", str(bits), "--out", str(folder / f"{algo}-{bits}")])
            if status:
                raise RuntimeError(f"python -m agents.train {algo} --bits {bits} failed with status {status}")


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Parse the command line, draw the pictures, print the runs; returns the pictures written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="run folders, or folders holding run folders")
    parser.add_argument(
        "--quick", action="store_true", help="first train lsh and itq at 8/16/32 bits into OUT/runs"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("plots"), help="where the pictures go (default: plots)"
    )
    parser.add_argument("--pr-bits", type=int, default=16, help="code length of the precision-recall curves")
    parsed = parser.parse_args(argv)
    if not parsed.folders and not parsed.quick:
        parser.error("give run folders, or --quick to make some")
    parsed.out.mkdir(parents=True, exist_ok=True)
    folders = list(parsed.folders)
    if parsed.quick:
        train_quick_runs(parsed.out / "runs")
        folders.append(parsed.out / "runs")
    runs = find_runs(folders)

    print("\n| run | algo | dataset | bits | seed | mAP@all | tie-aware | mAP@k | P@r2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder, r in runs:
        print(
            f"| {folder.name} | {r['algo']} | {r['dataset']} | {r['bits']} | {r['seed']} | {r['map']:.4f} | "
            f"{r['map_tie_aware']:.4f} | {r['map_at_k']:.4f} | {r['precision_radius2']:.4f} |"
        )
    written = [parsed.out / "map_vs_bits.png"]
    plot_map_vs_bits(runs, written[0])
    if plot_pr_curves(runs, parsed.pr_bits, parsed.out / "pr_curves.png"):
        written.append(parsed.out / "pr_curves.png")
    else:
        print(f"no run at {parsed.pr_bits} bits: no precision-recall curves (choose --pr-bits)")
    print("\nwrote " + ", ".join(map(str, written)))
    return written


if __name__ == "__main__":
    main()
