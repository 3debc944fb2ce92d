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
from hashing_gym.data import load_dataset
from hashing_gym.envs import InvalidActionError, SequentialHashBitsEnv, encode_sequential
from hashing_gym.envs.sequential_hash_bits_vector import SequentialHashBitsVectorEnv

ENV_ID = "SequentialHashBits-v0"
DEVICES = ["cpu", torch.device("cpu")]  # numpy, and the torch code on the CPU


@pytest.fixture(scope="module")
def small():
    return load_dataset("blobs", num_classes=4, n_per_class=15, dim=6, query_per_class=3)


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=5, n_per_class=12, dim=6, multi_label=True, query_per_class=2)


@pytest.fixture(scope="module")
def lonely():
    """A class of one training item: it has no positive, hence no triplet."""
    features = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    labels = np.array([0] * 15 + [1] * 15 + [2] * 2)
    return load_dataset("features", features=features, labels=labels, query_per_class=1)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"group": 4, "pairs": 5}, {"group": 2, "flatten": True, "margin": 1.0}],
    ids=["group1", "group4", "flatten-margin"],
)
def test_matches_single_envs_step_by_step(device, kwargs):
    ours, sync = make_pair(ENV_ID, 3, device, **kwargs)
    run_parity(ours, sync, steps=40)  # 2.5 episodes at group 1, 10 at group 4


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_matches_single_envs_on_multi_label_data(device, multi_label):
    ours, sync = make_pair(ENV_ID, 4, device, dataset=multi_label, bits=8, group=2)
    run_parity(ours, sync, steps=13)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_items_without_triplets_match_single_envs(device, lonely):
    ours, sync = make_pair(ENV_ID, 4, device, dataset=lonely, bits=4)
    alone = int(np.flatnonzero(lonely.train.labels == 2)[0])  # the only item of class 2 left in train
    reset_both(ours, sync, "reset", seed=0, options={"index": alone})
    for t in range(4):
        _, rewards, _, _, info = step_both(ours, sync, np.ones((4, 1), dtype=np.uint8), f"step {t}")
        assert (rewards == 0).all() and (info["accuracy"] == 0.5).all()


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_same_step_autoreset_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, mode=AutoresetMode.SAME_STEP, dataset=small, bits=8, group=4)
    run_parity(ours, sync, steps=7)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_disabled_autoreset_with_reset_mask_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 2, device, mode=AutoresetMode.DISABLED, dataset=small, bits=4, group=2)
    reset_both(ours, sync, "reset", seed=4)
    actions = np.array([[1, 0], [0, 1]])
    for t in range(2):
        step_both(ours, sync, actions, f"step {t}")
    with pytest.raises(RuntimeError, match="reset_mask"):
        ours.step(actions)
    reset_both(ours, sync, "masked reset", options={"reset_mask": np.array([False, True])})
    reset_both(ours, sync, "masked reset", options={"reset_mask": np.array([True, False])})
    step_both(ours, sync, actions, "after the resets")


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_set_code_bank_mid_episode_matches_single_envs(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, dataset=small, bits=8, group=2)
    reset_both(ours, sync, "reset", seed=1, options={"index": np.int64(3)})
    rng = np.random.default_rng(2)
    step_both(ours, sync, rng.integers(0, 2, size=(3, 2)), "step 0")
    bank = rng.integers(0, 2, size=(small.train.n, 8))
    ours.unwrapped.set_code_bank(bank)
    for env in sync.envs:
        env.unwrapped.set_code_bank(bank)
    for t in range(1, 4):
        step_both(ours, sync, rng.integers(0, 2, size=(3, 2)), f"step {t}")
    expected = np.stack([env.unwrapped.code_bank for env in sync.envs])
    assert_same(to_numpy(ours.unwrapped.code_bank), expected, "bank")


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_batched_streams_reward_as_the_single_env_does(device, multi, small, multi_label):
    """With rng="batched": valid references, and rewards that the single env's formula gives."""
    data = multi_label if multi else small
    envs = SequentialHashBitsVectorEnv(num_envs=5, dataset=data, device=device, bits=8, group=2, pairs=6)
    single = SequentialHashBitsEnv(dataset=data, bits=8, group=2, pairs=6)
    single.reset(seed=0)
    labels = data.train.labels
    sets = labels.astype(bool) if multi else np.eye(data.num_classes, dtype=bool)[labels]
    for seed in (0, 1):
        obs, info = to_numpy(envs.reset(seed=seed))
        bank = to_numpy(envs.code_bank)
        references = to_numpy(envs._state.references)
        items = info["index"]
        shares = (sets[items][:, None, :] & sets[references]).any(axis=2)
        assert shares[:, :6].all() and not shares[:, 6:].any()  # P positives, then P negatives
        assert (references != items[:, None]).all()
        codes = np.random.default_rng(seed).integers(0, 2, size=(5, 8))
        total = np.zeros(5)
        for t in range(4):
            _, rewards, terminated, _, info = to_numpy(envs.step(codes[:, 2 * t : 2 * t + 2]))
            total += rewards
        assert terminated.all()
        for i in range(5):
            single.set_code_bank(bank[i])
            expected = single.rewards(codes[i : i + 1], references[i : i + 1, :6], references[i : i + 1, 6:])
            np.testing.assert_allclose(total[i], expected.sum(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(to_numpy(envs.code_bank)[np.arange(5), items], codes)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
def test_same_seed_same_trajectory_and_different_seed_differs(device, rng, small):
    def make():
        return SequentialHashBitsVectorEnv(num_envs=3, dataset=small, device=device, rng=rng, bits=4, group=2)

    first, second = rollout(make(), 7, 6), rollout(make(), 7, 6)
    assert_rollouts_equal(first, second)
    other = rollout(make(), 8, 6)
    assert not np.array_equal(first[0][1]["index"], other[0][1]["index"])


def sign_policy(feature_dim, bits, group):
    """A deterministic policy of the observation: the signs of fixed projections of the features."""
    weights = np.random.default_rng(0).normal(size=(feature_dim, bits))

    def act(obs):
        obs = to_numpy(obs)
        columns = obs["step"][:, None] * group + np.arange(group)
        return (np.take_along_axis(obs["features"] @ weights, columns, axis=1) > 0).astype(np.uint8)

    return act


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next", "same"])
@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_rows_agree_with_encode_sequential_and_the_single_env_rewards(
    device, rng, mode, multi, small, multi_label
):
    """Every row, in every mode: the codes of encode_sequential, the rewards of the single env's formula."""
    data, bits, group, pairs = (multi_label if multi else small), 8, 2, 5
    envs = SequentialHashBitsVectorEnv(
        num_envs=4,
        dataset=data,
        device=device,
        rng=rng,
        autoreset_mode=mode,
        bits=bits,
        group=group,
        pairs=pairs,
    )
    single = SequentialHashBitsEnv(dataset=data, bits=bits, group=group, pairs=pairs)
    single.reset(seed=0)
    act = sign_policy(data.train.features.shape[1], bits, group)
    obs, info = envs.reset(seed=5)
    for episode in range(2):  # the second episode starts from the autoreset
        if episode and mode == AutoresetMode.NEXT_STEP:
            obs, rewards, terminated, _, info = to_numpy(envs.step(np.zeros((4, group), dtype=np.uint8)))
            assert (rewards == 0).all() and not terminated.any()
        items, bank = to_numpy(info["index"]), to_numpy(envs.code_bank)
        state = envs._state
        references = np.where(to_numpy(state.valid)[:, None], to_numpy(state.references), -1)
        stepped = []
        for _ in range(bits // group):
            obs, rewards, terminated, _, info = envs.step(act(obs))
            stepped.append(to_numpy(rewards))
        assert to_numpy(terminated).all()
        final = to_numpy(info["final_obs"] if mode == AutoresetMode.SAME_STEP else obs)["code"]
        codes = encode_sequential(lambda o, s: (act(o), None), data.train.features[items], bits, group)
        np.testing.assert_array_equal(final, codes)
        for i in range(4):
            single.set_code_bank(bank[i])
            expected = single.rewards(
                codes[i : i + 1], references[i : i + 1, :pairs], references[i : i + 1, pairs:]
            )
            np.testing.assert_array_equal(np.array(stepped)[:, i], expected[0])


def test_torch_backend_returns_tensors_on_its_device(small):
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, backend="torch", bits=4, group=4)
    obs, info = envs.reset(seed=0)
    assert all(isinstance(v, torch.Tensor) for v in obs.values())
    obs, rewards, terminated, truncated, info = envs.step(torch.ones((2, 4), dtype=torch.int64))
    for value in (obs["code"], rewards, terminated, truncated, info["accuracy"], info["_index"]):
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    assert obs["code"].dtype == torch.int8 and obs["step"].dtype == torch.int64
    assert rewards.dtype == torch.float64
    flat = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, backend="torch", bits=4, flatten=True)
    obs, _ = flat.reset(seed=0)
    assert obs.shape == flat.observation_space.shape and obs.dtype == torch.float32


def test_make_vec_through_the_registry():
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", bits=8, group=2)
    assert isinstance(envs, SequentialHashBitsVectorEnv)
    assert envs.single_action_space == gym.spaces.MultiBinary(2)
    assert envs.action_space.shape == (3, 2)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    obs, *_ = envs.step(np.ones((3, 2), dtype=np.int8))
    assert envs.observation_space.contains(obs)


def test_gymnasium_episode_statistics_wrapper_sees_whole_episodes(small):
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        SequentialHashBitsVectorEnv(num_envs=3, dataset=small, bits=8, group=4)
    )
    envs.reset(seed=0)
    envs.step(np.ones((3, 4)))
    _, _, terminated, _, info = envs.step(np.zeros((3, 4)))
    assert terminated.all() and info["_episode"].all()
    assert (info["episode"]["l"] == 2).all()  # T = bits / group steps
    np.testing.assert_allclose(info["episode"]["r"], info["accuracy"] - 0.5, atol=1e-6)  # float32 returns


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_bad_actions_raise(device, small):
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, device=device, group=2)
    with pytest.raises(RuntimeError, match="call reset"):
        envs.step(np.zeros((2, 2)))
    envs.reset(seed=0)
    for bad in (np.zeros((2, 1)), np.zeros((3, 2)), np.full((2, 2), 2), np.zeros(2), [[0, 1], [1, 0.5]]):
        with pytest.raises(InvalidActionError, match="not in"):
            envs.step(bad)


def test_bad_arguments_raise(small):
    for bad in (0, -1, False):
        with pytest.raises(ValueError, match="num_envs"):
            SequentialHashBitsVectorEnv(num_envs=bad, dataset=small)
    with pytest.raises(ValueError, match="device"):
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, device="tpu:0")
    with pytest.raises(ValueError, match="group"):  # the single env's checks apply
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, bits=16, group=3)
    with pytest.raises(ValueError, match="rng"):
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, rng="shared")
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small)
    with pytest.raises(ValueError, match="shape"):
        envs.set_code_bank(np.zeros((small.train.n, 15), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        envs.set_code_bank(np.zeros((2, small.train.n, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="index"):
        envs.reset(options={"index": -1})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_single_envs_step_by_step():
    ours, sync = make_pair(ENV_ID, 8, "cuda", group=4)
    run_parity(ours, sync, steps=10)
