"""What every trainer shares: command-line arguments and their checks, the run folder, results.json.

Every trainer opens its run folder through :func:`open_run` (after checking every argument): a
non-empty ``--out`` is refused unless ``--overwrite``, and ``DIR/.lock`` (``filelock``) keeps a
second process out while the run trains (:func:`releases_run_lock` frees it when the trainer ends).

Also the shared plumbing: the hidden-size parser (:func:`parse_hidden`), the argument validator
(:func:`check_common_args`), the run's first line (:func:`announce_run`), TensorBoard logging
(:class:`TrainingLog`, the same tags for every trainer; SB3's logger goes into it), the device
(:func:`resolve_device`) and the stable-baselines3 training loop (:func:`train_sb3`); checkpoints
and every file write are ``agents.checkpoint``'s.

A trainer module (``agents.dqn``, ...) defines a dataclass ``Args`` that extends ``CommonArgs``
and a ``main(args) -> dict`` that trains, encodes the query and database splits, and returns the
results written to ``DIR/results.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import KVWriter, Logger

from agents.checkpoint import CheckpointError, Checkpoints, read_json, write_json
from hashing_gym.codes import bit_correlation, code_balance
from hashing_gym.data import SPLIT_PROTOCOLS, HashingDataset, load_dataset
from hashing_gym.device import device_name
from hashing_gym.ranking import evaluate_retrieval

RESULTS_FILE = "results.json"
ARGS_FILE = "args.json"
SB3_MODEL_FILE = "model.pt"  # the stable-baselines3 trainers' final model (agents.sb3_state.save_policy)
LOCK_FILE = ".lock"
# What --overwrite deletes from a run folder (and nothing else): the files a trainer writes.
RUN_FILES: tuple[str, ...] = (
    ARGS_FILE,
    RESULTS_FILE,
    "checkpoints",
    "tb",
    "model.pt",
    "model.npz",  # a baseline's arrays (agents.baselines)
    "model.json",  # ... and its kind and scalars
    "model.zip",  # earlier versions' SB3 model and baseline model: --overwrite deletes them too
    "model.pkl",
    "evaluation.md",
    "report.md",  # agents.report: the run's page and its pictures
    "training_curves.png",
    "pr_curve.png",
    "codes.png",
    "pr_curves.png",  # earlier versions' pictures of a single run
    "codes_tsne.png",
    "codes_pca.png",
)


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
    device: str = field(
        default="auto",
        metadata={"help": "torch device: auto, cpu or cuda[:N] (dqn, reinforce: on CUDA, their GPU trainer)"},
    )
    out: str | None = field(
        default=None, metadata={"help": "run folder; default runs/{env}__{algo}__{seed}__{time}"}
    )
    topk: int = field(default=1000, metadata={"help": "k of mAP@k in results.json"})
    resume: str | None = field(
        default=None,
        metadata={"help": "continue the interrupted run in this folder to its total steps"},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "empty a non-empty --out of its run files first (else it is refused)"},
    )
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (small networks train fastest on one)"}
    )
    dataset_options: str = field(
        default="",
        metadata={"help": "extra load_dataset options, e.g. n_per_class=5100,dim=512,query_per_class=100"},
    )
    protocol: str = field(
        default="standard",
        metadata={
            "help": "standard (every split holds every class) or unseen-classes (train on three quarters "
            "of the classes, retrieve among the others; hashing_gym.data)"
        },
    )
    trust_pickle: bool = field(
        default=False,
        metadata={
            "help": "read data files that only pickle can read (the CIFAR-10 batches): unpickling runs any "
            "code a file carries, so give it only for files you trust; never taken from a run's args.json"
        },
    )


TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def _boolean_options() -> set[str]:
    """The keyword arguments of the data set loaders that are booleans (``multi_label``, ...)."""
    import inspect

    from hashing_gym import data

    names: set[str] = set()
    for name in dir(data):
        function = getattr(data, name)
        if not callable(function) or getattr(function, "__module__", None) != data.__name__:
            continue
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in parameters if p.annotation in (bool, "bool") or isinstance(p.default, bool)}
    return names


def parse_options(text: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (ints and floats parsed).

    A boolean option of the loaders (``multi_label``, ``standardize``, ...) takes true/false, 1/0
    or yes/no (any case) and nothing else; other values are ints, floats or strings.
    """
    booleans = _boolean_options()
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--dataset-options wants key=value pairs, got {item!r}")
        parsed: Any = value.strip()
        if key in booleans:
            word = parsed.lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise UsageError(f"--dataset-options {key} must be true/false, 1/0 or yes/no, got {parsed!r}")
            options[key] = word in TRUE_WORDS
            continue
        for cast in (int, float):
            try:
                parsed = cast(parsed)
                break
            except ValueError:
                continue
        if isinstance(parsed, str) and parsed.lower() in ("true", "false"):
            parsed = parsed.lower() == "true"
        options[key] = parsed
    return options


def load_run_dataset(args: CommonArgs) -> HashingDataset:
    """The data set a run trains and evaluates on (``--dataset-options`` passed to ``load_dataset``).

    ``--trust-pickle`` becomes ``trust_pickle``; ``--dataset-options`` may not set it (a run's recorded
    options must never grant trust).
    """
    options: dict[str, Any] = {"seed": args.seed, **parse_options(args.dataset_options)}
    if "trust_pickle" in options:  # trust is given per command (--trust-pickle), never in a recorded string
        raise UsageError("--dataset-options cannot set trust_pickle; give --trust-pickle on the command line")
    if "split_protocol" in options:
        raise UsageError("--dataset-options cannot set split_protocol; give --protocol")
    if args.data_path is not None:
        options["path"] = args.data_path
    protocol = getattr(args, "protocol", "standard")
    return load_dataset(args.dataset, trust_pickle=args.trust_pickle, split_protocol=protocol, **options)


def run_folder(args: CommonArgs, algo: str) -> Path:
    """The run folder's path: ``args.out``, or CleanRL's ``runs/{env}__{algo}__{seed}__{time}``."""
    return (
        Path(args.out) if args.out else Path("runs") / f"{args.env}__{algo}__{args.seed}__{int(time.time())}"
    )


# run folder -> the lock this process holds on it (released by `releases_run_lock`, or at exit)
_LOCKS: dict[Path, Any] = {}


def _run_entries(folder: Path) -> list[str]:
    """The names in ``folder`` other than its lock file (what makes it non-empty)."""
    return sorted(name for name in os.listdir(folder) if name != LOCK_FILE)


def lock_run(folder: Path) -> None:
    """Hold ``DIR/.lock`` (``filelock``) for this process; UsageError at once if another holds it.

    The lock file records the holder's pid, which the refusal names.
    """
    from filelock import FileLock, Timeout

    key = folder.resolve()
    if key in _LOCKS:
        return
    path = folder / LOCK_FILE
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = path.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise UsageError(f"{folder} is in use by another run (pid {holder})") from None
    except OSError as error:
        raise UsageError(f"{folder}: cannot lock the run folder ({error.strerror or error})") from None
    with open(path, "r+") as handle:
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
    _LOCKS[key] = lock


def release_run_locks() -> None:
    """Release every run folder lock this process holds."""
    while _LOCKS:
        _, lock = _LOCKS.popitem()
        lock.release()


def releases_run_lock(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a trainer's entry point: the run folder locks it took are released when it ends."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            release_run_locks()

    return wrapper


def _clear_run_files(folder: Path) -> None:
    """Delete the run files (:data:`RUN_FILES`) of ``folder``, nothing else and nothing outside it."""
    for name in RUN_FILES:
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def _check_empty(folder: Path, overwrite: bool) -> None:
    entries = _run_entries(folder)
    if entries and not overwrite:
        raise UsageError(
            f"--out {folder} is not empty: continue its run with --resume {folder}, "
            "or replace it with --overwrite"
        )


def open_run(args: CommonArgs, algo: str) -> Path:
    """The run folder of a trainer, locked and ready to write; call it after every argument is checked.

    ``--resume DIR``: ``DIR``, locked. Otherwise ``--out`` (or a fresh ``runs/...`` folder), which
    must be empty unless ``--overwrite`` (its run files are deleted first); the arguments are
    recorded in ``args.json``. A refused folder is left as it was (one this call created is removed).

    Raises:
        UsageError: ``--out`` is not a folder, not empty (without ``--overwrite``), not writable,
            or in use by another process.
    """
    if args.resume:
        folder = Path(args.resume)
        lock_run(folder)
        # A process killed inside an atomic write left its temporary file (``.NAME.PID.tmp``, see
        # hashing_gym.files.atomic_path); under the lock no other writer can own one.
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return folder
    folder = run_folder(args, algo)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is not a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {folder}: cannot create the folder ({error.strerror or error})") from None
    try:
        _check_empty(folder, args.overwrite)  # before the lock: a refused command writes nothing
        lock_run(folder)
        _check_empty(folder, args.overwrite)  # again: another process may have written it meanwhile
        if args.overwrite:
            _clear_run_files(folder)
        save_args(folder, args, algo)
    except BaseException:
        if created:
            release_run_locks()
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def announce_run(
    folder: Path, algo: str, args: CommonArgs, dataset: HashingDataset, device: str, budget: str
) -> None:
    """The run's first line: the run folder, data set, bits, device and budget.

    Every trainer prints it once the folder is open and the budget known, e.g. ``dqn-torch:
    training on digits (1497 train items) at 16 bits on cpu, 400 env steps; writing runs/x``
    (``resuming`` instead of ``writing`` with ``--resume``).
    """
    action = "resuming" if args.resume else "writing"
    print(
        f"{algo}: training on {dataset.name} ({dataset.train.n} train items) at {args.bits} bits "
        f"on {device}, {budget}; {action} {folder}",
        flush=True,
    )


def next_steps(folder: Path | str) -> str:
    """The commands to run after a run: evaluate it, look at its TensorBoard logs (when it has any)."""
    line = f"next: python -m agents.evaluate {folder}"
    tb = Path(folder) / "tb"
    return f"{line}  |  tensorboard --logdir {tb}" if tb.is_dir() else line


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import gymnasium
    import stable_baselines3
    import torch

    import hashing_gym

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
    import torch

    threads = torch.get_num_threads()
    metrics = evaluate_retrieval(
        query_codes, dataset.query.labels, database_codes, dataset.database.labels, topk=topk, radius=2
    )
    # The ranking kernels' first parallel numba call starts an OpenMP pool that can raise torch's
    # thread count (a shared libgomp); a trainer evaluating mid-run keeps its --threads.
    torch.set_num_threads(threads)
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
        "protocol": getattr(args, "protocol", "standard"),
        **metrics,
        "train_seconds": round(train_seconds, 3),
        "env_steps": int(env_steps),
        "versions": versions(),
        **extra,
    }


def save_args(folder: Path, args: CommonArgs, algo: str) -> None:
    """Record the run's arguments, so ``agents.evaluate`` and ``--resume`` can rebuild it."""
    write_json(folder / ARGS_FILE, {"algo": algo, **dataclasses.asdict(args)})


def read_run_args(folder: str | Path) -> dict[str, Any]:
    """The recorded arguments of a run folder (``args.json``, with ``algo``)."""
    path = Path(folder) / ARGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no run: {ARGS_FILE} is missing")
    return read_json(path)


class InterruptRequest:
    """While active, Ctrl-C (SIGINT) only sets ``requested``; a second Ctrl-C interrupts at once.

    Every trainer honours the request where its state is consistent: the SB3 trainers at the next
    rollout start (:class:`CheckpointEvery`), the torch trainers between updates. They write a
    checkpoint there and raise KeyboardInterrupt, so ``--resume`` continues exactly.
    Outside the main thread (where handlers cannot be installed) Ctrl-C interrupts as usual, and a
    process started with SIGINT ignored (``nohup cmd &``, a background job of a script, some job
    schedulers) keeps ignoring it, as Python itself does: no handler is installed then.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> InterruptRequest:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self._previous is not None:  # a second Ctrl-C: no waiting for the rollout to end
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class CheckpointEvery(BaseCallback):
    """Checkpoints of an SB3 model (``agents.sb3_state``): every ``every`` steps, at the end, on Ctrl-C.

    A checkpoint is written at the first rollout start at or after each multiple of ``every``
    steps: there SB3's loop holds no half-done step or update, so a resumed run continues exactly.
    Also at the end of training (a run killed while it evaluates loses no training) and, when
    ``interrupt`` was requested (Ctrl-C), at the next rollout start, which then raises
    KeyboardInterrupt. ``elapsed`` (training seconds of earlier processes) plus the seconds since
    ``start`` is what the checkpoint records; ``stateful``: callbacks whose state it keeps;
    ``saved_step``: the step of the checkpoint this process resumed from (not written again).
    """

    def __init__(
        self,
        checkpoints: Checkpoints,
        every: int,
        start: float,
        elapsed: float = 0.0,
        stateful: Sequence[BaseCallback] = (),
        saved_step: int | None = None,
        interrupt: InterruptRequest | None = None,
    ) -> None:
        super().__init__()
        self.checkpoints, self.every, self.start, self.elapsed = checkpoints, every, start, elapsed
        self.stateful, self.saved_step, self.interrupt = list(stateful), saved_step, interrupt
        self._next = every

    def _next_multiple(self) -> int:
        return (self.num_timesteps // self.every + 1) * self.every if self.every else 0

    def _on_training_start(self) -> None:
        self._next = self._next_multiple()

    def _on_rollout_start(self) -> None:
        if self.interrupt is not None and self.interrupt.requested:
            self.save()
            raise KeyboardInterrupt
        if self.every and self.num_timesteps >= self._next:
            self.save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.saved_step != self.num_timesteps:
            self.save()

    def save(self) -> None:
        """Write a checkpoint of the model's state now (call it between rollouts)."""
        from agents.sb3_state import capture, replay_arrays

        buffer = getattr(self.model, "replay_buffer", None)
        self.checkpoints.save_sb3(
            capture(self.model, self.stateful),
            replay_arrays(buffer) if buffer is not None else None,
            self.model.num_timesteps,
            self.elapsed + time.perf_counter() - self.start,
        )
        self.saved_step = self.num_timesteps
        self._next = self._next_multiple()


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
    """Every ``every`` steps (and at step 0 of a fresh run): ``evaluate(model)`` into ``log``.

    The metrics are written at the step they were measured (``eval/map`` and friends), not at
    SB3's next dump.
    """

    def __init__(self, evaluate: Callable[[Any], dict[str, float]], every: int, log: TrainingLog) -> None:
        super().__init__()
        self.evaluate, self.every, self.log = evaluate, every, log
        self._next = every

    def _on_training_start(self) -> None:
        if self.every:
            self._next = (self.num_timesteps // self.every + 1) * self.every
            if self.num_timesteps == 0:  # the untrained policy: where the mAP curve starts
                self._evaluate()

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps >= self._next:
            self._next += self.every
            self._evaluate()
        return True

    def _evaluate(self) -> None:
        with self.log.paused():
            metrics = self.evaluate(self.model)
        self.log.eval(metrics, self.num_timesteps)


def load_sb3_checkpoint(
    model: Any, folder: Path, trainer: str, callbacks: Sequence[BaseCallback] = ()
) -> Any:
    """Give ``model`` (built as a fresh run builds it) the state of ``folder``'s newest checkpoint.

    Returns the :class:`agents.checkpoint.Checkpoint` it continues from.

    Raises:
        CheckpointError: no checkpoint, one by another trainer, in an old pickle-based format,
            unreadable, or not of this run (another env, network or algorithm).
    """
    from agents.sb3_state import restore

    checkpoints = Checkpoints(folder, trainer)
    checkpoint, state, replay = checkpoints.load_sb3()
    try:
        restore(model, state, replay, callbacks)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{checkpoints.directory / checkpoint.model} is not a checkpoint of this run ({reason})"
        ) from None
    return checkpoint


def load_sb3_model(
    folder: str | Path,
    trainer: str,
    args_class: type,
    build: Callable[[Any, Any], Any],
    device: str = "auto",
) -> Any:
    """The final model of an SB3 trainer's run, rebuilt from ``args.json`` and given ``model.pt``.

    ``build(args, env)`` makes the model as the trainer does (its ``make_model``); ``env`` is a
    stand-in vec env with the saved spaces (``agents.sb3_state.stand_in_env``), so no data set
    is read. The model is for inference; ``model.set_env(env)`` before training it further.

    Raises:
        CheckpointError: ``model.pt`` missing, in an old format (``model.zip``), by another trainer,
            or not the model that ``args.json`` describes.
    """
    from agents.sb3_state import load_policy, stand_in_env

    folder = Path(folder)
    recorded = read_run_args(folder)
    recorded.pop("algo", None)
    try:
        args = dataclasses.replace(args_class(**recorded), device=device, resume=None)
    except TypeError as error:
        raise CheckpointError(f"{folder / ARGS_FILE} does not hold {trainer}'s arguments ({error})") from None

    def make(observation_space: Any, action_space: Any) -> Any:
        count = getattr(args, "num_envs", 1)  # as in training: SB3 sizes buffers and batches by it
        return build(args, stand_in_env(observation_space, action_space, count))

    return load_policy(folder / SB3_MODEL_FILE, trainer, make)


def train_sb3(
    model: Any,
    algo: str,
    args: CommonArgs,
    folder: Path,
    dataset: HashingDataset,
    timesteps: int,
    encode: Callable[[Any, np.ndarray, int], np.ndarray],
    extra_callbacks: Sequence[BaseCallback] = (),
) -> dict[str, Any]:
    """Train a stable-baselines3 model to ``timesteps`` and write its run folder; return the results.

    ``model`` is built as a fresh run builds it; with ``--resume`` it first gets the state of the
    run's newest checkpoint (:func:`load_sb3_checkpoint`). Checkpoints every
    ``args.checkpoint_every`` steps, at the end and on Ctrl-C (:class:`CheckpointEvery`);
    TensorBoard scalars in ``DIR/tb/{algo}`` (:class:`TrainingLog`: SB3's own scalars, the common
    training tags from the first rollout on, retrieval evaluations at step 0 and every
    ``args.eval_every`` steps); then ``model.pt``, the codes of the query and database splits from
    ``encode(model, features, bits)``, results.json and report.md (``agents.report.finish_run``).
    A resumed run continues the step count and adds the recorded training time.
    """
    from agents.report import finish_run
    from agents.sb3_state import save_policy

    checkpoints = Checkpoints(folder, algo)
    elapsed, saved_step = 0.0, None
    if args.resume:
        checkpoint = load_sb3_checkpoint(model, folder, algo, extra_callbacks)
        elapsed, saved_step = checkpoint.train_seconds, checkpoint.num_timesteps
    announce_run(folder, algo, args, dataset, str(model.device), f"{timesteps:,} env steps (whole rollouts)")

    def evaluate(trained: Any) -> dict[str, float]:
        return evaluate_encoder(encode, trained, dataset, args.bits, args.topk)

    # LOGGING: SB3's logger writes into the run's TensorBoard folder (DIR/tb/ALGO), beside the
    # common scalars (TrainingScalars) and the evaluations.
    log = TrainingLog(folder, algo, timesteps, start_step=model.num_timesteps)
    model.set_logger(Sb3RunLogger(log))
    start = time.perf_counter()
    try:
        with InterruptRequest() as interrupt:
            saver = CheckpointEvery(
                checkpoints, args.checkpoint_every, start, elapsed, extra_callbacks, saved_step, interrupt
            )
            model.learn(
                total_timesteps=timesteps - model.num_timesteps,
                callback=CallbackList(
                    [
                        *extra_callbacks,
                        saver,
                        TrainingScalars(log),
                        RetrievalEvalCallback(evaluate, args.eval_every, log),
                    ]
                ),
                progress_bar=True,
                reset_num_timesteps=not args.resume,
            )
    finally:
        log.close()
    if interrupt.requested:  # Ctrl-C during the last rollout: the end's checkpoint holds it all
        raise KeyboardInterrupt
    train_seconds = elapsed + time.perf_counter() - start
    save_policy(folder / SB3_MODEL_FILE, model, algo)
    # results.json names the algorithm (dqn), not the implementation (dqn-sb3).
    results = results_record(
        algo.removesuffix("-sb3"),
        args,
        evaluate(model),
        train_seconds,
        model.num_timesteps,
        model_file=SB3_MODEL_FILE,
    )
    write_json(folder / RESULTS_FILE, results)
    return finish_run(folder, results, dataset, lambda features: encode(model, features, args.bits))


def set_threads(threads: int) -> None:
    """Set torch's CPU thread count (checked by :func:`check_common_args`).

    Small MLPs lose more to thread sync than they gain from many threads.
    """
    import torch

    torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """``--device`` as a torch device name (``auto``: CUDA when torch sees it, else CPU).

    The trainers' one way to ``hashing_gym.device`` (the project's one device resolver).

    Raises:
        UsageError: if ``device`` is not auto, cpu, cuda, cuda:N, or names a GPU torch cannot see.
    """
    try:
        return device_name(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_common_args(
    args: CommonArgs, positive: Sequence[str] = (), non_negative: Sequence[str] = ()
) -> None:
    """Refuse bad arguments with a one-line :class:`UsageError`, before a run writes anything.

    Checks the arguments every trainer shares (``--bits``, ``--timesteps``, ``--seed``, ``--topk``,
    ``--threads``, ``--device``, ``--dataset-options``; ``--eval-every`` and ``--checkpoint-every``
    are counts where 0 means never, unless listed in ``positive``), then the trainer's own numeric
    arguments named in ``positive`` (> 0) and ``non_negative`` (>= 0); a None value (a default that
    the data set decides) is not checked.
    """
    checks = [
        (args.bits > 0, f"--bits must be positive, got {args.bits}"),
        (args.timesteps is None or args.timesteps > 0, f"--timesteps must be positive, got {args.timesteps}"),
        (args.seed >= 0, f"--seed must be >= 0, got {args.seed}"),
        (args.topk > 0, f"--topk must be positive, got {args.topk}"),
        (args.threads > 0, f"--threads must be positive, got {args.threads}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    resolve_device(args.device)
    parse_options(args.dataset_options)
    if getattr(args, "protocol", "standard") not in SPLIT_PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(SPLIT_PROTOCOLS)}, got {args.protocol!r}")
    counts = [name for name in ("eval_every", "checkpoint_every") if hasattr(args, name)]
    for name in [*positive, *(name for name in counts if name not in positive), *non_negative]:
        value = getattr(args, name)
        if value is None:
            continue
        if name in positive and value <= 0:
            raise UsageError(f"{_option(name)} must be positive, got {value}")
        if value < 0:
            raise UsageError(f"{_option(name)} must be >= 0, got {value}")


def check_group(args: Any) -> int:
    """``--group`` (bits decided per step of SequentialHashBits-v0), refused unless it divides ``--bits``."""
    if args.group <= 0 or args.bits % args.group:
        raise UsageError(f"--group must divide --bits, got bits={args.bits} group={args.group}")
    return args.group


def parse_hidden(text: str, option: str = "--hidden") -> list[int]:
    """Hidden layer sizes from ``"256,256"`` (empty: no hidden layer); UsageError unless positive ints."""
    try:
        sizes = [int(size) for size in text.split(",") if size.strip()]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated integers, got {text!r}") from None
    if any(size <= 0 for size in sizes):
        raise UsageError(f"{option} sizes must be positive, got {text!r}")
    return sizes


EVAL_SCALARS: tuple[str, ...] = ("map", "map_tie_aware", "precision_radius2")
# The training scalars every trainer logs, under the same TensorBoard tags (SB3's prefixes).
TRAIN_TAGS: dict[str, str] = {
    "episode_return": "rollout/episode_return",  # mean return of the episodes ended since the last point
    "loss": "train/loss",  # the trainer's total loss (mean over, or last update of, the updates since)
    "steps_per_second": "time/steps_per_second",  # env steps/s since the last point, evaluations left out
}
# Tags written at every evaluation (step 0 included when the run evaluates).
EVAL_TAGS: tuple[str, ...] = tuple(f"eval/{key}" for key in EVAL_SCALARS)
LOG_POINTS = 100  # training points per run (our choice: smooth curves, small event files)


def summary_writer(folder: Path, name: str, purge_step: int | None = None) -> Any:
    """The TensorBoard writer of a run: ``DIR/tb/{name}``, one folder per trainer.

    Every trainer writes through it (the stable-baselines3 ones too: :func:`train_sb3` routes SB3's
    logger into it). ``purge_step``: on ``--resume``, the first step the resumed process may log;
    TensorBoard drops the events an interrupted process logged from it on.
    """
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only these trainers need it

    return SummaryWriter(str(Path(folder) / "tb" / name), purge_step=purge_step or None)


def write_scalars(writer: Any, scalars: dict[str, float], step: int, prefix: str = "") -> None:
    """``writer.add_scalar(prefix + name, value, step)`` for each item of ``scalars``."""
    for name, value in scalars.items():
        writer.add_scalar(prefix + name, value, step)


def write_eval_scalars(writer: Any, metrics: dict[str, float], step: int) -> None:
    """The retrieval metrics every trainer logs at an evaluation: ``eval/map`` and friends."""
    write_scalars(writer, {key: metrics[key] for key in EVAL_SCALARS}, step, prefix="eval/")


class TrainingLog:
    """A run's TensorBoard scalars, the same tags for every trainer (:data:`TRAIN_TAGS`, ``eval/*``).

    ``DIR/tb/{algo}`` (:func:`summary_writer`). :meth:`due` says when the next training point is
    wanted: at the first step after the run (or the resumed process) starts, then every
    ``total_steps / LOG_POINTS`` steps, so even a short run logs from its first update.
    :meth:`train` writes a point (steps/s since the previous one computed here, leaving out the
    time spent in :meth:`paused` blocks), :meth:`eval` the retrieval metrics.
    """

    def __init__(self, folder: Path, algo: str, total_steps: int, start_step: int = 0) -> None:
        # A resumed process logs after its checkpoint's step: what an earlier one logged later goes.
        self.writer = summary_writer(folder, algo, purge_step=start_step + 1 if start_step else None)
        self.every = max(1, int(total_steps) // LOG_POINTS)
        self._last_step, self._last_time, self._paused = start_step, time.perf_counter(), 0.0
        self._next = start_step + 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent in the block (an evaluation) out of ``time/steps_per_second``."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - begin

    def due(self, step: int) -> bool:
        """Whether a training point is wanted at ``step``."""
        return step >= self._next

    def train(
        self, step: int, episode_return: float | None = None, loss: float | None = None, **extra: float
    ) -> None:
        """Write a training point at ``step``; ``extra``: the trainer's own scalars by full tag.

        ``None`` values are left out (no episode ended, no update yet).
        """
        now = time.perf_counter()
        seconds = max(now - self._last_time - self._paused, 1e-9)
        scalars = {TRAIN_TAGS["steps_per_second"]: (step - self._last_step) / seconds}
        if episode_return is not None:
            scalars[TRAIN_TAGS["episode_return"]] = float(episode_return)
        if loss is not None:
            scalars[TRAIN_TAGS["loss"]] = float(loss)
        scalars.update({tag: float(value) for tag, value in extra.items() if value is not None})
        write_scalars(self.writer, scalars, step)
        self._next = step + self.every
        self._last_step, self._last_time, self._paused = step, now, 0.0

    def eval(self, metrics: dict[str, float], step: int, **extra: float) -> None:
        """Write the retrieval metrics of an evaluation at ``step`` (``eval/map`` and friends).

        ``extra``: the trainer's own evaluation scalars by full tag.
        """
        write_eval_scalars(self.writer, metrics, step)
        write_scalars(self.writer, {tag: float(value) for tag, value in extra.items()}, step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class _Sb3Scalars(KVWriter):
    """An SB3 ``KVWriter``: what SB3's logger dumps goes into the run's writer.

    SB3's ``rollout/ep_rew_mean``, ``time/fps`` and ``train/loss`` are left out: :class:`TrainingScalars`
    writes their common forms (:data:`TRAIN_TAGS`); keys SB3 excludes from TensorBoard and
    non-numbers are left out as SB3's own TensorBoard writer leaves them.
    """

    REPLACED = ("rollout/ep_rew_mean", "time/fps", "train/loss")

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """Write the dumped numbers through :func:`write_scalars`."""
        scalars = {
            key: float(value)
            for key, value in key_values.items()
            if key not in self.REPLACED
            and "tensorboard" not in (key_excluded.get(key) or ())
            and isinstance(value, int | float | np.number)
            and not isinstance(value, bool)
        }
        write_scalars(self.writer, scalars, step)

    def close(self) -> None:
        """Nothing: the :class:`TrainingLog` closes the writer."""


class Sb3RunLogger(Logger):
    """An SB3 ``Logger`` writing into a :class:`TrainingLog`'s folder, remembering each key's last value.

    ``latest`` keeps what SB3 recorded last (its dumps clear their own copy), so
    :class:`TrainingScalars` reads the loss whenever it logs. Set with ``model.set_logger`` before
    ``learn``: SB3 then writes no ``tb/{name}_N`` folder of its own.
    """

    def __init__(self, log: TrainingLog) -> None:
        super().__init__(folder=None, output_formats=[_Sb3Scalars(log.writer)])
        self.latest: dict[str, Any] = {}

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        """SB3's ``record``, keeping the value in ``latest`` too."""
        super().record(key, value, exclude)
        self.latest[key] = value


def sb3_loss(model: Any, latest: dict[str, Any]) -> float | None:
    """The total loss of an SB3 model's last update: ``train/loss``, or A2C's from its three terms.

    A2C records only its terms: ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``
    is the loss it minimises.
    """
    if "train/loss" in latest:
        return float(latest["train/loss"])
    terms = ("train/policy_loss", "train/entropy_loss", "train/value_loss")
    if all(term in latest for term in terms):
        policy, entropy, value = (float(latest[term]) for term in terms)
        return policy + float(model.ent_coef) * entropy + float(model.vf_coef) * value
    return None


class TrainingScalars(BaseCallback):
    """The common training scalars of an SB3 run (:class:`TrainingLog`), from its first rollout.

    Episode returns are summed from each step's rewards and dones (so any VecEnv works, with or
    without a Monitor); a point is written at the first rollout start after ``log.due`` and at
    the end of training, then SB3's pending scalars (``train/value_loss``, ...) are dumped at the
    same step.
    """

    def __init__(self, log: TrainingLog) -> None:
        super().__init__()
        self.log = log
        self._returns: np.ndarray | None = None
        self._ended_sum, self._ended_count, self._logged_step = 0.0, 0, -1

    def _on_training_start(self) -> None:
        self._returns = np.zeros(self.training_env.num_envs)

    def _on_step(self) -> bool:
        rewards, dones = self.locals.get("rewards"), self.locals.get("dones")
        if rewards is not None and dones is not None and self._returns is not None:
            self._returns += np.asarray(rewards, dtype=np.float64).reshape(-1)
            ended = np.asarray(dones, dtype=bool).reshape(-1)
            if ended.any():
                self._ended_sum += float(self._returns[ended].sum())
                self._ended_count += int(ended.sum())
                self._returns[ended] = 0.0
        return True

    def _on_rollout_start(self) -> None:
        if self.log.due(self.num_timesteps):
            self.write()

    def _on_training_end(self) -> None:
        if self.num_timesteps != self._logged_step:
            self.write()

    def write(self) -> None:
        """Write a training point now, then dump SB3's pending scalars at the same step."""
        logger = self.model.logger
        episode_return = self._ended_sum / self._ended_count if self._ended_count else None
        loss = sb3_loss(self.model, getattr(logger, "latest", {}))
        self.log.train(self.num_timesteps, episode_return, loss)
        self._ended_sum, self._ended_count, self._logged_step = 0.0, 0, self.num_timesteps
        logger.dump(self.num_timesteps)
