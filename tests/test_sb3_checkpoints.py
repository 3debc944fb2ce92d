"""Checkpoints of the stable-baselines3 trainers: data only, exact resumes, refusals (issue #16).

- A run stopped at a checkpoint and resumed ends bitwise where the uninterrupted run ends
  (weights, optimizer, replay buffer, RNG states, envs, step count, results), for dqn-sb3, ppo,
  a2c and rppo; a saver that drops any of these makes the comparison fail.
- A run SIGKILLed at a random point, in the middle of a checkpoint's write included, resumes to
  the same end.
- Files that would run code (an SB3 zip's ``data`` entry, a replay ``.pkl``) are refused by
  ``agents.evaluate``, ``--resume`` and ``agents.convert`` without ``--trust-pickle``; nothing runs.
- ``agents.convert --trust-pickle`` turns an old run folder into one that evaluates and resumes.
"""

import copy
import json
import pickle
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from helpers import Payload, hostile_zip
from sb3_state_check import (
    assert_same_training_state,
    components,
    differences,
    interrupt_at_env_step,
    record_writes,
    run_killed,
    training_state,
)
from stable_baselines3.common.env_util import make_vec_env

import hashing_gym  # noqa: F401 - registers the environments
from agents import common, convert, dqn, evaluate, sb3_state, train
from hashing_gym.data import load_dataset

# Tiny data and networks: each run takes about a second after the imports.
TINY_DATA = [
    "--dataset", "blobs", "--dataset-options", "num_classes=4,n_per_class=30,dim=8,query_per_class=5",
    "--bits", "8", "--seed", "1",
]  # fmt: skip
RUNS = {
    "dqn-sb3": [
        "--timesteps", "240", "--learning-starts", "40", "--num-envs", "2", "--batch-size", "16",
        "--hidden", "16,16", "--target-update-interval", "30", "--buffer-size", "160", "--eval-every", "0",
        "--checkpoint-every", "60",
    ],  # a buffer of 80 rows per env: it wraps around (full, pos) before the end
    "ppo": [
        "--timesteps", "256", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "2",
        "--hidden", "16", "--eval-every", "64", "--checkpoint-every", "64",
    ],
    "a2c": [
        "--timesteps", "256", "--num-envs", "2", "--n-steps", "16", "--hidden", "16", "--eval-every", "0",
        "--checkpoint-every", "64",
    ],
    "rppo": [
        "--timesteps", "256", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
        "--lstm-hidden", "8", "--hidden", "8", "--group", "4", "--bank-refresh", "96",
        "--checkpoint-every", "64", "--eval-every", "0",
    ],  # bank refreshes at 0, 128 and 256: the cut below falls between two
}  # fmt: skip
# The vec env step during which Ctrl-C arrives: the run checkpoints at the next rollout start.
CUT = {"dqn-sb3": 85, "ppo": 45, "a2c": 21, "rppo": 50}  # dqn-sb3: its replay buffer has wrapped


def argv(trainer, out):
    return [trainer, *TINY_DATA, *RUNS[trainer], "--out", str(out)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run per trainer, and the names of the files it wrote, in order."""
    runs = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for trainer in RUNS:
            folder = tmp_path_factory.mktemp("whole") / trainer
            writes = record_writes(monkeypatch)
            assert train.main(argv(trainer, folder)) == 0
            monkeypatch.undo()
            runs[trainer] = (folder, writes)
    return runs


def copy_run(finished, trainer, tmp_path):
    folder = tmp_path / trainer
    shutil.copytree(finished[trainer][0], folder, ignore=shutil.ignore_patterns(".lock"))
    return folder


# --------------------------------------------------------------------------- exact resumes


@pytest.mark.parametrize("trainer", list(RUNS))
def test_a_resumed_run_ends_bitwise_where_the_uninterrupted_run_ends(
    trainer, finished, tmp_path, monkeypatch
):
    out = tmp_path / "cut"
    restore = interrupt_at_env_step(monkeypatch, CUT[trainer])
    assert train.main(argv(trainer, out)) == 130
    restore()
    assert not (out / "results.json").exists()
    stopped = training_state(out, trainer)["num_timesteps"]
    assert 0 < stopped < int(RUNS[trainer][1])

    assert train.main([trainer, "--resume", str(out)]) == 0
    assert_same_training_state(out, finished[trainer][0], trainer)
    # and the final models, which agents.evaluate reads
    mine, theirs = (
        torch.load(folder / "model.pt", weights_only=True) for folder in (out, finished[trainer][0])
    )
    assert not differences(mine, theirs)


def replace_part(part):
    """How a saver that drops ``part`` writes it: as a freshly built model has it (a resume keeps that)."""

    def replace(state, fresh):
        if part == "weights":
            state["parameters"]["policy"] = fresh["parameters"]["policy"]
        elif part == "optimizer":
            state["parameters"]["policy.optimizer"] = fresh["parameters"]["policy.optimizer"]
        elif part == "step count":
            state["counters"] = fresh["counters"]
        elif part == "rng":
            state["rng"] = fresh["rng"]
        elif part == "env":
            for key in ("env", "monitor", "last_obs", "last_episode_starts"):
                state[key] = fresh[key]
        return state

    return replace


@pytest.mark.parametrize("part", ["weights", "optimizer", "replay", "rng", "step count", "env"])
def test_a_saver_that_drops_a_part_of_the_state_fails_the_comparison(part, finished, tmp_path, monkeypatch):
    """The check above can fail: drop one part from the checkpoints and the resumed run differs there."""
    trainer, fresh = "dqn-sb3", {}
    capture, replay_arrays = sb3_state.capture, sb3_state.replay_arrays
    on_training_start = common.CheckpointEvery._on_training_start

    def record_fresh(self):  # the first learn() of the run: the model exactly as built
        if not fresh:
            fresh["state"] = copy.deepcopy(capture(self.model, self.stateful))
            fresh["replay"] = copy.deepcopy(replay_arrays(self.model.replay_buffer))
        on_training_start(self)

    monkeypatch.setattr(common.CheckpointEvery, "_on_training_start", record_fresh)
    monkeypatch.setattr(
        sb3_state,
        "capture",
        lambda model, callbacks=(): replace_part(part)(capture(model, callbacks), fresh["state"]),
    )
    if part == "replay":
        monkeypatch.setattr(sb3_state, "replay_arrays", lambda buffer: fresh["replay"])
    out = tmp_path / "cut"
    restore = interrupt_at_env_step(monkeypatch, CUT[trainer])
    assert train.main(argv(trainer, out)) == 130
    restore()
    monkeypatch.undo()  # the resumed run saves as it should: only the dropped part is lost

    assert train.main([trainer, "--resume", str(out)]) == 0
    found = differences(training_state(out, trainer), training_state(finished[trainer][0], trainer))
    assert part in components(found), (part, found[:8])
    with pytest.raises(AssertionError, match="differences"):
        assert_same_training_state(out, finished[trainer][0], trainer)


@pytest.mark.parametrize("trainer", sorted(RUNS))
def test_a_run_killed_in_the_middle_of_a_write_resumes_to_the_same_end(trainer, finished, tmp_path):
    """SIGKILL after a random file write's temporary file is written, before its rename; then --resume."""
    writes = finished[trainer][1]
    first_commit = writes.index("state.json") + 1  # before it, there is no checkpoint to resume
    at = random.randint(first_commit + 1, len(writes))
    out = tmp_path / "killed"
    child = run_killed(argv(trainer, out), "write", at)
    context = f"killed at write {at} of {len(writes)} ({writes[at - 1]}): {child.stderr[-2000:]}"
    assert child.returncode == -9, context
    assert not (out / "results.json").exists(), context
    assert train.main([trainer, "--resume", str(out)]) == 0, context
    assert_same_training_state(out, finished[trainer][0], trainer)
    assert not list((out / "checkpoints").glob(".*.tmp")), context  # the killed write's leftovers


# --------------------------------------------------------------------------- refusals


def plant_checkpoint(folder, trainer, files, replay=None):
    """Replace the run's checkpoints by one ``state.json`` naming ``files`` (name -> bytes)."""
    directory = folder / "checkpoints"
    shutil.rmtree(directory)
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)
    model = next(iter(files))
    state = {"format": 1, "trainer": trainer, "num_timesteps": 64, "train_seconds": 1.0, "model": model}
    state["replay_buffer"] = replay
    (directory / "state.json").write_text(json.dumps(state))


def one_error_line(capsys, *names):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def test_the_payloads_would_run_if_loaded(tmp_path):
    """The hostile files below are live: loading them with pickle or SB3 creates the marker."""
    from stable_baselines3 import PPO

    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    (tmp_path / "model.zip").write_bytes(hostile_zip(marker))
    with pytest.raises(Exception):  # noqa: B017 - SB3 fails after the payload ran, in any way
        PPO.load(tmp_path / "model.zip")
    assert marker.exists()


def test_an_sb3_zip_or_a_replay_pickle_in_a_run_folder_is_refused_and_never_run(finished, tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = copy_run(finished, "ppo", tmp_path)
    (folder / "model.pt").unlink()
    (folder / "model.zip").write_bytes(hostile_zip(marker))
    assert evaluate.main([str(folder), "--embedding", "none"]) == 2
    line = one_error_line(capsys, "model.zip", "pickle", f"python -m agents.convert {folder} --trust-pickle")

    plant_checkpoint(folder, "ppo", {"step_64.zip": hostile_zip(marker)})
    assert train.main(["ppo", "--resume", str(folder)]) == 2
    one_error_line(capsys, "step_64.zip", "pickle", "--trust-pickle")

    folder = copy_run(finished, "dqn-sb3", tmp_path)
    state = json.loads((folder / "checkpoints" / "state.json").read_text())
    model = (folder / "checkpoints" / state["model"]).read_bytes()
    payload = {"step_64.pt": model, "step_64_replay.pkl": pickle.dumps(Payload(marker))}
    plant_checkpoint(folder, "dqn-sb3", payload, replay="step_64_replay.pkl")
    assert train.main(["dqn-sb3", "--resume", str(folder)]) == 2
    one_error_line(capsys, "step_64_replay.pkl", "pickle", "--trust-pickle")

    assert convert.main([str(folder)]) == 2
    one_error_line(capsys, "step_64_replay.pkl", "--trust-pickle")
    assert not marker.exists()
    assert "pickle" in line


def test_another_trainers_checkpoint_or_model_is_refused(finished, tmp_path, capsys):
    folder = copy_run(finished, "ppo", tmp_path)
    shutil.rmtree(folder / "checkpoints")
    shutil.copytree(finished["dqn-sb3"][0] / "checkpoints", folder / "checkpoints")
    assert train.main(["ppo", "--resume", str(folder)]) == 2
    one_error_line(capsys, "written by dqn-sb3, not ppo", "agents.train dqn-sb3 --resume")
    state = json.loads((folder / "checkpoints" / "state.json").read_text())
    (folder / "checkpoints" / "state.json").write_text(json.dumps({**state, "trainer": "ppo"}))
    assert train.main(["ppo", "--resume", str(folder)]) == 2
    one_error_line(capsys, state["model"], "written by dqn-sb3, not ppo")

    shutil.copy(finished["dqn-sb3"][0] / "model.pt", folder / "model.pt")
    assert evaluate.main([str(folder), "--embedding", "none"]) == 2
    one_error_line(capsys, "model.pt was written by dqn-sb3, not ppo")


def test_a_checkpoint_of_another_env_is_refused_naming_the_difference(finished, tmp_path, capsys):
    folder = copy_run(finished, "a2c", tmp_path)
    recorded = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**recorded, "bits": 16}))
    assert train.main(["a2c", "--resume", str(folder)]) == 2
    one_error_line(capsys, "is not a checkpoint of this run", "action space MultiBinary(8)")


def test_a_checkpoint_of_one_env_object_per_copy_is_refused_naming_why(finished, tmp_path, capsys):
    """Checkpoints from before the trainers stepped the batched env hold one snapshot per env object."""
    folder = copy_run(finished, "a2c", tmp_path)
    state = json.loads((folder / "checkpoints" / "state.json").read_text())
    path = folder / "checkpoints" / state["model"]
    payload = torch.load(path, weights_only=True)
    assert set(payload["env"]) == {"batched"} and set(payload["monitor"]) == {"returns", "lengths", "count"}
    payload["env"], payload["monitor"] = [payload["env"]["batched"]] * 2, [{}, {}]  # DummyVecEnv's form
    torch.save(payload, path)
    assert train.main(["a2c", "--resume", str(folder)]) == 2
    one_error_line(capsys, state["model"], "one env snapshot per env object (DummyVecEnv)", "--overwrite")


# --------------------------------------------------------------------------- conversion


def old_dqn_run(finished, tmp_path):
    """A dqn-sb3 run folder as earlier versions wrote it: SB3 zips and a pickled replay buffer."""
    folder = copy_run(finished, "dqn-sb3", tmp_path)
    original = dqn.load_model(folder, device="cpu")
    original.save(folder / "model.zip")
    (folder / "model.pt").unlink()
    args = dqn.Args(
        **{k: v for k, v in json.loads((folder / "args.json").read_text()).items() if k != "algo"}
    )
    dataset = common.load_run_dataset(args)
    env = make_vec_env(
        "BinaryCodeTravel-v0",
        n_envs=args.num_envs,
        seed=args.seed,
        env_kwargs={"dataset": dataset, "bits": args.bits},
    )
    model = dqn.make_model(args, env, folder, dqn.check_args(args))
    model.learn(60)
    directory = folder / "checkpoints"
    shutil.rmtree(directory)
    directory.mkdir()
    model.save(directory / "step_60.zip")
    model.save_replay_buffer(directory / "step_60_replay.pkl")
    state = {"format": 1, "trainer": "dqn-sb3", "num_timesteps": 60, "train_seconds": 2.0}
    state |= {"model": "step_60.zip", "replay_buffer": "step_60_replay.pkl"}
    (directory / "state.json").write_text(json.dumps(state))
    return folder, original, model


def test_convert_turns_an_old_run_folder_into_one_that_evaluates_and_resumes(finished, tmp_path, capsys):
    folder, original, trained = old_dqn_run(finished, tmp_path)
    assert evaluate.main([str(folder), "--embedding", "none"]) == 2
    one_error_line(capsys, "model.zip", "--trust-pickle")
    assert convert.main([str(folder)]) == 2
    one_error_line(capsys, "model.zip", "step_60.zip", "step_60_replay.pkl", "--trust-pickle")

    assert convert.main([str(folder), "--trust-pickle"]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = dqn.load_model(folder).policy.state_dict()
    for key, value in original.policy.state_dict().items():
        assert torch.equal(converted[key], value), key
    replay = training_state(folder, "dqn-sb3")["replay"]
    assert int(replay["pos"]) == trained.replay_buffer.pos and replay["actions"].shape[0] == 30
    np.testing.assert_array_equal(replay["actions"], trained.replay_buffer.actions[:30])

    before = json.loads((finished["dqn-sb3"][0] / "results.json").read_text())
    assert evaluate.main([str(folder), "--embedding", "none"]) == 0
    assert json.loads((folder / "results.json").read_text())["map"] == before["map"]
    assert train.main(["dqn-sb3", "--resume", str(folder)]) == 0
    assert "converted from an old format" in capsys.readouterr().err
    assert json.loads((folder / "results.json").read_text())["env_steps"] == int(RUNS["dqn-sb3"][1])
    assert (folder / "model.zip").is_file()  # the old files stay


def test_convert_hands_a_baselines_pickle_to_the_baselines_converter_only_when_trusted(
    tmp_path, monkeypatch, capsys
):
    marker = tmp_path / "ran"
    folder = tmp_path / "lsh"
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps({"algo": "lsh"}))
    (folder / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    assert convert.main([str(folder)]) == 2
    one_error_line(capsys, "model.pkl", "--trust-pickle")
    assert not marker.exists()

    from agents import baselines

    calls = []

    def converter(run, legacy):  # stands in for agents.baselines' converter of the unpickled object
        calls.append(Path(run))
        (Path(run) / "model.npz").write_bytes(b"")

    monkeypatch.setattr(baselines, "convert_legacy_model", converter)
    assert convert.main([str(folder), "--trust-pickle"]) == 0
    assert calls == [folder] and f"wrote {folder / 'model.npz'}" in capsys.readouterr().out
    assert marker.exists()  # trusted: the file was unpickled, and its code ran, as --trust-pickle warns


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent/run"], "/nonexistent/run is not a folder"),
        (["--trust-pickle", "{empty}"], "holds no run"),
    ],
)
def test_convert_mistakes_are_one_error_line(argv, message, tmp_path, capsys):
    assert convert.main([arg.replace("{empty}", str(tmp_path)) for arg in argv]) == 2
    one_error_line(capsys, message)


def test_convert_of_a_run_in_todays_format_changes_nothing(finished, tmp_path, capsys):
    folder = copy_run(finished, "ppo", tmp_path)
    before = sorted(p.name for p in folder.rglob("*"))
    assert convert.main([str(folder), "--trust-pickle"]) == 0
    assert "nothing to convert" in capsys.readouterr().out
    assert sorted(p.name for p in folder.rglob("*")) == before


# --------------------------------------------------------------------------- the data forms


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-2.5, 2.5, shape=(3,), dtype=np.float32),
        spaces.Discrete(17),
        spaces.Discrete(4, start=1),
        spaces.MultiBinary(16),
        spaces.MultiBinary((10, 16)),
        spaces.MultiDiscrete([3, 4]),
        spaces.Dict({"code": spaces.MultiBinary(8), "step": spaces.Discrete(2)}),
    ],
)
def test_spaces_round_trip_as_data(space):
    assert sb3_state.space_from_data(sb3_state.space_to_data(space)) == space


def test_arrays_round_trip_inside_a_weights_only_file(tmp_path):
    values = {
        "scalar": np.int64(7),
        "zero_d": np.asarray(5, dtype=np.int64),
        "bank": np.arange(6, dtype=np.uint64).reshape(2, 3) << np.uint64(60),
        "mask": np.array([[True, False]]),
        "strided": np.arange(10, dtype=np.float32)[::3],
        "nested": [{"x": np.ones((0, 2), dtype=np.int8)}],
    }
    torch.save(sb3_state.encode(values), tmp_path / "state.pt")
    back = sb3_state.decode(torch.load(tmp_path / "state.pt", weights_only=True))
    assert back["scalar"] == 7 and back["zero_d"].shape == ()
    for key in ("zero_d", "bank", "mask", "strided"):
        assert back[key].dtype == values[key].dtype
        np.testing.assert_array_equal(back[key], values[key])
    assert back["nested"][0]["x"].shape == (0, 2)
    with pytest.raises(TypeError, match="object array"):
        sb3_state.encode(np.array([object()]))


def test_a_saved_env_snapshot_continues_the_same_episode():
    dataset = load_dataset("blobs", num_classes=4, n_per_class=30, dim=8, query_per_class=5)
    kwargs = {"dataset": dataset, "bits": 8, "group": 2}
    env = make_vec_env("SequentialHashBits-v0", n_envs=2, seed=3, env_kwargs=kwargs)
    env.reset()
    env.step(np.ones((2, 2), dtype=np.int8))
    snapshots = env.env_method("get_state")
    expected = [env.step(np.zeros((2, 2), dtype=np.int8)) for _ in range(6)]
    for index, snapshot in enumerate(snapshots):
        env.env_method("set_state", snapshot, indices=[index])
    for obs, rewards, dones, _ in expected:
        again = env.step(np.zeros((2, 2), dtype=np.int8))
        np.testing.assert_array_equal(again[1], rewards)
        np.testing.assert_array_equal(again[2], dones)
        for key in obs:
            np.testing.assert_array_equal(again[0][key], obs[key])
    with pytest.raises(ValueError, match="state"):
        env.env_method("set_state", {**snapshots[0], "state": {"bank": np.zeros(1)}}, indices=[0])


def test_a_second_ctrl_c_interrupts_at_once(tmp_path, monkeypatch, capsys):
    """The first Ctrl-C waits for the rollout's end to checkpoint; a second one does not wait."""
    from hashing_gym.sb3 import HashingVecEnv

    step_wait, calls = HashingVecEnv.step_wait, {"n": 0}

    def interrupting(self):
        calls["n"] += 1
        if calls["n"] in (5, 6):
            signal.raise_signal(signal.SIGINT)
        return step_wait(self)

    monkeypatch.setattr(HashingVecEnv, "step_wait", interrupting)
    out = tmp_path / "cut"
    assert train.main(argv("ppo", out)) == 130
    assert calls["n"] == 6  # stopped in the 6th step, not at the rollout's end (16 steps)
    assert not (out / "checkpoints" / "state.json").exists()
    assert "interrupted" in capsys.readouterr().err


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it():
    """``nohup cmd &`` and background jobs of scripts start with SIGINT ignored: a trainer leaves it so."""
    from agents.common import InterruptRequest

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (conftest restores the default after the test)
    with InterruptRequest() as request:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
    assert not request.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with InterruptRequest() as request:
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: a request, not an interrupt
    assert request.requested and signal.getsignal(signal.SIGINT) is signal.default_int_handler
