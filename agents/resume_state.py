"""What the torch trainers share to resume exactly: vector env snapshots and required checkpoint keys.

A checkpoint of ``agents.dqn_torch`` or ``agents.reinforce_torch`` holds everything that changes
while the run trains, the batched env included, so that a run stopped at any moment (SIGKILL
too) and resumed with ``--resume`` ends bitwise equal to the same run uninterrupted (on the CPU;
``tests/test_kill_resume.py`` checks it). Everything is stored as tensors, numbers and dicts:
``agents.checkpoint.read_tensors`` loads them with ``weights_only=True``.

``hashing_gym``'s vector envs have no public snapshot of their state yet, so :func:`env_state`
reads the attributes of ``hashing_gym.envs.vector_base.HashingVectorEnv`` that change as it steps
(ours: the bookkeeping of autoreset and the fields a trainer names, such as
``BinaryCodeTravelVectorEnv._state``) and :func:`env_rng_state` its random streams. Constant
attributes (the data set, codebooks) are rebuilt from the run's arguments, not stored. If those
attributes are renamed, :func:`restore_env_state` raises instead of resuming inexactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import CheckpointError

# HashingVectorEnv's autoreset bookkeeping: which rows started, which reset at the next step, and
# (masked steps) which ended at the last one.
BOOKKEEPING: tuple[str, ...] = ("_started", "_autoreset", "_ended")


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


def _as_tensor(value: Any) -> torch.Tensor:
    """A copy of a numpy array or tensor as a tensor (numpy arrays are not ``weights_only`` data)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value.detach().clone()


def env_state(envs: Any, fields: Iterable[str] = ()) -> dict[str, Any]:
    """The changing state of a hashing_gym vector env: its autoreset bookkeeping and ``fields``.

    Args:
        envs: a ``HashingVectorEnv``.
        fields: the subclass's state attributes to store, e.g. ``("_state",)`` for
            ``BinaryCodeTravelVectorEnv`` (a named tuple of arrays is stored as a list).

    Returns:
        name -> tensor, list of tensors, or None; :func:`restore_env_state` puts it back.
    """
    state: dict[str, Any] = {}
    for name in (*BOOKKEEPING, *fields):
        value = getattr(envs, name)
        if value is None:
            state[name] = None
        elif isinstance(value, tuple):
            state[name] = [_as_tensor(part) for part in value]
        else:
            state[name] = _as_tensor(value)
    return state


def restore_env_state(envs: Any, state: dict[str, Any], source: str | Path) -> None:
    """Put back a state from :func:`env_state` into an env built with the same arguments.

    Arrays are written in place (other objects, such as a packed database, may view them); a named
    tuple is rebuilt. ``source`` (the checkpoint file) names the culprit of a mismatch.

    Raises:
        CheckpointError: if a stored field is missing from the env or has another shape or dtype.
    """
    for name, saved in state.items():
        if not hasattr(envs, name):
            raise CheckpointError(f"{source}: the env has no state field {name!r} to restore")
        current = getattr(envs, name)
        if saved is None or current is None:
            if saved is not None or current is not None:
                raise CheckpointError(f"{source}: env state {name!r} is {saved!r}, the env has {current!r}")
            continue
        if isinstance(current, tuple):
            if len(saved) != len(current):
                raise CheckpointError(
                    f"{source}: env state {name!r} has {len(saved)} parts, the env's {len(current)}"
                )
            pairs = enumerate(zip(current, saved, strict=True))
            parts = [_restored(f"{name}[{i}]", part, value, source) for i, (part, value) in pairs]
            setattr(envs, name, type(current)(*parts))
        else:
            restored = _restored(name, current, saved, source)
            if isinstance(current, np.ndarray):
                current[...] = restored
            else:
                current.copy_(restored)


def _restored(name: str, current: Any, saved: torch.Tensor, source: str | Path) -> Any:
    """``saved`` as ``current``'s kind (numpy array, or tensor on its device); checks shape and dtype."""
    reference = torch.from_numpy(np.asarray(current)) if isinstance(current, np.ndarray) else current
    expected = (reference.shape, reference.dtype)
    if not isinstance(saved, torch.Tensor) or (saved.shape, saved.dtype) != expected:
        described = f"{saved.dtype} {tuple(saved.shape)}" if isinstance(saved, torch.Tensor) else type(saved)
        raise CheckpointError(
            f"{source}: env state {name!r} is {described}, "
            f"the env's is {reference.dtype} {tuple(reference.shape)}"
        )
    if isinstance(current, np.ndarray):
        return saved.numpy()
    return saved.to(current.device).clone()


def env_rng_state(envs: Any) -> dict[str, Any]:
    """The random streams of a hashing_gym vector env: its torch generator and numpy generators."""
    generator = envs._generator
    return {
        "generator": None if generator is None else generator.get_state(),
        "np_random": None if envs._np_random is None else envs._np_random.bit_generator.state,
        "per_env": [None if rng is None else rng.bit_generator.state for rng in envs._rngs],
    }


def restore_env_rng_state(envs: Any, state: dict[str, Any]) -> None:
    """Put back the streams of :func:`env_rng_state` (creating a generator the env had not made yet)."""
    if state["generator"] is not None:  # a CPU tensor, whatever map_location moved it to
        envs._torch_generator().set_state(state["generator"].cpu())
    if state["np_random"] is not None:
        envs.np_random.bit_generator.state = state["np_random"]
    for i, saved in enumerate(state["per_env"]):
        if saved is not None:
            if envs._rngs[i] is None:
                envs._rngs[i] = np.random.default_rng()
            envs._rngs[i].bit_generator.state = saved
