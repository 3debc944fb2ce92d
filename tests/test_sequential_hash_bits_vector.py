import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vector_parity import (
    assert_rollouts_equal,
    assert_same,
    make_pair,
    reset_both,
    rollout,
    run_parity,
    step_both,
    to_numpy,
)

import hashing_gym  # noqa: F401
from hashing_gym.data import load_dataset
from hashing_gym.envs import InvalidActionError, ResetNeededError, SequentialHashBitsEnv, encode_sequential
from hashing_gym.envs.core import sequential_hash_bits as core
from hashing_gym.envs.sequential_hash_bits_vector import SequentialHashBitsVectorEnv

ENV_ID = "SequentialHashBits-v0"
DEVICES = ["cpu", torch.device("cpu")]  # numpy, and the torch code on the CPU


@pytest.fixture(scope="module")
def lonely():
    """A class of one training item: it has no positive, hence no triplet."""
    features = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    labels = np.array([0] * 15 + [1] * 15 + [2] * 2)
    return load_dataset("features", features=features, labels=labels, query_per_class=1)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"group": 4, "pairs": 5}, {"group": 2, "flatten": True, "margin": 1.0}],
    ids=["group1", "group4", "flatten-margin"],
)
def test_matches_single_envs_step_by_step(device, kwargs):
    ours, sync = make_pair(ENV_ID, 3, device, **kwargs)
    run_parity(ours, sync, steps=40)  # 2.5 episodes at group 1, 10 at group 4


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_matches_single_envs_on_multi_label_data(device, multi_label):
    ours, sync = make_pair(ENV_ID, 4, device, dataset=multi_label, bits=8, group=2)
    run_parity(ours, sync, steps=13)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_items_without_triplets_match_single_envs(device, lonely):
    ours, sync = make_pair(ENV_ID, 4, device, dataset=lonely, bits=4)
    alone = int(np.flatnonzero(lonely.train.labels == 2)[0])  # the only item of class 2 left in train
    reset_both(ours, sync, "reset", seed=0, options={"index": alone})
    for t in range(4):
        _, rewards, _, _, info = step_both(ours, sync, np.ones((4, 1), dtype=np.uint8), f"step {t}")
        assert (rewards == 0).all() and (info["accuracy"] == 0.5).all()


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_same_step_autoreset_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, mode=AutoresetMode.SAME_STEP, dataset=small, bits=8, group=4)
    run_parity(ours, sync, steps=7)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_disabled_autoreset_with_reset_mask_matches_sync(device, small):
    ours, sync = make_pair(ENV_ID, 2, device, mode=AutoresetMode.DISABLED, dataset=small, bits=4, group=2)
    reset_both(ours, sync, "reset", seed=4)
    actions = np.array([[1, 0], [0, 1]])
    for t in range(2):
        step_both(ours, sync, actions, f"step {t}")
    with pytest.raises(RuntimeError, match="reset_mask"):
        ours.step(actions)
    reset_both(ours, sync, "masked reset", options={"reset_mask": np.array([False, True])})
    reset_both(ours, sync, "masked reset", options={"reset_mask": np.array([True, False])})
    step_both(ours, sync, actions, "after the resets")


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_set_code_bank_mid_episode_matches_single_envs(device, small):
    ours, sync = make_pair(ENV_ID, 3, device, dataset=small, bits=8, group=2)
    reset_both(ours, sync, "reset", seed=1, options={"index": np.int64(3)})
    rng = np.random.default_rng(2)
    step_both(ours, sync, rng.integers(0, 2, size=(3, 2)), "step 0")
    bank = rng.integers(0, 2, size=(small.train.n, 8))
    ours.unwrapped.set_code_bank(bank)
    for env in sync.envs:
        env.unwrapped.set_code_bank(bank)
    for t in range(1, 4):
        step_both(ours, sync, rng.integers(0, 2, size=(3, 2)), f"step {t}")
    expected = np.stack([env.unwrapped.code_bank for env in sync.envs])
    assert_same(to_numpy(ours.unwrapped.code_bank), expected, "bank")


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_batched_streams_reward_as_the_single_env_does(device, multi, small, multi_label):
    """With rng="batched": valid references, and rewards that the single env's formula gives."""
    data = multi_label if multi else small
    envs = SequentialHashBitsVectorEnv(num_envs=5, dataset=data, device=device, bits=8, group=2, pairs=6)
    single = SequentialHashBitsEnv(dataset=data, bits=8, group=2, pairs=6)
    single.reset(seed=0)
    labels = data.train.labels
    sets = labels.astype(bool) if multi else np.eye(data.num_classes, dtype=bool)[labels]
    for seed in (0, 1):
        obs, info = to_numpy(envs.reset(seed=seed))
        bank = to_numpy(envs.code_bank)
        references = to_numpy(envs._state.references)
        items = info["index"]
        shares = (sets[items][:, None, :] & sets[references]).any(axis=2)
        assert shares[:, :6].all() and not shares[:, 6:].any()  # P positives, then P negatives
        assert (references != items[:, None]).all()
        codes = np.random.default_rng(seed).integers(0, 2, size=(5, 8))
        total = np.zeros(5)
        for t in range(4):
            _, rewards, terminated, _, info = to_numpy(envs.step(codes[:, 2 * t : 2 * t + 2]))
            total += rewards
        assert terminated.all()
        for i in range(5):
            single.set_code_bank(bank[i])
            expected = single.rewards(codes[i : i + 1], references[i : i + 1, :6], references[i : i + 1, 6:])
            np.testing.assert_allclose(total[i], expected.sum(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(to_numpy(envs.code_bank)[np.arange(5), items], codes)


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
def test_same_seed_same_trajectory_and_different_seed_differs(device, rng, small):
    def make():
        return SequentialHashBitsVectorEnv(num_envs=3, dataset=small, device=device, rng=rng, bits=4, group=2)

    first, second = rollout(make(), 7, 6), rollout(make(), 7, 6)
    assert_rollouts_equal(first, second)
    other = rollout(make(), 8, 6)
    assert not np.array_equal(first[0][1]["index"], other[0][1]["index"])


def sign_policy(feature_dim, bits, group):
    """A deterministic policy of the observation: the signs of fixed projections of the features."""
    weights = np.random.default_rng(0).normal(size=(feature_dim, bits))

    def act(obs):
        obs = to_numpy(obs)
        columns = obs["step"][:, None] * group + np.arange(group)
        return (np.take_along_axis(obs["features"] @ weights, columns, axis=1) > 0).astype(np.uint8)

    return act


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next", "same"])
@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_rows_agree_with_encode_sequential_and_the_single_env_rewards(
    device, rng, mode, multi, small, multi_label
):
    """Every row, in every mode: the codes of encode_sequential, the rewards of the single env's formula."""
    data, bits, group, pairs = (multi_label if multi else small), 8, 2, 5
    envs = SequentialHashBitsVectorEnv(
        num_envs=4,
        dataset=data,
        device=device,
        rng=rng,
        autoreset_mode=mode,
        bits=bits,
        group=group,
        pairs=pairs,
    )
    single = SequentialHashBitsEnv(dataset=data, bits=bits, group=group, pairs=pairs)
    single.reset(seed=0)
    act = sign_policy(data.train.features.shape[1], bits, group)
    obs, info = envs.reset(seed=5)
    for episode in range(2):  # the second episode starts from the autoreset
        if episode and mode == AutoresetMode.NEXT_STEP:
            obs, rewards, terminated, _, info = to_numpy(envs.step(np.zeros((4, group), dtype=np.uint8)))
            assert (rewards == 0).all() and not terminated.any()
        items, bank = to_numpy(info["index"]), to_numpy(envs.code_bank)
        state = envs._state
        references = np.where(to_numpy(state.valid)[:, None], to_numpy(state.references), -1)
        stepped = []
        for _ in range(bits // group):
            obs, rewards, terminated, _, info = envs.step(act(obs))
            stepped.append(to_numpy(rewards))
        assert to_numpy(terminated).all()
        final = to_numpy(info["final_obs"] if mode == AutoresetMode.SAME_STEP else obs)["code"]
        codes = encode_sequential(lambda o, s: (act(o), None), data.train.features[items], bits, group)
        np.testing.assert_array_equal(final, codes)
        for i in range(4):
            single.set_code_bank(bank[i])
            expected = single.rewards(
                codes[i : i + 1], references[i : i + 1, :pairs], references[i : i + 1, pairs:]
            )
            np.testing.assert_array_equal(np.array(stepped)[:, i], expected[0])


def test_torch_backend_returns_tensors_on_its_device(small):
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, backend="torch", bits=4, group=4)
    obs, info = envs.reset(seed=0)
    assert all(isinstance(v, torch.Tensor) for v in obs.values())
    obs, rewards, terminated, truncated, info = envs.step(torch.ones((2, 4), dtype=torch.int64))
    for value in (obs["code"], rewards, terminated, truncated, info["accuracy"], info["_index"]):
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    assert obs["code"].dtype == torch.int8 and obs["step"].dtype == torch.int64
    assert rewards.dtype == torch.float64
    flat = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, backend="torch", bits=4, flatten=True)
    obs, _ = flat.reset(seed=0)
    assert obs.shape == flat.observation_space.shape and obs.dtype == torch.float32


def test_make_vec_through_the_registry():
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", bits=8, group=2)
    assert isinstance(envs, SequentialHashBitsVectorEnv)
    assert envs.single_action_space == gym.spaces.MultiBinary(2)
    assert envs.action_space.shape == (3, 2)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    obs, *_ = envs.step(np.ones((3, 2), dtype=np.int8))
    assert envs.observation_space.contains(obs)


def test_gymnasium_episode_statistics_wrapper_sees_whole_episodes(small):
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        SequentialHashBitsVectorEnv(num_envs=3, dataset=small, bits=8, group=4)
    )
    envs.reset(seed=0)
    envs.step(np.ones((3, 4)))
    _, _, terminated, _, info = envs.step(np.zeros((3, 4)))
    assert terminated.all() and info["_episode"].all()
    assert (info["episode"]["l"] == 2).all()  # T = bits / group steps
    np.testing.assert_allclose(info["episode"]["r"], info["accuracy"] - 0.5, atol=1e-6)  # float32 returns


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
def test_bad_actions_raise(device, small):
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small, device=device, group=2)
    with pytest.raises(RuntimeError, match="call reset"):
        envs.step(np.zeros((2, 2)))
    envs.reset(seed=0)
    for bad in (np.zeros((2, 1)), np.zeros((3, 2)), np.full((2, 2), 2), np.zeros(2), [[0, 1], [1, 0.5]]):
        with pytest.raises(InvalidActionError, match="not in"):
            envs.step(bad)


def test_bad_arguments_raise(small):
    for bad in (0, -1, False):
        with pytest.raises(ValueError, match="num_envs"):
            SequentialHashBitsVectorEnv(num_envs=bad, dataset=small)
    with pytest.raises(ValueError, match="device"):
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, device="tpu:0")
    with pytest.raises(ValueError, match="group"):  # the single env's checks apply
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, bits=16, group=3)
    with pytest.raises(ValueError, match="rng"):
        SequentialHashBitsVectorEnv(num_envs=2, dataset=small, rng="shared")
    envs = SequentialHashBitsVectorEnv(num_envs=2, dataset=small)
    with pytest.raises(ValueError, match="shape"):
        envs.set_code_bank(np.zeros((small.train.n, 15), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        envs.set_code_bank(np.zeros((2, small.train.n, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="index"):
        envs.reset(options={"index": -1})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_single_envs_step_by_step():
    ours, sync = make_pair(ENV_ID, 8, "cuda", group=4)
    run_parity(ours, sync, steps=10)


# ------------------------------------------------------------------------------------------------
# Masked steps: rows out of step (after a masked reset), nothing read back, the host's clock
# ------------------------------------------------------------------------------------------------

MASKED_MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]
MODE_IDS = ["next", "same"]


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("mode", MASKED_MODES, ids=MODE_IDS)
def test_rows_out_of_step_match_single_envs(device, mode, small):
    # Per-env streams: after a masked reset, episodes end and restart at other steps in some rows.
    ours, sync = make_pair(ENV_ID, 5, device, mode=mode, dataset=small, bits=6, group=2)
    reset_both(ours, sync, "reset", seed=2)
    rng = np.random.default_rng(4)
    for t in range(14):
        if t in (2, 7):
            mask = np.array([True, False, t == 7, True, False])
            reset_both(ours, sync, f"masked reset at {t}", options={"reset_mask": mask})
        step_both(ours, sync, rng.integers(0, 2, size=(5, 2)), f"step {t}")


def episode_start(envs, i):
    """Row ``i``'s item, references (-1: no triplet) and bank, as its episode starts (copies)."""
    state = envs._state
    references = to_numpy(state.references)[i].copy()
    if not to_numpy(state.valid)[i]:
        references[:] = -1
    return int(to_numpy(state.item)[i]), references, to_numpy(state.bank)[i].copy()


@pytest.mark.parametrize("device", DEVICES, ids=["numpy", "torch"])
@pytest.mark.parametrize("mode", MASKED_MODES, ids=MODE_IDS)
def test_batched_rows_out_of_step_follow_the_single_env_rules(device, mode, small):
    """rng="batched", rows out of step: every episode of every row is one the single env would play.

    Its rewards are the single env's for its code, references and bank; it lasts T steps; it starts
    with nothing decided; its finished code replaces its item's row of the bank (and only that row).
    """
    n, bits, group, pairs = 6, 8, 2, 4
    envs = SequentialHashBitsVectorEnv(
        num_envs=n, dataset=small, device=device, bits=bits, group=group, pairs=pairs, autoreset_mode=mode
    )
    single = SequentialHashBitsEnv(dataset=small, bits=bits, group=group, pairs=pairs)
    single.reset(seed=0)
    rng = np.random.default_rng(5)
    envs.reset(seed=1)
    envs.step(rng.integers(0, 2, size=(n, group)))
    # One step apart: with NEXT_STEP, some rows restart on the steps where the others end.
    envs.reset(options={"reset_mask": np.array([True, False, True, False, False, True])})
    starts = {i: episode_start(envs, i) for i in range(n)}  # the rows outside the mask: not checked
    fresh = {0, 2, 5}
    played, rewards = {i: [] for i in range(n)}, {i: [] for i in range(n)}
    next_step, checked, banked = mode == AutoresetMode.NEXT_STEP, 0, {}  # banked: banks at episode ends
    restarting = np.zeros(n, dtype=bool)  # NEXT_STEP: the rows that ended at the last step
    for t in range(20):
        actions = rng.integers(0, 2, size=(n, group))
        obs, reward, terminated, truncated, info = to_numpy(envs.step(actions))
        assert not truncated.any()
        for i in np.flatnonzero(restarting):  # they restart instead of stepping
            assert reward[i] == 0 and not terminated[i], f"step {t}, row {i}"
            assert obs["step"][i] == 0 and not obs["decided"][i].any()
            starts[i] = episode_start(envs, i)
            np.testing.assert_array_equal(starts[i][2], banked[i], err_msg=f"step {t}: bank of row {i}")
        bank = to_numpy(envs._state.bank)
        for i in np.flatnonzero(~restarting):
            played[i].append(actions[i])
            rewards[i].append(reward[i])
            if not terminated[i]:
                continue
            if i in fresh:  # an episode seen from its start
                item, references, start_bank = starts[i]
                code = np.concatenate(played[i])
                final = obs["code"][i] if next_step else to_numpy(info["final_obs"])["code"][i]
                assert len(played[i]) == bits // group and (final == code).all(), f"step {t}, row {i}"
                single.set_code_bank(start_bank)
                expected = single.rewards(code[None], references[None, :pairs], references[None, pairs:])[0]
                np.testing.assert_array_equal(np.array(rewards[i]), expected, err_msg=f"step {t}, row {i}")
                start_bank[item] = code
                np.testing.assert_array_equal(bank[i], start_bank)
                checked += 1
            fresh.add(int(i))
            played[i], rewards[i], banked[i] = [], [], bank[i].copy()
            if not next_step:  # restarted at once
                assert obs["step"][i] == 0 and not obs["decided"][i].any()
                starts[i] = episode_start(envs, i)
        restarting = terminated if next_step else restarting
    assert checked >= 12


@pytest.mark.parametrize("mode", MASKED_MODES, ids=MODE_IDS)
@pytest.mark.parametrize("multi", [False, True], ids=["single-label", "multi-label"])
def test_masked_restarts_draw_what_a_reset_of_the_restarting_rows_draws(mode, multi, small, multi_label):
    """The batched torch stream of masked restarts: that of a reset of just those rows, in row order.

    Whether all rows restart or some (after a masked reset), a restart of k rows draws k items and
    their references, as the row-by-row step always has (numpy's stream for multi-label references).
    """
    n, bits, group = 6, 4, 2
    envs = SequentialHashBitsVectorEnv(
        num_envs=n, dataset=multi_label if multi else small, device=torch.device("cpu"), bits=bits,
        group=group, autoreset_mode=mode, check_actions=False,
    )  # fmt: skip
    actions = torch.ones((n, group), dtype=torch.uint8)
    envs.reset(seed=0)
    envs.step(actions)
    envs.reset(options={"reset_mask": np.array([True, False, True, True, False, False])})
    counts = set()
    for t in range(9):
        before = envs.get_state(banks=False)
        generator = torch.Generator()
        generator.set_state(torch.from_numpy(before["generator"]))
        host = None
        if multi:
            host = core.NumpyDraws(np.random.Generator(np.random.PCG64()))
            host.rng.bit_generator.state = before["np_random"]
        if mode == AutoresetMode.NEXT_STEP:
            restarting = before["ended"]
        else:
            restarting = before["arrays"]["steps_taken"] == bits // group - 1
        envs.step(actions)
        k = int(restarting.sum())
        if not k:
            continue
        counts.add(k)
        _, items, references = core.draw_start(envs.params, core.TorchDraws(generator), k, 0, None, host)
        state = envs._state
        where = torch.from_numpy(restarting)
        assert torch.equal(state.item[where], items), f"step {t}"
        assert torch.equal(state.references[where], references.clip(min=0)), f"step {t}"
        assert torch.equal(state.valid[where], (references >= 0).all(dim=1)), f"step {t}"
        assert torch.equal(generator.get_state(), envs._torch_generator().get_state()), "draws nothing more"
    assert counts == {3}, "some rows (3 of 6) restart at once, out of step with the other 3"


def spy_on_readbacks(monkeypatch):
    """A list that records every call that reads a tensor back to the host (or to a Python value)."""
    calls = []
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("mode", MASKED_MODES, ids=MODE_IDS)
def test_masked_torch_steps_read_nothing_back(mode, small, monkeypatch):
    # What a device would have to wait for: a tensor read back to the host. (On CUDA, the test
    # below checks it with torch's own sync detection.) Steps of all rows, restarts of all rows,
    # then of some rows (out of step after a masked reset).
    def make(check_actions):
        return SequentialHashBitsVectorEnv(
            num_envs=6, dataset=small, device=torch.device("cpu"), bits=4, group=2, autoreset_mode=mode,
            check_actions=check_actions,
        )  # fmt: skip

    actions = torch.ones((6, 2), dtype=torch.uint8)
    envs = make(check_actions=False)
    envs.reset(seed=0)
    calls = spy_on_readbacks(monkeypatch)
    for _ in range(6):
        envs.step(actions)
    monkeypatch.undo()
    envs.reset(options={"reset_mask": np.array([True, False, True, False, False, True])})
    calls = spy_on_readbacks(monkeypatch)
    for _ in range(6):
        envs.step(actions)
    assert calls == []
    checked = make(check_actions=True)  # the spy sees the range check's read
    monkeypatch.undo()
    checked.reset(seed=0)
    calls = spy_on_readbacks(monkeypatch)
    checked.step(actions)
    assert calls


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=["next", "same", "disabled"])
@pytest.mark.parametrize("rng", ["batched", "per_env"])
def test_the_host_clock_counts_the_steps_the_state_holds(mode, rng, small):
    # The host's count of each row's steps (which tells which rows end and restart) is the state's
    # own, through steps, refused steps, autoresets and masked resets, in every mode.
    envs = SequentialHashBitsVectorEnv(
        num_envs=5, dataset=small, device=torch.device("cpu"), rng=rng, bits=6, group=2, autoreset_mode=mode
    )
    generator = np.random.default_rng(0)
    envs.reset(seed=0)
    clock, refused = envs._clock, set()
    for t in range(40):
        ended = to_numpy(envs._state.step) == 3
        draw = generator.random()
        if mode == AutoresetMode.DISABLED and ended.any() and draw < 0.3:
            with pytest.raises(ResetNeededError):
                envs.step(np.zeros((5, 2), dtype=np.int64))
            refused.add("reset needed")
        elif mode == AutoresetMode.DISABLED and ended.any() or draw < 0.2:
            mask = ended if ended.any() and generator.random() < 0.5 else generator.random(5) < 0.5
            if mask.any():
                envs.reset(options={"reset_mask": mask})
        elif draw < 0.35:
            with pytest.raises(InvalidActionError):
                envs.step(np.full((5, 2), 2))
            refused.add("invalid")
        else:
            envs.step(generator.integers(0, 2, size=(5, 2)))
        np.testing.assert_array_equal(clock.steps(), to_numpy(envs._state.step), err_msg=f"call {t}")
    assert refused == ({"invalid", "reset needed"} if mode == AutoresetMode.DISABLED else {"invalid"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("mode", MASKED_MODES, ids=MODE_IDS)
def test_cuda_masked_steps_never_wait_for_the_device(mode, fuse):
    """torch's sync detection ("error") around the steps: lockstep, then rows out of step."""
    envs = SequentialHashBitsVectorEnv(
        num_envs=1024,
        device="cuda",
        bits=4,
        group=2,
        autoreset_mode=mode,
        check_actions=False,
        fuse_step=fuse,
    )
    actions = torch.randint(0, 2, (1024, 2), device="cuda")

    def play(check):
        envs.reset(seed=0)
        for part in range(2):
            if part:  # half the rows out of step
                envs.reset(options={"reset_mask": np.arange(1024) % 2 == 0})
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error" if check else 0)
            try:
                for _ in range(7):
                    envs.step(actions)
            finally:
                torch.cuda.set_sync_debug_mode(0)

    play(check=False)  # the first pass compiles the fused steps
    play(check=True)
