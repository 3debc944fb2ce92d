"""The training state of a stable-baselines3 model as plain data: what the SB3 trainers checkpoint.

SB3's own ``save``/``load`` write a zip whose ``data`` entry holds pickled objects, and its replay
buffers are pickles: loading either runs whatever code the file carries. The SB3 trainers here
(``dqn-sb3``, ``ppo``, ``a2c``, ``rppo``) never load such a file. A resumed run builds its model
exactly as a fresh run does (the trainer's ``make_model`` from the run's ``args.json``, the same
seeds) and :func:`restore` gives it back the state that :func:`capture` wrote:

- ``parameters``: ``model.get_parameters()``, the policy's state dict (the target network
  included) and the optimizer's (Adam's moments and step counts);
- ``spaces``: the observation and action spaces as data (:func:`space_to_data`), to refuse a
  checkpoint of another env;
- ``counters``: ``num_timesteps``, ``_episode_num``, ``_n_updates``, ``_current_progress_remaining``
  and DQN's ``_n_calls`` (the target network's period) and ``exploration_rate``;
- ``last_obs``, ``last_episode_starts``: the observation the next action sees;
- ``lstm_states``: RecurrentPPO's ``_last_lstm_states`` (actor and critic, h and c);
- ``env``, ``monitor``: the envs' snapshot (:func:`env_state`): for the batched env the trainers
  step (``hashing_gym.sb3``), ``{"batched": HashingVecEnv.get_state()}`` (every copy's random
  streams, items, codes, banks) and its ``VecMonitor``'s episodes so far; for a ``DummyVecEnv``, each
  env's ``get_state()`` and its Monitor's episode so far;
- ``rng``: torch's CPU (and CUDA) generator, numpy's global ``RandomState``, python's ``random``
  and the action space's generator, which SB3 draws from;
- ``callbacks``: the state of callbacks that change training (rppo's bank refresh);
- ``episode_info``: the episode statistics SB3 logs (``ep_info_buffer``);

and, for off-policy models, :func:`replay_arrays` (every array of the replay buffer, its filled rows
only, plus ``pos`` and ``full``; a ``DictReplayBuffer`` as ``observations.<key>``) in a separate
``.npz``. Numpy arrays inside the ``.pt`` are stored as bytes with their dtype and shape
(:func:`encode`), so ``torch.load(weights_only=True)`` reads every checkpoint: no code runs.

The trainers checkpoint at the start of a rollout (after the previous update, before the next
action): the one point where none of SB3's loop variables is half-updated. A run checkpointed at
step k and resumed then ends bitwise equal, on CPU, to the run that was never interrupted.

The final model, ``model.pt``, holds the policy's parameters and the spaces (:func:`save_policy`);
:func:`load_policy` rebuilds the model from ``args.json`` and stand-in envs with those spaces.
"""

from __future__ import annotations

import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from agents.checkpoint import FORMAT, CheckpointError, legacy_format_error, read_tensors, write_tensors

ARRAY_KEY = "__ndarray__"
# The counters that decide how training continues, where the model has them (DQN: the last two).
COUNTERS: tuple[str, ...] = (
    "num_timesteps",
    "_episode_num",
    "_n_updates",
    "_current_progress_remaining",
    "_n_calls",
    "exploration_rate",
)
REPLAY_FIELDS: tuple[str, ...] = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "dones",
    "timeouts",
)
POLICY_KIND = "sb3-policy"


# --------------------------------------------------------------------------- numpy inside a .pt


def encode(value: Any) -> Any:
    """``value`` with every numpy array replaced by bytes, dtype and shape (readable with weights_only).

    Dicts (string keys), lists, tuples (as lists), tensors, numbers, strings and None pass through.

    Raises:
        TypeError: for an object array or any other object (it would need pickle).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("encode: an object array needs pickle")
        data = value.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        raw = torch.from_numpy(data.reshape(-1).view(np.uint8))
        return {ARRAY_KEY: data.dtype.str, "shape": list(data.shape), "data": raw}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    raise TypeError(f"encode: {type(value).__name__} is not data (arrays, tensors, numbers, strings)")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (numpy arrays back from their bytes).

    Raises:
        ValueError: for an encoded array whose dtype, shape or bytes do not fit together.
    """
    if isinstance(value, dict):
        if ARRAY_KEY in value:
            return _decode_array(value)
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _decode_array(value: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(str(value[ARRAY_KEY]))
    if dtype.hasobject:
        raise ValueError("an encoded array of objects")
    data, shape = value.get("data"), value.get("shape")
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or not isinstance(shape, list):
        raise ValueError("an encoded array without its bytes or shape")
    return np.frombuffer(data.numpy().tobytes(), dtype=dtype).reshape([int(n) for n in shape]).copy()


# --------------------------------------------------------------------------- spaces


def space_to_data(space: gym.Space) -> dict[str, Any]:
    """A Box, Discrete, MultiBinary, MultiDiscrete or Dict space as data (:func:`space_from_data`)."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_data(item) for key, item in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": encode(space.low), "high": encode(space.high), "dtype": space.dtype.str}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": encode(np.asarray(space.n, dtype=np.int64))}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": encode(space.nvec), "start": encode(space.start)}
    raise TypeError(f"no data form for {space}")


def space_from_data(data: Any) -> gym.Space:
    """The space that :func:`space_to_data` described.

    Raises:
        ValueError: if ``data`` describes no such space.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a space must be a dict, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "Dict":
        return spaces.Dict({str(key): space_from_data(item) for key, item in dict(data["spaces"]).items()})
    if kind == "Box":
        return spaces.Box(
            _decode_array(data["low"]), _decode_array(data["high"]), dtype=np.dtype(data["dtype"])
        )
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data["start"]))
    if kind == "MultiBinary":
        n = _decode_array(data["n"])
        return spaces.MultiBinary(int(n) if n.ndim == 0 else [int(size) for size in n])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(_decode_array(data["nvec"]), start=_decode_array(data["start"]))
    raise ValueError(f"unknown space type {kind!r}")


def _check_spaces(model: Any, data: Any) -> None:
    for name in ("observation", "action"):
        space = space_from_data(data[name])
        if space != getattr(model, f"{name}_space"):
            current = getattr(model, f"{name}_space")
            raise ValueError(
                f"it was written for the {name} space {space}, this run's is {current} "
                "(another data set or code length?)"
            )


# --------------------------------------------------------------------------- random generators


def rng_state(model: Any) -> dict[str, Any]:
    """Every random stream SB3 training draws from (the envs' own are in their snapshots)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": encode(np.random.get_state(legacy=False)),
        "python": encode(random.getstate()),
        "action_space": model.action_space.np_random.bit_generator.state,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(model: Any, state: dict[str, Any]) -> None:
    """Put back the streams of :func:`rng_state` (CUDA's only on a machine with as many GPUs)."""
    generator = state["torch"]
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
        raise ValueError("rng.torch is not a generator state")
    torch.set_rng_state(generator)
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(decode(state["numpy"]))
    version, internal, gauss = decode(state["python"])
    random.setstate((int(version), tuple(int(n) for n in internal), gauss))
    model.action_space.np_random.bit_generator.state = state["action_space"]


# --------------------------------------------------------------------------- envs


def _batched(env: Any) -> Any:
    """The ``hashing_gym.sb3.HashingVecEnv`` under SB3's VecEnv wrappers, or None (a DummyVecEnv)."""
    from hashing_gym.sb3 import HashingVecEnv

    base = env.unwrapped if env is not None else None
    return base if isinstance(base, HashingVecEnv) else None


def _vec_monitor(env: Any) -> Any:
    from stable_baselines3.common.vec_env import VecMonitor, unwrap_vec_wrapper

    return unwrap_vec_wrapper(env, VecMonitor)


def env_state(env: Any) -> dict[str, Any]:
    """The envs' part of a checkpoint (``env`` and ``monitor``), as data: what :func:`set_env_state` takes.

    For the batched env of ``hashing_gym.sb3`` (what the trainers step): ``env`` is
    ``{"batched": snapshot}``, the snapshot from ``HashingVecEnv.get_state()`` (the one place that
    reads the env's state), and ``monitor`` its ``VecMonitor``'s running returns, lengths and episode
    count. For a ``DummyVecEnv`` (older runs; users' own envs): one snapshot and one Monitor state per
    env object.
    """
    batched = _batched(env)
    if batched is None:
        if not hasattr(env, "envs"):
            raise TypeError(
                "SB3 checkpoints here need the model's env to be hashing_gym.sb3's batched env or a "
                f"DummyVecEnv of hashing-gym envs, got {type(env).__name__}"
            )
        envs = list(env.envs)
        return {
            "env": [encode(snapshot) for snapshot in env.env_method("get_state")],
            "monitor": [_monitor_state(single) for single in envs],
        }
    monitor = _vec_monitor(env)
    monitor_state: dict[str, Any] = {}
    if monitor is not None:
        monitor_state = {
            "returns": encode(monitor.episode_returns),
            "lengths": encode(monitor.episode_lengths),
            "count": int(monitor.episode_count),
        }
    return {"env": {"batched": encode(batched.get_state())}, "monitor": monitor_state}


def set_env_state(env: Any, snapshot: Any, monitor_state: Any) -> None:
    """Put :func:`env_state`'s ``env`` and ``monitor`` back into a freshly built and reset ``env``.

    Raises:
        ValueError: if the snapshot is of the other kind of vec env (a ``DummyVecEnv``'s list in a
            run that steps the batched env, or the reverse), of another number of envs, or refused by
            the env (other arguments).
    """
    batched = _batched(env)
    if batched is None:
        envs = list(env.envs)
        if not isinstance(snapshot, list):
            raise ValueError("it holds a batched env's snapshot; this run steps one env object per copy")
        if len(snapshot) != len(envs) or len(monitor_state) != len(envs):
            raise ValueError(f"it holds {len(snapshot)} env snapshots, this run has {len(envs)} envs")
        for index, single in enumerate(snapshot):
            env.env_method("set_state", decode(single), indices=[index])
            _set_monitor_state(envs[index], monitor_state[index])
        return
    if not isinstance(snapshot, dict) or set(snapshot) != {"batched"}:
        raise ValueError(
            "it holds one env snapshot per env object (DummyVecEnv), written before the SB3 trainers "
            "stepped the batched env (hashing_gym.sb3); this version cannot continue it exactly: start "
            "the run again with --overwrite, or finish it with the version that wrote it"
        )
    batched.set_state(decode(snapshot["batched"]))
    monitor = _vec_monitor(env)
    if monitor is not None and monitor_state:
        monitor.episode_returns = _checked_like(
            decode(monitor_state["returns"]), monitor.episode_returns, "monitor.returns"
        )
        monitor.episode_lengths = _checked_like(
            decode(monitor_state["lengths"]), monitor.episode_lengths, "monitor.lengths"
        )
        monitor.episode_count = int(monitor_state["count"])


def _monitor(env: gym.Env) -> Any:
    from stable_baselines3.common.monitor import Monitor

    while env is not None:
        if isinstance(env, Monitor):
            return env
        env = getattr(env, "env", None)
    return None


def _monitor_state(env: gym.Env) -> dict[str, Any]:
    monitor = _monitor(env)
    if monitor is None:
        return {}
    return {"rewards": [float(r) for r in monitor.rewards], "total_steps": int(monitor.total_steps)}


def _set_monitor_state(env: gym.Env, state: dict[str, Any]) -> None:
    monitor = _monitor(env)
    if monitor is None or not state:
        return
    monitor.rewards = [float(r) for r in state["rewards"]]
    monitor.total_steps = int(state["total_steps"])


def _checked_like(given: Any, template: Any, what: str) -> Any:
    """``given`` (arrays, or a dict of arrays) if it has the keys, shapes and dtypes of ``template``."""
    if isinstance(template, dict):
        if not isinstance(given, dict) or set(given) != set(template):
            raise ValueError(f"{what} must hold {sorted(template)}")
        return {key: _checked_like(given[key], template[key], f"{what}.{key}") for key in template}
    template = np.asarray(template)
    if not isinstance(given, np.ndarray) or given.shape != template.shape or given.dtype != template.dtype:
        raise ValueError(f"{what} must be {template.dtype} of shape {template.shape}")
    return given


# --------------------------------------------------------------------------- the state


def capture(model: Any, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The training state of ``model`` as data (the module docstring lists it); the replay buffer aside.

    Call it between rollouts (``on_rollout_start``): see the module docstring.
    ``callbacks`` with ``get_state()`` add theirs under their class name.
    """
    state: dict[str, Any] = {
        "parameters": model.get_parameters(),
        "spaces": {
            "observation": space_to_data(model.observation_space),
            "action": space_to_data(model.action_space),
        },
        "counters": {name: getattr(model, name) for name in COUNTERS if hasattr(model, name)},
        "last_obs": encode(model._last_obs),
        "last_episode_starts": encode(model._last_episode_starts),
        **env_state(model.get_env()),
        "rng": rng_state(model),
        "callbacks": {
            type(cb).__name__: encode(cb.get_state()) for cb in callbacks if hasattr(cb, "get_state")
        },
        "episode_info": _episode_info(model),
    }
    lstm = getattr(model, "_last_lstm_states", None)
    if lstm is not None:
        state["lstm_states"] = {"pi": list(lstm.pi), "vf": list(lstm.vf)}
    return state


def capture_partial(model: Any) -> dict[str, Any]:
    """What an SB3 model loaded from an old zip has: parameters, spaces, counters; ``partial`` set.

    ``agents.convert`` writes it; :func:`restore` then starts the envs afresh (as SB3's own
    ``load`` did) and keeps the random streams a fresh run seeds: such a resume is not exact.
    """
    return {
        "partial": True,
        "parameters": model.get_parameters(),
        "spaces": {
            "observation": space_to_data(model.observation_space),
            "action": space_to_data(model.action_space),
        },
        "counters": {name: getattr(model, name) for name in COUNTERS if hasattr(model, name)},
        "episode_info": _episode_info(model),
    }


def _episode_info(model: Any) -> dict[str, Any]:
    def plain(info: dict[str, Any]) -> dict[str, float]:
        return {
            str(key): float(value)
            for key, value in info.items()
            if isinstance(value, (int, float, np.number))
        }

    return {
        "ep_info_buffer": [plain(info) for info in (model.ep_info_buffer or [])],
        "ep_success_buffer": [float(success) for success in (model.ep_success_buffer or [])],
    }


def restore(
    model: Any, state: dict[str, Any], replay: dict[str, np.ndarray] | None, callbacks: Sequence[Any] = ()
) -> None:
    """Give a freshly built ``model`` (and its envs) the state :func:`capture` wrote, in place.

    The envs are reset (as a fresh run's first ``learn`` does) and then set to their snapshots;
    parameters are loaded with ``exact_match=True``; the random streams are put back last, after
    everything that building the model drew.

    Raises:
        ValueError: if ``state`` does not fit the model (another env, network or algorithm).
    """
    partial = bool(state.get("partial", False))
    _check_spaces(model, state["spaces"])
    env = model.get_env()
    reset_obs = env.reset()
    starts = np.ones(env.num_envs, dtype=bool)
    if partial:
        model._last_obs, model._last_episode_starts = reset_obs, starts
        print(
            "note: this checkpoint was converted from an old format: its envs start afresh and its random "
            "streams are the seed's, so the resumed run is not bitwise the uninterrupted one",
            file=sys.stderr,
        )
    else:
        set_env_state(env, state["env"], state["monitor"])
        model._last_obs = _checked_like(decode(state["last_obs"]), reset_obs, "last_obs")
        model._last_episode_starts = _checked_like(
            decode(state["last_episode_starts"]), starts, "last_episode_starts"
        )

    parameters = state["parameters"]
    expected = set(model.get_parameters())
    if not isinstance(parameters, dict) or set(parameters) != expected:
        raise ValueError(f"its parameters must be {sorted(expected)}, got {sorted(parameters)}")
    model.set_parameters(parameters, exact_match=True, device=model.device)

    counters = state["counters"]
    expected = {name for name in COUNTERS if hasattr(model, name)}
    if set(counters) != expected:
        raise ValueError(f"its counters must be {sorted(expected)}, got {sorted(counters)}")
    for name in expected:
        setattr(model, name, type(getattr(model, name))(counters[name]))

    lstm = getattr(model, "_last_lstm_states", None)
    if lstm is not None and not partial:
        model._last_lstm_states = _restored_lstm(lstm, state["lstm_states"], model.device)

    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        if replay is None:
            raise ValueError("it has no replay buffer, which this model needs")
        restore_replay(buffer, replay)

    given = state.get("callbacks", {})
    for callback in callbacks:
        if not hasattr(callback, "set_state"):
            continue
        name = type(callback).__name__
        if name in given:
            callback.set_state(decode(given[name]))
        elif not partial:
            raise ValueError(f"it holds no state of the callback {name}")

    info = state["episode_info"]
    model.ep_info_buffer = deque(info["ep_info_buffer"], maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(info["ep_success_buffer"], maxlen=model._stats_window_size)
    if not partial:
        set_rng_state(model, state["rng"])


def _restored_lstm(fresh: Any, given: Any, device: Any) -> Any:
    """RecurrentPPO's ``RNNStates`` from the checkpoint's tensors, checked against the fresh ones."""
    pairs = []
    for name in ("pi", "vf"):
        tensors = given[name]
        current = getattr(fresh, name)
        if len(tensors) != len(current) or any(
            not isinstance(t, torch.Tensor) or t.shape != c.shape or t.dtype != c.dtype
            for t, c in zip(tensors, current, strict=False)
        ):
            raise ValueError(f"lstm_states.{name} does not fit this model's LSTM")
        pairs.append(tuple(t.to(device) for t in tensors))
    return type(fresh)(*pairs)


# --------------------------------------------------------------------------- replay buffers


def replay_arrays(buffer: Any) -> dict[str, np.ndarray]:
    """The replay buffer's filled rows (all rows once it is full), ``pos`` and ``full``, by name."""
    rows = buffer.buffer_size if buffer.full else buffer.pos
    arrays: dict[str, np.ndarray] = {"pos": np.int64(buffer.pos), "full": np.bool_(buffer.full)}
    for name, array in _buffer_arrays(buffer).items():
        arrays[name] = array[:rows]
    return arrays


def _buffer_arrays(buffer: Any) -> dict[str, np.ndarray]:
    arrays = {}
    for name in REPLAY_FIELDS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):  # DictReplayBuffer
            arrays.update({f"{name}.{key}": array for key, array in value.items()})
        elif value is not None:
            arrays[name] = value
    return arrays


def restore_replay(buffer: Any, arrays: dict[str, np.ndarray]) -> None:
    """Copy :func:`replay_arrays` into a fresh buffer of the same size and spaces.

    Raises:
        ValueError: if the arrays are not this buffer's (names, shapes, dtypes, ``pos``).
    """
    targets = _buffer_arrays(buffer)
    if set(arrays) != {*targets, "pos", "full"}:
        raise ValueError(
            f"the replay buffer must hold {sorted({*targets, 'pos', 'full'})}, got {sorted(arrays)}"
        )
    pos, full = int(arrays["pos"]), bool(arrays["full"])
    if not 0 <= pos < buffer.buffer_size:
        raise ValueError(f"replay buffer pos {pos} is outside 0..{buffer.buffer_size - 1}")
    rows = buffer.buffer_size if full else pos
    for name, target in targets.items():
        given = arrays[name]
        if given.shape != (rows, *target.shape[1:]) or given.dtype != target.dtype:
            raise ValueError(
                f"replay array {name} must be {target.dtype} of shape {(rows, *target.shape[1:])}, "
                f"got {given.dtype} of shape {given.shape}"
            )
        target[:rows] = given
    buffer.pos, buffer.full = pos, full


# --------------------------------------------------------------------------- the final model


class SpacesEnv(gym.Env):
    """A stand-in env with given spaces: lets SB3 build a model for inference without the data set."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Not an env to train on."""
        raise RuntimeError(
            "a model loaded by load_model has a stand-in env: call model.set_env(env) to train"
        )

    def step(self, action: Any) -> Any:
        """Not an env to train on."""
        raise RuntimeError(
            "a model loaded by load_model has a stand-in env: call model.set_env(env) to train"
        )


def save_policy(path: str | Path, model: Any, trainer: str) -> None:
    """Write a run's final model: the policy's parameters and the spaces (``model.pt``)."""
    header = {"trainer": trainer, "format": FORMAT, "kind": POLICY_KIND}
    spaces_data = {
        "observation": space_to_data(model.observation_space),
        "action": space_to_data(model.action_space),
    }
    write_tensors(path, {"checkpoint": header, "policy": model.policy.state_dict(), "spaces": spaces_data})


def stand_in_env(observation_space: gym.Space, action_space: gym.Space, count: int = 1) -> Any:
    """A DummyVecEnv of ``count`` :class:`SpacesEnv`: what a model for inference is built on."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: SpacesEnv(observation_space, action_space)] * count)


def load_policy(path: str | Path, trainer: str, build: Callable[[gym.Space, gym.Space], Any]) -> Any:
    """A run's final model: ``build(observation_space, action_space)``, given the parameters of ``path``.

    ``build`` makes the model as the trainer does (its ``make_model`` with the run's arguments, on
    :func:`stand_in_env`), so no data set is read.

    Raises:
        CheckpointError: the model file is missing, in an old pickle-based format (a ``model.zip``
            beside a missing ``model.pt``), written by another trainer, or does not fit the model
            that the run's arguments build.
    """
    path = Path(path)
    if not path.is_file():
        for legacy in ("model.zip", "model.pkl"):
            if (path.parent / legacy).is_file():
                raise legacy_format_error(path.parent / legacy, path.parent)
    payload = read_tensors(path)
    header = payload.get("checkpoint")
    if not isinstance(header, dict) or header.get("kind") != POLICY_KIND:
        raise CheckpointError(f"{path} is not a stable-baselines3 model of this project")
    if header.get("trainer") != trainer:
        raise CheckpointError(f"{path} was written by {header.get('trainer')}, not {trainer}")
    try:
        observation = space_from_data(payload["spaces"]["observation"])
        action = space_from_data(payload["spaces"]["action"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has no readable spaces ({error})") from None
    model = build(observation, action)
    try:
        model.policy.load_state_dict(payload["policy"], strict=True)
    except (KeyError, TypeError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{path} does not fit the model its run's args.json builds ({reason})"
        ) from None
    return model
