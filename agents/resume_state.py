"""What the torch trainers share to resume exactly: vector env snapshots and required checkpoint keys.

A checkpoint of ``agents.dqn_torch`` or ``agents.reinforce_torch`` holds everything that changes
while the run trains, the batched env included, so that a run stopped at any moment (SIGKILL
too) and resumed with ``--resume`` ends bitwise equal to the same run uninterrupted (on the CPU;
``tests/test_kill_resume.py`` checks it). Everything is stored as tensors, numbers and dicts:
``agents.checkpoint.read_tensors`` loads them with ``weights_only=True``.

The env's part is its public snapshot, ``HashingVectorEnv.get_state()`` (numpy arrays and JSON-able
values: each sub-env's episode, the autoreset bookkeeping, every random stream), stored under the
checkpoint key ``"env"`` with its numpy arrays as CPU tensors (:func:`env_snapshot`), and given back
to ``set_state`` (:func:`restore_env`), which checks it against the env that the resumed run built
from its arguments. Constant parts (the data set, codebooks) are rebuilt from those arguments, not
stored.

Checkpoints written before the envs had snapshots hold ``"env"`` as the env's private attributes
and ``"env_rng"`` as its random streams; :func:`upgrade_legacy_env` turns them into a snapshot, so
those runs still resume exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import CheckpointError


def require_keys(state: dict[str, Any], keys: Iterable[str], path: str | Path) -> None:
    """Refuse a checkpoint that lacks ``keys``: one written before its trainer resumed exactly.

    Raises:
        CheckpointError: naming ``path`` and the missing keys, and how to start the run again.
    """
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it was written by an older version that did not save "
            "the whole training state, so it cannot be resumed exactly; start the run again with --overwrite"
        )


def _as_tensors(value: Any) -> Any:
    """``value`` with every numpy array (in dicts and lists) as a CPU tensor (``weights_only`` data)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: _as_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_tensors(item) for item in value]
    return value


def env_snapshot(envs: Any, *, banks: bool = True) -> dict[str, Any]:
    """The snapshot of a hashing_gym vector env (``envs.get_state``), its arrays as CPU tensors.

    Args:
        envs: a ``HashingVectorEnv``.
        banks: store the code banks; False for a trainer that re-encodes them on resume.
    """
    return _as_tensors(envs.get_state(banks=banks))


def restore_env(envs: Any, snapshot: dict[str, Any], source: str | Path) -> None:
    """Put an :func:`env_snapshot` back into an env built with the run's arguments (``envs.set_state``).

    Raises:
        CheckpointError: naming ``source`` (the checkpoint file) and what ``set_state`` refused: a
            snapshot of other arguments, a missing part, an array of another shape or dtype.
    """
    try:
        envs.set_state(snapshot)
    except ValueError as error:
        raise CheckpointError(f"{source}: the env's state cannot be restored: {error}") from None


def upgrade_legacy_env(envs: Any, saved: dict[str, Any], source: str | Path) -> None:
    """Turn a checkpoint's env state of the earlier layout into a snapshot, in place (else nothing).

    The earlier layout: ``saved["env_rng"]`` (``generator``, ``np_random``, ``per_env``: the env's
    random streams) and, for the trainers that stored more, ``saved["env"]`` (``_started``,
    ``_autoreset``, ``_ended`` and ``_state``, the core state's arrays in the order of its fields).
    The snapshot starts from the env's own ``get_state()`` (the resumed run's env, built and reset as
    the earlier process was) and takes every part the checkpoint holds, so the resume continues as
    the earlier version's did. Streams stored as None keep the env's, as the earlier loader did.

    Raises:
        CheckpointError: naming ``source`` if the stored parts do not fit the env.
    """
    if "env_rng" not in saved:
        return
    streams = saved.pop("env_rng")
    legacy = saved.get("env")
    snapshot = envs.get_state(banks=legacy is not None)
    if not isinstance(streams, dict) or not {"generator", "np_random", "per_env"} <= set(streams):
        raise CheckpointError(f"{source}: 'env_rng' is not the random streams of an env")
    if streams["generator"] is not None:
        snapshot["generator"] = streams["generator"]
    if streams["np_random"] is not None:
        snapshot["np_random"] = streams["np_random"]
    per_env = list(streams["per_env"])
    if len(per_env) != len(snapshot["per_env"]):
        raise CheckpointError(
            f"{source}: 'env_rng' holds {len(per_env)} per-env streams, the env has "
            f"{len(snapshot['per_env'])}"
        )
    pairs = zip(per_env, snapshot["per_env"], strict=True)
    snapshot["per_env"] = [mine if old is None else old for old, mine in pairs]
    if legacy is not None:
        if not isinstance(legacy, dict) or not {"_started", "_autoreset", "_ended", "_state"} <= set(legacy):
            raise CheckpointError(f"{source}: 'env' is neither a snapshot nor the earlier env state")
        names = list(snapshot["arrays"])
        if len(legacy["_state"]) != len(names):
            raise CheckpointError(
                f"{source}: 'env' holds {len(legacy['_state'])} state arrays, the env has {len(names)}"
            )
        snapshot["arrays"] = dict(zip(names, legacy["_state"], strict=True))
        snapshot.update(started=legacy["_started"], autoreset=legacy["_autoreset"], ended=legacy["_ended"])
    saved["env"] = snapshot
