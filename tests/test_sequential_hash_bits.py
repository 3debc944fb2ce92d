import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from helpers import no_warnings
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import hashing_gym  # noqa: F401
from hashing_gym.data import load_dataset
from hashing_gym.envs import InvalidActionError, SequentialHashBitsEnv, encode_sequential
from hashing_gym.envs.sequential_hash_bits import triplet_accuracy

ENV_ID = "SequentialHashBits-v0"


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=5, n_per_class=40, dim=8, multi_label=True, query_per_class=4)


def episode_references(env):
    """The episode's (1, P) positives and negatives from the core's state; -1 rows: no triplet."""
    state = env.unwrapped._state
    references = np.where(state.valid[:, None], state.references, -1)
    return references[:, : env.pairs], references[:, env.pairs :]


def brute_force_accuracy(code, decided_bits, bank, positives, negatives, margin=0.0):
    """acc over all (positive, negative) pairs, one pair at a time, on the first decided_bits bits."""
    score = 0.0
    for p in positives:
        for n in negatives:
            d_pos = int((code[:decided_bits] != bank[p, :decided_bits]).sum())
            d_neg = int((code[:decided_bits] != bank[n, :decided_bits]).sum())
            gap = d_neg - d_pos - margin
            score += 1.0 if gap > 0 else 0.5 if gap == 0 else 0.0
    return score / (len(positives) * len(negatives))


@pytest.mark.parametrize("kwargs", [{}, {"group": 4}, {"group": 4, "flatten": True}, {"bits": 8, "group": 8}])
def test_env_checkers_pass(kwargs):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, **kwargs).unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(ENV_ID, **kwargs).unwrapped)


def test_env_checkers_pass_on_multi_label(multi_label):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, dataset=multi_label, group=4).unwrapped)
        sb3_check_env(gym.make(ENV_ID, dataset=multi_label, group=4).unwrapped)


@pytest.mark.parametrize(("bits", "group"), [(16, 1), (16, 2), (16, 4), (16, 16), (12, 3)])
def test_episode_lasts_bits_over_group_steps(bits, group):
    env = gym.make(ENV_ID, bits=bits, group=group)
    obs, _ = env.reset(seed=0)
    assert env.action_space == gym.spaces.MultiBinary(group)
    assert env.observation_space["step"] == gym.spaces.Discrete(bits // group)
    steps, terminated = 0, False
    while not terminated:
        assert obs["step"] == steps and obs["decided"].sum() == steps * group
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        assert not truncated
    assert steps == bits // group
    assert obs["decided"].all() and obs["step"] == bits // group - 1


@pytest.mark.parametrize(("group", "margin"), [(1, 0.0), (4, 0.0), (2, 1.0)])
def test_rewards_telescope_to_final_accuracy_minus_half_and_match_brute_force(group, margin):
    env = SequentialHashBitsEnv(bits=16, group=group, pairs=8, margin=margin)
    rng = np.random.default_rng(group)
    for episode in range(15):
        obs, info = env.reset(seed=episode)
        assert info["accuracy"] == 0.5
        positives, negatives = (part[0] for part in episode_references(env))
        total, terminated = 0.0, False
        while not terminated:
            obs, reward, terminated, _, info = env.step(rng.integers(0, 2, size=group, dtype=np.int8))
            total += reward
            decided = int(obs["decided"].sum())
            expected = brute_force_accuracy(obs["code"], decided, env.code_bank, positives, negatives, margin)
            assert info["accuracy"] == pytest.approx(expected, abs=1e-12)
        assert total == pytest.approx(info["accuracy"] - 0.5, abs=1e-12)
        assert -0.5 <= total <= 0.5


def test_ties_count_one_half():
    env = SequentialHashBitsEnv(bits=4, group=1, pairs=1)
    env.reset(seed=0)
    positive, negative = (int(part[0, 0]) for part in episode_references(env))
    bank = np.zeros((env.num_items, 4), dtype=np.uint8)
    bank[positive] = [0, 0, 1, 1]
    bank[negative] = [0, 1, 0, 1]  # same first bit as the positive: a tie after step 1
    env.set_code_bank(bank)
    _, reward, _, _, info = env.step(np.array([1], dtype=np.int8))
    assert (info["accuracy"], reward) == (0.5, 0.0)  # both at distance 1: the pair counts 1/2
    _, reward, _, _, info = env.step(np.array([0], dtype=np.int8))
    assert (info["accuracy"], reward) == (1.0, 0.5)  # d_pos = 1 < d_neg = 2
    _, reward, _, _, info = env.step(np.array([0], dtype=np.int8))
    assert (info["accuracy"], reward) == (0.5, -0.5)  # 2 and 2 again: a tie
    assert triplet_accuracy(np.array([3, 3]), np.array([3, 3])) == 0.5


def test_references_share_a_label_or_none_and_never_the_item(multi_label):
    for dataset in ("digits", multi_label):
        env = SequentialHashBitsEnv(dataset=dataset, pairs=32)
        env.reset(seed=0)
        indices = np.arange(0, env.num_items, 3)
        positives, negatives = env.sample_references(indices)
        labels = env.split.labels
        for i, pos, neg in zip(indices, positives, negatives, strict=True):
            assert i not in pos and i not in neg
            if labels.ndim == 1:
                assert (labels[pos] == labels[i]).all() and (labels[neg] != labels[i]).all()
            else:
                assert (labels[pos] & labels[i]).any(axis=1).all()
                assert not (labels[neg] & labels[i]).any()


def test_item_without_a_positive_has_no_triplet_and_earns_nothing():
    features = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    dataset = load_dataset(
        "features", features=features, labels=np.array([0] * 6 + [1] * 2), query_per_class=1
    )
    env = SequentialHashBitsEnv(dataset=dataset, bits=8, group=4, pairs=4)
    alone = int(np.flatnonzero(dataset.train.labels == 1)[0])  # the only item of class 1 left in train
    _, info = env.reset(seed=0, options={"index": alone})
    assert all((part == -1).all() for part in episode_references(env))
    for _ in range(2):
        _, reward, _, _, info = env.step(np.ones(4, dtype=np.int8))
        assert reward == 0.0 and info["accuracy"] == 0.5
    others = np.flatnonzero(dataset.train.labels == 0)
    positives, negatives = env.sample_references(others)
    assert (positives >= 0).all() and (negatives == alone).all()


def test_batched_rewards_equal_the_step_rewards():
    env = SequentialHashBitsEnv(bits=16, group=2, pairs=8)
    rng = np.random.default_rng(1)
    for episode in range(10):
        env.reset(seed=episode)
        bank_before = np.array(env.code_bank)
        stepped, terminated = [], False
        while not terminated:
            obs, reward, terminated, _, _ = env.step(rng.integers(0, 2, size=2, dtype=np.int8))
            stepped.append(reward)
        env.set_code_bank(bank_before)  # the step rewards saw the bank before the episode's write
        batched = env.rewards(obs["code"][None], *episode_references(env))[0]
        np.testing.assert_allclose(batched, stepped, atol=1e-12)


def rollout(env, seed, episodes=4):
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [(info["index"],)]
    for _ in range(episodes):
        terminated = False
        while not terminated:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs["code"].tolist(), reward, terminated, info["index"]))
        obs, info = env.reset()
        trace.append((info["index"],))
    return trace, np.array(env.unwrapped.code_bank)


def test_same_seed_same_trajectory_and_different_seed_differs():
    a, bank_a = rollout(gym.make(ENV_ID, group=4), seed=7)
    b, bank_b = rollout(gym.make(ENV_ID, group=4), seed=7)
    c, bank_c = rollout(gym.make(ENV_ID, group=4), seed=8)
    assert repr(a) == repr(b) and (bank_a == bank_b).all()
    assert repr(a) != repr(c) and (bank_a != bank_c).any()


def test_bank_row_updates_when_the_episode_ends_and_seeded_reset_redraws_the_bank():
    env = SequentialHashBitsEnv(bits=16, group=4)
    env.reset(seed=3)
    start = np.array(env.code_bank)
    for _ in range(3):
        env.step(np.ones(4, dtype=np.int8))
    np.testing.assert_array_equal(env.code_bank, start)  # not yet
    env.step(np.ones(4, dtype=np.int8))
    expected = start.copy()
    expected[env.index] = 1
    np.testing.assert_array_equal(env.code_bank, expected)
    env.reset()  # no seed: the bank is kept
    np.testing.assert_array_equal(env.code_bank, expected)
    env.reset(seed=3)  # a seeded reset restores the initial bank
    np.testing.assert_array_equal(env.code_bank, start)
    with pytest.raises(ValueError, match="read-only"):
        env.code_bank[0, 0] = 1


def test_set_code_bank_replaces_and_validates():
    env = SequentialHashBitsEnv(bits=16)
    codes = np.random.default_rng(0).integers(0, 2, size=(env.num_items, 16))
    env.set_code_bank(codes)
    np.testing.assert_array_equal(env.code_bank, codes)
    env.reset(options={"index": 0})  # an unseeded reset keeps a bank that was set
    np.testing.assert_array_equal(env.code_bank, codes)
    with pytest.raises(
        ValueError, match=r"codes must have shape \(1497, 16\) \(items, bits\), got shape \(3, 16\)"
    ):
        env.set_code_bank(codes[:3])
    with pytest.raises(ValueError, match=r"codes must have shape .* got shape \(1497, 8\)"):
        env.set_code_bank(codes[:, :8])
    bad = codes.copy()
    bad[5, 2] = 2
    with pytest.raises(ValueError, match=r"codes must hold only 0 and 1, got 2 at index \(5, 2\)"):
        env.set_code_bank(bad)
    with pytest.raises(ValueError, match="codes must be an integer or bool array"):
        env.set_code_bank(codes.astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 16, "group": 3}, "bits=16 is not a multiple of group=3"),
        ({"group": 0}, "group must be a positive integer"),
        ({"pairs": 0}, "pairs must be a positive integer"),
        ({"margin": -1.0}, "margin must be a number"),
        ({"bits": 0}, "bits must be a positive integer"),
        ({"split": "validation"}, "split must be one of"),
        ({"render_mode": "human"}, "render_mode must be None or one of"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequentialHashBitsEnv(**kwargs)


def test_bad_actions_and_steps_out_of_episode_are_refused():
    env = SequentialHashBitsEnv(bits=8, group=4)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(4, dtype=np.int8))
    env.reset(seed=0)
    for action in (np.zeros(3, dtype=np.int8), np.full(4, 2, dtype=np.int8), 1):
        with pytest.raises(InvalidActionError, match="is not in MultiBinary"):
            env.step(action)
    env.step(np.zeros(4, dtype=np.int8))
    env.step(np.zeros(4, dtype=np.int8))
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(np.zeros(4, dtype=np.int8))


def test_pickle_round_trip_continues_identically():
    env = SequentialHashBitsEnv(bits=16, group=4)
    env.reset(seed=11)
    env.step(np.array([1, 0, 1, 0], dtype=np.int8))
    clone = pickle.loads(pickle.dumps(env))
    for action in ([1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]):
        a = env.step(np.array(action, dtype=np.int8))
        b = clone.step(np.array(action, dtype=np.int8))
        np.testing.assert_array_equal(a[0]["code"], b[0]["code"])
        assert a[1:4] == b[1:4]
        np.testing.assert_equal(a[4], b[4])  # infos (the expert's action is an array)
    np.testing.assert_array_equal(env.code_bank, clone.code_bank)
    np.testing.assert_equal(env.reset()[1], clone.reset()[1])


def test_flatten_observation_concatenates_features_code_decided_step():
    flat = SequentialHashBitsEnv(bits=16, group=4, flatten=True)
    nested = SequentialHashBitsEnv(bits=16, group=4)
    for env in (flat, nested):
        env.reset(seed=4)
        obs, *_ = env.step(np.array([1, 0, 0, 1], dtype=np.int8))
        if env is flat:
            obs_flat = obs
    expected = np.concatenate([obs["features"], obs["code"], obs["decided"], [0, 1, 0, 0]]).astype(np.float32)
    np.testing.assert_array_equal(obs_flat, expected)


def test_render_ansi_and_rgb_array():
    env = gym.make(ENV_ID, bits=8, group=4, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.array([1, 0, 1, 1], dtype=np.int8))
    assert "code 1011...." in env.render()
    picture = gym.make(ENV_ID, bits=8, pairs=4, render_mode="rgb_array")
    picture.reset(seed=0)
    frame = picture.render()
    assert frame.dtype == np.uint8 and frame.shape == ((1 + 2 * 4) * 8, 8 * 8, 3)


def feature_policy(env):
    """A deterministic recurrent-style policy: bits from signs of feature projections, state = step count."""
    weights = np.random.default_rng(0).normal(size=(env.feature_dim, env.bits))

    def policy_step(obs, state):
        t = 0 if state is None else state
        assert (obs["step"] == t).all() and (obs["decided"][:, : t * env.group] == 1).all()
        bits = slice(t * env.group, (t + 1) * env.group)
        flip = obs["code"][:, : max(1, t * env.group)].sum(axis=1, keepdims=True) % 2  # uses earlier bits
        return ((obs["features"] @ weights[:, bits] > 0) ^ flip).astype(np.int8), t + 1

    return policy_step


@pytest.mark.parametrize("group", [1, 4])
def test_encode_sequential_equals_stepping_the_env_with_the_same_policy(group):
    env = SequentialHashBitsEnv(bits=16, group=group, split="query")
    policy_step = feature_policy(env)
    codes = encode_sequential(policy_step, env.features, 16, group)
    assert codes.dtype == np.uint8 and codes.shape == (env.num_items, 16)
    for index in range(0, env.num_items, 11):
        obs, _ = env.reset(seed=0, options={"index": index})
        state, terminated = None, False
        while not terminated:
            action, state = policy_step({key: np.asarray(value)[None] for key, value in obs.items()}, state)
            obs, _, terminated, _, _ = env.step(action[0])
        np.testing.assert_array_equal(codes[index], obs["code"])


def test_encode_sequential_refuses_a_group_that_does_not_divide_bits():
    with pytest.raises(ValueError, match="group must be a positive integer dividing bits=16"):
        encode_sequential(lambda obs, state: (None, None), np.zeros((2, 3), np.float32), 16, 5)


# Built once: hypothesis calls the test many times.
PROPERTY_ENVS = {group: SequentialHashBitsEnv(bits=16, group=group, pairs=6) for group in (1, 2, 4, 8)}


@settings(max_examples=40, deadline=None)
@given(group=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 10_000), data=st.data())
def test_property_returns_stay_within_half(group, seed, data):
    env = PROPERTY_ENVS[group]
    _, info = env.reset(seed=seed)
    total, terminated = 0.0, False
    while not terminated:
        action = np.array(
            data.draw(st.lists(st.integers(0, 1), min_size=group, max_size=group)), dtype=np.int8
        )
        _, reward, terminated, _, info = env.step(action)
        total += reward
    assert -0.5 - 1e-12 <= total <= 0.5 + 1e-12  # a sum of float differences: rounding (seed 8859)
    assert total == pytest.approx(info["accuracy"] - 0.5, abs=1e-12)
