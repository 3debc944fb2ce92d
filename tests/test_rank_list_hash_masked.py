"""RankListHash-v0's masked step (all rows at once) and its fused step (``fuse_step=True``).

The masked step must return what the row path (``_step_rows`` on host row index arrays) returns,
draw for draw; on torch it must read nothing back from the device; the fused step must return the
masked step's tensors bit for bit. On CPU the compile backend is ``aot_eager``; the CUDA tests (named
"cuda") run inductor, the backend users get, and count syncs.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from vector_parity import assert_same, to_numpy

from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv

torch = pytest.importorskip("torch")
from torch.overrides import TorchFunctionMode  # noqa: E402

CPU = torch.device("cpu")
CUDA = torch.cuda.is_available()
MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]
NUM_ENVS = 6


# (kwargs, data set): ties, cutoffs, the fixed database, two words per code, multi-label data, and
# 2-bit codes for 5 classes (no codebook: no expert_action in the infos).
VARIANTS = {
    "average": ({}, "small"),
    "stable-topk": ({"ties": "stable", "topk": 9}, "small"),
    "fixed-70bits": ({"bits": 70, "database": "fixed"}, "small"),
    "multi-label": ({"bits": 8}, "multi_label"),
    "no-expert": ({"bits": 2, "topk": 5}, "multi_label"),
}


def make(request, variant, **kwargs):
    extra, data = VARIANTS[variant]
    return RankListHashVectorEnv(num_envs=NUM_ENVS, dataset=request.getfixturevalue(data), **extra, **kwargs)


def rollout(env, steps=7, seed=3):
    """reset(seed), ``steps`` steps, a reset of every third sub-env, ``steps`` more: every result.

    Under NEXT_STEP every sub-env has ended after an odd number of steps, so the partial reset leaves
    the others to restart while the reset ones act: the steps after it mix both.
    """
    rng = np.random.default_rng(0)

    def actions():
        codes = rng.integers(0, 2, size=(env.num_envs, env.bits))
        return torch.as_tensor(codes, device=env.torch_device) if env.torch else codes

    results = [env.reset(seed=seed)]
    results += [env.step(actions()) for _ in range(steps)]
    results.append(env.reset(options={"reset_mask": np.arange(env.num_envs) % 3 == 0}))
    results += [env.step(actions()) for _ in range(steps)]
    return results, env.database_codes


def flat(result):
    """Every tensor of a result, and the structure (the dicts' keys in order)."""
    leaves, spec = torch.utils._pytree.tree_flatten(result)
    return leaves, str(spec)


def assert_bitwise(first, second):
    for t, (a, b) in enumerate(zip(first, second, strict=True)):
        (x, spec_x), (y, spec_y) = flat(a), flat(b)
        assert spec_x == spec_y, f"result {t}: the structure differs"
        for u, v in zip(x, y, strict=True):
            assert u.dtype == v.dtype and torch.equal(u, v), f"result {t}"


# --------------------------------------------------------------------------------------------------
# The masked step
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
@pytest.mark.parametrize(("device", "rng"), [("cpu", "batched"), ("cpu", "per_env"), (CPU, "batched")])
def test_masked_step_equals_the_row_path(request, variant, mode, device, rng):
    runs = []
    for masked in (True, False):
        env = make(request, variant, device=device, rng=rng, autoreset_mode=mode)
        assert env._masked
        env._masked = masked  # False: the row path over host index arrays (torch rng="per_env", DISABLED)
        runs.append(rollout(env))
    (masked, masked_bank), (rows, rows_bank) = runs
    assert ("expert_action" in masked[0][1]) == (variant != "no-expert")
    for t, (a, b) in enumerate(zip(masked, rows, strict=True)):
        for name, x, y in zip(("obs", "reward", "terminated", "truncated", "info"), a, b, strict=False):
            assert_same(to_numpy(x), to_numpy(y), f"result {t} {name}")
    assert_same(to_numpy(masked_bank), to_numpy(rows_bank), "banks")
    if mode == AutoresetMode.NEXT_STEP:  # steps where some sub-envs act and others restart were compared
        partial = [to_numpy(r[4]["_ap"]) for r in masked[9:] if "_ap" in r[4]]
        assert partial and all(0 < mask.sum() < NUM_ENVS for mask in partial)


class NoReadBack(TorchFunctionMode):
    """Raises where torch code reads a tensor's value on the host, or copies host data to a device.

    On a GPU each of these waits for the device (a pageable host-to-device copy synchronizes too).
    """

    READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS or (
            name in ("as_tensor", "tensor") and args and not isinstance(args[0], torch.Tensor)
        ):
            raise AssertionError(f"the step called {name}: a read back or a host-to-device copy")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("ties", ["average", "stable"])
@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
def test_torch_masked_step_reads_nothing_back(ties, mode, small):
    env = RankListHashVectorEnv(
        num_envs=NUM_ENVS, dataset=small, device=CPU, check_actions=False, autoreset_mode=mode, ties=ties
    )
    env.reset(seed=0)
    actions = [
        torch.randint(0, 2, (NUM_ENVS, 16), generator=torch.Generator().manual_seed(t)) for t in range(6)
    ]
    env.step(actions[0])
    env.reset(options={"reset_mask": np.arange(NUM_ENVS) < 2})  # NEXT_STEP: a step that mixes both next
    with NoReadBack():
        results = [env.step(a) for a in actions]
    rewards = torch.stack([r[1] for r in results])
    assert (rewards > 0).any() and all(isinstance(r[4]["index"], torch.Tensor) for r in results)
    # The mode catches what it is meant to: the action check reads a flag back from the device.
    env.check_actions = True
    with pytest.raises(AssertionError, match="read back"), NoReadBack():
        env.step(actions[0])


def test_masked_env_takes_snapshots_from_before_its_masked_steps(small):
    # Snapshots of the row path held ended=None: autoreset says which rows ended.
    make = dict(num_envs=NUM_ENVS, dataset=small, device=CPU, autoreset_mode="NextStep")
    env = RankListHashVectorEnv(**make)
    env.reset(seed=1)
    env.step(torch.ones((NUM_ENVS, 16), dtype=torch.int64))
    snapshot = env.get_state()
    assert snapshot["ended"].all() and snapshot["autoreset"].all()
    fresh = RankListHashVectorEnv(**make)
    fresh.set_state({**snapshot, "ended": None})
    actions = torch.zeros((NUM_ENVS, 16), dtype=torch.int64)
    assert_bitwise([env.step(actions) for _ in range(3)], [fresh.step(actions) for _ in range(3)])


def test_device_items_and_state_are_new_arrays_not_written_in_place(small):
    # Infos hand out the items array: later resets, set_device_items and set_state must not change it.
    env = RankListHashVectorEnv(num_envs=NUM_ENVS, dataset=small, device=CPU, autoreset_mode="NextStep")
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(torch.ones((NUM_ENVS, 16), dtype=torch.int64))
    index = info["index"].clone()
    env.reset(options={"reset_mask": np.arange(NUM_ENVS) < 3})
    env.set_device_items(torch.zeros(NUM_ENVS, dtype=torch.int32))
    assert torch.equal(info["index"], index) and env._items.dtype == torch.int64
    env.set_state(env.get_state())
    assert torch.equal(info["index"], index)


# --------------------------------------------------------------------------------------------------
# The fused step
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["average", "stable-topk", "fixed-70bits", "no-expert"])
@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
def test_fused_step_equals_the_masked_step(aot_eager, request, variant, mode):
    plain = make(request, variant, device=CPU, autoreset_mode=mode)
    fused = make(request, variant, device=CPU, autoreset_mode=mode, fuse_step=True)
    (a, bank_a), (b, bank_b) = rollout(plain), rollout(fused)
    assert_bitwise(a, b)
    assert torch.equal(bank_a, bank_b)
    # Tie-aware: one compiled call a step (the scan an operator inside it); stable: three calls.
    acting = {"act"} if fused.ties == "average" else {"queries", "finish"}
    parts = acting | ({"restart"} if mode == AutoresetMode.NEXT_STEP else set())
    assert set(fused._fused) == parts and not plain._fused


@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
def test_tie_aware_fused_step_in_three_calls_equals_the_masked_step(aot_eager, request, mode, monkeypatch):
    # SCAN_IN_GRAPH = False: the step before the scan became an operator (benchmarks compare the two).
    from hashing_gym.envs import rank_list_hash_vector

    monkeypatch.setattr(rank_list_hash_vector, "SCAN_IN_GRAPH", False)
    plain = make(request, "average", device=CPU, autoreset_mode=mode)
    fused = make(request, "average", device=CPU, autoreset_mode=mode, fuse_step=True)
    (a, bank_a), (b, bank_b) = rollout(plain), rollout(fused)
    assert_bitwise(a, b)
    assert torch.equal(bank_a, bank_b)
    assert {"queries", "finish"} <= set(fused._fused) and "act" not in fused._fused


def test_fused_step_across_a_snapshot(aot_eager, small):
    make = dict(num_envs=NUM_ENVS, dataset=small, device=CPU, autoreset_mode="NextStep")
    plain = RankListHashVectorEnv(**make)
    fused = RankListHashVectorEnv(**make, fuse_step=True)
    plain.reset(seed=0)
    fused.reset(seed=9)
    for t in range(3):
        plain.step(torch.full((NUM_ENVS, 16), t % 2))
    fused.set_state(plain.get_state())
    actions = torch.arange(NUM_ENVS * 16).reshape(NUM_ENVS, 16) % 3 % 2
    assert_bitwise([plain.step(actions) for _ in range(4)], [fused.step(actions) for _ in range(4)])


def _no_read_back(*args, **kwargs):
    raise AssertionError("the fused step read a value back from the device")


@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
def test_fused_step_reads_nothing_back(aot_eager, mode, monkeypatch, small):
    env = RankListHashVectorEnv(
        num_envs=NUM_ENVS, dataset=small, device=CPU, check_actions=False, autoreset_mode=mode, fuse_step=True
    )
    env.reset(seed=0)
    actions = torch.ones((NUM_ENVS, 16), dtype=torch.int64)
    for _ in range(2):  # compile every part first
        env.step(actions)
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__index__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, _no_read_back)
        results = [env.step(actions) for _ in range(4)]
    assert all(isinstance(r[1], torch.Tensor) for r in results)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rng="per_env"), "needs rng='batched'"),
        (dict(autoreset_mode="Disabled"), "NEXT_STEP or SAME_STEP"),
    ],
)
def test_fuse_step_refused_where_it_cannot_apply(kwargs, message, small):
    with pytest.raises(ValueError, match=message):
        RankListHashVectorEnv(num_envs=2, dataset=small, device=CPU, fuse_step=True, **kwargs)


# --------------------------------------------------------------------------------------------------
# CUDA: inductor's fused step, and no sync
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
@pytest.mark.parametrize(("bits", "ties"), [(16, "average"), (64, "average"), (16, "stable")])
def test_cuda_fused_step_equals_the_masked_step(mode, bits, ties):
    make = dict(num_envs=4096, bits=bits, ties=ties, device="cuda", autoreset_mode=mode)
    (a, bank_a), (b, bank_b) = (
        rollout(RankListHashVectorEnv(**make)),
        rollout(RankListHashVectorEnv(**make, fuse_step=True)),
    )
    assert_bitwise(a, b)
    assert torch.equal(bank_a, bank_b)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES, ids=["next", "same"])
@pytest.mark.parametrize("fuse", [False, True], ids=["masked", "fused"])
def test_cuda_step_does_not_sync(mode, fuse):
    env = RankListHashVectorEnv(
        num_envs=4096, device="cuda", check_actions=False, autoreset_mode=mode, fuse_step=fuse
    )
    env.reset(seed=0)
    actions = torch.randint(0, 2, (4096, 16), device="cuda", dtype=torch.int8)

    def steps_without_sync(count):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(count):
                env.step(actions)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    for _ in range(3):  # first launches, compilation
        env.step(actions)
    steps_without_sync(4)  # every row acts (NEXT_STEP: or every row restarts)
    env.reset(options={"reset_mask": np.arange(4096) % 2 == 0})  # NEXT_STEP: steps that mix both follow
    env.step(actions)
    steps_without_sync(4)
