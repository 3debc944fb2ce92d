"""hashing_gym.wrappers.MultiDiscreteActions: the env's own episodes behind a MultiDiscrete([2] * n) space."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import hashing_gym  # noqa: F401
from hashing_gym.envs.base import InvalidActionError
from hashing_gym.wrappers import MultiDiscreteActions


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("env_id", ["RankListHash-v0", "SequentialHashBits-v0"])
def test_the_wrapped_env_is_the_env_under_another_action_space(env_id):
    wrapped = MultiDiscreteActions(gym.make(env_id, bits=8))
    plain = gym.make(env_id, bits=8)
    assert wrapped.action_space == gym.spaces.MultiDiscrete([2] * plain.action_space.shape[0])
    wrapped.action_space.seed(0)
    assert same(wrapped.reset(seed=3), plain.reset(seed=3))
    for _ in range(20):
        action = wrapped.action_space.sample()
        step, expected = wrapped.step(action), plain.step(action.astype(np.int8))
        assert all(same(a, b) for a, b in zip(step, expected, strict=True))  # obs, reward, flags, info
        if step[2] or step[3]:
            wrapped.reset(seed=4)
            plain.reset(seed=4)
    check_env(MultiDiscreteActions(gym.make(env_id, bits=8)).unwrapped)


def test_it_refuses_other_spaces_and_other_actions():
    with pytest.raises(TypeError, match="MultiBinary"):
        MultiDiscreteActions(gym.make("BinaryCodeTravel-v0", bits=8))
    env = MultiDiscreteActions(gym.make("RankListHash-v0", bits=8))
    env.reset(seed=0)
    for bad in (np.full(8, 2), np.zeros(7, dtype=int), np.full(8, 0.5)):
        with pytest.raises(InvalidActionError, match="MultiDiscrete"):
            env.step(bad)
