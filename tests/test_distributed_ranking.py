"""Sharded evaluation (hashing_gym.ranking.distributed): bitwise single-process metrics, errors on every rank.

One spawn of three gloo processes runs every sharded case on groups of one, two (global ranks 1 and 2, so
group and global ranks differ) and three ranks, then the bad inputs: each must be the same ValueError on
every rank, and the group must still work after them. The CLI runs twice as real processes: the README's
commands under torchrun, and a missing shard with two ranks (exit 2, one ``error:`` line on each).
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from hashing_gym.ranking import distance_counts, evaluate_retrieval, pack_codes
from hashing_gym.ranking import distributed as sharded

ROOT = Path(__file__).resolve().parents[1]
# The groups of the spawned ranks: size -> global ranks (3: the default group, passed as None).
GROUPS = {1: [0], 2: [1, 2], 3: [0, 1, 2]}
# Seconds before a run of ranks counts as hung (the machine may be loaded: generous).
DEADLINE = 240


def _data(seed, nq, nb, bits, classes, multi=False, duplicates=False):
    """Random codes (few bits: many ties) and labels; with ``duplicates``, database rows copy queries."""
    rng = np.random.default_rng(seed)
    xq = rng.integers(0, 2, (nq, bits), dtype=np.uint8)
    xb = xq[rng.integers(0, nq, nb)] if duplicates else rng.integers(0, 2, (nb, bits), dtype=np.uint8)
    if multi:
        yq = (rng.random((nq, classes)) < 0.3).astype(np.uint8)
        yb = (rng.random((nb, classes)) < 0.3).astype(np.uint8)
    else:
        yq, yb = rng.integers(0, classes, nq), rng.integers(0, classes, nb)
    return xq, yq, xb, yb


# name -> (data arguments, topk, shard sizes per group size): uneven and empty shards, both label kinds,
# one- and two-word codes, topk inside one shard, across shards, and above the database.
CASES = {
    "single 4 bits": ((0, 24, 160, 4, 3), 10, {2: [37, 123], 3: [0, 100, 60]}),
    "multi-hot 70 bits": ((1, 16, 140, 70, 5, True), 40, {2: [140, 0], 3: [50, 0, 90]}),
    "topk above nb": ((2, 12, 90, 6, 4), 1000, {2: [0, 90], 3: [30, 30, 30]}),
    "duplicates, topk 1": ((3, 10, 120, 3, 2, False, True), 1, {2: [61, 59], 3: [1, 118, 1]}),
    "multi-hot 65 classes": ((4, 9, 75, 9, 65, True), 7, {2: [70, 5], 3: [25, 25, 25]}),
}
FOLDER_SIZES = [30, 0, 45, 5, 60]  # the shard folder of case "multi-hot 70 bits" (five shards, one empty)


def _block(name, size, position):
    """Group rank ``position``'s block of case ``name`` among ``size`` ranks: (codes, labels)."""
    _, _, xb, yb = _case(name)
    sizes = CASES[name][2].get(size, [len(xb)])
    start = sum(sizes[:position])
    return xb[start : start + sizes[position]], yb[start : start + sizes[position]]


def _case(name):
    return _data(*CASES[name][0])


def _worker(rank, store, out, folders):
    """One of three ranks: every case on every group it belongs to, then the bad inputs."""
    import torch
    import torch.distributed as dist

    results = {}
    torch.set_num_threads(1)  # three ranks on a small machine: no OpenMP pools fighting over cores
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=3, timeout=timedelta(seconds=60)
        )
        groups = {1: dist.new_group([0]), 2: dist.new_group([1, 2]), 3: None}  # every rank calls new_group
        for name, (_, topk, _) in CASES.items():
            xq, yq, _, _ = _case(name)
            for size, members in GROUPS.items():
                if rank in members:
                    xb, yb = _block(name, size, members.index(rank))
                    results[f"{name}/{size}"] = sharded.evaluate_retrieval_sharded(
                        xq, yq, xb, yb, group=groups[size], topk=topk
                    )
                    # The histograms through the torch code on the CPU (as on a GPU, without one).
                    results[f"torch cpu/{name}/{size}"] = sharded.evaluate_retrieval_sharded(
                        xq, yq, xb, yb, group=groups[size], topk=topk, device=torch.device("cpu")
                    )
        xq, yq, _, _ = _case("single 4 bits")
        xb, yb = _block("single 4 bits", 3, rank)
        counts, relevant = sharded.distance_counts_sharded(xq, yq, xb, yb)
        results["counts"] = [counts.tolist(), relevant.tolist()]
        xq, yq, _, _ = _case("multi-hot 70 bits")
        results["folder/3"] = sharded.evaluate_shard_folder(xq, yq, folders["good"], topk=40)
        if rank in GROUPS[2]:
            results["folder/2"] = sharded.evaluate_shard_folder(
                xq, yq, folders["good"], group=groups[2], topk=40
            )
        results["errors"] = _bad_inputs(rank, folders)
        xq, yq, _, _ = _case("single 4 bits")
        xb, yb = _block("single 4 bits", 3, rank)
        results["after errors"] = sharded.evaluate_retrieval_sharded(xq, yq, xb, yb, topk=10)
        dist.destroy_process_group()
    except BaseException:
        results["traceback"] = traceback.format_exc()
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def _bad_inputs(rank, folders):
    """Each bad input on the default group of three: the message this rank raised."""
    xq, yq, _, _ = _case("single 4 bits")
    xb, yb = _block("single 4 bits", 3, rank)
    mq, my, _, _ = _case("multi-hot 70 bits")
    mb, ml = _block("multi-hot 70 bits", 3, rank)
    flipped = xq.copy()
    flipped[3, 1] ^= 1
    calls = {
        "bits": lambda: sharded.evaluate_retrieval_sharded(
            xq, yq, np.zeros((4, 5)) if rank == 1 else xb, yb[:4] if rank == 1 else yb, topk=10
        ),
        "queries": lambda: sharded.evaluate_retrieval_sharded(
            flipped if rank == 2 else xq, yq, xb, yb, topk=10
        ),
        "topk": lambda: sharded.evaluate_retrieval_sharded(xq, yq, xb, yb, topk=5 if rank == 0 else 10),
        "classes": lambda: sharded.evaluate_retrieval_sharded(mq, my, mb, ml[:, :4] if rank == 2 else ml),
        "label kind": lambda: sharded.evaluate_retrieval_sharded(mq, my, mb, ml[:, 0] if rank == 0 else ml),
        "two ranks": lambda: sharded.evaluate_retrieval_sharded(
            xq, yq, xb, yb, topk=0 if rank in (0, 2) else 10
        ),
        "empty": lambda: sharded.evaluate_retrieval_sharded(xq, yq, xb[:0], yb[:0]),
        "device": lambda: sharded.evaluate_retrieval_sharded(
            xq, yq, xb, yb, device="tpu" if rank == 1 else None
        ),
        "missing shard": lambda: sharded.evaluate_shard_folder(mq, my, folders["missing"]),
        "other bits": lambda: sharded.evaluate_shard_folder(mq, my, folders["other bits"]),
        "other classes": lambda: sharded.evaluate_shard_folder(mq, my, folders["other classes"]),
        "queries vs folder": lambda: sharded.evaluate_shard_folder(xq, yq, folders["good"]),
    }
    messages = {}
    for name, call in calls.items():
        try:
            call()
        except ValueError as error:
            messages[name] = str(error)
        else:
            messages[name] = None
    return messages


def _run_ranks(tmp_path, folders):
    """Spawn the three ranks; fail if any is still running at the deadline (a hang) or failed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(rank, str(tmp_path / "store"), str(tmp_path), folders))
        for rank in range(3)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + DEADLINE
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not hung, f"ranks {hung} still running after {DEADLINE} s"
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    for rank, result in enumerate(results):
        assert "traceback" not in result, f"rank {rank}:\n{result['traceback']}"
    return results


def _folders(tmp_path):
    """The good shard folder of case "multi-hot 70 bits" and three broken copies."""
    _, _, xb, yb = _case("multi-hot 70 bits")
    good = tmp_path / "good"
    sharded.write_shards(good, xb, yb, shards=FOLDER_SIZES)
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "shard_00003.codes.npy").unlink()
    other_bits = tmp_path / "other bits"  # shard 2 from a database of 66-bit codes (same words)
    shutil.copytree(good, other_bits)
    sharded.write_shards(tmp_path / "66 bits", xb[:, :66], yb, shards=FOLDER_SIZES)
    for suffix in (".codes.npy", ".labels.npy", ".json"):
        shutil.copy(tmp_path / "66 bits" / f"shard_00002{suffix}", other_bits / f"shard_00002{suffix}")
    other_classes = tmp_path / "other classes"  # shard 4 from a database of 4 classes
    shutil.copytree(good, other_classes)
    sharded.write_shards(tmp_path / "4 classes", xb, yb[:, :4], shards=FOLDER_SIZES)
    for suffix in (".codes.npy", ".labels.npy", ".json"):
        shutil.copy(tmp_path / "4 classes" / f"shard_00004{suffix}", other_classes / f"shard_00004{suffix}")
    return {
        "good": str(good),
        "missing": str(missing),
        "other bits": str(other_bits),
        "other classes": str(other_classes),
    }


def _warm_kernels():
    """Compile (or load from numba's cache) the chained scan here, once, not in each spawned rank."""
    xq = pack_codes(np.zeros((1, 70), dtype=np.uint8))
    labels = np.zeros((1, 1), dtype=np.int64)
    zeros = np.zeros((1, 71), dtype=np.int64)
    sharded._scan(
        xq,
        xq,
        labels,
        labels,
        False,
        np.ones(1, np.int64),
        zeros,
        zeros.copy(),
        np.zeros((1, 1)),
        np.zeros((1, 1), np.int64),
    )


def test_gloo_ranks_give_bitwise_the_single_process_metrics_and_agree_on_errors(tmp_path):
    folders = _folders(tmp_path)
    _warm_kernels()
    expected = {}
    for name, (_, topk, _) in CASES.items():
        xq, yq, xb, yb = _case(name)
        expected[name] = evaluate_retrieval(xq, yq, xb, yb, topk=topk)
    results = _run_ranks(tmp_path, folders)
    for name in CASES:
        for size, members in GROUPS.items():
            for rank in members:  # == on floats: bitwise (JSON keeps every float64 exactly)
                assert results[rank][f"{name}/{size}"] == expected[name], (name, size, rank)
                assert results[rank][f"torch cpu/{name}/{size}"] == expected[name], (name, size, rank)
    xq, yq, xb, yb = _case("single 4 bits")
    counts, relevant = distance_counts(xq, yq, xb, yb)
    for result in results:
        assert result["counts"] == [counts.tolist(), relevant.tolist()]
        assert result["folder/3"] == expected["multi-hot 70 bits"]
        assert result["after errors"] == expected["single 4 bits"]
    for rank in GROUPS[2]:
        assert results[rank]["folder/2"] == expected["multi-hot 70 bits"]

    wanted = {  # every rank raised the same message, which names the rank (or field) and the problem
        "bits": r"^rank 1: database codes \(this rank's shard\) must be 0/1 \(n, 4\) .* \(4, 5\)$",
        "queries": r"^the ranks disagree on the queries \(a checksum .*\): rank 0 has [0-9a-f]{16}, rank 2 ",
        "topk": r"^the ranks disagree on topk: rank 0 has 5, rank 1 has 10 ",
        "classes": r"^rank 2: query and database multi-hot labels must have the same number of classes, "
        r"got 5 and 4$",
        "label kind": r"^rank 0: query labels are multi-hot \(2-D\) but database labels are class ids",
        "two ranks": r"^rank 0: topk must be a positive integer.* \(ranks 2 failed too\)$",
        "empty": r"^the database is empty: no rank holds an item$",
        "device": r"^rank 1: device='tpu' is not one of auto, cpu, cuda",
        "missing shard": r"^rank 1: .*missing/shard_00003\.codes\.npy is missing$",
        "other bits": r"^rank 1: .*other bits/shard_00002\.json does not match the folder: "
        r"bits 66 \(meta.json: 70\)$",
        "other classes": r"^rank 2: .*shard_00004\.json does not match the folder: classes 4 \(meta.json: 5",
        "queries vs folder": r"^rank 0: the queries: 4-bit codes, but the database has 70-bit codes \(",
    }
    for name, pattern in wanted.items():
        messages = [result["errors"][name] for result in results]
        assert messages[0] is not None and messages == [messages[0]] * 3, (name, messages)
        assert re.search(pattern, messages[0]), (name, messages[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_histograms_on_the_gpu_give_bitwise_the_single_process_metrics(tmp_path, monkeypatch):
    """Pass 1 on the GPU (NCCL's default device, or device="cuda" on gloo): the CUDA kernels, bitwise."""
    import torch.distributed as dist

    from hashing_gym.ranking import _cuda

    launches = []
    real_stats = _cuda.stats
    monkeypatch.setattr(_cuda, "stats", lambda *args: launches.append(1) or real_stats(*args))
    xq, yq, xb, yb = _case("multi-hot 70 bits")
    sharded.write_shards(tmp_path / "db", xb, yb, shards=FOLDER_SIZES)
    expected = evaluate_retrieval(xq, yq, xb, yb, topk=40)
    counts = distance_counts(xq, yq, xb, yb)
    for backend, device in (("nccl", None), ("gloo", "cuda")):
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        try:
            got = sharded.evaluate_retrieval_sharded(xq, yq, xb, yb, topk=40, device=device)
            folder = sharded.evaluate_shard_folder(xq, yq, tmp_path / "db", topk=40, device=device)
            histograms = sharded.distance_counts_sharded(xq, yq, xb, yb, device=device)
        finally:
            dist.destroy_process_group()
        assert got == expected and folder == expected, backend
        np.testing.assert_array_equal(histograms[0], counts[0])
        np.testing.assert_array_equal(histograms[1], counts[1])
        if _cuda._cupy() is not None:  # the kernels ran (without CuPy: numba, still bitwise)
            assert launches, backend
            launches.clear()


def test_shard_folder_round_trip_and_its_checks(tmp_path):
    xq, yq, xb, yb = _case("multi-hot 65 classes")
    meta = sharded.write_shards(tmp_path / "db", xb, yb, shards=[10, 0, 65])
    assert meta["items"] == [10, 0, 65] and meta["bits"] == 9 and meta["classes"] == 65
    assert sorted(p.name for p in (tmp_path / "db").iterdir())[:4] == [
        "meta.json",
        "shard_00000.codes.npy",
        "shard_00000.json",
        "shard_00000.labels.npy",
    ]
    codes = [sharded.open_shards(tmp_path / "db", rank, 2)[1] for rank in range(2)]
    assert [len(blocks) for blocks in codes] == [2, 1]  # shards 0 and 1 (empty), then shard 2
    joined = np.concatenate([c for blocks in codes for c, _ in blocks])
    assert np.array_equal(joined, pack_codes(xb))
    assert np.array_equal(np.concatenate([lab for blocks in codes for _, lab in blocks]), pack_codes(yb))
    assert isinstance(codes[1][0][0], np.memmap)  # memory-mapped, not read
    with pytest.raises(ValueError, match="already holds a shard folder"):
        sharded.write_shards(tmp_path / "db", xb, yb, shards=2)
    with pytest.raises(ValueError, match="summing to 75"):
        sharded.write_shards(tmp_path / "other", xb, yb, shards=[10, 10])
    with pytest.raises(ValueError, match="rank must be an integer in 0..1"):
        sharded.open_shards(tmp_path / "db", 2, 2)

    def broken(name, edit):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "db", folder)
        edit(folder)
        with pytest.raises(ValueError) as error:
            sharded.open_shards(folder, 0, 1)
        return str(error.value)

    assert "meta.json is missing" in broken("no meta", lambda f: (f / "meta.json").unlink())
    assert "is not a 'hashing-gym shards' folder of version 1" in broken(
        "version", lambda f: (f / "meta.json").write_text(json.dumps({**meta, "version": 2}))
    )
    assert "shard_00002.labels.npy is missing" in broken(
        "no labels", lambda f: (f / "shard_00002.labels.npy").unlink()
    )
    assert "shard_00000.codes.npy must be uint64 (10, 1)" in broken(
        "int codes", lambda f: np.save(f / "shard_00000.codes.npy", np.zeros((10, 1), np.int64))
    )
    assert "shard_00000.codes.npy has bits set beyond bit 9" in broken(
        "padding", lambda f: np.save(f / "shard_00000.codes.npy", np.full((10, 1), 1 << 12, np.uint64))
    )
    assert "shard_00002.labels.npy must be uint64 (65, 2)" in broken(
        "narrow labels", lambda f: np.save(f / "shard_00002.labels.npy", np.zeros((65, 1), np.uint64))
    )
    assert "shard_00000.codes.npy is not a readable .npy array" in broken(  # never unpickled
        "pickle", lambda f: np.save(f / "shard_00000.codes.npy", np.array([{}] * 10), allow_pickle=True)
    )
    assert "shard_00000.json does not match the folder: items 11 (meta.json: 10)" in broken(
        "items",
        lambda f: (f / "shard_00000.json").write_text(
            json.dumps({"bits": 9, "labels": "multi-hot", "classes": 65, "items": 11})
        ),
    )


def test_shard_ranges_are_contiguous_in_database_order():
    for items, size in [([5] * 7, 3), ([0, 0, 9, 1, 0], 2), ([4], 3), ([0, 0], 2), ([1, 100, 1, 1], 4)]:
        ranges = sharded.shard_ranges(items, size)
        assert len(ranges) == size
        assert [i for r in ranges for i in r] == list(range(len(items)))  # every shard once, in order
    assert [list(r) for r in sharded.shard_ranges([5] * 6, 3)] == [[0, 1], [2, 3], [4, 5]]


def test_without_an_initialized_group_it_is_a_clear_error():
    xq, yq, xb, yb = _case("single 4 bits")
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        sharded.evaluate_retrieval_sharded(xq, yq, xb, yb)


def test_split_command_writes_the_folder(tmp_path, capsys):
    _, _, xb, yb = _case("single 4 bits")
    np.savez(tmp_path / "db.npz", codes=xb, labels=yb)
    argv = ["--split", str(tmp_path / "db.npz"), "--shards", "3", "--database", str(tmp_path / "shards")]
    assert sharded.main(argv) == 0
    assert "wrote 3 shards of 160 items (4 bits)" in capsys.readouterr().out
    assert json.loads((tmp_path / "shards" / "meta.json").read_text())["items"] == [54, 53, 53]
    assert sharded.main(argv) == 2  # the folder exists now
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith(
        "already holds a shard folder (meta.json): write into a new folder\n"
    )
    assert err.count("\n") == 1
    for args, problem in [
        ([], "--queries is required"),
        (["--queries", "q.npz", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
        (["--queries", "q.npz", "--threads", "0"], "--threads must be a positive integer, got 0"),
    ]:
        assert sharded.main([*args, "--database", str(tmp_path / "shards")]) == 2
        assert capsys.readouterr().err.startswith(f"error: {problem}")


def _readme_commands():
    """The commands of the README's "Sharded evaluation" section (its first code block)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Sharded evaluation", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\w*\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


def test_readme_commands_print_the_single_process_metrics(tmp_path):
    xq, yq, xb, yb = _data(5, 30, 400, 8, 5)
    np.savez(tmp_path / "db.npz", codes=xb, labels=yb)
    np.savez(tmp_path / "queries.npz", codes=xq, labels=yq)
    commands = _readme_commands()
    assert [c[0] for c in commands] == ["python", "torchrun"]
    outputs = []
    for command in commands:
        head = [sys.executable] if command[0] == "python" else [sys.executable, "-m", "torch.distributed.run"]
        process = subprocess.run(
            head + command[1:], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=DEADLINE
        )
        assert process.returncode == 0, process.stderr
        outputs.append(process.stdout)
    printed = dict(line.split(" ", 1) for line in outputs[1].splitlines()[1:-1])
    expected = evaluate_retrieval(xq, yq, xb, yb, topk=1000)
    assert {name: float(value) for name, value in printed.items()} == {
        k: float(v) for k, v in expected.items()
    }
    assert outputs[1].splitlines()[0] == "queries 30, database 400 items on 2 ranks (gloo), 8 bits"
    assert re.fullmatch(r"time [0-9.]+ s, [0-9.e+]+ pairs/s", outputs[1].splitlines()[-1])


def test_a_missing_shard_is_one_error_line_and_exit_2_on_every_rank(tmp_path):
    xq, yq, xb, yb = _data(6, 5, 50, 8, 3)
    sharded.write_shards(tmp_path / "db", xb, yb, shards=4)
    np.savez(tmp_path / "queries.npz", codes=xq, labels=yq)
    (tmp_path / "db" / "shard_00003.labels.npy").unlink()  # rank 1's second shard
    with socket.socket() as probe:  # a free port for the rendezvous (torchrun's environment, by hand)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "hashing_gym.ranking.distributed", "--queries", "queries.npz"]
    command += ["--database", "db", "--timeout", "60"]
    processes = []
    for rank in range(2):
        env = _env() | {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
        }
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        processes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for process in processes:
        try:
            out, err = process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("a rank was still running at the deadline: a hang")
        assert process.returncode == 2
        assert out == ""
        assert err == "error: rank 1: db/shard_00003.labels.npy is missing\n"
