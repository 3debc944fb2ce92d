"""Train an agent or a baseline with one command: ``python -m agents.train ALGO [--options]``.

``python -m agents.train --help`` (or no argument) lists the algorithms, one line each (what it
is, its env), the common defaults and example commands; ``python -m agents.train ALGO --help``
lists the algorithm's options (a dataclass ``Args`` in its module). Bad arguments print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.common import ARGS_FILE, CommonArgs, UsageError, next_steps, read_run_args, resolve_device
from hashing_gym.data import DatasetOptionError

# algorithm -> module holding its `Args` dataclass and `main(args)`
ALGORITHMS: dict[str, str] = {
    "dqn": "agents.dqn_torch",
    "dqn-torch": "agents.dqn_torch",
    "dqn-sb3": "agents.dqn",
    "reinforce": "agents.reinforce",
    "reinforce-torch": "agents.reinforce_torch",
    "ppo": "agents.ppo",
    "a2c": "agents.a2c",
    "rppo": "agents.rppo",
    "drlih": "agents.drlih",
    "lsh": "agents.lsh",
    "itq": "agents.itq",
    "sdh": "agents.sdh",
    "mlp-code": "agents.mlp_code",
}
# algorithm -> (the env it trains by default, what it is): the lines of `python -m agents.train --help`.
ALGORITHM_HELP: dict[str, tuple[str, str]] = {
    "dqn": ("BinaryCodeTravel-v0", "guided DQN (DRLH), torch over the batched env, CPU or CUDA"),
    "dqn-torch": ("BinaryCodeTravel-v0", "the trainer that dqn runs (same options)"),
    "dqn-sb3": ("BinaryCodeTravel-v0", "guided DQN in stable-baselines3, for SB3 users"),
    "reinforce": ("RankListHash-v0", "listwise REINFORCE; on CUDA it runs reinforce-torch"),
    "reinforce-torch": ("RankListHash-v0", "REINFORCE, torch over the batched env (GPU)"),
    "ppo": ("RankListHash-v0", "SB3 PPO, MultiBinary codes (or SequentialHashBits-v0)"),
    "a2c": ("RankListHash-v0", "SB3 A2C, MultiBinary codes (or SequentialHashBits-v0)"),
    "rppo": ("SequentialHashBits-v0", "recurrent PPO (sb3-contrib LSTM), bit group by group"),
    "drlih": ("SequentialHashBits-v0", "DRLIH recurrent policy gradient (reinforce on this env)"),
    "lsh": ("(none)", "baseline: random hyperplanes"),
    "itq": ("(none)", "baseline: PCA + iterative quantization"),
    "sdh": ("(none)", "baseline: supervised discrete hashing"),
    "mlp-code": ("(none)", "supervised reference: MLP classifier -> class codewords"),
}
# Three commands of `python -m agents.train --help` (a test parses each with its trainer's parser).
EXAMPLES: tuple[str, ...] = (
    "python -m agents.train dqn --bits 32 --out runs/dqn32",
    "python -m agents.train reinforce --device cpu --timesteps 50000 --eval-every 20",
    "python -m agents.train itq --dataset blobs --bits 64",
)
# `reinforce` on SequentialHashBits-v0 is DRLIH's recurrent REINFORCE agent.
ENV_ALIASES: dict[tuple[str, str], str] = {("reinforce", "SequentialHashBits-v0"): "drlih"}
# algorithm -> the trainer that runs it on every device: guided DQN is the torch-native trainer over
# the batched env (on CPU too; `dqn-sb3` is the same algorithm in stable-baselines3, for SB3 users).
DEFAULT_TRAINERS: dict[str, str] = {"dqn": "dqn-torch"}
# algorithm -> its torch-native trainer over the batched env, which runs it on a CUDA device.
TORCH_TRAINERS: dict[str, str] = {"reinforce": "reinforce-torch"}


def _peek(rest: Sequence[str]) -> argparse.Namespace:
    """``--env`` and ``--device`` of a command line, before the algorithm's parser exists."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--env")
    peek.add_argument("--device", default="auto")
    peek.add_argument("--resume")
    return peek.parse_known_args(rest)[0]


def on_cuda(device: str) -> bool:
    """Whether ``--device`` names a CUDA device: ``cuda[:N]``, or ``auto`` where torch sees a GPU.

    ``auto`` is resolved by ``hashing_gym.device`` (through ``agents.common.resolve_device``); a
    device that does not resolve is left to the trainer's own check.
    """
    if device.startswith("cuda"):
        return True
    try:
        return resolve_device(device).startswith("cuda")
    except UsageError:
        return False


def resolve_algorithm(algo: str, rest: Sequence[str]) -> str:
    """The trainer that ``algo --env ID --device D`` runs.

    ``reinforce`` has one trainer per MDP; ``dqn`` is the torch-native guided DQN over the batched
    env (``dqn-torch``) on every device; ``reinforce`` (RankListHash-v0) on a CUDA device
    (``--device cuda[:N]``, or ``auto``, the default, on a machine with a GPU) is the torch-native
    ``reinforce-torch``, since the host loop would cross to the host every step. ``algo --resume DIR``
    runs the trainer that wrote the run, when it is one of these (so a run started with ``dqn``
    resumes with ``dqn`` on any machine).
    """
    known = _peek(rest)
    if known.resume:
        aliases = [to for (name, _), to in ENV_ALIASES.items() if name == algo]
        others = [table[algo] for table in (TORCH_TRAINERS, DEFAULT_TRAINERS) if algo in table]
        family = {algo, *aliases, *others}
        try:
            recorded = read_run_args(known.resume).get("algo")
        except (FileNotFoundError, ValueError):  # no run there: resumed_arguments says so
            recorded = None
        if recorded in family:
            return recorded
    if known.env and (algo, known.env) in ENV_ALIASES:
        return ENV_ALIASES[(algo, known.env)]
    if algo in TORCH_TRAINERS and on_cuda(known.device):
        return TORCH_TRAINERS[algo]
    return DEFAULT_TRAINERS.get(algo, algo)


def _field_type(annotation: Any) -> type:
    """The scalar type of a dataclass field annotation (``int | None`` -> int)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"types": types})  # our own annotations, not user input
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return arguments[0] if arguments else annotation


def args_from_record(args_class: type, recorded: dict[str, Any], folder: str | Path) -> Any:
    """``args_class(**recorded)`` for the arguments a run folder's args.json records (without ``algo``).

    args.json is a file like any other: a key the trainer does not take, or a value of the wrong
    type, is a UsageError naming the file and the key (not a TypeError from deep in the trainer).
    """
    path = Path(folder) / ARGS_FILE
    hints = typing.get_type_hints(args_class)
    fields = {spec.name: spec for spec in dataclasses.fields(args_class)}
    unknown = sorted(set(recorded) - set(fields))
    if unknown:
        raise UsageError(f"{path}: argument(s) {unknown} are not options of this trainer")
    for key, value in recorded.items():
        kind = _field_type(hints[key])
        optional = type(None) in typing.get_args(hints[key])
        if (value is None and optional) or not isinstance(kind, type):  # the CLI's fields are scalars
            continue
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            fits = True
        if not fits:
            raise UsageError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
    return args_class(**recorded)


def build_parser(algo: str, args_class: type) -> argparse.ArgumentParser:
    """An argparse parser with one ``--option`` per field of ``args_class``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m agents.train {algo}", description=(args_class.__doc__ or "").strip()
    )
    hints = typing.get_type_hints(args_class)
    for spec in dataclasses.fields(args_class):
        kind = _field_type(hints[spec.name])
        option = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.metadata.get('help', '')} (default: {spec.default})"
        if kind is bool:
            parser.add_argument(
                option, action=argparse.BooleanOptionalAction, default=spec.default, help=help_text
            )
        else:
            parser.add_argument(option, type=kind, default=spec.default, help=help_text)
    return parser


def given_options(parser: argparse.ArgumentParser, rest: Sequence[str]) -> dict[str, Any]:
    """The options that ``rest`` names explicitly (not the defaults), parsed."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(rest))


def resumed_arguments(algo: str, folder: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recorded arguments of the run in ``folder``, set to resume it.

    ``given``: the other options of the command line; UsageError naming those that differ from
    the run's ``args.json`` (``--resume`` continues the run as it was recorded). ``trust_pickle``
    is the exception: it comes from this command line alone (``--trust-pickle``), never from the
    folder, whose author may not be the user.
    """
    recorded = read_run_args(folder)
    trainer = recorded.pop("algo", None)
    if not isinstance(trainer, str):
        raise UsageError(f"--resume {folder}: {Path(folder) / ARGS_FILE} names no algorithm")
    recorded.pop("trust_pickle", None)
    if trainer != algo:
        raise UsageError(
            f"--resume {folder}: that run was trained with {trainer}, not {algo} "
            f"(python -m agents.train {trainer} --resume {folder})"
        )
    given = {key: value for key, value in (given or {}).items() if key != "resume"}
    trust_pickle = given.pop("trust_pickle", False)
    if given.pop("overwrite", False):
        raise UsageError(f"--resume {folder}: --overwrite cannot be combined with --resume")
    differ = [
        f"--{key.replace('_', '-')} {value} (run: {recorded.get(key)})"
        for key, value in given.items()
        if key not in recorded or recorded[key] != value
    ]
    if differ:
        raise UsageError(
            f"--resume {folder}: options differ from the run's args.json: {', '.join(differ)}; "
            "leave them out to resume the run as recorded"
        )
    return {**recorded, "overwrite": False, "resume": folder, "trust_pickle": trust_pickle}


def overview() -> str:
    """The text of ``python -m agents.train --help``: algorithms, common defaults, examples."""
    width = max(len(algo) for algo in ALGORITHM_HELP)
    env_width = max(len(env) for env, _ in ALGORITHM_HELP.values())
    lines = [
        "usage: python -m agents.train ALGO [--options]",
        "       python -m agents.train ALGO --help    (every option of ALGO, with its default)",
        "",
        "Trains ALGO and writes a run folder: args.json, results.json, the model, checkpoints/ (for",
        "--resume), tb/TRAINER/ (TensorBoard: rollout/episode_return, train/loss, eval/map,",
        "time/steps_per_second, ...) and report.md (the run on one page: args, results, training",
        "curves, PR curve, codes picture). Baselines step no env: no checkpoints, no TensorBoard.",
        "",
        f"{'ALGO'.ljust(width)}  {'env'.ljust(env_width)}  what it is",
    ]
    lines += [
        f"{algo.ljust(width)}  {env.ljust(env_width)}  {what}" for algo, (env, what) in ALGORITHM_HELP.items()
    ]
    shown = ("dataset", "bits", "seed", "device", "topk", "threads")
    defaults = {spec.name: spec.default for spec in dataclasses.fields(CommonArgs)}
    lines += [
        "",
        "common options (defaults):",
        "  " + "  ".join(f"--{name} {defaults[name]}" for name in shown),
        "  --timesteps: the algorithm's per-item budget times the train split's size",
        "  --out: runs/{env}__{algo}__{seed}__{time}; --resume DIR continues a run, --overwrite replaces one",
        "",
        "examples:",
        *(f"  {example}" for example in EXAMPLES),
        "",
        "then: python -m agents.evaluate RUN    tensorboard --logdir RUN/tb",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``ALGO [--options]``, run the algorithm, print its results; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0 if argv else 2
    algo, rest = argv[0], argv[1:]
    if algo not in ALGORITHMS:
        print(f"error: unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}", file=sys.stderr)
        return 2
    requested, algo = algo, resolve_algorithm(algo, rest)
    if algo == TORCH_TRAINERS.get(requested) and not _peek(rest).resume:
        print(
            f"{requested} on a CUDA device (--device {_peek(rest).device}): running the GPU trainer {algo} "
            f"(its options: python -m agents.train {algo} --help)"
        )
    module = importlib.import_module(ALGORITHMS[algo])
    parsed = build_parser(algo, module.Args).parse_args(rest)
    try:
        args = (
            args_from_record(
                module.Args,
                resumed_arguments(algo, parsed.resume, given_options(build_parser(algo, module.Args), rest)),
                parsed.resume,
            )
            if parsed.resume
            else module.Args(**vars(parsed))
        )
        if parsed.resume and args.data_path is not None:  # the folder chose this path: say what opens
            print(
                f"--resume {parsed.resume}: opening the {args.dataset} data at {args.data_path} "
                f"(data_path from {Path(parsed.resume) / ARGS_FILE})",
                flush=True,
            )
        results = module.main(args)
    # DatasetOptionError: an unknown --dataset-options key or a missing --data-path (a TypeError).
    except (UsageError, ValueError, FileNotFoundError, DatasetOptionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is in the run folder", file=sys.stderr)
        return 130
    summary = {
        key: results[key]
        for key in ("map", "map_tie_aware", "map_at_k", "precision_radius2", "train_seconds")
    }
    print(
        " ".join(
            f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in summary.items()
        )
    )
    if "run_folder" in results:
        print(next_steps(results["run_folder"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
