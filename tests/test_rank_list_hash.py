import itertools
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from helpers import no_warnings
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import hashing_gym  # noqa: F401
from hashing_gym import ranking
from hashing_gym.data import load_dataset
from hashing_gym.envs import RankListHashEnv

ENV_ID = "RankListHash-v0"


@pytest.fixture(scope="module")
def single_label():
    return load_dataset("blobs", num_classes=4, n_per_class=15, dim=6, query_per_class=3)


# ---------------------------------------------------------------------------------------------
# Brute-force reference: rank by argsort, AP by walking the list (written independently of
# hashing_gym.ranking's histograms and harmonic numbers).
# ---------------------------------------------------------------------------------------------


def relevance(labels, i):
    if labels.ndim == 2:
        return (labels & labels[i]).any(axis=1)
    return labels == labels[i]


def brute_force_ap(code, db_codes, relevant, ties, topk=None):
    """AP of `code` against `db_codes` (the item itself already removed)."""
    distance = (db_codes != code).sum(axis=1)
    n = len(distance)
    k = n if topk is None else min(topk, n)
    order = np.argsort(distance, kind="stable")  # ties by index
    rel = relevant[order].astype(float)
    if ties == "stable":
        found = np.cumsum(rel)
        precision = found / np.arange(1, n + 1)
        hits = rel[:k].sum()
        return (precision[:k] * rel[:k]).sum() / hits if hits else 0.0
    # "average": each position's expected contribution, position by position. Position p lies in
    # the bucket of its distance (n_d items, r_d relevant, N_< items and R_< relevant before it);
    # it is relevant with probability r_d / n_d, and given that, the relevant items up to p number
    # R_< + 1 + (j - 1) (r_d - 1) / (n_d - 1) in expectation, j = p - N_< (sampling without replacement).
    sorted_distance = distance[order]
    expected_sum = expected_hits = 0.0
    for p in range(1, k + 1):
        d = sorted_distance[p - 1]
        in_bucket = distance == d
        n_d, r_d = in_bucket.sum(), relevant[in_bucket].sum()
        before = distance < d
        n_before, r_before = before.sum(), relevant[before].sum()
        j = p - n_before
        probability = r_d / n_d
        found = r_before + 1 + ((j - 1) * (r_d - 1) / (n_d - 1) if n_d > 1 else 0.0)
        expected_sum += probability * found / p
        expected_hits += probability
    return expected_sum / expected_hits if expected_hits else 0.0


def test_reference_average_ap_is_the_mean_over_all_tie_orders():
    rng = np.random.default_rng(0)
    for _ in range(5):
        distance = rng.integers(0, 3, size=7)
        relevant = rng.integers(0, 2, size=7).astype(bool)
        # Orders within ties: every permutation of the items, kept if sorted by distance.
        values = []
        for perm in itertools.permutations(range(7)):
            perm = np.array(perm)
            if (np.diff(distance[perm]) >= 0).all():
                rel = relevant[perm]
                found = np.cumsum(rel)
                values.append((found / np.arange(1, 8))[rel].sum() / rel.sum() if rel.any() else 0.0)
        codes = np.zeros((7, 4), dtype=np.uint8)  # codes at the wanted distances from the zero code
        for i, d in enumerate(distance):
            codes[i, :d] = 1
        got = brute_force_ap(np.zeros(4, np.uint8), codes, relevant, "average")
        assert got == pytest.approx(np.mean(values), abs=1e-12)


@pytest.mark.parametrize("data", ["single_label", "multi_label"])
@pytest.mark.parametrize("ties", ["average", "stable"])
@pytest.mark.parametrize("topk", [None, 7])
def test_reward_equals_brute_force_ap_without_the_item(request, data, ties, topk):
    dataset = request.getfixturevalue(data)
    bits = 5  # few bits: many ties
    env = RankListHashEnv(dataset=dataset, bits=bits, ties=ties, topk=topk, database="fixed")
    env.reset(seed=1)
    rng = np.random.default_rng(2)
    labels = dataset.train.labels
    for _ in range(12):
        env.set_database_codes(rng.integers(0, 2, size=(env.num_items, bits)))
        index = int(rng.integers(env.num_items))
        code = rng.integers(0, 2, size=bits).astype(np.int8)
        if rng.random() < 0.3:  # the item's own database row equal to its code: still excluded
            own = np.arange(env.num_items)[:, None] == index
            env.set_database_codes(np.where(own, code, env.database_codes))
        env.reset(options={"index": index})
        obs, reward, terminated, truncated, info = env.step(code)
        others = np.arange(env.num_items) != index
        rel = relevance(labels, index)[others]
        expected = brute_force_ap(code, env.database_codes[others], rel, ties, topk)
        assert reward == pytest.approx(expected, abs=1e-9)
        assert terminated and not truncated
        assert info["ap"] == reward and info["index"] == index and info["relevant"] == rel.sum()
        np.testing.assert_array_equal(obs, dataset.train.features[index])


@pytest.mark.parametrize("ties", ["average", "stable"])
def test_the_items_own_database_code_does_not_change_its_reward(ties):
    env = RankListHashEnv(bits=16, ties=ties, database="fixed")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = np.array(env.database_codes)
    for index in rng.integers(env.num_items, size=5):
        code = rng.integers(0, 2, size=(1, 16))
        before = env.rewards([index], code)
        for own in (code[0], 1 - code[0]):  # at distance 0 (first in any order), then at distance 16
            bank = start.copy()
            bank[index] = own
            env.set_database_codes(bank)
            assert env.rewards([index], code) == pytest.approx(before, abs=1e-12)
        env.set_database_codes(start)


def test_bank_mode_stores_the_acted_code_and_fixed_mode_does_not():
    bank = RankListHashEnv(bits=16)
    fixed = RankListHashEnv(bits=16, database="fixed")
    for env in (bank, fixed):
        env.reset(seed=3, options={"index": 10})
        start = np.array(env.database_codes)
        code = 1 - start[10]
        env.step(code)
        expected = start.copy()
        if env is bank:
            expected[10] = code
        np.testing.assert_array_equal(env.database_codes, expected)
        # The next reset without a seed keeps the database; a seeded one redraws it.
        env.reset()
        np.testing.assert_array_equal(env.database_codes, expected)
        env.reset(seed=3)
        np.testing.assert_array_equal(env.database_codes, start)


def test_batched_act_matches_the_step_and_keeps_the_last_code_of_a_repeated_item():
    env = RankListHashEnv(bits=16, database="fixed")
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    indices = np.array([4, 9, 4, 100])
    codes = rng.integers(0, 2, size=(4, 16))
    batch = env.rewards(indices, codes)
    for index, code, reward in zip(indices, codes, batch, strict=True):
        env.reset(options={"index": int(index)})
        assert env.step(code)[1] == pytest.approx(reward, abs=1e-12)

    bank = RankListHashEnv(bits=16)
    bank.reset(seed=0)
    start = np.array(bank.database_codes)
    np.testing.assert_allclose(bank.act(indices, codes), batch, atol=1e-12)  # all see the old bank
    expected = start.copy()
    expected[[4, 9, 100]] = codes[[2, 1, 3]]
    np.testing.assert_array_equal(bank.database_codes, expected)


def test_stepping_a_good_code_pays_more():
    """Codes equal per class (a perfect hash) give AP 1 against a database of such codes."""
    dataset = load_dataset("digits")
    codebook = np.random.default_rng(0).integers(0, 2, size=(10, 16))
    env = RankListHashEnv(bits=16, database="fixed")
    env.reset(seed=0)
    env.set_database_codes(codebook[dataset.train.labels])
    indices = np.arange(0, env.num_items, 50)
    np.testing.assert_allclose(env.rewards(indices, codebook[dataset.train.labels[indices]]), 1.0)
    random_codes = np.random.default_rng(1).integers(0, 2, size=(len(indices), 16))
    assert env.rewards(indices, random_codes).mean() < 0.5


def test_database_codes_are_read_only_and_none_before_reset():
    env = RankListHashEnv(bits=16)
    assert env.database_codes is None
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(16, np.int8))
    env.reset(seed=0)
    codes = env.database_codes
    assert codes.dtype == np.uint8 and codes.shape == (env.num_items, 16)
    with pytest.raises(ValueError, match="read-only"):
        codes[0, 0] = 1


def test_set_database_codes_before_the_first_reset_is_kept():
    env = RankListHashEnv(bits=8)
    codes = np.ones((env.num_items, 8), dtype=np.uint8)
    env.set_database_codes(codes)
    env.reset()
    np.testing.assert_array_equal(env.database_codes, codes)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.zeros((1496, 16)), r"shape \(1497, 16\) \(items, bits\), got shape \(1496, 16\)"),
        (np.zeros((1497, 15)), r"got shape \(1497, 15\)"),
        (np.zeros(1497 * 16), r"got shape \(23952,\)"),
        (np.zeros((1497, 16), dtype=np.float32), "integer or bool array of 0/1, got dtype float32"),
        (np.full((1497, 16), 2), r"only 0 and 1, got 2 at index \(0, 0\)"),
        (-np.eye(1497, 16, k=3, dtype=np.int64), r"only 0 and 1, got -1 at index \(0, 3\)"),
    ],
)
def test_bad_database_codes_are_refused(codes, message):
    env = RankListHashEnv(bits=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.set_database_codes(codes)


def test_bool_database_codes_are_accepted():
    env = RankListHashEnv(bits=16)
    env.set_database_codes(np.zeros((env.num_items, 16), dtype=bool))
    assert env.database_codes.dtype == np.uint8


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bits": 32, "ties": "stable"}, {"topk": 100, "database": "fixed"}, {"bits": 70}],
)
def test_env_checkers_pass(kwargs):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, **kwargs).unwrapped)
        sb3_check_env(gym.make(ENV_ID, **kwargs).unwrapped)


@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_env_checkers_pass_with_render_and_multi_label(multi_label, render_mode):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, render_mode=render_mode).unwrapped, skip_render_check=False)
        gym_check_env(gym.make(ENV_ID, dataset=multi_label, bits=8).unwrapped)
        sb3_check_env(gym.make(ENV_ID, dataset=multi_label, bits=8).unwrapped)


def rollout(env, seed, steps=30):
    _, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [info["index"]]
    for _ in range(steps):
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        trace.append((info["index"], reward))
        assert terminated
        _, info = env.reset()
        trace.append(info["index"])
    return trace, np.array(env.unwrapped.database_codes)


def test_same_seed_same_episodes_and_bank_and_different_seed_differs():
    a, bank_a = rollout(gym.make(ENV_ID), seed=7)
    b, bank_b = rollout(gym.make(ENV_ID), seed=7)
    c, bank_c = rollout(gym.make(ENV_ID), seed=8)
    assert a == b
    np.testing.assert_array_equal(bank_a, bank_b)
    assert a != c and not np.array_equal(bank_a, bank_c)


def test_pickle_round_trip_continues_identically():
    env = RankListHashEnv(bits=16)
    env.reset(seed=11)
    env.step(np.ones(16, np.int8))
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.database_codes, env.database_codes)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.integers(0, 2, size=16).astype(np.int8)
        a_obs, a_info = env.reset()
        b_obs, b_info = clone.reset()
        np.testing.assert_array_equal(a_obs, b_obs)
        a, b = env.step(action), clone.step(action)
        assert a[1:4] == b[1:4]
        np.testing.assert_equal(a[4], b[4])  # infos (the expert's action is an array)
    np.testing.assert_array_equal(clone.database_codes, env.database_codes)


def test_vector_env_in_sync_mode_steps():
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", bits=16)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 64)
    _, rewards, terminated, truncated, _ = envs.step(np.ones((3, 16), dtype=np.int8))
    assert terminated.all() and not truncated.any() and ((0 <= rewards) & (rewards <= 1)).all()
    envs.close()


@pytest.mark.parametrize(
    "action",
    [np.zeros(15, np.int8), np.full(16, 2, np.int8), np.zeros((1, 16), np.int8), 3, None],
)
def test_action_outside_space_is_refused(action):
    env = RankListHashEnv(bits=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"is not in MultiBinary\(16\)"):
        env.step(action)


def test_bad_batches_are_refused():
    env = RankListHashEnv(bits=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="index 1497 is out of range"):
        env.rewards([1497], np.zeros((1, 16), np.int8))
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 16\)"):
        env.rewards([0, 1], np.zeros((1, 16), np.int8))
    with pytest.raises(ValueError, match="only 0 and 1"):
        env.rewards([0], np.full((1, 16), 3))


def test_reset_index_option_and_its_range():
    env = RankListHashEnv(bits=16)
    _, info = env.reset(seed=0, options={"index": 5})
    assert sorted(info) == ["expert_action", "index"] and info["index"] == 5
    with pytest.raises(ValueError, match=r"options\['index'\]=1497 is out of range"):
        env.reset(options={"index": env.num_items})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 0}, "bits must be a positive integer"),
        ({"split": "validation"}, "split must be one of"),
        ({"ties": "random"}, "ties must be one of"),
        ({"topk": 0}, "topk must be None or a positive integer"),
        ({"topk": 2.5}, "topk must be None or a positive integer"),
        ({"topk": True}, "topk must be None or a positive integer"),
        ({"database": "shared"}, "database must be one of"),
        ({"render_mode": "human"}, "render_mode must be None or one of"),
        ({"dataset": "imagenet"}, "imagenet"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RankListHashEnv(**kwargs)


def test_render_ansi_and_rgb_array():
    env = gym.make(ENV_ID, bits=16, render_mode="ansi")
    env.reset(seed=0)
    assert "not acted yet" in env.render()
    _, reward, *_ = env.step(np.ones(16, np.int8))
    text = env.render()
    assert f"AP={reward:.4f}" in text and "1" * 16 in text
    picture = gym.make(ENV_ID, bits=16, render_mode="rgb_array")
    picture.reset(seed=0)
    frame = picture.render()
    assert frame.dtype == np.uint8 and frame.shape == ((1 + 10) * 8, 16 * 8, 3)


@pytest.mark.parametrize("bits", [5, 64, 70])
@pytest.mark.parametrize("multi", [False, True])
def test_packed_distance_counts_equals_distance_counts(bits, multi):
    rng = np.random.default_rng(bits)
    xq, xb = rng.integers(0, 2, size=(9, bits)), rng.integers(0, 2, size=(40, bits))
    if multi:
        yq, yb = rng.integers(0, 2, size=(9, 70)), rng.integers(0, 2, size=(40, 70))
        lq, lb = ranking.pack_codes(yq), ranking.pack_codes(yb)
    else:
        yq, yb = rng.integers(0, 4, size=9), rng.integers(0, 4, size=40)
        lq, lb = yq, yb
    got = ranking.packed_distance_counts(ranking.pack_codes(xq), lq, ranking.pack_codes(xb), lb, bits)
    expected = ranking.distance_counts(xq, yq, xb, yb)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_packed_distance_counts_refuses_unpacked_or_padded_codes():
    xb = ranking.pack_codes(np.ones((3, 5)))
    labels = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"xq must be packed codes, uint64 \(n, 1\)"):
        ranking.packed_distance_counts(np.ones((3, 5), np.uint8), labels, xb, labels, 5)
    with pytest.raises(ValueError, match="bits set beyond bit 4"):
        ranking.packed_distance_counts(xb, labels, xb, labels, 4)
    with pytest.raises(ValueError, match="both be class ids"):
        ranking.packed_distance_counts(xb, labels, xb, labels[:, None], 5)
