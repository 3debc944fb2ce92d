"""The hashing-gym environments, one per file, and their batched (vector) versions."""

from hashing_gym.envs.base import InvalidActionError, ResetNeededError
from hashing_gym.envs.binary_code_travel import BinaryCodeTravelEnv, encode_batch
from hashing_gym.envs.binary_code_travel_vector import BinaryCodeTravelVectorEnv
from hashing_gym.envs.rank_list_hash import RankListHashEnv
from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv
from hashing_gym.envs.sequential_hash_bits import SequentialHashBitsEnv, encode_sequential
from hashing_gym.envs.sequential_hash_bits_vector import SequentialHashBitsVectorEnv

__all__ = [
    "BinaryCodeTravelEnv",
    "BinaryCodeTravelVectorEnv",
    "InvalidActionError",
    "RankListHashEnv",
    "RankListHashVectorEnv",
    "ResetNeededError",
    "SequentialHashBitsEnv",
    "SequentialHashBitsVectorEnv",
    "encode_batch",
    "encode_sequential",
]
