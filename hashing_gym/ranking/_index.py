"""A database of packed codes and labels, checked once, that packed queries are ranked against."""

from __future__ import annotations

from typing import Any

import numpy as np

from hashing_gym.ranking import _metrics
from hashing_gym.ranking._checks import check_cutoff, check_packed, check_packed_labels, check_ties, is_torch
from hashing_gym.validation import check_positive_int


class PackedDatabase:
    """Packed database codes and labels, checked once, for the packed queries of many calls.

    An environment ranks a few codes against the same database at every step: this object checks
    the database's shapes and dtypes and lays out its labels for the kernels once, so that each call
    checks only its queries (shapes and dtypes; the items left out and the databases chosen are
    range-checked on numpy) and then scans: O(nq nb ceil(bits / 64)) on the numba kernel, or on the
    tensors' device, where the results stay. The database is held by reference, not copied: writes
    into ``codes`` (a bank of codes updated in place) are seen by the next call. Bits past ``bits``
    in the last word (of queries and database alike) are masked off on numpy; tensors packed by
    :func:`pack_codes` have none.

    :func:`packed_distance_counts` and :func:`packed_average_precision` build one per call.

    Args:
        codes: packed database codes from :func:`pack_codes`: uint64 (nb, W) numpy, or int16/int32/int64
            tensor; or a batch of databases (nd, nb, W) of one length.
        labels: the database items' labels: int class ids (nb,), or multi-hot labels packed by
            :func:`pack_codes`, uint64 (nb, ceil(C / 64)) (int64 for tensors).
        bits: code length (the packed words do not record it).

    Raises:
        ValueError: if ``codes`` or ``labels`` are not packed codes and labels of one kind and length.

    >>> import numpy as np
    >>> from hashing_gym.ranking import PackedDatabase, pack_codes
    >>> db = PackedDatabase(pack_codes([[0, 0, 0], [1, 1, 1], [0, 0, 1]]), np.array([0, 1, 0]), bits=3)
    >>> counts, relevant = db.distance_counts(pack_codes([[0, 0, 0]]), np.array([0]), exclude=[0])
    >>> counts.tolist(), relevant.tolist()
    ([[0, 1, 0, 1]], [[0, 1, 0, 0]])
    >>> db.average_precision(pack_codes([[0, 0, 0]]), np.array([0]), exclude=[0]).tolist()
    [1.0]
    """

    def __init__(self, codes: Any, labels: Any, bits: int) -> None:
        bits = check_positive_int(bits, "bits")
        # The kernels mask the padding bits: O(1) here, not O(nb).
        check_packed("codes", codes, bits, per_query=True, padding=False)
        self.torch = is_torch(codes)
        if self.torch != is_torch(labels):
            raise ValueError("codes and labels must both be numpy arrays or both be torch tensors")
        if not self.torch:
            labels = np.asarray(labels)
        check_packed_labels(labels, labels, labels.shape[0], codes.shape[-2])
        self.codes = codes
        """The packed codes (nb, W) or (nd, nb, W), by reference."""
        self.labels = labels
        """The labels as given (class ids (nb,) or packed multi-hot words)."""
        self.bits = bits
        """The code length."""
        self._multi = labels.ndim == 2
        if not self.torch:
            self._kernel_labels = (
                np.ascontiguousarray(labels).view(np.int64)
                if self._multi
                else np.ascontiguousarray(labels, dtype=np.int64).reshape(-1, 1)
            )

    @property
    def num_items(self) -> int:
        """nb, the number of items of each database."""
        return int(self.codes.shape[-2])

    def distance_counts(
        self, xq: Any, lq: Any, *, exclude: Any = None, databases: Any = None
    ) -> tuple[Any, Any]:
        """Per-distance histograms of packed queries against the database (see :func:`distance_counts`).

        Args:
            xq: packed query codes (nq, W), of the database's kind and word type.
            lq: query labels, of the database labels' kind: class ids (nq,) or packed multi-hot (nq, LW).
            exclude: None, or int (nq,): the database item left out of each query's list.
            databases: for a batch of databases, None (query ``i`` against database ``i``: nq = nd) or
                int (nq,) the database of each query; None for one database.

        Returns:
            ``(counts, relevant)``, int64 (nq, bits + 1) (tensors on the codes' device).
        """
        xq, lq, exclude, databases = self._check_queries(xq, lq, exclude, databases)
        if self.torch:
            from hashing_gym.ranking import _torch

            return _torch.packed_counts(xq, lq, self._database_of(databases), self.labels, self.bits, exclude)
        return self._numba(xq, lq, exclude, databases, None)[:2]

    def counts_operator(self) -> Any:
        """:meth:`distance_counts` (one database per query, or one shared) as a torch operator.

        For code that ``torch.compile`` traces: ``op(xq, lq, self.codes, self.labels, self.bits,
        exclude)`` returns ``(counts, relevant)`` as :meth:`distance_counts` does, through the same
        kernels, without splitting the compiled graph around the CUDA kernel's launch. It checks
        nothing: callers pass queries that :meth:`distance_counts` accepts. Torch databases only.
        """
        if not self.torch:
            raise ValueError("counts_operator is for databases of torch tensors")
        from hashing_gym.ranking import _torch

        return _torch.counts_operator()

    def average_precision(
        self,
        xq: Any,
        lq: Any,
        *,
        topk: int | None = None,
        ties: str = "stable",
        exclude: Any = None,
        databases: Any = None,
        with_relevant: bool = False,
    ) -> Any:
        """:func:`average_precision` of packed queries against the database, in one scan.

        Args:
            xq: packed query codes (nq, W).
            lq: query labels (see :meth:`distance_counts`).
            topk: AP over the first ``topk`` positions (capped to the list's length); None for all.
            ties: ``"stable"`` (ties by database index) or ``"average"`` (tie-aware expected AP).
            exclude: None, or int (nq,): the database item left out of each query's list.
            databases: the database of each query (see :meth:`distance_counts`).
            with_relevant: also return the number of relevant items in each list.

        Returns:
            float64 (nq,) AP (a tensor on the codes' device for tensors), or ``(ap, relevant)`` with
            int64 (nq,) numbers of relevant items with ``with_relevant``. On numpy, bitwise what
            :func:`average_precision` gives on the list without the excluded items; tensors sum the
            stable precisions in rank order, which may differ in the last bits.
        """
        check_ties(ties)
        xq, lq, exclude, databases = self._check_queries(xq, lq, exclude, databases)
        length = self.num_items - (exclude is not None)
        k = length if topk is None else check_cutoff(topk, "topk", length)
        if ties == "average":
            if self.torch:
                from hashing_gym.ranking import _torch

                xb = self._database_of(databases)
                counts, relevant = _torch.packed_counts(xq, lq, xb, self.labels, self.bits, exclude)
            else:
                counts, relevant = self._numba(xq, lq, exclude, databases, None)[:2]
            ap = _metrics.tie_aware_ap(counts, relevant, k, num_items=self.num_items)
            return (ap, relevant.sum(1)) if with_relevant else ap
        if self.torch:
            from hashing_gym.ranking import _torch

            xb = self._database_of(databases)
            ap_sum, hits, relevant = _torch.packed_stable(xq, lq, xb, self.labels, self.bits, k, exclude)
        else:
            _, relevant, ap_sum, hits = self._numba(xq, lq, exclude, databases, k)
            relevant = relevant.sum(1)
        ap = _metrics.ratio(ap_sum[:, 0], hits[:, 0])
        return (ap, relevant) if with_relevant else ap

    def _check_queries(self, xq: Any, lq: Any, exclude: Any, databases: Any) -> tuple[Any, ...]:
        """Checked queries (O(1) but for the ranges of ``exclude`` and ``databases`` on numpy)."""
        if is_torch(xq) != self.torch or (self.torch and xq.dtype != self.codes.dtype):
            raise ValueError(
                f"xq must be packed codes of the database's kind, {self.codes.dtype}, got "
                f"{getattr(xq, 'dtype', type(xq).__name__)}"
            )
        if xq.ndim != 2 or xq.shape[1] != self.codes.shape[-1] or (not self.torch and xq.dtype != np.uint64):
            check_packed("xq", xq, self.bits, per_query=False, padding=False)  # raises, with the details
            raise ValueError(
                f"xq must have {self.codes.shape[-1]} words per code, got shape {tuple(xq.shape)}"
            )
        nq, nb = xq.shape[0], self.num_items
        if is_torch(lq) != self.torch:
            raise ValueError("lq must be of the database's kind (numpy array or torch tensor)")
        if not self.torch:
            lq = np.asarray(lq)
            if self._multi:
                if lq.dtype != np.uint64:
                    raise ValueError(
                        f"packed multi-hot labels must be uint64 from pack_codes, got {lq.dtype}"
                    )
            elif lq.dtype.kind not in "iu":
                raise ValueError(f"class ids must be integers, got {lq.dtype}")
        if lq.ndim != self.labels.ndim or lq.shape[0] != nq or lq.shape[1:] != self.labels.shape[1:]:
            raise ValueError(
                f"lq must be labels of the database's kind, one per query, {(nq, *self.labels.shape[1:])}: "
                f"got {tuple(lq.shape)}"
            )
        if exclude is not None:
            exclude = self._check_rows("exclude", exclude, nq, nb)
            if nb < 2:
                raise ValueError("exclude needs a database of at least 2 items (a list is never empty)")
        if self.codes.ndim == 2:
            if databases is not None:
                raise ValueError("databases is only for a batch of databases (nd, nb, W)")
        elif databases is None:
            if self.codes.shape[0] != nq:
                raise ValueError(
                    f"xb with one database per query must have {nq} databases, got {self.codes.shape[0]}"
                )
        else:
            databases = self._check_rows("databases", databases, nq, self.codes.shape[0])
        return xq, lq, exclude, databases

    def _check_rows(self, name: str, rows: Any, nq: int, n: int) -> Any:
        """Integer row indices (nq,) in 0..n - 1 (numpy: int64, range checked; tensors: shape only)."""
        if self.torch:
            if tuple(rows.shape) != (nq,):
                raise ValueError(f"{name} must be None or an int ({nq},) tensor, got {tuple(rows.shape)}")
            return rows
        rows = np.asarray(rows)
        if rows.shape != (nq,) or rows.dtype.kind not in "iu":
            raise ValueError(f"{name} must be None or int ({nq},), got {rows.dtype} of shape {rows.shape}")
        if nq and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"{name} must hold rows 0..{n - 1}, got {rows!r}")
        return rows.astype(np.int64, copy=False)

    def _database_of(self, databases: Any) -> Any:
        """The codes each query ranks against: (nb, W) shared, or (nq, nb, W)."""
        return self.codes if databases is None else self.codes[databases]

    def _numba(self, xq: Any, lq: Any, exclude: Any, databases: Any, k: int | None) -> tuple[np.ndarray, ...]:
        """``(counts, relevant, ap_sum, hits)`` of checked numpy queries (stable sums at ``k``, if any)."""
        from hashing_gym.ranking import _numba

        if self._multi:
            lq = np.ascontiguousarray(lq).view(np.int64)
        else:
            lq = np.ascontiguousarray(lq, dtype=np.int64).reshape(-1, 1)
        nq, stable = xq.shape[0], k is not None
        out = (
            np.zeros((nq, self.bits + 1), dtype=np.int64),
            np.zeros((nq, self.bits + 1), dtype=np.int64),
            np.zeros((nq, int(stable)), dtype=np.float64),
            np.zeros((nq, int(stable)), dtype=np.int64),
        )
        ks = np.array([k] if stable else [], dtype=np.int64)
        _numba.stats_into(
            None, xq, self.codes, lq, self._kernel_labels, self._multi, ks, stable, out, exclude, databases
        )
        return out


class HammingIndex:
    """A database of binary codes and labels held on one device, ranked against by many calls (faiss-style).

    The database is checked, packed into 64-bit words and copied to ``device`` once; each call then
    checks and packs only its queries there and runs the kernels: on a GPU the CUDA kernels of the
    ``"torch"`` backend (plain torch where they do not take the problem: see the package docstring), on
    the CPU (``"cpu"``) the numba kernels of the ``"numpy"`` backend. Results are bitwise those of the
    functions: :func:`evaluate_retrieval`, :func:`average_precision`, :func:`distance_counts` and
    :func:`rank` with ``backend="torch", device=...`` on a GPU (and on ``torch.device("cpu")``, the torch
    code on the CPU, as everywhere in this project), ``backend="numpy"`` on ``"cpu"``.

    Arrays (codes, labels, queries) may be numpy arrays (or anything ``np.asarray`` takes), torch tensors
    on any device, or any DLPack array (CuPy, JAX, ...), read without a copy when they already live on
    the index's device. Their values (0/1 codes, 0/1 multi-hot labels) are checked on the device, with
    one host sync per call; a numpy database bound for a GPU is copied in chunks through pinned memory,
    packing one chunk while the next is in flight (see ``hashing_gym.ranking._resident``).

    Args:
        codes: database codes, 0/1 (n, bits), n and bits >= 1.
        labels: the items' labels: integer class ids (n,) (relevant: same id) or multi-hot 0/1 (n, C)
            (relevant: a shared label).
        device: where the index lives: ``"cpu"`` (numba), ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a
            ``torch.device`` (:func:`hashing_gym.device.array_device`); None: the codes' device when they
            are a CUDA tensor (or DLPack array), else ``"auto"`` (CUDA when torch sees one).

    Raises:
        ValueError: the functions' messages for bad codes or labels (``database codes must hold only 0
            and 1, got 2 at index (0, 3)``, ``database labels has 4 rows but the codes have 3``, ...), or
            a bad ``device``.

    >>> import numpy as np
    >>> from hashing_gym.ranking import HammingIndex
    >>> xb = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0]], dtype=np.uint8)
    >>> index = HammingIndex(xb, np.array([0, 1, 0, 1]), device="cpu")
    >>> index.ntotal, index.bits
    (4, 4)
    >>> D, I = index.search(xb[:1], 3)
    >>> D.tolist(), I.tolist()
    ([[0, 1, 3]], [[0, 2, 3]])
    >>> index.mean_average_precision(xb, np.array([0, 1, 0, 1]))
    1.0
    """

    def __init__(self, codes: Any, labels: Any, *, device: Any = None) -> None:
        from hashing_gym.ranking import _resident

        database = _resident.Codes(codes, "database codes")
        dev, engine = _resident.placement(device, like=database.given)
        db_labels = _resident.Labels(labels, database.n, "database labels")
        checks = _resident.Checks()
        words = database.load(dev, checks)
        label_words = db_labels.load(dev, checks)
        checks.verify()
        self._database = _resident.Resident(
            words, label_words, database.bits, db_labels.classes, engine, resident=True
        )

    @property
    def ntotal(self) -> int:
        """The number of database items (faiss' name)."""
        return self._database.nb

    @property
    def bits(self) -> int:
        """The code length."""
        return self._database.bits

    @property
    def device(self) -> Any:
        """The ``torch.device`` the index lives on."""
        return self._database.device

    def __repr__(self) -> str:
        classes = self._database.classes
        labels = f"multi-hot of {classes} classes" if classes else "class ids"
        return f"HammingIndex(ntotal={self.ntotal}, bits={self.bits}, labels={labels}, device={self.device})"

    def add(self, codes: Any, labels: Any) -> None:
        """Append items (codes and labels of the index's width and label kind) after the current ones.

        The index's words are copied once into a longer array (O(ntotal) a call): add in large batches.

        Raises:
            ValueError: bad codes or labels, or of another width or label kind than the index's.
        """
        from hashing_gym.ranking import _resident

        added = _resident.Codes(codes, "added codes")
        _resident.check_bits(added.bits, self.bits, "added and index codes")
        added_labels = _resident.Labels(labels, added.n, "added labels")
        _resident.check_label_kinds(added_labels, self._database.classes, "added", "index")
        checks = _resident.Checks()
        words = added.load(self.device, checks)
        label_words = added_labels.load(self.device, checks)
        checks.verify()
        self._database = self._database.extended(words, label_words)

    def evaluate(
        self, queries: Any, query_labels: Any, *, topk: int = 1000, radius: int = 2
    ) -> dict[str, float]:
        """:func:`evaluate_retrieval` of the queries against the index (stable and tie-aware mAP, ...).

        Args:
            queries: query codes, 0/1 (nq, bits).
            query_labels: query labels of the index's kind, (nq,) or (nq, C).
            topk: cutoff of ``map_at_k`` and ``precision_at_k`` (>= 1; capped to ``ntotal``).
            radius: Hamming radius of ``precision_radius{radius}``.

        Returns:
            The dictionary of :func:`evaluate_retrieval`, bitwise.
        """
        from hashing_gym.ranking import _api

        return _api.evaluate_retrieval_of(self._database.queries(queries, query_labels), topk, radius)

    def average_precision(
        self, queries: Any, query_labels: Any, *, ties: str = "stable", topk: int | None = None
    ) -> np.ndarray:
        """:func:`average_precision` of each query, float64 (nq,) (``ties``, ``topk`` as there)."""
        from hashing_gym.ranking import _api

        return _api.average_precision_of(self._database.queries(queries, query_labels), topk, ties)

    def mean_average_precision(
        self, queries: Any, query_labels: Any, *, ties: str = "stable", topk: int | None = None
    ) -> float:
        """:func:`mean_average_precision` of the queries: mAP@all (``topk=None``) or mAP@topk."""
        return float(self.average_precision(queries, query_labels, ties=ties, topk=topk).mean())

    def distance_counts(self, queries: Any, query_labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """:func:`distance_counts`: int64 (nq, bits + 1) items and relevant items at each distance."""
        from hashing_gym.ranking import _api

        stats = _api._query_stats(self._database.queries(queries, query_labels), (), stable=False)
        return stats.counts, stats.relevant

    def search(self, queries: Any, k: int) -> tuple[Any, Any]:
        """The ``k`` nearest items of each query, as :func:`rank` orders them (ties by index).

        Args:
            queries: query codes, 0/1 (nq, bits).
            k: results per query (>= 1; capped to ``ntotal``).

        Returns:
            ``(D, I)``: int32 distances and int64 indices (nq, min(k, ntotal)). numpy arrays for numpy
            (or array-like) queries; torch tensors on the index's device for tensors and DLPack arrays.
        """
        import torch

        from hashing_gym.ranking._checks import check_cutoff

        k = check_cutoff(k, "k", self.ntotal)
        as_tensors = is_torch(queries) or (
            not isinstance(queries, np.ndarray) and hasattr(queries, "__dlpack__")
        )
        D, I = self._database.rank(self._database.query_codes(queries), k)  # noqa: E741 (faiss' name)
        if as_tensors and isinstance(D, np.ndarray):
            return torch.from_numpy(D), torch.from_numpy(I)
        if not as_tensors and not isinstance(D, np.ndarray):
            return D.cpu().numpy(), I.cpu().numpy()
        return D, I
