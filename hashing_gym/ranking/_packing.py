"""Codes packed into machine words, on numpy (uint64) or on a torch device (int16, int32 or int64).

Bit ``j`` of a code is bit ``j % w`` of word ``j // w`` (``w`` the word width); bits past the code
length are 0, so the Hamming distance of two packed rows is the popcount of their XOR. torch has no
unsigned 64-bit arithmetic, so its words are signed: the top bit of a word is its sign bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pack_words(codes: np.ndarray) -> np.ndarray:
    """uint8 0/1 (n, bits) -> uint64 (n, ceil(bits / 64)), zero-padded."""
    n, bits = codes.shape
    words = (bits + 63) // 64
    packed = np.zeros((n, 8 * words), dtype=np.uint8)
    packed[:, : (bits + 7) // 8] = np.packbits(codes, axis=1, bitorder="little")
    return packed.view(np.uint64)


def label_words(labels: np.ndarray) -> np.ndarray:
    """Labels as int64 (n, w) for the kernels: (n, 1) class ids, or multi-hot packed into 64-bit words."""
    if labels.ndim == 1:
        return labels.reshape(-1, 1)
    return pack_words(labels).view(np.int64)


def unpack_words(words: np.ndarray, bits: int) -> np.ndarray:
    """uint64 (..., W) -> uint8 0/1 (..., bits)."""
    unpacked = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")
    return unpacked[..., :bits]


def torch_pack(codes: Any, word_bits: int) -> Any:
    """0/1 tensor (..., bits) -> words of ``word_bits`` (int16, int32 or int64) on its device."""
    import torch

    bits = codes.shape[-1]
    count = -(-bits // word_bits)
    lead = tuple(codes.shape[:-1])
    padded = torch.zeros((*lead, count * word_bits), dtype=torch.int64, device=codes.device)
    padded[..., :bits] = codes
    shifts = torch.arange(word_bits, device=codes.device)
    dtype = {16: torch.int16, 32: torch.int32, 64: torch.int64}[word_bits]
    # Sums of distinct powers of two; the top bit wraps to the sign bit, as unsigned bits viewed signed.
    return (padded.view(*lead, count, word_bits) << shifts).sum(-1).to(dtype)


# Eight 0/1 bytes read as one little-endian int64 (byte j's bit at bit 8 j), times this constant, hold
# their byte sum_j b_j 2**j in the top 8 bits: the term of byte j lands at bit 8 j + 56 - 7 j = 56 + j,
# every other term above bit 63 (dropped: the product wraps modulo 2**64) or at a distinct position below
# bit 56 (no carry). One multiply, one shift and one mask per 8 bits: as fast as np.packbits on a CPU.
_GATHER_BITS = 0x0102040810204080


def torch_pack_rows(bits01: Any) -> Any:
    """0/1 uint8 tensor (n, bits) -> int64 words (n, ceil(bits / 64)) on its device, as :func:`pack_words`.

    The words are bitwise ``pack_words``'s (read as signed): bytes as ``np.packbits(..., bitorder="little")``
    makes them, and eight bytes a word, little-endian.
    """
    import torch

    n, bits = bits01.shape
    count = -(-bits // 64)
    nbytes = -(-bits // 8)
    groups = bits01.contiguous()
    if bits % 8 or groups.storage_offset() % 8:  # whole, aligned groups of 8 bits
        groups = torch.zeros((n, 8 * nbytes), dtype=torch.uint8, device=bits01.device)
        groups[:, :bits] = bits01
    packed = (((groups.view(torch.int64) * _GATHER_BITS) >> 56) & 0xFF).to(torch.uint8)
    if nbytes != 8 * count:
        packed = torch.nn.functional.pad(packed, (0, 8 * count - nbytes))
    return packed.view(torch.int64)


def torch_unpack(words: Any, bits: int, word_bits: int) -> Any:
    """Words of ``word_bits`` (..., W) -> uint8 0/1 tensor (..., bits)."""
    import torch

    shifts = torch.arange(word_bits, device=words.device, dtype=words.dtype)
    unpacked = (words[..., None] >> shifts) & 1
    return unpacked.reshape(*words.shape[:-1], -1)[..., :bits].to(torch.uint8)


def torch_popcount(words: Any, word_bits: int) -> Any:
    """Set bits of each signed word (SWAR, in the words' own dtype)."""

    # The masks (top bit clear) keep arithmetic right shifts from leaking the sign bit, and the byte
    # sums use shifts rather than a multiply that would overflow.
    def mask(byte: int) -> int:
        return int.from_bytes(bytes([byte]) * (word_bits // 8), "little")

    x = words - ((words >> 1) & mask(0x55))
    x = (x & mask(0x33)) + ((x >> 2) & mask(0x33))
    x = (x + (x >> 4)) & mask(0x0F)
    shift = 8
    while shift < word_bits:
        x = x + (x >> shift)
        shift *= 2
    return x & 0x7F
