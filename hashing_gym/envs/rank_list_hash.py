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
    check_bits,
    check_code_matrix,
    feature_bound,
    read_only,
)
from hashing_gym.ranking import (
    TIES,
    average_precision,
    average_precision_from_counts,
    hamming_distance,
    pack_codes,
    packed_distance_counts,
)

DATABASES: tuple[str, ...] = ("bank", "fixed")


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

    ``info`` carries ``index`` (the item's row in the split) and, after the step, ``ap`` (the
    reward) and ``relevant`` (the number of other items relevant to the item).

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
        self.bits = check_bits(bits)
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if topk is not None and (
            isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk <= 0
        ):
            raise ValueError(f"topk must be None or a positive integer, got {topk!r}")
        if database not in DATABASES:
            raise ValueError(f"database must be one of {DATABASES}, got {database!r}")
        if self.num_items < 2:
            raise ValueError(f"the {split!r} split needs at least 2 items to rank, got {self.num_items}")
        self.ties = ties
        self.topk = None if topk is None else int(topk)
        self.database = database

        labels = self.split.labels
        self._multi = labels.ndim == 2
        # Relevance structures, built once: class ids, or multi-hot rows packed into 64-bit words.
        self._labels = pack_codes(labels) if self._multi else np.ascontiguousarray(labels, dtype=np.int64)
        # An item is relevant to itself unless it carries no label (multi-label data may have such items).
        self._self_relevant = (
            labels.any(axis=1).astype(np.int64) if self._multi else np.ones(self.num_items, np.int64)
        )
        self._class_sizes = None if self._multi else np.bincount(self._labels)
        self._codes: np.ndarray | None = None  # uint8 (N, bits); drawn on the first reset
        self._words: np.ndarray | None = None  # the same codes packed, uint64 (N, ceil(bits / 64))
        self._code: np.ndarray | None = None  # the code shown by render: the last acted one
        self._ap: float | None = None
        self._relevant: int | None = None

        bound = feature_bound(self.dataset)
        self.observation_space = spaces.Box(-bound, bound, shape=(self.feature_dim,), dtype=np.float32)
        self.action_space = spaces.MultiBinary(self.bits)

    @property
    def database_codes(self) -> np.ndarray | None:
        """uint8 (N, bits) database codes (a read-only view), or None before the first reset."""
        if self._codes is None:
            return None
        return read_only(self._codes)

    def set_database_codes(self, codes: Any) -> None:
        """Replace the database codes (e.g. the database network's codes of the whole split).

        Args:
            codes: integer or bool array (N, bits) of 0/1, one row per item of the split.

        Raises:
            ValueError: if ``codes`` has the wrong shape, a non-integer dtype, or a value other than 0 and 1.
        """
        self._codes = check_code_matrix(codes, self.num_items, self.bits)
        self._words = pack_codes(self._codes)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Pick an item (``options={"index": i}``, else drawn); a seeded reset also redraws the database."""
        super().reset(seed=seed)
        if seed is not None or self._codes is None:
            self.set_database_codes(
                self.np_random.integers(0, 2, size=(self.num_items, self.bits), dtype=np.uint8)
            )
        self.index = self._choose_index(options)
        self._code = self._codes[self.index].copy()
        self._ap = self._relevant = None
        return self._get_obs(), self._get_info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act the item's code; the reward is its AP against the other items' database codes."""
        if self._codes is None:
            raise ResetNeededError("call reset before step")
        if not self.action_space.contains(action):
            raise InvalidActionError(f"{action!r} is not in {self.action_space}")
        code = np.asarray(action, dtype=np.uint8).reshape(1, self.bits)
        reward = float(self.act(np.array([self.index]), code)[0])
        self._code = code[0].copy()
        self._ap = reward
        self._relevant = int(self._relevant_counts(np.array([self.index]))[0])
        return self._get_obs(), reward, True, False, self._get_info()

    def rewards(self, indices: Any, codes: Any) -> np.ndarray:
        """The reward of each (item, code) pair against the current database; changes nothing.

        Args:
            indices: int (n,) rows of the split.
            codes: 0/1 (n, bits) codes, one per index.

        Returns:
            float64 (n,): the AP of each code ranked against the database codes of all other items.
        """
        indices, codes = self._check_batch(indices, codes)
        return self._rewards(indices, codes, pack_codes(codes))

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
        indices, codes = self._check_batch(indices, codes)
        words = pack_codes(codes)
        rewards = self._rewards(indices, codes, words)
        if self.database == "bank":
            if len(indices) > 1:
                # np.unique on the reversed indices finds each item's last occurrence.
                _, last = np.unique(indices[::-1], return_index=True)
                keep = len(indices) - 1 - last
                indices, codes, words = indices[keep], codes[keep], words[keep]
            self._codes[indices] = codes
            self._words[indices] = words
        return rewards

    def _rewards(self, indices: np.ndarray, codes: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Rewards of validated pairs; ``words`` are ``codes`` packed."""
        if self.ties == "stable":
            return self._stable_rewards(indices, codes)
        counts, relevant = packed_distance_counts(
            words, self._labels[indices], self._words, self._labels, self.bits
        )
        # Take each item's own database row out of its distance bucket: the list holds the others only.
        own = (codes != self._codes[indices]).sum(axis=1)
        rows = np.arange(len(indices))
        counts[rows, own] -= 1
        relevant[rows, own] -= self._self_relevant[indices]
        return average_precision_from_counts(counts, relevant, topk=self.topk)

    def _check_batch(self, indices: Any, codes: Any) -> tuple[np.ndarray, np.ndarray]:
        if self._codes is None:
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
        return idx.astype(np.int64, copy=False), np.ascontiguousarray(arr, dtype=np.uint8)

    def _stable_rewards(self, indices: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Stable-order AP, one item at a time, on a copy of the database without the item."""
        labels = self.split.labels
        out = np.empty(len(indices), dtype=np.float64)
        for row, (i, code) in enumerate(zip(indices, codes, strict=True)):
            others = np.r_[0:i, i + 1 : self.num_items]
            out[row] = average_precision(
                code[None],
                labels[i : i + 1],
                self._codes[others],
                labels[others],
                topk=self.topk,
                ties="stable",
            )[0]
        return out

    def _relevant_counts(self, indices: np.ndarray) -> np.ndarray:
        """Number of other items relevant to each item."""
        if self._multi:
            shared = (self._labels[indices][:, None, :] & self._labels[None, :, :]).any(axis=2)
            return shared.sum(axis=1) - self._self_relevant[indices]
        return self._class_sizes[self._labels[indices]] - 1

    def _get_obs(self) -> np.ndarray:
        return self.features[self.index].copy()

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"index": self.index}
        if self._ap is not None:
            info["ap"] = self._ap
            info["relevant"] = self._relevant
        return info

    def render(self) -> str | np.ndarray | None:
        """Text (``"ansi"``) or a picture (``"rgb_array"``) of the code and its nearest database codes."""
        if self.render_mode == "ansi":
            return self._render_text()
        if self.render_mode == "rgb_array":
            return self._render_picture()
        return None

    def _nearest(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` other items nearest to the shown code (ties by index) and their relevance."""
        distance = hamming_distance(self._code[None], self._codes)[0].astype(np.int64)
        distance[self.index] = self.bits + 1  # the item itself is not in its list
        order = np.argsort(distance, kind="stable")[: min(count, self.num_items - 1)]
        if self._multi:
            relevant = (self._labels[order] & self._labels[self.index]).any(axis=1)
        else:
            relevant = self._labels[order] == self._labels[self.index]
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
        rows = np.concatenate([self._code[None], self._codes[order]])
        image = np.repeat(rows[:, :, None] * 255, 3, axis=2).astype(np.uint8)
        tint = np.where(relevant, 0, 1)  # channel to dim: red for relevant rows (green stays), green else
        for row, channel in enumerate(tint, start=1):
            image[row, :, channel] //= 3
            image[row, :, 2] //= 3
        image = np.concatenate([image, np.zeros((10 + 1 - len(rows), self.bits, 3), np.uint8)])
        return np.kron(image, np.ones((cell, cell, 1), dtype=np.uint8))
