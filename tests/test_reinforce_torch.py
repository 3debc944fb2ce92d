import json
import signal

import numpy as np
import pytest
import torch
from helpers import METRICS, RESULT_FIELDS
from resume_check import TRAINERS, assert_same_run, reference, resume_final_state, seed_globals

from agents import evaluate, reinforce, reinforce_torch, train
from hashing_gym.data import load_dataset
from hashing_gym.envs import RankListHashEnv
from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv

SMALL = [
    "--device",
    "cpu",
    "--timesteps",
    "2048",
    "--batch-size",
    "256",
    "--num-envs",
    "128",
    "--hidden",
    "32",
]


def test_reinforce_on_cuda_dispatches_to_the_torch_trainer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device auto: the CPU trainer
    assert train.resolve_algorithm("reinforce", ["--device", "cuda"]) == "reinforce-torch"
    assert train.resolve_algorithm("reinforce", ["--device=cuda:1", "--num-envs", "64"]) == "reinforce-torch"
    assert train.resolve_algorithm("reinforce", ["--device", "cpu"]) == "reinforce"
    assert train.resolve_algorithm("reinforce", []) == "reinforce"
    # The recurrent DRLIH trainer keeps SequentialHashBits-v0, on any device.
    assert (
        train.resolve_algorithm("reinforce", ["--env", "SequentialHashBits-v0", "--device", "cuda"])
        == "drlih"
    )
    assert train.resolve_algorithm("dqn", ["--device", "cuda"]) == "dqn-torch"


def test_cli_writes_results_model_checkpoint_and_curve_and_evaluate_agrees(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["reinforce-torch", *SMALL, "--eval-every", "4", "--checkpoint-every", "6", "--out", str(out)]
    assert train.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert RESULT_FIELDS <= set(results)
    assert results["algo"] == "reinforce" and results["trainer"] == "reinforce-torch"
    assert results["env_steps"] == 2048 and results["updates"] == 8 and results["num_envs"] == 128
    # Evaluations every 4 updates: the last one is the final evaluation, not repeated.
    assert [point["env_steps"] for point in results["curve"]] == [1024, 2048]
    assert results["curve"][-1]["map"] == results["map"]
    for key in METRICS:
        assert 0.0 <= results[key] <= 1.0
    assert all(0.0 <= point["mean_ap"] <= 1.0 for point in results["curve"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["state.json", "step_1536.pt"]
    assert "map=" in capsys.readouterr().out
    # agents.evaluate rebuilds the run from args.json and model.pt and gets the same metrics.
    assert evaluate.main([str(out), "--embedding", "none"]) == 0
    again = json.loads((out / "results.json").read_text())
    for key in METRICS:
        assert again[key] == results[key]


@pytest.mark.parametrize("baseline", ["mean", "learned"])
def test_same_seed_gives_identical_results(tmp_path, baseline):
    runs = []
    for name in ("a", "b", "c"):
        seed = "5" if name != "c" else "6"
        argv = ["reinforce-torch", *SMALL, "--baseline", baseline, "--seed", seed, "--eval-every", "0"]
        assert train.main([*argv, "--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name / "results.json").read_text()))
    models = [reinforce.load_model(tmp_path / name) for name in ("a", "b", "c")]
    for key in (*METRICS, "env_steps", "updates"):
        assert runs[0][key] == runs[1][key]
    for mine, theirs in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(mine, theirs)
    # Another seed trains another network (the seed is used, not ignored).
    assert not all(
        torch.equal(mine, theirs)
        for mine, theirs in zip(models[0].parameters(), models[2].parameters(), strict=True)
    )


def test_a_budget_that_is_not_a_multiple_of_the_batch_ends_exactly(tmp_path):
    """Two vector steps per update; the last update keeps only the 100 codes the budget has left."""
    argv = ["reinforce-torch", *SMALL[:2], "--timesteps", "612", "--batch-size", "256", "--num-envs", "128"]
    assert train.main([*argv, "--hidden", "16", "--eval-every", "0", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["env_steps"] == 612 and results["updates"] == 3


def test_learns_a_tiny_problem(tmp_path):
    """On well-separated blobs at 8 bits, a short run retrieves far above chance (1 / 10)."""
    args = reinforce_torch.Args(
        dataset="blobs", bits=8, timesteps=30_000, batch_size=128, num_envs=64, eval_every=0,
        checkpoint_every=0, device="cpu", out=str(tmp_path),
    )  # fmt: skip
    results = reinforce_torch.main(args)
    chance = 1 / load_dataset("blobs").num_classes
    assert results["map"] > 0.8 > 5 * chance


@pytest.mark.parametrize(
    ("dataset", "bits", "topk"),
    [("digits", 16, None), ("digits", 48, None), ("digits", 24, 50), ("multi_label", 16, None)],
)
def test_rewards_it_trains_on_are_the_single_envs_ap(dataset, bits, topk, device="cpu"):
    """Sampled codes, rewarded on the torch vector env, get the single env's AP for the same database."""
    data = (
        load_dataset("blobs", multi_label=True, n_per_class=30, num_classes=5, dim=8)
        if dataset == "multi_label"
        else load_dataset(dataset)
    )
    envs = RankListHashVectorEnv(
        num_envs=64, dataset=data, bits=bits, topk=topk, database="fixed", device=torch.device(device),
        autoreset_mode="SameStep", check_actions=False,
    )  # fmt: skip
    single = RankListHashEnv(dataset=data, bits=bits, topk=topk, database="fixed")
    features = torch.as_tensor(np.array(single.features), device=device)
    torch.manual_seed(0)
    query_net = reinforce.QueryNetwork(single.feature_dim, bits, [32]).to(device)
    database_net = reinforce.QueryNetwork(single.feature_dim, bits, [32]).to(device)
    database = reinforce_torch.encode_on_device(database_net, features)
    # The device encoding is agents.reinforce's deterministic code.
    np.testing.assert_array_equal(
        database.cpu().numpy(), reinforce.encode_split(database_net, single.features, bits)
    )
    envs.reset(seed=1)
    reinforce_torch.set_database_on_device(envs, database)
    reference = RankListHashVectorEnv(num_envs=64, dataset=data, bits=bits, device=torch.device(device))
    reference.reset(seed=1)
    reference.set_database_codes(database.cpu().numpy())
    assert torch.equal(envs.database_codes, reference.database_codes)
    single.set_database_codes(database.cpu().numpy())
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):
        items = reinforce_torch.draw_items(envs.num_items, 64, generator)
        logits, codes, rewards = reinforce_torch.act(query_net, envs, items, features, generator)
        assert logits.requires_grad and codes.shape == (64, bits)
        torch.testing.assert_close(logits, query_net(features[items]))
        expected = single.act(items.cpu().numpy(), codes.cpu().numpy().astype(np.uint8))
        np.testing.assert_allclose(rewards.cpu().numpy(), expected, rtol=1e-12, atol=1e-15)
    assert len(set(expected.round(6))) > 1  # the codes differ: the check compares real rankings


def test_item_batches_are_distinct_unless_larger_than_the_split():
    generator = torch.Generator().manual_seed(0)
    items = reinforce_torch.draw_items(100, 100, generator)
    assert sorted(items.tolist()) == list(range(100))
    items = reinforce_torch.draw_items(100, 250, generator)
    assert len(items) == 250 and items.min() >= 0 and items.max() < 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "BinaryCodeTravel-v0"], "reinforce trains RankListHash-v0"),
        (["--num-envs", "0"], "--num-envs must be positive, got 0"),
        (["--num-envs", "100"], "--batch-size 256 must be a multiple of --num-envs 100"),
        (["--db-refresh", "0"], "--db-refresh 0 (the env's bank) is not supported"),
        (["--baseline", "median"], "--baseline must be one of mean, learned, none"),
        (["--hidden", "64,x"], "--hidden must be comma-separated integers"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(argv, message, tmp_path, capsys):
    assert train.main(["reinforce-torch", *SMALL, *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_set_database_on_device_refuses_a_wrong_shape():
    envs = RankListHashVectorEnv(num_envs=2, bits=16, database="fixed", device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"codes must be a \(1497, 16\) tensor"):
        reinforce_torch.set_database_on_device(envs, torch.zeros((1497, 8), dtype=torch.uint8))


def test_ctrl_c_checkpoints_its_update_and_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Ctrl-C ends the update, checkpoints it (off the --checkpoint-every grid), exits 130; --resume then
    ends bitwise equal to the uninterrupted run: networks, optimizer, generators, baseline, results."""
    trainer = TRAINERS["reinforce-torch"]
    _, expected, _ = reference(trainer)
    out = tmp_path / "run"
    real_act, calls = reinforce_torch.act, []

    def interrupt_at_the_fifth_step(*args):
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGINT)  # the handler asks the loop to stop after this update
        return real_act(*args)

    monkeypatch.setattr(reinforce_torch, "act", interrupt_at_the_fifth_step)
    seed_globals()
    assert train.main(["reinforce-torch", *trainer.argv, "--out", str(out)]) == 130
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 48 and not (out / "results.json").exists()  # 3 updates of 2 steps
    monkeypatch.setattr(reinforce_torch, "act", real_act)
    assert train.main(["dqn", "--resume", str(out)]) == 2  # recorded as reinforce-torch
    # `reinforce --resume` resumes with the trainer that wrote the run.
    assert_same_run(resume_final_state(trainer, out, "reinforce"), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_rewards_match_the_single_env_and_a_run_learns(tmp_path):
    test_rewards_it_trains_on_are_the_single_envs_ap("digits", 16, None, device="cuda")
    argv = ["reinforce", "--device", "cuda", "--epochs", "50", "--eval-every", "0", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["trainer"] == "reinforce-torch" and results["map"] > 0.5
