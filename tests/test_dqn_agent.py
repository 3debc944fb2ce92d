import functools
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import RESULT_FIELDS
from sb3_state_check import assert_same_training_state, run_killed, training_state
from stable_baselines3.common.env_util import make_vec_env

import hashing_gym.sb3
from agents import dqn, evaluate, train

TINY = ["--timesteps", "400", "--learning-starts", "100", "--num-envs", "2", "--eval-every", "200"]


def test_train_cli_writes_results_model_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["dqn-sb3", *TINY, "--checkpoint-every", "200", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert RESULT_FIELDS <= set(results)
    assert results["algo"] == "dqn" and results["env"] == "BinaryCodeTravel-v0" and results["bits"] == 16
    assert results["env_steps"] == 400
    for key in ("map", "map_tie_aware", "map_at_k", "precision_radius2"):
        assert 0.0 <= results[key] <= 1.0
    assert (out / "model.pt").is_file()
    # Only the newest complete checkpoint is kept: model, replay buffer and the state naming them.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "state.json",
        "step_400.pt",
        "step_400_replay.npz",
    ]
    assert any((out / "tb").rglob("events.out.tfevents.*"))
    assert "map=" in capsys.readouterr().out

    # agents.evaluate recomputes the same metrics from the saved model and draws the PR curve.
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    again = json.loads((out / "results.json").read_text())
    for key in ("map", "map_tie_aware", "map_at_k", "precision_radius2"):
        assert again[key] == results[key]
    assert (out / "pr_curve.png").stat().st_size > 0


def test_same_seed_gives_identical_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert train.main(["dqn-sb3", *TINY, "--seed", "3", "--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name / "results.json").read_text()))
    for key in ("map", "map_tie_aware", "map_at_k", "precision_radius2", "env_steps"):
        assert runs[0][key] == runs[1][key]


@pytest.mark.parametrize("batched", [True, False])
def test_exploratory_actions_are_the_teachers(batched):
    """Through the batched env the trainer steps (one call for all copies) and through a DummyVecEnv."""
    reference = make_vec_env("BinaryCodeTravel-v0", n_envs=3, seed=0, env_kwargs={"bits": 16})
    env = hashing_gym.sb3.make_vec_env("BinaryCodeTravel-v0", 3, seed=0, bits=16) if batched else reference
    model = dqn.GuidedDQN("MultiInputPolicy", env, learning_starts=0, seed=0)
    model._last_obs = env.reset()
    reference_obs = reference.reset() if batched else model._last_obs
    np.testing.assert_array_equal(model._last_obs["code"], reference_obs["code"])
    model.exploration_rate = 1.0
    actions, buffer_actions = model._sample_action(0, n_envs=3)
    np.testing.assert_array_equal(actions, reference.env_method("expert_action"))
    np.testing.assert_array_equal(actions, buffer_actions)
    model.exploration_rate = 0.0
    greedy, _ = model._sample_action(0, n_envs=3)
    np.testing.assert_array_equal(greedy, model.predict(model._last_obs, deterministic=True)[0])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sarsa"], "unknown algorithm 'sarsa'"),
        (["dqn-sb3", "--env", "RankListHash-v0"], "dqn trains BinaryCodeTravel-v0"),
        (["dqn-sb3", "--dataset", "imagenet"], "imagenet"),
        (["dqn-sb3", "--timesteps", "0"], "--timesteps must be positive"),
        (["dqn", "--env", "RankListHash-v0"], "dqn trains BinaryCodeTravel-v0"),
        (["dqn", "--timesteps", "0"], "--timesteps must be positive"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(argv, message, tmp_path, capsys):
    assert train.main([*argv, "--out", str(tmp_path / "run")] if argv[0] != "sarsa" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_evaluate_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


@pytest.mark.slow
def test_dqn_learns_a_tiny_problem(tmp_path, monkeypatch):
    """On three well-separated blobs at 8 bits, a short guided DQN run retrieves far above chance."""
    from hashing_gym.data import load_dataset

    dataset = load_dataset("blobs", num_classes=3, n_per_class=100, dim=4, separation=4.0, query_per_class=10)
    monkeypatch.setattr(dqn, "load_run_dataset", lambda args: dataset)
    args = dqn.Args(
        dataset="blobs",
        bits=8,
        timesteps=3000,
        learning_starts=500,
        num_envs=2,
        eval_every=0,
        out=str(tmp_path),
    )
    results = dqn.main(args)
    assert results["map"] > 0.8  # chance: about 1/3


def test_run_killed_mid_way_resumes_to_the_uninterrupted_runs_end(tmp_path):
    """SIGKILL at a random env step, then --resume: bitwise the uninterrupted run's state and results."""
    argv = ["dqn-sb3", "--device", "cpu", "--timesteps", "300", "--learning-starts", "60", "--num-envs", "2"]
    argv += ["--hidden", "32,32", "--batch-size", "32", "--buffer-size", "200", "--eval-every", "0"]
    argv += ["--checkpoint-every", "100", "--seed", "4"]
    assert train.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    at = random.randint(51, 150)  # vec env steps (2 transitions): after the first checkpoint, up to the end
    out = tmp_path / "killed"
    child = run_killed([*argv, "--out", str(out)], "step", at)
    assert child.returncode == -9, (at, child.stderr[-2000:])
    assert not (out / "results.json").exists()
    assert 100 <= training_state(out, "dqn-sb3")["num_timesteps"] < 300
    assert train.main(["dqn-sb3", "--resume", str(out)]) == 0
    assert_same_training_state(out, tmp_path / "whole", "dqn-sb3")


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path):
    """SIGINT mid-run: exit status 130, a checkpoint of the steps done so far, nothing else lost."""
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "agents.train",
        "dqn-sb3",
        "--device",
        "cpu",
        "--timesteps",
        "50000",
        "--learning-starts",
        "100",
    ]
    command += ["--num-envs", "2", "--eval-every", "0", "--checkpoint-every", "1000000", "--out", str(out)]
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored: restore it.
    restore_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=restore_sigint
    )
    deadline = time.monotonic() + 120
    # The TensorBoard folder appears when learn() starts: from then on Ctrl-C must checkpoint.
    while not list(out.glob("tb/*/events*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert "interrupted: the last checkpoint is in the run folder" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert 0 < state["num_timesteps"] < 50000  # the periodic checkpoint never fired: this is Ctrl-C's
    assert not (out / "results.json").exists()


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    assert train.main(["dqn-sb3", "--resume", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_evaluation_keeps_torch_on_the_threads_it_was_given():
    """numba's OpenMP layer used to lift torch from 1 thread to all cores after an evaluation."""
    script = (
        "import numpy as np, torch; from agents.common import retrieval_results, set_threads; "
        "from hashing_gym.data import load_dataset; set_threads(1); d = load_dataset('digits'); "
        "rng = np.random.default_rng(0); q = rng.integers(0, 2, (d.query.n, 16), dtype=np.uint8); "
        "db = rng.integers(0, 2, (d.database.n, 16), dtype=np.uint8); "
        "retrieval_results(d, q, db, 100); print(torch.get_num_threads())"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "1"
