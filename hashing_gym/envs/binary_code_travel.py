"""BinaryCodeTravel-v0: DRLH's travel through the vertices of the binary code space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import HashingEnv, InvalidActionError, ResetNeededError, feature_bound
from hashing_gym.envs.core import binary_code_travel as core
from hashing_gym.envs.core.binary_code_travel import INITS
from hashing_gym.validation import check_bits, check_feature_matrix


class BinaryCodeTravelEnv(HashingEnv):
    r"""Move an image's binary code, one bit flip at a time, into the ball of its class codeword.

    ## Description

    DRLH (Wang, Hong, Yuan, "Deep Reinforcement Learning with Label Embedding Reward for
    Supervised Image Hashing", sections 3-4) casts hashing as travelling across the vertices of
    the b-dimensional hypercube. Each class c gets a codeword :math:`w_c` of a BCH code
    (``hashing_gym.codes.label_codebook``, minimum distance :math:`D_{min}`, radius
    :math:`R = \lfloor (D_{min} - 1) / 2 \rfloor`). An episode starts from a code
    :math:`e_0` for one item of the split; each step flips one bit or terminates. At test time the
    greedy policy, run from a random start code for at most :math:`M = b` steps (the paper's
    testing phase), is the hash function (``encode_batch``).

    ## Action Space

    ``Discrete(bits + 1)``: action :math:`k < b` flips bit :math:`k` of the code; action
    :math:`b` terminates the episode.

    ## Observation Space

    ``Dict`` (or, with ``flatten=True``, one ``Box`` of the three concatenated as float32):

    | key      | space                    | dtype   | meaning                                           |
    |----------|--------------------------|---------|---------------------------------------------------|
    | features | ``Box(-B, B, (D,))``     | float32 | the item's feature vector :math:`f`               |
    | code     | ``MultiBinary(b)``       | int8    | the current code :math:`e_t`                      |
    | history  | ``MultiBinary((10, b))`` | int8    | the last 10 flips one-hot, newest first (no terminate) |

    B is ``feature_bound(dataset)``: the largest absolute feature value over all splits (rounded
    up), so that environments on any split of a data set share one observation space.

    ## Rewards

    With :math:`d^t_{pos}` the distance from :math:`e_t` to the item's class codeword (for a
    multi-label item, the nearest of its classes' codewords) and :math:`d^t_{neg}` the mean
    distance to the other classes' codewords (0 if the item carries every class):

    - a flip (Eq. 1): :math:`(d^t_{pos} - d^t_{neg}) - (d^{t+1}_{pos} - d^{t+1}_{neg})`, so the
      flip rewards of an episode telescope to the start margin minus the end margin;
    - terminate (Eq. 2): :math:`+\sigma` if :math:`d^t_{pos} \le \eta`, else :math:`-\sigma`
      (:math:`\sigma = 5` as in the paper; :math:`0 \le \eta \le R`).

    The default :math:`\eta` is our rule (``core.default_eta``): the paper's Table 1 gives the best
    :math:`\eta` per data set and length (CIFAR-10: 2 at 16 bits, 5 at 32 bits; NUS-WIDE: 1 and 3)
    and says it is "usually around R/2". We take Table 1's value where our codebook has the paper's
    radius at that length (single-label data: CIFAR-10's column; multi-label: NUS-WIDE's), else
    :math:`\lceil R/2 \rceil` for single-label and :math:`\lfloor R/2 \rfloor` for multi-label data,
    the roundings that match Table 1 at 16 bits. Digits (10 classes): 2 at 16 bits, 5 at 32 bits,
    8 at 64 bits.

    ## Starting State

    A uniformly random code (``init="random"``, the paper's) or all zeros (``init="zeros"``); an
    empty history. The item is drawn with ``self.np_random`` unless ``options={"index": i}``.

    ## Episode End

    1. Termination: the agent takes the terminate action.
    2. Truncation: after ``max_steps`` steps (default ``bits + 1``: enough for the teacher
       below to reach the ball from any start and terminate). The env truncates itself because
       the limit depends on ``bits``; the registration sets no ``max_episode_steps``.

    After either, ``step`` raises ``ResetNeededError`` until the next ``reset``.

    ``info`` (from ``reset`` and every ``step``) holds ``index``, ``d_pos``, ``d_neg`` and
    ``expert_action``, the teacher of guided exploration. DRLH says only that exploration follows
    an expert's demonstrations; this teacher is ours: while :math:`d_{pos} > 0` it flips the wrong
    bit (where the code differs from the target codeword, the nearest of the item's class
    codewords) whose flip earns the largest reward, lowest index on ties, and at
    :math:`d_{pos} = 0` it terminates. A wrong bit's reward does not depend on the other bits, so
    this order maximises the discounted return of the flips, and going on to :math:`d_{pos} = 0`
    rather than stopping at :math:`\eta` collects every remaining flip reward before the
    :math:`+\sigma`. Its flips never raise :math:`d_{pos}`.

    ## Arguments

    >>> import gymnasium as gym
    >>> import hashing_gym
    >>> env = gym.make("BinaryCodeTravel-v0", bits=16)
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), obs["history"].shape, env.action_space
    (['code', 'features', 'history'], (10, 16), Discrete(17))
    >>> obs, reward, terminated, truncated, info = env.step(info["expert_action"])

    | argument    | default      | meaning                                                      |
    |-------------|--------------|--------------------------------------------------------------|
    | dataset     | ``"digits"`` | a data set name or a ``HashingDataset``                      |
    | bits        | 16           | code length b                                                |
    | split       | ``"train"``  | the split whose items are encoded                            |
    | codebook    | ``"bch"``    | label codebook kind (``"bch"``, ``"hadamard"``, ``"random"``) |
    | eta         | None         | termination threshold in [0, R]; None: ``default_eta`` (above) |
    | sigma       | 5.0          | termination reward                                           |
    | init        | ``"random"`` | start code: ``"random"`` or ``"zeros"``                      |
    | max_steps   | None         | truncation; None means ``bits + 1``                          |
    | history     | 10           | number of past flips in the observation                      |
    | flatten     | False        | one float32 ``Box`` observation instead of a ``Dict``        |
    | seed        | 0            | seed of the codebook (message choice and padding bits)       |
    | render_mode | None         | ``"ansi"`` or ``"rgb_array"``                                |

    ## Differences from the paper

    - The teacher's rule (above) and the default :math:`\eta` rule (above) are ours; the paper
      names neither beyond Table 1 and "around R/2".
    - Training episodes truncate after ``bits + 1`` steps (ours: the teacher needs at most ``b``
      flips and a terminate); the paper gives M = b for the testing phase only, which
      ``encode_batch`` follows.
    - ``init="zeros"``, ``codebook="hadamard"``/``"random"``, ``flatten`` and ``history`` other
      than 10 are our options; the defaults are the paper's (random :math:`e_0`, BCH codewords,
      10 past actions in the state).
    - The state's feature vector is whatever the data set holds (the paper uses CNN features or
      GIST); no feature network is trained through the environment.
    - The agent (``agents.dqn``) differs from the paper's DQN in ways its docstring lists.

    ## Version History

    - v0: initial version.
    """

    def __init__(
        self,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        codebook: str = "bch",
        eta: int | None = None,
        sigma: float = 5.0,
        init: str = "random",
        max_steps: int | None = None,
        history: int = 10,
        flatten: bool = False,
        seed: int = 0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(dataset, split, render_mode)
        self.params = core.make_params(
            self.dataset,
            split,
            bits=bits,
            codebook=codebook,
            eta=eta,
            sigma=sigma,
            init=init,
            max_steps=max_steps,
            history=history,
            flatten=flatten,
            seed=seed,
        )
        params = self.params
        self.bits = params.bits
        self.codebook = params.codebook
        self.radius = params.radius
        self.eta = params.eta
        self.sigma = params.sigma
        self.init = params.init
        self.max_steps = params.max_steps
        self.history_length = params.history
        self.flatten = params.flatten
        self._state: core.State | None = None  # None until the first reset (one row: no batch axis)
        # Whether the episode terminated or was truncated: stepping on needs a reset (Gymnasium's
        # OrderEnforcing checks only reset-before-step). The state stays, for render and info.
        self._ended = False

        self.action_space = spaces.Discrete(self.bits + 1)
        bound = feature_bound(self.dataset)
        features = spaces.Box(-bound, bound, shape=(self.feature_dim,), dtype=np.float32)
        if self.flatten:
            size = self.feature_dim + self.bits * (1 + self.history_length)
            self.observation_space = spaces.Box(-bound, bound, shape=(size,), dtype=np.float32)
        else:
            self.observation_space = spaces.Dict(
                {
                    "features": features,
                    "code": spaces.MultiBinary(self.bits),
                    "history": spaces.MultiBinary((self.history_length, self.bits)),
                }
            )

    @property
    def terminate_action(self) -> int:
        """The action that ends the episode (``bits``)."""
        return self.bits

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode on an item (``options={"index": i}``, else drawn) from the start code."""
        super().reset(seed=seed)
        self.index = self._choose_index(options)
        if self.init == "random":
            code = self.np_random.integers(0, 2, size=self.bits, dtype=np.int8)
        else:
            code = np.zeros(self.bits, dtype=np.int8)
        self._state = core.reset(self.params, np.int64(self.index), code)
        self._ended = False
        return self._get_obs(), self._get_info()

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Flip bit ``action`` (reward Eq. 1) or terminate (``action == bits``, reward Eq. 2)."""
        # Cheaper than action_space.contains (this is the hot path), same acceptance.
        if not (
            isinstance(action, (int, np.integer))
            and not isinstance(action, bool)
            and 0 <= action <= self.bits
        ):
            if not self.action_space.contains(action):
                raise InvalidActionError(
                    f"{action!r} ({type(action).__name__}) is not in {self.action_space}"
                )
        if self._state is None:
            raise ResetNeededError("call reset before step")
        if self._ended:
            raise ResetNeededError("the episode has ended (terminated or truncated): call reset before step")
        self._state, reward, terminated, truncated = core.step(self.params, self._state, np.int64(action))
        # int / float / bool of numpy scalars: a fifth of .item()'s cost, the same Python values.
        ended, cut = bool(terminated), bool(truncated)
        self._ended = ended or cut
        return self._get_obs(), float(reward), ended, cut, self._get_info()

    def expert_action(self) -> int:
        """The teacher's action: the most rewarding wrong bit, or terminate at d_pos = 0 (class docstring)."""
        return int(core.teacher_action(self.params, self._state))

    def _get_obs(self) -> Any:
        return core.observe(self.params, self._state)

    def _get_info(self) -> dict[str, Any]:
        state = self._state
        return {
            "index": self.index,
            "d_pos": int(state.d_pos),
            "d_neg": float(state.d_neg),
            "expert_action": self.expert_action(),
        }

    def _render_text(self) -> str:
        def bits_text(row: np.ndarray) -> str:
            return "".join(str(int(b)) for b in row)

        state = self._state
        target = int(state.target)
        return (
            f"item {self.index} of {self.split_name!r}, step {int(state.steps)}/{self.max_steps}\n"
            f"code   {bits_text(state.code)}\n"
            f"target {bits_text(self.codebook[target])} (class {target})\n"
            f"d_pos={int(state.d_pos)} d_neg={float(state.d_neg):.2f} eta={self.eta} R={self.radius}\n"
        )

    def _render_picture(self, cell: int = 8) -> np.ndarray:
        """Class codewords as rows (target row green), the current code as the bottom row (red)."""
        target = int(self._state.target)
        rows = np.concatenate([self.codebook, self._state.code[None].astype(np.uint8)])
        image = np.repeat(rows[:, :, None] * 255, 3, axis=2).astype(np.uint8)
        image[target, :, 0] //= 3  # tint the target row green
        image[target, :, 2] //= 3
        image[-1, :, 1:] //= 3  # tint the current code red
        return np.kron(image, np.ones((cell, cell, 1), dtype=np.uint8))

    def _episode_state(self) -> dict[str, Any]:
        """The episode's core state (copies), None before the first reset (for ``get_state``)."""
        if self._state is None:
            return {"state": None, "ended": False}
        state = {name: np.array(value) for name, value in self._state._asdict().items()}
        return {"state": state, "ended": self._ended}

    def _set_episode_state(self, state: dict[str, Any]) -> None:
        given = state["state"]
        self._ended = bool(state.get("ended", False))
        if given is None:
            self._state = None
            return
        template = core.reset(self.params, np.int64(0), np.zeros(self.bits, dtype=np.int8))  # one row
        arrays = self._restored_arrays(given, template._asdict(), "state")
        # one row: 0-d fields are numpy scalars in the core's one-row path (as reset makes them)
        self._state = core.State(**{name: a[()] if a.ndim == 0 else a for name, a in arrays.items()})


def encode_batch(
    policy: Callable[[Any], np.ndarray],
    features: np.ndarray,
    bits: int,
    *,
    max_steps: int | None = None,
    init: str = "random",
    history: int = 10,
    flatten: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Encode items with a trained policy: DRLH's test phase, batched over the items.

    As in the paper ("We initialize e_0 for each image as a random binary code"; M = b in the
    testing phase), every item starts from a random code and follows ``policy`` for at most
    ``max_steps`` steps (default ``bits``); an item stops moving once its policy terminates. The
    start codes are ``numpy.random.default_rng(seed).integers(0, 2, (n, bits), dtype=int8)``, row i
    for item i, so the same ``seed`` gives the same start codes (and a deterministic policy the same
    codes). ``init="zeros"`` starts every item from the all-zeros code instead (our option, not the
    paper's: it makes the codes independent of any random draw).

    Args:
        policy: maps a batch of observations (dict of arrays with a leading batch axis, or a
            (n, size) array when ``flatten``) to actions (n,), e.g. ``model.predict(obs,
            deterministic=True)[0]`` of a stable-baselines3 model.
        features: float32 (n, D) features of the items.
        bits: code length b.
        max_steps: step limit M; None means ``bits``.
        init: ``"random"`` (the paper's) or ``"zeros"``.
        history: number of past flips in the observation (as the env's ``history``).
        flatten: whether the policy takes the flattened observation.
        seed: seed of random start codes.

    Returns:
        uint8 (n, bits) codes.

    Raises:
        ValueError: for features that are not a finite 2-D array or a bad ``bits``/``init``.
        InvalidActionError: (a ``ValueError``) for a policy that returns actions outside ``0..bits``.
    """
    bits = check_bits(bits)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    features = check_feature_matrix(features)
    n = len(features)
    if init == "random":
        codes = np.random.default_rng(seed).integers(0, 2, size=(n, bits), dtype=np.int8)
    else:
        codes = np.zeros((n, bits), dtype=np.int8)
    one_hot = np.eye(bits + 1, bits, dtype=np.int8)  # as core.Params.one_hot
    flips = np.full((n, history), bits, dtype=np.int64)  # the env's history: flipped bits, newest first
    active = np.arange(n)  # items whose policy has not terminated yet
    for _ in range(bits if max_steps is None else max_steps):
        if active.size == 0:
            break
        code, flip = codes[active], flips[active]
        actions = np.asarray(policy(core.observation(features[active], code, flip, one_hot, flatten)))
        if actions.size != len(active) or not np.issubdtype(actions.dtype, np.integer):
            raise InvalidActionError(
                f"policy must return {len(active)} integer actions, got {actions.dtype} {actions.shape}"
            )
        actions = actions.reshape(len(active)).astype(np.int64)
        if actions.min() < 0 or actions.max() > bits:
            raise InvalidActionError(
                f"policy returned an action outside 0..{bits}: {actions[(actions < 0) | (actions > bits)][0]}"
            )
        codes[active], flips[active] = core.move(code, flip, actions, one_hot)
        active = active[actions < bits]
    return codes.astype(np.uint8)
