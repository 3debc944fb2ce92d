"""Resume is exact for the torch trainers: stopped, crashed or SIGKILLed, then --resume, a run ends
bitwise equal to the same run uninterrupted (weights, optimizer state, replay buffer, RNG states,
step counts, results.json); and the check fails when a checkpoint loses any of these (issue #16).

The runs are tiny (``resume_check.TRAINERS``); each trainer's uninterrupted run is trained once.
"""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_check import (
    KILL_KINDS,
    TRAINERS,
    assert_same_run,
    differences,
    dropping,
    final_state,
    is_checkpoint_write,
    is_kill_event,
    reference,
    resume_final_state,
    stopped_run,
    train_here,
)

from agents import train
from agents.checkpoint import Checkpoints

ROOT = Path(__file__).resolve().parent.parent
# The seed of the kill points; another value (HASHING_GYM_KILL_SEED=7 pytest ...) tries other points.
KILL_SEED = int(os.environ.get("HASHING_GYM_KILL_SEED", "0"))
STOP_AFTER = 2  # the checkpoint after which a run is stopped (every trainer here writes 4 or more)


@pytest.mark.parametrize("algo", list(TRAINERS))
def test_stopped_after_a_checkpoint_then_resumed_equals_the_uninterrupted_run(algo, tmp_path):
    trainer = TRAINERS[algo]
    _, expected, _ = reference(trainer)
    run = stopped_run(trainer, STOP_AFTER, tmp_path / "run")
    assert Checkpoints(run, algo).latest().num_timesteps < expected["checkpoint"]["num_timesteps"]
    assert_same_run(resume_final_state(trainer, run), expected)


@pytest.mark.parametrize(
    ("algo", "component"),
    [(algo, component) for algo, trainer in TRAINERS.items() for component in trainer.components],
)
def test_the_check_fails_when_a_checkpoint_loses_a_component(algo, component, tmp_path):
    """Weights, optimizer state, replay buffer, RNG states, step count (and env, baseline): each is
    replaced at load by what the resumed process had before loading, and the comparison must fail."""
    trainer = TRAINERS[algo]
    _, expected, _ = reference(trainer)
    run = stopped_run(trainer, STOP_AFTER, tmp_path / "run")
    with dropping(trainer, component) as replaced:
        rng_states = train_here([algo, "--resume", str(run)])
    got = final_state(run, algo, rng_states)
    assert replaced == list(trainer.components[component])  # the loss happened, at the one load
    assert differences(got, expected), f"{algo} resumed exactly without its {component}"
    with pytest.raises(AssertionError, match="resumed run differs from the uninterrupted one"):
        assert_same_run(got, expected)


def test_every_trainer_is_checked_for_weights_optimizer_rng_and_step():
    for algo, trainer in TRAINERS.items():
        assert {"weights", "optimizer", "rng", "step"} <= set(trainer.components), algo
    assert "replay" in TRAINERS["dqn-torch"].components


def kill_point(events: list[tuple[str, str]], kind: str, rng: random.Random) -> int:
    """A seeded random ordinal among ``kind`` events that come after the first committed checkpoint."""
    first_commit = next(
        i for i, (event, detail) in enumerate(events) if event == "write" and detail.endswith("state.json")
        and is_checkpoint_write(detail)
    )  # fmt: skip
    ordinal, candidates = 0, []
    for i, (event, detail) in enumerate(events):
        if is_kill_event(kind, event, detail):
            ordinal += 1
            if i > first_commit:
                candidates.append(ordinal)
    assert candidates, f"no {kind} event after the first checkpoint"
    return rng.choice(candidates)


@pytest.mark.parametrize("kind", KILL_KINDS)
@pytest.mark.parametrize("algo", list(TRAINERS))
def test_sigkill_at_a_random_point_then_resume_equals_the_uninterrupted_run(algo, kind, tmp_path):
    """SIGKILL mid-update between checkpoints, or mid-checkpoint (the file written, not yet renamed)."""
    trainer = TRAINERS[algo]
    _, expected, events = reference(trainer)
    ordinal = kill_point(events, kind, random.Random(f"{algo} {kind} {KILL_SEED}"))
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "tests" / "kill_child.py"), kind, str(ordinal), algo, *trainer.argv]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    child = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, f"not killed at {kind} {ordinal}:\n{child.stderr[-2000:]}"
    assert not (out / "results.json").exists()
    if kind == "checkpoint-write":  # killed between writing a checkpoint file and committing it
        left = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert any(name.endswith(".tmp") for name in left), left
    assert_same_run(resume_final_state(trainer, out), expected)


def test_a_checkpoint_from_before_exact_resume_is_refused_naming_the_file(tmp_path, capsys):
    trainer = TRAINERS["dqn-torch"]
    run = stopped_run(trainer, STOP_AFTER, tmp_path / "run")
    checkpoints = Checkpoints(run, "dqn-torch")
    recorded, state = checkpoints.load_torch()
    for key in ("replay", "env", "generator"):  # what dqn-torch did not save before
        del state[key]
    checkpoints.save_torch(state, recorded.num_timesteps, recorded.train_seconds)
    assert train.main(["dqn", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    path = run / "checkpoints" / recorded.model
    assert err == (
        f"error: {path} lacks replay, generator, env: it was written by an older version that did not save "
        "the whole training state, so it cannot be resumed exactly; start the run again with --overwrite\n"
    )
    assert torch.load(path, weights_only=True)["q_network"]  # the refusal left the checkpoint alone
