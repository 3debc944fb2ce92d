import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import InvalidAction, ResetNeeded
from gymnasium.vector import AutoresetMode
from helpers import no_warnings
from vector_parity import assert_same, make_pair, reset_both, step_both

import hashing_gym  # noqa: F401
from hashing_gym.data import load_dataset
from hashing_gym.envs import BinaryCodeTravelEnv, InvalidActionError, ResetNeededError, encode_batch
from hashing_gym.envs.binary_code_travel_vector import BinaryCodeTravelVectorEnv

ENV_ID = "BinaryCodeTravel-v0"
TORCH_CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def multi_label():
    return load_dataset("blobs", num_classes=5, n_per_class=40, dim=8, multi_label=True, query_per_class=4)


def to_numpy(x):
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(to_numpy(v) for v in x)
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_obs_equal(single_obs, vector_obs, i):
    if isinstance(single_obs, dict):
        for key in single_obs:
            np.testing.assert_array_equal(single_obs[key], vector_obs[key][i], err_msg=key)
    else:
        np.testing.assert_array_equal(single_obs, vector_obs[i])


def assert_info_equal(single_info, vector_info, i):
    assert set(vector_info) == set(single_info) | {f"_{key}" for key in single_info}
    for key, value in single_info.items():
        assert vector_info[f"_{key}"][i], (key, i)  # every sub-env reports every key
        assert vector_info[key][i] == value, (key, i, vector_info[key][i], value)


def run_parity(device, steps, n=5, seed=3, teacher_share=0.5, autoreset_mode="NextStep", **kwargs):
    """Step n single envs (seeds seed..seed+n-1) and the vector env side by side; compare everything."""
    vector = BinaryCodeTravelVectorEnv(
        num_envs=n, device=device, rng="per_env", autoreset_mode=autoreset_mode, **kwargs
    )
    same_step = autoreset_mode == "SameStep"
    singles = [BinaryCodeTravelEnv(**kwargs) for _ in range(n)]
    obs, info = to_numpy(vector.reset(seed=seed))
    expected = [env.reset(seed=seed + i) for i, env in enumerate(singles)]
    for i, (o, inf) in enumerate(expected):
        assert_obs_equal(o, obs, i)
        assert_info_equal(inf, info, i)
    rng = np.random.default_rng(seed)
    done = np.zeros(n, dtype=bool)
    episodes_ended = 0
    for _ in range(steps):
        # Mix the teacher (episodes that reach the eta-ball) with random actions (early ends, flips away).
        random_actions = rng.integers(0, vector.bits + 1, size=n)
        actions = np.where(rng.random(n) < teacher_share, info["expert_action"], random_actions)
        obs, reward, terminated, truncated, info = to_numpy(vector.step(actions))
        assert reward.dtype == np.float64 and terminated.dtype == np.bool_ and truncated.dtype == np.bool_
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: the action is ignored, the reset comes back
                o, inf = env.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, inf = env.step(int(actions[i]))
            if same_step:
                # As SyncVectorEnv: final_obs / final_info only in steps where some sub-env ended.
                ended = info.get("_final_obs", np.zeros(n, dtype=bool))
                assert ended[i] == (te or tr) and info.get("_final_info", ended)[i] == (te or tr)
                if te or tr:  # SAME_STEP: the end goes into the infos, the reset comes back now
                    assert_obs_equal(o, info["final_obs"], i)
                    assert_info_equal(inf, info["final_info"], i)
                    o, inf = env.reset()
            assert_obs_equal(o, obs, i)
            assert_info_equal(inf, {k: v for k, v in info.items() if "final_" not in k}, i)
            assert (reward[i], terminated[i], truncated[i]) == (r, te, tr), i
        done = (terminated | truncated) & (not same_step)
        episodes_ended += int((terminated | truncated).sum())
    return episodes_ended


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"flatten": True, "bits": 32, "history": 3},
        {"init": "zeros", "max_steps": 4, "eta": 0, "sigma": 0.3},
        {"codebook": "hadamard", "split": "query"},
    ],
)
def test_matches_single_envs_step_by_step(device, kwargs):
    episodes = run_parity(device, steps=100, **kwargs)
    assert episodes > 10  # autoresets were exercised


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
@pytest.mark.parametrize("kwargs", [{}, {"flatten": True, "max_steps": 5}])
def test_same_step_autoreset_matches_single_envs(device, kwargs):
    assert run_parity(device, steps=50, autoreset_mode="SameStep", **kwargs) > 10


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_disabled_autoreset_refuses_to_step_ended_envs_until_reset(device):
    vector = BinaryCodeTravelVectorEnv(num_envs=3, device=device, autoreset_mode="DISABLED")
    assert vector.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    assert BinaryCodeTravelVectorEnv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # class untouched
    vector.reset(seed=0)
    _, _, terminated, _, _ = vector.step(np.array([16, 0, 0]))
    assert to_numpy(terminated).tolist() == [True, False, False]
    with pytest.raises(ResetNeededError, match=r"sub-envs \[0\] have ended and autoreset is disabled"):
        vector.step(np.array([0, 0, 0]))
    obs, _ = vector.reset(options={"reset_mask": np.array([True, False, False])})
    _, _, terminated, _, _ = vector.step(np.array([0, 16, 16]))
    assert to_numpy(terminated).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="autoreset_mode must be"):
        BinaryCodeTravelVectorEnv(autoreset_mode="sometimes")


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_matches_single_envs_on_multi_label_data(device, multi_label):
    # Items with several classes (nearest positive codeword as target) and, possibly, every class.
    assert run_parity(device, steps=40, dataset=multi_label, bits=16) > 5


def test_truncation_and_teacher_episode_lengths():
    vector = BinaryCodeTravelVectorEnv(num_envs=6, max_steps=3, rng="per_env")
    vector.reset(seed=0)
    flip_first_bit = np.zeros(6, dtype=np.int64)  # flipping one bit back and forth never terminates
    truncations = []
    for _ in range(8):
        _, reward, terminated, truncated, _ = vector.step(flip_first_bit)
        assert not terminated.any()
        truncations.append(truncated.copy())
    # Steps 1-3, then the reset step, then steps 1-3 again: truncated at the 3rd and 7th calls only.
    expected = [False, False, True, False, False, False, True, False]
    assert [t.all() for t in truncations] == expected and [t.any() for t in truncations] == expected


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_teacher_reaches_the_ball_and_earns_sigma(device):
    vector = BinaryCodeTravelVectorEnv(num_envs=64, device=device)
    obs, info = vector.reset(seed=1)
    total = np.zeros(64)
    ended = np.zeros(64, dtype=bool)
    for _ in range(vector.max_steps):
        obs, reward, terminated, truncated, info = to_numpy(vector.step(info["expert_action"]))
        total += np.where(ended, 0.0, reward)
        assert not truncated[~ended].any()  # the teacher always ends by terminating within bits + 1 steps
        ended |= terminated
    assert ended.all()
    assert (total >= vector.sigma).all()  # every flip of the teacher improves the margin, then +sigma


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_teacher_actions_are_the_flips_toward_the_class_codeword_or_terminate_on_it(device):
    vector = BinaryCodeTravelVectorEnv(num_envs=16, device=device)
    obs, info = vector.reset(seed=2)
    labels = vector.single_env.split.labels
    rng = np.random.default_rng(0)
    for _ in range(12):
        mask, obs, info = to_numpy(vector.teacher_actions()), to_numpy(obs), to_numpy(info)
        assert mask.shape == (16, vector.bits + 1) and mask[np.arange(16), info["expert_action"]].all()
        wrong = obs["code"] != vector.codebook[labels[info["index"]]]
        np.testing.assert_array_equal(mask[:, -1], info["d_pos"] == 0)  # terminate once on the codeword
        np.testing.assert_array_equal(mask[:, :-1], wrong)  # every flip toward it
        obs, _, _, _, info = vector.step(rng.integers(0, vector.bits, size=16))  # random flips, no ends


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_same_seed_same_trajectory_and_different_seed_differs(device):
    def trace(seed):
        vector = BinaryCodeTravelVectorEnv(num_envs=16, device=device, flatten=True)
        obs, _ = vector.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [to_numpy(obs)]
        for _ in range(40):
            obs, reward, terminated, truncated, info = vector.step(rng.integers(0, 17, size=16))
            out += [to_numpy(obs), to_numpy(reward), to_numpy(terminated), to_numpy(info["index"])]
        return out

    a, b, c = trace(5), trace(5), trace(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_reset_without_seed_continues_the_streams():
    vector = BinaryCodeTravelVectorEnv(num_envs=8)
    first = vector.reset(seed=0)[1]["index"]
    second = vector.reset()[1]["index"]
    again = BinaryCodeTravelVectorEnv(num_envs=8)
    assert np.array_equal(again.reset(seed=0)[1]["index"], first)
    assert np.array_equal(again.reset()[1]["index"], second)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_reset_options_index_and_reset_mask(device):
    vector = BinaryCodeTravelVectorEnv(num_envs=4, device=device, init="zeros")
    obs, info = to_numpy(vector.reset(seed=0, options={"index": np.array([0, 5, 7, 9])}))
    assert to_numpy(info["index"]).tolist() == [0, 5, 7, 9]
    np.testing.assert_array_equal(obs["features"], vector.single_env.features[[0, 5, 7, 9]])
    vector.step(np.zeros(4, dtype=np.int64))  # every code now has bit 0 set
    mask = np.array([True, False, True, False])
    obs, info = to_numpy(vector.reset(options={"index": np.array([1, 2, 3, 4]), "reset_mask": mask}))
    # The infos carry the reset sub-envs only (as SyncVectorEnv's); the observations all of them.
    assert info["index"].tolist() == [1, 0, 3, 0] and info["_index"].tolist() == mask.tolist()
    assert all(info[f"_{key}"].tolist() == mask.tolist() for key in ("d_pos", "d_neg", "expert_action"))
    np.testing.assert_array_equal(obs["features"], vector.single_env.features[[1, 5, 3, 9]])
    assert obs["code"][:, 0].tolist() == [0, 1, 0, 1]
    assert obs["history"][[0, 2]].sum() == 0 and obs["history"][[1, 3], 0, 0].tolist() == [1, 1]


def test_spaces_match_the_single_env_and_contain_the_observations():
    for kwargs in ({}, {"flatten": True}):
        vector = BinaryCodeTravelVectorEnv(num_envs=3, **kwargs)
        single = BinaryCodeTravelEnv(**kwargs)
        assert vector.single_observation_space == single.observation_space
        assert vector.single_action_space == single.action_space
        assert vector.action_space == gym.spaces.MultiDiscrete([17, 17, 17])
        assert vector.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        obs, _ = vector.reset(seed=0)
        assert vector.observation_space.contains(obs)
        vector.action_space.seed(0)
        for _ in range(30):
            obs, *_ = vector.step(vector.action_space.sample())
            assert vector.observation_space.contains(obs)


def test_make_vec_through_the_registry():
    with no_warnings():
        envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", bits=32)
        assert isinstance(envs.unwrapped, BinaryCodeTravelVectorEnv)
        obs, info = envs.reset(seed=0)
        assert obs["code"].shape == (3, 32) and info["expert_action"].shape == (3,)
        envs.step(info["expert_action"])
        envs.close()
    torch_envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", device=TORCH_CPU)
    obs, info = torch_envs.reset(seed=0)
    assert isinstance(obs["code"], torch.Tensor) and isinstance(info["expert_action"], torch.Tensor)


def test_gymnasium_wrappers_accept_the_env():
    envs = gym.wrappers.vector.RecordEpisodeStatistics(BinaryCodeTravelVectorEnv(num_envs=4))
    _, info = envs.reset(seed=0)
    returns = []
    for _ in range(20):
        _, _, terminated, truncated, info = envs.step(info["expert_action"])
        if "episode" in info:
            returns += info["episode"]["r"][info["_episode"]].tolist()
    # The teacher's episodes: every flip gains margin, then +sigma (just sigma if it starts in the ball).
    assert len(returns) >= 4 and min(returns) >= 5.0 and max(returns) > 5.0


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_bad_actions_raise(device):
    vector = BinaryCodeTravelVectorEnv(num_envs=3, device=device)
    with pytest.raises(ResetNeededError):
        vector.step(np.zeros(3, dtype=np.int64))
    assert issubclass(ResetNeededError, ResetNeeded)
    vector.reset(seed=0)
    bad = [
        (np.array([0, 17, 0]), r"actions\[1\]=17 is not in Discrete\(17\)"),
        (np.array([0, 1, -1]), r"actions\[2\]=-1"),
        (np.array([0, 1]), r"integers of shape \(3,\).*shape \(2,\)"),
        (np.array([[0, 1, 2]]), r"shape \(1, 3\)"),
        (np.array([0.0, 1.0, 2.0]), "integers of shape .* got float64"),
        (np.array([True, False, True]), "got bool"),
        ([0, 1, "2"], "got <U21"),
    ]
    if isinstance(device, torch.device):
        bad += [(torch.zeros(3), "got torch.float32"), (torch.tensor([0, 99, 0]), r"actions\[1\]=99")]
    for actions, message in bad:
        with pytest.raises(InvalidActionError, match=message) as raised:
            vector.step(actions)
        assert isinstance(raised.value, InvalidAction) and isinstance(raised.value, ValueError)
    vector.step(np.array([0, 1, 16]))  # the env is unharmed


def test_bad_arguments_raise():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"num_envs must be a positive integer, got {bad!r}"):
            BinaryCodeTravelVectorEnv(num_envs=bad)
    with pytest.raises(ValueError, match="device='tpu' is not one of auto, cpu, cuda"):
        BinaryCodeTravelVectorEnv(device="tpu")
    with pytest.raises(ValueError, match="backend must be None or one of"):
        BinaryCodeTravelVectorEnv(backend="jax")
    with pytest.raises(ValueError, match="backend='numpy' runs on device 'cpu' only"):
        BinaryCodeTravelVectorEnv(backend="numpy", device="cuda")
    with pytest.raises(ValueError, match="rng must be one of"):
        BinaryCodeTravelVectorEnv(rng="global")
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        BinaryCodeTravelVectorEnv(bits=0)  # the single env's checks apply
    vector = BinaryCodeTravelVectorEnv(num_envs=2)
    with pytest.raises(ValueError, match=r"options\['index'\]=99999 is out of range"):
        vector.reset(seed=0, options={"index": [0, 99999]})
    vector.reset(seed=0, options={"reset_mask": np.array([True, False])})
    with pytest.raises(ResetNeededError, match="never reset"):  # sub-env 1 has no episode yet
        vector.step(np.array([0, 0]))
    with pytest.raises(ValueError, match="unknown keys"):
        vector.reset(seed=0, options={"indices": [0, 1]})
    with pytest.raises(ValueError, match="seed must be None or an int with rng='batched'"):
        vector.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="seed must be None, an int or a list of 2 ints or None"):
        BinaryCodeTravelVectorEnv(num_envs=2, rng="per_env").reset(seed=[1])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            BinaryCodeTravelVectorEnv(device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_single_envs_step_by_step():
    assert run_parity("cuda", steps=40) > 5
    vector = BinaryCodeTravelVectorEnv(num_envs=1024, device="cuda", check_actions=False)
    obs, info = vector.reset(seed=0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = vector.step(info["expert_action"])
    assert obs["code"].device.type == "cuda" and reward.device.type == "cuda"


def mixed_actions(rng, infos, n, bits):
    """Half the teacher (episodes reach the ball and terminate), half random flips and stops."""
    expert_action = np.asarray(to_numpy(infos["expert_action"]))
    return np.where(rng.random(n) < 0.5, expert_action, rng.integers(0, bits + 1, size=n))


@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_matches_sync_vector_env_with_key_masks(device, mode):
    # SyncVectorEnv over single envs builds the reference infos: values, "_key" masks, final_obs/final_info.
    ours, sync = make_pair(ENV_ID, 4, device, mode, bits=16, max_steps=6)
    _, infos = reset_both(ours, sync, "reset", seed=3)
    rng = np.random.default_rng(0)
    for t in range(60):
        infos = step_both(ours, sync, mixed_actions(rng, infos, 4, 16), f"step {t}")[4]
    mask = np.array([True, False, True, False])
    _, infos = reset_both(ours, sync, "masked reset", options={"reset_mask": mask})
    assert infos["_d_pos"].tolist() == mask.tolist()
    for t in range(20):
        step_both(ours, sync, mixed_actions(rng, infos, 4, 16), f"after masked reset {t}")


@pytest.mark.parametrize("kwargs", [{}, {"flatten": True, "init": "zeros", "max_steps": 5}, {"history": 2}])
def test_numpy_and_torch_on_cpu_give_the_same_rollout(kwargs, multi_label):
    for extra in ({}, {"dataset": multi_label}):
        rollouts = []
        for device in ("cpu", TORCH_CPU):
            vector = BinaryCodeTravelVectorEnv(num_envs=6, device=device, rng="per_env", **kwargs, **extra)
            out = [to_numpy(vector.reset(seed=1))]
            rng = np.random.default_rng(2)
            for _ in range(40):
                out.append(to_numpy(vector.step(mixed_actions(rng, out[-1][-1], 6, vector.bits))))
            rollouts.append(out)
        for t, (a, b) in enumerate(zip(*rollouts, strict=True)):
            for x, y in zip(a, b, strict=True):
                assert_same(x, y, f"step {t}")


@pytest.mark.parametrize(("flatten", "history"), [(False, 10), (True, 3)])
def test_encode_batch_matches_single_envs_step_by_step(flatten, history):
    # encode_batch (zeros start, bits steps) sees, item by item, the single env's observations.
    env = BinaryCodeTravelEnv(bits=16, split="query", init="zeros", flatten=flatten, history=history)
    items = np.arange(0, env.num_items, 3)
    rng = np.random.default_rng(0)
    plan = np.where(rng.random((16, len(items))) < 0.1, 16, rng.integers(0, 16, size=(16, len(items))))
    width = env.feature_dim
    lookup = {row.tobytes(): k for k, row in enumerate(env.features[items])}
    seen = []

    def policy(obs):
        rows = [lookup[f.tobytes()] for f in (obs[:, :width] if flatten else obs["features"])]
        seen.append((rows, obs))
        return plan[len(seen) - 1][rows]

    codes = encode_batch(policy, env.features[items], 16, init="zeros", flatten=flatten, history=history)
    for k, index in enumerate(items):
        obs, _ = env.reset(options={"index": int(index)})
        for t, (rows, batch) in enumerate(seen):
            if k not in rows:
                break
            row = rows.index(k)
            assert_same(batch[row] if flatten else {key: v[row] for key, v in batch.items()}, obs, f"{k} {t}")
            obs, _, terminated, truncated, _ = env.step(int(plan[t][k]))
            if terminated or truncated:
                break
        np.testing.assert_array_equal(codes[k], obs[width : width + 16] if flatten else obs["code"])


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("device", ["cpu", TORCH_CPU])
def test_masked_steps_match_the_row_index_steps(device, mode, multi_label):
    # The all-rows masked step (autoreset by masks) against the host path over row index arrays,
    # same generator stream: rng="batched" on torch draws starts for every row at every step in both.
    for extra in ({}, {"dataset": multi_label}):
        rollouts = []
        for masked in (True, False):
            vector = BinaryCodeTravelVectorEnv(
                num_envs=7, device=device, autoreset_mode=mode, max_steps=5, **extra
            )
            assert vector._masked
            vector._masked = masked
            out = [to_numpy(vector.reset(seed=4))]
            rng = np.random.default_rng(5)
            for _ in range(40):
                out.append(to_numpy(vector.step(mixed_actions(rng, out[-1][-1], 7, vector.bits))))
            mask = np.array([True, False] * 3 + [True])
            out.append(to_numpy(vector.reset(options={"reset_mask": mask})))
            for _ in range(10):
                out.append(to_numpy(vector.step(mixed_actions(rng, out[-1][-1], 7, vector.bits))))
            rollouts.append(out)
        for t, (a, b) in enumerate(zip(*rollouts, strict=True)):
            infos = [a[-1], b[-1]]
            if ("final_obs" in infos[0]) != ("final_obs" in infos[1]):
                # torch's masked SAME_STEP always carries final_*: then nothing ended
                assert not any(info.get("_final_obs", np.zeros(1, bool)).any() for info in infos)
                infos = [{k: v for k, v in info.items() if "final" not in k} for info in infos]
            infos = [dict(info) for info in infos]
            finals = [info.pop("final_obs", None) for info in infos]  # both batched (not SyncVectorEnv's)
            if finals[0] is not None:
                assert_same(finals[0], finals[1], f"step {t} final_obs")
            assert_same(infos[0], infos[1], f"step {t}")
            for x, y in zip(a[:-1], b[:-1], strict=True):
                assert_same(x, y, f"step {t}")


def _no_read_back(*args, **kwargs):
    raise AssertionError("step read a value back from the device")


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_torch_batched_step_reads_nothing_back(mode, monkeypatch):
    # rng="batched", check_actions=False: autoreset, infos and masks stay tensors (on a GPU: no sync).
    vector = BinaryCodeTravelVectorEnv(
        num_envs=8, device=TORCH_CPU, check_actions=False, autoreset_mode=mode, max_steps=3
    )
    _, info = vector.reset(seed=0)
    actions = [torch.randint(0, 17, (8,), generator=torch.Generator().manual_seed(t)) for t in range(12)]
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__index__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, _no_read_back)
        results = [vector.step(a) for a in actions]
    for obs, reward, terminated, truncated, info in results:
        assert all(isinstance(v, torch.Tensor) for v in (reward, terminated, truncated, *obs.values()))
        assert all(isinstance(v, torch.Tensor) for k, v in info.items() if not isinstance(v, dict))
    assert any(bool((t | u).any()) for _, _, t, u, _ in results)  # the autoreset ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_step_does_not_sync():
    vector = BinaryCodeTravelVectorEnv(num_envs=64, device="cuda", check_actions=False, max_steps=3)
    vector.reset(seed=0)
    actions = torch.randint(0, 17, (64,), device="cuda")
    vector.step(actions)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(10):
            vector.step(actions)
    finally:
        torch.cuda.set_sync_debug_mode("default")
