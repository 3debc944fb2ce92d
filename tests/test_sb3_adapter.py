"""hashing_gym.sb3: SB3's VecEnv semantics over the batched envs, step for step equal to DummyVecEnv."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import hashing_gym  # noqa: F401
from hashing_gym.sb3 import HashingVecEnv, make_vec_env

CASES = {
    "BinaryCodeTravel-v0": {"bits": 8, "max_steps": 5},
    "SequentialHashBits-v0": {"bits": 8, "group": 2},
    "RankListHash-v0": {"bits": 8},
}


def equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def dummy(env_id, n, seed, **kwargs):
    venv = DummyVecEnv([lambda: gym.make(env_id, **kwargs)] * n)
    venv.seed(seed)
    return venv


@pytest.mark.parametrize("env_id", sorted(CASES))
def test_every_step_equals_dummy_vec_env(env_id):
    kwargs, n = CASES[env_id], 3
    ours, reference = make_vec_env(env_id, n, seed=7, monitor=False, **kwargs), dummy(env_id, n, 7, **kwargs)
    assert ours.observation_space == reference.observation_space
    assert ours.action_space == reference.action_space
    assert equal(ours.reset(), reference.reset())
    assert all(equal(a, b) for a, b in zip(ours.reset_infos, reference.reset_infos, strict=True))
    reference.action_space.seed(0)
    dones = truncations = 0
    for _ in range(80):
        actions = np.array([reference.action_space.sample() for _ in range(n)])
        obs, rewards, done, infos = ours.step(actions)
        ref_obs, ref_rewards, ref_done, ref_infos = reference.step(actions)
        assert equal(obs, ref_obs)
        assert rewards.dtype == ref_rewards.dtype == np.float32 and np.array_equal(rewards, ref_rewards)
        assert np.array_equal(done, ref_done)
        for info, ref_info in zip(infos, ref_infos, strict=True):
            assert info.keys() == ref_info.keys()
            assert all(equal(info[key], ref_info[key]) for key in info), (info, ref_info)
        assert all(equal(a, b) for a, b in zip(ours.reset_infos, reference.reset_infos, strict=True))
        dones += done.sum()
        truncations += sum(info["TimeLimit.truncated"] for info in infos)
    assert dones > 0  # the autoreset path was compared
    if env_id == "BinaryCodeTravel-v0":
        assert truncations > 0


def test_learning_through_the_adapter_equals_learning_through_dummy_vec_env():
    """Same trajectories, same seed: PPO's weights after training are bitwise those of DummyVecEnv."""
    kwargs = CASES["RankListHash-v0"]
    weights = []
    ours = make_vec_env("RankListHash-v0", 4, seed=1, **kwargs)
    for venv in (ours, VecMonitor(dummy("RankListHash-v0", 4, 1, **kwargs))):
        model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=2, seed=0, device="cpu")
        model.learn(128)
        weights.append(model.policy.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_dqn_trains_on_dict_observations_through_it():
    venv = make_vec_env("BinaryCodeTravel-v0", 8, seed=0, **CASES["BinaryCodeTravel-v0"])
    model = DQN("MultiInputPolicy", venv, learning_starts=32, buffer_size=1000, seed=0, device="cpu")
    model.learn(384)  # 12 rollouts of train_freq 4 x 8 copies
    assert model.num_timesteps == 384 and len(model.ep_info_buffer) > 0  # VecMonitor reported episodes


@pytest.mark.parametrize("env_id", sorted(CASES))
def test_a_snapshot_continues_every_copy_exactly(env_id):
    """get_state/set_state (the batched env's snapshot) on a fresh adapter: the same steps follow."""
    kwargs, n = CASES[env_id], 3
    venv = make_vec_env(env_id, n, seed=4, monitor=False, **kwargs)
    venv.reset()
    venv.action_space.seed(1)
    actions = [np.array([venv.action_space.sample() for _ in range(n)]) for _ in range(24)]
    for action in actions[:7]:
        venv.step(action)
    snapshot = venv.get_state()
    expected = [venv.step(action) for action in actions[7:]]

    again = make_vec_env(env_id, n, seed=99, monitor=False, **kwargs)  # another seed: the snapshot decides
    again.reset()
    again.set_state(snapshot)
    for action, (obs, rewards, dones, infos) in zip(actions[7:], expected, strict=True):
        got = again.step(action)
        assert equal(got[0], obs) and np.array_equal(got[1], rewards) and np.array_equal(got[2], dones)
        assert all(equal(a, b) for a, b in zip(got[3], infos, strict=True))
    other = make_vec_env(env_id, n + 1, monitor=False, **kwargs)
    with pytest.raises(ValueError, match="num_envs"):
        other.set_state(snapshot)


def test_batch_method_answers_for_every_copy_at_once():
    kwargs, n = CASES["BinaryCodeTravel-v0"], 3
    ours = make_vec_env("BinaryCodeTravel-v0", n, seed=5, **kwargs)
    reference = dummy("BinaryCodeTravel-v0", n, 5, **kwargs)
    ours.reset(), reference.reset()
    for t in range(12):
        expert = ours.unwrapped.batch_method("expert_action")
        assert expert.shape == (n,)
        np.testing.assert_array_equal(expert, reference.env_method("expert_action"))
        action = expert if t % 3 else np.full(n, t % 8)  # the teacher, and other moves now and then
        ours.step(action), reference.step(action)


def test_it_refuses_what_it_cannot_serve():
    with pytest.raises(ValueError, match="SameStep"):
        next_step = {"vectorization_mode": "vector_entry_point", "autoreset_mode": "NextStep"}
        HashingVecEnv(gym.make_vec("RankListHash-v0", num_envs=2, **next_step))
    with pytest.raises(TypeError, match="HashingVectorEnv"):
        HashingVecEnv(gym.make_vec("CartPole-v1", num_envs=2))
    venv = make_vec_env("RankListHash-v0", 2, monitor=False, bits=8)
    with pytest.raises(ValueError, match="all copies"):
        venv.set_attr("check_actions", False, indices=[0])
    with pytest.raises(RuntimeError, match="step_async"):
        venv.step_wait()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_trajectories_are_the_cpu_ones():
    kwargs = CASES["BinaryCodeTravel-v0"]
    gpu = make_vec_env("BinaryCodeTravel-v0", 3, seed=2, device="cuda", monitor=False, **kwargs)
    cpu = make_vec_env("BinaryCodeTravel-v0", 3, seed=2, monitor=False, **kwargs)
    assert equal(gpu.reset(), cpu.reset())
    for t in range(30):
        actions = np.array([t % 9, (3 * t) % 9, 8])
        a, b = gpu.step(actions), cpu.step(actions)
        assert equal(a[0], b[0]) and np.allclose(a[1], b[1], atol=1e-6) and np.array_equal(a[2], b[2])
