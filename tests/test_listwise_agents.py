import json
import signal

import numpy as np
import pytest
import torch
from helpers import METRICS, RESULT_FIELDS

import hashing_gym  # noqa: F401
from agents import a2c, evaluate, ppo, reinforce, train
from agents.common import save_args
from hashing_gym.data import load_dataset
from hashing_gym.envs import RankListHashEnv
from hashing_gym.sb3 import make_vec_env


@pytest.fixture(autouse=True)
def cpu_trainer(monkeypatch):
    """``reinforce`` runs the CPU trainer tested here on any machine (auto picks reinforce-torch on CUDA)."""
    monkeypatch.setattr(train, "on_cuda", lambda device: device.startswith("cuda"))


TINY = {
    "reinforce": [
        "--timesteps",
        "1280",
        "--batch-size",
        "128",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "4",
    ],
    "ppo": [
        "--timesteps",
        "1024",
        "--num-envs",
        "2",
        "--n-steps",
        "256",
        "--batch-size",
        "128",
        "--n-epochs",
        "1",
    ]
    + ["--eval-every", "512", "--checkpoint-every", "512"],
    "a2c": ["--timesteps", "1024", "--num-envs", "2", "--n-steps", "32", "--eval-every", "512"]
    + ["--checkpoint-every", "512"],
}
MODEL_FILES = {"reinforce": "model.pt", "ppo": "model.pt", "a2c": "model.pt"}


@pytest.mark.parametrize("algo", ["reinforce", "ppo", "a2c"])
def test_train_cli_writes_results_model_and_checkpoint_and_evaluate_agrees(algo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([algo, *TINY[algo], "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert RESULT_FIELDS <= set(results)
    assert results["algo"] == algo and results["env"] == "RankListHash-v0" and results["bits"] == 16
    assert results["env_steps"] == int(TINY[algo][1])
    for key in METRICS:
        assert 0.0 <= results[key] <= 1.0
    assert (out / MODEL_FILES[algo]).is_file()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert (out / "checkpoints" / state["model"]).is_file()
    assert any((out / "tb").rglob("events.out.tfevents.*"))
    assert "map=" in capsys.readouterr().out

    # agents.evaluate recomputes the same metrics from the saved model and draws the PR curve.
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    again = json.loads((out / "results.json").read_text())
    for key in METRICS:
        assert again[key] == results[key]
    assert (out / "pr_curve.png").stat().st_size > 0


@pytest.mark.parametrize(
    "options",
    [
        ["--baseline", "learned", "--db-refresh", "0"],
        ["--baseline", "none", "--ties", "stable", "--reward-topk", "50"],
    ],
)
def test_reinforce_options_run(options, tmp_path):
    out = tmp_path / "run"
    argv = ["reinforce", "--timesteps", "512", "--batch-size", "128", "--eval-every", "0", "--out", str(out)]
    assert train.main([*argv, *options]) == 0
    assert json.loads((out / "results.json").read_text())["env_steps"] == 512


def test_reinforce_same_seed_gives_identical_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert (
            train.main(["reinforce", *TINY["reinforce"], "--seed", "3", "--out", str(tmp_path / name)]) == 0
        )
        runs.append(json.loads((tmp_path / name / "results.json").read_text()))
    for key in (*METRICS, "env_steps"):
        assert runs[0][key] == runs[1][key]


def test_reinforce_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    argv = ["reinforce", "--timesteps", "1536", "--batch-size", "128", "--eval-every", "0"]
    argv += ["--checkpoint-every", "5", "--db-refresh", "2", "--seed", "1"]
    assert train.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())

    # Ctrl-C in the middle of the 8th update: the update completes, is checkpointed, the run stops.
    calls = {"n": 0}
    act = RankListHashEnv.act

    def interrupting_act(self, indices, codes):
        calls["n"] += 1
        if calls["n"] == 8:
            signal.raise_signal(signal.SIGINT)
        return act(self, indices, codes)

    monkeypatch.setattr(RankListHashEnv, "act", interrupting_act)
    out = tmp_path / "cut"
    assert train.main([*argv, "--out", str(out)]) == 130
    monkeypatch.setattr(RankListHashEnv, "act", act)
    assert not (out / "results.json").exists()
    assert json.loads((out / "checkpoints" / "state.json").read_text())["num_timesteps"] == 8 * 128
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["state.json", "step_1024.pt"]

    assert train.main(["reinforce", "--resume", str(out)]) == 0
    resumed = json.loads((out / "results.json").read_text())
    for key in (*METRICS, "env_steps"):
        assert resumed[key] == whole[key]
    np.testing.assert_array_equal(
        reinforce.encode_split(reinforce.load_model(out), load_dataset("digits").query.features, 16),
        reinforce.encode_split(
            reinforce.load_model(tmp_path / "whole"), load_dataset("digits").query.features, 16
        ),
    )


def test_reinforce_encoding_is_the_deterministic_code(tmp_path):
    model = reinforce.QueryNetwork(64, 16, [32])
    features = load_dataset("digits").query.features
    with torch.no_grad():
        expected = (torch.sigmoid(model(torch.tensor(np.array(features)))) > 0.5).numpy()
    np.testing.assert_array_equal(reinforce.encode_split(model, features, 16), expected)
    reinforce.save_model(model, tmp_path / reinforce.MODEL_FILE)
    np.testing.assert_array_equal(
        reinforce.encode_split(reinforce.load_model(tmp_path), features, 16), expected
    )
    with pytest.raises(ValueError, match="encodes 16 bits, asked for 32"):
        reinforce.encode_split(model, features, 32)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reinforce", "--env", "BinaryCodeTravel-v0"], "reinforce trains RankListHash-v0"),
        (["ppo", "--env", "BinaryCodeTravel-v0"], "ppo trains RankListHash-v0 or SequentialHashBits-v0"),
        (["reinforce", "--baseline", "median"], "--baseline must be one of mean, learned, none"),
        (["reinforce", "--batch-size", "0"], "--batch-size must be positive"),
        (["reinforce", "--hidden", "64,x"], "--hidden must be comma-separated integers"),
        (["ppo", "--n-steps", "0"], "--n-steps must be positive"),
        (["a2c", "--env", "BinaryCodeTravel-v0"], "a2c trains RankListHash-v0 or SequentialHashBits-v0"),
        (["a2c", "--n-steps", "0"], "--n-steps must be positive"),
        (["ppo", "--db-refresh", "0"], "--database fixed with --db-refresh 0 would rank against random"),
        (["a2c", "--database", "shared"], "--database must be one of fixed, bank"),
        (["a2c", "--activation", "gelu"], "--activation must be one of relu, tanh"),
        (["reinforce", "--timesteps", "0"], "--timesteps must be positive"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(argv, message, tmp_path, capsys):
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_database_refresh_gives_every_copy_the_deterministic_policys_codes(tmp_path):
    """ppo's default: every copy ranks against the current policy's codes of the split, not random ones."""
    dataset = load_dataset("digits")
    args = ppo.Args(num_envs=3, n_steps=8, batch_size=8, out=str(tmp_path))
    env = make_vec_env(ppo.ENV_ID, n_envs=3, seed=0, dataset=dataset, bits=16, database="fixed")
    model = ppo.make_model(args, env, tmp_path, ppo.check_args(args))
    env.reset()
    before = env.get_attr("database_codes")[0].copy()  # the env's random start codes
    refresh = ppo.DatabaseRefresh(dataset.train.features, 16, 100, ppo.encode_split)
    refresh.init_callback(model)
    refresh.on_rollout_start()
    codes = ppo.encode_split(model, dataset.train.features, 16)
    after = env.get_attr("database_codes")[0]
    assert after.shape == (3, dataset.train.n, 16) and not np.array_equal(before[0], codes)
    assert all(np.array_equal(copy, codes) for copy in after)
    assert refresh.get_state() == {"next": 100}
    env.env_method("set_database_codes", np.zeros_like(codes))  # a refresh before step 100 would undo it
    refresh.on_rollout_start()
    assert not env.get_attr("database_codes")[0].any()


def test_a_run_recorded_before_the_new_defaults_loads_as_it_was_trained(tmp_path):
    """args.json without --activation (older runs: SB3's Tanh) rebuilds a Tanh network, not today's ReLU;
    without --anneal-lr, a constant learning rate."""
    old = ["--activation", "tanh", "--ortho-init", "--database", "bank", "--db-refresh", "0"]
    old += ["--no-anneal-lr"]
    assert train.main(["ppo", *TINY["ppo"], *old, "--out", str(tmp_path)]) == 0
    features = load_dataset("digits").query.features
    codes = ppo.encode_split(ppo.load_model(tmp_path), features, 16)
    recorded = json.loads((tmp_path / "args.json").read_text())
    for key in ("activation", "ortho_init", "database", "db_refresh", "anneal_lr"):
        del recorded[key]
    (tmp_path / "args.json").write_text(json.dumps(recorded))
    model = ppo.load_model(tmp_path)
    assert isinstance(model.policy.mlp_extractor.policy_net[1], torch.nn.Tanh)
    assert model.lr_schedule(0.0) == model.lr_schedule(1.0) == ppo.Args().learning_rate
    np.testing.assert_array_equal(ppo.encode_split(model, features, 16), codes)


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_the_learning_rate_falls_linearly_to_zero_by_default(algo, tmp_path):
    assert train.main([algo, *TINY[algo], "--out", str(tmp_path)]) == 0
    model = {"ppo": ppo, "a2c": a2c}[algo].load_model(tmp_path)
    rate = json.loads((tmp_path / "args.json").read_text())["learning_rate"]
    assert [model.lr_schedule(left) for left in (1.0, 0.25, 0.0)] == pytest.approx([rate, rate / 4, 0.0])


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_resume_of_a_run_without_checkpoint_is_refused(algo, tmp_path, capsys):
    assert train.main([algo, "--resume", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    module = {"reinforce": reinforce, "ppo": ppo}[algo]
    save_args(tmp_path, module.Args(out=str(tmp_path)), algo)  # a run that died before its first checkpoint
    assert train.main([algo, "--resume", str(tmp_path)]) == 2
    assert "no checkpoint to continue from" in capsys.readouterr().err


def test_reinforce_learns_a_tiny_problem(tmp_path):
    """On well-separated blobs at 8 bits, a second of REINFORCE retrieves far above chance."""
    args = reinforce.Args(
        dataset="blobs",
        bits=8,
        timesteps=30_000,
        batch_size=128,
        eval_every=0,
        checkpoint_every=0,
        out=str(tmp_path),
    )
    results = reinforce.main(args)
    chance = 1 / load_dataset("blobs").num_classes
    assert results["map"] > 0.8 > 5 * chance
