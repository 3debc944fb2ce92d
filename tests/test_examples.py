"""Every example runs with --quick, as the README shows it, and prints what it promises."""

import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The exact command lines of the README's Examples section (tests/test_docs_and_examples.py checks that
# the README shows no other). Each test runs one in this process, as `python examples/NAME.py ...` would
# (same sys.argv, run as __main__), which spares a fresh interpreter's torch and numba imports.
COMMANDS = {
    "quickstart": "python examples/quickstart.py --quick",
    "third_party_loop": "python examples/third_party_loop.py --quick",
    "sb3_direct": "python examples/sb3_direct.py --quick",
    "your_own_hash": "python examples/your_own_hash.py --quick",
    "plot_results": "python examples/plot_results.py --quick",
}


def run_command(command, monkeypatch, capsys):
    argv = shlex.split(command)
    assert argv[0] == "python" and argv[1].startswith("examples/"), command
    monkeypatch.setattr(sys, "argv", argv[1:])
    runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
    return capsys.readouterr().out


def table_rows(out):
    """The data rows of the markdown table an example prints, as lists of cells."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # drop the header


# Examples that need an extra in their own virtual environment: .ci/run builds it and runs them there.
OWN_VENV = {"rllib_ppo": "python -m examples.rllib_ppo --iterations 1 --env-runners 2"}


def test_every_example_script_has_a_quick_command():
    scripts = {path.stem for path in EXAMPLES.glob("*.py") if path.stem != "__init__"}
    assert scripts == set(COMMANDS) | set(OWN_VENV)
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(command in ci for command in OWN_VENV.values())
    for name, command in COMMANDS.items():
        assert command.startswith(f"python examples/{name}.py") and "--quick" in command
        assert "--quick" in (EXAMPLES / f"{name}.py").read_text()


def test_quickstart_runs_as_a_script_and_the_teacher_beats_random():
    # A real interpreter once: the scripts must run from a clean process, not only inside pytest.
    result = subprocess.run(
        [sys.executable, *shlex.split(COMMANDS["quickstart"])[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    scores = dict(re.findall(r"(\w+) policy: mAP@all = ([0-9.]+)", result.stdout))
    assert float(scores["teacher"]) > 0.9 > 0.3 > float(scores["random"])
    assert re.search(r"code   [01]{16}\ntarget [01]{16} \(class \d\)", result.stdout)  # the ansi rendering


def test_third_party_loop_counts_episodes_right_under_next_step_autoreset(monkeypatch, capsys):
    out = run_command(COMMANDS["third_party_loop"], monkeypatch, capsys)
    stats = {
        (env, policy): (int(n), float(ret), float(length)) for env, policy, n, ret, length in table_rows(out)
    }
    assert len(stats) == 4
    # Lengths are fixed by the MDPs: a loop that counted the autoreset step would see 17 and 2.
    assert stats[("SequentialHashBits-v0", "random")][2] == 16.0
    assert stats[("RankListHash-v0", "random")][2] == 1.0
    teacher, random = stats[("BinaryCodeTravel-v0", "teacher")], stats[("BinaryCodeTravel-v0", "random")]
    assert teacher[1] > 5.0 > random[1]  # the teacher always terminates inside the ball (+sigma)
    assert 1.0 <= teacher[2] <= 17.0 and all(count > 0 for count, _, _ in stats.values())


def test_sb3_direct_trains_every_env(monkeypatch, capsys):
    out = run_command(COMMANDS["sb3_direct"], monkeypatch, capsys)
    rows = {row[0]: row for row in table_rows(out)}
    assert set(rows) == {"BinaryCodeTravel-v0", "SequentialHashBits-v0", "RankListHash-v0"}
    assert rows["BinaryCodeTravel-v0"][1] == "dqn"
    for row in rows.values():
        assert 0.0 <= float(row[4]) <= 1.0 and 0.0 <= float(row[5]) <= 1.0
    # Even 1,024 PPO steps on the listwise reward beat random codes by a wide margin (0.38 against 0.10).
    assert float(rows["RankListHash-v0"][4]) > float(rows["RankListHash-v0"][5]) + 0.1


def test_your_own_hash_ranks_built_ins_and_a_user_function(monkeypatch, capsys, tmp_path):
    out = run_command(COMMANDS["your_own_hash"], monkeypatch, capsys)
    rows = {row[0]: [float(cell) for cell in row[1:5]] for row in table_rows(out)}
    assert set(rows) == {"lsh", "pca", "constant"}
    assert min(rows["lsh"][0], rows["pca"][0]) > 0.25 > 0.11 > rows["constant"][1]  # tie-aware: chance

    (tmp_path / "my_hash.py").write_text(
        "import numpy as np\n\n\ndef fit(train, bits, seed):\n"
        "    return lambda f: (f[:, :bits] > 0).astype(np.uint8)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = runpy.run_path(str(EXAMPLES / "your_own_hash.py"))
    results = module["main"](["--hash", "my_hash:fit", "--bits", "8"])
    capsys.readouterr()
    from hashing_gym.data import load_dataset
    from hashing_gym.ranking import mean_average_precision

    dataset = load_dataset("digits", seed=0)
    codes = [(split.features[:, :8] > 0).astype(np.uint8) for split in (dataset.query, dataset.database)]
    expected = mean_average_precision(codes[0], dataset.query.labels, codes[1], dataset.database.labels)
    assert results["my_hash:fit"]["map"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="--hash must be one of"):
        module["load_hash"]("no_colon_here")


def test_plot_results_draws_both_pictures(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # the command writes ./plots
    out = run_command(COMMANDS["plot_results"], monkeypatch, capsys)
    rows = table_rows(out)
    assert sorted((row[1], int(row[3])) for row in rows) == [
        ("itq", 8),
        ("itq", 16),
        ("itq", 32),
        ("lsh", 8),
        ("lsh", 16),
        ("lsh", 32),
    ]
    for name in ("map_vs_bits.png", "pr_curves.png"):
        image = matplotlib.image.imread(tmp_path / "plots" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0  # a real, non-blank picture
    find_runs = runpy.run_path(str(EXAMPLES / "plot_results.py"))["find_runs"]
    assert len(find_runs([tmp_path / "plots" / "runs" / "lsh-8"])) == 1  # a run folder itself
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_runs([tmp_path / "missing"])
