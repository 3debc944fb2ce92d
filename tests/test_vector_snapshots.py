"""Public snapshots of the vector envs: ``HashingVectorEnv.get_state`` / ``set_state``.

For each batched env, on numpy and on torch (CPU), with both random-stream modes and every autoreset
mode, a snapshot taken in the middle of a run and put into a fresh env built with the same arguments
continues bitwise as the uninterrupted env (observations, rewards, flags, infos, autoresets, and the
state itself at the end). Snapshots of other arguments and damaged ones are refused naming the
difference, before anything changes.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from resume_check import TRAINERS, assert_same_run, reference, resume_final_state, stopped_run
from vector_parity import to_numpy

import hashing_gym  # noqa: F401
from agents.checkpoint import CheckpointError, Checkpoints, read_tensors, write_tensors
from agents.resume_state import env_snapshot, restore_env, upgrade_legacy_env
from hashing_gym.data import load_dataset

NUM_ENVS = 3
BITS = 8
# env id -> (its arguments, width of an action: 0 for BinaryCodeTravel's Discrete(bits + 1) actions)
ENVS = {
    "BinaryCodeTravel-v0": ({}, 0),
    "SequentialHashBits-v0": ({"group": 2}, 2),  # 4 steps per episode
    "RankListHash-v0": ({}, BITS),
}
BACKENDS = {"numpy": "cpu", "torch": torch.device("cpu"), "cuda": torch.device("cuda")}  # cuda: if there


@pytest.fixture(scope="module")
def data():
    return load_dataset("blobs", num_classes=3, n_per_class=20, dim=8, query_per_class=4)


def make(env_id, data, backend="numpy", rng="batched", mode=AutoresetMode.NEXT_STEP, **overrides):
    kwargs = {"dataset": data, "bits": BITS, **ENVS[env_id][0], **overrides}
    return gym.make_vec(
        env_id,
        num_envs=kwargs.pop("num_envs", NUM_ENVS),
        vectorization_mode="vector_entry_point",
        device=BACKENDS[backend],
        rng=rng,
        autoreset_mode=mode,
        **kwargs,
    )


def actions_for(env_id, count, seed=0):
    """``count`` batches of random valid actions (BinaryCodeTravel: flips, and a stop 1 time in 4)."""
    rng = np.random.default_rng(seed)
    width = ENVS[env_id][1]
    if width == 0:
        flips = rng.integers(0, BITS, size=(count, NUM_ENVS))
        return np.where(rng.random((count, NUM_ENVS)) < 0.25, BITS, flips)
    return rng.integers(0, 2, size=(count, NUM_ENVS, width)).astype(np.uint8)


def drive(envs, actions, mode, ended):
    """Step with ``actions``; under DISABLED reset the ended sub-envs first. Every result, as numpy."""
    results = []
    for action in actions:
        if mode == AutoresetMode.DISABLED and ended.any():
            results.append(to_numpy(envs.reset(options={"reset_mask": ended.copy()})))
        result = to_numpy(envs.step(action))
        results.append(result)
        ended = result[2] | result[3]
    return results, ended


def assert_equal(a, b, where=""):
    """Bitwise equality (values, dtypes, shapes) of nested results, snapshots included."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert np.array_equal(a, b), f"{where}: {a} != {b}"
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


SNAPSHOT_AT = range(3, 12)  # before these steps: some sub-envs mid-episode, some ended or pending a reset


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda mode: mode.name)
@pytest.mark.parametrize("rng", ["batched", "per_env"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("env_id", list(ENVS))
def test_a_snapshot_continues_bitwise_as_the_uninterrupted_env(env_id, backend, rng, mode, data):
    check_continuation(env_id, backend, rng, mode, data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rng", ["batched", "per_env"])
@pytest.mark.parametrize("env_id", list(ENVS))
def test_a_cuda_snapshot_continues_bitwise_on_cuda(env_id, rng, data):
    for mode in AutoresetMode:
        check_continuation(env_id, "cuda", rng, mode, data)


def check_continuation(env_id, backend, rng, mode, data):
    """Snapshots before steps 3..11 of a run, each put into a fresh env, continue as the run did."""
    actions = actions_for(env_id, 30)
    envs = make(env_id, data, backend, rng, mode)
    envs.reset(seed=5)
    ended = np.zeros(NUM_ENVS, dtype=bool)
    snapshots, results = {}, []  # results[k]: what step k returned (after a reset under DISABLED)
    for k, action in enumerate(actions):
        if k in SNAPSHOT_AT:
            snapshots[k] = (envs.get_state(), ended.copy())
        returned, ended = drive(envs, [action], mode, ended)
        results.append(returned)
    final = envs.get_state()
    if env_id == "SequentialHashBits-v0":  # mid-episode: sub-envs have decided some bits, not all
        decided = np.stack([r[-1][0]["decided"].mean(axis=1) for r in results[2:11]])
        assert ((decided > 0) & (decided < 1)).any()
    # Some snapshots hold sub-envs whose episode ended (masked steps keep them in "ended").
    states = [snapshot for snapshot, _ in snapshots.values()]
    ended_in = [s["autoreset"].any() or (s["ended"] is not None and s["ended"].any()) for s in states]
    assert any(ended_in) or mode == AutoresetMode.SAME_STEP

    for k, (snapshot, ended) in snapshots.items():
        fresh = make(env_id, data, backend, rng, mode)
        fresh.set_state(snapshot)
        got, _ = drive(fresh, actions[k:], mode, ended)
        assert_equal(got, [r for returned in results[k:] for r in returned], f"continuation from step {k}")
        assert_equal(fresh.get_state(), final, f"state at the end, from step {k}")


def leaves(value):
    """Every leaf of a nested snapshot."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("env_id", list(ENVS))
def test_a_snapshot_is_numpy_arrays_and_json_values(env_id, backend, data):
    envs = make(env_id, data, backend, "per_env")
    envs.reset(seed=1)
    envs.step(actions_for(env_id, 1)[0])
    snapshot = envs.get_state()
    kinds = {type(leaf) for leaf in leaves(snapshot)}
    assert kinds <= {np.ndarray, dict, list, str, int, float, bool, type(None)}, kinds
    assert all(leaf.dtype != object for leaf in leaves(snapshot) if isinstance(leaf, np.ndarray))
    as_json = json.loads(json.dumps(snapshot, default=lambda array: array.tolist()))
    assert as_json["spec"] == snapshot["spec"] and as_json["per_env"] == snapshot["per_env"]
    assert snapshot["spec"]["backend"] == backend and snapshot["spec"]["env"] == type(envs).__name__


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bits": 16}, "bits=8 in the snapshot, 16 here"),
        ({"num_envs": 4}, "num_envs=3 in the snapshot, 4 here"),
        ({"backend": "torch"}, "backend='numpy' in the snapshot, 'torch' here"),
        ({"rng": "per_env"}, "rng='batched' in the snapshot, 'per_env' here"),
        ({"mode": AutoresetMode.SAME_STEP}, "autoreset_mode='NEXT_STEP' in the snapshot, 'SAME_STEP' here"),
    ],
    ids=["bits", "num_envs", "backend", "rng", "autoreset_mode"],
)
@pytest.mark.parametrize("env_id", list(ENVS))
def test_a_snapshot_of_other_arguments_is_refused_naming_them(env_id, change, named, data):
    envs = make(env_id, data)
    envs.reset(seed=0)
    snapshot = envs.get_state()
    other = make(env_id, data, **change)
    other.reset(seed=9)
    before = other.get_state()
    with pytest.raises(ValueError, match=f"other arguments: .*{named}"):
        other.set_state(snapshot)
    assert_equal(other.get_state(), before, "after a refusal")  # nothing changed


@pytest.mark.parametrize("env_id", list(ENVS))
def test_a_damaged_snapshot_is_refused_naming_the_part(env_id, data):
    envs = make(env_id, data, "torch")
    envs.reset(seed=0)
    snapshot = envs.get_state()
    name = next(iter(snapshot["arrays"]))
    floats = snapshot["arrays"][name].astype(np.float32)
    wrong_dtype = {**snapshot, "arrays": {**snapshot["arrays"], name: floats}}
    missing_array = {**snapshot, "arrays": {k: v for k, v in snapshot["arrays"].items() if k != name}}
    cases = [
        ({k: v for k, v in snapshot.items() if k != "per_env"}, r"lacks \['per_env'\]"),
        ({**snapshot, "format": 99}, "snapshot format 99"),
        (wrong_dtype, rf"arrays\['{name}'\] must be"),
        (missing_array, "'arrays' must hold"),
        ({**snapshot, "started": np.ones(NUM_ENVS + 1, dtype=bool)}, r"started must be bool of shape \(3,\)"),
        ({**snapshot, "np_random": {"bit_generator": "MT19937", "state": {}}}, "np_random is not a PCG64"),
        ({**snapshot, "generator": np.zeros(3, dtype=np.uint8)}, "generator must be uint8 of shape"),
        ([snapshot], "takes a snapshot from get_state"),
    ]
    before = envs.get_state()
    for damaged, message in cases:
        with pytest.raises(ValueError, match=message):
            envs.set_state(damaged)
        assert_equal(envs.get_state(), before, message)


def test_a_snapshot_without_banks_keeps_the_envs_own_bank(data):
    """``get_state(banks=False)``: for a caller that rebuilds the banks (reinforce-torch re-encodes them)."""
    actions = actions_for("RankListHash-v0", 8)
    envs = make("RankListHash-v0", data, "torch", mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    envs.step(actions[0])  # bank mode: the acted codes joined the bank
    snapshot, banks = envs.get_state(banks=False), to_numpy(envs.database_codes)
    assert snapshot["banks"] is False and "bank" not in snapshot["arrays"] and "items" in snapshot["arrays"]
    expected, _ = drive(envs, actions[1:], AutoresetMode.SAME_STEP, np.zeros(NUM_ENVS, dtype=bool))

    fresh = make("RankListHash-v0", data, "torch", mode=AutoresetMode.SAME_STEP)
    fresh.reset(seed=1)
    own = to_numpy(fresh.database_codes)
    fresh.set_state(snapshot)
    np.testing.assert_array_equal(to_numpy(fresh.database_codes), own)  # kept
    assert not np.array_equal(own, banks)
    fresh.set_database_codes(banks)  # the caller rebuilds them
    got, _ = drive(fresh, actions[1:], AutoresetMode.SAME_STEP, np.zeros(NUM_ENVS, dtype=bool))
    assert_equal(got, expected)


def legacy_layout(snapshot):
    """The checkpoint entries of the earlier layout (private attributes as tensors) for a snapshot."""

    def tensor(array):
        return None if array is None else torch.as_tensor(array)

    streams = {"np_random": snapshot["np_random"], "per_env": snapshot["per_env"]}
    streams["generator"] = tensor(snapshot["generator"])
    env = {
        "_started": tensor(snapshot["started"]),
        "_autoreset": tensor(snapshot["autoreset"]),
        "_ended": tensor(snapshot["ended"]),
        "_state": [tensor(array) for array in snapshot["arrays"].values()],
    }
    return env, streams


@pytest.mark.parametrize("rng", ["batched", "per_env"])
def test_the_trainers_checkpoint_a_snapshot_as_tensors_and_restore_it(rng, data, tmp_path):
    """agents.resume_state: the snapshot through a weights_only torch checkpoint, and the earlier layout."""
    actions = actions_for("BinaryCodeTravel-v0", 20)
    envs = make("BinaryCodeTravel-v0", data, "torch", rng)
    envs.reset(seed=2)
    drive(envs, actions[:5], AutoresetMode.NEXT_STEP, np.zeros(NUM_ENVS, dtype=bool))
    snapshot = envs.get_state()
    write_tensors(tmp_path / "step.pt", {"env": env_snapshot(envs)})
    loaded = read_tensors(tmp_path / "step.pt")["env"]  # torch.load(weights_only=True)
    legacy_env, legacy_streams = legacy_layout(snapshot)
    expected, _ = drive(envs, actions[5:], AutoresetMode.NEXT_STEP, np.zeros(NUM_ENVS, dtype=bool))

    fresh = make("BinaryCodeTravel-v0", data, "torch", rng)
    fresh.reset(seed=2)
    restore_env(fresh, loaded, tmp_path / "step.pt")
    got, _ = drive(fresh, actions[5:], AutoresetMode.NEXT_STEP, np.zeros(NUM_ENVS, dtype=bool))
    assert_equal(got, expected, "from the checkpoint")

    saved = {"env": legacy_env, "env_rng": legacy_streams}  # a checkpoint written before snapshots
    old = make("BinaryCodeTravel-v0", data, "torch", rng)
    old.reset(seed=2)
    upgrade_legacy_env(old, saved, "old.pt")
    assert "env_rng" not in saved
    restore_env(old, saved["env"], "old.pt")
    got, _ = drive(old, actions[5:], AutoresetMode.NEXT_STEP, np.zeros(NUM_ENVS, dtype=bool))
    assert_equal(got, expected, "from the earlier layout")

    other = make("BinaryCodeTravel-v0", data, "torch", rng, bits=16)
    with pytest.raises(CheckpointError, match=r"step\.pt: the env's state cannot be restored: .*bits=8"):
        restore_env(other, loaded, tmp_path / "step.pt")
    with pytest.raises(CheckpointError, match="old.pt: 'env' holds 11 state arrays, the env has 10"):
        broken = {**legacy_env, "_state": [*legacy_env["_state"], legacy_env["_state"][0]]}
        upgrade_legacy_env(old, {"env": broken, "env_rng": legacy_streams}, "old.pt")


@pytest.mark.parametrize("algo", ["dqn-torch", "reinforce-torch"])
def test_a_run_checkpointed_in_the_earlier_layout_still_resumes_exactly(algo, tmp_path):
    """A checkpoint whose env part is the earlier private-attribute layout resumes bitwise as before."""
    trainer = TRAINERS[algo]
    _, expected, _ = reference(trainer)
    run = stopped_run(trainer, 2, tmp_path / "run")
    checkpoints = Checkpoints(run, algo)
    path = checkpoints.directory / checkpoints.latest().model
    state = read_tensors(path)
    env, streams = legacy_layout(state.pop("env"))
    if algo == "dqn-torch":  # reinforce-torch stored only the env's random streams
        state["env"] = env
    state["env_rng"] = streams
    write_tensors(path, state)
    assert_same_run(resume_final_state(trainer, run), expected)
