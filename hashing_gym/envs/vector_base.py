"""What the batched hashing environments share: device, per-env random streams, autoreset and infos.

A batched environment steps ``num_envs`` independent copies of one hashing MDP with a few array
operations per step. It keeps every copy's state in arrays with a leading env axis: numpy arrays
when ``device="cpu"`` (the default), torch tensors when ``device`` is any other torch device
(``"cuda"``, ``"cuda:1"``, or ``torch.device("cpu")``, which runs the torch code on the CPU so that
machines without a GPU can test it; ``backend="torch"`` does the same). These conventions are those
of ``BinaryCodeTravelVectorEnv``.

Random streams (``rng``), as in ``BinaryCodeTravelVectorEnv``:

- ``"batched"`` (default): one generator draws the random starts (banks, items, references) of
  all sub-envs at once: numpy's ``self.np_random``, or a ``torch.Generator`` on the device, seeded
  with ``s`` by ``reset(seed=s)``. Same distributions as the single env, another stream.
- ``"per_env"``: sub-env ``i`` owns a ``numpy.random.Generator`` and draws from it exactly what
  the single environment draws from ``self.np_random``, in the same order. ``reset(seed=s)``
  seeds sub-env ``i`` with ``s + i`` (as ``SyncVectorEnv`` does), so sub-env ``i`` follows the
  trajectory of the single environment reset with ``seed=s + i`` and given the same actions,
  autoresets included. The draws are a Python loop over the sub-envs that reset (and, on torch,
  a copy to the device): the mode for parity checks.

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``; https://farama.org/Vector-Autoreset-Mode):

- ``NEXT_STEP`` (default, but for RankListHash-v0's one-step episodes: its class docstring says
  why it defaults to ``SAME_STEP``): the step after an episode ends resets that sub-env and
  ignores its action (reward 0, not terminated).
- ``SAME_STEP``: the ending step also resets; ``infos["final_obs"]`` (batched like the
  observations) and ``infos["final_info"]`` hold the last observation and info of the episode.
- ``DISABLED``: stepping a sub-env whose episode has ended raises; reset it with
  ``reset(options={"reset_mask": mask})``.

Every batched env takes the keyword arguments of its single env, plus:

| argument       | default         | meaning                                                           |
|----------------|-----------------|-------------------------------------------------------------------|
| num_envs       | 1               | number of sub-environments                                        |
| device         | ``"cpu"``       | ``"cpu"`` (numpy), ``"auto"``, ``"cuda[:N]"``, a ``torch.device``  |
| backend        | None            | ``"numpy"`` or ``"torch"``; None picks from ``device``            |
| rng            | ``"batched"``   | start-state draws: ``"batched"`` or ``"per_env"`` (above)         |
| autoreset_mode | ``NEXT_STEP``   | an ``AutoresetMode``, or its name or value (``"SameStep"``);       |
|                |                 | RankListHash-v0: ``SAME_STEP``                                     |
| check_actions  | True            | check every action (on CUDA: a host sync per step)                |
| fuse_step      | False           | compile the torch step into a few kernels (torch.compile; the     |
|                |                 | first steps compile, seconds to a minute): BinaryCodeTravel-v0,   |
|                |                 | SequentialHashBits-v0, RankListHash-v0                            |

``render_mode`` must be None (the batched envs draw nothing).

Infos are dicts of arrays with a boolean mask ``infos["_key"]`` telling which sub-envs carry
``key``, as ``SyncVectorEnv`` builds them (tensors on the device for the torch backend).

Snapshots (ours; Gymnasium has none): ``get_state()`` returns everything that decides how the env
continues between two steps (each sub-env's core state and code bank, the autoreset bookkeeping, every
random stream: ``np_random``, the ``rng="per_env"`` generators, the torch generator) as numpy arrays
(tensors are copied to the host) and JSON-able values, never objects; ``set_state(snapshot)`` on an
env built with the same arguments continues exactly as the env that took it (bitwise: the same
observations, rewards, flags and infos, autoresets included), on any device of the same kind. A
snapshot of other arguments (``num_envs``, backend, ``bits``, ...) is refused with a ``ValueError``
naming them. ``get_state(banks=False)`` leaves the code banks out, for callers that rebuild them
(e.g. by re-encoding the split); ``set_state`` then keeps the env's own.

Masked steps: a subclass that sets ``masked_steps = True`` and implements ``_step_all``,
``_info_all`` and ``_restart_where`` is stepped over all rows at once with the autoreset as masks
(step every row, then overwrite the rows that restart) when the autoreset mode is ``NEXT_STEP`` or
``SAME_STEP`` and the rows' random starts need no host loop (numpy, or torch with
``rng="batched"``). On torch such a step never reads anything back from the device (with
``check_actions=False``): the ended flags, the restarts and the infos stay on the device. Other
cases, and subclasses without these hooks, step through ``_step_rows`` and ``_reset_rows`` on the
rows given as host index arrays.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from hashing_gym.device import array_device, namespace
from hashing_gym.envs.base import HashingEnv, InvalidActionError, ResetNeededError

RNGS: tuple[str, ...] = ("batched", "per_env")
FUSE_BACKEND = "inductor"
"""The ``torch.compile`` backend of ``fuse_step=True``."""
SNAPSHOT_FORMAT = 1
"""The version of :meth:`HashingVectorEnv.get_state`'s layout (bumped when it changes)."""
SNAPSHOT_KEYS: tuple[str, ...] = (
    "format", "spec", "banks", "started", "autoreset", "ended",
    "np_random", "np_random_seed", "per_env", "generator", "arrays",
)  # fmt: skip


def resolve_autoreset_mode(mode: Any) -> AutoresetMode:
    """An ``AutoresetMode`` from the enum itself, its value (``"NextStep"``) or its name (``"NEXT_STEP"``)."""
    if isinstance(mode, AutoresetMode):
        return mode
    for member in AutoresetMode:
        if mode in (member.value, member.name):
            return member
    names = [m.name for m in AutoresetMode]
    raise ValueError(f"autoreset_mode must be an AutoresetMode or one of {names}, got {mode!r}")


class HashingVectorEnv(VectorEnv):
    """Base of the batched hashing environments (see the module docstring for the conventions).

    Subclasses build ``self.single_env`` (a single environment with the same arguments: it validates
    them and holds the spaces and label structures), call :meth:`_setup`, and implement
    ``_reset_rows``, ``_step_rows`` and ``_observations``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}
    single_env: HashingEnv
    masked_steps: bool = False
    """Whether the subclass implements ``_step_all``, ``_info_all`` and ``_restart_where`` (see above)."""
    fuses: bool = False
    """Whether the subclass can compile its step (``fuse_step``): masked envs implement ``_step_fused``."""

    def _setup(
        self,
        num_envs: int,
        device: Any,
        backend: str | None,
        rng: str,
        autoreset_mode: Any,
        check_actions: bool,
        fuse_step: bool = False,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if rng not in RNGS:
            raise ValueError(f"rng must be one of {RNGS}, got {rng!r}")
        self.num_envs = int(num_envs)
        self.rng = rng
        self.check_actions = bool(check_actions)
        self.torch_device = array_device(device, backend)
        self.backend = "numpy" if self.torch_device is None else "torch"
        self.device = "cpu" if self.torch_device is None else self.torch_device
        self.autoreset_mode = resolve_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = None
        self.num_items = self.single_env.num_items
        self.split_name = self.single_env.split_name
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs  # rng="per_env"
        self._generator: Any = None  # rng="batched" on torch: a torch.Generator on the device
        self._all_rows: Any = None  # arange(num_envs) on the device
        self._started = np.zeros(self.num_envs, dtype=bool)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._masked = (
            self.masked_steps
            and self.autoreset_mode != AutoresetMode.DISABLED
            and (self.torch_device is None or rng == "batched")
        )
        # Masked steps: the sub-envs whose episode ended at the last step, a backend array (on the device).
        self._ended = self._zeros(np.bool_) if self._masked else None
        if not isinstance(fuse_step, (bool, np.bool_)):
            raise ValueError(f"fuse_step must be True or False, got {fuse_step!r}")
        if fuse_step:
            if not self.fuses:
                raise ValueError(f"fuse_step=True: {type(self).__name__} has no fused step")
            if not self.torch:
                raise ValueError(
                    "fuse_step=True compiles a torch step: it needs a torch device (device='cuda', or "
                    "backend='torch')"
                )
            if self.masked_steps and not self._masked:
                raise ValueError(
                    "fuse_step=True compiles the masked step: it needs rng='batched' and autoreset_mode "
                    "NEXT_STEP or SAME_STEP"
                )
        self.fuse_step = bool(fuse_step)
        self.single_observation_space = self.single_env.observation_space
        self.single_action_space = self.single_env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    @property
    def torch(self) -> bool:
        """Whether the state and results are torch tensors (else numpy arrays)."""
        return self.torch_device is not None

    # ----------------------------------------------------------------------------------------------
    # Array helpers: numpy or torch on the device
    # ----------------------------------------------------------------------------------------------

    def _to_backend(self, array: Any) -> Any:
        """A numpy array as the backend's array (a tensor on the device for torch)."""
        if not self.torch:
            return array
        import torch

        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # torch refuses to share read-only memory (e.g. data set features)
            array = array.copy()
        return torch.as_tensor(array, device=self.torch_device)

    def _to_numpy(self, array: Any) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        if hasattr(array, "detach"):
            return array.detach().cpu().numpy()
        return np.asarray(array)

    def _zeros(self, dtype: Any, shape: tuple[int, ...] | None = None) -> Any:
        shape = (self.num_envs,) if shape is None else shape
        if not self.torch:
            return np.zeros(shape, dtype=dtype)
        import torch

        return torch.zeros(shape, dtype=getattr(torch, np.dtype(dtype).name), device=self.torch_device)

    def _torch_generator(self) -> Any:
        """The device's ``torch.Generator`` for ``rng="batched"`` (from entropy until a seeded reset)."""
        if self._generator is None:
            import torch

            self._generator = torch.Generator(device=self.torch_device)
            self._generator.seed()
        return self._generator

    def _add_info(self, infos: dict[str, Any], values: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
        """Put ``values`` (arrays with one entry per row of ``rows``) into ``infos`` with ``_key`` masks."""
        if len(rows) == 0:
            return infos
        for key, value in values.items():
            if isinstance(value, dict):
                infos[key] = self._add_info(infos.get(key, {}), value, rows)
            else:
                if key not in infos:
                    shape = (self.num_envs, *tuple(value.shape[1:]))
                    infos[key] = value.new_zeros(shape) if self.torch else np.zeros(shape, dtype=value.dtype)
                infos[key][self._index(rows)] = value
            if f"_{key}" not in infos:
                infos[f"_{key}"] = self._zeros(np.bool_)
            infos[f"_{key}"][self._index(rows)] = True
        return infos

    def _take(self, array: Any, index: Any) -> Any:
        """Rows ``index`` of ``array`` (``np.take``, ``index_select``: faster than fancy indexing on GPUs)."""
        return array.index_select(0, index) if self.torch else np.take(array, index, axis=0)

    def _index(self, rows: np.ndarray) -> Any:
        """Row indices usable on the backend's arrays (all rows: a cached copy, no transfer to the device)."""
        if not self.torch:
            return rows
        if len(rows) == self.num_envs:  # rows are sorted and distinct: these are all of them
            if self._all_rows is None:
                self._all_rows = self._to_backend(np.arange(self.num_envs))
            return self._all_rows
        return self._to_backend(rows)

    # ----------------------------------------------------------------------------------------------
    # Gymnasium vector API
    # ----------------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the sub-envs (all, or those of ``options["reset_mask"]``).

        Args:
            seed: None (keep the streams; fresh entropy on the first reset), an int ``s`` (the
                batched generator gets ``s``; with ``rng="per_env"`` sub-env ``i`` gets ``s + i``) or,
                with ``rng="per_env"``, a list of ``num_envs`` ints or None.
            options: ``"index"``: one row of the split for every sub-env (an int) or one per sub-env
                (an int array (num_envs,)); ``"reset_mask"``: bool (num_envs,) of the sub-envs to reset.

        Returns:
            The batched observations and infos (for the sub-envs reset).
        """
        seeds = self._seed_list(seed)
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        rows = np.flatnonzero(mask)
        index = self._index_option(options.get("index"), rows)
        seeded = np.zeros(self.num_envs, dtype=bool)
        if self.rng == "per_env":
            for i in rows:
                if seeds[i] is not None or self._rngs[i] is None:
                    self._rngs[i], _ = seeding.np_random(seeds[i])
                    seeded[i] = seeds[i] is not None
        elif seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
            if self.torch:
                self._torch_generator().manual_seed(int(seed))
            seeded[:] = True
        info = self._reset_rows(rows, seeded[rows], index)
        self._started[rows] = True
        self._autoreset[rows] = False
        if self._masked:
            self._ended[self._index(rows)] = False
        return self._observations(), self._add_info({}, info, rows)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every sub-env with its action (see the module docstring for autoreset).

        Args:
            actions: a batch of actions, ``num_envs`` rows (numpy array or, for the torch backend,
                a tensor or a numpy array).

        Returns:
            Batched ``(observations, rewards, terminations, truncations, infos)``; rewards are float64.
        """
        if not self._started.all():
            raise ResetNeededError(
                f"call reset before step: sub-envs {np.flatnonzero(~self._started)} never reset"
            )
        actions = self._check_actions(actions)
        if self._masked:
            return self._step_masked(actions)
        rewards, terminated = self._zeros(np.float64), self._zeros(np.bool_)
        truncated = self._zeros(np.bool_)
        infos: dict[str, Any] = {}
        resetting = np.zeros(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset.copy()
        elif self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise ResetNeededError(
                f"sub-envs {np.flatnonzero(self._autoreset)} have ended and autoreset is disabled: "
                f"reset them with reset(options={{'reset_mask': mask}})"
            )
        rows = np.flatnonzero(~resetting)
        if len(rows):
            every = len(rows) == self.num_envs
            result = self._step_rows(rows, actions if every else actions[self._index(rows)], every)
            if len(result) == 4:  # (rewards, terminations, truncations, infos)
                reward, ended, cut, info = result
            else:  # (rewards, terminations, infos): these envs never truncate
                (reward, ended, info), cut = result, np.zeros(len(rows), dtype=bool)
            done = ended | cut
            rewards[self._index(rows)] = reward
            for flags, values in ((terminated, ended), (truncated, cut)):
                if values.all() or not values.any():  # the usual lockstep case: no transfer to the device
                    flags[self._index(rows)] = bool(values[0])
                else:
                    flags[self._index(rows)] = self._to_backend(values)
            if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
                # As SyncVectorEnv: the episode's last obs and info move to final_obs / final_info, and
                # the ended sub-envs report their reset's info instead.
                ended = rows[done]
                infos["final_obs"] = self._observations()
                infos["_final_obs"] = self._zeros(np.bool_)
                infos["_final_obs"][self._index(ended)] = True
                infos["final_info"] = self._add_info({}, self._select(info, done), ended)
                infos["_final_info"] = self._zeros(np.bool_)
                infos["_final_info"][self._index(ended)] = True
                self._add_info(infos, self._select(info, ~done), rows[~done])
                self._add_info(infos, self._reset_rows(ended, np.zeros(len(ended), dtype=bool), None), ended)
            else:
                self._add_info(infos, info, rows)
                self._autoreset[rows] = done
        if resetting.any():
            reset_rows = np.flatnonzero(resetting)
            self._add_info(
                infos, self._reset_rows(reset_rows, np.zeros(len(reset_rows), dtype=bool), None), reset_rows
            )
            self._autoreset[reset_rows] = False
        return self._observations(), rewards, terminated, truncated, infos

    def _step_masked(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``step`` over all rows with masks (``masked_steps``; NEXT_STEP or SAME_STEP autoreset)."""
        if self.fuse_step:
            return self._step_fused(actions)
        reward, terminated, truncated = self._step_all(actions)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            # The rows that ended at the last step restart: their step above is discarded.
            restarting = self._ended
            live = ~restarting
            reward = self._or_zero(live, reward)
            terminated, truncated = terminated & live, truncated & live
            self._restart(restarting)
            self._ended = terminated | truncated
            return self._observations(), reward, terminated, truncated, self._with_masks(self._info_all())
        # SAME_STEP, as SyncVectorEnv: the ended rows' last obs and info move to final_obs and
        # final_info (zeros elsewhere), and they report their restart's obs and info. On torch the
        # final_* keys are always there (whether a row ended would be read back from the device).
        ended = terminated | truncated
        if not self.torch and not ended.any():
            return self._observations(), reward, terminated, truncated, self._with_masks(self._info_all())
        final_obs, final_info = self._observations(), self._info_all()
        self._restart(ended)
        infos = self._with_masks(self._info_all())
        infos["final_obs"] = final_obs
        infos["_final_obs"] = ended
        infos["final_info"] = self._where_info(ended, final_info)
        infos["_final_info"] = ended.copy() if not self.torch else ended.clone()
        return self._observations(), reward, terminated, truncated, infos

    def _step_fused(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``_step_masked`` as one compiled call (subclasses with ``fuses``; see ``fuse_step``)."""
        raise NotImplementedError

    @staticmethod
    def _final_infos(
        infos: dict[str, Any], ended: Any, final_obs: Any, final_info: dict[str, Any]
    ) -> dict[str, Any]:
        """``infos`` with a fused ``SAME_STEP`` step's ``final_obs`` and ``final_info``, masked by ``ended``.

        ``final_info`` holds zeros in the rows that did not end, as the fused step functions return it.
        """
        infos["final_obs"] = final_obs
        infos["_final_obs"] = ended
        infos["final_info"] = {}
        for key, value in final_info.items():
            infos["final_info"].update({key: value, f"_{key}": ended})
        infos["_final_info"] = ended.clone()
        return infos

    @staticmethod
    def _compile(function: Any, *args: Any, options: dict[str, Any] | None = None) -> Any:
        """``function`` with ``args`` bound first, compiled by ``torch.compile`` (one graph, static shapes).

        The backend is :data:`FUSE_BACKEND` (inductor: the step's element-wise work fused into a few
        generated kernels); tests on machines without a compiler set ``"aot_eager"``. Each call compiles
        a copy of ``function`` with its own code object: dynamo keeps graphs, and counts recompilations
        (8 at most), per code object, so envs of other shapes and constants must not share one.
        ``options`` are inductor's (``torch.compile(options=...)``), ignored by other backends.
        """
        import torch

        namespace(torch.empty(0))  # remembered before tracing: dynamo cannot trace array_namespace's caches
        own = types.FunctionType(
            function.__code__.replace(), function.__globals__, function.__name__, function.__defaults__
        )
        # (Bound outside: torch.compile of a partial compiles one shared wrapper's code object.)
        options = options if FUSE_BACKEND == "inductor" else None
        compiled = torch.compile(own, backend=FUSE_BACKEND, fullgraph=True, dynamic=False, options=options)
        return functools.partial(compiled, *args)

    def _restart(self, mask: Any) -> None:
        """Fresh episodes for the rows where ``mask`` (a backend bool array), as autoreset does."""
        if not self.torch:
            rows = np.flatnonzero(mask)
            if len(rows):
                self._reset_rows(rows, np.zeros(len(rows), dtype=bool), None)
            return
        self._restart_where(mask)

    def _with_masks(self, values: dict[str, Any]) -> dict[str, Any]:
        """Infos of all rows: ``values`` and an all-True ``_key`` mask (one array, shared) per key."""
        every = np.ones(self.num_envs, dtype=bool) if not self.torch else self._all_true()
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos[key] = self._with_masks(value) if isinstance(value, dict) else value
            infos[f"_{key}"] = every
        return infos

    def _or_zero(self, mask: Any, value: Any) -> Any:
        """``value`` (a backend array) where ``mask``, zero of its dtype elsewhere."""
        if not self.torch:
            return np.where(mask, value, np.zeros((), dtype=value.dtype))
        import torch

        return torch.where(mask, value, value.new_zeros(()))

    def _all_true(self) -> Any:
        import torch

        return torch.ones(self.num_envs, dtype=torch.bool, device=self.torch_device)

    def _where_info(self, mask: Any, values: dict[str, Any]) -> dict[str, Any]:
        """Infos carried by the rows where ``mask`` only: the values there, zeros elsewhere."""
        infos: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                infos[key] = self._where_info(mask, value)
            else:
                infos[key] = self._or_zero(mask.reshape((-1,) + (1,) * (value.ndim - 1)), value)
            infos[f"_{key}"] = mask
        return infos

    def _select(self, info: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
        """The entries of info arrays (one per stepped row) where ``keep``."""
        index = self._index(np.flatnonzero(keep))
        return {key: value[index] for key, value in info.items()}

    # ----------------------------------------------------------------------------------------------
    # Snapshots
    # ----------------------------------------------------------------------------------------------

    def get_state(self, *, banks: bool = True) -> dict[str, Any]:
        """A snapshot of the env between two steps, for exact checkpoints (see the module docstring).

        Args:
            banks: include the code banks (databases); False leaves them out, for a caller that
                rebuilds them itself after :meth:`set_state`.

        Returns:
            A dict of numpy arrays (copies, on the host whatever the device), JSON-able values and
            lists of them: ``spec`` (what the env was built with, compared by ``set_state``), the
            autoreset bookkeeping (``started``, ``autoreset``, ``ended``), the random streams
            (``np_random`` and ``per_env``: numpy bit generator states; ``generator``: the torch
            generator's state as uint8) and ``arrays`` (the subclass's state: each sub-env's episode
            and, with ``banks``, its code bank).
        """
        arrays = {
            key: self._to_numpy(value).copy()
            for key, value in self._snapshot_arrays().items()
            if banks or key not in self._bank_arrays
        }
        return {
            "format": SNAPSHOT_FORMAT,
            "spec": self._snapshot_spec(),
            "banks": bool(banks),
            "started": self._started.copy(),
            "autoreset": self._autoreset.copy(),
            "ended": None if self._ended is None else self._to_numpy(self._ended).copy(),
            "np_random": None if self._np_random is None else self._np_random.bit_generator.state,
            "np_random_seed": self._np_random_seed,
            "per_env": [None if rng is None else rng.bit_generator.state for rng in self._rngs],
            "generator": None if self._generator is None else self._generator.get_state().numpy().copy(),
            "arrays": arrays,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` snapshot of an env built with the same arguments.

        Arrays may be numpy arrays or tensors on any device (a checkpoint loaded with ``torch.load``).
        Everything is checked before anything changes, so a refused snapshot leaves the env as it was.

        Raises:
            ValueError: naming the problem: not a snapshot, a missing key, a snapshot of other
                arguments (naming each that differs), an array of another shape or dtype (naming its
                key), a random state that does not fit its generator.
        """
        if not isinstance(state, dict):
            raise ValueError(
                f"set_state takes a snapshot from get_state (a dict), got {type(state).__name__}"
            )
        missing = [key for key in SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(f"set_state: the snapshot lacks {missing} (not a snapshot from get_state?)")
        if state["format"] != SNAPSHOT_FORMAT:
            raise ValueError(
                f"set_state: snapshot format {state['format']!r}, this env reads {SNAPSHOT_FORMAT}"
            )
        self._check_spec(state["spec"])
        banks = state["banks"]
        if not isinstance(banks, bool):
            raise ValueError(f"set_state: 'banks' must be a bool, got {banks!r}")
        n = self.num_envs
        masks = {
            key: self._checked_array(state[key], np.zeros(n, dtype=bool), key)
            for key in ("started", "autoreset")
        }
        ended = state["ended"]
        if (ended is None) != (self._ended is None):
            raise ValueError(
                f"set_state: 'ended' is {'absent' if ended is None else 'present'} in the snapshot, "
                f"{'absent' if self._ended is None else 'present'} here (masked steps differ)"
            )
        if ended is not None:
            ended = self._checked_array(ended, np.zeros(n, dtype=bool), "ended")
        template = {
            key: self._to_numpy(value)
            for key, value in self._snapshot_arrays().items()
            if banks or key not in self._bank_arrays
        }
        given = state["arrays"]
        if not isinstance(given, dict) or set(given) != set(template):
            keys = sorted(given) if isinstance(given, dict) else type(given).__name__
            raise ValueError(f"set_state: 'arrays' must hold {sorted(template)}, got {keys}")
        arrays = {key: self._checked_array(given[key], template[key], f"arrays[{key!r}]") for key in template}
        np_random = (
            None if state["np_random"] is None else self._numpy_generator(state["np_random"], "np_random")
        )
        per_env = state["per_env"]
        if not isinstance(per_env, (list, tuple)) or len(per_env) != n:
            raise ValueError(f"set_state: 'per_env' must be a list of {n} generator states or None")
        rngs = [
            None if s is None else self._numpy_generator(s, f"per_env[{i}]") for i, s in enumerate(per_env)
        ]
        generator = self._checked_generator_state(state["generator"])
        seed = state["np_random_seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"set_state: 'np_random_seed' must be an int or None, got {seed!r}")

        # Everything checked: apply.
        self._started[:], self._autoreset[:] = masks["started"], masks["autoreset"]
        if ended is not None:
            self._ended = self._to_backend(ended)
        self._np_random, self._np_random_seed = np_random, None if seed is None else int(seed)
        self._rngs = rngs
        if generator is None:
            self._generator = None
        else:
            import torch

            self._torch_generator().set_state(torch.from_numpy(generator))
        self._restore_arrays(arrays)

    def _snapshot_spec(self) -> dict[str, Any]:
        """What the env was built with, as JSON-able values: a snapshot is refused where these differ."""
        return {
            "env": type(self).__name__,
            "num_envs": self.num_envs,
            "backend": self.backend,
            "device": None if self.torch_device is None else self.torch_device.type,
            "rng": self.rng,
            "autoreset_mode": self.autoreset_mode.name,
            "split": self.split_name,
            "num_items": self.num_items,
            **self._spec(),
        }

    def _check_spec(self, spec: Any) -> None:
        """``ValueError`` naming every argument where the snapshot's env differs from this one."""
        if not isinstance(spec, dict):
            raise ValueError(f"set_state: 'spec' must be a dict, got {type(spec).__name__}")
        mine = self._snapshot_spec()
        differences = [
            f"{key}={spec.get(key, '(absent)')!r} in the snapshot, {mine.get(key, '(absent)')!r} here"
            for key in sorted(set(mine) | set(spec))
            if spec.get(key, "(absent)") != mine.get(key, "(absent)")
        ]
        if differences:
            raise ValueError(
                "set_state: the snapshot is of an env built with other arguments: " + "; ".join(differences)
            )

    def _checked_array(self, value: Any, template: np.ndarray, what: str) -> np.ndarray:
        """A numpy copy of ``value`` of ``template``'s shape and dtype, or ValueError naming ``what``."""
        if value is None or isinstance(value, (dict, str, bytes)):
            raise ValueError(f"set_state: {what!s} must be an array, got {type(value).__name__}")
        array = np.array(self._to_numpy(value))  # a copy: nothing of the caller's is kept
        if array.shape != template.shape or array.dtype != template.dtype:
            raise ValueError(
                f"set_state: {what!s} must be {template.dtype} of shape {template.shape}, "
                f"got {array.dtype} of shape {array.shape}"
            )
        return array

    @staticmethod
    def _numpy_generator(state: Any, what: str) -> np.random.Generator:
        """A PCG64 generator (``seeding.np_random``'s kind) in ``state``, or ValueError naming ``what``."""
        generator = np.random.Generator(np.random.PCG64())
        try:
            generator.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"set_state: {what} is not a PCG64 generator state ({error})") from None
        return generator

    def _checked_generator_state(self, state: Any) -> np.ndarray | None:
        """The torch generator's state (uint8) checked against this env's generator, or None."""
        if state is None:
            return None
        if not self.torch:
            raise ValueError("set_state: the snapshot holds a torch generator state, this env runs numpy")
        import torch

        size = torch.Generator(device=self.torch_device).get_state().numel()
        return self._checked_array(state, np.zeros(size, dtype=np.uint8), "generator")

    def _write(self, target: Any, array: np.ndarray) -> None:
        """Write a checked numpy array into a backend array in place (others may hold views of it)."""
        if self.torch:
            import torch

            target.copy_(torch.from_numpy(array))
        else:
            target[...] = array

    # ----------------------------------------------------------------------------------------------
    # Argument checks
    # ----------------------------------------------------------------------------------------------

    def _seed_list(self, seed: Any) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        if self.rng == "per_env" and isinstance(seed, (list, tuple)) and len(seed) == self.num_envs:
            return [None if s is None else int(s) for s in seed]
        if self.rng == "batched":
            raise ValueError(f"seed must be None or an int with rng='batched', got {seed!r}")
        raise ValueError(
            f"seed must be None, an int or a list of {self.num_envs} ints or None (one per sub-env), "
            f"got {seed!r}"
        )

    def _reset_mask(self, mask: Any) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        mask = self._to_numpy(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                f"got {mask.dtype} of shape {mask.shape}"
            )
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one sub-env, got all False")
        return mask

    def _index_option(self, index: Any, rows: np.ndarray) -> np.ndarray | None:
        """``options["index"]`` as int64 (len(rows),) for the rows reset, validated; None if absent."""
        if index is None:
            return None
        arr = self._to_numpy(index)
        if arr.ndim == 0:
            arr = np.full(self.num_envs, arr)
        if arr.shape != (self.num_envs,) or not (
            np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_
        ):
            raise ValueError(
                f"options['index'] must be an integer or an integer array of shape ({self.num_envs},), "
                f"got {index!r}"
            )
        arr = arr[rows].astype(np.int64)
        bad = (arr < 0) | (arr >= self.num_items)
        if bad.any():
            raise ValueError(
                f"options['index']={int(arr[bad][0])} is out of range for the {self.split_name!r} split "
                f"of {self.num_items} items"
            )
        return arr

    def _check_discrete_actions(self, actions: Any, high: int) -> Any:
        """Actions as the backend's int64 (num_envs,) array of integers in [0, high], or InvalidActionError.

        On torch with ``check_actions=False`` the range is not checked (that check reads a flag
        back from the device); shape and dtype always are.
        """
        shape = (self.num_envs,)
        if self.torch and hasattr(actions, "detach"):
            import torch

            not_integer = actions.dtype.is_floating_point or actions.dtype.is_complex
            not_integer = not_integer or actions.dtype == torch.bool
            if tuple(actions.shape) != shape or not_integer:
                raise InvalidActionError(
                    f"actions must be integers of shape {shape} (one per sub-env), "
                    f"got {actions.dtype} of shape {tuple(actions.shape)}"
                )
            tensor = actions.to(device=self.torch_device, dtype=torch.int64)
            if self.check_actions and bool(((tensor < 0) | (tensor > high)).any()):
                i = int(((tensor < 0) | (tensor > high)).nonzero()[0, 0])
                raise InvalidActionError(
                    f"actions[{i}]={int(tensor[i])} is not in {self.single_action_space} "
                    f"(actions must be integers in [0, {high}])"
                )
            return tensor
        arr = np.asarray(actions)
        if arr.shape != shape or not np.issubdtype(arr.dtype, np.integer):
            raise InvalidActionError(
                f"actions must be integers of shape {shape} (one per sub-env), "
                f"got {arr.dtype} of shape {arr.shape}"
            )
        bad = (arr < 0) | (arr > high)
        if bad.any():
            i = int(bad.argmax())
            raise InvalidActionError(
                f"actions[{i}]={int(arr[i])} is not in {self.single_action_space} "
                f"(actions must be integers in [0, {high}])"
            )
        return self._to_backend(arr.astype(np.int64, copy=False))

    def _check_binary_actions(self, actions: Any, width: int) -> Any:
        """Actions as the backend's uint8 (num_envs, width) array of 0/1, or ``ValueError``."""
        shape = (self.num_envs, width)
        if self.torch and hasattr(actions, "detach"):
            import torch

            tensor = actions.to(self.torch_device)
            # The value check reads a flag back from the device: check_actions=False skips it on torch.
            if tuple(tensor.shape) != shape or (
                self.check_actions and not bool(((tensor == 0) | (tensor == 1)).all())
            ):
                raise InvalidActionError(
                    f"actions {actions!r} are not in {self.action_space}: need 0/1 of shape {shape}"
                )
            return tensor.to(torch.uint8)
        arr = np.asarray(actions)
        if arr.shape != shape or arr.dtype == object or not np.all((arr == 0) | (arr == 1)):
            raise InvalidActionError(
                f"actions {actions!r} are not in {self.action_space}: need 0/1 of shape {shape}"
            )
        return self._to_backend(arr.astype(np.uint8))

    # ----------------------------------------------------------------------------------------------
    # What subclasses implement
    # ----------------------------------------------------------------------------------------------

    def _check_actions(self, actions: Any) -> Any:
        raise NotImplementedError

    def _reset_rows(self, rows: np.ndarray, seeded: np.ndarray, index: np.ndarray | None) -> dict[str, Any]:
        """Start episodes of ``rows``, as the single env's ``reset`` does.

        ``seeded[k]`` tells whether row ``rows[k]`` was just reseeded (the single env then redraws its
        bank, as it does on its first reset); ``index`` holds validated ``options["index"]`` values, or
        is None. Returns the reset info arrays (one entry per row).
        """
        raise NotImplementedError

    def _step_rows(
        self, rows: np.ndarray, actions: Any, every: bool
    ) -> tuple[Any, np.ndarray, dict[str, Any]]:
        """Step ``rows`` (all sub-envs when ``every``).

        Returns the rewards and info arrays (backend) and the terminations as a numpy bool array:
        the episode lengths are known on the host, so the step never waits for the device. An env
        that also truncates returns ``(rewards, terminations, truncations, infos)``, both flags numpy.
        """
        raise NotImplementedError

    def _observations(self) -> Any:
        raise NotImplementedError

    # Snapshots: the subclass's state (``get_state``'s ``arrays``) and what it was built with.

    _bank_arrays: tuple[str, ...] = ()
    """The keys of :meth:`_snapshot_arrays` that hold code banks (left out by ``get_state(banks=False)``)."""

    def _spec(self) -> dict[str, Any]:
        """The subclass's arguments for ``get_state``'s ``spec`` (JSON-able values)."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    def _snapshot_arrays(self) -> dict[str, Any]:
        """Name -> the backend array (not a copy) of every part of the state that changes as the env runs."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Put back checked numpy copies of :meth:`_snapshot_arrays` (the bank keys may be absent)."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    # Masked steps (``masked_steps = True``): all rows at once, no row index arrays.

    def _step_all(self, actions: Any) -> tuple[Any, Any, Any]:
        """Step every row with its action; the rewards, terminations and truncations (backend arrays)."""
        raise NotImplementedError

    def _info_all(self) -> dict[str, Any]:
        """The info values of every row (backend arrays that later steps and resets leave unchanged)."""
        raise NotImplementedError

    def _restart_where(self, mask: Any) -> None:
        """Torch, ``rng="batched"``: fresh episodes for the rows where ``mask`` (a bool tensor).

        Drawn and selected over all rows on the device (nothing read back).
        """
        raise NotImplementedError
