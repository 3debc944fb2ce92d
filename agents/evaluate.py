"""Recompute and compare runs' retrieval results: ``python -m agents.evaluate DIR [DIR ...]``.

For each run folder, reads ``DIR/args.json`` and the model file, encodes the query and database
splits again, recomputes the metrics of results.json (mAP@all stable and tie-aware, mAP@k,
precision@k, P@r2, and the database codes' balance and bit correlation), rewrites results.json
with them (training fields kept) and refreshes the run's page (``agents.report``): ``DIR/report.md``
with ``pr_curve.png``, ``codes.png`` (the ``--embedding`` picture) and ``training_curves.png``
(from the run's TensorBoard scalars).

Then it writes the comparison into ``--out`` (default: the run folder for one run, else
``evaluation/`` beside the runs' common parent):

- ``evaluation.md``: one table row per run (also printed);
- for several runs (or an ``--out`` other than the one run's folder), ``pr_curves.png``: every
  run's precision-recall curve and precision against Hamming radius, overlaid, and ``codes.png``:
  a 2-D t-SNE (or PCA) picture of each run's database codes coloured by class with a legend of
  the classes, like DRLH's Figure 5 (at most ``--max-points`` items drawn with ``--seed``; a
  multi-label item takes the colour of its first label). A single run's own pictures are its
  comparison: one PR-curve file per folder.

Files are data: a run folder may come from someone else, so nothing in it is trusted. Its
``args.json`` never grants ``--trust-pickle`` (only this command line does), and when it names a
``data_path``, evaluate prints which file or folder it opens and that the path comes from args.json.
Every mistake (a missing or corrupt run, bad data, an ``--out`` that is a file or cannot be
written) ends in one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.checkpoint import atomic_path, read_json, write_json
from agents.common import (
    ARGS_FILE,
    RESULTS_FILE,
    UsageError,
    load_run_dataset,
    read_run_args,
    retrieval_results,
)
from agents.report import (
    CODES_FILE,
    COLUMNS,
    EMBEDDINGS,
    REPORT_FILE,
    CodesPanel,
    embed_codes,
    first_classes,
    plot_code_embeddings,
    plot_precision_recall,
    sample_items,
    write_run_report,
)
from agents.train import ALGORITHMS, args_from_record
from hashing_gym.data import SPLIT_PROTOCOLS, DatasetOptionError, HashingDataset
from hashing_gym.ranking import precision_recall_curve

COMPARISON_PR_FILE = "pr_curves.png"

@dataclass
class EvaluatedRun:
    """One run folder, encoded again: what the report needs."""

    folder: Path
    results: dict[str, Any]
    dataset: HashingDataset
    database_codes: np.ndarray
    curve: tuple[np.ndarray, np.ndarray]
    label: str = ""
    query_codes: np.ndarray | None = None
    xy: np.ndarray | None = None  # 2-D points of the database items the codes picture draws
    xy_classes: np.ndarray | None = None  # ... and their classes


def read_run(folder: Path, trust_pickle: bool = False) -> tuple[str, Any]:
    """The algorithm name and its ``Args`` of a run folder.

    ``trust_pickle`` is the caller's (``--trust-pickle``), whatever the folder's args.json records.
    """
    recorded = read_run_args(folder)
    algo = recorded.pop("algo", None)
    if algo not in ALGORITHMS:
        raise ValueError(f"{Path(folder) / ARGS_FILE} names an unknown algorithm {algo!r}")
    module = importlib.import_module(ALGORITHMS[algo])
    recorded["trust_pickle"] = trust_pickle
    return algo, args_from_record(module.Args, recorded, folder)


def encode_run(
    folder: Path, trust_pickle: bool = False
) -> tuple[HashingDataset, Any, np.ndarray, np.ndarray]:
    """Data set, args, query codes and database codes of a run, from its saved model.

    A ``data_path`` recorded in the run's args.json is followed, and a line says so (the folder's
    author chose that path); ``trust_pickle`` is the caller's.
    """
    algo, args = read_run(folder, trust_pickle)
    module = importlib.import_module(ALGORITHMS[algo])
    if args.data_path is not None:
        print(
            f"{folder}: opening the {args.dataset} data at {args.data_path} "
            f"(data_path from {Path(folder) / ARGS_FILE})",
            flush=True,
        )
    dataset = load_run_dataset(args)
    model = module.load_model(folder)
    query = module.encode_split(model, dataset.query.features, args.bits)
    database = module.encode_split(model, dataset.database.features, args.bits)
    return dataset, args, query, database


def run_label(run: EvaluatedRun) -> str:
    """A short name of a run for legends and the table: ``label``, else its folder's name."""
    return run.label or run.folder.name


def label_runs(runs: Sequence[EvaluatedRun]) -> None:
    """Name each run by its folder, or by parent/folder where two folders share a name."""
    names = [run.folder.name for run in runs]
    for run in runs:
        unique = names.count(run.folder.name) == 1
        run.label = run.folder.name if unique else f"{run.folder.resolve().parent.name}/{run.folder.name}"


def comparison_table(runs: Sequence[EvaluatedRun]) -> str:
    """A markdown table: run, algorithm, env, data set, bits, then ``COLUMNS``."""
    header = ["run", "algo", "env", "dataset", "bits", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        r = run.results
        protocol = r.get("protocol", "standard")
        dataset = r["dataset"] if protocol == "standard" else f"{r['dataset']} ({protocol})"
        cells = [run_label(run), r["algo"], r["env"], dataset, str(r["bits"])]
        cells += [str(r[key]) if key == "topk" else f"{r[key]:.4f}" for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_protocol(folder: Path, protocol: str | None) -> None:
    """Refuse a run trained under another split protocol than ``--protocol`` (None: any).

    A run is evaluated under the protocol it trained with (its args.json): a model trained on every
    class has seen the classes that ``unseen-classes`` holds out, and one trained on the seen
    classes is not the standard protocol's model.
    """
    if protocol is None:
        return
    trained = read_run_args(folder).get("protocol", "standard")
    if trained != protocol:
        raise UsageError(
            f"{folder} was trained under --protocol {trained}, not {protocol}: a run is evaluated "
            f"under its own protocol (train it again with --protocol {protocol})"
        )


def evaluate_folder(folder: Path, trust_pickle: bool = False, protocol: str | None = None) -> EvaluatedRun:
    """Recompute and rewrite a run's results.json; the codes and PR curve for its pictures.

    ``trust_pickle``: whether the run's data may be read from pickles (CIFAR-10); the caller's
    choice, never the folder's. ``protocol``: see :func:`check_protocol`.
    """
    folder = Path(folder)
    check_protocol(folder, protocol)
    dataset, args, query, database = encode_run(folder, trust_pickle)
    metrics = retrieval_results(dataset, query, database, args.topk)
    results_path = folder / RESULTS_FILE
    results = read_json(results_path) if results_path.is_file() else {}
    results.update(metrics)
    results.setdefault("algo", read_run_args(folder)["algo"])
    for key in ("env", "dataset", "bits", "protocol"):
        results.setdefault(key, getattr(args, key))
    write_json(results_path, results)
    curve = precision_recall_curve(query, dataset.query.labels, database, dataset.database.labels)
    return EvaluatedRun(folder, results, dataset, database, curve, query_codes=query)


def default_output(folders: Sequence[Path]) -> Path:
    """The run folder for one run; else ``evaluation/`` in the runs' common parent folder."""
    if len(folders) == 1:
        return Path(folders[0])
    parents = [str(Path(folder).resolve().parent) for folder in folders]
    return Path(os.path.commonpath(parents)) / "evaluation"


def write_report(runs: Sequence[EvaluatedRun], out: Path, embedding: str, max_points: int, seed: int) -> str:
    """Refresh each run's report.md and pictures, write the comparison into ``out``; return the table.

    Each run's codes are embedded once: its own ``codes.png`` and its panel of the comparison's
    share the points. The comparison's pictures are left out when ``out`` is the one run's folder
    (they would repeat the run's own).
    """
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if embedding != "none":
            shown = sample_items(len(run.database_codes), max_points, seed)
            run.xy = embed_codes(run.database_codes[shown], embedding, seed)
            run.xy_classes = first_classes(run.dataset.database.labels)[shown]
        write_run_report(
            run.folder, run.dataset, run.query_codes, run.database_codes, embedding, max_points, seed, run.xy
        )
    table = comparison_table(runs)
    with atomic_path(out / "evaluation.md") as temporary:
        temporary.write_text(table)
    if len(runs) == 1 and out.resolve() == runs[0].folder.resolve():
        return table
    plot_precision_recall({run_label(run): run.curve for run in runs}, out / COMPARISON_PR_FILE)
    if embedding != "none":
        panels = [
            CodesPanel(f"{run_label(run)}: mAP {run.results['map']:.3f}", run.xy, run.xy_classes)
            for run in runs
        ]
        datasets = {run.dataset.name for run in runs}
        name = datasets.pop() if len(datasets) == 1 else ""  # class names only when all share the data set
        plot_code_embeddings(
            panels, out / CODES_FILE, embedding, name, max(run.dataset.num_classes for run in runs)
        )
    return table


def written_files(runs: Sequence[EvaluatedRun], out: Path, embedding: str) -> list[Path]:
    """The files :func:`write_report` wrote, for the closing line."""
    files = [run.folder / REPORT_FILE for run in runs] + [out / "evaluation.md"]
    if not (len(runs) == 1 and out.resolve() == runs[0].folder.resolve()):
        files.append(out / COMPARISON_PR_FILE)
        if embedding != "none":
            files.append(out / CODES_FILE)
    return files


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m agents.evaluate``."""
    parser = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders written by agents.train")
    parser.add_argument("--out", type=Path, default=None, help="folder of the comparison (see above)")
    parser.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default="tsne",
        help="picture of the database codes (default: tsne)",
    )
    parser.add_argument("--max-points", type=int, default=2000, help="items drawn per run in the picture")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn items and of t-SNE")
    parser.add_argument(
        "--protocol",
        choices=SPLIT_PROTOCOLS,
        default=None,
        help="evaluate only runs trained under this split protocol (default: each run under its own; "
        "unseen-classes: retrieval among classes held out of training, hashing_gym.data)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read data files that only pickle can read (CIFAR-10 batches): unpickling runs any code a "
        "file carries, so give it only for files you trust; a run folder's args.json never grants it",
    )
    return parser


def check_output(out: Path) -> None:
    """Create ``--out`` if needed; UsageError if it is a file or cannot be created or written.

    Checked before any run is evaluated, so a bad ``--out`` rewrites no results.json.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder is not writable")


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate each run folder given on the command line, then compare them; return the exit status."""
    parsed = build_parser().parse_args(argv)
    if parsed.max_points < 2:
        print(f"error: --max-points must be >= 2, got {parsed.max_points}", file=sys.stderr)
        return 2
    if len(set(run.resolve() for run in parsed.folders)) != len(parsed.folders):
        print("error: a run folder is given twice", file=sys.stderr)
        return 2
    out = parsed.out or default_output(parsed.folders)
    runs = []
    try:
        if parsed.out is not None:
            check_output(out)
        for folder in parsed.folders:
            runs.append(evaluate_folder(folder, parsed.trust_pickle, parsed.protocol))
        label_runs(runs)
        table = write_report(runs, out, parsed.embedding, parsed.max_points, parsed.seed)
    # OSError: a run folder or --out that cannot be written (its message names the file).
    except (ValueError, OSError, DatasetOptionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table, end="")
    print("wrote: " + ", ".join(str(path) for path in written_files(runs, out, parsed.embedding)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
