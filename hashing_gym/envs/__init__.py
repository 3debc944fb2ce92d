"""The hashing-gym environments, one per file."""

from hashing_gym.envs.binary_code_travel import BinaryCodeTravelEnv, encode_batch
from hashing_gym.envs.rank_list_hash import RankListHashEnv
from hashing_gym.envs.sequential_hash_bits import SequentialHashBitsEnv, encode_sequential

__all__ = [
    "BinaryCodeTravelEnv",
    "RankListHashEnv",
    "SequentialHashBitsEnv",
    "encode_batch",
    "encode_sequential",
]
