import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vector_parity import (
    assert_rollouts_equal,
    assert_same,
    make_pair,
    reset_both,
    rollout,
    run_parity,
    step_both,
    to_numpy,
)

import hashing_gym  # noqa: F401
from hashing_gym.envs import RankListHashEnv
from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv

ENV_ID = "RankListHash-v0"
DEVICES = ["cpu", torch.device("cpu")]  # numpy, and the torch code on the CPU


def tolerance(device):
    """The torch AP sums its float64 rows in another order than numpy: equal to an ulp or so."""
    return 0.0 if device == "cpu" else 1e-12


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"ties": "stable"},
        {"topk": 20, "database": "fixed", "bits": 24},
        {"bits": 32},  # torch packs 16, 32 and 64 bits per word: every sign bit is used
        {"ties": "stable", "topk": 30, "bits": 70},  # two words per code
    ],
    ids=["average", "stable", "topk-fixed-24bits", "32bits", "stable-70bits"],
)
def test_matches_single_envs_step_by_step(device, kwargs):
    ours, sync = make_pair(ENV_ID, 3, device, **kwargs)
    run_parity(ours, sync, steps=7, atol=tolerance(device))


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("ties", ["average", "stable"])
def test_matches_single_envs_on_multi_label_data(device, ties, multi_label):
    ours, sync = make_pair(ENV_ID, 4, device, dataset=multi_label, ties=ties, bits=8)
    run_parity(ours, sync, steps=9, atol=tolerance(device))


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_same_step_autoreset_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, mode=AutoresetMode.SAME_STEP, dataset=small)
    run_parity(ours, sync, steps=6, atol=tolerance(device))
    assert ours.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    # Every step acts: the acted observation comes back in final_obs, the next item's in obs.
    obs, _, terminated, _, info = to_numpy(ours.step(np.ones((3, 16), dtype=np.uint8)))
    assert terminated.all() and info["_final_obs"].all() and "ap" in info["final_info"]


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_disabled_autoreset_with_reset_mask_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, mode=AutoresetMode.DISABLED, dataset=small)
    reset_both(ours, sync, "reset", seed=11)
    actions = np.zeros((3, 16), dtype=np.uint8)
    step_both(ours, sync, actions, "first step", tolerance(device))
    with pytest.raises(RuntimeError, match="reset_mask"):
        ours.step(actions)
    mask = np.array([True, False, True])
    reset_both(ours, sync, "masked reset", options={"reset_mask": mask})
    with pytest.raises(RuntimeError, match=r"\[1\]"):
        ours.step(actions)  # sub-env 1 is still over
    reset_both(ours, sync, "reset 1", options={"reset_mask": ~mask})
    step_both(ours, sync, np.ones((3, 16), dtype=np.uint8), "second step", tolerance(device))


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_options_index_and_database_codes_match_single_envs(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, dataset=small)
    reset_both(ours, sync, "index int", seed=0, options={"index": 4})
    reset_both(ours, sync, "index again", options={"index": 7})  # unseeded: the databases stay
    codes = np.random.default_rng(5).integers(0, 2, size=(small.train.n, 16), dtype=np.uint8)
    ours.unwrapped.set_database_codes(codes)
    for env in sync.envs:
        env.unwrapped.set_database_codes(codes)
    actions = np.random.default_rng(6).integers(0, 2, size=(3, 16))
    step_both(ours, sync, actions, "after set_database_codes", tolerance(device))
    expected = np.stack([env.unwrapped.database_codes for env in sync.envs])
    assert_same(to_numpy(ours.unwrapped.database_codes), expected, "bank")
    # One index per sub-env.
    obs, info = to_numpy(ours.reset(options={"index": np.array([0, 5, 9])}))
    assert info["index"].tolist() == [0, 5, 9]
    np.testing.assert_array_equal(obs, small.train.features[[0, 5, 9]])


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("ties", ["average", "stable"])
def test_batched_streams_reward_as_the_single_env_does(device, ties, small):
    """With rng="batched" each step's rewards are what a single env with that database gives."""
    envs = RankListHashVectorEnv(
        num_envs=4, dataset=small, device=device, ties=ties, topk=25, autoreset_mode="NextStep"
    )
    single = RankListHashEnv(dataset=small, ties=ties, topk=25)
    single.reset(seed=0)
    _, info = to_numpy(envs.reset(seed=2))
    rng = np.random.default_rng(0)
    for t in range(6):
        database = to_numpy(envs.database_codes)
        actions = rng.integers(0, 2, size=(4, 16)).astype(np.uint8)
        _, rewards, terminated, _, step_info = to_numpy(envs.step(actions))
        if t % 2 == 0:  # NEXT_STEP: odd steps are reset steps
            assert terminated.all()
            for i in range(4):
                single.set_database_codes(database[i])
                expected = single.rewards(info["index"][i : i + 1], actions[i : i + 1])[0]
                np.testing.assert_allclose(rewards[i], expected, rtol=0, atol=tolerance(device))
            after = to_numpy(envs.database_codes)
            np.testing.assert_array_equal(after[np.arange(4), info["index"]], actions)  # the bank learnt them
        else:
            assert not terminated.any() and (rewards == 0).all()
        info = step_info


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
def test_same_seed_same_trajectory_and_different_seed_differs(device, rng, small):
    def make():
        return RankListHashVectorEnv(num_envs=3, dataset=small, device=device, rng=rng)

    first, second = rollout(make(), 7, 6), rollout(make(), 7, 6)
    assert_rollouts_equal(first, second)
    other = rollout(make(), 8, 6)
    assert not np.array_equal(first[1][1], other[1][1])


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_batched_bank_codes_are_uniform_bits(device):
    envs = RankListHashVectorEnv(num_envs=2, bits=70, device=device)
    envs.reset(seed=0)
    codes = to_numpy(envs.database_codes)
    assert codes.shape == (2, 1497, 70) and set(np.unique(codes)) == {0, 1}
    assert abs(codes.mean() - 0.5) < 0.01
    assert abs(codes[..., -6:].mean() - 0.5) < 0.02  # the top bits of the last word are drawn too


def test_torch_backend_returns_tensors_on_its_device(small):
    envs = RankListHashVectorEnv(num_envs=2, dataset=small, backend="torch")
    obs, info = envs.reset(seed=0)
    obs, rewards, terminated, truncated, info = envs.step(torch.ones((2, 16), dtype=torch.int64))
    final = info["final_info"]  # same-step autoreset (the default): the acted items' infos
    for value in (obs, rewards, terminated, truncated, final["ap"], info["index"], final["_ap"]):
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    assert rewards.dtype == torch.float64 and terminated.dtype == torch.bool


def test_make_vec_through_the_registry():
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", bits=8)
    assert isinstance(envs, RankListHashVectorEnv)
    assert envs.single_action_space == gym.spaces.MultiBinary(8)
    assert envs.action_space.shape == (3, 8) and envs.observation_space.shape == (3, 64)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP  # one-step episodes: our default
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_gymnasium_episode_statistics_wrapper_sees_one_step_episodes(mode, small):
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        RankListHashVectorEnv(num_envs=3, dataset=small, autoreset_mode=mode)
    )
    envs.reset(seed=0)
    _, rewards, terminated, _, info = envs.step(np.ones((3, 16)))
    assert terminated.all() and info["_episode"].all() and (info["episode"]["l"] == 1).all()
    np.testing.assert_allclose(info["episode"]["r"], rewards, atol=1e-6)  # float32 returns


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_bad_actions_raise(device, small):
    envs = RankListHashVectorEnv(num_envs=2, dataset=small, device=device)
    with pytest.raises(RuntimeError, match="call reset"):
        envs.step(np.zeros((2, 16)))
    envs.reset(seed=0)
    for bad in (np.zeros((2, 15)), np.zeros((3, 16)), np.full((2, 16), 2), np.zeros(16)):
        with pytest.raises(ValueError, match="not in"):
            envs.step(bad)
    if device != "cpu":
        with pytest.raises(ValueError, match="not in"):
            envs.step(torch.full((2, 16), -1))


def test_bad_arguments_raise(small):
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match="num_envs"):
            RankListHashVectorEnv(num_envs=bad, dataset=small)
    for bad in ("gpu", 3):
        with pytest.raises(ValueError, match="device"):
            RankListHashVectorEnv(num_envs=2, dataset=small, device=bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            RankListHashVectorEnv(num_envs=2, dataset=small, device="cuda")
    with pytest.raises(ValueError, match="backend"):
        RankListHashVectorEnv(num_envs=2, dataset=small, backend="jax")
    with pytest.raises(ValueError, match="backend='numpy'"):
        RankListHashVectorEnv(num_envs=2, dataset=small, backend="numpy", device="cuda")
    with pytest.raises(ValueError, match="rng"):
        RankListHashVectorEnv(num_envs=2, dataset=small, rng="global")
    with pytest.raises(ValueError, match="autoreset_mode"):
        RankListHashVectorEnv(num_envs=2, dataset=small, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="ties"):  # the single env's checks apply
        RankListHashVectorEnv(num_envs=2, dataset=small, ties="random")
    with pytest.raises(ValueError, match="render_mode"):
        RankListHashVectorEnv(num_envs=2, dataset=small, render_mode="ansi")

    envs = RankListHashVectorEnv(num_envs=2, dataset=small)
    with pytest.raises(ValueError, match="seed"):
        envs.reset(seed=[1, 2])  # a list needs rng="per_env"
    with pytest.raises(ValueError, match="out of range"):
        envs.reset(options={"index": small.train.n})
    with pytest.raises(ValueError, match="index"):
        envs.reset(options={"index": np.array([1, 2, 3])})
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.zeros(2, dtype=bool)})
    with pytest.raises(ValueError, match="shape"):
        envs.set_database_codes(np.zeros((3, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="0 and 1"):
        envs.set_database_codes(np.full((small.train.n, 16), 2))
    per_env = RankListHashVectorEnv(num_envs=2, dataset=small, rng="per_env")
    with pytest.raises(ValueError, match="seed"):
        per_env.reset(seed=[1, 2, 3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ties", ["average", "stable"])
def test_cuda_matches_single_envs_step_by_step(ties):
    ours, sync = make_pair(ENV_ID, 8, "cuda", ties=ties, bits=32)
    run_parity(ours, sync, steps=6, atol=1e-12)
