"""HammingIndex and the device-side loading (_resident) against the functions and a brute-force reference.

CPU tests run everywhere (numpy arrays, torch CPU tensors, DLPack); the CUDA ones (named ``cuda``, so
``pytest -k cuda`` picks them) skip without a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ranking import (
    bad_inputs,
    make_data,
    ref_ap_stable,
    ref_distances,
    ref_histograms,
    ref_relevance,
    ref_tie_aware_direct,
)

from hashing_gym import ranking as R
from hashing_gym.ranking import _cuda, _packing, _resident

TOL = 1e-9
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class DLPackOnly:
    """An array known only through the DLPack protocol (as a CuPy or JAX array is to torch)."""

    def __init__(self, tensor):
        self._tensor = tensor

    def __dlpack__(self, **kwargs):
        return self._tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()


def as_kind(array, kind):
    """``array`` (numpy) as the given input kind."""
    if kind == "numpy":
        return array
    if kind == "torch":
        return torch.as_tensor(array)
    if kind == "float-torch":  # 0/1 as floats (class ids stay integers)
        return torch.as_tensor(array, dtype=torch.float32 if array.ndim == 2 else None)
    if kind == "dlpack":
        return DLPackOnly(torch.as_tensor(array))
    raise AssertionError(kind)


# Few bits and few classes: many items at each distance, so the stable order and the tie-aware AP matter.
CASES = [(4, False, 3), (8, True, 4), (70, False, 5), (130, True, 67)]


@pytest.fixture(params=[True, False], ids=["chunked", "whole"])
def chunks(request, monkeypatch):
    """Tiny chunks (many per array, the last one short) or the default."""
    if request.param:
        monkeypatch.setattr(_resident, "CHUNK_BYTES", 7 * 16)
    return request.param


@pytest.mark.parametrize("kind", ["numpy", "torch", "float-torch", "dlpack"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}bits-{'multi' if c[1] else 'single'}")
def test_index_on_cpu_equals_functions_and_reference(case, kind, chunks):
    bits, multi, classes = case
    xq, yq, xb, yb = make_data(bits, nq=9, nb=150, multi=multi, classes=classes, flip=0.3, seed=bits)
    index = R.HammingIndex(as_kind(xb, kind), as_kind(yb, kind), device="cpu")
    assert (index.ntotal, index.bits, index.device) == (150, bits, torch.device("cpu"))
    queries = (as_kind(xq, kind), as_kind(yq, kind))

    # Bitwise the numpy (numba) backend: the same kernels over the same words.
    assert index.evaluate(*queries, topk=20, radius=1) == R.evaluate_retrieval(
        xq, yq, xb, yb, topk=20, radius=1
    )
    for ties in R.TIES:
        for topk in (None, 1, 17, 500):
            got = index.average_precision(*queries, ties=ties, topk=topk)
            np.testing.assert_array_equal(got, R.average_precision(xq, yq, xb, yb, ties=ties, topk=topk))
        assert index.mean_average_precision(*queries, ties=ties) == R.mean_average_precision(
            xq, yq, xb, yb, ties=ties
        )
    counts, relevant = index.distance_counts(*queries)
    D, I = index.search(queries[0], 40)  # noqa: E741
    want_D, want_I = R.rank(xq, xb, 40)
    assert isinstance(D, torch.Tensor) == (kind != "numpy")
    np.testing.assert_array_equal(np.asarray(D), want_D)
    np.testing.assert_array_equal(np.asarray(I), want_I)

    # And the brute-force reference.
    d, rel = ref_distances(xq, xb), ref_relevance(yq, yb)
    ref_counts, ref_relevant = ref_histograms(d, rel, bits)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(relevant, ref_relevant)
    np.testing.assert_allclose(
        index.average_precision(*queries), [ref_ap_stable(d[i], rel[i]) for i in range(len(xq))], atol=TOL
    )
    np.testing.assert_allclose(
        index.average_precision(*queries, ties="average", topk=17),
        [ref_tie_aware_direct(d[i], rel[i], 17) for i in range(len(xq))],
        atol=TOL,
    )
    order = np.argsort(d, axis=1, kind="stable")[:, :40]
    np.testing.assert_array_equal(np.asarray(I), order)


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_index_on_a_torch_cpu_device_is_the_torch_backend(multi, chunks):
    """device=torch.device("cpu"): the torch code on the CPU (the project's convention), bitwise."""
    xq, yq, xb, yb = make_data(70, nq=9, nb=150, multi=multi, flip=0.3, seed=7)
    index = R.HammingIndex(torch.as_tensor(xb), yb, device=torch.device("cpu"))
    kw = {"backend": "torch", "device": "cpu"}
    assert index.evaluate(xq, yq, topk=20) == R.evaluate_retrieval(xq, yq, xb, yb, topk=20, **kw)
    for ties in R.TIES:
        got = index.average_precision(xq, yq, ties=ties, topk=33)
        np.testing.assert_array_equal(got, R.average_precision(xq, yq, xb, yb, ties=ties, topk=33, **kw))
    D, I = index.search(torch.as_tensor(xq), 30)  # noqa: E741
    assert isinstance(D, torch.Tensor) and D.dtype == torch.int32 and I.dtype == torch.int64
    np.testing.assert_array_equal(I.numpy(), R.rank(xq, xb, 30)[1])
    np.testing.assert_array_equal(D.numpy(), R.rank(xq, xb, 30)[0])


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_torch_backend_loads_on_the_device_path(multi, chunks):
    """backend="torch" (CPU here) goes through the same loading: exact counts, reference-close APs."""
    xq, yq, xb, yb = make_data(12, nq=10, nb=200, multi=multi, flip=0.3, seed=5)
    torch_inputs = [torch.as_tensor(a) for a in (xq, yq, xb, yb)]
    kw = {"backend": "torch", "device": "cpu"}
    for inputs in ((xq, yq, xb, yb), torch_inputs):
        got = R.distance_counts(*inputs, **kw)
        want = R.distance_counts(xq, yq, xb, yb)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        result, expected = (
            R.evaluate_retrieval(*inputs, topk=30, **kw),
            R.evaluate_retrieval(xq, yq, xb, yb, topk=30),
        )
        for key, value in expected.items():
            assert math.isclose(result[key], value, abs_tol=TOL), key
        np.testing.assert_array_equal(R.rank(inputs[0], inputs[2], 33, **kw)[1], R.rank(xq, xb, 33)[1])
        np.testing.assert_array_equal(R.hamming_distance(inputs[0], inputs[2], **kw), ref_distances(xq, xb))


@pytest.mark.parametrize("bits", [1, 8, 63, 64, 65, 200])
def test_device_packing_is_pack_codes(bits, chunks):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2, size=(37, bits), dtype=np.uint8)
    for given in (
        codes,
        codes.astype(bool),
        codes.astype(np.float64),
        torch.as_tensor(codes, dtype=torch.int32),
    ):
        checks = _resident.Checks()
        words = _resident.Codes(given, "codes").load(torch.device("cpu"), checks)
        checks.verify()
        np.testing.assert_array_equal(words.numpy().view(np.uint64), R.pack_codes(codes))
    packed = _packing.torch_pack_rows(torch.as_tensor(codes))
    np.testing.assert_array_equal(packed.numpy().view(np.uint64), _packing.pack_words(codes))


def test_dlpack_input_is_read_without_a_copy():
    codes = torch.randint(0, 2, (20, 16), dtype=torch.uint8)
    host = _resident._normalised(DLPackOnly(codes))  # a CPU array: a numpy view of the same memory
    assert isinstance(host, np.ndarray) and np.shares_memory(host, codes.numpy())
    index = R.HammingIndex(DLPackOnly(codes), DLPackOnly(torch.arange(20) % 3), device="cpu")
    D, I = index.search(DLPackOnly(codes[:4]), 25)  # noqa: E741
    assert isinstance(I, torch.Tensor) and I.shape == (4, 20)  # k capped to ntotal, as rank does
    np.testing.assert_array_equal(I.numpy(), R.rank(codes[:4].numpy(), codes.numpy(), 25)[1])


def test_search_caps_k_and_add_appends():
    xq, yq, xb, yb = make_data(10, nq=5, nb=60, seed=3)
    index = R.HammingIndex(xb[:25], yb[:25], device="cpu")
    D, I = index.search(xq, 1000)  # noqa: E741
    assert D.shape == I.shape == (5, 25) and D.dtype == np.int32 and I.dtype == np.int64
    index.add(torch.as_tensor(xb[25:]), yb[25:])
    assert index.ntotal == 60
    assert index.evaluate(xq, yq) == R.evaluate_retrieval(xq, yq, xb, yb)
    np.testing.assert_array_equal(index.search(xq, 7)[1], R.rank(xq, xb, 7)[1])
    assert "ntotal=60, bits=10, labels=class ids" in repr(index)
    with pytest.raises(
        ValueError, match=r"added and index codes must have the same number of bits, got 9 and 10"
    ):
        index.add(xb[:3, :9], yb[:3])
    with pytest.raises(
        ValueError, match=r"added labels are multi-hot \(2-D\) but index labels are single-label"
    ):
        index.add(xb[:3], np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"added codes must hold only 0 and 1, got 7 at index \(1, 2\)"):
        bad = xb[:3].copy()
        bad[1, 2] = 7
        index.add(bad, yb[:3])
    assert index.ntotal == 60  # a failed add leaves the index as it was


def _index_call(overrides):
    """``mean_average_precision`` of test_ranking's bad-input table, through a HammingIndex."""
    xq, yq, xb, yb = make_data(8, nq=3, nb=10, seed=0)
    args = {"xq": xq, "yq": yq, "xb": xb, "yb": yb, **overrides}
    kwargs = {key: args[key] for key in ("ties", "topk") if key in args}
    index = R.HammingIndex(args["xb"], args["yb"], device="cpu")
    return index.mean_average_precision(args["xq"], args["yq"], **kwargs)


# The table's rows about the arrays and the metric's arguments (not backend/device: an index has neither).
INDEX_ROWS = [
    row
    for row in bad_inputs
    if row[0] is R.mean_average_precision and not {"backend", "device"} & set(row[1])
]


@pytest.mark.parametrize(("overrides", "match"), [row[1:] for row in INDEX_ROWS])
def test_bad_inputs_raise_the_functions_messages(overrides, match):
    """Every bad array of test_ranking's table: the same message from the index and the torch backend."""
    with pytest.raises(ValueError, match=match):
        _index_call(overrides)
    xq, yq, xb, yb = make_data(8, nq=3, nb=10, seed=0)
    args = {"xq": xq, "yq": yq, "xb": xb, "yb": yb, **overrides}
    positional = [args.pop(name) for name in ("xq", "yq", "xb", "yb")]
    with pytest.raises(ValueError, match=match):
        R.mean_average_precision(*positional, backend="torch", device="cpu", **args)


def test_bad_values_found_on_the_device_name_the_first_one(chunks):
    """Tensors: value checks on the device; the message names the first bad value and where it is."""
    xq, yq, xb, yb = make_data(8, nq=3, nb=40, seed=0)
    codes = torch.as_tensor(xb, dtype=torch.float32)
    codes[31, 5] = 0.5
    codes[35, 0] = 3.0
    with pytest.raises(
        ValueError, match=r"database codes must hold only 0 and 1, got 0.5 at index \(31, 5\)"
    ):
        R.HammingIndex(codes, yb, device="cpu")
    index = R.HammingIndex(xb, yb, device="cpu")
    labels = torch.zeros((3, 4), dtype=torch.bfloat16)  # no numpy dtype: stays a tensor
    labels[2, 1] = 2
    with pytest.raises(
        ValueError, match=r"query labels are multi-hot \(2-D\) but database labels are single"
    ):
        index.evaluate(xq, labels)
    multi = R.HammingIndex(xb, (yb[:, None] == np.arange(4)).astype(np.uint8), device="cpu")
    with pytest.raises(
        ValueError, match=r"query labels \(multi-hot\) must hold only 0 and 1, got 2.0 at index \(2, 1\)"
    ):
        multi.evaluate(xq, labels)
    with pytest.raises(
        ValueError, match=r"query and database codes must have the same number of bits, got 9 and 8"
    ):
        index.search(np.zeros((2, 9), np.uint8), 3)
    with pytest.raises(ValueError, match=r"k must be a positive integer, got 0"):
        index.search(xq, 0)
    with pytest.raises(ValueError, match=r"query codes is empty: shape \(0, 8\)"):
        index.evaluate(np.zeros((0, 8), np.uint8), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"database codes is empty: shape \(0, 8\)"):
        R.HammingIndex(torch.zeros((0, 8)), torch.zeros(0, dtype=torch.int64), device="cpu")
    with pytest.raises(ValueError, match=r"device='tpu' is not one of"):
        R.HammingIndex(xb, yb, device="tpu")


def test_one_host_sync_per_call(monkeypatch):
    """All value checks of a call are read back together (one torch.stack(...).tolist())."""
    xq, yq, xb, yb = make_data(8, nq=3, nb=10, multi=True, seed=0)
    reads = []
    real = _resident.Checks.verify

    def counting(self):
        reads.append(len(self._pending))
        return real(self)

    monkeypatch.setattr(_resident.Checks, "verify", counting)
    R.mean_average_precision(xq, yq, xb, yb, backend="torch", device="cpu")
    assert reads == [4]  # query codes, database codes, query labels, database labels: one read
    index = R.HammingIndex(xb, yb, device="cpu")
    index.evaluate(xq, yq)
    assert reads == [4, 2, 2]


# ---------------------------------------------------------------------------------------------------------
# CUDA (the lead runs these on the GPU machine: pytest -k cuda)
# ---------------------------------------------------------------------------------------------------------

CUDA_CASES = [
    (64, False, 10, 300, 5000),
    (100, True, 130, 77, 3001),
    (4, False, 5, 129, 4000),
    (400, False, 7, 40, 900),
]


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("case", CUDA_CASES, ids=lambda c: f"{c[0]}bits-{'multi' if c[1] else 'single'}")
def test_cuda_index_equals_torch_backend_bitwise(case, monkeypatch):
    """The index on the GPU: bitwise the torch backend's functions (same kernels), close to numba's."""
    bits, multi, classes, nq, nb = case
    xq, yq, xb, yb = make_data(bits, nq=nq, nb=nb, multi=multi, classes=classes, flip=0.25, seed=bits)
    monkeypatch.setattr(_resident, "CHUNK_BYTES", max(64, xb.nbytes // 7))  # ~8 staged chunks
    gpu = {"backend": "torch", "device": "cuda"}
    want = R.evaluate_retrieval(xq, yq, xb, yb, topk=50, **gpu)
    cpu = R.evaluate_retrieval(xq, yq, xb, yb, topk=50)
    for key, value in cpu.items():
        assert math.isclose(want[key], value, abs_tol=TOL), key
    counts = R.distance_counts(xq, yq, xb, yb)
    cuda = torch.device("cuda")
    sources = {
        "numpy": (xb, yb),
        "cuda tensors": (torch.as_tensor(xb, device=cuda), torch.as_tensor(yb, device=cuda)),
        "cpu tensors": (torch.as_tensor(xb), torch.as_tensor(yb)),
    }
    for name, (codes, labels) in sources.items():
        index = R.HammingIndex(codes, labels, device="cuda")
        assert index.device.type == "cuda", name
        for queries in ((xq, yq), (torch.as_tensor(xq, device=cuda), torch.as_tensor(yq, device=cuda))):
            assert index.evaluate(*queries, topk=50) == want, name
            for ties in R.TIES:
                assert index.mean_average_precision(*queries, ties=ties) == R.mean_average_precision(
                    xq, yq, xb, yb, ties=ties, **gpu
                ), (name, ties)
            got = index.distance_counts(*queries)
            np.testing.assert_array_equal(got[0], counts[0])
            np.testing.assert_array_equal(got[1], counts[1])
        D, I = index.search(torch.as_tensor(xq, device=cuda), 64)  # noqa: E741
        assert D.device.type == "cuda" and I.device.type == "cuda"
        np.testing.assert_array_equal(I.cpu().numpy(), R.rank(xq, xb, 64)[1])
        np.testing.assert_array_equal(index.search(xq, nb + 5)[1], R.rank(xq, xb, nb + 5)[1])


@needs_cuda
@pytest.mark.gpu
def test_cuda_staged_copy_equals_one_copy(monkeypatch):
    """The pinned, overlapped copy of numpy chunks gives the words of one blocking copy and of pack_codes."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, size=(100_003, 70), dtype=np.uint8)
    dev = torch.device("cuda", torch.cuda.current_device())
    monkeypatch.setattr(_resident, "CHUNK_BYTES", 1 << 16)
    words = {}
    for overlap in (True, False):
        monkeypatch.setattr(_resident, "OVERLAP", overlap)
        checks = _resident.Checks()
        words[overlap] = _resident.Codes(codes, "codes").load(dev, checks).cpu()
        checks.verify()
    assert torch.equal(words[True], words[False])
    np.testing.assert_array_equal(words[True].numpy().view(np.uint64), R.pack_codes(codes))


@needs_cuda
@pytest.mark.gpu
def test_cuda_bad_values_in_a_late_chunk(monkeypatch):
    xq, yq, xb, yb = make_data(64, nq=5, nb=20_000, seed=1)
    monkeypatch.setattr(_resident, "CHUNK_BYTES", 1 << 14)
    bad = xb.copy()
    bad[19_990, 63] = 2
    message = r"database codes must hold only 0 and 1, got 2 at index \(19990, 63\)"
    with pytest.raises(ValueError, match=message):
        R.HammingIndex(bad, yb, device="cuda")
    on_gpu = torch.as_tensor(bad, device="cuda")
    with pytest.raises(ValueError, match=message):
        R.HammingIndex(on_gpu, torch.as_tensor(yb, device="cuda"))
    with pytest.raises(ValueError, match=r"query codes must hold only 0 and 1, got 2"):
        R.evaluate_retrieval(bad, yb, xb, yb, backend="torch", device="cuda")


@needs_cuda
@pytest.mark.gpu
def test_cuda_tensors_and_cupy_are_read_in_place():
    codes = torch.randint(0, 2, (1000, 64), dtype=torch.uint8, device="cuda")
    assert _resident._normalised(DLPackOnly(codes)).data_ptr() == codes.data_ptr()
    index = R.HammingIndex(codes, torch.zeros(1000, dtype=torch.int64, device="cuda"))
    assert index.device == codes.device  # device=None: the codes' own GPU
    cupy = pytest.importorskip("cupy")
    array = cupy.asarray(codes.cpu().numpy())
    assert _resident._normalised(array).data_ptr() == array.data.ptr
    D, I = index.search(array[:3], 5)  # noqa: E741
    assert isinstance(I, torch.Tensor) and I.device == codes.device


@needs_cuda
@pytest.mark.gpu
def test_cuda_index_without_the_kernels_is_plain_torch(monkeypatch):
    """Without the CUDA kernels (no CuPy, wide codes) the index runs plain torch, as the torch backend."""
    xq, yq, xb, yb = make_data(32, nq=64, nb=2000, multi=True, seed=32)
    monkeypatch.setattr(_cuda, "ENABLED", False)
    index = R.HammingIndex(xb, yb, device="cuda")
    assert index.evaluate(xq, yq, topk=50) == R.evaluate_retrieval(
        xq, yq, xb, yb, topk=50, backend="torch", device="cuda"
    )
