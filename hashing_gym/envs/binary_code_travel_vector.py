"""BinaryCodeTravel-v0 batched: n travels through the hypercube stepped by a few array operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from hashing_gym.data import HashingDataset
from hashing_gym.device import array_device
from hashing_gym.envs.base import InvalidActionError
from hashing_gym.envs.binary_code_travel import BinaryCodeTravelEnv
from hashing_gym.envs.vector_base import resolve_autoreset_mode

BACKENDS: tuple[str, ...] = ("numpy", "torch")
RNGS: tuple[str, ...] = ("batched", "per_env")


class BinaryCodeTravelVectorEnv(VectorEnv):
    r"""``num_envs`` copies of ``BinaryCodeTravel-v0`` stepped together: numpy on CPU, torch on CUDA.

    The MDP of every sub-environment is exactly ``BinaryCodeTravelEnv``'s (same codebook, rewards,
    teacher, history, ``max_steps`` truncation, ``flatten`` and multi-label rules: the single env
    built from the same keyword arguments supplies the codebook, ``eta``, spaces and argument
    checks). Observations, rewards, flags and infos carry a leading ``num_envs`` axis.

    ## Backends

    ``device="cpu"`` (a string) uses numpy arrays; any ``torch.device``, or a string naming a CUDA
    device, uses torch tensors on that device, so ``device=torch.device("cpu")`` (or
    ``backend="torch"``) runs the torch code on CPU, e.g. for tests without a GPU. The torch
    backend never moves data to the host while stepping with ``rng="batched"`` and
    ``check_actions=False``: every array operation runs over all ``num_envs`` rows with masks
    instead of data-dependent indexing.

    ## Autoreset and seeding

    ``autoreset_mode`` (also in ``metadata["autoreset_mode"]``; https://farama.org/Vector-Autoreset-Mode):

    - ``NEXT_STEP`` (default, as Gymnasium's own vector envs): the step after a sub-env terminates
      or truncates resets it instead, ignoring its action and returning the start observation with
      reward 0, ``terminated=truncated=False`` and the reset's info.
    - ``SAME_STEP``: the ending step returns the new episode's start observation and info, with the
      episode's last ones in ``infos["final_obs"]`` (batched like the observations) and
      ``infos["final_info"]``, valid where ``infos["_final_obs"]`` is True.
    - ``DISABLED``: stepping while a sub-env's episode has ended raises ``ValueError``; reset it
      with ``reset(options={"reset_mask": mask})``.

    ``rng`` picks where the start states (item and start code) come from:

    - ``"batched"`` (default): one generator draws them for all sub-envs at once, numpy's
      ``self.np_random`` (seeded by ``reset(seed=s)``) or a ``torch.Generator`` on the device
      (seeded ``s``). Same distribution as the single env, a different stream.
    - ``"per_env"``: sub-env ``i`` owns a numpy generator and draws exactly what a single
      ``BinaryCodeTravelEnv`` reset with ``seed=s + i`` (or ``seed[i]`` for a list) draws, reset
      after reset, as ``SyncVectorEnv`` does: the vector env then reproduces n single envs step by
      step, autoresets included. The draws loop over the sub-envs being reset (and, on torch,
      copy them to the device), so it is the slow mode, for parity checks.

    ## Infos

    ``reset`` and ``step`` return ``{"index", "d_pos", "d_neg", "expert_action"}``, each an array
    over the sub-envs (int64, int64, float64, int64), the single env's keys. Every sub-env reports
    every key at every step, so no ``"_key"`` masks are added for them (only for ``final_obs`` and
    ``final_info``).

    ## Arguments

    >>> import gymnasium as gym
    >>> import hashing_gym
    >>> envs = gym.make_vec("BinaryCodeTravel-v0", num_envs=4, vectorization_mode="vector_entry_point")
    >>> obs, info = envs.reset(seed=0)
    >>> obs["history"].shape, envs.action_space
    ((4, 10, 16), MultiDiscrete([17 17 17 17]))
    >>> obs, reward, terminated, truncated, info = envs.step(info["expert_action"])

    The keyword arguments of ``BinaryCodeTravelEnv`` (``dataset``, ``bits``, ``split``,
    ``codebook``, ``eta``, ``sigma``, ``init``, ``max_steps``, ``history``, ``flatten``, ``seed``)
    mean the same here, plus:

    | argument      | default     | meaning                                                        |
    |---------------|-------------|----------------------------------------------------------------|
    | num_envs      | 1           | number of sub-environments                                     |
    | device        | ``"cpu"``   | ``"cpu"`` (numpy), ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` |
    | backend       | None        | ``"numpy"`` or ``"torch"``; None picks from ``device`` (above) |
    | rng           | ``"batched"`` | start-state draws: ``"batched"`` or ``"per_env"`` (above)    |
    | check_actions | True        | check that every action is in range (on CUDA: a host sync per step) |
    | autoreset_mode | ``NEXT_STEP`` | an ``AutoresetMode``, its value or its name (above)          |
    | cuda_graph    | False       | replay each step as a CUDA graph (CUDA, ``rng="batched"``, no checks) |

    ``cuda_graph=True`` cuts the host's launch cost per step (the bound at tens of thousands of
    envs). Its replay logic is tested on CPU (fixed buffers, draws made before the step); the
    capture itself has not yet run on a GPU: ``test_cuda_graph_steps_match_eager_steps`` checks it
    against eager steps there.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
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
        device: Any = "cpu",
        backend: str | None = None,
        rng: str = "batched",
        check_actions: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        cuda_graph: bool = False,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (the vector env draws nothing), got {render_mode!r}")
        if rng not in RNGS:
            raise ValueError(f"rng must be one of {RNGS}, got {rng!r}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
        # The single env validates every shared argument and owns the codebook and spaces.
        single = BinaryCodeTravelEnv(
            dataset=dataset,
            bits=bits,
            split=split,
            codebook=codebook,
            eta=eta,
            sigma=sigma,
            init=init,
            max_steps=max_steps,
            history=history,
            flatten=flatten,
            seed=seed,
        )
        self.single_env = single
        self.num_envs = int(num_envs)
        self.bits = single.bits
        self.eta = single.eta
        self.sigma = single.sigma
        self.init = single.init
        self.max_steps = single.max_steps
        self.history_length = single.history_length
        self.flatten = single.flatten
        self.codebook = single.codebook
        self.num_items = single.num_items
        self.feature_dim = single.feature_dim
        self.multi_label = not single._single_label
        self.rng = rng
        self.check_actions = bool(check_actions)
        self.autoreset_mode = resolve_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = None

        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self.backend, self.device = _resolve_backend(device, backend)
        self._xp = _Torch(self.device) if self.backend == "torch" else _Numpy()
        xp = self._xp
        n, b, num_classes = self.num_envs, self.bits, len(self.codebook)
        self._features = xp.asarray(single.features)
        self._labels = xp.asarray(single.split.labels.astype(np.int64)) if not self.multi_label else None
        self._positive_table = xp.asarray(single._positive)
        self._codewords = xp.asarray(self.codebook.astype(np.int8))
        self._codewords_t = xp.asarray(self.codebook.T.astype(np.float32))
        self._codeword_weight = xp.asarray(self.codebook.sum(axis=1).astype(np.int64))
        # Row b of this table is all zeros: the history's empty slots hold index b.
        self._one_hot = xp.asarray(np.eye(b + 1, b, dtype=np.int8))
        self._bit_ids = xp.asarray(np.arange(b, dtype=np.int64))
        self._sigma = xp.asarray(np.float64(self.sigma))
        # A device tensor, not a Python number: torch on CUDA divides by a number as a multiplication by
        # its reciprocal, which can differ from the single env's division in the last bit.
        self._other_classes = xp.asarray(np.float64(num_classes - 1))

        self._index = xp.zeros(n, np.int64)
        self._code = xp.zeros((n, b), np.int8)
        self._hist = xp.full((n, self.history_length), b, np.int64)
        self._dist = xp.zeros((n, num_classes), np.int64)
        self._steps = xp.zeros(n, np.int64)
        self._prev_done = xp.zeros(n, bool)
        self._d_pos = xp.zeros(n, np.int64)
        self._d_neg = xp.zeros(n, np.float64)
        self._target = xp.zeros(n, np.int64)

        self._rngs: list[np.random.Generator] | None = None
        self._torch_generator: Any = None
        self._has_reset = False

        self.cuda_graph = bool(cuda_graph)
        if self.cuda_graph and not (
            self.backend == "torch"
            and self.device.type == "cuda"
            and rng == "batched"
            and not self.check_actions
            and self.autoreset_mode != AutoresetMode.DISABLED
        ):
            raise ValueError(
                "cuda_graph=True needs a CUDA device, rng='batched', check_actions=False and "
                f"autoreset_mode NEXT_STEP or SAME_STEP; got device={device!r}, rng={rng!r}, "
                f"check_actions={check_actions!r}, autoreset_mode={self.autoreset_mode.name}"
            )
        self._graph: Any = None
        self._graph_draws: tuple[Any, Any] | None = None  # set while capturing: restarts read these

    # ------------------------------------------------------------------ API

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every sub-env (or those in ``options["reset_mask"]``) and return the batch.

        Args:
            seed: an int ``s`` (sub-env ``i`` gets ``s + i`` with ``rng="per_env"``; the one
                batched generator gets ``s``), a list of ``num_envs`` ints or None
                (``rng="per_env"`` only), or None to continue the current streams.
            options: ``"index"``: ``num_envs`` item indices to start from (as the single env's
                ``options={"index": i}``); ``"reset_mask"``: bool ``(num_envs,)``, reset only
                those sub-envs (the others keep their state and are returned as they are).

        Returns:
            The observations and infos of all sub-envs.
        """
        options = dict(options or {})
        unknown = set(options) - {"index", "reset_mask"}
        if unknown:
            raise ValueError(f"options may hold 'index' and 'reset_mask', got unknown keys {sorted(unknown)}")
        self._seed(seed)
        n = self.num_envs
        mask = options.get("reset_mask")
        if mask is None:
            mask_np = np.ones(n, dtype=bool)
        else:
            mask_np = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
            if mask_np.shape != (n,) or mask_np.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},), "
                    f"got dtype {mask_np.dtype} and shape {mask_np.shape}"
                )
            if not self._has_reset and not mask_np.all():
                raise ValueError("the first reset must reset all sub-envs: options['reset_mask'] has a False")
        index = options.get("index")
        if index is not None:
            index = np.asarray(index.cpu() if hasattr(index, "cpu") else index)
            if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
                raise ValueError(
                    f"options['index'] must be an integer array of shape ({n},), "
                    f"got dtype {index.dtype} and shape {index.shape}"
                )
            bad = (index < 0) | (index >= self.num_items)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"options['index'][{i}]={int(index[i])} is out of range for the "
                    f"{self.single_env.split_name!r} split of {self.num_items} items"
                )
        xp = self._xp

        def restart() -> tuple[Any, dict[str, Any]]:
            self._restart(xp.asarray(mask_np), mask_np, index)
            self._prev_done = xp.where(xp.asarray(mask_np), False, self._prev_done)
            self._refresh()
            return self._get_obs(), self._get_info()

        self._has_reset = True
        # With a captured step, the new state must land in the buffers the graph reads.
        return self._in_place(restart) if self._graph is not None else restart()

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Flip bit ``actions[i]`` of sub-env ``i`` or terminate it (``actions[i] == bits``).

        Sub-envs that ended at the previous step are reset instead (their action is ignored).

        Args:
            actions: ``num_envs`` integer actions in ``[0, bits]`` (numpy array, list or, on the
                torch backend, a tensor).

        Returns:
            observations, rewards (float64), terminated, truncated (bool) and infos.
        """
        if not self._has_reset:
            raise _reset_needed()
        if self.cuda_graph:
            return self._graph_step(actions)
        return self._step(actions)

    def _step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        xp = self._xp
        actions = self._check_actions(actions)
        mode = self.autoreset_mode
        if mode == AutoresetMode.DISABLED and bool(self._prev_done.any()):
            ended = np.flatnonzero(xp.to_numpy(self._prev_done)).tolist()
            raise ValueError(
                f"sub-envs {ended} have ended and autoreset_mode is DISABLED: "
                "reset them first with reset(options={'reset_mask': mask})"
            )
        b = self.bits
        live = ~self._prev_done
        terminate = live & (actions == b)
        flip = live & (actions < b)
        margin = self._d_pos - self._d_neg
        terminate_reward = xp.where(self._d_pos <= self.eta, self._sigma, -self._sigma)

        # ALGO: flip the chosen bit of the flipping rows, push it onto their history.
        bit = xp.minimum(actions, b - 1)
        old = xp.take_along(self._code, bit)
        self._code = xp.put_along(self._code, bit, old ^ xp.astype(flip, np.int8))
        pushed = xp.concat([bit[:, None], self._hist[:, :-1]], axis=1)
        self._hist = xp.where(flip[:, None], pushed, self._hist)
        self._steps = self._steps + xp.astype(live, np.int64)

        if mode == AutoresetMode.NEXT_STEP:
            # Sub-envs that ended at the previous step start a new episode now.
            self._restart(self._prev_done, None, None)
        self._refresh()

        zero = xp.zeros(self.num_envs, np.float64)
        reward = xp.where(flip, margin - (self._d_pos - self._d_neg), zero)
        reward = xp.where(terminate, terminate_reward, reward)
        truncated = live & ~terminate & (self._steps >= self.max_steps)
        ended = terminate | truncated
        if mode != AutoresetMode.SAME_STEP:
            self._prev_done = ended
            return self._get_obs(), reward, terminate, truncated, self._get_info()
        # SAME_STEP: the ending step returns the new episode's start; the end goes into the infos.
        final_obs, final_info = self._get_obs(), self._get_info()
        self._restart(ended, None, None)
        self._refresh()
        info = self._get_info()
        info.update(
            final_obs=final_obs, final_info=final_info, _final_obs=xp.copy(ended), _final_info=xp.copy(ended)
        )
        return self._get_obs(), reward, terminate, truncated, info

    # ------------------------------------------------------------ internals

    def _seed(self, seed: int | Sequence[int | None] | None) -> None:
        n = self.num_envs
        if self.rng == "per_env":
            if seed is None:
                seeds: list[int | None] | None = None if self._rngs is not None else [None] * n
            elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
                seeds = [int(seed) + i for i in range(n)]
            elif isinstance(seed, Sequence) and not isinstance(seed, str):
                if len(seed) != n:
                    raise ValueError(f"seed as a list must have num_envs={n} entries, got {len(seed)}")
                seeds = list(seed)
            else:
                raise ValueError(f"seed must be None, an int or a list of {n} ints, got {seed!r}")
            if seeds is not None:
                # Exactly the generator gymnasium's Env.reset(seed=s) builds for the single env.
                self._rngs = [seeding.np_random(s)[0] for s in seeds]
            return
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
            raise ValueError(f"seed must be None or an int with rng='batched', got {seed!r}")
        if self.backend == "numpy":
            if seed is not None:
                self._np_random, self._np_random_seed = seeding.np_random(int(seed))
            return
        import torch

        if self._torch_generator is None:
            self._torch_generator = torch.Generator(device=self.device)
            if seed is None:
                self._torch_generator.seed()
        if seed is not None:
            self._torch_generator.manual_seed(int(seed))
            self._np_random_seed = int(seed)

    def _restart(self, mask: Any, mask_np: np.ndarray | None, index: np.ndarray | None) -> None:
        """Draw a new item and start code for the sub-envs in ``mask`` (and zero their history)."""
        xp = self._xp
        b = self.bits
        if self.rng == "per_env":
            # Draw as the single env's reset does, generator by generator.
            if mask_np is None:
                mask_np = np.asarray(xp.to_numpy(mask))
            rows = np.flatnonzero(mask_np)
            new_index = xp.to_numpy(self._index).copy()
            new_code = xp.to_numpy(self._code).copy()
            assert self._rngs is not None, "per_env generators are created by the first reset"
            for i in rows.tolist():
                generator = self._rngs[i]
                new_index[i] = index[i] if index is not None else generator.integers(self.num_items)
                if self.init == "random":
                    new_code[i] = generator.integers(0, 2, size=b, dtype=np.int8)
                else:
                    new_code[i] = 0
            drawn_index, drawn_code = xp.asarray(new_index), xp.asarray(new_code)
        elif self.backend == "numpy":
            # Draw only for the restarting rows (a small share per step) and write them in place.
            rows = np.flatnonzero(mask)
            if rows.size:
                k = rows.size
                self._index[rows] = (
                    index[rows] if index is not None else self.np_random.integers(self.num_items, size=k)
                )
                self._code[rows] = (
                    self.np_random.integers(0, 2, size=(k, b), dtype=np.int8) if self.init == "random" else 0
                )
                self._hist[rows] = b
                self._steps[rows] = 0
            return
        else:
            # Draw for every row and keep the restarting ones: no data-dependent shapes, no sync.
            import torch

            if index is not None:
                drawn_index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
                drawn_code = self._draw_codes()
            elif self._graph_draws is not None:
                drawn_index, drawn_code = self._graph_draws  # filled before each replay, as below
            else:
                drawn_index, drawn_code = self._draw_items(), self._draw_codes()
        self._index = xp.where(mask, drawn_index, self._index)
        self._code = xp.where(mask[:, None], drawn_code, self._code)
        self._hist = xp.where(mask[:, None], b, self._hist)
        self._steps = xp.where(mask, 0, self._steps)

    def _draw_items(self, out: Any = None) -> Any:
        import torch

        g, n = self._torch_generator, self.num_envs
        return torch.randint(self.num_items, (n,), generator=g, device=self.device, out=out)

    def _draw_codes(self, out: Any = None) -> Any:
        import torch

        shape = (self.num_envs, self.bits)
        if self.init != "random":
            return torch.zeros(shape, device=self.device, dtype=torch.int8) if out is None else out.zero_()
        if out is None:
            return torch.randint(
                0, 2, shape, generator=self._torch_generator, device=self.device, dtype=torch.int8
            )
        return torch.randint(0, 2, shape, generator=self._torch_generator, device=self.device, out=out)

    # State the step reads and writes; a captured step keeps it in fixed buffers.
    _STATE = ("_index", "_code", "_hist", "_steps", "_prev_done", "_dist", "_d_pos", "_d_neg", "_target")

    def _in_place(self, update: Any) -> Any:
        """Run ``update()`` (which rebinds state attributes), then copy the new state into the old tensors."""
        buffers = {name: getattr(self, name) for name in self._STATE}
        result = update()
        for name, buffer in buffers.items():
            new = getattr(self, name)
            if new is not buffer:
                buffer.copy_(new)
                setattr(self, name, buffer)
        return result

    def _graph_step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """One step as a replay of a CUDA graph of ``_step`` (captured at the first call).

        The random draws stay outside the graph: they are drawn into fixed buffers before each
        replay, with the same generator calls as the eager step, so both give the same stream.
        The outputs are cloned: the next replay overwrites the graph's own.
        """
        import torch

        actions = self._xp.as_actions(actions, self.num_envs)
        if self._graph is None:
            self._capture()
        self._graph_actions.copy_(actions)
        self._draw_items(out=self._graph_index)
        self._draw_codes(out=self._graph_code)
        self._graph.replay()
        return _clone(self._graph_outputs, torch)

    def _capture(self) -> None:
        import torch

        n, b, device = self.num_envs, self.bits, self.device
        self._graph_actions = torch.zeros(n, dtype=torch.int64, device=device)
        self._graph_index = torch.zeros(n, dtype=torch.int64, device=device)
        self._graph_code = torch.zeros((n, b), dtype=torch.int8, device=device)
        self._graph_draws = (self._graph_index, self._graph_code)
        saved = {name: getattr(self, name).clone() for name in self._STATE}
        try:
            # Warm up on a side stream (as torch.cuda.graphs asks), then undo the warm-up steps.
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._in_place(lambda: self._step(self._graph_actions))
            torch.cuda.current_stream(device).wait_stream(stream)
            for name, value in saved.items():
                getattr(self, name).copy_(value)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._in_place(lambda: self._step(self._graph_actions))
        finally:
            self._graph_draws = None
        self._graph, self._graph_outputs = graph, outputs
        torch.cuda.current_stream(device).synchronize()

    def _refresh(self) -> None:
        """Distances to every codeword, then d_pos, d_neg and the target, from the codes."""
        xp = self._xp
        code = self._code
        # Hamming distance |x| + |w| - 2 <x, w>: exact in float32 for codes of < 2**24 bits.
        dot = xp.astype(xp.astype(code, np.float32) @ self._codewords_t, np.int64)
        weight = xp.astype(code, np.int64).sum(1)
        dist = weight[:, None] + self._codeword_weight[None, :] - 2 * dot
        self._dist = dist
        total = dist.sum(1)
        if not self.multi_label:
            target = xp.take_rows(self._labels, self._index)
            d_pos = xp.take_along(dist, target)
            # As the single env: mean distance to the other classes' codewords.
            d_neg = xp.astype(total - d_pos, np.float64) / self._other_classes
        else:
            positive = xp.take_rows(self._positive_table, self._index)
            masked = xp.where(positive, dist, self.bits + 1)
            target = masked.argmin(1)  # lowest class index on ties, as the single env
            d_pos = xp.take_along(dist, target)
            num_negative = len(self.codebook) - xp.astype(positive, np.int64).sum(1)
            negative_sum = xp.where(positive, 0, dist).sum(1)
            d_neg = xp.where(
                num_negative > 0,
                xp.astype(negative_sum, np.float64) / xp.maximum(num_negative, 1),
                0.0,
            )
        self._target, self._d_pos, self._d_neg = target, d_pos, d_neg

    def teacher_actions(self) -> Any:
        """Bool ``(num_envs, bits + 1)``: the actions DRLH's teacher counts as right in each state.

        Inside the eta-ball only terminating; outside it, flipping any bit where the code differs
        from the target codeword (``info["expert_action"]`` is the lowest such bit). A diagnostic
        of how far a policy matches the teacher, whichever of the right bits it flips first.
        """
        xp = self._xp
        inside = self._d_pos <= self.eta
        wrong = self._code != xp.take_rows(self._codewords, self._target)
        return xp.concat([wrong & ~inside[:, None], inside[:, None]], axis=1)

    def _expert_action(self) -> Any:
        """DRLH's teacher for every sub-env: terminate in the eta-ball, else flip the first wrong bit."""
        xp = self._xp
        wrong = xp.astype(self._code != xp.take_rows(self._codewords, self._target), np.int8)
        return xp.where(self._d_pos <= self.eta, self.bits, wrong.argmax(1))

    def _check_actions(self, actions: Any) -> Any:
        xp = self._xp
        actions = xp.as_actions(actions, self.num_envs)
        if self.check_actions:
            bad = (actions < 0) | (actions > self.bits)
            if bool(bad.any()):
                i = int(xp.to_numpy(bad).argmax())
                raise InvalidActionError(
                    f"actions[{i}]={int(xp.to_numpy(actions)[i])} is not in "
                    f"{self.single_action_space} (actions must be integers in [0, {self.bits}])"
                )
        return actions

    def _get_obs(self) -> Any:
        xp = self._xp
        features = xp.take_rows(self._features, self._index)
        history = xp.one_hot(self._hist, self._one_hot, self._bit_ids)
        if self.flatten:
            n = self.num_envs
            return xp.concat(
                [
                    features,
                    xp.astype(self._code, np.float32),
                    xp.astype(history.reshape(n, -1), np.float32),
                ],
                axis=1,
            )
        return {"features": features, "code": xp.copy(self._code), "history": history}

    def _get_info(self) -> dict[str, Any]:
        xp = self._xp
        return {
            "index": xp.copy(self._index),
            "d_pos": xp.copy(self._d_pos),
            "d_neg": xp.copy(self._d_neg),
            "expert_action": self._expert_action(),
        }


def _reset_needed() -> Exception:
    """The error gymnasium raises when an env is stepped before its first reset."""
    from gymnasium.error import ResetNeeded

    return ResetNeeded("Cannot call step() before reset(): call envs.reset() first")


def _clone(value: Any, torch: Any) -> Any:
    """A copy of nested dicts, tuples and tensors."""
    if isinstance(value, dict):
        return {key: _clone(item, torch) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_clone(item, torch) for item in value)
    return value.clone() if isinstance(value, torch.Tensor) else value


def _resolve_backend(device: Any, backend: str | None) -> tuple[str, Any]:
    """``(backend, device)``: numpy with device ``"cpu"``, else torch with a ``torch.device``."""
    torch_device = array_device(device, backend)
    return ("numpy", "cpu") if torch_device is None else ("torch", torch_device)


class _Numpy:
    """The few array operations the env needs, on numpy arrays."""

    @staticmethod
    def asarray(array: np.ndarray) -> np.ndarray:
        return np.asarray(array)

    @staticmethod
    def to_numpy(array: np.ndarray) -> np.ndarray:
        return array

    @staticmethod
    def zeros(shape: Any, dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def full(shape: Any, value: int, dtype: Any) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    @staticmethod
    def astype(array: np.ndarray, dtype: Any) -> np.ndarray:
        return array.astype(dtype, copy=False)

    @staticmethod
    def copy(array: np.ndarray) -> np.ndarray:
        return array.copy()

    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    concat = staticmethod(np.concatenate)

    @staticmethod
    def take_rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take(table, index, axis=0)

    @staticmethod
    def one_hot(index: np.ndarray, table: np.ndarray, bit_ids: np.ndarray) -> np.ndarray:
        # np.take is several times faster than table[index] for a 2-D index.
        return np.take(table, index, axis=0)

    @staticmethod
    def take_along(array: np.ndarray, column: np.ndarray) -> np.ndarray:
        return array[np.arange(len(column)), column]

    @staticmethod
    def put_along(array: np.ndarray, column: np.ndarray, values: np.ndarray) -> np.ndarray:
        array[np.arange(len(column)), column] = values
        return array

    @staticmethod
    def as_actions(actions: Any, n: int) -> np.ndarray:
        array = np.asarray(actions)
        if array.shape != (n,):
            raise ValueError(f"actions must have shape ({n},) (one per sub-env), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {array.dtype}")
        return array.astype(np.int64, copy=False)


class _Torch:
    """The same operations on torch tensors of one device."""

    _DTYPES: dict[Any, str] = {
        np.int8: "int8",
        np.int64: "int64",
        np.float32: "float32",
        np.float64: "float64",
        bool: "bool",
    }

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device

    def _dtype(self, dtype: Any) -> Any:
        return getattr(self.torch, self._DTYPES[dtype])

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.tensor(np.array(array), device=self.device)

    @staticmethod
    def to_numpy(tensor: Any) -> np.ndarray:
        return tensor.cpu().numpy()

    def zeros(self, shape: Any, dtype: Any) -> Any:
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def full(self, shape: Any, value: int, dtype: Any) -> Any:
        return self.torch.full(shape, value, dtype=self._dtype(dtype), device=self.device)

    def astype(self, tensor: Any, dtype: Any) -> Any:
        return tensor.to(self._dtype(dtype))

    @staticmethod
    def copy(tensor: Any) -> Any:
        return tensor.clone()

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return self.torch.where(condition, a, b)

    def minimum(self, a: Any, value: int) -> Any:
        return a.clamp(max=value)

    def maximum(self, a: Any, value: int) -> Any:
        return a.clamp(min=value)

    def concat(self, tensors: list[Any], axis: int) -> Any:
        return self.torch.cat(tensors, dim=axis)

    def take_rows(self, table: Any, index: Any) -> Any:
        # index_select, not table[index]: torch's advanced-indexing gather ran at ~100 GB/s on an H100.
        return self.torch.index_select(table, 0, index)

    @staticmethod
    def one_hot(index: Any, table: Any, bit_ids: Any) -> Any:
        # A comparison writes the one-hot rows at memory speed; a gather from the table does not.
        return (index[..., None] == bit_ids).to(table.dtype)

    @staticmethod
    def take_along(tensor: Any, column: Any) -> Any:
        return tensor.gather(1, column[:, None])[:, 0]

    @staticmethod
    def put_along(tensor: Any, column: Any, values: Any) -> Any:
        return tensor.scatter(1, column[:, None], values[:, None])

    def as_actions(self, actions: Any, n: int) -> Any:
        torch = self.torch
        if not isinstance(actions, torch.Tensor):
            array = np.asarray(actions)
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"actions must be integers, got dtype {array.dtype}")
            actions = torch.as_tensor(array)
        if tuple(actions.shape) != (n,):
            shape = tuple(actions.shape)
            raise ValueError(f"actions must have shape ({n},) (one per sub-env), got shape {shape}")
        if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        return actions.to(device=self.device, dtype=torch.int64)
