"""``fuse_step=True``: the masked torch step compiled by torch.compile gives the unfused step's trajectories.

On CPU the compile backend is ``aot_eager`` (it traces the whole step as one graph, as inductor does,
without a C++ compiler's minutes on CI) but for one inductor test; on CUDA it is inductor, the
backend users get (generated Triton kernels).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import hashing_gym  # noqa: F401 - registers the environments
from hashing_gym.data import load_dataset

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()


def flat(result):
    """Every tensor of a step's result (or a reset's), with the info keys, in order."""
    leaves, spec = torch.utils._pytree.tree_flatten(result)
    return leaves, str(spec)


def assert_same_rollouts(device, steps=30, num_envs=48, env_id="BinaryCodeTravel-v0", **kwargs):
    """Unfused and fused envs from one seed, given the same actions, return equal tensors at every step.

    Returns the two envs and the number of episodes that ended (and restarted) on the way.
    """
    make = dict(num_envs=num_envs, vectorization_mode="vector_entry_point", device=device, **kwargs)
    plain = gym.make_vec(env_id, **make)
    fused = gym.make_vec(env_id, fuse_step=True, **make)
    for a, b in zip(flat(plain.reset(seed=3))[0], flat(fused.reset(seed=3))[0], strict=True):
        assert torch.equal(a, b)
    generator = torch.Generator().manual_seed(1)
    ended = 0
    for t in range(steps):
        if env_id == "BinaryCodeTravel-v0":
            actions = torch.randint(0, plain.unwrapped.bits + 1, (num_envs,), generator=generator)
        else:  # SequentialHashBits-v0: the next group of bits
            actions = torch.randint(0, 2, (num_envs, plain.unwrapped.group), generator=generator)
        actions = actions.to(device)
        result = plain.step(actions)
        ended += int((result[2] | result[3]).sum())
        (a, spec_a), (b, spec_b) = flat(result), flat(fused.step(actions))
        assert spec_a == spec_b, f"step {t}: the results' structure differs"
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y), f"step {t}"
    return plain, fused, ended


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_fused_step_equals_the_masked_step(aot_eager, mode):
    plain, fused, ended = assert_same_rollouts(torch.device("cpu"), bits=16, max_steps=5, autoreset_mode=mode)
    assert ended > 48, "restarts must be among the steps compared"
    assert plain.unwrapped._fused is None and fused.unwrapped._fused is not None


def test_fused_step_on_multi_label_data(aot_eager):
    data = load_dataset("blobs", num_classes=5, n_per_class=40, dim=8, multi_label=True, query_per_class=4)
    _, _, ended = assert_same_rollouts(
        torch.device("cpu"), dataset=data, bits=16, max_steps=4, autoreset_mode="SameStep"
    )
    assert ended > 0


def test_fused_step_with_inductor_on_cpu():
    # The backend users get, once on CPU: generated C++ instead of Triton, the same graph.
    assert_same_rollouts(torch.device("cpu"), steps=12, num_envs=16, bits=16, max_steps=4)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("bits", [16, 64])
def test_fused_step_with_inductor_on_cuda(mode, bits):
    assert_same_rollouts("cuda", steps=40, num_envs=4096, bits=bits, max_steps=6, autoreset_mode=mode)


def test_fused_step_draws_as_the_masked_step_across_a_snapshot(aot_eager):
    # get_state / set_state carry the fused env's generator and rows: it continues as the unfused env.
    make = dict(num_envs=8, vectorization_mode="vector_entry_point", device=torch.device("cpu"), max_steps=3)
    plain = gym.make_vec("BinaryCodeTravel-v0", **make)
    fused = gym.make_vec("BinaryCodeTravel-v0", fuse_step=True, **make)
    plain.reset(seed=0)
    fused.reset(seed=5)
    for _ in range(4):
        plain.step(torch.zeros(8, dtype=torch.int64))
    fused.unwrapped.set_state(plain.unwrapped.get_state())
    actions = torch.arange(8) % 17
    for _ in range(6):
        for x, y in zip(flat(plain.step(actions))[0], flat(fused.step(actions))[0], strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(device="cpu"), "needs a torch device"),
        (dict(device=torch.device("cpu"), rng="per_env"), "needs rng='batched'"),
        (dict(device=torch.device("cpu"), autoreset_mode="Disabled"), "NEXT_STEP or SAME_STEP"),
        (dict(device=torch.device("cpu"), fuse_step_value="yes"), "fuse_step must be True or False"),
    ],
)
def test_fuse_step_refused_where_it_cannot_apply(kwargs, message):
    value = kwargs.pop("fuse_step_value", True)
    with pytest.raises(ValueError, match=message):
        gym.make_vec(
            "BinaryCodeTravel-v0",
            num_envs=4,
            vectorization_mode="vector_entry_point",
            fuse_step=value,
            **kwargs,
        )


SHB = "SequentialHashBits-v0"


def assert_same_results(plain, fused, where):
    """Two results (of a step or a reset) hold equal tensors, of the same dtypes, in the same structure."""
    (a, spec_a), (b, spec_b) = flat(plain), flat(fused)
    assert spec_a == spec_b, f"{where}: the results' structure differs"
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y), where


def assert_same_shb_rollouts(device, steps, num_envs=48, desync=None, **kwargs):
    """Unfused and fused SequentialHashBits envs from one seed, given the same actions: equal results.

    ``desync``: the step before which every third sub-env is reset (a masked reset), so that from
    then on episodes end and restart in some rows only (masked restarts). Returns the two envs
    (unwrapped) and the number of episodes that ended on the way.
    """
    make = dict(num_envs=num_envs, vectorization_mode="vector_entry_point", device=device, **kwargs)
    plain, fused = gym.make_vec(SHB, **make), gym.make_vec(SHB, fuse_step=True, **make)
    assert_same_results(plain.reset(seed=3), fused.reset(seed=3), "reset")
    generator = torch.Generator().manual_seed(1)
    mask = torch.arange(num_envs) % 3 == 0
    ended = 0
    for t in range(steps):
        if t == desync:
            options = {"reset_mask": mask}
            assert_same_results(plain.reset(options=options), fused.reset(options=options), "masked reset")
        actions = torch.randint(0, 2, (num_envs, plain.unwrapped.group), generator=generator).to(device)
        result = plain.step(actions)
        ended += int((result[2] | result[3]).sum())
        assert_same_results(result, fused.step(actions), f"step {t}")
    return plain.unwrapped, fused.unwrapped, ended


# The compiled steps of a run: (whether an episode ends, which rows restart) for each kind of step.
# The compiled calls of each kind of step: (an episode ends, which rows restart); SAME_STEP restarts are a
# second call after the step, ("restart", which rows).
LOCKSTEP = {
    "NextStep": {(False, ""), (True, ""), (False, "all")},
    "SameStep": {(False, ""), (True, ""), ("restart", "all")},
}
OUT_OF_STEP = {"NextStep": {(False, "some"), (True, "some")}, "SameStep": {("restart", "some")}}


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_sequential_hash_bits_fused_step_equals_its_step(aot_eager, mode):
    # Episodes of 4 steps (8 bits, groups of 2): every row restarts, then (after a masked reset of
    # every third row at step 6) the two sets of rows restart at different steps.
    plain, fused, ended = assert_same_shb_rollouts(
        torch.device("cpu"), steps=14, desync=6, bits=8, group=2, pairs=3, autoreset_mode=mode
    )
    assert ended >= 3 * 48 - 16, "restarts of all rows and of some rows must be among the steps compared"
    assert set(fused._fused) == LOCKSTEP[mode] | OUT_OF_STEP[mode] and not plain._fused


def test_sequential_hash_bits_fused_step_on_multi_label_data(aot_eager):
    # Multi-label references are drawn on the host, outside the compiled step.
    data = load_dataset("blobs", num_classes=5, n_per_class=40, dim=8, multi_label=True, query_per_class=4)
    _, fused, ended = assert_same_shb_rollouts(
        torch.device("cpu"), steps=12, num_envs=24, desync=6, dataset=data, bits=8, group=2,
        autoreset_mode="SameStep",
    )  # fmt: skip
    assert ended > 24 and set(fused._fused) == LOCKSTEP["SameStep"] | OUT_OF_STEP["SameStep"]


def test_sequential_hash_bits_fused_step_with_inductor_on_cpu_from_a_snapshot():
    # The backend users get, once on CPU (one graph: its compile takes seconds), continuing an
    # unfused env's snapshot taken out of lockstep: one-step episodes (group = bits), half of the
    # rows reset after the first step, so that at every step half end and the other half restart.
    make = dict(
        num_envs=16, vectorization_mode="vector_entry_point", device=torch.device("cpu"), bits=4, group=4
    )
    plain, fused = gym.make_vec(SHB, **make), gym.make_vec(SHB, fuse_step=True, **make)
    actions = torch.randint(0, 2, (16, 4), generator=torch.Generator().manual_seed(0))
    plain.reset(seed=0)
    plain.step(actions)
    plain.reset(options={"reset_mask": torch.arange(16) % 2 == 0})
    fused.reset(seed=9)
    fused.unwrapped.set_state(plain.unwrapped.get_state())
    for t in range(6):
        assert_same_results(plain.step(actions), fused.step(actions), f"step {t}")
    assert set(fused.unwrapped._fused) == {(True, "some")}


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_sequential_hash_bits_fused_step_with_inductor_on_cuda(mode):
    # 16-step episodes (group 1); a masked reset at step 18 puts every third row out of step.
    _, fused, ended = assert_same_shb_rollouts(
        "cuda", steps=40, num_envs=4096, desync=18, bits=16, autoreset_mode=mode
    )
    assert ended > 4096 and set(fused._fused) == LOCKSTEP[mode] | OUT_OF_STEP[mode]


def test_fuse_step_names_the_envs_without_one():
    # Every registered env fuses now: a subclass without a fused step stands in for a future one.
    from hashing_gym.envs.rank_list_hash_vector import RankListHashVectorEnv

    class Unfused(RankListHashVectorEnv):
        fuses = False

    with pytest.raises(ValueError, match="Unfused has no fused step"):
        Unfused(num_envs=4, device=torch.device("cpu"), fuse_step=True)


def test_unfused_env_is_unchanged_by_the_option():
    envs = gym.make_vec("BinaryCodeTravel-v0", num_envs=4, vectorization_mode="vector_entry_point")
    assert envs.unwrapped.fuse_step is False
    obs, _ = envs.reset(seed=0)
    assert isinstance(obs["code"], np.ndarray)


def test_many_fused_envs_in_one_process(aot_eager):
    # dynamo allows 8 compilations per code object: each env compiles its own copy of the step.
    envs = []
    for max_steps in range(1, 11):
        env = gym.make_vec(
            "BinaryCodeTravel-v0",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            device=torch.device("cpu"),
            max_steps=max_steps,
            fuse_step=True,
        )
        env.reset(seed=0)
        envs.append(env)
    for max_steps, env in enumerate(envs, start=1):
        _, _, _, truncated, _ = env.step(torch.zeros(2, dtype=torch.int64))
        assert truncated.tolist() == [max_steps == 1] * 2
