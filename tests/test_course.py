"""The course checker passes every reference solution and fails starters and wrong solutions."""

import re
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python -m examples.course.check` runs from the repository root
    sys.path.insert(0, str(ROOT))

from examples.course import check  # noqa: E402

COURSE = ROOT / "examples" / "course"
NAMES = {
    1: "exercise1_reward",
    2: "exercise2_teacher",
    3: "exercise3_average_precision",
    4: "exercise4_q_learning",
    5: "exercise5_reinforce",
}
# The command the README and examples/course/README.md show for grading a reference solution.
GRADE_REFERENCE = "python -m examples.course.check {n} examples/course/solutions/{name}.py"

# One plausible mistake per exercise (a text edit of the reference solution) and the check that must
# catch it. Most fail a unit check, which skips the training run, so they grade in about a second.
WRONG = {
    "1: flip reward with the sign reversed": (
        1,
        "return margin(code, codebook, positive) - margin(flipped, codebook, positive)",
        "return margin(flipped, codebook, positive) - margin(code, codebook, positive)",
        "1b",
    ),
    "1: d_pos of a multi-label item from its farthest class": (
        1,
        "d_pos = d[positive].min()",
        "d_pos = d[positive].max()",
        "1a",
    ),
    "1: terminate rewarded only strictly inside eta": (
        1,
        "return sigma if d_pos <= eta else -sigma",
        "return sigma if d_pos < eta else -sigma",
        "1b",
    ),
    "2: the teacher stops only strictly inside eta": (
        2,
        "if distances[target] <= eta:",
        "if distances[target] < eta:",
        "2a",
    ),
    "3: tie-aware AP that ignores the other relevant items of the bucket": (
        3,
        "step = (r - 1) / (n - 1) if n > 1 else 0.0",
        "step = 0.0",
        "3b",
    ),
    "4: Q-learning that bootstraps past termination": (
        4,
        "target = reward if terminated else reward + gamma",
        "target = reward + gamma",
        "4b",
    ),
    "4: a training loop that never learns": (
        4,
        "for episode in range(episodes):",
        "for episode in range(0):",
        "4c",
    ),
    "1: d_neg of an item of every class is a mean over no class (nan)": (
        1,
        "d_neg = d[~positive].mean() if (~positive).any() else 0.0",
        "d_neg = d[~positive].mean()",
        "1a",
    ),
    "1: flip_reward flips the caller's code in place": (
        1,
        "flipped = np.array(code, copy=True)\n    flipped[bit] ^= 1\n"
        "    return margin(code, codebook, positive) - margin(flipped, codebook, positive)",
        "before = margin(code, codebook, positive)\n    code[bit] ^= 1\n"
        "    return before - margin(code, codebook, positive)",
        "1b",
    ),
    "2: the teacher flips a bit that already matches the codeword": (
        2,
        "return int(np.flatnonzero(codebook[target] != code)[0])",
        "return int(np.flatnonzero(codebook[target] == code)[0])",
        "2a",
    ),
    "2: the teacher aims at the farthest of a multi-label item's classes": (
        2,
        "target = classes[distances[classes].argmin()]",
        "target = classes[distances[classes].argmax()]",
        "2a",
    ),
    "2: the teacher flips the caller's code in place": (
        2,
        "return int(np.flatnonzero(codebook[target] != code)[0])",
        "bit = int(np.flatnonzero(codebook[target] != code)[0])\n    code[bit] ^= 1\n    return bit",
        "2a",
    ),
    "3: AP divided by the list's length instead of the relevant items": (
        3,
        "return float((precision * relevance).sum() / hits)",
        "return float((precision * relevance).sum() / len(relevance))",
        "3a",
    ),
    "3: tie-aware AP that counts positions from the bucket's start": (
        3,
        "expected_sum += (r / n) * (expected_hits / (before + j)).sum()",
        "expected_sum += (r / n) * (expected_hits / j).sum()",
        "3b",
    ),
    "4: epsilon-greedy that explores with probability 1 - epsilon": (
        4,
        "if rng.random() < epsilon:",
        "if rng.random() > epsilon:",
        "4a",
    ),
    "5: probabilities of the negated logits": (
        5,
        "return 1.0 / (1.0 + np.exp(-(weights @ np.append(x, 1.0))))",
        "return 1.0 / (1.0 + np.exp(weights @ np.append(x, 1.0)))",
        "5a",
    ),
    "5: sampled bits that follow 1 - p": (
        5,
        "return (rng.random(len(p)) < p).astype(np.int8)",
        "return (rng.random(len(p)) > p).astype(np.int8)",
        "5a",
    ),
    "5: a policy gradient summed over the batch instead of averaged": (
        5,
        "return (advantage[:, None] * (codes - p)).T @ inputs / len(xs)",
        "return (advantage[:, None] * (codes - p)).T @ inputs",
        "5b",
    ),
    "5: REINFORCE without the baseline in the gradient": (
        5,
        "advantage = np.asarray(rewards, dtype=np.float64) - baseline",
        "advantage = np.asarray(rewards, dtype=np.float64)",
        "5b",
    ),
}


def test_every_checker_is_tried_against_at_least_three_wrong_solutions():
    tried = [n for n, *_ in WRONG.values()]
    assert all(tried.count(n) >= 3 for n in NAMES), {n: tried.count(n) for n in NAMES}


def test_a_mutated_input_is_named(tmp_path, capsys):
    reference = (COURSE / "solutions" / f"{NAMES[2]}.py").read_text()
    _, old, new, _ = WRONG["2: the teacher flips the caller's code in place"]
    path = tmp_path / "solution.py"
    path.write_text(reference.replace(old, new))
    status, out = grade(2, path, capsys)
    assert status == 1 and "teacher_action() changed its argument code in place" in out, out


def grade(n, path, capsys):
    status = check.main([str(n), str(path)])
    return status, capsys.readouterr().out


def test_every_exercise_has_a_sheet_a_starter_a_solution_and_a_check():
    assert set(NAMES) == set(check.EXERCISES)
    for name in NAMES.values():
        for path in (COURSE / f"{name}.md", COURSE / f"{name}.py", COURSE / "solutions" / f"{name}.py"):
            assert path.is_file(), path
        starter = (COURSE / f"{name}.py").read_text()
        assert "YOUR CODE" in starter and "NotImplementedError" in starter
        assert f"examples.course.check {name[8]}" in (COURSE / f"{name}.md").read_text()


@pytest.mark.parametrize("n", sorted(NAMES))
def test_reference_solution_passes(n, capsys):
    status, out = grade(n, COURSE / "solutions" / f"{NAMES[n]}.py", capsys)
    assert status == 0, out
    assert "FAIL" not in out and "PASSED" in out


@pytest.mark.parametrize("n", sorted(NAMES))
def test_starter_fails_as_not_implemented(n, capsys):
    status, out = grade(n, COURSE / f"{NAMES[n]}.py", capsys)
    assert status == 1, out
    assert "not implemented yet" in out and "FAILED" in out
    assert "PASS " not in out  # nothing passes before the student writes code


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the nan mistake warns, as it should
@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_wrong_solution_fails_the_right_check(mistake, tmp_path, capsys):
    n, old, new, failing = WRONG[mistake]
    reference = (COURSE / "solutions" / f"{NAMES[n]}.py").read_text()
    assert reference.count(old) == 1, f"the mutation of {mistake!r} no longer applies"
    path = tmp_path / "solution.py"
    path.write_text(reference.replace(old, new))
    status, out = grade(n, path, capsys)
    assert status == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any(line.startswith(f"FAIL  {failing} ") for line in failed), out


def test_a_solution_that_does_not_import_fails(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import numpy as np\ndef margin(:\n")
    status, out = grade(1, path, capsys)
    assert status == 1
    assert "FAIL  import the solution: SyntaxError" in out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert check.main(["1", str(tmp_path / "missing.py")]) == 2
    assert "no such solution file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        check.main(["6", str(COURSE / "solutions" / "exercise1_reward.py")])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="exercise must be one of"):
        check.grade(0, COURSE / "solutions" / "exercise1_reward.py")


def test_course_readme_grading_command_is_the_one_tested():
    text = (COURSE / "README.md").read_text()
    assert "python -m examples.course.check N path/to/solution.py" in text


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="time limits need SIGALRM")
def test_a_solution_that_runs_too_long_is_stopped():
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="train took over 0.2 s"), check.time_limit(0.2, "train"):
        time.sleep(5)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(block, id=path.stem)
        for path in sorted(COURSE.glob("*.md"))
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    ],
)
def test_task_sheet_python_blocks_run(block, capsys):
    exec(compile(block, "task sheet", "exec"), {})
