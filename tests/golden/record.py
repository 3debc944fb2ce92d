"""Record golden reference data of the three environments, the encoders and the ranking metrics.

Run it from the repository root (it writes ``tests/golden/*.npz`` and ``tests/golden/manifest.json``)::

    python -m tests.golden.record          # or: python tests/golden/record.py

``tests/test_golden.py`` replays exactly the same calls (the scenario functions below, with a
:class:`Checker` instead of a :class:`Recorder`) and compares every array with the stored one:
bitwise for numpy paths and for all integer and bool data, to ``TORCH_ATOL`` for floats of the
torch paths (torch may sum float64 in another order).

Only public API is called: ``gym.make``, ``gym.make_vec(..., vectorization_mode="vector_entry_point")``,
``hashing_gym.envs.encode_batch`` / ``encode_sequential``, the environments' public methods and
attributes (``set_code_bank``, ``code_bank``, ``sample_references``, ``accuracies``, ``rewards``,
``set_database_codes``, ``database_codes``, ``act``, ``teacher_actions``, ``codebook``, ...) and the
public functions of ``hashing_gym.ranking``. The internals may change; these results may not.

Layout: one ``.npz`` per group (``GROUPS``), keys ``CASE/PATH``. Each file holds its manifest as the
JSON string ``__manifest__`` (the call that built each case, the script it ran, the legend of the key
paths, and every array's dtype and shape); ``manifest.json`` collects them all for reading. Files are
written byte-for-byte reproducibly (fixed zip timestamps), so recording twice gives identical files.

History: recorded from commit fe5d3d4 (before the one-source-of-truth redesign, issue #14), which the
redesign reproduces. ``bct_single``, ``bct_vector`` and ``encode`` were then re-recorded once, on
purpose, for issue #15 (BinaryCodeTravel's margin-greedy teacher, Table 1's eta at 32 bits,
``encode_batch`` starting from random codes); in the vector cases driven by random actions only the
``expert_action`` info and ``teacher_actions`` changed, and no other group changed. Issue #18 then
gave SequentialHashBits-v0 and RankListHash-v0 an ``expert_action`` info key; it is left out of the
recording and the replay (``ADDED_INFO_KEYS``, that key only), so those files stay as they were.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import hashing_gym  # noqa: F401 (registers the environments)
from hashing_gym import ranking
from hashing_gym.data import HashingDataset, load_dataset
from hashing_gym.envs import encode_batch, encode_sequential

GOLDEN_DIR = Path(__file__).resolve().parent
MANIFEST_KEY = "__manifest__"
TORCH_ATOL = 1e-6
MAX_EPISODE_STEPS = 1000  # a replay that never ends an episode fails instead of hanging

LEGEND = {
    "CASE/episodes/...": "episodes of a single env (gym.make), one row per reset() or step(); "
    "episodes/episode numbers the episode of each row, rows without an action are the resets",
    "CASE/rollout/...": "a vector env (gym.make_vec, vector_entry_point) run: one row per reset() or step()",
    ".../obs, .../obs/KEY": "observation (dict observations: one array per key), stacked over rows",
    ".../info/KEY, .../infos/KEY": "info values, stacked over rows; nested dicts (final_obs, final_info) "
    "are flattened into KEY/SUBKEY; vector infos keep their _KEY masks as they are returned",
    ".../action, reward, terminated, truncated": "what was passed to / returned by step()",
    ".../KEY@present": "bool per row: whether KEY was returned in that row (only if some row lacks it)",
    ".../@types": "sorted 'KEY:TYPE' of the Python types returned (e.g. reward:float, info/index:int)",
    "CASE/after/...": "public state read after the run (code_bank, database_codes)",
    "float data": "float64/float32 exactly as produced; torch cases (atol > 0) compare floats to atol",
}

# ---------------------------------------------------------------------------------------------------
# Data sets: small, cheap, and one multi-label


DATASET_OPTIONS: dict[str, dict[str, Any]] = {
    "blobs": {"seed": 0, "num_classes": 4, "n_per_class": 30, "dim": 8, "query_per_class": 5},
    "blobs_multi": {
        "seed": 1,
        "num_classes": 5,
        "n_per_class": 24,
        "dim": 8,
        "multi_label": True,
        "query_per_class": 4,
    },
}
DATASET_CALLS = {
    name: "load_dataset('blobs', " + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"
    for name, options in DATASET_OPTIONS.items()
} | {"digits": "'digits' (the env loads load_dataset('digits') itself, by name)"}


@functools.cache
def dataset(name: str) -> HashingDataset | str:
    """A data set of ``DATASET_OPTIONS`` (loaded once), or the name ``"digits"`` for the envs to load."""
    if name == "digits":
        return "digits"
    return load_dataset("blobs", **DATASET_OPTIONS[name])


def describe(value: Any) -> str:
    """``repr`` for the manifest: data sets by name, arrays as lists, torch devices as calls."""
    if isinstance(value, HashingDataset):
        for name in DATASET_OPTIONS:
            if dataset(name) is value:
                return f"DATASETS[{name!r}]"
    if isinstance(value, np.ndarray):
        return f"np.array({value.tolist()!r}, dtype=np.{value.dtype})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if type(value).__module__ == "torch" and type(value).__name__ == "device":
        return f"torch.device({str(value)!r})"
    return repr(value)


def call_text(function: str, *args: Any, **kwargs: Any) -> str:
    """The text of a call, e.g. ``gym.make('RankListHash-v0', bits=16)``."""
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{function}({', '.join(parts)})"


# ---------------------------------------------------------------------------------------------------
# Arrays, comparison, and the two sinks


def as_array(value: Any) -> np.ndarray:
    """A numpy copy of a result: tensors moved to the host, Python scalars as 0-d arrays."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.array(value)
    if array.dtype == object:
        raise TypeError(f"cannot record a value of type {type(value).__name__}: {value!r}")
    return array


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and tuples) as one flat dict with ``a/b`` keys; leaves are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}/"))
        elif isinstance(value, tuple):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{path}/"))
        else:
            flat[path] = value
    return flat


def compare(key: str, got: np.ndarray, expected: np.ndarray, atol: float = 0.0) -> str | None:
    """None if ``got`` matches ``expected``, else what differs.

    Dtype and shape must be equal; values bitwise (``np.testing.assert_array_equal``), except float
    arrays when ``atol > 0`` (the torch cases): ``|got - expected| <= atol``.
    """
    if got.dtype != expected.dtype:
        return f"{key}: dtype {got.dtype} != recorded {expected.dtype}"
    if got.shape != expected.shape:
        return f"{key}: shape {got.shape} != recorded {expected.shape}"
    try:
        if atol and np.issubdtype(got.dtype, np.floating):
            np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=key)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=key, strict=True)
    except AssertionError as err:
        return f"{key}: {err}"
    return None


class Sink:
    """Where the scenarios put their results, case by case (``Recorder`` keeps, ``Checker`` compares)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.cases: dict[str, dict[str, Any]] = {}
        self._prefix: str | None = None
        self._atol = 0.0

    @contextlib.contextmanager
    def case(self, name: str, *, call: str, script: str = "", atol: float = 0.0) -> Iterator[Sink]:
        if name in self.cases:
            raise ValueError(f"case {name!r} appears twice in group {self.group!r}")
        self.cases[name] = {"call": call, "script": script, "atol": atol}
        self._prefix, self._atol = name, atol
        try:
            yield self
        finally:
            self._prefix, self._atol = None, 0.0

    def put(self, key: str, value: Any) -> None:
        if self._prefix is None:
            raise RuntimeError("put() outside of a case")
        self.receive(f"{self._prefix}/{key}", as_array(value), self._atol)

    def receive(self, key: str, array: np.ndarray, atol: float) -> None:
        raise NotImplementedError


class Recorder(Sink):
    """Keeps every array; :meth:`save` writes them with the manifest."""

    def __init__(self, group: str) -> None:
        super().__init__(group)
        self.arrays: dict[str, np.ndarray] = {}

    def receive(self, key: str, array: np.ndarray, atol: float) -> None:
        if key in self.arrays:
            raise ValueError(f"{key} recorded twice")
        self.arrays[key] = array

    def manifest(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "about": GROUPS[self.group].__doc__.strip(),
            "datasets": DATASET_CALLS,
            "legend": LEGEND,
            "cases": self.cases,
            "arrays": {key: f"{a.dtype}{list(a.shape)}" for key, a in self.arrays.items()},
        }

    def save(self, path: Path) -> None:
        manifest = json.dumps(self.manifest(), indent=1, sort_keys=True)
        save_npz(path, {MANIFEST_KEY: np.array(manifest), **self.arrays})


class Checker(Sink):
    """Compares every array with the recorded one; :meth:`finish` raises listing all differences."""

    def __init__(self, group: str, expected: dict[str, np.ndarray], manifest: dict[str, Any]) -> None:
        super().__init__(group)
        self.expected = expected
        self.recorded_manifest = manifest
        self.failures: list[str] = []
        self.seen: set[str] = set()

    def receive(self, key: str, array: np.ndarray, atol: float) -> None:
        if key in self.seen:
            self.failures.append(f"{key}: produced twice")
            return
        self.seen.add(key)
        if key not in self.expected:
            self.failures.append(f"{key}: not recorded (new result, dtype {array.dtype} shape {array.shape})")
            return
        problem = compare(key, array, self.expected[key], atol)
        if problem:
            self.failures.append(problem)

    def finish(self) -> None:
        failures = list(self.failures)
        missing = sorted(set(self.expected) - self.seen)
        failures += [f"{key}: recorded but not produced by the replay" for key in missing]
        recorded_cases = self.recorded_manifest.get("cases", {})
        replayed_cases = json.loads(json.dumps(self.cases))
        if recorded_cases != replayed_cases:
            changed = sorted(
                name
                for name in set(recorded_cases) | set(replayed_cases)
                if recorded_cases.get(name) != replayed_cases.get(name)
            )
            failures.append(f"the replayed calls differ from the recorded ones (re-record?): cases {changed}")
        if failures:
            shown = "\n".join(failures[:40])
            more = f"\n... and {len(failures) - 40} more" if len(failures) > 40 else ""
            raise AssertionError(f"group {self.group!r}: {len(failures)} difference(s)\n{shown}{more}")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps: the same arrays give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(array), allow_pickle=False)
            archive.writestr(info, data.getvalue())
    path.write_bytes(buffer.getvalue())


def load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of a golden file and its manifest."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    manifest = json.loads(str(arrays.pop(MANIFEST_KEY)))
    return arrays, manifest


# ---------------------------------------------------------------------------------------------------
# Trajectories


class Rows:
    """Results row by row (a reset or a step each); :meth:`emit` stacks every key over the rows."""

    def __init__(self) -> None:
        self.rows: list[dict[str, tuple[str, np.ndarray]]] = []

    def add(self, **values: Any) -> None:
        """Snapshot the values now (copies: a later step must not change what this one returned)."""
        self.rows.append({key: (type(v).__name__, as_array(v)) for key, v in flatten(values).items()})

    def emit(self, sink: Sink, prefix: str, concat: bool = False) -> None:
        """One array per key: the rows' values stacked (or, with ``concat``, concatenated on axis 0)."""
        keys = sorted({key for row in self.rows for key in row})
        types = set()
        for key in keys:
            present = np.array([key in row for row in self.rows])
            types |= {f"{key}:{row[key][0]}" for row in self.rows if key in row}
            arrays = [row[key][1] for row in self.rows if key in row]
            kinds = {(a.dtype.str, a.shape[1:] if concat else a.shape) for a in arrays}
            if len(kinds) != 1:
                raise ValueError(f"{prefix}/{key}: dtype or shape changes between rows: {sorted(kinds)}")
            sink.put(f"{prefix}/{key}", np.concatenate(arrays) if concat else np.stack(arrays))
            if not present.all():
                sink.put(f"{prefix}/{key}@present", present)
        sink.put(f"{prefix}/@types", np.array(sorted(types)))


Policy = Callable[[np.random.Generator, Any, dict[str, Any]], Any]

# Info keys added to an env after its golden files were recorded (a deliberate change), left out of
# what is recorded and replayed: these and nothing else, per env id. Issue 18 gave SequentialHashBits-v0
# and RankListHash-v0 an expert (``expert_action``, single and vector: the key, its ``_key`` mask and
# its entry in ``final_info``); every other value of those envs is replayed as recorded.
ADDED_INFO_KEYS: dict[str, tuple[str, ...]] = {
    "SequentialHashBits-v0": ("expert_action",),
    "RankListHash-v0": ("expert_action",),
}


def without_added(infos: dict[str, Any], env_id: str | None) -> dict[str, Any]:
    """``infos`` without the keys of :data:`ADDED_INFO_KEYS` for ``env_id`` (and their masks, nested too)."""
    added = ADDED_INFO_KEYS.get(env_id or "", ())
    if not added:
        return infos
    dropped = {*added, *(f"_{key}" for key in added)}
    return {
        key: without_added(value, env_id) if isinstance(value, dict) and key == "final_info" else value
        for key, value in infos.items()
        if key not in dropped
    }


def play_episodes(sink: Sink, env: gym.Env, episodes: list[tuple[dict[str, Any], Policy]], seed: int) -> None:
    """Each episode: ``env.reset(**kwargs)``, then the policy's actions until it ends.

    Actions come from the policy with a generator ``np.random.default_rng(seed)`` shared by the episodes.
    All rows go to ``episodes/...``, with ``episodes/episode`` numbering the episode of each row.
    """
    rng = np.random.default_rng(seed)
    rows = Rows()
    env_id = env.spec.id if env.spec is not None else None
    for e, (reset_kwargs, policy) in enumerate(episodes):
        obs, info = env.reset(**reset_kwargs)
        rows.add(episode=e, obs=obs, info=without_added(info, env_id))
        for _ in range(MAX_EPISODE_STEPS):
            action = policy(rng, obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            rows.add(
                episode=e,
                action=action,
                obs=obs,
                reward=reward,
                terminated=terminated,
                truncated=truncated,
                info=without_added(info, env_id),
            )
            if terminated or truncated:
                break
        else:
            raise AssertionError(f"episode {e} did not end within {MAX_EPISODE_STEPS} steps")
    rows.emit(sink, "episodes")


def episodes_text(episodes: list[tuple[dict[str, Any], Policy]], seed: int) -> str:
    parts = [f"{call_text('env.reset', **kw)} then {policy.__name__}" for kw, policy in episodes]
    return f"actions from np.random.default_rng({seed}); episodes: " + "; ".join(parts)


def play_vector(
    sink: Sink,
    envs: Any,
    script: list[tuple[str, Any]],
    policy: Policy,
    seed: int,
    extra: Callable[[Any], dict[str, Any]] | None = None,
    normalize: Callable[[Any, Any, Any, bool], Any] | None = None,
    env_id: str | None = None,
) -> None:
    """Run ``script`` (``("reset", kwargs)`` or ``("steps", count)``) on a vector env; one ``rollout``.

    ``extra(envs)`` adds public state read after every step (e.g. ``teacher_actions()``).
    ``normalize(previous_infos, obs, infos, stepped)`` maps the infos to the recorded format.
    ``env_id`` names the env's :data:`ADDED_INFO_KEYS`, which are not recorded.
    """
    rng = np.random.default_rng(seed)
    rows = Rows()
    obs = infos = None
    for kind, arg in script:
        if kind == "reset":
            obs, new_infos = envs.reset(**arg)
            infos = normalize(infos, obs, new_infos, False) if normalize else new_infos
            rows.add(obs=obs, infos=without_added(infos, env_id))
            continue
        for _ in range(arg):
            actions = policy(rng, obs, infos)
            obs, rewards, terminations, truncations, new_infos = envs.step(actions)
            infos = normalize(infos, obs, new_infos, True) if normalize else new_infos
            more = extra(envs) if extra else {}
            rows.add(
                action=actions,
                obs=obs,
                reward=rewards,
                terminated=terminations,
                truncated=truncations,
                infos=without_added(infos, env_id),
                **more,
            )
    rows.emit(sink, "rollout")


def script_text(script: list[tuple[str, Any]], seed: int, policy: Policy) -> str:
    parts = [call_text("envs.reset", **a) if k == "reset" else f"{a} x envs.step" for k, a in script]
    return f"actions: {policy.__name__} with np.random.default_rng({seed}); " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Policies (actions are drawn from the generator passed in, never from the env)


def flip_or_stop(rng: np.random.Generator, obs: Any, info: dict[str, Any]) -> int:
    """BinaryCodeTravel (dict obs): stop with probability 0.08, else flip a uniform bit (a Python int)."""
    bits = len(obs["code"])
    return bits if rng.random() < 0.08 else int(rng.integers(bits))


def expert(rng: np.random.Generator, obs: Any, info: dict[str, Any]) -> Any:
    """BinaryCodeTravel's teacher: ``info["expert_action"]`` (an int, or the vector env's array/tensor)."""
    return info["expert_action"]


def binary(size: int) -> Policy:
    def random_bits(rng: np.random.Generator, obs: Any, info: dict[str, Any]) -> np.ndarray:
        return rng.integers(0, 2, size=size, dtype=np.int8)

    random_bits.__name__ = f"random_bits(size={size}, int8)"
    return random_bits


def flat_flip_or_stop(bits: int) -> Policy:
    def flip_or_stop_flat(rng: np.random.Generator, obs: Any, info: dict[str, Any]) -> int:
        return bits if rng.random() < 0.08 else int(rng.integers(bits))

    flip_or_stop_flat.__name__ = f"flip_or_stop(bits={bits})"
    return flip_or_stop_flat


def vector_flips(num_envs: int, bits: int, as_torch: bool) -> Policy:
    def vector_flip_or_stop(rng: np.random.Generator, obs: Any, infos: dict[str, Any]) -> Any:
        actions = np.where(rng.random(num_envs) < 0.08, bits, rng.integers(0, bits, size=num_envs))
        return to_torch(actions) if as_torch else actions

    vector_flip_or_stop.__name__ = "vector_flip_or_stop (int64; torch tensor on torch)"
    return vector_flip_or_stop


def vector_bits(shape: tuple[int, int], as_torch: bool) -> Policy:
    def vector_random_bits(rng: np.random.Generator, obs: Any, infos: dict[str, Any]) -> Any:
        actions = rng.integers(0, 2, size=shape, dtype=np.uint8)
        return to_torch(actions) if as_torch else actions

    vector_random_bits.__name__ = f"random_bits(shape={shape}, uint8; torch tensor on torch)"
    return vector_random_bits


def to_torch(array: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(array)


def torch_cpu() -> Any:
    import torch

    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------
# Groups: each function replays its calls into a sink


def group_datasets(sink: Sink) -> None:
    """The small data sets every other group uses (to tell a data change from an env change)."""
    for name in DATASET_OPTIONS:
        ds = dataset(name)
        with sink.case(f"data/{name}", call=DATASET_CALLS[name]):
            for split in ("train", "query", "database"):
                sink.put(f"{split}/features", getattr(ds, split).features)
                sink.put(f"{split}/labels", getattr(ds, split).labels)
            sink.put("num_classes", ds.num_classes)
            sink.put("train_is_database", ds.train is ds.database)


BCT_EPISODES: list[tuple[dict[str, Any], Policy]] = [
    ({"seed": 3}, flip_or_stop),
    ({}, flip_or_stop),
    ({"options": {"index": 7}}, expert),
    ({"seed": 4, "options": {"index": 0}}, flip_or_stop),
    ({}, expert),
    ({}, flip_or_stop),
]


def group_bct_single(sink: Sink) -> None:
    """BinaryCodeTravel-v0, single env (gym.make): episodes of random flips and of the expert."""
    cases = [
        ("blobs_b16_random", {"dataset": dataset("blobs"), "bits": 16}, BCT_EPISODES),
        ("blobs_b16_zeros", {"dataset": dataset("blobs"), "bits": 16, "init": "zeros"}, BCT_EPISODES),
        ("multi_b16_random", {"dataset": dataset("blobs_multi"), "bits": 16}, BCT_EPISODES),
        ("multi_b16_zeros", {"dataset": dataset("blobs_multi"), "bits": 16, "init": "zeros"}, BCT_EPISODES),
        (
            "blobs_hadamard_flat",
            {
                "dataset": dataset("blobs"),
                "bits": 8,
                "split": "query",
                "codebook": "hadamard",
                "eta": 1,
                "sigma": 2.0,
                "max_steps": 6,
                "history": 3,
                "flatten": True,
                "seed": 5,
            },
            [
                ({"seed": 1}, flat_flip_or_stop(8)),
                ({}, flat_flip_or_stop(8)),
                ({"options": {"index": 3}}, expert),
            ],
        ),
        (
            "digits_b16_query",
            {"split": "query"},
            [({"seed": 0}, expert), ({}, flip_or_stop), ({"options": {"index": 299}}, expert)],
        ),
    ]
    for name, kwargs, episodes in cases:
        call = call_text("gym.make", "BinaryCodeTravel-v0", **kwargs)
        with sink.case(name, call=call, script=episodes_text(episodes, 100)):
            env = gym.make("BinaryCodeTravel-v0", **kwargs)
            play_episodes(sink, env, episodes, seed=100)
            sink.put("after/codebook", env.unwrapped.codebook)
            sink.put("after/eta", env.unwrapped.eta)
            sink.put("after/radius", env.unwrapped.radius)
            sink.put("after/terminate_action", env.unwrapped.terminate_action)


SHB_RESETS = [{"seed": 3}, {}, {"options": {"index": 5}}, {"seed": 4, "options": {"index": 0}}, {}]


def group_shb_single(sink: Sink) -> None:
    """SequentialHashBits-v0, single env: episodes of random bits; the code bank API."""
    cases = [
        ("blobs_b8_g1", {"dataset": dataset("blobs"), "bits": 8, "group": 1}, 1),
        ("blobs_b16_g4", {"dataset": dataset("blobs"), "bits": 16, "group": 4}, 4),
        ("multi_b16_g4_p8", {"dataset": dataset("blobs_multi"), "bits": 16, "group": 4, "pairs": 8}, 4),
        (
            "blobs_b12_g2_margin1.5",
            {"dataset": dataset("blobs"), "bits": 12, "group": 2, "pairs": 6, "margin": 1.5},
            2,
        ),
        (
            "blobs_b12_g2_margin2",
            {"dataset": dataset("blobs"), "bits": 12, "group": 2, "pairs": 6, "margin": 2.0},
            2,
        ),
        ("multi_b8_g2_margin1", {"dataset": dataset("blobs_multi"), "bits": 8, "group": 2, "margin": 1.0}, 2),
        (
            "blobs_b8_g2_flat_query",
            {"dataset": dataset("blobs"), "bits": 8, "group": 2, "flatten": True, "split": "query"},
            2,
        ),
        ("digits_b16_g4", {"group": 4}, 4),
    ]
    for name, kwargs, group in cases:
        episodes = [(kw, binary(group)) for kw in SHB_RESETS]
        if name.startswith("digits"):
            episodes = episodes[:3]
        call = call_text("gym.make", "SequentialHashBits-v0", **kwargs)
        with sink.case(name, call=call, script=episodes_text(episodes, 200)):
            env = gym.make("SequentialHashBits-v0", **kwargs)
            play_episodes(sink, env, episodes, seed=200)
            sink.put("after/code_bank", env.unwrapped.code_bank)

    for name in ("blobs", "blobs_multi"):
        kwargs = {"dataset": dataset(name), "bits": 8, "group": 2, "pairs": 4}
        script = (
            "env.reset(seed=9); read code_bank; set_code_bank(rng.integers(0, 2, (N, 8))) with "
            "rng=np.random.default_rng(300); sample_references(np.arange(0, N, 7)); codes = "
            "rng.integers(0, 2, (len(indices), 8)); accuracies and rewards of codes (and of codes with "
            "bits 4.. zeroed); then 2 episodes env.reset() and env.reset(options={'index': 2}) of "
            "random_bits(size=2) from np.random.default_rng(301); read code_bank"
        )
        call = call_text("gym.make", "SequentialHashBits-v0", **kwargs)
        with sink.case(f"api_{name}", call=call, script=script):
            env = gym.make("SequentialHashBits-v0", **kwargs)
            u = env.unwrapped
            rng = np.random.default_rng(300)
            env.reset(seed=9)
            sink.put("seeded_bank", u.code_bank)
            u.set_code_bank(rng.integers(0, 2, size=(u.num_items, 8)))
            sink.put("set_bank", u.code_bank)
            indices = np.arange(0, u.num_items, 7)
            positives, negatives = u.sample_references(indices)
            sink.put("positives", positives)
            sink.put("negatives", negatives)
            codes = rng.integers(0, 2, size=(len(indices), 8))
            sink.put("codes", codes)
            sink.put("accuracies", u.accuracies(codes, positives, negatives))
            sink.put("rewards", u.rewards(codes, positives, negatives))
            partial = codes.copy()
            partial[:, 4:] = 0
            sink.put("accuracies_partial", u.accuracies(partial, positives, negatives))
            episodes = [({}, binary(2)), ({"options": {"index": 2}}, binary(2))]
            play_episodes(sink, env, episodes, seed=301)
            sink.put("after/code_bank", u.code_bank)


RLH_RESETS = [
    {"seed": 3},
    {},
    {"options": {"index": 5}},
    {},
    {"seed": 4, "options": {"index": 0}},
    {},
    {},
    {"options": {"index": 5}},
]


def group_rlh_single(sink: Sink) -> None:
    """RankListHash-v0, single env: one-step episodes of random codes; the database API."""
    blobs, multi = dataset("blobs"), dataset("blobs_multi")
    cases = [
        ("blobs_average", {"dataset": blobs, "bits": 16}),
        ("blobs_stable", {"dataset": blobs, "bits": 16, "ties": "stable"}),
        ("blobs_average_top10", {"dataset": blobs, "bits": 16, "topk": 10}),
        ("blobs_stable_top10", {"dataset": blobs, "bits": 16, "ties": "stable", "topk": 10}),
        ("blobs_fixed_b8", {"dataset": blobs, "bits": 8, "database": "fixed"}),
        ("blobs_query_b8_stable", {"dataset": blobs, "bits": 8, "split": "query", "ties": "stable"}),
        ("multi_average", {"dataset": multi, "bits": 16}),
        ("multi_stable_top10", {"dataset": multi, "bits": 16, "ties": "stable", "topk": 10}),
        ("multi_average_top10_b70", {"dataset": multi, "bits": 70, "topk": 10}),
        ("digits_average", {}),
        ("digits_stable", {"ties": "stable"}),
    ]
    for name, kwargs in cases:
        bits = kwargs.get("bits", 16)
        episodes = [(kw, binary(bits)) for kw in RLH_RESETS]
        if name.startswith("digits"):
            episodes = episodes[:3]
        call = call_text("gym.make", "RankListHash-v0", **kwargs)
        with sink.case(name, call=call, script=episodes_text(episodes, 400)):
            env = gym.make("RankListHash-v0", **kwargs)
            play_episodes(sink, env, episodes, seed=400)
            sink.put("after/database_codes", env.unwrapped.database_codes)

    for name in ("blobs", "blobs_multi"):
        for ties in ("average", "stable"):
            kwargs = {"dataset": dataset(name), "bits": 12, "ties": ties}
            script = (
                "env.reset(seed=8); read database_codes; set_database_codes(rng.integers(0, 2, (N, 12)"
                ").astype(bool)) with rng=np.random.default_rng(500); indices = [0, 3, 3, 17, N-1, 3]; "
                "codes = rng.integers(0, 2, (6, 12)); rewards(indices, codes); act(indices, codes); "
                "rewards again; then 3 episodes env.reset(), reset(options={'index': 3}), reset() of "
                "random_bits(size=12) from np.random.default_rng(501); read database_codes"
            )
            call = call_text("gym.make", "RankListHash-v0", **kwargs)
            with sink.case(f"api_{name}_{ties}", call=call, script=script):
                env = gym.make("RankListHash-v0", **kwargs)
                u = env.unwrapped
                rng = np.random.default_rng(500)
                env.reset(seed=8)
                sink.put("seeded_database", u.database_codes)
                u.set_database_codes(rng.integers(0, 2, size=(u.num_items, 12)).astype(bool))
                sink.put("set_database", u.database_codes)
                indices = np.array([0, 3, 3, 17, u.num_items - 1, 3])
                codes = rng.integers(0, 2, size=(len(indices), 12))
                sink.put("codes", codes)
                sink.put("rewards_before", u.rewards(indices, codes))
                sink.put("act", u.act(indices, codes))
                sink.put("database_after_act", u.database_codes)
                sink.put("rewards_after", u.rewards(indices, codes))
                episodes = [({}, binary(12)), ({"options": {"index": 3}}, binary(12)), ({}, binary(12))]
                play_episodes(sink, env, episodes, seed=501)
                sink.put("after/database_codes", u.database_codes)


# ---------------------------------------------------------------------------------------------------
# Vector envs

NUM_ENVS = 4
# numpy: device="cpu"; torch: device=torch.device("cpu"), which runs the torch code on the CPU.
BACKEND_CHOICES = ("numpy", "torch")
MODES = ("NEXT_STEP", "SAME_STEP")


def vector_kwargs(backend: str, rng: str, mode: str) -> dict[str, Any]:
    device = torch_cpu() if backend == "torch" else "cpu"
    return {"device": device, "rng": rng, "autoreset_mode": mode}


def vector_script(
    steps: tuple[int, int, int], rng: str, reseed_list: list[int | None] | None = None
) -> list[tuple[str, Any]]:
    """Seeded reset, steps, reset to fixed items, steps, reseed of some sub-envs (masked reset), steps.

    The masked reseed passes ``reseed_list`` with ``rng="per_env"`` (default ``[7, None, 9, None]``: None
    keeps that sub-env's stream), the int 7 with ``rng="batched"``.
    """
    reseed = (reseed_list or [7, None, 9, None]) if rng == "per_env" else 7
    return [
        ("reset", {"seed": 5}),
        ("steps", steps[0]),
        ("reset", {"options": {"index": np.array([3, 50, 99, 0])}}),
        ("steps", steps[1]),
        ("reset", {"seed": reseed, "options": {"reset_mask": np.array([True, False, True, True])}}),
        ("steps", steps[2]),
    ]


def vector_combinations() -> Iterator[tuple[str, str, str]]:
    for backend in BACKEND_CHOICES:
        for rng in ("batched", "per_env"):
            for mode in MODES:
                yield backend, rng, mode


def run_vector_case(
    sink: Sink,
    name: str,
    env_id: str,
    kwargs: dict[str, Any],
    backend: str,
    script: list[tuple[str, Any]],
    policy: Policy,
    seed: int,
    extra: Callable[[Any], dict[str, Any]] | None = None,
    after: Callable[[Sink, Any], None] | None = None,
    before: Callable[[Sink, Any], None] | None = None,
    normalize: Callable[[Any, Any, Any, bool], Any] | None = None,
) -> None:
    call = call_text(
        "gym.make_vec", env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", **kwargs
    )
    text = script_text(script, seed, policy)
    if before is not None:
        text = f"{before.__doc__.strip()}; then {text}"
    atol = TORCH_ATOL if backend == "torch" else 0.0
    with sink.case(name, call=call, script=text, atol=atol):
        envs = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", **kwargs)
        if before is not None:
            before(sink, envs)
        play_vector(sink, envs, script, policy, seed, extra, normalize, env_id)
        if after is not None:
            after(sink, envs)
        envs.close()


# BinaryCodeTravelVectorEnv rebuilds every sub-env's generator from a seed list (a None entry: fresh
# entropy, even for sub-envs outside reset_mask), so its list holds ints only, to stay reproducible.
BCT_RESEED = [7, 8, 9, 10]


BCT_INFO_KEYS = ("index", "d_pos", "d_neg", "expert_action")


def bct_infos_as_recorded(mode: str) -> Callable[[Any, Any, Any, bool], dict[str, Any]]:
    """``normalize`` for play_vector: see :func:`bct_infos_in_old_format`."""
    return lambda previous, obs, infos, stepped: bct_infos_in_old_format(
        previous, obs, infos, stepped and mode == "SAME_STEP"
    )


def bct_infos_in_old_format(previous: Any, obs: Any, infos: dict[str, Any], final: bool) -> dict[str, Any]:
    """BinaryCodeTravelVectorEnv's infos in the format recorded before it derived from HashingVectorEnv.

    Since issue 14 its infos follow SyncVectorEnv's convention (as the other vector envs'): a
    ``"_key"`` mask per key, values only for the sub-envs a masked reset restarted, and in SAME_STEP
    mode ``final_obs``/``final_info`` (masked) only in steps where some sub-env ended. Before, every
    sub-env reported every key and SAME_STEP steps always held ``final_obs``/``final_info`` for all
    sub-envs. The old format follows from the new results: a sub-env outside a reset's mask did not
    move since its last info, and a sub-env that did not end has its final obs/info in ``obs``/``infos``.
    """

    def copy(value: Any) -> Any:
        return value.clone() if hasattr(value, "clone") else value.copy()

    def put(target: Any, rows: np.ndarray, source: Any) -> None:
        if hasattr(target, "clone"):
            import torch

            rows = torch.as_tensor(rows)
        target[rows] = source[rows]

    carried = as_array(infos["_index"])
    out = {key: copy(infos[key]) for key in BCT_INFO_KEYS}
    if not carried.all():
        for key in BCT_INFO_KEYS:
            put(out[key], ~carried, previous[key])
    if final:  # a step in SAME_STEP mode
        ended = as_array(infos["_final_obs"]) if "_final_obs" in infos else np.zeros(len(carried), dtype=bool)
        final_obs = {key: copy(value) for key, value in obs.items()} if isinstance(obs, dict) else copy(obs)
        final_info = {key: copy(value) for key, value in out.items()}
        if ended.any():
            if isinstance(obs, dict):
                for key in obs:
                    put(final_obs[key], ended, infos["final_obs"][key])
            else:
                put(final_obs, ended, infos["final_obs"])
            for key in BCT_INFO_KEYS:
                put(final_info[key], ended, infos["final_info"][key])
        mask = infos["_final_obs"] if "_final_obs" in infos else carried & False
        if hasattr(infos["_index"], "clone") and not hasattr(mask, "clone"):
            import torch

            mask = torch.as_tensor(mask)
        out.update(final_obs=final_obs, final_info=final_info, _final_obs=copy(mask), _final_info=copy(mask))
    return out


def teacher(envs: Any) -> dict[str, Any]:
    return {"teacher_actions": envs.teacher_actions()}


def group_bct_vector(sink: Sink) -> None:
    """BinaryCodeTravel-v0 vector env: numpy and torch-on-CPU, both rng modes, both autoreset modes."""
    blobs, multi = dataset("blobs"), dataset("blobs_multi")
    for backend, rng, mode in vector_combinations():
        kwargs = {"dataset": blobs, "bits": 16, **vector_kwargs(backend, rng, mode)}
        policy = vector_flips(NUM_ENVS, 16, backend == "torch")
        script = vector_script((25, 12, 12), rng, BCT_RESEED)
        run_vector_case(
            sink,
            f"{backend}_{rng}_{mode}",
            "BinaryCodeTravel-v0",
            kwargs,
            backend,
            script,
            policy,
            seed=600,
            extra=teacher,
            normalize=bct_infos_as_recorded(mode),
        )
    # The expert drives: multi-label data, start codes of zeros and random.
    for backend, rng, mode, init in (
        ("numpy", "batched", "NEXT_STEP", "zeros"),
        ("numpy", "per_env", "SAME_STEP", "random"),
        ("torch", "per_env", "NEXT_STEP", "zeros"),
        ("torch", "batched", "SAME_STEP", "random"),
    ):
        kwargs = {"dataset": multi, "bits": 16, "init": init, **vector_kwargs(backend, rng, mode)}
        script = vector_script((30, 10, 10), rng, BCT_RESEED)
        run_vector_case(
            sink,
            f"expert_multi_{init}_{backend}_{rng}_{mode}",
            "BinaryCodeTravel-v0",
            kwargs,
            backend,
            script,
            expert,
            seed=601,
            extra=teacher,
            normalize=bct_infos_as_recorded(mode),
        )
    # Flat observations, other codebook and limits.
    for backend in BACKEND_CHOICES:
        kwargs = {
            "dataset": blobs,
            "bits": 8,
            "codebook": "hadamard",
            "eta": 1,
            "sigma": 2.0,
            "max_steps": 6,
            "history": 3,
            "flatten": True,
            "seed": 5,
            **vector_kwargs(backend, "per_env", "SAME_STEP"),
        }
        script = vector_script((15, 6, 6), "per_env", BCT_RESEED)
        run_vector_case(
            sink,
            f"hadamard_flat_{backend}",
            "BinaryCodeTravel-v0",
            kwargs,
            backend,
            script,
            vector_flips(NUM_ENVS, 8, backend == "torch"),
            seed=602,
            normalize=bct_infos_as_recorded("SAME_STEP"),
        )


def read_code_bank(sink: Sink, envs: Any) -> None:
    sink.put("after/code_bank", envs.code_bank)


def set_code_bank(sink: Sink, envs: Any) -> None:
    """envs.reset(seed=1); envs.set_code_bank(np.random.default_rng(700).integers(0, 2, (N, bits)))"""
    envs.reset(seed=1)
    envs.set_code_bank(np.random.default_rng(700).integers(0, 2, size=(envs.num_items, envs.bits)))


def shb_final_keys_as_recorded(
    previous: Any, obs: Any, infos: dict[str, Any], stepped: bool
) -> dict[str, Any]:
    """SequentialHashBitsVectorEnv's SAME_STEP infos on torch with rng="batched" in the recorded format.

    Its masked step (since issue 17) reads nothing back from the device, so ``final_obs`` and
    ``final_info`` are in every step's infos, their masks all False where no sub-env ended (as
    BinaryCodeTravel's on torch); the recording has them only in steps where some sub-env ended.
    Every value is replayed as recorded.
    """
    if "_final_obs" in infos and not as_array(infos["_final_obs"]).any():
        finals = ("final_obs", "_final_obs", "final_info", "_final_info")
        return {key: value for key, value in infos.items() if key not in finals}
    return infos


def group_shb_vector(sink: Sink) -> None:
    """SequentialHashBits-v0 vector env: numpy and torch-on-CPU, both rng modes, both autoreset modes."""
    blobs, multi = dataset("blobs"), dataset("blobs_multi")
    for backend, rng, mode in vector_combinations():
        kwargs = {"dataset": blobs, "bits": 8, "group": 2, "pairs": 6, **vector_kwargs(backend, rng, mode)}
        policy = vector_bits((NUM_ENVS, 2), backend == "torch")
        script = vector_script((10, 5, 6), rng)
        run_vector_case(
            sink,
            f"{backend}_{rng}_{mode}",
            "SequentialHashBits-v0",
            kwargs,
            backend,
            script,
            policy,
            seed=700,
            after=read_code_bank,
            normalize=shb_final_keys_as_recorded if (backend, rng) == ("torch", "batched") else None,
        )
    for backend, rng, mode in (
        ("numpy", "batched", "SAME_STEP"),
        ("numpy", "per_env", "NEXT_STEP"),
        ("torch", "batched", "NEXT_STEP"),
        ("torch", "per_env", "SAME_STEP"),
    ):
        kwargs = {
            "dataset": multi,
            "bits": 16,
            "group": 4,
            "margin": 1.0,
            **vector_kwargs(backend, rng, mode),
        }
        policy = vector_bits((NUM_ENVS, 4), backend == "torch")
        script = vector_script((9, 4, 5), rng)
        run_vector_case(
            sink,
            f"multi_g4_margin1_{backend}_{rng}_{mode}",
            "SequentialHashBits-v0",
            kwargs,
            backend,
            script,
            policy,
            seed=701,
            after=read_code_bank,
        )
    for backend in BACKEND_CHOICES:
        kwargs = {
            "dataset": blobs,
            "bits": 8,
            "group": 1,
            "margin": 1.5,
            "flatten": True,
            **vector_kwargs(backend, "batched", "NEXT_STEP"),
        }
        policy = vector_bits((NUM_ENVS, 1), backend == "torch")
        script = [("steps", 12), ("reset", {"options": {"index": np.array([1, 2, 3, 4])}}), ("steps", 9)]
        run_vector_case(
            sink,
            f"set_bank_flat_margin1.5_{backend}",
            "SequentialHashBits-v0",
            kwargs,
            backend,
            script,
            policy,
            seed=702,
            after=read_code_bank,
            before=set_code_bank,
        )


def read_database(sink: Sink, envs: Any) -> None:
    sink.put("after/database_codes", envs.database_codes)


def set_database(sink: Sink, envs: Any) -> None:
    """envs.reset(seed=2); envs.set_database_codes(np.random.default_rng(800).integers(0, 2, (4, N, bits)))"""
    envs.reset(seed=2)
    codes = np.random.default_rng(800).integers(0, 2, size=(NUM_ENVS, envs.num_items, envs.bits))
    envs.set_database_codes(codes)


def group_rlh_vector(sink: Sink) -> None:
    """RankListHash-v0 vector env: numpy and torch-on-CPU, both rng modes, both autoreset modes."""
    blobs, multi = dataset("blobs"), dataset("blobs_multi")
    for backend, rng, mode in vector_combinations():
        kwargs = {"dataset": blobs, "bits": 16, **vector_kwargs(backend, rng, mode)}
        policy = vector_bits((NUM_ENVS, 16), backend == "torch")
        script = vector_script((5, 3, 3), rng)
        run_vector_case(
            sink,
            f"{backend}_{rng}_{mode}",
            "RankListHash-v0",
            kwargs,
            backend,
            script,
            policy,
            seed=800,
            after=read_database,
        )
    variants = [
        ("stable_top10", {"dataset": blobs, "bits": 16, "ties": "stable", "topk": 10}),
        ("average_top10", {"dataset": blobs, "bits": 16, "topk": 10}),
        ("multi_average", {"dataset": multi, "bits": 16}),
        ("multi_stable", {"dataset": multi, "bits": 16, "ties": "stable"}),
        ("fixed_b40", {"dataset": blobs, "bits": 40, "database": "fixed"}),
        ("multi_average_top10_b70", {"dataset": multi, "bits": 70, "topk": 10}),
    ]
    for name, base in variants:
        for backend, rng, mode in (("numpy", "batched", "SAME_STEP"), ("torch", "per_env", "NEXT_STEP")):
            kwargs = {**base, **vector_kwargs(backend, rng, mode)}
            policy = vector_bits((NUM_ENVS, base["bits"]), backend == "torch")
            script = vector_script((4, 2, 2), rng)
            run_vector_case(
                sink,
                f"{name}_{backend}_{rng}_{mode}",
                "RankListHash-v0",
                kwargs,
                backend,
                script,
                policy,
                seed=801,
                after=read_database,
            )
    for backend in BACKEND_CHOICES:
        for ties in ("average", "stable"):
            kwargs = {
                "dataset": blobs,
                "bits": 12,
                "ties": ties,
                **vector_kwargs(backend, "batched", "SAME_STEP"),
            }
            policy = vector_bits((NUM_ENVS, 12), backend == "torch")
            script = [("steps", 3), ("reset", {"options": {"index": np.array([0, 0, 1, 1])}}), ("steps", 2)]
            run_vector_case(
                sink,
                f"set_database_{ties}_{backend}",
                "RankListHash-v0",
                kwargs,
                backend,
                script,
                policy,
                seed=802,
                after=read_database,
                before=set_database,
            )


# ---------------------------------------------------------------------------------------------------
# Encoders


class LinearFlipPolicy:
    """A fixed integer linear map of (floor(2 features), code, history) to the bits + 1 action scores.

    Integer arithmetic only (no float rounding), argmax with ties to the lowest action. Records the
    observations it is shown (concatenated over calls) so that the encoder's inputs are golden too.
    """

    def __init__(self, dim: int, bits: int, history: int, flatten: bool, seed: int, keep: bool) -> None:
        rng = np.random.default_rng(seed)
        self.bits, self.dim, self.history, self.flatten, self.keep = bits, dim, history, flatten, keep
        self.w_features = rng.integers(-3, 4, size=(dim, bits + 1))
        self.w_code = rng.integers(-3, 4, size=(bits, bits + 1))
        self.w_history = rng.integers(-3, 4, size=(history * bits, bits + 1))
        np.fill_diagonal(self.w_code[:, :bits], -8)  # a set bit is rarely flipped back
        self.w_features[:, bits] = self.w_history[:, bits] = 0
        self.w_code[:, bits] = 1  # the stop score: the number of ones
        self.seen = Rows()

    def __call__(self, obs: Any) -> np.ndarray:
        if self.flatten:
            d, b = self.dim, self.bits
            features, code, history = obs[:, :d], obs[:, d : d + b], obs[:, d + b :]
        else:
            features, code = obs["features"], obs["code"]
            history = obs["history"].reshape(len(code), -1)
        if self.keep:
            self.seen.add(obs=obs, count=np.array([len(code)]))
        quantized = np.floor(np.asarray(features, dtype=np.float64) * 2).astype(np.int64)
        scores = (
            quantized @ self.w_features
            + np.asarray(code).astype(np.int64) @ self.w_code
            + np.asarray(history).astype(np.int64) @ self.w_history
        )
        return scores.argmax(axis=1)


class LinearBitsPolicy:
    """``encode_sequential``'s policy: integer scores of (floor(2 features), code) plus a running state."""

    def __init__(self, dim: int, bits: int, group: int, flatten: bool, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.bits, self.group, self.flatten = dim, bits, group, flatten
        self.w_features = rng.integers(-3, 4, size=(dim, bits))
        self.w_code = rng.integers(-2, 3, size=(bits, bits))
        self.seen = Rows()

    def __call__(self, obs: Any, state: Any) -> tuple[np.ndarray, np.ndarray]:
        d, b = self.dim, self.bits
        if self.flatten:
            features, code = obs[:, :d], obs[:, d : d + b]
            t = int(obs[0, d + 2 * b :].argmax())
        else:
            features, code, t = obs["features"], obs["code"], int(obs["step"][0])
        ones = np.zeros(len(features), dtype=np.int64) if state is None else state  # ones set so far
        self.seen.add(obs=obs, state_is_none=state is None, state=ones)
        columns = slice(t * self.group, (t + 1) * self.group)
        quantized = np.floor(np.asarray(features, dtype=np.float64) * 2).astype(np.int64)
        code_scores = np.asarray(code).astype(np.int64) @ self.w_code[:, columns]
        scores = quantized @ self.w_features[:, columns] + code_scores - ones[:, None]
        actions = (scores > 0).astype(np.int8)
        return actions, ones + actions.sum(axis=1, dtype=np.int64)


def group_encode(sink: Sink) -> None:
    """encode_batch (BinaryCodeTravel) and encode_sequential (SequentialHashBits), fixed integer policies."""
    blobs, multi, digits = dataset("blobs"), dataset("blobs_multi"), load_dataset("digits")
    cases = [
        ("blobs_train_zeros", blobs.train.features, 16, {}, True),
        ("blobs_train_random", blobs.train.features, 16, {"init": "random", "seed": 3}, True),
        (
            "blobs_query_flat_m5_h3",
            blobs.query.features,
            16,
            {"max_steps": 5, "history": 3, "flatten": True},
            True,
        ),
        ("multi_train_b8_h2", multi.train.features, 8, {"history": 2, "max_steps": 12}, True),
        ("digits_query", digits.query.features, 16, {}, False),
    ]
    for name, features, bits, options, keep in cases:
        history, flat = options.get("history", 10), options.get("flatten", False)
        given = "".join(f", {k}={v!r}" for k, v in options.items())
        call = f"encode_batch(policy, <{name} features>, {bits}{given})"
        script = (
            f"policy = LinearFlipPolicy(dim={features.shape[1]}, bits={bits}, history={history}, "
            f"flatten={flat}, seed=900) (tests/golden/record.py)"
        )
        with sink.case(f"encode_batch/{name}", call=call, script=script):
            policy = LinearFlipPolicy(features.shape[1], bits, history, flat, 900, keep)
            sink.put("codes", encode_batch(policy, features, bits, **options))
            if keep:
                policy.seen.emit(sink, "policy_inputs", concat=True)
    seq_cases = [
        ("blobs_train_b8_g1", blobs.train.features, 8, 1, False),
        ("blobs_train_b16_g4", blobs.train.features, 16, 4, False),
        ("multi_query_b8_g2_flat", multi.query.features, 8, 2, True),
        ("digits_query_b16_g4", digits.query.features, 16, 4, False),
    ]
    for name, features, bits, group, flat in seq_cases:
        call = f"encode_sequential(policy, <{name} features>, {bits}, {group}, flatten={flat})"
        script = (
            f"policy = LinearBitsPolicy(dim={features.shape[1]}, bits={bits}, group={group}, "
            f"flatten={flat}, seed=901) (tests/golden/record.py)"
        )
        with sink.case(f"encode_sequential/{name}", call=call, script=script):
            policy = LinearBitsPolicy(features.shape[1], bits, group, flat, 901)
            sink.put("codes", encode_sequential(policy, features, bits, group, flatten=flat))
            if not name.startswith("digits"):
                policy.seen.emit(sink, "policy_inputs")


# ---------------------------------------------------------------------------------------------------
# Ranking


def ranking_data(bits: int, multi: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """50 queries and 400 database items: class prototype codes with 30% of bits flipped (many ties).

    Multi-label: 6 classes, each label on with probability 0.3 (some items carry none); the code is
    the prototype of the item's first label (of class 0 if none).
    """
    rng = np.random.default_rng(1000 + bits + 7 * multi)
    n = 450
    prototypes = rng.integers(0, 2, size=(6, bits), dtype=np.uint8)
    if multi:
        labels = (rng.random((n, 6)) < 0.3).astype(np.uint8)
        first = labels.argmax(axis=1)
    else:
        labels = rng.integers(0, 5, size=n)
        first = labels
    codes = prototypes[first] ^ (rng.random((n, bits)) < 0.3).astype(np.uint8)
    return codes[:50], labels[:50], codes[50:], labels[50:]


RANKING_BACKENDS: dict[str, dict[str, Any]] = {
    "numpy": {"backend": "numpy"},
    "faiss": {"backend": "faiss"},
    "torch": {"backend": "torch", "device": "cpu"},
}


def group_ranking(sink: Sink) -> None:
    """hashing_gym.ranking: every public metric on random codes with many ties, every CPU backend."""
    for bits in (8, 16):
        for multi in (False, True):
            data = ranking_data(bits, multi)
            q, yq, db, ydb = data
            label = f"b{bits}_{'multi' if multi else 'single'}"
            with sink.case(f"data/{label}", call=f"ranking_data(bits={bits}, multi={multi})"):
                for key, value in zip(("q_codes", "q_labels", "db_codes", "db_labels"), data, strict=True):
                    sink.put(key, value)
            for backend, options in RANKING_BACKENDS.items():
                given = ", ".join(f"{k}={v!r}" for k, v in options.items())
                call = (
                    f"hashing_gym.ranking.FUNCTION(*ranking_data(bits={bits}, multi={multi}), ..., {given})"
                )
                atol = TORCH_ATOL if backend == "torch" else 0.0
                with sink.case(f"{label}/{backend}", call=call, atol=atol):
                    for ties in ranking.TIES:
                        for topk in (None, 50, 5):
                            tag = f"{ties}_top{topk}"
                            sink.put(
                                f"average_precision/{tag}",
                                ranking.average_precision(*data, topk=topk, ties=ties, **options),
                            )
                            sink.put(
                                f"mean_average_precision/{tag}",
                                ranking.mean_average_precision(*data, topk=topk, ties=ties, **options),
                            )
                        for k in (1, 10, 50, 1000):
                            sink.put(
                                f"precision_at_k/{ties}_k{k}",
                                ranking.precision_at_k(*data, k, ties=ties, **options),
                            )
                    for radius in (0, 2, bits):
                        sink.put(
                            f"precision_at_radius/r{radius}",
                            ranking.precision_at_radius(*data, radius=radius, **options),
                        )
                    precision, recall = ranking.precision_recall_curve(*data, **options)
                    sink.put("precision_recall_curve/precision", precision)
                    sink.put("precision_recall_curve/recall", recall)
                    sink.put("hamming_distance", ranking.hamming_distance(q, db, **options))
                    distances, indices = ranking.rank(q, db, 20, **options)
                    sink.put("rank/top20/D", distances)
                    sink.put("rank/top20/I", indices)
                    distances, indices = ranking.rank(q[:4], db, 1000, **options)
                    sink.put("rank/q4_top1000/D", distances)
                    sink.put("rank/q4_top1000/I", indices)
                    for topk, radius in ((50, 2), (1000, 0)):
                        result = ranking.evaluate_retrieval(*data, topk=topk, radius=radius, **options)
                        rows = Rows()
                        rows.add(**result)
                        rows.emit(sink, f"evaluate_retrieval/top{topk}_r{radius}")
                    counts, relevant = ranking.distance_counts(*data, **options)
                    sink.put("distance_counts/counts", counts)
                    sink.put("distance_counts/relevant", relevant)
            with sink.case(
                f"{label}/no_backend", call="hashing_gym.ranking.FUNCTION(...) (no backend argument)"
            ):
                counts, relevant = ranking.distance_counts(*data)
                for topk in (None, 50, 5):
                    sink.put(
                        f"average_precision_from_counts/top{topk}",
                        ranking.average_precision_from_counts(counts, relevant, topk=topk),
                    )
                packed_q, packed_db = ranking.pack_codes(q), ranking.pack_codes(db)
                sink.put("pack_codes/q", packed_q)
                lq = ranking.pack_codes(yq) if multi else yq
                ldb = ranking.pack_codes(ydb) if multi else ydb
                counts2, relevant2 = ranking.packed_distance_counts(packed_q, lq, packed_db, ldb, bits)
                sink.put("packed_distance_counts/counts", counts2)
                sink.put("packed_distance_counts/relevant", relevant2)
    with sink.case(
        "wide_b70/numpy", call="average_precision and evaluate_retrieval on 70-bit codes (two words)"
    ):
        rng = np.random.default_rng(1100)
        q, db = rng.integers(0, 2, (20, 70)), rng.integers(0, 2, (150, 70))
        q[:, 10:] = db[:20, 10:]  # shared bits: distances concentrate near 0..10
        yq, ydb = rng.integers(0, 3, 20), rng.integers(0, 3, 150)
        for ties in ranking.TIES:
            sink.put(f"average_precision/{ties}", ranking.average_precision(q, yq, db, ydb, ties=ties))
        rows = Rows()
        rows.add(**ranking.evaluate_retrieval(q, yq, db, ydb, topk=30))
        rows.emit(sink, "evaluate_retrieval")


GROUPS: dict[str, Callable[[Sink], None]] = {
    "datasets": group_datasets,
    "bct_single": group_bct_single,
    "bct_vector": group_bct_vector,
    "shb_single": group_shb_single,
    "shb_vector": group_shb_vector,
    "rlh_single": group_rlh_single,
    "rlh_vector": group_rlh_vector,
    "encode": group_encode,
    "ranking": group_ranking,
}


def golden_path(group: str, folder: Path = GOLDEN_DIR) -> Path:
    return folder / f"{group}.npz"


def record(group: str) -> Recorder:
    recorder = Recorder(group)
    GROUPS[group](recorder)
    return recorder


def replay(group: str, expected: dict[str, np.ndarray], manifest: dict[str, Any]) -> Checker:
    """Replay a group against recorded arrays; ``finish()`` on the result raises on any difference."""
    checker = Checker(group, expected, manifest)
    GROUPS[group](checker)
    return checker


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else GOLDEN_DIR
    here = Path(__file__).resolve().parents[2]
    package = Path(hashing_gym.__file__).resolve().parents[1]
    if package != here:
        print(f"refusing to record: hashing_gym comes from {package}, not from this checkout {here}")
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for group in GROUPS:
        recorder = record(group)
        recorder.save(golden_path(group, folder))
        manifests[group] = recorder.manifest()
        size = golden_path(group, folder).stat().st_size
        print(f"{group}: {len(recorder.arrays)} arrays, {size / 1024:.0f} KiB")
    (folder / "manifest.json").write_text(json.dumps(manifests, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
