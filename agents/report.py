"""A run's pictures and its one-page summary, ``DIR/report.md``.

Every trainer writes ``report.md`` when its run ends (:func:`finish_run`) and ``python -m
agents.evaluate DIR`` rewrites it (:func:`write_run_report`). The page holds, in this order: what
was trained (algorithm, env, data set, bits, seed), the results table (results.json), the
training curves (``training_curves.png``, drawn from the run's TensorBoard scalars), the
precision-recall curve (``pr_curve.png``), a 2-D picture of the database codes coloured by class
(``codes.png``: PCA when a trainer draws it, t-SNE or PCA when agents.evaluate does) and the
run's arguments (args.json). Images are referenced relatively, so the folder can be moved or
shared as it is.

The pictures cost about a second at the end of a run (matplotlib, the TensorBoard reader, one
more encoding of the query and database splits). Setting the environment variable
``HASHING_GYM_RUN_PLOTS=0`` leaves them out: report.md then holds the text only and says how to
draw them (``python -m agents.evaluate DIR``). The test suite sets it, since it trains hundreds of
tiny runs; ``tests/test_logs.py`` turns it back on where it checks the pictures.

Baselines (lsh, itq, sdh, mlp-code) step no environment, so they log no TensorBoard scalars and
their page has no training curves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.checkpoint import atomic_path, read_json

REPORT_FILE = "report.md"
CURVES_FILE = "training_curves.png"
PR_FILE = "pr_curve.png"
CODES_FILE = "codes.png"
PLOTS_VARIABLE = "HASHING_GYM_RUN_PLOTS"
EMBEDDINGS: tuple[str, ...] = ("tsne", "pca", "none")
EMBEDDING_NAMES = {"tsne": "t-SNE", "pca": "PCA"}
# The scalars every trainer logs under these tags (agents.common.TrainingLog), drawn in this order.
CURVE_PANELS: tuple[tuple[str, str], ...] = (
    ("rollout/episode_return", "episode return"),
    ("train/loss", "loss"),
    ("eval/map", "mAP (query vs database)"),
    ("time/steps_per_second", "env steps per second"),
)
# (results key, column title) of the results tables (report.md, agents.evaluate's comparison).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("map", "mAP"),
    ("map_tie_aware", "mAP tie-aware"),
    ("topk", "k"),
    ("map_at_k", "mAP@k"),
    ("precision_at_k", "P@k"),
    ("precision_radius2", "P@r2"),
    ("code_balance", "balance"),
    ("bit_correlation", "bit corr."),
)
# Names of the classes of the data sets whose labels have names (ours: the loaders keep integer ids).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple("0123456789"),
    "mnist": tuple("0123456789"),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip
LEGEND_CLASSES = 20  # more classes than this: a colour bar of class ids instead of a legend


def plots_enabled() -> bool:
    """Whether trainers draw report.md's pictures when a run ends (``HASHING_GYM_RUN_PLOTS`` is not 0)."""
    return os.environ.get(PLOTS_VARIABLE, "1").strip().lower() not in ("0", "false", "no")


def pyplot() -> Any:
    """Matplotlib's pyplot on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    """Save a figure as PNG atomically (temporary file + rename), uncropped, and close it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", bbox_inches="tight")
    pyplot().close(figure)


# ---------------------------------------------------------------------------------------------
# Pictures


def plot_precision_recall(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Hamming ranking"
) -> None:
    """Precision-recall curves and precision against Hamming radius, one line per run."""
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4), layout="constrained")
    for label, (precision, recall) in curves.items():
        left.plot(recall, precision, marker=".", label=label)
        right.plot(np.arange(len(precision)), precision, marker=".", label=label)
    left.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    right.set(xlabel="Hamming radius", ylabel="precision", title="precision within radius", ylim=(0, 1.02))
    left.legend(loc="lower left", fontsize="small")
    figure.suptitle(title)
    save_figure(figure, path)


def embed_codes(codes: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of 0/1 codes: t-SNE (squared Euclidean = Hamming on 0/1 codes) or PCA."""
    points = codes.astype(np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(points) - 1) / 3)  # TSNE requires perplexity < n
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(points)


def first_classes(labels: np.ndarray) -> np.ndarray:
    """One class id per item: the label, or a multi-label item's first label."""
    return np.argmax(labels, axis=1) if labels.ndim == 2 else np.asarray(labels)


def sample_items(count: int, max_points: int, seed: int) -> np.ndarray:
    """The (sorted) items a picture draws: at most ``max_points`` of ``count``, chosen with ``seed``."""
    return np.sort(np.random.default_rng(seed).permutation(count)[:max_points])


@dataclass
class CodesPanel:
    """One panel of the codes picture: a run's 2-D points and their classes."""

    title: str
    xy: np.ndarray
    classes: np.ndarray


def class_name(dataset: str, class_id: int) -> str:
    """The name of a class for legends: the data set's own names, else ``class N``."""
    names = CLASS_NAMES.get(dataset, ())
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"


def plot_code_embeddings(
    panels: Sequence[CodesPanel], path: Path, method: str, dataset: str, num_classes: int
) -> None:
    """One panel per run: database codes in 2-D coloured by class, a legend of class names, a title.

    Up to :data:`LEGEND_CLASSES` classes get a legend (outside the panels, so it hides no point);
    more get a colour bar of class ids. The layout is constrained, so no title is clipped.
    """
    plt = pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns + 1.6, 4.2 * rows + 0.4), squeeze=False, layout="constrained"
    )
    count = max(num_classes, 1 + max(int(panel.classes.max(initial=0)) for panel in panels))
    base = plt.get_cmap("tab10" if count <= 10 else "tab20" if count <= 20 else "turbo")
    colours = ListedColormap([base(i / max(1, count - 1)) if count > 20 else base(i) for i in range(count)])
    norm = BoundaryNorm(np.arange(count + 1) - 0.5, count)
    scatter = None
    for axis, panel in zip(axes.flat, panels, strict=False):
        scatter = axis.scatter(
            panel.xy[:, 0], panel.xy[:, 1], c=panel.classes, cmap=colours, norm=norm, s=8, linewidths=0
        )
        axis.set(title=f"{panel.title}\n{len(panel.xy)} items", xticks=[], yticks=[])
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    if count <= LEGEND_CLASSES:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", linestyle="", color=colours(i), label=class_name(dataset, i))
            for i in range(count)
        ]
        figure.legend(handles=handles, title="class", loc="outside right center", fontsize="small")
    else:
        figure.colorbar(scatter, ax=axes, label="class id")
    figure.suptitle(f"Database codes in 2-D ({EMBEDDING_NAMES[method]}),\ncoloured by class")
    save_figure(figure, path)


def read_scalars(folder: Path, algo: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The TensorBoard scalars of a run: tag -> (steps, values), from ``DIR/tb/ALGO``.

    ``algo``: the trainer's folder under ``tb/``; without it (or when it holds no events), the
    last folder under ``tb/`` that does. Events that a resumed run's ``purge_step`` discarded are
    left out, as TensorBoard leaves them out. Empty when the run has no logs.
    """
    tb = Path(folder) / "tb"
    if not tb.is_dir():
        return {}
    candidates = sorted(path for path in tb.iterdir() if path.is_dir() and any(path.glob("events.*")))
    chosen = [path for path in candidates if path.name == algo] or candidates[-1:]
    if not chosen:
        return {}
    series: dict[str, list[tuple[int, float]]] = {}
    # One file per writer (process). TensorBoard's own loader takes them in name order, and the names
    # end in a per-process counter that sorts "10" before "9"; the first event's time orders them right.
    for events in sorted(_event_files(chosen[0]), key=lambda events: events[0].wall_time):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                # A resumed writer's purge_step: what earlier processes logged from this step on is void.
                for tag, points in series.items():
                    series[tag] = [(step, value) for step, value in points if step < event.step]
            for value in event.summary.value:
                scalar = _scalar_of(value)
                if scalar is not None:
                    series.setdefault(value.tag, []).append((event.step, scalar))
    return {
        tag: (np.array([step for step, _ in points]), np.array([value for _, value in points]))
        for tag, points in series.items()
        if points
    }


def _scalar_of(value: Any) -> float | None:
    """The number of a summary value that holds a scalar (old ``simple_value`` or a 0-d tensor)."""
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
        from tensorboard.util import tensor_util

        return float(tensor_util.make_ndarray(value.tensor).item())
    return None


def _event_files(directory: Path) -> list[list[Any]]:
    """The events of each non-empty TensorBoard event file of ``directory``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    paths = sorted(directory.glob("events.out.tfevents.*"))
    files = [list(EventFileLoader(str(path)).Load()) for path in paths]
    return [events for events in files if events]


def plot_training_curves(scalars: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Episode return, loss, mAP at each evaluation and steps/s against env steps (2 x 2 panels)."""
    figure, axes = pyplot().subplots(2, 2, figsize=(10, 6.5), layout="constrained")
    for axis, (tag, name) in zip(axes.flat, CURVE_PANELS, strict=True):
        if tag in scalars:
            steps, values = scalars[tag]
            axis.plot(steps, values, marker="." if len(steps) < 50 else None, label="mAP")
            if tag == "eval/map" and "eval/map_tie_aware" in scalars:
                tie_steps, tie_values = scalars["eval/map_tie_aware"]
                axis.plot(tie_steps, tie_values, linestyle="--", label="mAP tie-aware")
                axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlabel("env steps")
        axis.set_title(f"{name}  [{tag}]", fontsize="medium")
    figure.suptitle(title)
    save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# report.md


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped and line breaks flattened (the values are data)."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def results_table(results: dict[str, Any]) -> str:
    """One-row markdown table of a run's results (``COLUMNS``, training seconds, env steps)."""
    columns = [(key, title) for key, title in COLUMNS if key in results]
    columns += [(key, key.replace("_", " ")) for key in ("train_seconds", "env_steps") if key in results]
    cells = [
        f"{results[key]:.4f}" if isinstance(results[key], float) and key != "train_seconds" else results[key]
        for key, _ in columns
    ]
    return (
        "| " + " | ".join(title for _, title in columns) + " |\n"
        + "|" + "---|" * len(columns) + "\n"
        + "| " + " | ".join(_cell(cell) for cell in cells) + " |\n"
    )  # fmt: skip


def report_text(
    folder: Path, record: dict[str, Any], results: dict[str, Any], pictures: dict[str, str]
) -> str:
    """The markdown of report.md.

    ``record``: args.json (with ``algo``); ``results``: results.json (may be empty when the run
    has none); ``pictures``: for each of ``curves``, ``pr`` and ``codes``, the picture's file name
    (drawn) or a sentence saying why there is none.
    """
    algo = record.get("algo", "?")
    lines = [
        f"# {_cell(Path(folder).name)}",
        "",
        f"`{_cell(algo)}` on {_cell(record.get('env'))}, data set {_cell(record.get('dataset'))}, "
        f"{_cell(record.get('bits'))} bits, seed {_cell(record.get('seed'))}.",
        "",
        "## Results",
        "",
        results_table(results) if results else "No results.json: the run did not finish.\n",
    ]
    sections = (
        ("Training curves", "curves", "training curves"),
        ("Precision and recall (Hamming ranking, query vs database)", "pr", "precision-recall"),
        ("Database codes", "codes", "database codes"),
    )
    for heading, key, alt in sections:
        lines += [f"## {heading}", ""]
        picture = pictures.get(key, "not drawn")
        lines.append(f"![{alt}]({picture})" if picture.endswith(".png") else picture)
        if key == "curves" and (Path(folder) / "tb").is_dir():
            lines += [
                "",
                f"All scalars: `tensorboard --logdir {_cell(Path(folder) / 'tb')}` (one folder per trainer; "
                "the same tags for every trainer: `rollout/episode_return`, `train/loss`, `eval/map`, "
                "`time/steps_per_second`, ...).",
            ]
        lines.append("")
    lines += ["## Arguments (args.json)", "", "| option | value |", "|---|---|"]
    lines += [f"| {_cell(key)} | `{_cell(value)}` |" for key, value in record.items()]
    return "\n".join(lines) + "\n"


def _curves_title(record: dict[str, Any]) -> str:
    return f"{record.get('algo')} on {record.get('env')}, {record.get('dataset')}, {record.get('bits')} bits"


def write_run_report(
    folder: Path,
    dataset: Any = None,
    query_codes: np.ndarray | None = None,
    database_codes: np.ndarray | None = None,
    embedding: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
    xy: np.ndarray | None = None,
) -> Path:
    """Draw a run's pictures and write its report.md; return the report's path.

    Reads ``args.json`` and ``results.json`` of ``folder``. With ``dataset`` and the codes of its
    query and database splits, draws ``pr_curve.png`` and (unless ``embedding`` is ``"none"``)
    ``codes.png`` of at most ``max_points`` database items (``xy``: their 2-D points when the
    caller has them already, for the items :func:`sample_items` chooses). Training curves come
    from ``DIR/tb``; a run without logs (a baseline) or whose logs cannot be read gets a sentence
    instead (the curves are a convenience, never a reason to fail).
    """
    from agents.common import ARGS_FILE, RESULTS_FILE  # agents.common imports this module lazily

    folder = Path(folder)
    record = read_json(folder / ARGS_FILE)
    results_path = folder / RESULTS_FILE
    results = read_json(results_path) if results_path.is_file() else {}
    pictures: dict[str, str] = {}
    if dataset is None or query_codes is None or database_codes is None:
        later = f"not drawn: `python -m agents.evaluate {_cell(folder)}` draws it"
        pictures = {"curves": later, "pr": later, "codes": later}
    else:
        pictures["curves"] = _draw_curves(folder, record)
        from hashing_gym.ranking import precision_recall_curve

        curve = precision_recall_curve(
            query_codes, dataset.query.labels, database_codes, dataset.database.labels
        )
        plot_precision_recall({folder.name: curve}, folder / PR_FILE, title=_curves_title(record))
        pictures["pr"] = PR_FILE
        if embedding == "none":
            pictures["codes"] = "not drawn (`--embedding none`)"
        else:
            shown = sample_items(len(database_codes), max_points, seed)
            points = embed_codes(database_codes[shown], embedding, seed) if xy is None else xy
            classes = first_classes(dataset.database.labels)[shown]
            map_text = f": mAP {results['map']:.3f}" if "map" in results else ""
            panel = CodesPanel(f"{folder.name}{map_text}", points, classes)
            plot_code_embeddings([panel], folder / CODES_FILE, embedding, dataset.name, dataset.num_classes)
            pictures["codes"] = CODES_FILE
    path = folder / REPORT_FILE
    with atomic_path(path) as temporary:
        temporary.write_text(report_text(folder, record, results, pictures))
    return path


def _draw_curves(folder: Path, record: dict[str, Any]) -> str:
    """Draw training_curves.png from the run's TensorBoard scalars; its name, or why there is none."""
    try:
        scalars = read_scalars(folder, record.get("algo"))
    except Exception as error:
        return f"not drawn: the TensorBoard logs in `tb/` could not be read ({_cell(type(error).__name__)})"
    if not scalars:
        return "none: this run logged no TensorBoard scalars (baselines step no environment)"
    plot_training_curves(scalars, folder / CURVES_FILE, _curves_title(record))
    return CURVES_FILE


def finish_run(
    folder: Path,
    results: dict[str, Any],
    dataset: Any,
    encode: Callable[[np.ndarray], np.ndarray],
) -> dict[str, Any]:
    """A trainer's last step: write report.md, print where it is; return ``results`` with ``run_folder``.

    ``encode(features) -> codes`` is the trained hash function; it encodes the query and database
    splits for the pictures, which are left out when ``HASHING_GYM_RUN_PLOTS=0``
    (:func:`plots_enabled`). ``run_folder`` in the returned dict is for the CLI's closing lines,
    never written to results.json.
    """
    if plots_enabled():
        query, database = encode(dataset.query.features), encode(dataset.database.features)
        path = write_run_report(folder, dataset, query, database, seed=int(results.get("seed", 0)))
    else:
        path = write_run_report(folder)
    print(f"report: {path}", flush=True)
    return {**results, "run_folder": str(folder)}
