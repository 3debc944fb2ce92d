"""The MDP cores: each MDP's rules (start, transition, reward, teacher) once, batched, over numpy or torch.

- ``hashing_gym.envs.core.binary_code_travel``: BinaryCodeTravel-v0 (DRLH), used by
  ``BinaryCodeTravelEnv``, ``BinaryCodeTravelVectorEnv`` and ``encode_batch``.
- ``hashing_gym.envs.core.sequential_hash_bits``: SequentialHashBits-v0 (DRLIH), used by
  ``SequentialHashBitsEnv``, ``SequentialHashBitsVectorEnv`` and ``encode_sequential``.
- ``hashing_gym.envs.core.rank_list_hash``: RankListHash-v0 (deep policy hashing, listwise reward),
  used by ``RankListHashEnv`` (and its batched ``rewards`` / ``act``) and ``RankListHashVectorEnv``.

Every core module has the same layout: a frozen ``Params`` dataclass (the constants), a ``State``
named tuple of arrays with a leading batch axis, ``make_params`` (the argument checks, once) and
the functions ``reset``, ``step``, ``observe`` and, where the MDP has one, ``teacher_action``.
Randomness is drawn by the shells and passed in, so that each shell keeps its random stream.
BinaryCodeTravel's ``step`` is pure (it returns a new state); the other two update their code
banks in place, since a bank is rows x items x bits and copying it at every step would cost more
than the step itself.
"""
