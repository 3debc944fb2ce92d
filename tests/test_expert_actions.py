"""``info["expert_action"]`` on all three envs, single and batched (issue #18).

BinaryCodeTravel-v0's teacher is DRLH's guided exploration (its own tests). SequentialHashBits-v0's
and RankListHash-v0's experts are ours (neither paper names one): the item's class codeword of
``hashing_gym.codes.label_codebook`` (BCH, seed 0), whole or the group the step decides. Following
them gives the largest return once the bank holds the codewords, which following them achieves:
a pass over the items, then AP 1 (RankListHash) and return 1/2 (SequentialHashBits) for every item,
far above random actions.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from vector_parity import to_numpy

import hashing_gym  # noqa: F401
from hashing_gym.codes import label_codebook
from hashing_gym.data import load_dataset
from hashing_gym.envs import RankListHashEnv, SequentialHashBitsEnv

BITS = 8
DEVICES = {"numpy": "cpu", "torch": torch.device("cpu")}


@pytest.fixture(scope="module")
def data():
    return load_dataset("blobs", num_classes=3, n_per_class=20, dim=8, query_per_class=4)


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=4, n_per_class=15, dim=8, multi_label=True, query_per_class=2)


def codewords_of(data, split="train"):
    """Each item's class codeword (multi-label: its lowest class's), int8 (N, bits)."""
    labels = getattr(data, split).labels
    classes = labels.astype(bool).argmax(axis=1) if labels.ndim == 2 else labels
    return label_codebook(data.num_classes, BITS).astype(np.int8)[classes]


def rlh_pass(env, policy):
    """One episode per item of the split; the rewards."""
    rewards = []
    for index in range(env.num_items):
        _, info = env.reset(options={"index": index})
        rewards.append(env.step(policy(info))[1])
    return np.array(rewards)


def shb_pass(env, policy):
    """One episode per item of the split, acting ``policy(info)`` at each step; the returns."""
    returns = []
    for index in range(env.num_items):
        _, info = env.reset(options={"index": index})
        total, done = 0.0, False
        while not done:
            _, reward, done, _, info = env.step(policy(info))
            total += reward
        returns.append(total)
    return np.array(returns)


def test_every_env_offers_an_expert_action_in_its_space(data):
    for env_id, kwargs in (
        ("BinaryCodeTravel-v0", {}),
        ("SequentialHashBits-v0", {"group": 4}),
        ("RankListHash-v0", {}),
    ):
        env = gym.make(env_id, dataset=data, bits=BITS, **kwargs)
        _, info = env.reset(seed=0)
        assert env.action_space.contains(info["expert_action"]), env_id
        _, _, _, _, info = env.step(info["expert_action"])
        assert env.action_space.contains(info["expert_action"]), env_id
        envs = gym.make_vec(
            env_id, num_envs=2, vectorization_mode="vector_entry_point", dataset=data, bits=BITS, **kwargs
        )
        _, infos = envs.reset(seed=0)
        assert envs.action_space.contains(to_numpy(infos["expert_action"])) and infos["_expert_action"].all()
        _, _, _, _, infos = envs.step(infos["expert_action"])
        assert "expert_action" in infos, env_id


def test_rank_list_hash_expert_is_the_class_codeword_and_reaches_ap_1(data):
    env = RankListHashEnv(dataset=data, bits=BITS)
    env.reset(seed=0)
    codewords = codewords_of(data)
    _, info = env.reset(options={"index": 7})
    np.testing.assert_array_equal(info["expert_action"], codewords[7])
    np.testing.assert_array_equal(env.expert_action(), codewords[7])
    assert info["expert_action"].dtype == np.int8
    random = np.random.default_rng(0)
    chance = rlh_pass(env, lambda info: random.integers(0, 2, size=BITS)).mean()
    rlh_pass(env, lambda info: info["expert_action"])  # bank mode: the codewords join the database
    np.testing.assert_array_equal(env.database_codes, codewords)
    expert = rlh_pass(env, lambda info: info["expert_action"])
    assert (expert == 1.0).all() and chance < 0.7
    assert (
        rlh_pass(env, lambda info: random.integers(0, 2, size=BITS)).mean() < 0.7
    )  # random codes, same database


def test_sequential_hash_bits_expert_is_the_codeword_group_by_group_and_reaches_the_top_return(data):
    env = SequentialHashBitsEnv(dataset=data, bits=BITS, group=2)
    env.reset(seed=0)
    codewords = codewords_of(data)
    _, info = env.reset(options={"index": 11})
    for t in range(4):  # the group that the step decides
        np.testing.assert_array_equal(info["expert_action"], codewords[11, 2 * t : 2 * t + 2])
        np.testing.assert_array_equal(env.expert_action(), info["expert_action"])
        _, _, done, _, info = env.step(info["expert_action"])
    assert done and (info["expert_action"] == codewords[11, 6:]).all()  # after the end: the last group
    random = np.random.default_rng(0)
    chance = shb_pass(env, lambda info: random.integers(0, 2, size=2))
    shb_pass(env, lambda info: info["expert_action"])  # the finished codes (codewords) join the bank
    np.testing.assert_array_equal(env.code_bank, codewords)
    expert = shb_pass(env, lambda info: info["expert_action"])
    assert (expert == 0.5).all()  # the largest return: triplet accuracy 1
    assert (
        abs(chance.mean()) < 0.1 and shb_pass(env, lambda info: random.integers(0, 2, size=2)).mean() < 0.35
    )


def test_multi_label_items_follow_their_lowest_class_and_beat_random(multi_label):
    codewords = codewords_of(multi_label)
    rlh = RankListHashEnv(dataset=multi_label, bits=BITS)
    rlh.reset(seed=0)
    random = np.random.default_rng(1)
    rlh_pass(rlh, lambda info: info["expert_action"])
    np.testing.assert_array_equal(rlh.database_codes, codewords)
    expert = rlh_pass(rlh, lambda info: info["expert_action"]).mean()
    chance = rlh_pass(rlh, lambda info: random.integers(0, 2, size=BITS)).mean()
    assert expert > chance + 0.1  # 0.90 against 0.76: these items share many labels
    shb = SequentialHashBitsEnv(dataset=multi_label, bits=BITS, group=4)
    shb.reset(seed=0)
    shb_pass(shb, lambda info: info["expert_action"])
    expert = shb_pass(shb, lambda info: info["expert_action"]).mean()
    assert expert > shb_pass(shb, lambda info: random.integers(0, 2, size=4)).mean() + 0.1


@pytest.mark.parametrize("device", list(DEVICES.values()), ids=list(DEVICES))
def test_vector_experts_earn_the_top_reward_from_codeword_banks(device, data):
    codewords = codewords_of(data)
    rlh = gym.make_vec(
        "RankListHash-v0",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        dataset=data,
        bits=BITS,
        device=device,
    )
    _, infos = rlh.reset(seed=0)
    rlh.set_database_codes(codewords)
    for _ in range(5):  # same-step autoreset: every call acts, infos hold the next items' experts
        expert = to_numpy(infos["expert_action"])
        np.testing.assert_array_equal(expert, codewords[to_numpy(infos["index"])])
        np.testing.assert_array_equal(to_numpy(rlh.expert_action()), expert)
        _, rewards, _, _, infos = rlh.step(infos["expert_action"])
        assert (to_numpy(rewards) == 1.0).all()

    shb = gym.make_vec(
        "SequentialHashBits-v0",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        dataset=data,
        bits=BITS,
        group=4,
        device=device,
    )
    _, infos = shb.reset(seed=0)
    shb.set_code_bank(codewords)
    returns = np.zeros(4)
    for _ in range(2):
        _, rewards, terminated, _, infos = shb.step(infos["expert_action"])
        returns += to_numpy(rewards)
    assert to_numpy(terminated).all() and (returns == 0.5).all()


def test_no_expert_where_the_bits_cannot_tell_the_classes_apart(data):
    """1 bit, 3 classes: no codebook, so no expert (the info key is absent, the method says why)."""
    for env in (RankListHashEnv(dataset=data, bits=1), SequentialHashBitsEnv(dataset=data, bits=1)):
        _, info = env.reset(seed=0)
        assert "expert_action" not in info
        with pytest.raises(ValueError, match="no expert at bits=1: 1 bits cannot give each of the 3 classes"):
            env.expert_action()
    envs = gym.make_vec(
        "RankListHash-v0", num_envs=2, vectorization_mode="vector_entry_point", dataset=data, bits=1
    )
    _, infos = envs.reset(seed=0)
    assert "expert_action" not in infos
    with pytest.raises(ValueError, match="no expert at bits=1"):
        envs.expert_action()
