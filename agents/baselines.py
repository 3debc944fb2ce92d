"""Non-RL hashing baselines on the same features and split: LSH, ITQ and the supervised MLP-to-codeword.

Every RL agent is judged against these, so they write the same results.json as the trainers
(``env`` is recorded as ``"none"`` and ``env_steps`` as 0: no environment is stepped).

- ``lsh``: random hyperplanes through the train mean (Charikar's sign random projections). On
  centred data each bit is balanced in expectation.
- ``itq``: PCA to ``bits`` dimensions, then iterative quantization (Gong & Lazebnik, CVPR 2011):
  alternate ``B = sign(V R)`` and the orthogonal Procrustes rotation ``R`` that minimises the
  quantization loss ``||B - V R||_F^2``, which never increases from one iteration to the next.
- ``sdh``: supervised discrete hashing (Shen, Shen, Liu, Shen, CVPR 2015): RBF features on anchor
  points, codes ``B`` in {-1, 1} that a linear classifier ``W`` maps to the labels and a linear map
  ``F(x) = phi(x) P`` predicts, fitted by alternating exact steps (P and W in closed form, B by
  discrete cyclic coordinate descent), so the objective
  ``||Y - B W||^2 + lambda ||W||^2 + nu ||B - phi(X) P||^2 + delta ||P||^2`` never increases.
- ``mlp-code``: a scikit-learn MLP classifier on the train split; an item's code is its predicted
  class's label codeword (``hashing_gym.codes.label_codebook``, BCH). The supervised reference of
  BinaryCodeTravel-v0: what a perfect travel to the predicted class's codeword retrieves.

A fitted model is stored as data, never as code: its arrays in ``model.npz``
(``agents.checkpoint.write_arrays``, read back with ``allow_pickle=False``) and its kind and scalars
in ``model.json``; :func:`load_model` rebuilds it (mlp-code as the classifier's weights and a numpy
forward pass, :class:`ClassifierCode`). Run folders of older versions hold a pickled ``model.pkl``,
which :func:`load_model` refuses (unpickling runs whatever code the file carries);
``python -m agents.convert RUN --trust-pickle`` unpickles one whose author the user trusts and
:func:`convert_legacy_model` writes it in the safe format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.checkpoint import CheckpointError, read_arrays, read_json, write_arrays, write_json
from agents.common import (
    CommonArgs,
    UsageError,
    announce_run,
    check_common_args,
    evaluate_encoder,
    load_run_dataset,
    open_run,
    parse_hidden,
    releases_run_lock,
    results_record,
)
from agents.report import finish_run
from hashing_gym.codes import label_codebook
from hashing_gym.data import HashingDataset

MODEL_FILE = "model.npz"  # the fitted model's arrays
MODEL_INFO_FILE = "model.json"  # its kind and scalars
LEGACY_MODEL_FILE = "model.pkl"  # older versions' pickle: converted on request, never loaded
MODEL_FORMAT = 1


@dataclass
class Args(CommonArgs):
    """Baseline options (the environment and step options of CommonArgs are not used).

    A baseline steps no environment: its run folder has no checkpoints and no TensorBoard logs
    (report.md shows its results, PR curve and codes picture).
    """

    env: str = field(default="none", metadata={"help": "not used: baselines step no environment"})
    iterations: int = field(default=50, metadata={"help": "itq: quantization iterations"})
    sdh_iterations: int = field(default=5, metadata={"help": "sdh: outer (P, W, B) iterations"})
    anchors: int = field(default=1000, metadata={"help": "sdh: RBF anchor points (at most the train size)"})
    sdh_lambda: float = field(default=1.0, metadata={"help": "sdh: ridge weight of the classifier W"})
    sdh_nu: float = field(default=1e-5, metadata={"help": "sdh: weight of the code-prediction term"})
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
class KernelHash:
    """``code = phi(x) @ projection > 0`` with RBF features ``phi`` on anchors: the model of ``sdh``."""

    anchors: np.ndarray
    sigma: float
    feature_mean: np.ndarray
    projection: np.ndarray
    objective: list[float] = field(default_factory=list)

    def features(self, features: np.ndarray) -> np.ndarray:
        """Centred RBF features (n, anchors) of float (n, D) features."""
        return (
            rbf_features(np.asarray(features, dtype=np.float64), self.anchors, self.sigma) - self.feature_mean
        )

    def encode(self, features: np.ndarray) -> np.ndarray:
        """uint8 (n, bits) codes of float (n, D) features."""
        return (self.features(features) @ self.projection > 0).astype(np.uint8)


HIDDEN_ACTIVATIONS: tuple[str, ...] = ("identity", "logistic", "tanh", "relu")  # MLPClassifier's
OUTPUT_ACTIVATIONS: tuple[str, ...] = ("logistic", "softmax")  # binary, multiclass


@dataclass
class ClassifierCode:
    """``code = codebook[argmax of an MLP's class probabilities]``: the model of ``mlp-code``.

    The weights of a fitted ``sklearn.neural_network.MLPClassifier`` (``coefs_``, ``intercepts_``,
    ``activation``, ``out_activation_``, ``classes_``) and a numpy forward pass that computes its
    ``predict_proba`` as scikit-learn does (same operations, in the same order and dtype), so a
    stored model needs no pickle and no private scikit-learn attribute to be rebuilt.
    ``codebook``: row j is the codeword of class ``classes[j]``.
    """

    coefs: list[np.ndarray]
    intercepts: list[np.ndarray]
    activation: str
    out_activation: str
    classes: np.ndarray
    codebook: np.ndarray

    @classmethod
    def from_classifier(cls, classifier: Any, codebook: np.ndarray) -> ClassifierCode:
        """The model of a fitted ``MLPClassifier``; ``codebook`` row j encodes ``classifier.classes_[j]``."""
        return cls(
            coefs=[np.asarray(w) for w in classifier.coefs_],
            intercepts=[np.asarray(b) for b in classifier.intercepts_],
            activation=str(classifier.activation),
            out_activation=str(classifier.out_activation_),
            classes=np.asarray(classifier.classes_),
            codebook=np.asarray(codebook),
        )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (n, classes), as ``MLPClassifier.predict_proba``."""
        x = np.asarray(features)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        for i, (weights, bias) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            x = x @ weights
            x += bias
            if i < len(self.coefs) - 1:
                x = _activate(self.activation, x)
        if self.out_activation == "logistic":  # one output unit: P(classes[1])
            from scipy.special import expit

            positive = expit(x).ravel()
            return np.vstack([1 - positive, positive]).T
        x = x - x.max(axis=1)[:, np.newaxis]  # softmax, shifted as scikit-learn does
        np.exp(x, out=x)
        x /= x.sum(axis=1)[:, np.newaxis]
        return x

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The most probable class of each item (``classes`` values)."""
        return self.classes[np.argmax(self.predict_proba(features), axis=1)]

    def encode(self, features: np.ndarray) -> np.ndarray:
        """uint8 (n, bits) codes: the predicted (most probable) class's codeword."""
        probabilities = self.predict_proba(np.asarray(features, dtype=np.float32))
        return self.codebook[np.argmax(probabilities, axis=1)]


def _activate(name: str, x: np.ndarray) -> np.ndarray:
    """MLPClassifier's hidden activation ``name`` applied to ``x`` in place."""
    if name == "relu":
        np.maximum(x, 0, out=x)
    elif name == "tanh":
        np.tanh(x, out=x)
    elif name == "logistic":
        from scipy.special import expit

        expit(x, out=x)
    elif name != "identity":
        raise ValueError(f"unknown activation {name!r}; one of {', '.join(HIDDEN_ACTIVATIONS)}")
    return x


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


def rbf_features(features: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-||x - a||^2 / (2 sigma^2))`` for every item x and anchor a; (n, anchors)."""
    squared = (
        (features**2).sum(axis=1)[:, None] - 2.0 * features @ anchors.T + (anchors**2).sum(axis=1)[None, :]
    )
    return np.exp(-np.maximum(squared, 0.0) / (2.0 * sigma**2))


def sdh_objective(
    targets: np.ndarray,
    codes: np.ndarray,
    classifier: np.ndarray,
    phi: np.ndarray,
    projection: np.ndarray,
    args: Args,
    delta: float,
) -> float:
    """SDH's loss ``||Y - B W||^2 + lambda ||W||^2 + nu (||B - phi P||^2 + delta ||P||^2)``."""
    return float(
        ((targets - codes @ classifier) ** 2).sum()
        + args.sdh_lambda * (classifier**2).sum()
        + args.sdh_nu * (((codes - phi @ projection) ** 2).sum() + delta * (projection**2).sum())
    )


def fit_sdh(dataset: HashingDataset, args: Args) -> KernelHash:
    """Supervised discrete hashing on the train split (records the objective after each step)."""
    features = dataset.train.features.astype(np.float64)
    n = len(features)
    rng = np.random.default_rng(args.seed)
    if args.anchors < 1:
        raise UsageError(f"--anchors must be >= 1, got {args.anchors}")
    anchors = features[rng.choice(n, size=min(args.anchors, n), replace=False)]
    # sigma: the root mean squared item-anchor distance, a bandwidth on the scale of the data.
    sigma = float(np.sqrt(np.maximum(rbf_squared_mean(features, anchors), 1e-12)))
    phi = rbf_features(features, anchors, sigma)
    feature_mean = phi.mean(axis=0)
    phi -= feature_mean
    labels = dataset.train.labels
    targets = labels.astype(np.float64) if labels.ndim == 2 else np.eye(dataset.num_classes)[labels]
    codes = np.where(phi @ rng.standard_normal((phi.shape[1], args.bits)) >= 0, 1.0, -1.0)
    delta = 1e-6 * n  # a tiny ridge on P keeps its normal equations well posed
    gram_inverse = np.linalg.inv(phi.T @ phi + delta * np.eye(phi.shape[1]))
    objective = []
    for _ in range(args.sdh_iterations):
        projection = gram_inverse @ (phi.T @ codes)  # P-step: ridge regression of B on phi
        classifier = np.linalg.solve(  # W-step: ridge regression of Y on B
            codes.T @ codes + args.sdh_lambda * np.eye(args.bits), codes.T @ targets
        )
        objective.append(sdh_objective(targets, codes, classifier, phi, projection, args, delta))
        target = targets @ classifier.T + args.sdh_nu * (phi @ projection)
        codes = discrete_cyclic_coordinate_descent(codes, classifier, target)
        objective.append(sdh_objective(targets, codes, classifier, phi, projection, args, delta))
    projection = gram_inverse @ (phi.T @ codes)
    return KernelHash(anchors, sigma, feature_mean, projection, objective)


def rbf_squared_mean(features: np.ndarray, anchors: np.ndarray) -> float:
    """Mean squared distance between the items and the anchors (without forming all pairs twice)."""
    return float(
        (features**2).sum(axis=1).mean()
        - 2.0 * features.mean(axis=0) @ anchors.mean(axis=0)
        + (anchors**2).sum(axis=1).mean()
    )


def discrete_cyclic_coordinate_descent(
    codes: np.ndarray, classifier: np.ndarray, target: np.ndarray, sweeps: int = 3
) -> np.ndarray:
    """SDH's B-step: minimise ``||B W||^2 - 2 tr(B^T Q)`` over B in {-1, 1}^(n, b), one bit column at a time.

    With the other columns fixed, column k's exact minimiser is ``sign(q_k - B' W' w_k)``
    (B', W' without column / row k); a zero keeps the old bit, so no step increases the loss.
    """
    codes = codes.copy()
    for _ in range(sweeps):
        for k in range(codes.shape[1]):
            others = np.arange(codes.shape[1]) != k
            score = target[:, k] - codes[:, others] @ (classifier[others] @ classifier[k])
            codes[:, k] = np.where(score > 0, 1.0, np.where(score < 0, -1.0, codes[:, k]))
    return codes


def fit_mlp_code(dataset: HashingDataset, args: Args) -> ClassifierCode:
    """An MLP classifier on the train split, mapped to BCH label codewords."""
    from sklearn.neural_network import MLPClassifier

    hidden = tuple(parse_hidden(args.hidden))
    labels = dataset.train.labels
    if labels.ndim == 2:  # multi-label: learn each item's first label; codes follow the top class
        labels = np.argmax(labels, axis=1)
    classifier = MLPClassifier(hidden_layer_sizes=hidden, max_iter=args.max_iter, random_state=args.seed)
    classifier.fit(dataset.train.features, labels)
    codebook = np.asarray(label_codebook(dataset.num_classes, args.bits, kind="bch", seed=args.seed))
    # predict_proba's columns follow classifier.classes_; a class absent from train has no column.
    return ClassifierCode.from_classifier(classifier, codebook[classifier.classes_])


@releases_run_lock
def run(algo: str, args: Args) -> dict[str, Any]:
    """Fit the baseline ``algo`` on the train split, encode, evaluate and write the run folder."""
    if args.env != "none":
        raise UsageError(f"{algo} steps no environment: leave out --env (got --env {args.env})")
    check_common_args(args, non_negative=("iterations", "sdh_iterations"))
    if algo == "mlp-code":
        parse_hidden(args.hidden)
    dataset = load_run_dataset(args)
    folder = open_run(args, algo)
    announce_run(folder, algo, args, dataset, "cpu (numpy)", "a fit on the train split, no env steps")
    start = time.perf_counter()
    features = dataset.train.features.astype(np.float64)
    if algo == "lsh":
        model: Any = fit_lsh(features, args.bits, args.seed)
    elif algo == "itq":
        model = fit_itq(features, args.bits, args.seed, args.iterations)
    elif algo == "sdh":
        model = fit_sdh(dataset, args)
    else:
        model = fit_mlp_code(dataset, args)
    train_seconds = time.perf_counter() - start
    save_model(model, folder)
    metrics = evaluate_encoder(encode_split, model, dataset, args.bits, args.topk)
    results = results_record(algo, args, metrics, train_seconds, 0, model_file=MODEL_FILE)
    write_json(folder / "results.json", results)
    return finish_run(folder, results, dataset, lambda x: encode_split(model, x, args.bits))


def encode_split(model: Model, features: np.ndarray, bits: int) -> np.ndarray:
    """Codes of items; uint8 (n, bits)."""
    codes = model.encode(features)
    if codes.shape[1] != bits:
        raise ValueError(f"the model encodes {codes.shape[1]} bits, asked for {bits}")
    return codes


Model = LinearHash | KernelHash | ClassifierCode


def save_model(model: Model, folder: Path) -> None:
    """Write ``model`` into ``folder`` as ``model.npz`` (its arrays) and ``model.json`` (kind, scalars).

    The arrays are written first: ``model.json`` completes the model.
    """
    folder = Path(folder)
    if isinstance(model, LinearHash):
        info: dict[str, Any] = {"kind": "linear"}
        arrays = {
            "mean": model.mean,
            "projection": model.projection,
            "quantization_loss": np.asarray(model.quantization_loss, dtype=np.float64),
        }
    elif isinstance(model, KernelHash):
        info = {"kind": "kernel", "sigma": float(model.sigma)}
        arrays = {
            "anchors": model.anchors,
            "feature_mean": model.feature_mean,
            "projection": model.projection,
            "objective": np.asarray(model.objective, dtype=np.float64),
        }
    elif isinstance(model, ClassifierCode):
        info = {
            "kind": "classifier",
            "activation": model.activation,
            "out_activation": model.out_activation,
            "layers": len(model.coefs),
        }
        arrays = {"classes": model.classes, "codebook": model.codebook}
        for i, (weights, bias) in enumerate(zip(model.coefs, model.intercepts, strict=True)):
            arrays[f"coefs_{i}"], arrays[f"intercepts_{i}"] = weights, bias
    else:
        raise TypeError(f"save_model: not a fitted baseline: {type(model).__name__}")
    write_arrays(folder / MODEL_FILE, arrays)
    write_json(folder / MODEL_INFO_FILE, {"format": MODEL_FORMAT, **info})


def load_model(folder: Path, device: str = "auto") -> Model:
    """The fitted baseline of a run folder, rebuilt from ``model.json`` and ``model.npz`` (no pickle).

    Raises:
        CheckpointError: naming the file if it is missing, unreadable or not a model, and saying how
            to convert a run folder of an older version (``model.pkl``) if the user trusts it.
    """
    folder = Path(folder)
    info_path, arrays_path = folder / MODEL_INFO_FILE, folder / MODEL_FILE
    legacy = folder / LEGACY_MODEL_FILE
    if not info_path.exists() and legacy.exists():
        raise CheckpointError(
            f"{legacy} is a pickled model from an older version, which is not opened (unpickling runs "
            f"any code the file carries); if you trust its author, `python -m agents.convert {folder} "
            "--trust-pickle` converts it"
        )
    info = read_json(info_path)
    arrays = read_arrays(arrays_path)
    try:
        return _rebuild(info, arrays)
    except (KeyError, TypeError, ValueError) as error:
        reason = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise CheckpointError(f"{info_path} and {arrays_path} are not a fitted baseline ({reason})") from None


def _rebuild(info: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model:
    """The model that :func:`save_model` wrote as ``info`` and ``arrays``; checks what encode relies on."""
    kind = info["kind"]

    def matrix(name: str) -> np.ndarray:
        value = arrays[name]
        if value.ndim != 2 or value.dtype.kind != "f":
            raise ValueError(f"{name} must be a float matrix, got {value.dtype} of shape {value.shape}")
        return value

    if kind == "linear":
        projection = matrix("projection")
        if arrays["mean"].shape != (projection.shape[0],):
            raise ValueError(f"mean has shape {arrays['mean'].shape}, projection {projection.shape}")
        return LinearHash(arrays["mean"], projection, arrays["quantization_loss"].tolist())
    if kind == "kernel":
        anchors, projection = matrix("anchors"), matrix("projection")
        if arrays["feature_mean"].shape != (anchors.shape[0],) or projection.shape[0] != anchors.shape[0]:
            raise ValueError(f"anchors {anchors.shape}, feature_mean and projection do not match")
        sigma = info["sigma"]
        if not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        objective = arrays["objective"].tolist()
        return KernelHash(anchors, float(sigma), arrays["feature_mean"], projection, objective)
    if kind == "classifier":
        layers = info["layers"]
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if info["activation"] not in HIDDEN_ACTIVATIONS or info["out_activation"] not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown activations {info['activation']!r}, {info['out_activation']!r}")
        coefs = [matrix(f"coefs_{i}") for i in range(layers)]
        intercepts = [arrays[f"intercepts_{i}"] for i in range(layers)]
        for i, (weights, bias) in enumerate(zip(coefs, intercepts, strict=True)):
            if bias.shape != (weights.shape[1],) or (i and weights.shape[0] != coefs[i - 1].shape[1]):
                raise ValueError(f"layer {i}: weights {weights.shape}, intercepts {bias.shape} do not chain")
        classes, codebook = arrays["classes"], arrays["codebook"]
        if codebook.ndim != 2 or len(codebook) != len(classes):
            raise ValueError(f"codebook {codebook.shape} must have a row per class ({len(classes)})")
        activations = info["activation"], info["out_activation"]
        return ClassifierCode(coefs, intercepts, *activations, classes, codebook)
    raise ValueError(f"unknown model kind {kind!r}")


def convert_legacy_model(folder: Path, legacy: Any) -> None:
    """Write ``legacy``, the object of an older version's ``model.pkl``, as ``model.npz`` + ``model.json``.

    ``agents.convert`` unpickles ``model.pkl`` (the one place that does, and only with the user's
    ``--trust-pickle``) and hands the object here; ``model.pkl`` is left as it was.

    Raises:
        CheckpointError: naming ``model.pkl`` if the object is not a fitted baseline.
    """
    path = Path(folder) / LEGACY_MODEL_FILE
    if isinstance(legacy, ClassifierCode) and "classifier" in vars(legacy):
        # The older ClassifierCode held the fitted MLPClassifier itself.
        model: Model = ClassifierCode.from_classifier(legacy.classifier, legacy.codebook)
    elif isinstance(legacy, (LinearHash, KernelHash)):
        model = legacy
    else:
        raise CheckpointError(f"{path} holds a {type(legacy).__name__}, not a fitted baseline")
    save_model(model, Path(folder))
