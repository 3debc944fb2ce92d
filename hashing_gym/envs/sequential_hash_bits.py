"""SequentialHashBits-v0: DRLIH's hashing as a sequence of decisions, one group of bits per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import (
    HashingEnv,
    InvalidActionError,
    ResetNeededError,
    check_code_matrix,
    check_feature_matrix,
    feature_bound,
    read_only,
)
from hashing_gym.envs.core import expert
from hashing_gym.envs.core import sequential_hash_bits as core
from hashing_gym.envs.core.sequential_hash_bits import triplet_accuracy as triplet_accuracy


class SequentialHashBitsEnv(HashingEnv):
    r"""Decide an image's binary code group by group; each step is rewarded by the ranking accuracy it adds.

    ## Description

    DRLIH (Peng, Zhang, Ye, "Deep Reinforcement Learning for Image Hashing", arXiv 1802.02904,
    IEEE TMM 2020) models hashing as a sequential decision process: a recurrent agent projects an
    image into its code one hash function after another, so that each function can correct the
    errors of the earlier ones, and an *action group* of :math:`g` functions is decided together
    in one step. An episode encodes one item of the split in :math:`T = b / g` steps; step
    :math:`t` (0-based) decides bits :math:`[t g, (t + 1) g)`. The paper's state is the pair
    (image features, RNN hidden state): the hidden state belongs to the agent (a recurrent policy),
    so the env shows the features and the bits decided so far.

    ## Action Space

    ``MultiBinary(group)``: the values of the next ``group`` bits.

    ## Observation Space

    ``Dict`` (or, with ``flatten=True``, one float32 ``Box`` of the four concatenated, the step
    one-hot, for plain MLP policies):

    | key      | space                | dtype   | meaning                                         |
    |----------|----------------------|---------|-------------------------------------------------|
    | features | ``Box(-B, B, (D,))`` | float32 | the item's feature vector                       |
    | code     | ``MultiBinary(b)``   | int8    | the bits decided so far; undecided bits are 0   |
    | decided  | ``MultiBinary(b)``   | int8    | 1 where a bit has been decided (a prefix)       |
    | step     | ``Discrete(T)``      | int64   | the index t of the group decided next           |

    B is ``feature_bound(dataset)``. The observation returned with termination (all bits decided)
    shows ``step = T - 1``, the last index the space holds.

    ## Rewards

    The env keeps a *code bank*: one code per item of the split. On reset it draws, with
    ``self.np_random`` and with replacement, P positives (items sharing a label with the item;
    multi-label: at least one) and P negatives (the other items), never the item itself. With
    :math:`d^t_{+,i}` and :math:`d^t_{-,j}` the Hamming distances from the item's code to the bank
    codes of positive i and negative j over the :math:`t g` bits decided after step t,

    .. math:: acc_t = \frac{1}{P^2} \sum_{i, j} \Big( [d^t_{-,j} - d^t_{+,i} > m]
              + \tfrac{1}{2} [d^t_{-,j} - d^t_{+,i} = m] \Big),
              \qquad r_t = acc_t - acc_{t-1}, \quad acc_0 = \tfrac{1}{2},

    so the return of an episode is :math:`acc_T - 1/2 \in [-1/2, 1/2]`: the triplet accuracy of
    the finished code (an AUC of the item's ranking of its sampled references) minus chance. All
    :math:`P \times P` pairs are compared (not pair i with i), which lowers the reward's variance
    at no extra sampling. An item without a positive or without a negative has no triplet: its
    accuracy stays 1/2 and its rewards are 0.

    The paper ranks triplets :math:`(I, I^+, I^-)` of a mini-batch; its released code
    (PKU-ICST-MIPL/DRLIH_TMM2020) trains on the triplet hinge
    :math:`\max(0, m + \|h - h^+\|_2 - \|h - h^-\|_2)` of the relaxed codes (bit probabilities)
    with :math:`m = 1`, and weighs the log-probability of the codes by that loss. Here ``margin``
    is the Hamming-distance margin m of the comparison above (default 0, the plain ordering);
    with :math:`m > 0` a pair counts only when the negative is more than m bits farther.

    ``rewards(codes, positives, negatives)`` (and ``accuracies``) compute the same quantities for a
    batch of finished codes against the current bank, without changing anything; ``step`` uses
    them too, so the MDP has one implementation. ``sample_references(indices)`` draws references
    as ``reset`` does.

    ## Starting State

    No bit decided (``code`` and ``decided`` all 0, ``step`` 0). The item is drawn with
    ``self.np_random`` unless ``options={"index": i}``.

    The code bank starts as uniformly random codes, drawn from ``self.np_random`` on every reset
    given a ``seed`` and on the first reset (unless ``set_code_bank`` came first), so a seeded reset
    restores the whole state; resets without a seed keep the bank. At the end of each episode the
    item's finished code replaces its row of the bank. ``set_code_bank(codes)`` replaces the whole
    bank, e.g. with an agent's greedy codes of the whole split (the paper's triplets are coded by
    the current network); ``code_bank`` is a read-only view.

    ## Episode End

    1. Termination: after T steps, when every bit is decided.
    2. Truncation: never (the registration sets no ``max_episode_steps``).

    After termination, ``step`` raises ``ResetNeededError`` until the next ``reset``.

    ``info`` (from ``reset`` and every ``step``) carries ``index`` (the item's row in the split),
    ``accuracy`` (:math:`acc_t`) and ``expert_action`` (our expert's next ``group`` bits, int8
    (group,): see "Differences from the paper"; also ``expert_action()``).

    ## Arguments

    >>> import gymnasium as gym
    >>> import hashing_gym
    >>> env = gym.make("SequentialHashBits-v0", bits=16, group=4)
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), env.action_space, info["accuracy"]
    (['code', 'decided', 'features', 'step'], MultiBinary(4), 0.5)
    >>> total = 0.0
    >>> for _ in range(4):
    ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    ...     total += reward
    >>> terminated, abs(total - (info["accuracy"] - 0.5)) < 1e-12
    (True, True)

    | argument    | default      | meaning                                                     |
    |-------------|--------------|-------------------------------------------------------------|
    | dataset     | ``"digits"`` | a data set name or a ``HashingDataset``                     |
    | bits        | 16           | code length b                                               |
    | split       | ``"train"``  | the split whose items are encoded and whose bank is compared |
    | group       | 1            | bits decided per step (the paper's action group); divides b |
    | pairs       | 16           | P: positives and negatives drawn per episode                |
    | margin      | 0.0          | m: the Hamming margin of a correctly ordered pair           |
    | flatten     | False        | one float32 ``Box`` observation instead of a ``Dict``       |
    | render_mode | None         | ``"ansi"`` or ``"rgb_array"``                               |

    ## Differences from the paper

    The seed we follow is DRLIH's abstract (``shared/seeds``): it gives the sequential decision
    process (an RNN agent projects the image bit by bit, each hashing function correcting the
    earlier ones), the state (image features and the RNN's hidden state) and the action group.
    Everything else here is our formalisation, not the paper's text:

    - the reward (the triplet accuracy gained by a step over sampled positives and negatives, with
      ties counted 1/2 and ``acc_0 = 1/2``) and its P x P pair comparison;
    - the code bank that holds the references' codes, its random start and its update at the end
      of each episode (``set_code_bank`` for re-encoding by the agent);
    - ``margin`` (a Hamming margin; the released code's hinge margin is on relaxed codes);
    - the observation (``code``, ``decided``, ``step``; the hidden state lives in the agent);
    - the expert (``info["expert_action"]``, ``expert_action()``), which DRLIH does not have: the
      bits of the item's class codeword (``hashing_gym.codes.label_codebook``, BCH, seed 0: the
      targets of ``BinaryCodeTravel-v0``; a multi-label item takes its lowest class's) that the step
      decides (after the last step, the last group). Once the bank holds every item's codeword, its
      episodes earn the largest return, 1/2 (accuracy 1, single-label data, ``margin`` below the
      codewords' distance), and acting it puts them there (finished codes join the bank) after one
      pass over the items; against random banks it earns what any code does. Not the group that
      maximises the step's accuracy gain (``2^group`` evaluations per step, chasing the bank rather
      than the labels). Absent where ``2 ** bits`` is below the number of classes.

    ## Version History

    - v0: initial version.
    """

    def __init__(
        self,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        group: int = 1,
        pairs: int = 16,
        margin: float = 0.0,
        flatten: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(dataset, split, render_mode)
        self.params = core.make_params(
            self.dataset, split, bits=bits, group=group, pairs=pairs, margin=margin, flatten=flatten
        )
        params = self.params
        self.bits, self.group, self.num_steps = params.bits, params.group, params.num_steps
        self.pairs, self.margin, self.flatten = params.pairs, params.margin, params.flatten
        self._state = core.init_state(params, 1)  # the core's state of one row
        self._has_bank = False  # the bank is drawn on the first reset (unless set_code_bank comes first)
        self._done = True

        self.action_space = spaces.MultiBinary(self.group)
        bound = feature_bound(self.dataset)
        if self.flatten:
            size = self.feature_dim + 2 * self.bits + self.num_steps
            self.observation_space = spaces.Box(-bound, bound, shape=(size,), dtype=np.float32)
        else:
            self.observation_space = spaces.Dict(
                {
                    "features": spaces.Box(-bound, bound, shape=(self.feature_dim,), dtype=np.float32),
                    "code": spaces.MultiBinary(self.bits),
                    "decided": spaces.MultiBinary(self.bits),
                    "step": spaces.Discrete(self.num_steps),
                }
            )

    # ----------------------------------------------------------------------------------------------
    # The code bank
    # ----------------------------------------------------------------------------------------------

    @property
    def code_bank(self) -> np.ndarray | None:
        """uint8 (N, bits) bank codes, one per item of the split (read-only view); None before a reset."""
        if not self._has_bank:
            return None
        return read_only(self._state.bank[0])

    def set_code_bank(self, codes: Any) -> None:
        """Replace the code bank, e.g. with an agent's greedy codes of the whole split.

        Args:
            codes: integer or bool array (N, bits) of 0/1, one row per item of the split.

        Raises:
            ValueError: if ``codes`` has the wrong shape, a non-integer dtype, or a value other than 0 and 1.
        """
        bank = check_code_matrix(codes, self.num_items, self.bits)
        core.set_bank(self.params, self._state, None, bank)
        self._has_bank = True

    # ----------------------------------------------------------------------------------------------
    # The reward, batched (the core's; step uses the same rules on one item)
    # ----------------------------------------------------------------------------------------------

    def sample_references(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """Draw P positives and P negatives per item with ``self.np_random``, with replacement.

        Positives share a label with the item (multi-label: at least one); negatives share none; the
        item itself is never drawn.

        Args:
            indices: int (n,) rows of the split.

        Returns:
            int64 (n, P) positives and int64 (n, P) negatives; both rows are -1 for an item that has
            no positive or no negative (it has no triplet).
        """
        references = core.sample_references(
            self.params, self._check_indices(indices), core.NumpyDraws(self.np_random)
        )
        return references[:, : self.pairs], references[:, self.pairs :]

    def accuracies(self, codes: Any, positives: Any, negatives: Any) -> np.ndarray:
        r"""Triplet accuracy :math:`acc_t` of each code after each step t = 1..T against the current bank.

        Only the bits decided by step t count at step t, so a code whose later bits are not decided
        yet (0) gives the right :math:`acc_t` for every t it has reached.

        Args:
            codes: 0/1 (n, bits) item codes.
            positives: int (n, P) positives' rows (from ``sample_references``).
            negatives: int (n, P) negatives' rows; rows of -1 mean "no triplet".

        Returns:
            float64 (n, T).
        """
        return core.accuracies(self.params, *self._finished_codes(codes, positives, negatives))

    def rewards(self, codes: Any, positives: Any, negatives: Any) -> np.ndarray:
        r"""Per-step rewards :math:`r_t = acc_t - acc_{t-1}` (:math:`acc_0 = 1/2`) of codes; changes nothing.

        Args:
            codes: 0/1 (n, bits) item codes.
            positives: int (n, P) positives' rows (from ``sample_references``).
            negatives: int (n, P) negatives' rows.

        Returns:
            float64 (n, T); each row sums to the code's final accuracy minus 1/2.
        """
        return core.rewards(self.params, *self._finished_codes(codes, positives, negatives))

    def _finished_codes(
        self, codes: Any, positives: Any, negatives: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The bank, the codes and their references, checked, as ``core.accuracies`` takes them."""
        if not self._has_bank:
            raise RuntimeError("call reset (or set_code_bank) before computing rewards")
        codes = np.asarray(codes)
        positives, negatives = np.asarray(positives), np.asarray(negatives)
        n = len(codes)
        if codes.ndim != 2 or codes.shape[1] != self.bits:
            raise ValueError(f"codes must have shape (n, {self.bits}), got {codes.shape}")
        if ((codes != 0) & (codes != 1)).any():
            raise ValueError("codes must hold only 0 and 1")
        if positives.shape != (n, self.pairs) or negatives.shape != (n, self.pairs):
            raise ValueError(
                f"positives and negatives must have shape {(n, self.pairs)}, "
                f"got {positives.shape} and {negatives.shape}"
            )
        references = np.concatenate([positives, negatives], axis=1).astype(np.int64, copy=False)
        return self._state.bank[0], codes, references

    # ----------------------------------------------------------------------------------------------
    # Gymnasium API
    # ----------------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Pick an item and its references; a seeded (or first) reset also redraws the code bank."""
        super().reset(seed=seed)
        index = None
        if options and options.get("index") is not None:
            index = np.array([self._choose_index(options)])  # validates the given index; draws nothing
        fresh = seed is not None or not self._has_bank
        draws = core.RowDraws([self.np_random], np.array([fresh]))
        bank, items, references = core.draw_start(self.params, draws, 1, int(fresh), index)
        if fresh:
            core.set_bank(self.params, self._state, None, bank)
            self._has_bank = True
        core.reset(self.params, self._state, None, items, references)
        self.index = int(items[0])
        self._done = False
        return self._get_obs(), self._get_info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Set the next ``group`` bits; the reward is the triplet accuracy gained."""
        if self._done:
            raise ResetNeededError("the episode has ended (or never started): call reset")
        if not self.action_space.contains(action):
            raise InvalidActionError(f"{action!r} is not in {self.action_space}")
        reward, terminated, _ = core.step(self.params, self._state, None, np.asarray(action)[None])
        self._done = bool(terminated[0])
        return self._get_obs(), float(reward[0]), self._done, False, self._get_info()

    def _check_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_items):
            bad = int(idx[(idx < 0) | (idx >= self.num_items)][0])
            raise ValueError(
                f"index {bad} is out of range for the {self.split_name!r} split of {self.num_items} items"
            )
        return idx.astype(np.int64, copy=False)

    def _get_obs(self) -> Any:
        obs = core.observe(self.params, self._state)
        if self.flatten:
            return obs[0]
        return {key: value[0] for key, value in obs.items()} | {"step": np.int64(obs["step"][0])}

    def expert_action(self) -> np.ndarray:
        """Our expert's action: the next ``group`` bits of the item's class codeword, int8 (group,).

        After the last step, the last group. See "Differences from the paper".

        Raises:
            ValueError: where ``2 ** bits`` is below the number of classes (no codebook: no expert).
        """
        action = core.teacher_action(self.params, self._state)
        return expert.require(action, self.bits, self.dataset.num_classes)[0]

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"index": self.index, "accuracy": float(self._state.accuracy[0])}
        if self.params.codewords is not None:
            info["expert_action"] = self.expert_action()
        return info

    # ----------------------------------------------------------------------------------------------
    # Rendering
    # ----------------------------------------------------------------------------------------------

    def _render_text(self) -> str:
        state = self._state
        shown = zip(state.code[0], state.decided[0], strict=True)
        code = "".join(str(int(b)) if d else "." for b, d in shown)
        accuracy = float(state.accuracy[0])
        return (
            f"item {self.index} of {self.split_name!r}, step {int(state.step[0])}/{self.num_steps}, "
            f"group {self.group}\n"
            f"code {code}\n"
            f"accuracy {accuracy:.4f} over {self.pairs}x{self.pairs} (positive, negative) pairs\n"
        )

    def _render_picture(self, cell: int = 8) -> np.ndarray:
        """The partial code (top, undecided bits grey) above positives (green) and negatives (red)."""
        state = self._state
        top = np.where(state.decided[0], state.code[0].astype(np.uint8) * 255, 128).astype(np.uint8)[None]
        rows = state.bank[0][state.references[0]] * 255  # before the first reset: the zero bank's row 0
        image = np.repeat(np.concatenate([top, rows.astype(np.uint8)])[:, :, None], 3, axis=2)
        image[1 : 1 + self.pairs, :, 0] //= 3  # positives: green
        image[1 : 1 + self.pairs, :, 2] //= 3
        image[1 + self.pairs :, :, 1:] //= 3  # negatives: red
        return np.kron(image, np.ones((cell, cell, 1), dtype=np.uint8))

    def _episode_state(self) -> dict[str, Any]:
        """The core state of the row (bank included, copies) and the episode's flags (for ``get_state``)."""
        arrays = {name: np.array(value) for name, value in self._state._asdict().items()}
        return {"state": arrays, "has_bank": self._has_bank, "done": self._done}

    def _set_episode_state(self, state: dict[str, Any]) -> None:
        template = core.init_state(self.params, 1)._asdict()
        self._state = core.State(**self._restored_arrays(state["state"], template, "state"))
        self._has_bank, self._done = bool(state["has_bank"]), bool(state["done"])


def encode_sequential(
    policy_step: Callable[[Any, Any], tuple[np.ndarray, Any]],
    features: np.ndarray,
    bits: int,
    group: int = 1,
    *,
    flatten: bool = False,
) -> np.ndarray:
    """Encode items with a (recurrent) policy: run the MDP's T steps for a whole batch at once.

    Each step builds the observations that ``SequentialHashBitsEnv`` would show (features, the bits
    decided so far, the decided mask, the step index) for all items and asks ``policy_step`` for
    the next ``group`` bits of each; the policy carries its recurrent state between calls. The
    observations and the transition are the MDP core's (``hashing_gym.envs.core.sequential_hash_bits``).

    Args:
        policy_step: maps ``(obs, state)`` to ``(actions, state)``: ``obs`` a dict of arrays with a
            leading batch axis (or a float32 (n, size) array when ``flatten``), ``state`` None at the
            first step and then whatever the previous call returned; ``actions`` 0/1 (n, group).
            E.g. for sb3-contrib's RecurrentPPO: ``lambda obs, state: model.predict(obs, state,
            episode_start=np.full(n, state is None), deterministic=True)``.
        features: float32 (n, D) features of the items.
        bits: code length b.
        group: bits decided per step; must divide ``bits``.
        flatten: whether the policy takes the flattened observation.

    Returns:
        uint8 (n, bits) codes.
    """
    params = core.encoder_params(bits, group, flatten)
    features = check_feature_matrix(features)
    n = len(features)
    state = core.init_state(params, n)
    policy_state = None
    for _ in range(params.num_steps):
        obs = core.observation(
            features, state.code, state.decided, state.step.copy(), params.num_steps, flatten
        )
        actions, policy_state = policy_step(obs, policy_state)
        core.decide(params, state, None, np.asarray(actions).reshape(n, params.group))
    return state.code.astype(np.uint8)
