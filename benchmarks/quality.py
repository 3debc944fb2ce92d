"""Retrieval quality: every RL agent and every baseline on the same data, split and bits.

Run: ``python -m benchmarks.quality [--datasets digits] [--bits 16,32,64] [--methods ...] [--jobs 1]``
(``--data-path`` for ``mnist``, ``cifar10`` or a ``features`` file such as CIFAR-10 GIST features;
``--datasets digits28`` builds ``benchmarks.datasets.digits28``, 10,782 real 28x28 digit images, into
``--out`` and trains on it as a ``features`` file: the scale test of issue #15, offline).

``--protocols standard,unseen-classes`` scores every method under both split protocols of
``hashing_gym.data``: the standard one (every split holds every class) and the held-out-class one
(train on 75% of the classes, retrieve among the others; Sablayrolles et al., ICASSP 2017, show that
the standard one rewards encoding a plain classifier's output, which ``mlp-code`` does).

Each method is one ``python -m agents.train`` run in a subprocess with its default recipe, written to
``--out/DATASET/BITS/METHOD`` (``--out/unseen-classes/DATASET/BITS/METHOD`` under that protocol; a
finished run, one whose results.json exists, is reused unless ``--fresh``). Prints one markdown table
of mAP@all by method x bits (the data set cell names a protocol other than the standard one), with
each run's wall time, the gap to ``mlp-code`` (the supervised reference) under the same protocol and
the machine, writes it to ``--out/quality.md``, and draws mAP against bits to ``--out/quality.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.datasets import write_digits28
from benchmarks.envs import machine
from hashing_gym.data import SPLIT_PROTOCOLS

# method name -> (agents.train algorithm, environment); None: a baseline that steps no environment.
METHODS: dict[str, tuple[str, str | None]] = {
    "dqn": ("dqn", "BinaryCodeTravel-v0"),
    "reinforce": ("reinforce", "RankListHash-v0"),
    "ppo": ("ppo", "RankListHash-v0"),
    "a2c": ("a2c", "RankListHash-v0"),
    "drlih": ("reinforce", "SequentialHashBits-v0"),
    "rppo": ("rppo", "SequentialHashBits-v0"),
    "lsh": ("lsh", None),
    "itq": ("itq", None),
    "sdh": ("sdh", None),
    "mlp-code": ("mlp-code", None),
}
REFERENCE = "mlp-code"
# data sets the benchmark builds itself (benchmarks.datasets), written to --out/NAME.npz
BUILT: dict[str, Callable[[Path], Path]] = {"digits28": write_digits28}


@dataclass
class Run:
    """One method on one data set at one code length, under one split protocol."""

    method: str
    dataset: str
    bits: int
    root: Path  # --out
    protocol: str = "standard"

    @property
    def folder(self) -> Path:
        """The run folder: ``--out[/PROTOCOL]/DATASET/BITS/METHOD`` (the standard protocol's without it)."""
        base = self.root if self.protocol == "standard" else self.root / self.protocol
        return base / self.dataset / str(self.bits) / self.method

    def command(self, data_path: str | None, seed: int) -> list[str]:
        """The ``agents.train`` command line of this run."""
        algo, env = METHODS[self.method]
        dataset = self.dataset
        if dataset in BUILT:  # built by the benchmark, read as a features file
            dataset, data_path = "features", str(self.root / f"{self.dataset}.npz")
        command = [
            sys.executable,
            "-m",
            "agents.train",
            algo,
            "--dataset",
            dataset,
            "--bits",
            str(self.bits),
        ]
        # --overwrite: an unfinished run (no results.json) is started again, not mixed with the old one
        command += ["--seed", str(seed), "--out", str(self.folder), "--overwrite"]
        command += ["--protocol", self.protocol]
        if env is not None:
            command += ["--env", env]
        if data_path is not None:
            command += ["--data-path", data_path]
        return command


def execute(run: Run, data_path: str | None, seed: int, fresh: bool) -> dict:
    """Train ``run`` (unless finished and not ``fresh``); its results plus ``wall_seconds``."""
    results_path = run.folder / "results.json"
    timing_path = run.folder / "wall_seconds.txt"
    if fresh or not results_path.is_file():
        run.folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(run.folder / "train.log", "w") as log:
            process = subprocess.run(run.command(data_path, seed), stdout=log, stderr=subprocess.STDOUT)
        if process.returncode != 0:
            raise RuntimeError(
                f"{run.method} {run.dataset} {run.bits} bits failed: see {run.folder / 'train.log'}"
            )
        timing_path.write_text(f"{time.perf_counter() - start:.1f}\n")
    results = json.loads(results_path.read_text())
    wall = float(timing_path.read_text()) if timing_path.is_file() else float("nan")
    return {**results, "wall_seconds": wall}


Key = tuple[str, str, str, int]  # (protocol, data set, method, bits)


def dataset_cell(protocol: str, dataset: str) -> str:
    """The data set as the table names it: with its protocol, unless the standard one."""
    return dataset if protocol == "standard" else f"{dataset} ({protocol})"


def quality_table(results: dict[Key, dict], methods: Sequence[str], bits: Sequence[int]) -> str:
    """Markdown: one row per (protocol, data set, method); per bits the mAP, gap to the reference, wall time.

    The gap is to ``mlp-code`` under the same protocol and data set.
    """
    header = ["dataset", "method", "env"]
    for b in bits:
        header += [f"mAP {b}b", f"gap {b}b", f"wall {b}b"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = sorted({(SPLIT_PROTOCOLS.index(p), p, d) for p, d, _, _ in results})
    for _, protocol, dataset in groups:
        for method in methods:
            env = METHODS[method][1] or "-"
            cells = [dataset_cell(protocol, dataset), method, env]
            for b in bits:
                run = results.get((protocol, dataset, method, b))
                reference = results.get((protocol, dataset, REFERENCE, b))
                if run is None:
                    cells += ["-", "-", "-"]
                    continue
                gap = "-" if reference is None else f"{run['map'] - reference['map']:+.3f}"
                cells += [f"{run['map']:.3f}", gap, f"{run['wall_seconds']:.0f} s"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_quality(results: dict[Key, dict], methods: Sequence[str], path: Path) -> None:
    """Draw mAP against bits, one line per method (one panel per data set and protocol)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(SPLIT_PROTOCOLS.index(p), p, d) for p, d, _, _ in results})
    figure, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for axis, (_, protocol, dataset) in zip(axes[0], groups, strict=True):
        for method in methods:
            mine = (protocol, dataset, method)
            points = sorted((b, r["map"]) for (p, d, m, b), r in results.items() if (p, d, m) == mine)
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=method)
        title = f"{dataset_cell(protocol, dataset)}: mAP@all"
        axis.set(title=title, xlabel="bits", ylabel="mAP", ylim=(0, 1.02))
        axis.legend(fontsize="small")
    figure.tight_layout()
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(path)


def comma_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (refusing unknown methods and bad bits in one line)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=comma_list, default=["digits"])
    parser.add_argument("--bits", type=comma_list, default=["16", "32", "64"])
    parser.add_argument("--methods", type=comma_list, default=list(METHODS))
    parser.add_argument("--data-path", default=None, help="folder or file of mnist, cifar10 or features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (each on one thread)")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    parser.add_argument(
        "--protocols",
        "--protocol",
        type=comma_list,
        default=["standard"],
        help=f"split protocols, comma-separated: {', '.join(SPLIT_PROTOCOLS)} (hashing_gym.data)",
    )
    parsed = parser.parse_args(argv)
    unknown = [method for method in parsed.methods if method not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    unknown = [protocol for protocol in parsed.protocols if protocol not in SPLIT_PROTOCOLS]
    if unknown or not parsed.protocols:
        parser.error(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(SPLIT_PROTOCOLS)}")
    if not all(b.isdigit() and int(b) > 0 for b in parsed.bits):
        parser.error(f"--bits must be positive integers, got {','.join(parsed.bits)}")
    if parsed.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {parsed.jobs}")
    parsed.bits = [int(b) for b in parsed.bits]
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Train what is missing, then print and write the table and the picture."""
    parsed = parse_arguments(argv)
    runs = [
        Run(method, dataset, b, parsed.out, protocol)
        for protocol in parsed.protocols
        for dataset in parsed.datasets
        for b in parsed.bits
        for method in parsed.methods
    ]
    parsed.out.mkdir(parents=True, exist_ok=True)
    for dataset in parsed.datasets:
        built = parsed.out / f"{dataset}.npz"
        if dataset in BUILT and not built.is_file():
            BUILT[dataset](built)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the trainers use one torch thread; keep BLAS there too
    with ThreadPoolExecutor(parsed.jobs) as pool:
        finished = list(pool.map(lambda run: execute(run, parsed.data_path, parsed.seed, parsed.fresh), runs))
    results = {
        (run.protocol, run.dataset, run.method, run.bits): result
        for run, result in zip(runs, finished, strict=True)
    }
    table = quality_table(results, parsed.methods, parsed.bits)
    command = "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    report = f"{table}\nmachine: {machine()}; seed {parsed.seed}; command: `{command.strip()}`\n"
    parsed.out.mkdir(parents=True, exist_ok=True)
    (parsed.out / "quality.md").write_text(report)
    plot_quality(results, parsed.methods, parsed.out / "quality.png")
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
