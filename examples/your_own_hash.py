"""Evaluate any hash function, e.g. your own numpy function, with ``hashing_gym.ranking``.

Run: ``python examples/your_own_hash.py [--quick] [--hash MODULE:FUNCTION] [--bits B] [--dataset NAME]``.

A hash function here is anything that maps float32 features (n, D) to 0/1 codes (n, bits); it may
look at the train split first (``fit(train_features, bits, seed) -> encode``). The script ranks the
query split's codes against the database split's, as every trainer of hashing-gym does, and prints
mAP@all (stable ties and tie-aware), mAP@1000, precision within Hamming radius 2 and the
precision-recall curve's points. Two numpy hash functions are built in (``lsh`` and ``pca``), next to
``constant``, which gives every item the same code: one tie, whose stable mAP depends only on the
order of the database; the tie-aware mAP (He et al., CVPR 2018), reported too, is the expected value
over the orders within ties and scores it at chance.

Your own: write ``def fit(train_features, bits, seed): ... return encode`` in ``my_hash.py`` and run
``python examples/your_own_hash.py --hash my_hash:fit``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

import numpy as np

from hashing_gym.data import HashingDataset, load_dataset
from hashing_gym.ranking import evaluate_retrieval, precision_recall_curve

Encoder = Callable[[np.ndarray], np.ndarray]


def fit_lsh(train: np.ndarray, bits: int, seed: int) -> Encoder:
    """Sign random projections through the train mean (Charikar's LSH)."""
    mean = train.mean(axis=0)
    projection = np.random.default_rng(seed).standard_normal((train.shape[1], bits))
    return lambda features: ((features - mean) @ projection > 0).astype(np.uint8)


def fit_pca(train: np.ndarray, bits: int, seed: int) -> Encoder:
    """Signs of the top ``bits`` principal components (PCAH); ``seed`` is unused."""
    mean = train.mean(axis=0)
    _, _, components = np.linalg.svd(train - mean, full_matrices=False)
    if bits > len(components):
        raise ValueError(f"bits={bits} exceeds the {len(components)} principal components of the features")
    top = components[:bits].T
    return lambda features: ((features - mean) @ top > 0).astype(np.uint8)


def fit_constant(train: np.ndarray, bits: int, seed: int) -> Encoder:
    """Every item gets the all-zero code: one big tie (what the stable order hides)."""
    return lambda features: np.zeros((len(features), bits), dtype=np.uint8)


BUILT_IN: dict[str, Callable[[np.ndarray, int, int], Encoder]] = {
    "lsh": fit_lsh,
    "pca": fit_pca,
    "constant": fit_constant,
}


def load_hash(spec: str) -> Callable[[np.ndarray, int, int], Encoder]:
    """A built-in name, or ``module:function`` naming ``fit(train_features, bits, seed) -> encode``."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, _, function = spec.partition(":")
    if not function:
        raise ValueError(f"--hash must be one of {sorted(BUILT_IN)} or MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module_name), function)


def evaluate(encode: Encoder, dataset: HashingDataset, topk: int = 1000) -> dict[str, object]:
    """Retrieval metrics of ``encode`` on a data set: query codes ranked against database codes.

    Args:
        encode: maps float32 features (n, D) to 0/1 codes (n, bits).
        dataset: a ``HashingDataset`` (``hashing_gym.data.load_dataset``).
        topk: cutoff of mAP@k and P@k.

    Returns:
        ``hashing_gym.ranking.evaluate_retrieval``'s metrics plus ``precision`` and ``recall`` (lists,
        indexed by Hamming radius 0..bits).
    """
    query = np.asarray(encode(dataset.query.features))
    database = np.asarray(encode(dataset.database.features))
    q_labels, db_labels = dataset.query.labels, dataset.database.labels
    metrics: dict[str, object] = dict(evaluate_retrieval(query, q_labels, database, db_labels, topk=topk))
    precision, recall = precision_recall_curve(query, q_labels, database, db_labels)
    metrics["precision"], metrics["recall"] = precision.tolist(), recall.tolist()
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    """Evaluate the chosen hash functions and print a table; returns their metrics by name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; this script is fast")
    parser.add_argument(
        "--hash",
        action="append",
        help=f"a built-in ({', '.join(BUILT_IN)}) or MODULE:FUNCTION; repeatable (default: all built-ins)",
    )
    parser.add_argument("--bits", type=int, default=16, help="code length")
    parser.add_argument("--dataset", default="digits", help="a data set name of hashing_gym.data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of random projections")
    parsed = parser.parse_args(argv)
    dataset = load_dataset(parsed.dataset, seed=parsed.seed)
    results = {}
    print(
        f"{dataset.name}: {dataset.query.n} queries, {dataset.database.n} database items, "
        f"{parsed.bits} bits\n"
    )
    print("| hash | mAP@all | mAP@all tie-aware | mAP@1000 | P@r2 | precision at r = 0, 1, 2 |")
    print("|---|---|---|---|---|---|")
    for spec in parsed.hash or list(BUILT_IN):
        encode = load_hash(spec)(dataset.train.features, parsed.bits, parsed.seed)
        metrics = results[spec] = evaluate(encode, dataset)
        head = ", ".join(f"{p:.2f}" for p in metrics["precision"][:3])
        print(
            f"| {spec} | {metrics['map']:.4f} | {metrics['map_tie_aware']:.4f} | {metrics['map_at_k']:.4f} | "
            f"{metrics['precision_radius2']:.4f} | {head} |"
        )
    return results


if __name__ == "__main__":
    main()
