"""What every trainer shares: command-line arguments, the run folder, results.json.

A trainer module (``agents.dqn``, ...) defines a dataclass ``Args`` that extends ``CommonArgs``
and a ``main(args) -> dict`` that trains, encodes the query and database splits, and returns the
results written to ``DIR/results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hashing_gym.data import HashingDataset, load_dataset
from hashing_gym.ranking import evaluate_retrieval

RESULTS_FILE = "results.json"
ARGS_FILE = "args.json"


class UsageError(ValueError):
    """A bad command-line argument: the CLI prints its message on one line and exits 2."""


@dataclass
class CommonArgs:
    """Arguments every algorithm takes (``python -m agents.train ALGO --help`` lists them)."""

    env: str = field(default="BinaryCodeTravel-v0", metadata={"help": "environment id"})
    dataset: str = field(default="digits", metadata={"help": "data set name (hashing_gym.data.DATASETS)"})
    data_path: str | None = field(
        default=None, metadata={"help": "folder or file that the mnist, cifar10 or features data sets read"}
    )
    bits: int = field(default=16, metadata={"help": "code length"})
    timesteps: int | None = field(
        default=None,
        metadata={"help": "environment steps; default: a per-item budget times the train split's size"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the run (environments, network, exploration)"})
    device: str = field(default="auto", metadata={"help": "torch device: auto, cpu or cuda"})
    out: str | None = field(
        default=None, metadata={"help": "run folder; default runs/{env}__{algo}__{seed}__{time}"}
    )
    topk: int = field(default=1000, metadata={"help": "k of mAP@k in results.json"})
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (small networks train fastest on one)"}
    )


def load_run_dataset(args: CommonArgs) -> HashingDataset:
    """The data set a run trains and evaluates on."""
    options: dict[str, Any] = {"seed": args.seed}
    if args.data_path is not None:
        options["path"] = args.data_path
    return load_dataset(args.dataset, **options)


def run_folder(args: CommonArgs, algo: str) -> Path:
    """The run folder (created): ``args.out``, or CleanRL's ``runs/{env}__{algo}__{seed}__{time}``."""
    folder = (
        Path(args.out) if args.out else Path("runs") / f"{args.env}__{algo}__{args.seed}__{int(time.time())}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(handle.name, path)


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import gymnasium  # noqa: PLC0415
    import stable_baselines3  # noqa: PLC0415
    import torch  # noqa: PLC0415

    import hashing_gym  # noqa: PLC0415

    return {
        "hashing_gym": hashing_gym.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
    }


def retrieval_results(
    dataset: HashingDataset, query_codes: np.ndarray, database_codes: np.ndarray, topk: int
) -> dict[str, float]:
    """mAP@all (stable and tie-aware), mAP@k and precision within radius 2 of query vs database."""
    metrics = evaluate_retrieval(
        query_codes, dataset.query.labels, database_codes, dataset.database.labels, topk=topk, radius=2
    )
    return {
        "map": metrics["map"],
        "map_tie_aware": metrics["map_tie_aware"],
        "map_at_k": metrics["map_at_k"],
        "topk": int(metrics["topk"]),
        "precision_radius2": metrics["precision_radius2"],
    }


def results_record(
    algo: str,
    args: CommonArgs,
    metrics: dict[str, float],
    train_seconds: float,
    env_steps: int,
    **extra: Any,
) -> dict[str, Any]:
    """The results.json record (field names fixed by DESIGN.md)."""
    return {
        "algo": algo,
        "env": args.env,
        "dataset": args.dataset,
        "bits": args.bits,
        "seed": args.seed,
        **metrics,
        "train_seconds": round(train_seconds, 3),
        "env_steps": int(env_steps),
        "versions": versions(),
        **extra,
    }


def save_args(folder: Path, args: CommonArgs, algo: str) -> None:
    """Record the run's arguments, so ``agents.evaluate`` and ``--resume`` can rebuild it."""
    write_json_atomic(folder / ARGS_FILE, {"algo": algo, **dataclasses.asdict(args)})


def set_threads(threads: int) -> None:
    """Set torch's CPU thread count; small MLPs lose more to thread sync than they gain."""
    import torch  # noqa: PLC0415

    if threads <= 0:
        raise UsageError(f"--threads must be positive, got {threads}")
    torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when torch sees it, else CPU."""
    if device != "auto":
        return device
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"
