"""Non-RL hashing baselines on the same features and split: LSH, ITQ and the supervised MLP-to-codeword.

Every RL agent is judged against these, so they write the same results.json as the trainers
(``env`` is recorded as ``"none"`` and ``env_steps`` as 0: no environment is stepped).

- ``lsh``: random hyperplanes through the train mean (Charikar's sign random projections). On
  centred data each bit is balanced in expectation.
- ``itq``: PCA to ``bits`` dimensions, then iterative quantization (Gong & Lazebnik, CVPR 2011):
  alternate ``B = sign(V R)`` and the orthogonal Procrustes rotation ``R`` that minimises the
  quantization loss ``||B - V R||_F^2``, which never increases from one iteration to the next.
- ``mlp-code``: a scikit-learn MLP classifier on the train split; an item's code is its predicted
  class's label codeword (``hashing_gym.codes.label_codebook``, BCH). The supervised reference of
  BinaryCodeTravel-v0: what a perfect travel to the predicted class's codeword retrieves.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.common import (
    CommonArgs,
    UsageError,
    evaluate_encoder,
    load_run_dataset,
    results_record,
    run_folder,
    save_args,
    write_json_atomic,
)
from hashing_gym.codes import label_codebook
from hashing_gym.data import HashingDataset

MODEL_FILE = "model.pkl"


@dataclass
class Args(CommonArgs):
    """Baseline options (the environment and step options of CommonArgs are not used)."""

    env: str = field(default="none", metadata={"help": "not used: baselines step no environment"})
    iterations: int = field(default=50, metadata={"help": "itq: quantization iterations"})
    hidden: str = field(default="256", metadata={"help": "mlp-code: hidden layer sizes, comma-separated"})
    max_iter: int = field(default=300, metadata={"help": "mlp-code: training epochs of the classifier"})


@dataclass
class LinearHash:
    """``code = (x - mean) @ projection > 0``: the model of ``lsh`` and ``itq``."""

    mean: np.ndarray
    projection: np.ndarray
    quantization_loss: list[float] = field(default_factory=list)

    def encode(self, features: np.ndarray) -> np.ndarray:
        """uint8 (n, bits) codes of float (n, D) features."""
        return ((np.asarray(features, dtype=np.float64) - self.mean) @ self.projection > 0).astype(np.uint8)


@dataclass
class ClassifierCode:
    """``code = codebook[classifier.predict(x)]``: the model of ``mlp-code``."""

    classifier: Any
    codebook: np.ndarray

    def encode(self, features: np.ndarray) -> np.ndarray:
        """uint8 (n, bits) codes: the predicted (most probable) class's codeword."""
        probabilities = self.classifier.predict_proba(np.asarray(features, dtype=np.float32))
        return self.codebook[np.argmax(probabilities, axis=1)]


def fit_lsh(features: np.ndarray, bits: int, seed: int) -> LinearHash:
    """Random Gaussian hyperplanes through the mean of ``features``."""
    rng = np.random.default_rng(seed)
    return LinearHash(features.mean(axis=0), rng.standard_normal((features.shape[1], bits)))


def fit_itq(features: np.ndarray, bits: int, seed: int, iterations: int = 50) -> LinearHash:
    """PCA to ``bits`` dimensions, then ITQ's alternating rotation (records the loss per iteration)."""
    if bits > features.shape[1]:
        raise UsageError(f"itq needs bits <= feature dimension ({features.shape[1]}), got --bits {bits}")
    mean = features.mean(axis=0)
    centred = features - mean
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    pca = components[:bits].T  # (D, bits)
    projected = centred @ pca
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    losses = []
    for _ in range(iterations):
        rotated = projected @ rotation
        codes = np.where(rotated >= 0, 1.0, -1.0)
        losses.append(float(np.sum((codes - rotated) ** 2)))
        # Orthogonal Procrustes: the R minimising ||B - V R|| is U W^T for V^T B = U S W^T.
        left, _, right = np.linalg.svd(projected.T @ codes)
        rotation = left @ right
    return LinearHash(mean, pca @ rotation, losses)


def fit_mlp_code(dataset: HashingDataset, args: Args) -> ClassifierCode:
    """An MLP classifier on the train split, mapped to BCH label codewords."""
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

    hidden = tuple(int(size) for size in args.hidden.split(",") if size.strip())
    labels = dataset.train.labels
    if labels.ndim == 2:  # multi-label: learn each item's first label; codes follow the top class
        labels = np.argmax(labels, axis=1)
    classifier = MLPClassifier(hidden_layer_sizes=hidden, max_iter=args.max_iter, random_state=args.seed)
    classifier.fit(dataset.train.features, labels)
    codebook = np.asarray(label_codebook(dataset.num_classes, args.bits, kind="bch", seed=args.seed))
    # predict_proba's columns follow classifier.classes_; a class absent from train has no column.
    return ClassifierCode(classifier, codebook[classifier.classes_])


def run(algo: str, args: Args) -> dict[str, Any]:
    """Fit the baseline ``algo`` on the train split, encode, evaluate and write the run folder."""
    if args.bits <= 0:
        raise UsageError(f"--bits must be positive, got {args.bits}")
    dataset = load_run_dataset(args)
    folder = run_folder(args, algo)
    save_args(folder, args, algo)
    start = time.perf_counter()
    features = dataset.train.features.astype(np.float64)
    if algo == "lsh":
        model: Any = fit_lsh(features, args.bits, args.seed)
    elif algo == "itq":
        model = fit_itq(features, args.bits, args.seed, args.iterations)
    else:
        model = fit_mlp_code(dataset, args)
    train_seconds = time.perf_counter() - start
    temporary = folder / (MODEL_FILE + ".tmp")
    temporary.write_bytes(pickle.dumps(model))
    temporary.replace(folder / MODEL_FILE)
    metrics = evaluate_encoder(encode_split, model, dataset, args.bits, args.topk)
    results = results_record(algo, args, metrics, train_seconds, 0, model_file=MODEL_FILE)
    write_json_atomic(folder / "results.json", results)
    return results


def encode_split(model: LinearHash | ClassifierCode, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes of items; uint8 (n, bits)."""
    codes = model.encode(features)
    if codes.shape[1] != bits:
        raise ValueError(f"the model encodes {codes.shape[1]} bits, asked for {bits}")
    return codes


def load_model(folder: Path, device: str = "auto") -> LinearHash | ClassifierCode:
    """The fitted baseline of a run folder (a pickle this project wrote)."""
    return pickle.loads((Path(folder) / MODEL_FILE).read_bytes())
