"""Recompute a run's retrieval results from its saved model: ``python -m agents.evaluate DIR``.

Reads ``DIR/args.json`` and the model file, encodes the query and database splits again,
recomputes the metrics of results.json (mAP@all stable and tie-aware, mAP@k, P@r2), rewrites
results.json with them (training fields kept), and draws ``DIR/pr_curve.png``: the
precision-recall curve and precision against Hamming radius.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.common import RESULTS_FILE, load_run_dataset, read_run_args, retrieval_results, write_json_atomic
from agents.train import ALGORITHMS
from hashing_gym.data import HashingDataset
from hashing_gym.ranking import precision_recall_curve


def read_run(folder: Path) -> tuple[str, Any]:
    """The algorithm name and its ``Args`` of a run folder."""
    recorded = read_run_args(folder)
    algo = recorded.pop("algo")
    if algo not in ALGORITHMS:
        raise ValueError(f"{folder} names an unknown algorithm {algo!r}")
    module = importlib.import_module(ALGORITHMS[algo])
    return algo, module.Args(**recorded)


def encode_run(folder: Path) -> tuple[HashingDataset, Any, np.ndarray, np.ndarray]:
    """Data set, args, query codes and database codes of a run, from its saved model."""
    algo, args = read_run(folder)
    module = importlib.import_module(ALGORITHMS[algo])
    dataset = load_run_dataset(args)
    model = module.load_model(folder)
    query = module.encode_split(model, dataset.query.features, args.bits)
    database = module.encode_split(model, dataset.database.features, args.bits)
    return dataset, args, query, database


def plot_precision_recall(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Hamming ranking"
) -> None:
    """Precision-recall curves and precision against Hamming radius, one line per run."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, (precision, recall) in curves.items():
        left.plot(recall, precision, marker=".", label=label)
        right.plot(np.arange(len(precision)), precision, marker=".", label=label)
    left.set(
        xlabel="recall", ylabel="precision", title=f"{title}: precision-recall", xlim=(0, 1), ylim=(0, 1.02)
    )
    right.set(xlabel="Hamming radius", ylabel="precision", title="precision within radius", ylim=(0, 1.02))
    left.legend(loc="lower left")
    figure.tight_layout()
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(path)


def evaluate_folder(folder: Path) -> dict[str, Any]:
    """Recompute and rewrite a run's results.json; draw its PR curve; return the results."""
    folder = Path(folder)
    dataset, args, query, database = encode_run(folder)
    metrics = retrieval_results(dataset, query, database, args.topk)
    results_path = folder / RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update(metrics)
    write_json_atomic(results_path, results)
    curve = precision_recall_curve(query, dataset.query.labels, database, dataset.database.labels)
    plot_precision_recall({folder.name: curve}, folder / "pr_curve.png")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate each run folder given on the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders written by agents.train")
    parsed = parser.parse_args(argv)
    for folder in parsed.folders:
        try:
            results = evaluate_folder(folder)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(
            f"{folder}: map={results['map']:.4f} map_tie_aware={results['map_tie_aware']:.4f} "
            f"map_at_k={results['map_at_k']:.4f} precision_radius2={results['precision_radius2']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
