"""The expert of SequentialHashBits-v0 and RankListHash-v0: each item's class codeword (our choice).

Neither paper names an expert (DRLIH's seed is an abstract, listwise policy hashing's a summary);
BinaryCodeTravel-v0's teacher walks to the item's label codeword, and these two envs' experts act
that codeword directly: RankListHash-v0's expert action is the whole codeword, SequentialHashBits-v0's
the codeword's bits that the step decides. The codewords are ``hashing_gym.codes.label_codebook``'s
BCH codebook with seed 0, the targets of ``BinaryCodeTravel-v0``'s default ``codebook="bch", seed=0``.
A multi-label item takes the codeword of the lowest-numbered class it carries.

Codes of class codewords rank every item's class first, so once a bank (or database) holds each
item's codeword the expert earns the largest reward there is for single-label data (AP 1; triplet
accuracy 1 with a ``margin`` below the codewords' minimum distance); against random banks it earns
what any code does. Acting the expert fills the bank with codewords (``database="bank"``, and
SequentialHashBits' finished codes), so it reaches that reward by itself after one pass over the items.

Where ``bits`` cannot give every class its own codeword (``2 ** bits < num_classes``), there is no
expert: :func:`expert_codewords` returns None and the envs put no ``expert_action`` in ``info``.
"""

from __future__ import annotations

import numpy as np

from hashing_gym.codes import label_codebook
from hashing_gym.data import HashingDataset, Split

CODEBOOK = "bch"
"""The codebook kind of the experts' codewords (``hashing_gym.codes.label_codebook``)."""
SEED = 0
"""The codebook seed of the experts' codewords."""


def expert_codewords(data: HashingDataset, split: Split, bits: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The class codewords and each item's class, for the experts.

    Args:
        data: the data set (its number of classes).
        split: the split whose items the env encodes.
        bits: the code length.

    Returns:
        ``(codewords, item_class)``: int8 (C, bits) 0/1 codewords (None when ``2 ** bits < C``: no
        code of that length tells the classes apart) and int64 (N,) the class whose codeword each
        item of the split takes (multi-label: the lowest it carries).
    """
    labels = split.labels
    item_class = labels.astype(bool).argmax(axis=1) if labels.ndim == 2 else labels
    item_class = np.array(item_class, dtype=np.int64)  # a writable copy (torch shares it on the CPU)
    if 2**bits < data.num_classes:
        return None, item_class
    return label_codebook(data.num_classes, bits, kind=CODEBOOK, seed=SEED).astype(np.int8), item_class


def require(actions: object, bits: int, num_classes: int) -> object:
    """``actions`` of a core's ``teacher_action``; ValueError when it is None (no codebook: no expert)."""
    if actions is None:
        raise ValueError(
            f"no expert at bits={bits}: {bits} bits cannot give each of the {num_classes} classes "
            "its own codeword"
        )
    return actions
