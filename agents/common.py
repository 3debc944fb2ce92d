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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from hashing_gym.codes import bit_correlation, code_balance
from hashing_gym.data import HashingDataset, load_dataset
from hashing_gym.device import device_name
from hashing_gym.ranking import evaluate_retrieval  # also keeps numba off torch's threads

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
    resume: str | None = field(
        default=None,
        metadata={"help": "continue the interrupted run in this folder to its total steps"},
    )
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (small networks train fastest on one)"}
    )
    dataset_options: str = field(
        default="",
        metadata={"help": "extra load_dataset options, e.g. n_per_class=5100,dim=512,query_per_class=100"},
    )


def parse_options(text: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (ints, floats and true/false parsed)."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--dataset-options wants key=value pairs, got {item!r}")
        parsed: Any = value.strip()
        for cast in (int, float):
            try:
                parsed = cast(parsed)
                break
            except ValueError:
                continue
        if parsed in ("true", "false"):
            parsed = parsed == "true"
        options[key.strip()] = parsed
    return options


def load_run_dataset(args: CommonArgs) -> HashingDataset:
    """The data set a run trains and evaluates on (``--dataset-options`` passed to ``load_dataset``)."""
    options: dict[str, Any] = {"seed": args.seed, **parse_options(args.dataset_options)}
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
    """Retrieval metrics of query vs database codes, plus two statistics of the database codes.

    mAP@all (stable and tie-aware), mAP@k and precision@k at ``topk``, precision within Hamming
    radius 2, and ``code_balance`` / ``bit_correlation`` (``hashing_gym.codes``) of the database.
    """
    metrics = evaluate_retrieval(
        query_codes, dataset.query.labels, database_codes, dataset.database.labels, topk=topk, radius=2
    )
    return {
        "map": metrics["map"],
        "map_tie_aware": metrics["map_tie_aware"],
        "map_at_k": metrics["map_at_k"],
        "topk": int(metrics["topk"]),
        "precision_radius2": metrics["precision_radius2"],
        "precision_at_k": metrics["precision_at_k"],
        "code_balance": code_balance(database_codes),
        "bit_correlation": bit_correlation(database_codes),
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


CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_STATE = "state.json"


def read_run_args(folder: str | Path) -> dict[str, Any]:
    """The recorded arguments of a run folder (``args.json``, with ``algo``)."""
    path = Path(folder) / ARGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no run: {ARGS_FILE} is missing")
    return json.loads(path.read_text())


def latest_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The newest complete checkpoint of a run folder (its state.json), or None."""
    state = Path(folder) / CHECKPOINT_DIR / CHECKPOINT_STATE
    if not state.is_file():
        return None
    return json.loads(state.read_text())


class SB3Checkpoint:
    """Atomic checkpoints of a stable-baselines3 model (and its replay buffer, if it has one).

    Each checkpoint writes ``step_{n}.zip`` (and ``step_{n}_replay.pkl``) into
    ``DIR/checkpoints``, then ``state.json`` naming them (through a rename, so a reader sees the
    old or the new checkpoint, never half of one), then deletes the previous checkpoint's files.
    A run killed at any moment resumes from the last complete checkpoint.
    """

    def __init__(self, folder: Path, elapsed: float = 0.0) -> None:
        self.directory = Path(folder) / CHECKPOINT_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.elapsed = elapsed  # training seconds before this process (resumed runs)

    def save(self, model: Any, train_seconds: float) -> None:
        """Write a checkpoint of ``model`` at its current ``num_timesteps``."""
        previous = latest_checkpoint(self.directory.parent)
        step = int(model.num_timesteps)
        model_path = self.directory / f"step_{step}.zip"
        model.save(model_path, exclude=["env"])
        state: dict[str, Any] = {
            "num_timesteps": step,
            "train_seconds": self.elapsed + train_seconds,
            "model": model_path.name,
            "replay_buffer": None,
        }
        if getattr(model, "replay_buffer", None) is not None:
            replay_path = self.directory / f"step_{step}_replay.pkl"
            model.save_replay_buffer(replay_path)
            state["replay_buffer"] = replay_path.name
        write_json_atomic(self.directory / CHECKPOINT_STATE, state)
        if previous and previous["num_timesteps"] != step:
            for name in (previous["model"], previous["replay_buffer"]):
                if name:
                    (self.directory / name).unlink(missing_ok=True)


class CheckpointEvery(BaseCallback):
    """Every ``every`` steps, write an atomic checkpoint (model and replay buffer)."""

    def __init__(self, checkpoint: SB3Checkpoint, every: int, start: float) -> None:
        super().__init__()
        self.checkpoint, self.every, self.start = checkpoint, every, start
        self._next = every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.checkpoint.save(self.model, time.perf_counter() - self.start)
        return True


def evaluate_encoder(
    encode: Callable[[Any, np.ndarray, int], np.ndarray],
    model: Any,
    dataset: HashingDataset,
    bits: int,
    topk: int,
) -> dict[str, float]:
    """Encode the query and database splits with ``encode(model, features, bits)`` and rank them."""
    query = encode(model, dataset.query.features, bits)
    database = encode(model, dataset.database.features, bits)
    return retrieval_results(dataset, query, database, topk)


class RetrievalEvalCallback(BaseCallback):
    """Every ``every`` steps: ``evaluate(model)``, logged as ``eval/map`` and friends to TensorBoard."""

    def __init__(self, evaluate: Callable[[Any], dict[str, float]], every: int) -> None:
        super().__init__()
        self.evaluate, self.every = evaluate, every
        self._next = every

    def _on_training_start(self) -> None:
        if self.every:
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps >= self._next:
            self._next += self.every
            metrics = self.evaluate(self.model)
            for key in ("map", "map_tie_aware", "precision_radius2"):
                self.logger.record(f"eval/{key}", metrics[key])
        return True


def save_sb3_model(model: Any, path: Path) -> None:
    """Save a stable-baselines3 model atomically: to a temporary name, then rename over ``path``."""
    temporary = path.with_name(path.stem + ".tmp.zip")
    model.save(temporary, exclude=["env"])
    temporary.replace(path)


def load_sb3_checkpoint(model_class: Any, folder: Path, env: Any, device: str) -> Any:
    """The newest checkpoint of ``folder`` (model, and replay buffer if it has one), to resume from."""
    state = latest_checkpoint(folder)
    if state is None:
        raise UsageError(f"--resume {folder}: the run has no checkpoint to continue from")
    directory = Path(folder) / CHECKPOINT_DIR
    model = model_class.load(directory / state["model"], env=env, device=device)
    if state["replay_buffer"]:
        model.load_replay_buffer(directory / state["replay_buffer"])
    return model


def train_sb3(
    model: Any,
    algo: str,
    args: CommonArgs,
    folder: Path,
    dataset: HashingDataset,
    timesteps: int,
    encode: Callable[[Any, np.ndarray, int], np.ndarray],
    extra_callbacks: Sequence[BaseCallback] = (),
    model_file: str = "model.zip",
) -> dict[str, Any]:
    """Train a stable-baselines3 model to ``timesteps`` and write its run folder; return the results.

    Atomic checkpoints every ``args.checkpoint_every`` steps (and on Ctrl-C, before re-raising),
    retrieval evaluation to TensorBoard every ``args.eval_every`` steps, then the model file, the
    codes of the query and database splits from ``encode(model, features, bits)``, and results.json.
    A resumed run continues the model's step count and adds the recorded training time.
    """
    # A fresh run in a reused folder must not count the old run's training time.
    elapsed = (latest_checkpoint(folder) or {}).get("train_seconds", 0.0) if args.resume else 0.0
    checkpoint = SB3Checkpoint(folder, elapsed=elapsed)

    def evaluate(trained: Any) -> dict[str, float]:
        return evaluate_encoder(encode, trained, dataset, args.bits, args.topk)

    start = time.perf_counter()
    callbacks = CallbackList(
        [
            *extra_callbacks,
            CheckpointEvery(checkpoint, args.checkpoint_every, start),
            RetrievalEvalCallback(evaluate, args.eval_every),
        ]
    )
    try:
        model.learn(
            total_timesteps=timesteps - model.num_timesteps,
            callback=callbacks,
            progress_bar=True,
            tb_log_name=algo,
            reset_num_timesteps=not args.resume,
        )
    except KeyboardInterrupt:
        checkpoint.save(model, time.perf_counter() - start)  # Ctrl-C loses nothing
        raise
    train_seconds = checkpoint.elapsed + time.perf_counter() - start
    save_sb3_model(model, folder / model_file)
    results = results_record(
        algo, args, evaluate(model), train_seconds, model.num_timesteps, model_file=model_file
    )
    write_json_atomic(folder / RESULTS_FILE, results)
    return results


def set_threads(threads: int) -> None:
    """Set torch's CPU thread count; small MLPs lose more to thread sync than they gain."""
    import torch  # noqa: PLC0415

    if threads <= 0:
        raise UsageError(f"--threads must be positive, got {threads}")
    torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """``--device`` as a torch device name (``auto``: CUDA when torch sees it, else CPU).

    Raises:
        UsageError: if ``device`` is not auto, cpu, cuda, cuda:N, or names a GPU torch cannot see.
    """
    try:
        return device_name(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None
