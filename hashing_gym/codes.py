r"""Label codebooks: one binary codeword per class, far apart in Hamming distance.

DRLH (Wang, Hong, Yuan; section 3.3) embeds each class label into a codeword of an
error-correcting code so that the balls of radius ``R = (D_min - 1) // 2`` around the
codewords do not overlap; the BinaryCodeTravel reward measures how far a code is from its
class codeword. This module builds such codebooks:

- ``"bch"``: a binary narrow-sense primitive BCH code. Among lengths ``n = 2^m - 1`` (m >= 3) the
  one nearest to ``bits`` is taken (ties go to the longer code); among the BCH codes of that
  length (design distances 3, 5, 7, ...), the one with the largest design distance that still has
  at least ``num_classes`` codewords (``2^k >= num_classes``). ``num_classes`` distinct messages
  are drawn with the seed and encoded systematically (message bits, then parity bits); the
  codewords are then cut to ``bits`` (dropping trailing bits) or padded with random bits (drawn
  with the seed), e.g. 16 bits = BCH(15, 5) plus one random bit.
- ``"hadamard"``: rows of a Sylvester Hadamard matrix (and their complements) mapped to 0/1,
  cut or padded the same way.
- ``"random"``: independent fair bits drawn with the seed, redrawn until all codewords differ.

The BCH generator polynomial is the product of the minimal polynomials of
:math:`\alpha^1, ..., \alpha^{\delta - 1}` (one per cyclotomic coset), with :math:`\alpha` a root of
MATLAB's standard primitive polynomial of degree m (the table galois's ``BCH`` uses, so the codes are
bitwise galois's: ``tests/test_codes.py`` checks it against galois). Built from that table with
integer arithmetic, any length up to 65,535 takes milliseconds; galois took seconds of import and
JIT (25 s at 64 bits). Every codebook is still cached in memory and on disk (under
``$HASHING_GYM_CACHE``, else ``$XDG_CACHE_HOME/hashing_gym``, else ``~/.cache/hashing_gym``).

Two statistics of a set of codes (e.g. a hash function's database codes) live here too:
``code_balance`` and ``bit_correlation``, the code-quality columns of ``python -m agents.evaluate``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hashing_gym.files import atomic_path

CODEBOOK_KINDS: tuple[str, ...] = ("bch", "hadamard", "random")

# Bump when the construction changes, so stale disk caches are not reused.
_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Folder of the on-disk codebook cache (created on first write)."""
    if os.environ.get("HASHING_GYM_CACHE"):
        return Path(os.environ["HASHING_GYM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hashing_gym"


def label_codebook(num_classes: int, bits: int, kind: str = "bch", seed: int = 0) -> np.ndarray:
    """Return one codeword per class.

    Args:
        num_classes: number of classes C (>= 2).
        bits: code length b (>= 1, and large enough for C distinct codewords).
        kind: ``"bch"``, ``"hadamard"`` or ``"random"`` (see the module docstring).
        seed: seed of the message choice and of padding bits.

    Returns:
        uint8 array (C, bits) of 0/1, read-only; rows are pairwise distinct.

    Raises:
        ValueError: for an unknown kind, ``num_classes < 2``, ``bits <= 0``, or ``bits`` too
            small to give ``num_classes`` distinct codewords.

    >>> book = label_codebook(10, 16)
    >>> book.shape, int(min_distance(book)) >= 7
    ((10, 16), True)
    """
    num_classes, bits, seed = _check_arguments(num_classes, bits, kind, seed)
    return _cached_codebook(num_classes, bits, kind, seed)


def min_distance(codebook: np.ndarray) -> int:
    """Minimum Hamming distance between two distinct rows of a (C, bits) 0/1 codebook.

    >>> min_distance(np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.uint8))
    1
    """
    codebook = np.asarray(codebook)
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise ValueError(f"codebook must be 2-D with at least 2 rows, got shape {codebook.shape}")
    distances = (codebook[:, None, :] != codebook[None, :, :]).sum(axis=-1)
    np.fill_diagonal(distances, codebook.shape[1] + 1)
    return int(distances.min())


def error_correcting_radius(codebook: np.ndarray) -> int:
    """``R = (D_min - 1) // 2``: balls of this radius around the codewords do not overlap."""
    return (min_distance(codebook) - 1) // 2


def code_balance(codes: np.ndarray) -> float:
    """How evenly each bit splits the items: ``1 - mean_k |2 p_k - 1|``, with p_k the share of ones of bit k.

    1 means every bit is on for exactly half of the items; 0 means every bit is constant (a
    constant bit carries no information for ranking).

    >>> code_balance(np.array([[0, 1], [1, 1]], dtype=np.uint8))
    0.5
    """
    codes = _check_code_set(codes)
    return float(1.0 - np.abs(2.0 * codes.mean(axis=0) - 1.0).mean())


def bit_correlation(codes: np.ndarray) -> float:
    """Mean absolute off-diagonal entry of ``S^T S / n`` for the +-1 codes S (n, b); 0 for one bit.

    0 means the bits are pairwise orthogonal (independent when balanced); 1 means every bit is a
    copy or complement of every other. Uncentred, so it is defined for constant bits too.

    >>> bit_correlation(np.array([[0, 0], [1, 1]], dtype=np.uint8))
    1.0
    """
    codes = _check_code_set(codes)
    bits = codes.shape[1]
    if bits == 1:
        return 0.0
    signs = 2.0 * codes - 1.0
    gram = signs.T @ signs / codes.shape[0]
    return float((np.abs(gram).sum() - np.trace(np.abs(gram))) / (bits * (bits - 1)))


def _check_code_set(codes: np.ndarray) -> np.ndarray:
    """A non-empty (n, b) 0/1 array as float64, or ValueError naming what is wrong."""
    array = np.asarray(codes)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"codes must be a non-empty 2-D (items, bits) array, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("codes must hold only 0 and 1")
    return array.astype(np.float64)


def bch_parameters(num_classes: int, bits: int) -> tuple[int, int, int]:
    """The (n, k, d) of the BCH code that ``label_codebook(num_classes, bits, "bch")`` uses.

    >>> bch_parameters(10, 16)
    (15, 5, 7)
    """
    num_classes, bits, _ = _check_arguments(num_classes, bits, "bch", 0)
    n = _bch_length(bits)
    return _best_bch(n, num_classes)


def _check_arguments(num_classes: int, bits: int, kind: str, seed: int) -> tuple[int, int, int]:
    if kind not in CODEBOOK_KINDS:
        raise ValueError(f"kind must be one of {CODEBOOK_KINDS}, got {kind!r}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if int(bits) != bits or bits <= 0:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")
    if 2 ** int(bits) < num_classes:
        raise ValueError(
            f"bits={bits} is too small for {num_classes} classes: "
            f"{bits} bits give at most {2**bits} distinct codewords"
        )
    return int(num_classes), int(bits), int(seed)


@functools.lru_cache(maxsize=256)
def _cached_codebook(num_classes: int, bits: int, kind: str, seed: int) -> np.ndarray:
    path = cache_dir() / f"v{_CACHE_VERSION}-{kind}-c{num_classes}-b{bits}-s{seed}.npy"
    codebook = _read_cache(path, num_classes, bits)
    if codebook is None:
        builder = {"bch": _bch_codebook, "hadamard": _hadamard_codebook, "random": _random_codebook}[kind]
        codebook = builder(num_classes, bits, np.random.default_rng(seed))
        _write_cache(path, codebook)
    codebook.flags.writeable = False
    return codebook


def _read_cache(path: Path, num_classes: int, bits: int) -> np.ndarray | None:
    try:
        codebook = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    # A damaged or foreign file is rebuilt, never trusted.
    if codebook.shape != (num_classes, bits) or codebook.dtype != np.uint8 or codebook.max() > 1:
        return None
    return codebook


def _write_cache(path: Path, codebook: np.ndarray) -> None:
    """Write atomically (:func:`hashing_gym.files.atomic_path`); a read-only cache folder is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, codebook)
    except OSError:
        pass


def _fit_length(codewords: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Drop trailing bits or pad random ones to reach ``bits``."""
    if codewords.shape[1] >= bits:
        return np.ascontiguousarray(codewords[:, :bits])
    pad = rng.integers(0, 2, size=(codewords.shape[0], bits - codewords.shape[1]), dtype=np.uint8)
    return np.concatenate([codewords, pad], axis=1)


def _bch_length(bits: int) -> int:
    lengths = [2**m - 1 for m in range(3, 17)]
    # Nearest length; on a tie the longer code (min() keeps the first of equal keys).
    return min(reversed(lengths), key=lambda n: abs(n - bits))


# MATLAB's default primitive polynomials of GF(2^m) (galois.matlab_primitive_poly(2, m)), bit i = x^i.
_PRIMITIVE_POLYNOMIALS: dict[int, int] = {
    3: 0b1011, 4: 0b10011, 5: 0b100101, 6: 0b1000011, 7: 0b10001001, 8: 0b100011101,
    9: 0b1000010001, 10: 0b10000001001, 11: 0b100000000101, 12: 0b1000001010011,
    13: 0b10000000011011, 14: 0b100010001000011, 15: 0b1000000000000011, 16: 0b10001000000001011,
}  # fmt: skip


@functools.lru_cache(maxsize=16)
def _field_tables(m: int) -> tuple[list[int], list[int]]:
    """``exp[i] = alpha^i`` (as an m-bit integer, i < 2n) and ``log[alpha^i] = i`` in GF(2^m)."""
    n = 2**m - 1
    exp, value = [0] * (2 * n), 1
    for i in range(n):
        exp[i] = exp[i + n] = value
        value <<= 1
        if value >> m:
            value ^= _PRIMITIVE_POLYNOMIALS[m]
    log = [0] * (n + 1)
    for i in range(n):
        log[exp[i]] = i
    return exp, log


def _cyclotomic_coset(i: int, n: int) -> list[int]:
    """``{i, 2i, 4i, ...} mod n``: the exponents of the conjugates of ``alpha^i``."""
    coset, j = [], i % n
    while j not in coset:
        coset.append(j)
        j = 2 * j % n
    return coset


def _minimal_polynomial(coset: list[int], m: int) -> int:
    """``prod_{j in coset} (x - alpha^j)``, whose coefficients lie in GF(2): an integer, bit d = x^d."""
    exp, log = _field_tables(m)
    n = 2**m - 1
    poly = [1]  # GF(2^m) coefficients, poly[d] of x^d
    for j in coset:
        product = [0, *poly]  # x * poly, plus alpha^j * poly below
        for d, coefficient in enumerate(poly):
            if coefficient:
                product[d] ^= exp[(log[coefficient] + j) % n]
        poly = product
    return sum(c << d for d, c in enumerate(poly))  # conjugate roots: every c is 0 or 1


def _carryless_product(a: int, b: int) -> int:
    """The product of two GF(2) polynomials (integers, bit d = x^d)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        b >>= 1
    return product


def _bch_generators(n: int) -> Iterator[tuple[int, int]]:
    """(design distance, generator polynomial) of the narrow-sense BCH codes of length n, 3, 5, ... n."""
    m = n.bit_length()
    generator, roots = 1, set()
    for designed in range(3, n + 1, 2):
        for i in (designed - 2, designed - 1):  # alpha^1 .. alpha^(designed - 1) are roots
            if i % n not in roots:
                coset = _cyclotomic_coset(i, n)
                roots.update(coset)
                generator = _carryless_product(generator, _minimal_polynomial(coset, m))
        yield designed, generator


@functools.lru_cache(maxsize=64)
def _best_bch(n: int, num_classes: int) -> tuple[int, int, int]:
    """(n, k, d) of the largest-design-distance BCH code of length n with 2^k >= num_classes."""
    n, k, designed, _ = _best_bch_generator(n, num_classes)
    return n, k, designed


def _best_bch_generator(n: int, num_classes: int) -> tuple[int, int, int, int]:
    """:func:`_best_bch` and the code's generator polynomial."""
    best: tuple[int, int, int, int] | None = None
    for designed, generator in _bch_generators(n):
        k = n - (generator.bit_length() - 1)
        if 2**k < num_classes:  # k only shrinks as the design distance grows
            break
        best = (n, k, designed, generator)
    if best is None:  # only the repetition code is left; it has 2 codewords
        raise ValueError(f"no BCH code of length {n} has {num_classes} codewords; use a longer bits")
    return best


def _bch_codebook(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    n, _, _, generator = _best_bch_generator(_bch_length(bits), num_classes)
    messages = _distinct_messages(num_classes, n - (generator.bit_length() - 1), rng)
    return _fit_length(_encode_systematic(messages, n, generator), bits, rng)


def _encode_systematic(messages: np.ndarray, n: int, generator: int) -> np.ndarray:
    """Codewords ``m(x) x^(n-k) + (m(x) x^(n-k) mod g(x))`` of 0/1 messages (k,), highest degree first."""
    parity_bits = generator.bit_length() - 1
    codewords = np.zeros((len(messages), n), dtype=np.uint8)
    for row, message in enumerate(messages):
        shifted = int("".join(map(str, message.tolist())) or "0", 2) << parity_bits
        remainder = shifted
        while remainder.bit_length() > parity_bits:
            remainder ^= generator << (remainder.bit_length() - 1 - parity_bits)
        word = shifted | remainder
        codewords[row] = [(word >> (n - 1 - i)) & 1 for i in range(n)]
    return codewords


def _distinct_messages(count: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct k-bit messages, avoiding the all-zero one (an unbalanced codeword) if possible."""
    if k <= 20:
        first = 1 if 2**k - 1 >= count else 0
        chosen = rng.choice(np.arange(first, 2**k), size=count, replace=False)
        return ((chosen[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(np.uint8)
    messages: set[bytes] = set()
    rows = []
    while len(rows) < count:
        row = rng.integers(0, 2, size=k, dtype=np.uint8)
        if row.any() and row.tobytes() not in messages:
            messages.add(row.tobytes())
            rows.append(row)
    return np.stack(rows)


def _hadamard_codebook(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.linalg import hadamard  # noqa: PLC0415

    order = 1
    while order < bits or 2 * order - 1 < num_classes:
        order *= 2
    matrix = (hadamard(order) > 0).astype(np.uint8)
    # Rows and complements: 2 * order distinct rows, pairwise distance order / 2 or order.
    # Row 0 is all ones, the least balanced, so it is skipped.
    chosen = np.concatenate([matrix, 1 - matrix])[1 : num_classes + 1]
    codebook = _fit_length(chosen, bits, rng)
    return _redraw_duplicates(codebook, rng)


def _random_codebook(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    codebook = rng.integers(0, 2, size=(num_classes, bits), dtype=np.uint8)
    return _redraw_duplicates(codebook, rng)


def _redraw_duplicates(codebook: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redraw rows equal to an earlier row (cutting a code short can create duplicates)."""
    while True:
        _, first = np.unique(codebook, axis=0, return_index=True)
        duplicates = np.setdiff1d(np.arange(len(codebook)), first)
        if duplicates.size == 0:
            return codebook
        codebook[duplicates] = rng.integers(0, 2, size=(duplicates.size, codebook.shape[1]), dtype=np.uint8)
