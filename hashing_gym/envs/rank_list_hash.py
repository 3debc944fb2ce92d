"""RankListHash-v0: deep policy hashing with listwise supervision, one code per episode."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import (
    HashingEnv,
    InvalidActionError,
    ResetNeededError,
    check_code_matrix,
    feature_bound,
    read_only,
)
from hashing_gym.envs.core import expert
from hashing_gym.envs.core import rank_list_hash as core
from hashing_gym.ranking import hamming_distance, unpack_codes

DATABASES: tuple[str, ...] = core.DATABASES


class RankListHashEnv(HashingEnv):
    r"""Choose an item's whole binary code; the reward is the average precision of its rank list.

    ## Description

    Deep policy hashing with listwise supervision (Wang, Lai, Yang, Yin, "Deep Policy Hashing
    Network with Listwise Supervision", arXiv 1904.01728) trains a *query network* by policy
    gradient to maximise a listwise measure, the average precision of the ranking that an item's
    code induces over the binary codes of the whole training set. Those database codes come from a
    shared, slowly updated *database network*. Each episode is one decision (a contextual bandit):
    the agent sees an item of the split and emits its b-bit code.

    ## Action Space

    ``MultiBinary(bits)``: the item's code :math:`h \in \{0, 1\}^b`.

    ## Observation Space

    | space                | shape  | dtype   | meaning                              |
    |----------------------|--------|---------|--------------------------------------|
    | ``Box(-B, B, (D,))`` | (D,)   | float32 | the item's feature vector :math:`x_i` |

    B is ``feature_bound(dataset)``: the largest absolute feature value over all splits (rounded
    up), so that environments on any split of a data set share one observation space.

    ## Rewards

    With the database codes :math:`\{b_j\}` of the N items of the split (``database_codes``),
    item i's code h is ranked against the codes of all *other* items :math:`j \ne i` by Hamming
    distance :math:`d_j = \|h \oplus b_j\|_1`. Item j is relevant (:math:`s_{ij} = 1`) if it has
    item i's label (multi-label: at least one shared label), and :math:`R_i = \sum_j s_{ij}`. The
    reward is the average precision of that list (the paper's listwise reward; its mean over the
    items is the MAP of the whole ranking):

    .. math:: r = AP(h) = \frac{1}{R_i} \sum_{p=1}^{N-1} s_{i,\pi(p)} \, \frac{1}{p}
              \sum_{q \le p} s_{i,\pi(q)}

    where :math:`\pi` orders the items by distance. Items at equal distance are ordered

    - ``ties="average"`` (default): at random; the reward is the *expected* AP over those orders
      (tie-aware AP, He et al., CVPR 2018), which has a lower variance than any fixed order and does
      not reward a code for its database neighbours' indices;
    - ``ties="stable"``: by database index (what most published evaluation code reports).

    With ``topk=k`` only the first k positions count and the sum is divided by the number of
    relevant items among them (``hashing_gym.ranking`` states the conventions; for
    ``ties="average"`` with ``topk`` it is a ratio of expectations). An item without relevant
    items gets 0. The reward comes from per-distance histograms of the code against the packed
    database (``hashing_gym.ranking.packed_distance_counts``) minus the item's own row: O(N b / 64)
    per step and no sort (``ties="stable"`` ranks a copy of the database without the item, O(N b)).

    ## Starting State

    An item of the split drawn with ``self.np_random`` (or ``options={"index": i}``).

    Database codes: with ``database="bank"`` (default) they are the last code acted for each
    item, so third-party RL code needs no callback; with ``database="fixed"`` actions never change
    them. Either way they start as uniformly random codes, drawn from ``self.np_random`` on every
    reset that is given a ``seed`` and on the first reset (unless ``set_database_codes`` came
    first), so a seeded reset restores the whole state; resets without a seed keep the database.
    ``set_database_codes(codes)`` replaces them: the paper's database network re-encoding the split.

    ## Episode End

    1. Termination: after the single step (the code is chosen at once).
    2. Truncation: never.

    A second ``step`` without ``reset`` raises ``ResetNeededError``.

    ``info`` carries ``index`` (the item's row in the split), ``expert_action`` (our expert's code
    for the item, int8 (bits,): see "Differences from the paper"; also ``expert_action()``) and,
    after the step, ``ap`` (the reward) and ``relevant`` (the number of other items relevant to the
    item).

    A batched version of the step for trainers: ``rewards(indices, codes)`` returns the rewards of
    many (item, code) pairs against the current database without changing anything, and
    ``act(indices, codes)`` also writes the codes into the bank, as that many copies of the env
    sharing one bank would if they all stepped at once; ``step`` is ``act`` on one pair.

    ## Arguments

    >>> import gymnasium as gym
    >>> import hashing_gym
    >>> env = gym.make("RankListHash-v0", bits=16)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space, env.unwrapped.database_codes.shape
    ((64,), MultiBinary(16), (1497, 16))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> terminated, reward == info["ap"], 0.0 <= reward <= 1.0
    (True, True, True)

    | argument    | default       | meaning                                                       |
    |-------------|---------------|---------------------------------------------------------------|
    | dataset     | ``"digits"``  | a data set name or a ``HashingDataset``                       |
    | bits        | 16            | code length b                                                 |
    | split       | ``"train"``   | the split whose items are encoded and form the database       |
    | ties        | ``"average"`` | order within equal distances: ``"average"`` or ``"stable"``    |
    | topk        | None          | AP over the first k positions; None for the whole list        |
    | database    | ``"bank"``    | ``"bank"`` (actions update the database) or ``"fixed"``       |
    | render_mode | None          | ``"ansi"`` or ``"rgb_array"``                                 |

    ## Differences from the paper

    The seed we follow is a summary of the paper (``shared/seeds``): a query network trained by
    policy learning to maximise a reward that measures the whole rank list (e.g. MAP), against the
    codes of the whole training set from a shared, slowly updated database network. Ours:

    - the MDP's shape (one decision per episode: a contextual bandit whose action is the whole code);
    - the reward as the AP of the item's list over all *other* training items, with the tie-aware
      expected AP as the default (``ties="average"``) and ``topk``;
    - the database bank (``database="bank"``: the last code acted for each item, random at start),
      so third-party RL code needs no callback; ``set_database_codes`` is where a trainer plugs in
      the paper's database network (``agents.reinforce`` refreshes it every K updates);
    - the expert (``info["expert_action"]``, ``expert_action()``), which the paper does not have:
      the item's class codeword (``hashing_gym.codes.label_codebook``, BCH, seed 0: the targets of
      ``BinaryCodeTravel-v0``; a multi-label item takes its lowest class's), the code of a perfect
      label-embedding hash. Once the database holds every item's codeword it earns AP 1 on
      single-label data, and acting it in bank mode puts them there after one pass over the items;
      against random database codes it earns what any code does. Not an AP maximiser against the
      current database (e.g. the majority bits of the item's relevant neighbours), which would chase
      the database rather than the labels. Absent where ``2 ** bits`` is below the number of classes.

    ## Version History

    - v0: initial version.
    """

    def __init__(
        self,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        ties: str = "average",
        topk: int | None = None,
        database: str = "bank",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(dataset, split, render_mode)
        self._params = core.make_params(
            self.dataset, split, bits=bits, ties=ties, topk=topk, database=database
        )
        self.bits, self.ties = self._params.bits, self._params.ties
        self.topk, self.database = self._params.topk, self._params.database
        self._bank: np.ndarray | None = None  # packed database codes (N, W); drawn on the first reset
        self._code: np.ndarray | None = None  # the code shown by render: the last acted one
        self._ap: float | None = None
        self._relevant: int | None = None
        self._ended = False  # the one-step episode was acted: stepping again needs a reset

        bound = feature_bound(self.dataset)
        self.observation_space = spaces.Box(-bound, bound, shape=(self.feature_dim,), dtype=np.float32)
        self.action_space = spaces.MultiBinary(self.bits)

    @property
    def database_codes(self) -> np.ndarray | None:
        """uint8 (N, bits) database codes (a read-only copy), or None before the first reset."""
        if self._bank is None:
            return None
        return read_only(unpack_codes(self._bank, self.bits))

    def set_database_codes(self, codes: Any) -> None:
        """Replace the database codes (e.g. the database network's codes of the whole split).

        Args:
            codes: integer or bool array (N, bits) of 0/1, one row per item of the split.

        Raises:
            ValueError: if ``codes`` has the wrong shape, a non-integer dtype, or a value other than 0 and 1.
        """
        self._bank = core.pack(self._params, check_code_matrix(codes, self.num_items, self.bits))
        self._database = core.database(self._params, self._bank)  # checked once, reads the bank's writes

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Pick an item (``options={"index": i}``, else drawn); a seeded reset also redraws the database."""
        super().reset(seed=seed)
        if seed is not None or self._bank is None:
            self.set_database_codes(
                self.np_random.integers(0, 2, size=(self.num_items, self.bits), dtype=np.uint8)
            )
        self.index = self._choose_index(options)
        self._code = unpack_codes(self._bank[self.index : self.index + 1], self.bits)[0]
        self._ap = self._relevant = None
        self._ended = False
        return self._get_obs(), self._get_info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act the item's code; the reward is its AP against the other items' database codes."""
        if self._bank is None:
            raise ResetNeededError("call reset before step")
        if self._ended:
            raise ResetNeededError("the episode has ended (terminated): call reset before step")
        if not self.action_space.contains(action):
            raise InvalidActionError(f"{action!r} is not in {self.action_space}")
        code = np.asarray(action, dtype=np.uint8).reshape(1, self.bits)
        state = core.reset(self._params, np.array([self.index]), self._database)
        _, reward, terminated, truncated, relevant = core.step(
            self._params, state, core.pack(self._params, code)
        )
        self._code = code[0].copy()
        self._ap = float(reward[0])
        self._relevant = int(relevant[0])
        self._ended = bool(terminated[0] or truncated[0])
        return self._get_obs(), self._ap, bool(terminated[0]), bool(truncated[0]), self._get_info()

    def rewards(self, indices: Any, codes: Any) -> np.ndarray:
        """The reward of each (item, code) pair against the current database; changes nothing.

        Args:
            indices: int (n,) rows of the split.
            codes: 0/1 (n, bits) codes, one per index.

        Returns:
            float64 (n,): the AP of each code ranked against the database codes of all other items.
        """
        indices, words = self._check_batch(indices, codes)
        return core.rewards(self._params, self._database, indices, words)[0]

    def act(self, indices: Any, codes: Any) -> np.ndarray:
        """Rewards of (item, code) pairs (:meth:`rewards`), then, in bank mode, the codes join the bank.

        All rewards see the database as it was before the call; if an index repeats, its last code
        is the one kept.

        Args:
            indices: int (n,) rows of the split.
            codes: 0/1 (n, bits) codes, one per index.

        Returns:
            float64 (n,) rewards.
        """
        indices, words = self._check_batch(indices, codes)
        rewards = core.rewards(self._params, self._database, indices, words)[0]
        core.write_bank(self._params, self._bank, indices, words)
        return rewards

    def _check_batch(self, indices: Any, codes: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated indices int64 (n,) and the codes packed."""
        if self._bank is None:
            raise RuntimeError("call reset (or set_database_codes) before computing rewards")
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_items):
            bad = int(idx[(idx < 0) | (idx >= self.num_items)][0])
            raise ValueError(
                f"index {bad} is out of range for the {self.split_name!r} split of {self.num_items} items"
            )
        arr = np.asarray(codes)
        if arr.shape != (idx.size, self.bits):
            raise ValueError(
                f"codes must have shape {(idx.size, self.bits)} (one code per index), got {arr.shape}"
            )
        if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"codes must be an integer or bool array of 0/1, got dtype {arr.dtype}")
        words = core.pack(self._params, arr) if idx.size else np.zeros((0, self._params.num_words), np.uint64)
        return idx.astype(np.int64, copy=False), words

    def _get_obs(self) -> np.ndarray:
        return self.features[self.index].copy()

    def expert_action(self) -> np.ndarray:
        """Our expert's action: the item's class codeword, int8 (bits,) (see "Differences from the paper").

        Raises:
            ValueError: where ``2 ** bits`` is below the number of classes (no codebook: no expert).
        """
        codes = core.teacher_action(self._params, np.array([self.index]))
        return expert.require(codes, self.bits, self.dataset.num_classes)[0]

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"index": self.index}
        if self._params.codewords is not None:
            info["expert_action"] = self.expert_action()
        if self._ap is not None:
            info["ap"] = self._ap
            info["relevant"] = self._relevant
        return info

    def _nearest(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` other items nearest to the shown code (ties by index) and their relevance."""
        database = unpack_codes(self._bank, self.bits)
        distance = hamming_distance(self._code[None], database)[0].astype(np.int64)
        distance[self.index] = self.bits + 1  # the item itself is not in its list
        order = np.argsort(distance, kind="stable")[: min(count, self.num_items - 1)]
        labels = self._params.labels
        if labels.ndim == 2:
            relevant = (labels[order] & labels[self.index]).any(axis=1)
        else:
            relevant = labels[order] == labels[self.index]
        return order, relevant

    def _render_text(self) -> str:
        order, relevant = self._nearest(10)
        code = "".join(str(int(b)) for b in self._code)
        ap = "not acted yet" if self._ap is None else f"AP={self._ap:.4f} over {self._relevant} relevant"
        marks = "".join("+" if r else "." for r in relevant)
        return (
            f"item {self.index} of {self.split_name!r} ({self.num_items} items), {ap}\n"
            f"code {code}\n"
            f"nearest 10 (+ relevant): {marks}\n"
        )

    def _render_picture(self, cell: int = 8) -> np.ndarray:
        """The shown code (top row, white bits) above its 10 nearest database codes (green: relevant)."""
        order, relevant = self._nearest(10)
        rows = np.concatenate([self._code[None], unpack_codes(self._bank[order], self.bits)])
        image = np.repeat(rows[:, :, None] * 255, 3, axis=2).astype(np.uint8)
        tint = np.where(relevant, 0, 1)  # channel to dim: red for relevant rows (green stays), green else
        for row, channel in enumerate(tint, start=1):
            image[row, :, channel] //= 3
            image[row, :, 2] //= 3
        image = np.concatenate([image, np.zeros((10 + 1 - len(rows), self.bits, 3), np.uint8)])
        return np.kron(image, np.ones((cell, cell, 1), dtype=np.uint8))

    def _episode_state(self) -> dict[str, Any]:
        """The packed bank, the shown code and the last reward (copies; for ``get_state``)."""
        return {
            "bank": None if self._bank is None else self._bank.copy(),
            "code": None if self._code is None else self._code.copy(),
            "ap": self._ap,
            "relevant": self._relevant,
            "ended": self._ended,
        }

    def _set_episode_state(self, state: dict[str, Any]) -> None:
        bank, code = state["bank"], state["code"]
        self._ended = bool(state.get("ended", False))
        self._bank = None
        if bank is not None:
            packed = core.pack(self._params, np.zeros((self.num_items, self.bits), dtype=np.uint8))
            self._bank = self._restored_arrays({"bank": bank}, {"bank": packed}, "state")["bank"]
            self._database = core.database(self._params, self._bank)  # as set_database_codes
        if code is not None:
            shown = {"code": np.zeros(self.bits, dtype=np.uint8)}
            code = self._restored_arrays({"code": code}, shown, "state")["code"]
        self._code = code
        self._ap = None if state["ap"] is None else float(state["ap"])
        self._relevant = None if state["relevant"] is None else int(state["relevant"])
