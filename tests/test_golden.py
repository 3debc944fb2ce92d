"""Golden reference tests: today's results of the envs, encoders and ranking metrics, replayed.

``tests/golden/record.py`` recorded every array of ``tests/golden/*.npz``; these tests replay the very
same calls (its scenario functions, fed a ``Checker`` instead of a ``Recorder``) and compare: bitwise
for numpy paths and all integer and bool data, floats of the torch paths to ``TORCH_ATOL``. A failure
lists every differing key (``CASE/PATH``; the manifest inside each file says which call produced it).

Re-record only on purpose (a deliberate behaviour change): ``python -m tests.golden.record``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden import record


@pytest.fixture(scope="module", params=list(record.GROUPS))
def golden(request):
    group = request.param
    expected, manifest = record.load_npz(record.golden_path(group))
    return group, expected, manifest


def test_replay_matches_golden(golden):
    group, expected, manifest = golden
    record.replay(group, expected, manifest).finish()


def test_manifest_lists_every_array(golden):
    group, expected, manifest = golden
    assert manifest["group"] == group
    assert manifest["arrays"] == {key: f"{a.dtype}{list(a.shape)}" for key, a in expected.items()}
    cases = manifest["cases"]
    assert all(any(key.startswith(f"{case}/") for case in cases) for key in expected)
    assert all(any(key.startswith(f"{case}/") for key in expected) for case in cases)
    assert all(entry["call"] for entry in cases.values())


def test_golden_files_are_small_and_match_manifest_json():
    total = sum(record.golden_path(group).stat().st_size for group in record.GROUPS)
    assert total < 2.5 * 2**20, f"golden files take {total / 2**20:.2f} MiB"
    collected = json.loads((record.GOLDEN_DIR / "manifest.json").read_text())
    assert sorted(collected) == sorted(record.GROUPS)
    for group in record.GROUPS:
        assert collected[group] == record.load_npz(record.golden_path(group))[1]


# ---------------------------------------------------------------------------------------------------
# The comparison can fail


def test_compare_is_bitwise_without_tolerance():
    a = np.array([0.1, 0.2, 1 / 3])
    assert record.compare("k", a, a.copy()) is None
    assert record.compare("k", a, np.nextafter(a, 1)) is not None  # one ulp
    assert record.compare("k", a, a.astype(np.float32).astype(np.float64)) is not None
    assert record.compare("k", a.astype(np.float32), a) is not None  # dtype
    assert record.compare("k", a[:2], a) is not None  # shape
    assert record.compare("k", a[None], a) is not None
    i = np.array([1, 2, 3])
    assert record.compare("k", i, i + np.array([0, 0, 1])) is not None
    assert record.compare("k", i.astype(np.int32), i) is not None
    assert record.compare("k", np.array([True]), np.array([False])) is not None
    assert record.compare("k", np.array(["reward:float"]), np.array(["reward:float64"])) is not None


def test_compare_tolerance_applies_to_floats_only():
    a = np.array([0.25, 0.5])
    atol = record.TORCH_ATOL
    assert record.compare("k", a + atol / 10, a, atol) is None
    assert record.compare("k", a + atol * 10, a, atol) is not None
    assert record.compare("k", np.array([1, 2]), np.array([1, 3]), atol) is not None  # ints stay exact
    assert record.compare("k", np.array([0.25], np.float32), a[:1], atol) is not None  # dtype still checked


def perturbed_replay(group, change):
    expected, manifest = record.load_npz(record.golden_path(group))
    expected = dict(expected)
    key = change(expected)
    checker = record.replay(group, expected, manifest)
    with pytest.raises(AssertionError) as failure:
        checker.finish()
    assert key in str(failure.value)
    return str(failure.value)


def test_replay_catches_a_reward_one_ulp_off():
    key = "blobs_b8_g1/episodes/reward"

    def change(expected):
        reward = expected[key].copy()
        reward[3] = np.nextafter(reward[3], 1.0)
        expected[key] = reward
        return key

    message = perturbed_replay("shb_single", change)
    assert "1 difference(s)" in message


def test_replay_catches_an_integer_info_and_missing_or_extra_keys():
    index = "blobs_b8_g1/episodes/info/index"
    gone = "blobs_b16_g4/episodes/reward"

    def change(expected):
        expected[index] = expected[index] + 1
        del expected[gone]
        expected["blobs_b8_g1/episodes/info/new_key"] = np.zeros(3)
        return index

    message = perturbed_replay("shb_single", change)
    assert f"{gone}: not recorded" in message
    assert "blobs_b8_g1/episodes/info/new_key: recorded but not produced" in message


def test_replay_of_a_torch_case_fails_beyond_its_tolerance_only():
    key = "torch_batched_NEXT_STEP/rollout/reward"
    expected, manifest = record.load_npz(record.golden_path("shb_vector"))
    assert manifest["cases"]["torch_batched_NEXT_STEP"]["atol"] == record.TORCH_ATOL
    within = dict(expected, **{key: expected[key] + record.TORCH_ATOL / 10})
    record.replay("shb_vector", within, manifest).finish()

    def change(expected):
        expected[key] = expected[key] + record.TORCH_ATOL * 10
        return key

    perturbed_replay("shb_vector", change)


def test_only_the_expert_added_by_issue_18_is_left_out_of_the_replay():
    assert record.ADDED_INFO_KEYS == {
        "SequentialHashBits-v0": ("expert_action",),
        "RankListHash-v0": ("expert_action",),
    }
    infos = {
        "index": 1,
        "_index": 1,
        "expert_action": 2,
        "_expert_action": 3,
        "final_info": {"ap": 1, "_ap": 1, "expert_action": 2, "_expert_action": 1},
        "_final_info": 1,
    }
    kept = {"index": 1, "_index": 1, "final_info": {"ap": 1, "_ap": 1}, "_final_info": 1}
    assert record.without_added(infos, "RankListHash-v0") == kept
    assert record.without_added(infos, "SequentialHashBits-v0") == kept
    assert record.without_added(infos, "BinaryCodeTravel-v0") == infos  # its expert_action is recorded
    assert record.without_added(infos, None) == infos


def test_replay_fails_when_the_calls_change():
    expected, manifest = record.load_npz(record.golden_path("datasets"))
    manifest = json.loads(json.dumps(manifest))
    manifest["cases"]["data/blobs"]["call"] = "load_dataset('blobs', seed=1)"
    with pytest.raises(AssertionError, match="replayed calls differ"):
        record.replay("datasets", expected, manifest).finish()
