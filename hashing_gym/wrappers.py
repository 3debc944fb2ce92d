"""Gymnasium wrappers for RL libraries that do not take every action space.

RLlib has no action distribution for ``MultiBinary`` ("Unsupported action space: MultiBinary(16)"),
the action space of ``RankListHash-v0`` and ``SequentialHashBits-v0``. :class:`MultiDiscreteActions`
shows them the same actions as ``MultiDiscrete([2] * n)``, which RLlib (and any library with a
categorical head per dimension) supports: an action is still one 0/1 value per bit, so the wrapped
env's rewards, observations and episodes are exactly the env's.

>>> import gymnasium as gym
>>> import hashing_gym
>>> env = MultiDiscreteActions(gym.make("RankListHash-v0", bits=8))
>>> env.action_space
MultiDiscrete([2 2 2 2 2 2 2 2])
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from hashing_gym.envs.base import InvalidActionError

__all__ = ["MultiDiscreteActions"]


class MultiDiscreteActions(gym.ActionWrapper):
    """A ``MultiBinary(n)`` action space shown as ``MultiDiscrete([2] * n)`` (same actions, same dtype in).

    Args:
        env: an env whose action space is ``MultiBinary`` (of any shape).

    Raises:
        TypeError: if the env's action space is not ``MultiBinary``.
    """

    def __init__(self, env: gym.Env) -> None:
        if not isinstance(env.action_space, gym.spaces.MultiBinary):
            raise TypeError(
                f"MultiDiscreteActions needs a MultiBinary action space, got {env.action_space}"
            )
        super().__init__(env)
        self._binary: gym.spaces.MultiBinary = env.action_space
        self.action_space = gym.spaces.MultiDiscrete(
            np.full(self._binary.shape, 2, dtype=np.int64), seed=None
        )

    def action(self, action: Any) -> np.ndarray:
        """The ``MultiBinary`` action of a ``MultiDiscrete([2] * n)`` one (values 0/1, same shape)."""
        array = np.asarray(action)
        if array.shape != self._binary.shape or not np.isin(array, (0, 1)).all():
            raise InvalidActionError(
                f"action {action!r} is not in {self.action_space}: need 0/1 of shape {self._binary.shape}"
            )
        return array.astype(self._binary.dtype)
