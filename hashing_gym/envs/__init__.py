"""The hashing-gym environments, one per file."""

from hashing_gym.envs.binary_code_travel import BinaryCodeTravelEnv, encode_batch

__all__ = ["BinaryCodeTravelEnv", "encode_batch"]
