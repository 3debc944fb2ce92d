"""Train an agent or a baseline with one command: ``python -m agents.train ALGO [--options]``.

``python -m agents.train ALGO --help`` lists the algorithm's options (a dataclass ``Args`` in its
module). Bad arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from agents.common import UsageError, read_run_args

# algorithm -> module holding its `Args` dataclass and `main(args)`
ALGORITHMS: dict[str, str] = {
    "dqn": "agents.dqn",
    "dqn-torch": "agents.dqn_torch",
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
# `reinforce` on SequentialHashBits-v0 is DRLIH's recurrent REINFORCE agent.
ENV_ALIASES: dict[tuple[str, str], str] = {("reinforce", "SequentialHashBits-v0"): "drlih"}
# algorithm -> its torch-native trainer over the batched env, which runs it on a CUDA device.
TORCH_TRAINERS: dict[str, str] = {"dqn": "dqn-torch", "reinforce": "reinforce-torch"}


def resolve_algorithm(algo: str, rest: Sequence[str]) -> str:
    """The algorithm that ``algo --env ID --device D`` names.

    ``reinforce`` has one trainer per MDP; ``dqn`` and ``reinforce`` (RankListHash-v0) on a CUDA
    device are the torch-native trainers over the batched env (``dqn-torch``, ``reinforce-torch``),
    since the host loops would cross to the host every step.
    """
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--env")
    peek.add_argument("--device")
    known = peek.parse_known_args(rest)[0]
    if known.env and (algo, known.env) in ENV_ALIASES:
        return ENV_ALIASES[(algo, known.env)]
    if algo in TORCH_TRAINERS and known.device and known.device.startswith("cuda"):
        return TORCH_TRAINERS[algo]
    return algo


def _field_type(annotation: Any) -> type:
    """The scalar type of a dataclass field annotation (``int | None`` -> int)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"types": types})  # noqa: S307 - our own annotations
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return arguments[0] if arguments else annotation


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


def resumed_arguments(algo: str, folder: str) -> dict[str, Any]:
    """The recorded arguments of the run in ``folder``, set to resume it."""
    recorded = read_run_args(folder)
    if recorded.pop("algo") != algo:
        raise UsageError(f"--resume {folder}: that run was not trained with {algo}")
    return {**recorded, "resume": folder}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``ALGO [--options]``, run the algorithm, print its results; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m agents.train ALGO [--options]\nALGO: one of {', '.join(ALGORITHMS)}")
        return 0 if argv else 2
    algo, rest = argv[0], argv[1:]
    if algo not in ALGORITHMS:
        print(f"error: unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}", file=sys.stderr)
        return 2
    algo = resolve_algorithm(algo, rest)
    module = importlib.import_module(ALGORITHMS[algo])
    parsed = build_parser(algo, module.Args).parse_args(rest)
    try:
        args = (
            module.Args(**resumed_arguments(algo, parsed.resume))
            if parsed.resume
            else module.Args(**vars(parsed))
        )
        results = module.main(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
