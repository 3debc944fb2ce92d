"""End-to-end training throughput: env steps/s and gradient updates/s of the torch trainers, GPU use.

Run: ``python -m benchmarks.training --device cuda [--cases digits:16 ...] [--seconds 20]`` on a GPU,
or ``python -m benchmarks.training --quick`` on a CPU (small CPU recipes, about 2 s of training per
case). Each trainer (``dqn-torch`` on BinaryCodeTravel-v0, ``reinforce-torch`` on RankListHash-v0)
trains each case (``DATASET:BITS``) through its public entry point (``agents.<trainer>.main(Args)``,
the function ``python -m agents.train`` calls), in this process, with its run folder in a temporary
directory, and the table gets one row per run:

- **env steps/s** and **gradient updates/s**: ``env_steps``, ``gradient_updates`` (dqn-torch) or
  ``updates`` (reinforce-torch) and ``train_seconds`` of the run's results (``results.json``). The
  runs evaluate only after training (``--eval-every 0``) and write no checkpoint inside it (dqn-torch:
  ``--checkpoint-every`` past the budget; reinforce-torch: ``0``), so ``train_seconds`` and the rates
  leave out every evaluation and checkpoint; they include the trainers' own logging (a TensorBoard
  point about every 1% of the budget, which reads a few numbers from the device) and, for dqn-torch,
  the ``learning_starts`` env steps before its first update (4 of its vector steps at the GPU recipe).
- **GPU util %**: the mean of samples taken every 0.2 s in a background thread, over the training
  window only: it ends at the wall time of the run's last TensorBoard training point (``TrainingLog``
  writes it at the last step, just before ``train_seconds`` is read) and starts ``train_seconds``
  before. Samples come from ``nvidia-smi --query-gpu=utilization.gpu`` when it is on the PATH, else
  from ``torch.cuda.utilization()`` (pynvml) when that works, else the column says n/a; the line
  above the table says which. Either is the whole GPU's utilisation (the share of time a kernel ran),
  other processes included.
- **peak GPU MiB**: ``torch.cuda.max_memory_allocated`` over the whole run, reset before it (the final
  evaluation included: it encodes the splits on the device).
- **mAP**: the run's stable mAP@all after training.

The budget (our choice): ``--seconds`` of training per case. A short warm-up run of the same case comes
first (compiling and caching what a first run does, the codebook included) and its steady rate (the
median ``time/steps_per_second`` of the second half of its TensorBoard points) sets the measured run's
env steps; so a case trains for about ``--seconds`` whatever the machine (somewhat less where logging
costs: the short warm-up writes a point every step), and its rows compare rates, not mAP at a fixed
budget.

Cases: ``digits:16``, ``digits:32``, ``digits:64`` (scikit-learn's digits, 1,497 train items) and
``digits28:32`` (``benchmarks.datasets.digits28``: 10,782 28x28 images, 784-d; ``--digits28 PATH``,
built there when missing), the sizes of issue #15; ``tiny:BITS`` (three 8-d blobs, 60 items each: for
tests). Recipes on a GPU: dqn-torch with issue #15's GPU flags (``--num-envs 512 --batch-size 2048
--gradient-steps 16``), reinforce-torch with its defaults (batch 256 codes = 256 sub-envs per update);
``--dqn`` and ``--reinforce`` override any option (``--dqn num_envs=1024,batch_size=4096``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.common import UsageError, parse_options
from benchmarks.envs import machine

DEFAULT_CASES: tuple[str, ...] = ("digits:16", "digits:32", "digits:64", "digits28:32")
TRAINERS: tuple[str, ...] = ("dqn-torch", "reinforce-torch")
TINY_OPTIONS = "num_classes=3,n_per_class=60,dim=8,separation=4.0,query_per_class=10"
SAMPLE_SECONDS = 0.2  # GPU utilisation sampling period
# Options of each trainer on a GPU (issue #15's GPU flags for dqn; reinforce-torch's defaults) and in
# --quick on a CPU (small batches, few steps before learning: seconds, not minutes).
GPU_RECIPES: dict[str, dict[str, Any]] = {
    "dqn-torch": {"num_envs": 512, "batch_size": 2048, "gradient_steps": 16},
    "reinforce-torch": {},
}
QUICK_RECIPES: dict[str, dict[str, Any]] = {
    "dqn-torch": {"num_envs": 16, "batch_size": 64, "gradient_steps": 2, "learning_starts": 64,
                  "buffer_size": 20_000},
    "reinforce-torch": {"batch_size": 64},
}  # fmt: skip
# Warm-up length: vector steps (dqn-torch, after learning_starts) or updates (reinforce-torch).
WARMUP_STEPS = 32
QUICK_WARMUP_STEPS = 12
COLUMNS: tuple[str, ...] = (
    "algorithm", "data set", "bits", "num envs", "batch", "env steps", "train s", "env steps/s",
    "gradient updates/s", "GPU util %", "peak GPU MiB", "mAP",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One data set at one code length."""

    dataset: str
    bits: int

    @property
    def name(self) -> str:
        """``DATASET:BITS``."""
        return f"{self.dataset}:{self.bits}"


def parse_case(text: str) -> Case:
    """``DATASET:BITS`` (digits, digits28 or tiny) as a :class:`Case`; UsageError otherwise."""
    dataset, sep, bits = text.partition(":")
    if not sep or dataset not in ("digits", "digits28", "tiny") or not bits.isdigit() or int(bits) <= 0:
        raise UsageError(f"--cases wants DATASET:BITS with DATASET digits, digits28 or tiny, got {text!r}")
    return Case(dataset, int(bits))


def trainer_module(trainer: str) -> Any:
    """The trainer's module (``agents.dqn_torch`` or ``agents.reinforce_torch``)."""
    import importlib

    return importlib.import_module(
        {"dqn-torch": "agents.dqn_torch", "reinforce-torch": "agents.reinforce_torch"}[trainer]
    )


def recipe_overrides(trainer: str, text: str) -> dict[str, Any]:
    """``--dqn`` / ``--reinforce`` text as options of the trainer's ``Args``; UsageError for unknown keys."""
    options = parse_options(text)
    known = {spec.name for spec in dataclasses.fields(trainer_module(trainer).Args)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"{trainer} has no option(s) {unknown}")
    return options


# GPU utilisation ----------------------------------------------------------------------------


def utilisation_reader(device_index: int) -> tuple[str, Callable[[], float | None] | None]:
    """How the GPU's utilisation is read: ``(description, read)``; ``read`` None when nothing works.

    ``nvidia-smi`` first (the device by its UUID when torch gives one, so CUDA_VISIBLE_DEVICES
    cannot point it at another GPU), then ``torch.cuda.utilization`` (needs pynvml).
    """
    import torch

    if shutil.which("nvidia-smi"):
        uuid = getattr(torch.cuda.get_device_properties(device_index), "uuid", None)
        targets = ([f"GPU-{uuid}"] if uuid is not None else []) + [str(device_index)]
        for target in targets:  # the UUID first; the index where the UUID is not nvidia-smi's spelling
            read = _smi_reader(target)
            if read() is not None:
                return f"nvidia-smi --id={target} --query-gpu=utilization.gpu", read
    try:
        torch.cuda.utilization(device_index)
    except Exception:  # pynvml missing or NVML refused: not available
        return "n/a (no nvidia-smi, torch.cuda.utilization failed)", None

    def read_torch() -> float | None:
        try:
            return float(torch.cuda.utilization(device_index))
        except Exception:  # a failed sample is a missing sample
            return None

    return "torch.cuda.utilization (pynvml)", read_torch


def _smi_reader(target: str) -> Callable[[], float | None]:
    """A reader of ``nvidia-smi``'s utilisation of GPU ``target`` (UUID or index); None on any failure."""
    command = ["nvidia-smi", f"--id={target}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

    def read() -> float | None:
        try:
            text = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout
            return float(text.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    return read


class Sampler:
    """Calls ``read()`` every :data:`SAMPLE_SECONDS` on a thread; keeps ``(time.time(), value)``."""

    def __init__(self, read: Callable[[], float | None]) -> None:
        self.read = read
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            value = self.read()
            if value is not None:
                self.samples.append((time.time(), value))
            next_time += SAMPLE_SECONDS
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float) -> float | None:
        """Mean of the samples taken in ``[start, end]`` (wall clock); None when there are none."""
        values = [value for when, value in self.samples if start <= when <= end]
        return statistics.fmean(values) if values else None


@contextlib.contextmanager
def sampling(read: Callable[[], float | None] | None) -> Iterator[Sampler | None]:
    """A running :class:`Sampler` of ``read`` for the block (None when there is no reader)."""
    if read is None:
        yield None
        return
    with Sampler(read) as sampler:
        yield sampler


# What the trainers record -------------------------------------------------------------------


def training_points(folder: Path, trainer: str) -> list[tuple[float, int, float]]:
    """The run's TensorBoard training points: ``(wall time, env step, time/steps_per_second)``.

    :class:`agents.common.TrainingLog` writes them to ``DIR/tb/TRAINER``.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from agents.common import TRAIN_TAGS
    from agents.report import _scalar_of

    points = []
    for path in sorted((Path(folder) / "tb" / trainer).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                scalar = _scalar_of(value)
                if value.tag == TRAIN_TAGS["steps_per_second"] and scalar is not None:
                    points.append((event.wall_time, int(event.step), scalar))
    return sorted(points)


def steady_rate(points: Sequence[tuple[float, int, float]]) -> float:
    """Median env steps/s of the second half of the training points (past the first-call costs)."""
    if not points:
        raise RuntimeError("the warm-up run logged no training points")
    return statistics.median(rate for _, _, rate in points[len(points) // 2 :])


# The runs -------------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every run of one invocation shares."""

    device: str
    seconds: float
    quick: bool
    folder: Path
    digits28: Path | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_utilisation: Callable[[], float | None] | None = None

    def args(self, trainer: str, case: Case, timesteps: int, out: Path) -> Any:
        """The trainer's ``Args`` for ``case``: no evaluation and no checkpoint inside training."""
        module = trainer_module(trainer)
        data: dict[str, Any] = {"dataset": case.dataset}
        if case.dataset == "digits28":
            data = {"dataset": "features", "data_path": str(self.digits28)}
        elif case.dataset == "tiny":
            data = {"dataset": "blobs", "dataset_options": TINY_OPTIONS}
        recipe = {
            **(QUICK_RECIPES if self.quick else GPU_RECIPES)[trainer],
            **self.overrides.get(trainer, {}),
        }
        # dqn-torch checkpoints every N env steps (N > 0): past the budget, its only one is after training.
        never = {"checkpoint_every": timesteps + 1} if trainer == "dqn-torch" else {"checkpoint_every": 0}
        return module.Args(
            **data, bits=case.bits, device=self.device, seed=0, timesteps=timesteps, eval_every=0,
            out=str(out), **never, **recipe,
        )  # fmt: skip

    def train(self, trainer: str, case: Case, timesteps: int, out: Path) -> tuple[Any, dict[str, Any]]:
        """Run the trainer's ``main`` (its printing sent to stderr); ``(args, results)``."""
        args = self.args(trainer, case, timesteps, out)
        with contextlib.redirect_stdout(sys.stderr):
            results = trainer_module(trainer).main(args)
        return args, results

    def step_size(self, args: Any) -> int:
        """Env steps per vector step (dqn-torch) or per update (reinforce-torch)."""
        return args.num_envs if hasattr(args, "gradient_steps") else args.batch_size

    def measure(self, trainer: str, case: Case) -> dict[str, Any]:
        """Warm up, then train ``case`` for about ``seconds``; the row's numbers."""
        import torch

        probe = self.args(trainer, case, 1, self.folder / "probe")
        step = self.step_size(probe)
        warmup_steps = QUICK_WARMUP_STEPS if self.quick else WARMUP_STEPS
        # dqn-torch steps learning_starts env steps before its first update: both runs take them first.
        before = (getattr(probe, "learning_starts", -1) // step + 1) * step
        warmup = before + step * warmup_steps
        base = self.folder / f"{trainer}-{case.dataset}-{case.bits}"
        _, results = self.train(trainer, case, warmup, base / "warmup")
        rate = steady_rate(training_points(base / "warmup", trainer))
        timesteps = before + max(1, round(rate * self.seconds / step)) * step

        cuda = torch.device(self.device).type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with sampling(self.read_utilisation) as sampler:  # run() gives a reader only on a GPU
            args, results = self.train(trainer, case, timesteps, base / "run")
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        seconds = float(results["train_seconds"])
        updates = results.get("gradient_updates", results.get("updates"))
        utilisation = None
        if sampler is not None:
            points = training_points(base / "run", trainer)
            end = points[-1][0] if points else time.time()
            utilisation = sampler.mean(end - seconds, end)
        return {
            "algorithm": trainer,
            "data set": case.dataset,
            "bits": case.bits,
            "num envs": results.get("num_envs"),
            "batch": args.batch_size,
            "env steps": int(results["env_steps"]),
            "train s": seconds,
            "env steps/s": results["env_steps"] / seconds,
            "gradient updates/s": updates / seconds,
            "GPU util %": utilisation,
            "peak GPU MiB": peak,
            "mAP": float(results["map"]),
            "warm-up env steps/s": rate,
        }


def cell(column: str, value: Any) -> str:
    """A table cell: rates with thousands separators, n/a for what was not measured."""
    if value is None:
        return "n/a"
    if column in ("env steps/s", "gradient updates/s", "env steps", "peak GPU MiB"):
        return f"{value:,.0f}"
    if column == "train s":
        return f"{value:.1f}"
    if column == "GPU util %":
        return f"{value:.0f}"
    if column == "mAP":
        return f"{value:.3f}"
    return str(value)


def table_row(row: dict[str, Any]) -> str:
    """One markdown row of :data:`COLUMNS`."""
    return "| " + " | ".join(cell(column, row[column]) for column in COLUMNS) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every trainer on every case; print the machine, the method lines and the table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda, cpu with --quick)")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="DATASET:BITS ...")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    parser.add_argument(
        "--seconds", type=float, default=None, help="training seconds per case (20; 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="CPU recipes and short runs")
    parser.add_argument(
        "--digits28", type=Path, default=None, help="digits28 .npz (built there when missing)"
    )
    parser.add_argument("--dqn", default="", help="dqn-torch options, e.g. num_envs=1024,batch_size=4096")
    parser.add_argument("--reinforce", default="", help="reinforce-torch options, e.g. batch_size=1024")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    parsed = parser.parse_args(argv)
    try:
        return run(parsed)
    except ValueError as error:  # UsageError, CheckpointError, bad data: one line, as agents.train
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(parsed: argparse.Namespace) -> int:
    """:func:`main` after parsing."""
    import torch

    from agents.common import resolve_device

    cases = [parse_case(text) for text in parsed.cases]
    device = resolve_device(parsed.device or ("cpu" if parsed.quick else "cuda"))
    seconds = parsed.seconds if parsed.seconds is not None else (2.0 if parsed.quick else 20.0)
    if seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {seconds}")
    overrides = {
        "dqn-torch": recipe_overrides("dqn-torch", parsed.dqn),
        "reinforce-torch": recipe_overrides("reinforce-torch", parsed.reinforce),
    }
    cuda = torch.device(device).type == "cuda"
    if cuda:
        index = torch.device(device).index
        torch.cuda.set_device(index if index is not None else torch.cuda.current_device())
        how, read = utilisation_reader(torch.cuda.current_device())
    else:
        how, read = "n/a (CPU run)", None

    with tempfile.TemporaryDirectory(prefix="benchmark-training-") as temporary:
        folder = Path(temporary)
        digits28 = None
        if any(case.dataset == "digits28" for case in cases):
            digits28 = parsed.digits28 or folder / "digits28.npz"
            if not digits28.is_file():
                from benchmarks.datasets import write_digits28

                print(f"building {digits28} (benchmarks.datasets.digits28)", file=sys.stderr, flush=True)
                write_digits28(digits28)
        bench = Bench(device, seconds, parsed.quick, folder, digits28, overrides, read)
        print(f"Machine: {machine()}, torch {torch.__version__}, device {device}")
        print(
            f"Each case: a warm-up run, then about {seconds:g} s of training (env steps from the warm-up's "
            "steady rate); rates are results.json's env steps and updates over train_seconds, with no "
            "evaluation or checkpoint inside training; GPU util: the mean over the training window of "
            f"samples every {SAMPLE_SECONDS} s from {how}; peak GPU MiB: torch.cuda.max_memory_allocated "
            "over the run (final evaluation included); mAP: stable mAP@all.\n"
        )
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|", flush=True)
        rows = []
        for trainer in parsed.trainers:
            for case in cases:
                row = bench.measure(trainer, case)
                rows.append(row)
                print(table_row(row), flush=True)  # row by row: a run cut short keeps what it measured
                shutil.rmtree(folder / f"{trainer}-{case.dataset}-{case.bits}")  # replay checkpoints: GBs
    if parsed.json is not None:
        parsed.json.write_text(json.dumps({"machine": machine(), "utilisation": how, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
