"""SequentialHashBits-v0, batched: ``num_envs`` copies of DRLIH's MDP stepped together (numpy or torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from hashing_gym.data import HashingDataset
from hashing_gym.envs.base import check_code_matrix
from hashing_gym.envs.sequential_hash_bits import SequentialHashBitsEnv, build_observation
from hashing_gym.envs.vector_base import HashingVectorEnv


class SequentialHashBitsVectorEnv(HashingVectorEnv):
    r"""``num_envs`` independent copies of ``SequentialHashBits-v0`` in one batched environment.

    The MDP of each copy is exactly :class:`~hashing_gym.envs.sequential_hash_bits.SequentialHashBitsEnv`'s:
    step t sets bits :math:`[t g, (t + 1) g)` of the item's code and is rewarded by the gain in
    triplet accuracy :math:`acc_t - acc_{t-1}` against the episode's P positives and P negatives
    in the copy's code bank (ties 1/2, all :math:`P \times P` pairs, the same ``margin``). Each
    copy has its own code bank (``code_bank``: a (num_envs, N, bits) copy; ``set_code_bank`` takes
    one (N, bits) matrix for all copies or one per copy). With ``rng="per_env"`` sub-env ``i`` of
    ``reset(seed=s)`` follows the single env reset with ``seed=s + i`` step by step
    (``hashing_gym.envs.vector_base`` states the conventions: devices, seeding, autoreset, infos).

    A step writes every copy's group of bits, adds the group's differences with the ``2P``
    reference codes of each copy to the distances kept over the decided bits (after
    ``set_code_bank`` the next step recomputes them from the new bank, so a bank replaced in the
    middle of an episode acts as it does on the single env), and counts the correctly ordered and
    tied pairs: the same float64 accuracy, bit for bit, as the single env's
    :func:`~hashing_gym.envs.sequential_hash_bits.triplet_accuracy`. Episodes all last
    ``bits / group`` steps, so the copies end together and, with the default ``NEXT_STEP``
    autoreset, the step after the last one resets them.

    Memory: each copy holds its bank unpacked, ``num_envs x N x bits`` bytes.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import hashing_gym
    >>> envs = gym.make_vec(
    ...     "SequentialHashBits-v0", num_envs=4, vectorization_mode="vector_entry_point", group=8
    ... )
    >>> obs, infos = envs.reset(seed=0)
    >>> obs["code"].shape, obs["step"].tolist(), envs.action_space.shape
    ((4, 16), [0, 0, 0, 0], (4, 8))
    >>> total = np.zeros(4)
    >>> for _ in range(2):
    ...     obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 8), dtype=np.int8))
    ...     total += rewards
    >>> bool(terminated.all()), np.allclose(total, infos["accuracy"] - 0.5)
    (True, True)

    The keyword arguments of ``SequentialHashBits-v0`` (``dataset``, ``bits``, ``split``, ``group``,
    ``pairs``, ``margin``, ``flatten``) mean the same here, plus:

    | argument       | default         | meaning                                                        |
    |----------------|-----------------|----------------------------------------------------------------|
    | num_envs       | 1               | number of sub-environments                                     |
    | device         | ``"cpu"``       | ``"cpu"`` (numpy), ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` |
    | backend        | None            | ``"numpy"`` or ``"torch"``; None picks from ``device``         |
    | rng            | ``"batched"``   | ``"batched"`` or ``"per_env"`` (``hashing_gym.envs.vector_base``) |
    | autoreset_mode | ``NEXT_STEP``   | an ``AutoresetMode``, or its name or value (``"SameStep"``)     |
    | check_actions  | True            | check that actions are 0/1 (on CUDA: a host sync per step)     |

    ``render_mode`` must be None (the batched env draws nothing).
    """

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str | HashingDataset = "digits",
        bits: int = 16,
        split: str = "train",
        group: int = 1,
        pairs: int = 16,
        margin: float = 0.0,
        flatten: bool = False,
        render_mode: str | None = None,
        device: Any = "cpu",
        backend: str | None = None,
        rng: str = "batched",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        check_actions: bool = True,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None for the batched env, got {render_mode!r}")
        self.single_env = SequentialHashBitsEnv(
            dataset=dataset, bits=bits, split=split, group=group, pairs=pairs, margin=margin, flatten=flatten
        )
        self._setup(num_envs, device, backend, rng, autoreset_mode, check_actions)
        t = self.single_env
        self.bits, self.group, self.num_steps = t.bits, t.group, t.num_steps
        self.pairs, self.margin, self.flatten = t.pairs, t.margin, t.flatten
        n, num_items = self.num_envs, self.num_items
        self._features = self._to_backend(t.features)
        self._bank = self._zeros(np.uint8, (n, num_items, self.bits))
        self._has_bank = np.zeros(n, dtype=bool)
        self._items = self._zeros(np.int64)
        self._references = self._zeros(np.int64, (n, 2 * self.pairs))  # rows of the bank; 0 if no triplet
        self._valid = self._zeros(np.bool_)  # whether the item has a positive and a negative
        self._code = self._zeros(np.int8, (n, self.bits))
        self._decided = self._zeros(np.int8, (n, self.bits))
        self._t = self._zeros(np.int64)
        self._steps_taken = np.zeros(n, dtype=np.int64)
        self._accuracy = self._zeros(np.float64)
        # Distances to the 2P references over the decided bits, kept up to date group by group; a new
        # bank (set_code_bank) makes them stale until the next step recomputes them.
        self._distance = self._zeros(np.int64, (n, 2 * self.pairs))
        self._stale = False
        self._offsets = self._to_backend(np.arange(self.group))
        if self.torch:
            import torch

            self._xp = torch
            self._one_hot = torch.eye(self.num_steps, dtype=torch.float32, device=self.torch_device)
            if not t._multi:  # the class blocks that the batched torch sampler of references reads
                self._labels = self._to_backend(t.split.labels.astype(np.int64))
                self._class_start, self._class_size = (
                    self._to_backend(t._class_start),
                    self._to_backend(t._class_size),
                )
                self._order, self._rank = self._to_backend(t._order), self._to_backend(t._rank)
        else:
            self._xp = np

    # ----------------------------------------------------------------------------------------------
    # The code banks
    # ----------------------------------------------------------------------------------------------

    @property
    def code_bank(self) -> Any:
        """uint8 (num_envs, N, bits) copy of every sub-env's code bank, or None before they all exist."""
        if not self._has_bank.all():
            return None
        return self._bank.clone() if self.torch else self._bank.copy()

    def set_code_bank(self, codes: Any) -> None:
        """Replace the code bank of every sub-env, e.g. with an agent's greedy codes of the split.

        Args:
            codes: integer or bool array of 0/1, (N, bits) for the same bank in every sub-env or
                (num_envs, N, bits) for one bank each (numpy, or a tensor for the torch backend).

        Raises:
            ValueError: if ``codes`` has another shape, a non-integer dtype, or a value other than 0 and 1.
        """
        arr = self._to_numpy(codes)
        if arr.ndim == 2:
            bank = check_code_matrix(arr, self.num_items, self.bits)
        elif arr.ndim == 3 and arr.shape[0] == self.num_envs:
            bank = np.stack([check_code_matrix(a, self.num_items, self.bits) for a in arr])
        else:
            raise ValueError(
                f"codes must have shape {(self.num_items, self.bits)} or "
                f"{(self.num_envs, self.num_items, self.bits)}, got shape {arr.shape}"
            )
        self._bank[:] = self._to_backend(bank)
        self._stale = True
        self._has_bank[:] = True

    # ----------------------------------------------------------------------------------------------
    # The batched MDP
    # ----------------------------------------------------------------------------------------------

    def _reset_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> dict[str, Any]:
        if self.rng == "per_env":
            return self._reset_rows_per_env(rows, seeded, index)
        m, at = len(rows), self._index(rows)
        fresh = rows[seeded | ~self._has_bank[rows]]
        shape = (len(fresh), self.num_items, self.bits)
        if len(fresh) and self.torch:
            generator = self._torch_generator()
            self._bank[self._index(fresh)] = self._xp.randint(
                0, 2, shape, generator=generator, device=self.torch_device, dtype=self._xp.uint8
            )
        elif len(fresh):
            self._bank[fresh] = self.np_random.integers(0, 2, size=shape, dtype=np.uint8)
        self._has_bank[fresh] = True
        if index is not None:
            items = self._to_backend(index)
        elif self.torch:
            generator = self._torch_generator()
            items = self._xp.randint(self.num_items, (m,), generator=generator, device=self.torch_device)
        else:
            items = self.np_random.integers(self.num_items, size=m)
        if self.torch and not self.single_env._multi:
            references = self._torch_references(items)
        else:
            # The single env's own batched sampler, on the vector env's generator (multi-label torch
            # envs draw their references on the host, with numpy).
            self.single_env.np_random = self.np_random
            positives, negatives = self.single_env.sample_references(self._to_numpy(items))
            references = self._to_backend(np.concatenate([positives, negatives], axis=1))
        self._items[at] = items
        self._valid[at] = (references >= 0).all(1)
        self._references[at] = references.clip(0) if self.torch else np.maximum(references, 0)
        self._code[at] = 0
        self._decided[at] = 0
        self._t[at] = 0
        self._steps_taken[rows] = 0
        self._accuracy[at] = 0.5
        self._distance[at] = 0
        return {"index": self._items[at], "accuracy": self._accuracy[at]}

    def _torch_references(self, items: Any) -> Any:
        """``sample_references`` of single-label items, on the device generator: int64 (m, 2P), -1 if none."""
        torch, generator, n = self._xp, self._torch_generator(), self.num_items
        shape = (len(items), self.pairs)
        label = self._labels[items]
        start, size = self._class_start[label][:, None], self._class_size[label][:, None]

        def uniform_below(high: Any) -> Any:  # an integer in [0, high) per entry
            u = torch.rand(shape, generator=generator, device=self.torch_device, dtype=torch.float64)
            return (u * high).long().clamp(max=high - 1)

        draw = uniform_below((size - 1).clamp(min=1))
        draw += draw >= (self._rank[items][:, None] - start)  # skip the item's own position
        positives = self._order[(start + draw).clamp(max=n - 1)]
        draw = uniform_below((n - size).clamp(min=1))
        draw += size * (draw >= start)  # skip the class block
        negatives = self._order[draw.clamp(max=n - 1)]
        references = torch.cat([positives, negatives], dim=1)
        valid = (size[:, 0] > 1) & (size[:, 0] < n)
        return torch.where(valid[:, None], references, -1)

    def _reset_rows_per_env(
        self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None
    ) -> dict[str, Any]:
        m, pairs = len(rows), self.pairs
        items = np.empty(m, dtype=np.int64)
        references = np.empty((m, 2 * pairs), dtype=np.int64)
        fresh: list[int] = []
        banks: list[np.ndarray] = []
        for k, i in enumerate(rows):
            rng = self._rngs[i]
            # The single env's reset: the bank (seeded or first reset), the item, then its references.
            if seeded[k] or not self._has_bank[i]:
                fresh.append(i)
                banks.append(rng.integers(0, 2, size=(self.num_items, self.bits), dtype=np.uint8))
            items[k] = int(rng.integers(self.num_items)) if index is None else index[k]
            references[k, :pairs], references[k, pairs:] = self._draw_references(rng, int(items[k]))
        if fresh:
            self._bank[self._index(np.array(fresh))] = self._to_backend(np.stack(banks))
            self._has_bank[fresh] = True
        at = self._index(rows)
        valid = (references >= 0).all(axis=1)
        self._items[at] = self._to_backend(items)
        self._references[at] = self._to_backend(np.maximum(references, 0))
        self._valid[at] = self._to_backend(valid)
        self._code[at] = 0
        self._decided[at] = 0
        self._t[at] = 0
        self._steps_taken[rows] = 0
        self._accuracy[at] = 0.5
        self._distance[at] = 0
        return {"index": self._items[at], "accuracy": self._accuracy[at]}

    def _draw_references(self, rng: np.random.Generator, item: int) -> tuple[np.ndarray, np.ndarray]:
        """One item's P positives and P negatives, drawn from ``rng`` exactly as the single env draws them."""
        t = self.single_env
        if t._multi:
            t.np_random = rng  # the single env's own sampler, on this sub-env's stream
            positives, negatives = t.sample_references(np.array([item]))
            return positives[0], negatives[0]
        # SequentialHashBitsEnv.sample_references for one single-label item, without its batch overhead
        # (the same calls on the generator: a scalar bound draws what a (1, 1) array bound draws).
        n, shape = self.num_items, (1, self.pairs)
        label = t.split.labels[item]
        start, size = int(t._class_start[label]), int(t._class_size[label])
        draw = rng.integers(0, max(size - 1, 1), size=shape)
        draw += draw >= (t._rank[item] - start)
        positives = t._order[np.minimum(start + draw, n - 1)][0]
        draw = rng.integers(0, max(n - size, 1), size=shape)
        draw += size * (draw >= start)
        negatives = t._order[np.minimum(draw, n - 1)][0]
        if not 1 < size < n:
            return np.full(self.pairs, -1), np.full(self.pairs, -1)
        return positives, negatives

    def _step_rows(self, rows: np.ndarray, actions: Any, every: bool) -> tuple[Any, Any, dict[str, Any]]:
        xp, at = self._xp, self._index(rows)
        if self._stale:
            self._recompute_distances()
        t = self._t[at]
        columns = t[:, None] * self.group + self._offsets  # (m, group): the bits this step decides
        self._code[at[:, None], columns] = actions.astype(np.int8) if not self.torch else actions.to(xp.int8)
        self._decided[at[:, None], columns] = 1
        self._t[at] = t + 1
        # Add the new group's differences: gather just those bits of the 2P reference codes.
        flat = (at[:, None, None] * self.num_items + self._references[at][:, :, None]) * self.bits
        reference_bits = self._bank.reshape(-1)[flat + columns[:, None, :]]  # (m, 2P, group)
        self._distance[at] += (reference_bits != actions[:, None, :]).sum(-1, dtype=xp.int64)
        distance = self._distance[at]
        accuracy = self._triplet_accuracy(distance[:, : self.pairs], distance[:, self.pairs :])
        accuracy[~self._valid[at]] = 0.5
        reward = accuracy - self._accuracy[at]
        self._accuracy[at] = accuracy
        self._steps_taken[rows] += 1  # the host's copy of t: episode ends known without a device sync
        terminated = self._steps_taken[rows] == self.num_steps
        if terminated.any():
            ended = self._index(rows[terminated])
            # The finished code replaces the item's row of the bank, as at the end of a single episode;
            # the references never include the item, so the kept distances stay exact.
            finished = self._code[ended]
            self._bank[ended, self._items[ended]] = (
                finished.astype(np.uint8) if not self.torch else finished.to(xp.uint8)
            )
        return reward, terminated, {"index": self._items[at], "accuracy": accuracy}

    def _recompute_distances(self) -> None:
        """Distances of every sub-env's code to its references over the decided bits, from the bank."""
        references = self._bank[self._arange()[:, None], self._references]  # (n, 2P, bits)
        code = self._code.astype(np.uint8) if not self.torch else self._code.to(self._xp.uint8)
        differ = (references != code[:, None, :]) & (self._decided[:, None, :] != 0)
        self._distance[:] = differ.sum(-1, dtype=self._xp.int64)
        self._stale = False

    def _arange(self) -> Any:
        return self._to_backend(np.arange(self.num_envs))

    def _triplet_accuracy(self, d_pos: Any, d_neg: Any) -> Any:
        """``triplet_accuracy`` from integer pair counts, bit for bit.

        (2 wins + ties) / P^2 / 2 is the single env's float: its mean of sign(gap - m) + 1 sums exact
        small integers before dividing by P^2.
        """
        small = self._xp.int16 if self.bits < 1 << 15 else self._xp.int64  # distances <= bits
        d_pos = d_pos.astype(small) if not self.torch else d_pos.to(small)
        d_neg = d_neg.astype(small) if not self.torch else d_neg.to(small)
        gap = d_neg[:, None, :] - d_pos[:, :, None]  # (m, P, P) integers
        # For an integer gap: gap > m iff gap > floor(m); gap == m only when m is an integer.
        threshold = int(np.floor(self.margin))
        doubled = 2 * (gap > threshold).sum((1, 2))
        if float(self.margin).is_integer():
            doubled = doubled + (gap == threshold).sum((1, 2))
        if self.torch:
            doubled = doubled.to(self._xp.float64)  # torch would divide integers in float32
        return doubled / self.pairs**2 / 2.0

    def _check_actions(self, actions: Any) -> Any:
        return self._check_binary_actions(actions, self.group)

    def _observations(self) -> Any:
        features = self._take(self._features, self._items)
        step = self._t.clip(0, self.num_steps - 1) if self.torch else np.minimum(self._t, self.num_steps - 1)
        if not self.torch:
            return build_observation(
                features, self._code.copy(), self._decided.copy(), step, self.num_steps, self.flatten
            )
        if self.flatten:
            torch = self._xp
            parts = [
                features,
                self._code.to(torch.float32),
                self._decided.to(torch.float32),
                self._one_hot[step],
            ]
            return torch.cat(parts, dim=1)
        return {
            "features": features,
            "code": self._code.clone(),
            "decided": self._decided.clone(),
            "step": step,
        }
