"""agents.checkpoint: what a checkpoint holds, atomic writes, and clear refusals of bad checkpoints."""

import json

import numpy as np
import pytest
import torch

from agents import checkpoint as ckpt
from agents import reinforce, train
from agents.checkpoint import CheckpointError, Checkpoints
from agents.common import save_args


def training_state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rng.random(3)  # a state other than the seed's
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "codes": torch.from_numpy(rng.integers(0, 2, (5, 4), dtype=np.uint8)),
        "curve": [{"env_steps": 10, "map": 0.5}],
        "running_mean": None,
    }


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_torch_round_trip_names_the_trainer_and_keeps_everything(tmp_path):
    state = training_state()
    written = Checkpoints(tmp_path, "reinforce").save_torch(state, 128, 1.5)
    assert written == ckpt.Checkpoint("reinforce", 128, 1.5, "step_128.pt")
    recorded = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert recorded == {
        "format": 1, "trainer": "reinforce", "num_timesteps": 128, "train_seconds": 1.5,
        "model": "step_128.pt", "replay_buffer": None,
    }  # fmt: skip
    checkpoint, loaded = Checkpoints(tmp_path, "reinforce").load_torch()
    assert checkpoint == written
    assert_same(loaded, state)
    # numpy's RNG continues exactly where it was saved.
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["numpy_rng"]
    original = np.random.default_rng()
    original.bit_generator.state = state["numpy_rng"]
    assert restored.random() == original.random()


def test_torch_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    Checkpoints(tmp_path, "drlih").save_torch(training_state(), 4, 0.0)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    Checkpoints(tmp_path, "drlih").load_torch()
    assert calls == [True]


def test_only_the_newest_checkpoint_is_kept(tmp_path):
    checkpoints = Checkpoints(tmp_path, "dqn-torch")
    checkpoints.save_torch({"x": torch.zeros(1)}, 100, 1.0)
    checkpoints.save_torch({"x": torch.ones(1)}, 200, 2.0)
    checkpoints.save_torch({"x": torch.full((1,), 2.0)}, 200, 2.5)  # the same step again: replaced in place
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["state.json", "step_200.pt"]
    checkpoint, state = checkpoints.load_torch()
    assert checkpoint.train_seconds == 2.5 and state["x"].item() == 2.0


def test_a_failing_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path, "reinforce")
    checkpoints.save_torch({"x": torch.ones(3)}, 100, 1.0)

    def half_a_write(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_a_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_torch({"x": torch.zeros(3)}, 200, 2.0)
    # No temporary file left behind, state.json and its file unchanged.
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["state.json", "step_100.pt"]
    checkpoint, state = checkpoints.load_torch()
    assert checkpoint.num_timesteps == 100 and torch.equal(state["x"], torch.ones(3))


def test_a_failing_json_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    ckpt.write_json(path, {"map": 0.5})
    monkeypatch.setattr(ckpt.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(TypeError("not JSON")))
    with pytest.raises(TypeError):
        ckpt.write_json(path, {"map": object()})
    assert json.loads(path.read_text()) == {"map": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_another_trainers_checkpoint_is_refused_naming_it(tmp_path):
    Checkpoints(tmp_path, "dqn-torch").save_torch({"x": torch.zeros(1)}, 8, 0.1)
    with pytest.raises(CheckpointError, match="state.json was written by dqn-torch, not reinforce-torch"):
        Checkpoints(tmp_path, "reinforce-torch").load_torch()
    # Also when the file itself is moved under another trainer's state.json.
    state = tmp_path / "checkpoints" / "state.json"
    state.write_text(state.read_text().replace('"dqn-torch"', '"reinforce-torch"'))
    with pytest.raises(CheckpointError, match=r"step_8.pt was written by dqn-torch, not reinforce-torch"):
        Checkpoints(tmp_path, "reinforce-torch").load_torch()


def test_corrupt_or_missing_files_are_refused_naming_the_file(tmp_path):
    checkpoints = Checkpoints(tmp_path, "reinforce")
    with pytest.raises(CheckpointError, match="the run has no checkpoint to continue from"):
        checkpoints.load_torch()
    assert checkpoints.latest() is None
    checkpoints.save_torch({"x": torch.zeros(1)}, 8, 0.1)
    model = checkpoints.directory / "step_8.pt"
    model.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"{model} is not a readable torch checkpoint"):
        checkpoints.load_torch()
    model.unlink()
    with pytest.raises(CheckpointError, match="names step_8.pt, which is missing"):
        checkpoints.load_torch()
    checkpoints.state_file.write_text('{"trainer": "reinforce", "num_t')
    with pytest.raises(CheckpointError, match=rf"{checkpoints.state_file} is not readable JSON"):
        checkpoints.latest()
    checkpoints.state_file.write_text('{"trainer": "reinforce"}')
    with pytest.raises(CheckpointError, match="is not a checkpoint state"):
        checkpoints.latest()


def test_a_fresh_run_in_a_reused_folder_replaces_another_trainers_checkpoint(tmp_path):
    Checkpoints(tmp_path, "drlih").save_torch({"x": torch.zeros(1)}, 8, 0.1)
    Checkpoints(tmp_path, "reinforce").save_torch({"x": torch.zeros(1)}, 16, 0.1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["state.json", "step_16.pt"]
    assert Checkpoints(tmp_path, "reinforce").latest().trainer == "reinforce"


def test_a_checkpoint_from_before_the_trainer_field_still_resumes(tmp_path):
    checkpoints = Checkpoints(tmp_path, "reinforce")
    checkpoints.directory.mkdir()
    torch.save({"x": torch.ones(1)}, checkpoints.directory / "step_4.pt")
    checkpoints.state_file.write_text('{"num_timesteps": 4, "train_seconds": 0.5, "model": "step_4.pt"}')
    checkpoint, state = checkpoints.load_torch()
    assert checkpoint.trainer == "reinforce" and state["x"].item() == 1.0


def test_sb3_round_trip_with_replay_buffer(tmp_path):
    checkpoints = Checkpoints(tmp_path, "dqn-sb3")
    replay = {"pos": np.int64(3), "full": np.bool_(False), "actions": np.arange(6).reshape(3, 2, 1)}
    written = checkpoints.save_sb3({"counters": {"num_timesteps": 16}}, replay, 16, 3.0)
    assert written == ckpt.Checkpoint("dqn-sb3", 16, 3.0, "step_16.pt", "step_16_replay.npz")
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == [
        "state.json", "step_16.pt", "step_16_replay.npz"
    ]  # fmt: skip
    checkpoint, state, arrays = checkpoints.load_sb3()
    assert checkpoint == written and state == {"counters": {"num_timesteps": 16}}
    np.testing.assert_array_equal(arrays["actions"], replay["actions"])
    (checkpoints.directory / "step_16_replay.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="step_16_replay.npz is not an .npz array file"):
        checkpoints.load_sb3()


@pytest.mark.parametrize("names", [("step_8.zip", None), ("step_8.pt", "step_8_replay.pkl")])
def test_an_sb3_checkpoint_of_the_old_pickle_format_is_refused_unopened(names, tmp_path):
    checkpoints = Checkpoints(tmp_path, "dqn-sb3")
    checkpoints.directory.mkdir()
    state = {"trainer": "dqn-sb3", "num_timesteps": 8, "train_seconds": 1.0}
    state |= {"model": names[0], "replay_buffer": names[1]}
    checkpoints.state_file.write_text(json.dumps(state))
    legacy = names[1] or names[0]
    with pytest.raises(CheckpointError, match=f"{legacy} is in a pickle-based format.*agents.convert"):
        checkpoints.load_sb3()


def test_resume_from_a_corrupt_checkpoint_is_one_error_line_naming_the_file(tmp_path, capsys):
    save_args(tmp_path, reinforce.Args(out=str(tmp_path)), "reinforce")
    checkpoints = Checkpoints(tmp_path, "reinforce")
    checkpoints.save_torch({"x": torch.zeros(1)}, 8, 0.1)
    (checkpoints.directory / "step_8.pt").write_bytes(b"\x00" * 10)
    assert train.main(["reinforce", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "step_8.pt is not a readable torch checkpoint" in err
    assert err.count("\n") == 1
