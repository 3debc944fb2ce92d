"""hashing-gym: reinforcement-learning-based hashing as Gymnasium environments.

``import hashing_gym`` registers the environments (ids without a namespace):

- ``BinaryCodeTravel-v0`` (DRLH): flip bits of a code or terminate; BCH label-codeword reward.
- ``RankListHash-v0`` (deep policy hashing, listwise): emit a whole code; reward = AP of its rank list.
- ``SequentialHashBits-v0`` (DRLIH): decide a code group by group; reward = triplet accuracy gained.

Third-party code needs this import (or ``gym.register_envs(hashing_gym)``) before ``gym.make``.
"""

from gymnasium.envs.registration import register

__version__ = "0.1.0"

register(
    id="BinaryCodeTravel-v0",
    entry_point="hashing_gym.envs.binary_code_travel:BinaryCodeTravelEnv",
    vector_entry_point="hashing_gym.envs.binary_code_travel_vector:BinaryCodeTravelVectorEnv",
    # No max_episode_steps: the limit depends on `bits`, so the env truncates itself (max_steps).
)
register(
    id="RankListHash-v0",
    entry_point="hashing_gym.envs.rank_list_hash:RankListHashEnv",
    vector_entry_point="hashing_gym.envs.rank_list_hash_vector:RankListHashVectorEnv",
    # One step per episode: the env terminates itself, no time limit needed.
)
register(
    id="SequentialHashBits-v0",
    entry_point="hashing_gym.envs.sequential_hash_bits:SequentialHashBitsEnv",
    vector_entry_point="hashing_gym.envs.sequential_hash_bits_vector:SequentialHashBitsVectorEnv",
    # bits / group steps per episode: the env terminates itself, no time limit needed.
)

__all__ = ["__version__"]
