"""Logs and plots (issue #18 item 5): TensorBoard tags, report.md, the codes picture, the CLI's help.

Every trainer writes its scalars into ``DIR/tb/TRAINER`` under the same tags from its first steps,
prints a first line naming the run folder, data set, bits, device and budget, and ends with
``DIR/report.md``; ``python -m agents.train --help`` describes every algorithm.
"""

import contextlib
import io
import shlex
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import evaluate, report, train
from agents.common import EVAL_TAGS, TRAIN_TAGS, TrainingLog

DATA = [
    "--dataset", "blobs", "--dataset-options", "num_classes=3,n_per_class=20,dim=8,query_per_class=4",
    "--bits", "8", "--device", "cpu",
]  # fmt: skip
# trainer -> (tiny run, the most env steps before its first training point: one update or rollout)
RUNS = {
    "dqn-torch": (
        ["--num-envs", "4", "--timesteps", "96", "--learning-starts", "16", "--batch-size", "8",
         "--gradient-steps", "1", "--buffer-size", "40", "--hidden", "16", "--eval-every", "48"],
        4,
    ),
    "reinforce": (["--timesteps", "128", "--batch-size", "16", "--hidden", "16", "--eval-every", "4"], 16),
    "reinforce-torch": (
        ["--timesteps", "128", "--batch-size", "16", "--num-envs", "8", "--hidden", "16",
         "--eval-every", "4"],
        16,
    ),
    "drlih": (
        ["--group", "2", "--timesteps", "256", "--batch-size", "4", "--samples", "2", "--hidden", "8",
         "--eval-every", "4"],
        32,
    ),
    "ppo": (
        ["--timesteps", "256", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
         "--eval-every", "128"],
        64,
    ),
    "a2c": (["--timesteps", "256", "--num-envs", "2", "--n-steps", "16", "--eval-every", "128"], 32),
    "dqn-sb3": (
        ["--timesteps", "200", "--learning-starts", "50", "--num-envs", "2", "--eval-every", "100"], 2
    ),
    "rppo": (
        ["--timesteps", "128", "--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
         "--lstm-hidden", "16", "--hidden", "16", "--bank-refresh", "64", "--group", "4",
         "--eval-every", "64"],
        64,
    ),
}  # fmt: skip
PLOTTED = ("dqn-torch", "ppo")  # runs that draw report.md's pictures (one per trainer kind)
PNG = b"\x89PNG\r\n\x1a\n"


def scalars(folder):
    """tag -> [steps] of a run's TensorBoard folder."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Run each trainer of RUNS once (on first use); trainer -> (run folder, printed lines)."""
    parent, done = tmp_path_factory.mktemp("logs"), {}

    def run(algo):
        if algo not in done:
            out = parent / algo
            printed = io.StringIO()
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
                patch.setenv(report.PLOTS_VARIABLE, "1" if algo in PLOTTED else "0")
                assert train.main([algo, *DATA, *RUNS[algo][0], "--out", str(out)]) == 0
            done[algo] = out, printed.getvalue().splitlines()
        return done[algo]

    return run


@pytest.mark.parametrize("algo", list(RUNS))
def test_every_trainer_logs_the_common_tags_from_its_first_steps(finished, algo):
    out, lines = finished(algo)
    assert [path.name for path in (out / "tb").iterdir()] == [algo]  # one namespace, the trainer's
    steps = scalars(out / "tb" / algo)
    assert set(TRAIN_TAGS.values()) | set(EVAL_TAGS) <= set(steps), sorted(steps)
    assert not {"rollout/ep_rew_mean", "time/fps", "charts/SPS"} & set(steps)  # only the common names
    assert steps["time/steps_per_second"][0] <= RUNS[algo][1]  # from the first update or rollout
    assert steps["eval/map"][0] == 0  # the untrained policy's mAP starts the curve
    assert len(steps["eval/map"]) == len(set(steps["eval/map"]))  # one evaluation per step
    # The first line: run folder, data set, bits, device and budget; the closing lines: report, results.
    assert lines[0].startswith(f"{algo}: training on blobs (48 train items) at 8 bits on cpu, ")
    assert lines[0].endswith(f" env steps; writing {out}") or f"; writing {out}" in lines[0]
    assert f"report: {out / 'report.md'}" in lines and lines[-2].startswith("map=")


def test_report_md_shows_args_results_and_pictures_referenced_relatively(finished):
    import json

    out, _ = finished("dqn-torch")
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert text.startswith("# dqn-torch\n")
    assert f"| {results['map']:.4f} | {results['map_tie_aware']:.4f} | {results['topk']} |" in text
    assert "| bits | `8` |" in text and "| num_envs | `4` |" in text and "| algo | `dqn-torch` |" in text
    for name in (report.CURVES_FILE, report.PR_FILE, report.CODES_FILE):
        assert f"]({name})" in text  # relative: the folder can move
        assert (out / name).read_bytes()[:8] == PNG
    assert text.index("## Training curves") < text.index("## Precision") < text.index("## Database codes")
    assert "rollout/episode_return" in text and str(out / "tb") in text


def test_an_sb3_report_draws_its_curves_from_sb3s_run(finished):
    out, _ = finished("ppo")
    assert (out / report.CURVES_FILE).read_bytes()[:8] == PNG
    curves = report.read_scalars(out, "ppo")
    assert len(curves["train/loss"][0]) >= 2 and np.all(np.isfinite(curves["train/loss"][1]))


def test_without_plots_report_md_says_how_to_draw_them(finished):
    out, _ = finished("reinforce")
    text = (out / "report.md").read_text()
    assert f"not drawn: `python -m agents.evaluate {out}` draws it" in text
    assert not list(out.glob("*.png"))


def test_a_baseline_report_has_pictures_but_no_curves(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(report.PLOTS_VARIABLE, "1")
    out = tmp_path / "lsh"
    assert train.main(["lsh", *DATA, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "lsh: training on blobs (48 train items) at 8 bits on cpu (numpy), a fit on the train split, "
        f"no env steps; writing {out}"
    )
    assert lines[-1] == f"next: python -m agents.evaluate {out}"  # no TensorBoard logs to look at
    text = (out / "report.md").read_text()
    assert "none: this run logged no TensorBoard scalars (baselines step no environment)" in text
    assert not (out / "tb").exists() and not (out / report.CURVES_FILE).exists()
    assert (out / report.PR_FILE).read_bytes()[:8] == PNG and (out / report.CODES_FILE).is_file()


def test_evaluate_writes_one_pr_curve_file_and_refreshes_the_report(finished, tmp_path):
    source, _ = finished("reinforce")  # drawn without pictures: evaluate draws them
    out = tmp_path / "run"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(".lock"))
    assert evaluate.main([str(out), "--embedding", "pca"]) == 0
    pictures = sorted(path.name for path in out.glob("*.png"))
    assert pictures == ["codes.png", "pr_curve.png", "training_curves.png"]  # one PR-curve file
    text = (out / "report.md").read_text()
    assert "](pr_curve.png)" in text and "](codes.png)" in text and "not drawn" not in text


def test_a_resumed_runs_events_after_its_checkpoint_are_dropped(tmp_path):
    first = TrainingLog(tmp_path, "algo", total_steps=1000)
    for step in (10, 20, 30, 40):
        first.train(step, loss=float(step))
    first.close()
    again = TrainingLog(tmp_path, "algo", total_steps=1000, start_step=20)  # --resume from step 20
    again.train(30, loss=-1.0)
    again.close()
    steps, losses = report.read_scalars(tmp_path, "algo")["train/loss"]
    assert steps.tolist() == [10, 20, 30] and losses.tolist() == [10.0, 20.0, -1.0]


@pytest.fixture
def drawn(monkeypatch):
    """The figures agents.report would save, kept open for inspection."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda figure, path: figures.append(figure))
    yield figures
    report.pyplot().close("all")


def test_the_codes_picture_has_a_legend_of_class_names_and_an_unclipped_title(drawn):
    rng = np.random.default_rng(0)
    panels = [
        report.CodesPanel(f"run {i}", rng.normal(size=(50, 2)), rng.integers(0, 10, 50)) for i in range(2)
    ]
    report.plot_code_embeddings(panels, None, "tsne", "cifar10", 10)
    figure = drawn[0]
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == list(report.CLASS_NAMES["cifar10"])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    for artist in (figure._suptitle, legend, *(axis.title for axis in figure.axes)):
        extent = artist.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
    assert "t-SNE" in figure._suptitle.get_text()


def test_many_classes_get_a_colour_bar_of_ids_instead_of_a_legend(drawn):
    rng = np.random.default_rng(0)
    panel = report.CodesPanel("run", rng.normal(size=(60, 2)), rng.integers(0, 30, 60))
    report.plot_code_embeddings([panel], None, "pca", "features", 30)
    assert not drawn[0].legends and any(axis.get_ylabel() == "class id" for axis in drawn[0].axes)


def test_help_lists_every_algorithm_its_env_the_defaults_and_three_examples(capsys):
    import importlib

    assert train.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert train.main([]) == 2 and capsys.readouterr().out == text  # no argument: the same help
    lines = text.splitlines()
    assert set(train.ALGORITHM_HELP) == set(train.ALGORITHMS)
    for algo, (env, what) in train.ALGORITHM_HELP.items():
        assert any(line.split()[:2] == [algo, env] and line.endswith(what) for line in lines), algo
        default_env = importlib.import_module(train.ALGORITHMS[algo]).Args().env
        assert env == (default_env if default_env != "none" else "(none)"), algo
    assert "--dataset digits  --bits 16  --seed 0  --device auto" in text
    examples = [line.strip() for line in lines[lines.index("examples:") + 1 :] if line.startswith("  python")]
    assert len(examples) == 3 and examples == list(train.EXAMPLES)
    for example in examples:  # each parses with its trainer's options
        algo, *rest = shlex.split(example)[3:]
        trainer = train.resolve_algorithm(algo, rest)
        module = importlib.import_module(train.ALGORITHMS[trainer])
        assert module.Args(**vars(train.build_parser(trainer, module.Args).parse_args(rest)))


def test_event_files_are_read_in_the_order_they_were_written_not_by_name(tmp_path):
    """TensorBoard names end in a per-process counter ("...10" sorts before "...9"): order by time."""
    first = TrainingLog(tmp_path, "algo", total_steps=1000)
    for step in (10, 20, 30, 40):
        first.train(step, loss=float(step))
    first.close()
    again = TrainingLog(tmp_path, "algo", total_steps=1000, start_step=20)
    again.train(30, loss=-1.0)
    again.close()
    older, newer = sorted((tmp_path / "tb" / "algo").glob("events.*"), key=lambda path: path.stat().st_mtime)
    older.rename(older.with_name("events.out.tfevents.9999999999.host.1.9"))  # sorts after the newer one
    newer.rename(newer.with_name("events.out.tfevents.0000000001.host.1.10"))
    steps, losses = report.read_scalars(tmp_path, "algo")["train/loss"]
    assert steps.tolist() == [10, 20, 30] and losses.tolist() == [10.0, 20.0, -1.0]
