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
from hashing_gym.envs import BinaryCodeTravelEnv, InvalidActionError, ResetNeededError, encode_batch
from hashing_gym.envs.base import label_mask
from hashing_gym.ranking import mean_average_precision

ENV_ID = "BinaryCodeTravel-v0"


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=5, n_per_class=40, dim=8, multi_label=True, query_per_class=4)


def margin(info):
    return info["d_pos"] - info["d_neg"]


@pytest.mark.parametrize(
    "kwargs", [{}, {"flatten": True}, {"bits": 32, "init": "zeros"}, {"codebook": "hadamard"}]
)
def test_env_checkers_pass(kwargs):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, **kwargs).unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(ENV_ID, **kwargs).unwrapped)


def test_env_checkers_pass_on_multi_label(multi_label):
    with no_warnings():
        gym_check_env(gym.make(ENV_ID, dataset=multi_label, bits=16).unwrapped)
        sb3_check_env(gym.make(ENV_ID, dataset=multi_label, bits=16).unwrapped)


def rollout(env, seed, steps=60):
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [(obs["code"].copy(), info["index"])]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs["code"].copy(), reward, terminated, truncated, info["index"]))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((obs["code"].copy(), info["index"]))
    return trace


def test_same_seed_same_trajectory_and_different_seed_differs():
    a = rollout(gym.make(ENV_ID), seed=7)
    b = rollout(gym.make(ENV_ID), seed=7)
    c = rollout(gym.make(ENV_ID), seed=8)
    assert repr(a) == repr(b)
    assert repr(a) != repr(c)


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_flip_rewards_telescope(bits):
    env = BinaryCodeTravelEnv(bits=bits, max_steps=200)
    rng = np.random.default_rng(bits)
    for episode in range(20):
        _, info = env.reset(seed=episode)
        start = margin(info)
        total = 0.0
        for action in rng.integers(0, bits, size=int(rng.integers(1, 60))):
            _, reward, terminated, truncated, info = env.step(int(action))
            total += reward
            assert not terminated
        assert total == pytest.approx(start - margin(info), abs=1e-9)


def test_flip_reward_matches_distances_recomputed_from_scratch(multi_label):
    env = BinaryCodeTravelEnv(dataset=multi_label, bits=16, max_steps=100)
    obs, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        previous = margin(info)
        obs, reward, _, _, info = env.step(int(rng.integers(16)))
        distances = (env.codebook != obs["code"]).sum(axis=1)
        classes = multi_label.train.labels[info["index"]].astype(bool)
        assert info["d_pos"] == distances[classes].min()  # nearest of the item's class codewords
        expected_neg = distances[~classes].mean() if (~classes).any() else 0.0
        assert info["d_neg"] == pytest.approx(expected_neg)
        assert reward == pytest.approx(previous - margin(info))


def test_terminate_pays_plus_sigma_inside_eta_ball_and_minus_sigma_outside():
    env = BinaryCodeTravelEnv(bits=16, sigma=5.0)
    seen = set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        while seed % 2 and info["expert_action"] != env.terminate_action:  # walk into the ball first
            _, _, _, _, info = env.step(info["expert_action"])
        _, reward, terminated, truncated, _ = env.step(env.terminate_action)
        assert terminated and not truncated
        assert reward == (5.0 if info["d_pos"] <= env.eta else -5.0)
        seen.add(reward)
    assert seen == {5.0, -5.0}


@pytest.mark.parametrize("init", ["random", "zeros"])
@pytest.mark.parametrize("bits", [8, 16, 32])
def test_teacher_always_reaches_the_ball_and_terminates(init, bits):
    env = gym.make(ENV_ID, bits=bits, init=init)
    for seed in range(60):
        _, info = env.reset(seed=seed)
        steps = 0
        while True:
            _, reward, terminated, truncated, info = env.step(info["expert_action"])
            steps += 1
            if terminated or truncated:
                break
        assert terminated and reward == 5.0
        assert steps <= bits + 1


def test_teacher_succeeds_on_multi_label(multi_label):
    env = BinaryCodeTravelEnv(dataset=multi_label, bits=16)
    for seed in range(40):
        _, info = env.reset(seed=seed)
        while True:
            _, reward, terminated, truncated, info = env.step(info["expert_action"])
            if terminated or truncated:
                break
        assert terminated and reward == env.sigma


def test_history_holds_last_flips_newest_first_and_not_terminate():
    env = BinaryCodeTravelEnv(bits=8, history=3, max_steps=20)
    env.reset(seed=0)
    for action in [1, 4, 6, 2]:
        obs, *_ = env.step(action)
    expected = np.zeros((3, 8), dtype=np.int8)
    expected[0, 2] = expected[1, 6] = expected[2, 4] = 1
    np.testing.assert_array_equal(obs["history"], expected)
    obs, *_ = env.step(env.terminate_action)
    np.testing.assert_array_equal(obs["history"], expected)


def test_truncates_after_max_steps():
    env = BinaryCodeTravelEnv(bits=8, max_steps=5)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]


def test_flatten_observation_concatenates_features_code_history():
    flat = BinaryCodeTravelEnv(bits=16, flatten=True)
    nested = BinaryCodeTravelEnv(bits=16)
    obs_flat, _ = flat.reset(seed=4)
    obs, _ = nested.reset(seed=4)
    expected = np.concatenate([obs["features"], obs["code"], obs["history"].ravel()]).astype(np.float32)
    np.testing.assert_array_equal(obs_flat, expected)


def test_reset_index_option_and_its_range():
    env = BinaryCodeTravelEnv(bits=16)
    _, info = env.reset(seed=0, options={"index": 5})
    assert info["index"] == 5
    with pytest.raises(ValueError, match=r"options\['index'\]=1497 is out of range"):
        env.reset(options={"index": env.num_items})
    with pytest.raises(ValueError, match="must be an integer"):
        env.reset(options={"index": 1.5})


@pytest.mark.parametrize("action", [17, -1, 2.0, np.float64(2.0), "3", None, np.array([1]), np.int64(99)])
def test_action_outside_space_is_refused(action):
    env = BinaryCodeTravelEnv(bits=16)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="is not in Discrete"):
        env.step(action)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 0}, "bits must be a positive integer"),
        ({"bits": 3}, "too small for 10 classes"),
        ({"init": "ones"}, "init must be one of"),
        ({"eta": 99}, "eta must be an integer"),
        ({"sigma": -1.0}, "sigma must be a positive number"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"history": 0}, "history must be a positive integer"),
        ({"split": "validation"}, "split must be one of"),
        ({"render_mode": "human"}, "render_mode must be None or one of"),
        ({"dataset": "imagenet"}, "imagenet"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BinaryCodeTravelEnv(**kwargs)


def test_pickle_round_trip_continues_identically():
    env = BinaryCodeTravelEnv(bits=16)
    env.reset(seed=11)
    env.step(3)
    clone = pickle.loads(pickle.dumps(env))
    for action in [1, 2, 16]:
        a = env.step(action)
        b = clone.step(action)
        np.testing.assert_array_equal(a[0]["code"], b[0]["code"])
        assert a[1:4] == b[1:4]


def test_render_ansi_and_rgb_array():
    env = gym.make(ENV_ID, bits=16, render_mode="ansi")
    obs, info = env.reset(seed=0)
    text = env.render()
    assert "".join(map(str, obs["code"])) in text and f"d_pos={info['d_pos']}" in text
    picture = gym.make(ENV_ID, bits=16, render_mode="rgb_array")
    picture.reset(seed=0)
    frame = picture.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[:2] == ((10 + 1) * 8, 16 * 8)


def teacher_policy(env):
    """A batched policy that plays the teacher for items identified by their features."""
    lookup = {row.tobytes(): i for i, row in enumerate(env.features)}

    def policy(obs):
        actions = []
        for features, code in zip(obs["features"], obs["code"], strict=True):
            target = env.codebook[env.split.labels[lookup[features.tobytes()]]]
            differs = np.flatnonzero(code != target)
            actions.append(env.bits if len(differs) <= env.eta else differs[0])
        return np.array(actions)

    return policy


def test_encode_batch_equals_stepping_the_env_with_the_same_policy():
    env = BinaryCodeTravelEnv(bits=16, init="zeros", max_steps=16, split="query")
    policy = teacher_policy(env)
    codes = encode_batch(policy, env.features, 16, init="zeros")
    for index in range(0, env.num_items, 7):
        obs, _ = env.reset(options={"index": index})
        for _ in range(16):
            batch = {key: value[None] for key, value in obs.items()}
            obs, _, terminated, truncated, _ = env.step(int(policy(batch)[0]))
            if terminated or truncated:
                break
        np.testing.assert_array_equal(codes[index], obs["code"])


def test_teacher_codes_with_eta_zero_retrieve_perfectly():
    query = BinaryCodeTravelEnv(bits=16, eta=0, split="query")
    database = BinaryCodeTravelEnv(bits=16, eta=0, split="database")
    q = encode_batch(teacher_policy(query), query.features, 16)
    db = encode_batch(teacher_policy(database), database.features, 16)
    np.testing.assert_array_equal(q, query.codebook[query.split.labels])
    dataset = query.dataset
    assert mean_average_precision(q, dataset.query.labels, db, dataset.database.labels) == 1.0


# Built once: hypothesis calls the test many times, and every episode starts with a seeded reset.
_SHARED_ENVS = {init: BinaryCodeTravelEnv(bits=16, init=init, max_steps=1000) for init in ("random", "zeros")}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    actions=st.lists(st.integers(0, 15), min_size=1, max_size=40),
    init=st.sampled_from(["random", "zeros"]),
)
def test_flip_rewards_telescope_on_any_action_sequence(seed, actions, init):
    env = _SHARED_ENVS[init]
    _, info = env.reset(seed=seed)
    start = margin(info)
    total = 0.0
    for action in actions:
        _, reward, _, _, info = env.step(action)
        total += reward
    assert total == pytest.approx(start - margin(info), abs=1e-9)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros(64), r"features must be a non-empty 2-D \(items, dimension\) array, got shape \(64,\)"),
        (np.zeros((0, 64)), r"got shape \(0, 64\)"),
        (np.where(np.eye(3, 64) > 0, np.nan, 0.0), "features must be finite, got NaN or inf in row 0"),
        (np.where(np.eye(3, 64, k=1)[::-1] > 0, np.inf, 0.0), "in row 0"),
    ],
)
def test_encode_batch_refuses_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        encode_batch(lambda obs: np.full(len(obs["code"]), 16), features, bits=16)


@pytest.mark.parametrize(
    ("action", "message"),
    [(17, r"outside 0\.\.16: 17"), (-1, r"outside 0\.\.16: -1"), (0.5, "integer actions")],
)
def test_encode_batch_refuses_actions_outside_the_space(action, message):
    with pytest.raises(InvalidActionError, match=message):
        encode_batch(lambda obs: np.full(len(obs["code"]), action), np.zeros((4, 64)), bits=16)


def test_a_trained_policy_refuses_features_of_the_wrong_dimension():
    from stable_baselines3 import DQN

    model = DQN("MultiInputPolicy", gym.make("BinaryCodeTravel-v0", bits=16), learning_starts=0, device="cpu")
    policy = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
    assert encode_batch(policy, np.zeros((3, 64)), bits=16).shape == (3, 16)
    with pytest.raises(ValueError, match=r"Unexpected observation shape \(3, 63\)"):
        encode_batch(policy, np.zeros((3, 63)), bits=16)


@pytest.mark.parametrize("env_id", ["BinaryCodeTravel-v0", "RankListHash-v0", "SequentialHashBits-v0"])
def test_gymnasium_error_types_for_bad_actions_and_missing_reset(env_id):
    from gymnasium.error import InvalidAction, ResetNeeded

    env = gym.make(env_id, bits=16, disable_env_checker=True).unwrapped
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match="is not in") as raised:
        env.step(-1)
    assert isinstance(raised.value, ValueError)  # callers catching ValueError keep working


@pytest.mark.parametrize(
    ("env_id", "bad"),
    [
        ("BinaryCodeTravel-v0", [99, 0]),
        ("RankListHash-v0", np.full((2, 16), 2)),
        ("SequentialHashBits-v0", [[2], [0]]),
    ],
)
def test_vector_envs_raise_invalid_action_too(env_id, bad):
    from gymnasium.error import InvalidAction

    extra = {"group": 1} if env_id == "SequentialHashBits-v0" else {}
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", bits=16, **extra)
    envs.reset(seed=0)
    with pytest.raises(InvalidAction, match="not in"):
        envs.step(np.asarray(bad))


# ---------------------------------------------------------------------------------------------------------
# The env contract across the three MDPs: one exception type per mistake, single and batched

CONTRACT_ENVS = {  # id -> (constructor keywords, an action that ends an episode at once or soonest)
    "BinaryCodeTravel-v0": ({"bits": 8}, lambda env: 8),
    "SequentialHashBits-v0": ({"bits": 8, "group": 4}, lambda env: env.action_space.sample()),
    "RankListHash-v0": ({"bits": 8}, lambda env: env.action_space.sample()),
}
# id -> bad actions for one (single) env: a float, a wrong shape, out of range
BAD_SINGLE_ACTIONS = {
    "BinaryCodeTravel-v0": [1.0, np.float64(2.0), np.array([1, 2]), 9, -1],
    "SequentialHashBits-v0": [np.array([0.5, 1.0, 0.0, 1.0]), 1.5, np.zeros(3, np.int64), np.full(4, 2)],
    "RankListHash-v0": [np.full(8, 0.5), 1.5, np.zeros(7, np.int64), np.full(8, -1)],
}


@pytest.fixture(scope="module")
def contract_data():
    return load_dataset("blobs", num_classes=3, n_per_class=12, dim=4, query_per_class=2)


def make_single(env_id, dataset, **extra):
    kwargs, _ = CONTRACT_ENVS[env_id]
    return gym.make(env_id, dataset=dataset, disable_env_checker=True, **kwargs, **extra)


def make_vector(env_id, dataset, **extra):
    kwargs, _ = CONTRACT_ENVS[env_id]
    return gym.make_vec(
        env_id, num_envs=2, vectorization_mode="vector_entry_point", dataset=dataset, **kwargs, **extra
    )


@pytest.mark.parametrize(
    ("env_id", "index"),
    [(env_id, i) for env_id, actions in BAD_SINGLE_ACTIONS.items() for i in range(len(actions))],
)
def test_every_bad_action_of_a_single_env_is_an_invalid_action_error(env_id, index, contract_data):
    env = make_single(env_id, contract_data)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="is not in"):
        env.step(BAD_SINGLE_ACTIONS[env_id][index])


def bad_vector_actions(env_id, n, backend):
    """A float, a wrong shape and an out-of-range batch of actions for ``n`` sub-envs."""
    if env_id == "BinaryCodeTravel-v0":
        cases = [np.full(n, 1.0), np.zeros((n, 1), np.int64), np.array([0, 9][:n] + [0] * (n - 2))]
    else:
        width = CONTRACT_ENVS[env_id][0].get("group", 8)
        cases = [np.full((n, width), 0.5), np.zeros((n, width + 1), np.int64), np.full((n, width), 2)]
    if backend == "torch":
        import torch

        cases = [torch.as_tensor(case) for case in cases]
    return cases


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("env_id", list(CONTRACT_ENVS))
def test_every_bad_action_of_a_vector_env_is_an_invalid_action_error(env_id, backend, contract_data):
    envs = make_vector(env_id, contract_data, backend=backend)
    envs.reset(seed=0)
    for actions in bad_vector_actions(env_id, 2, backend):
        with pytest.raises(InvalidActionError, match="not in|must be integers"):
            envs.step(actions)


@pytest.mark.parametrize("env_id", ["SequentialHashBits-v0", "RankListHash-v0"])
def test_float_zeros_and_ones_are_binary_actions_in_single_and_vector_envs(env_id, contract_data):
    """Gymnasium's MultiBinary holds float 0.0/1.0 (SB3's Bernoulli policies emit them): both shells agree."""
    kwargs, _ = CONTRACT_ENVS[env_id]
    width = kwargs.get("group", 8)
    env = make_single(env_id, contract_data)
    env.reset(seed=0)
    env.step(np.ones(width, dtype=np.float32))
    envs = make_vector(env_id, contract_data)
    envs.reset(seed=0)
    envs.step(np.ones((2, width), dtype=np.float32))


def run_to_the_end(env, first_action):
    """Step until the episode terminates or is truncated; return (terminated, truncated)."""
    env.reset(seed=0)
    for _ in range(100):
        _, _, terminated, truncated, _ = env.step(first_action(env))
        if terminated or truncated:
            return terminated, truncated
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize("env_id", list(CONTRACT_ENVS))
def test_step_after_the_episode_ended_needs_a_reset_in_every_single_env(env_id, contract_data):
    from gymnasium.error import ResetNeeded

    env = make_single(env_id, contract_data)
    terminated, _ = run_to_the_end(env, CONTRACT_ENVS[env_id][1])
    assert terminated
    with pytest.raises(ResetNeededError, match="call reset") as raised:
        env.step(CONTRACT_ENVS[env_id][1](env))
    assert isinstance(raised.value, ResetNeeded)  # Gymnasium's type, as OrderEnforcing raises before reset
    env.reset(seed=1)
    env.step(CONTRACT_ENVS[env_id][1](env))  # a reset starts a new episode that steps again


def test_step_after_truncation_needs_a_reset(contract_data):
    env = make_single("BinaryCodeTravel-v0", contract_data, max_steps=2)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[2:4] == (False, True)
    with pytest.raises(ResetNeededError, match="the episode has ended \\(terminated or truncated\\)"):
        env.step(0)


@pytest.mark.parametrize("env_id", list(CONTRACT_ENVS))
def test_vector_envs_autoreset_or_raise_reset_needed_when_disabled(env_id, contract_data):
    kwargs, _ = CONTRACT_ENVS[env_id]
    end = np.full(2, 8) if env_id == "BinaryCodeTravel-v0" else np.ones((2, kwargs.get("group", 8)), np.int64)
    for mode in ("NextStep", "Disabled"):
        envs = make_vector(env_id, contract_data, autoreset_mode=mode)
        envs.reset(seed=0)
        for _ in range(100):
            _, _, terminated, truncated, _ = envs.step(end)
            if (terminated | truncated).all():
                break
        if mode == "NextStep":
            envs.step(end)  # the ended sub-envs restart: no reset needed
        else:
            with pytest.raises(ResetNeededError):
                envs.step(end)


# ---------------------------------------------------------------------------------------------------------
# Fidelity to DRLH: random start codes, Table 1's eta, the teacher


def test_env_start_code_is_drawn_from_its_seeded_generator():
    env = BinaryCodeTravelEnv(bits=16)
    starts = [env.reset(seed=11, options={"index": 4})[0]["code"] for _ in range(2)]
    np.testing.assert_array_equal(starts[0], starts[1])
    # gymnasium seeds np_random with numpy's default generator; given an index, the code is its first draw.
    expected = np.random.default_rng(11).integers(0, 2, size=(1, 16), dtype=np.int8)[0]
    np.testing.assert_array_equal(starts[0], expected)
    assert not np.array_equal(env.reset(seed=12, options={"index": 4})[0]["code"], expected)


def test_encode_batch_starts_from_codes_drawn_with_its_seed():
    features = load_dataset("digits").query.features[:25]
    first_seen = []

    def terminate_at_once(obs):
        first_seen.append(obs["code"].copy())
        return np.full(len(obs["code"]), 16)

    codes = encode_batch(terminate_at_once, features, 16, seed=7)  # init="random" is the default
    expected = np.random.default_rng(7).integers(0, 2, size=(25, 16), dtype=np.int8)
    np.testing.assert_array_equal(first_seen[0], expected)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(encode_batch(terminate_at_once, features, 16, seed=7), codes)
    assert not np.array_equal(encode_batch(terminate_at_once, features, 16, seed=8), codes)
    assert not encode_batch(terminate_at_once, features, 16, init="zeros").any()


@pytest.mark.parametrize(
    ("multi_label", "bits", "radius", "eta"),
    [
        (False, 16, 3, 2),
        (False, 32, 7, 5),
        (True, 16, 3, 1),
        (True, 32, 7, 3),
        (False, 64, 15, 8),  # no Table 1 entry: ceil(R / 2)
        (True, 64, 15, 7),  # floor(R / 2)
    ],
)
def test_default_eta_is_table_1s_best_or_our_rounding_of_half_r(multi_label, bits, radius, eta):
    dataset = load_dataset("blobs", num_classes=10, n_per_class=20, dim=8, multi_label=multi_label)
    env = BinaryCodeTravelEnv(dataset=dataset, bits=bits)
    assert (env.radius, env.eta) == (radius, eta)


@pytest.mark.parametrize("eta", [-1, 4, 2.0, True])
def test_eta_outside_0_to_r_is_refused(eta):
    with pytest.raises(ValueError, match=r"eta must be an integer in \[0, R=3\]"):
        BinaryCodeTravelEnv(bits=16, eta=eta)


@pytest.mark.parametrize("multi_label", [False, True])
def test_teacher_flips_the_most_rewarding_wrong_bit_and_never_moves_away(multi_label):
    dataset = load_dataset("blobs", num_classes=5, n_per_class=20, dim=8, multi_label=multi_label)
    env = BinaryCodeTravelEnv(dataset=dataset, bits=16)
    positive = label_mask(env.split, dataset.num_classes)
    rng = np.random.default_rng(0)
    checked = 0
    for episode in range(20):
        obs, info = env.reset(seed=episode)
        for _ in range(env.max_steps):
            action = info["expert_action"]
            if info["d_pos"] == 0:
                assert action == env.bits  # on the codeword: terminate
                break
            # Every flip's reward, from copies of the env: the teacher's is a largest among the wrong bits.
            rewards = {}
            for bit in range(env.bits):
                probe = pickle.loads(pickle.dumps(env))  # our own env, not a user's file
                _, reward, _, _, after = probe.step(bit)
                rewards[bit] = (reward, after["d_pos"])
            distances = (env.codebook != obs["code"]).sum(axis=1)
            classes = np.flatnonzero(positive[info["index"]])
            target = classes[distances[classes].argmin()]  # the nearest class codeword, lowest index on ties
            wrong = np.flatnonzero(env.codebook[target] != obs["code"]).tolist()
            assert action in wrong and rewards[action][1] == info["d_pos"] - 1  # never away from the target
            assert rewards[action][0] == max(rewards[bit][0] for bit in wrong)
            assert action == min(bit for bit in wrong if rewards[bit][0] == rewards[action][0])
            checked += 1
            move = action if rng.random() < 0.8 else rng.integers(16)  # states off the teacher's path too
            obs, _, terminated, truncated, info = env.step(int(move))
            if terminated or truncated:
                break
    assert checked > 100
