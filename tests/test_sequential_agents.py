import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import METRICS, RESULT_FIELDS

import hashing_gym  # noqa: F401
from agents import drlih, evaluate, rppo, train
from hashing_gym.data import load_dataset
from hashing_gym.envs import SequentialHashBitsEnv

DRLIH_TINY = [
    "--timesteps",
    "1024",
    "--batch-size",
    "8",
    "--samples",
    "2",
    "--hidden",
    "16",
    "--eval-every",
    "1",
]
RPPO_TINY = [
    "--timesteps", "256", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
    "--lstm-hidden", "16", "--hidden", "16", "--bank-refresh", "64", "--checkpoint-every", "128",
    "--eval-every", "128",
]  # fmt: skip


def check_run(out, algo, group):
    results = json.loads((out / "results.json").read_text())
    assert RESULT_FIELDS <= set(results)
    assert (results["algo"], results["env"], results["bits"]) == (algo, "SequentialHashBits-v0", 16)
    assert json.loads((out / "args.json").read_text())["group"] == group
    for key in METRICS:
        assert 0.0 <= results[key] <= 1.0
    assert any((out / "tb").rglob("events.out.tfevents.*"))
    # agents.evaluate recomputes the same metrics from the saved model.
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    again = json.loads((out / "results.json").read_text())
    for key in METRICS:
        assert again[key] == results[key]
    return results


@pytest.mark.parametrize("group", [1, 4])
def test_drlih_cli_writes_results_model_and_checkpoint(tmp_path, capsys, group):
    out = tmp_path / "run"
    argv = ["drlih", *DRLIH_TINY, "--group", str(group), "--checkpoint-every", "1", "--bank-refresh", "1"]
    assert train.main([*argv, "--out", str(out)]) == 0
    results = check_run(out, "drlih", group)
    assert results["env_steps"] == 1024  # 4 (group 4: 16) updates of 16 episodes x 16 / group steps
    assert (out / "model.pt").is_file()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 1024 and [p.name for p in (out / "checkpoints").glob("*.pt")] == [
        state["model"]
    ]
    assert "map=" in capsys.readouterr().out


def test_rppo_cli_writes_results_and_evaluate_agrees(tmp_path):
    out = tmp_path / "run"
    assert train.main(["rppo", *RPPO_TINY, "--group", "4", "--out", str(out)]) == 0
    results = check_run(out, "rppo", 4)
    assert results["env_steps"] == 256
    assert (out / "model.pt").is_file() and (out / "checkpoints" / "state.json").is_file()


def test_feed_forward_ppo_trains_on_sequential_hash_bits_and_evaluate_agrees(tmp_path):
    """The observation holds the code so far, so a feed-forward PPO works on this env too."""
    out = tmp_path / "run"
    tiny = [
        "--timesteps",
        "256",
        "--num-envs",
        "2",
        "--n-steps",
        "32",
        "--batch-size",
        "32",
        "--n-epochs",
        "1",
    ]
    argv = [
        "ppo",
        "--env",
        "SequentialHashBits-v0",
        "--group",
        "4",
        *tiny,
        "--hidden",
        "16",
        "--out",
        str(out),
    ]
    assert train.main(argv) == 0
    results = check_run(out, "ppo", 4)
    assert results["env_steps"] == 256


def test_drlih_same_seed_gives_identical_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert train.main(["drlih", *DRLIH_TINY, "--seed", "3", "--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name / "results.json").read_text()))
    for key in (*METRICS, "env_steps"):
        assert runs[0][key] == runs[1][key]


def test_drlih_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    argv = ["drlih", *DRLIH_TINY, "--group", "1", "--checkpoint-every", "2", "--bank-refresh", "3"]
    assert train.main([*argv, "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())

    calls = {"n": 0}
    original = drlih.rollout

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # Ctrl-C in the middle of the 4th update (the last checkpoint was after the 2nd)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(drlih, "rollout", interrupted)
    assert train.main([*argv, "--out", str(tmp_path / "cut")]) == 130
    assert json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())["num_timesteps"] == 768
    monkeypatch.setattr(drlih, "rollout", original)
    assert train.main(["drlih", "--resume", str(tmp_path / "cut")]) == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    for key in (*METRICS, "env_steps"):
        assert resumed[key] == straight[key]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drlih", "--env", "BinaryCodeTravel-v0"], "drlih trains SequentialHashBits-v0"),
        (["drlih", "--group", "3"], "--group must divide --bits"),
        (["drlih", "--timesteps", "0"], "--timesteps must be positive"),
        (["rppo", "--env", "RankListHash-v0"], "rppo trains SequentialHashBits-v0"),
        (["rppo", "--group", "5"], "--group must divide --bits"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(argv, message, tmp_path, capsys):
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_returns_to_go_and_greedy_encoding_match_the_env():
    rewards = np.array([[0.5, -0.25, 0.25]])
    np.testing.assert_allclose(drlih.returns_to_go(rewards, 1.0), [[0.5, 0.0, 0.25]])
    np.testing.assert_allclose(drlih.returns_to_go(rewards, 0.5), [[0.4375, -0.125, 0.25]])
    # The greedy code of encode_split is what stepping the env with the greedy policy produces.
    torch.manual_seed(0)
    model = drlih.DRLIHPolicy(64, 16, 4, 16)
    env = SequentialHashBitsEnv(bits=16, group=4, split="query")
    codes = drlih.encode_split(model, env.features[:5], 16)
    for index in range(5):
        obs, _ = env.reset(seed=0, options={"index": index})
        h, terminated = None, False
        while not terminated:
            batch = drlih.as_tensors(
                {key: np.asarray(value)[None] for key, value in obs.items()}, torch.device("cpu")
            )
            with torch.no_grad():
                logits, _, h = model(batch, h)
            obs, _, terminated, _, _ = env.step((logits[0] > 0).to(torch.int8).numpy())
        np.testing.assert_array_equal(codes[index], obs["code"])


def test_rppo_encode_split_runs_the_lstm_over_each_items_steps(tmp_path):
    assert train.main(["rppo", *RPPO_TINY, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "args.json").read_text())["group"] == 8  # default: two steps a code
    model = rppo.load_model(tmp_path)
    env = gym.make("SequentialHashBits-v0", bits=16, group=8, split="query").unwrapped
    codes = rppo.encode_split(model, env.features[:4], 16)
    for index in range(4):
        obs, _ = env.reset(seed=0, options={"index": index})
        state, start, terminated = None, np.ones(1, dtype=bool), False
        while not terminated:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, terminated, _, _ = env.step(action)
            start = np.zeros(1, dtype=bool)
        np.testing.assert_array_equal(codes[index], obs["code"])


def test_drlih_learns_a_tiny_problem(tmp_path, monkeypatch):
    """On three well-separated blobs at 8 bits, a few seconds of DRLIH retrieve far above chance."""
    dataset = load_dataset("blobs", num_classes=3, n_per_class=60, dim=4, separation=4.0, query_per_class=10)
    monkeypatch.setattr(drlih, "load_run_dataset", lambda args: dataset)
    args = drlih.Args(
        dataset="blobs",
        bits=8,
        group=4,
        timesteps=40_000,
        batch_size=32,
        hidden=32,
        eval_every=0,
        out=str(tmp_path),
    )
    results = drlih.main(args)
    assert results["map"] > 0.8  # chance: about 1/3


def test_a2c_trains_on_sequential_hash_bits_with_a_dict_policy(tmp_path):
    out = tmp_path / "run"
    argv = ["a2c", "--env", "SequentialHashBits-v0", "--group", "4", "--timesteps", "256", "--num-envs", "2"]
    assert train.main([*argv, "--n-steps", "16", "--eval-every", "0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["algo"] == "a2c" and results["env"] == "SequentialHashBits-v0"
    assert results["env_steps"] == 256
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    assert json.loads((out / "results.json").read_text())["map"] == results["map"]
