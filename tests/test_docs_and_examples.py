import re
from pathlib import Path

import pytest
from test_course import GRADE_REFERENCE, NAMES
from test_examples import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def bash_blocks(path):
    return [
        block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    ]


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"))
def test_readme_python_blocks_run(block):
    exec(compile(block, "README.md", "exec"), {})


def test_readme_first_screen_has_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    install, tests = first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.split(" && ")[0] in ci  # CI installs exactly as the README says
    assert tests in ci


def test_every_other_readme_command_is_one_the_tests_run():
    # The first block is CI's (above); every command of the other blocks is run by tests/test_examples.py
    # (the examples, with --quick) or tests/test_course.py (the checker on a reference solution).
    tested = set(COMMANDS.values()) | {GRADE_REFERENCE.format(n=n, name=name) for n, name in NAMES.items()}
    commands = [line for block in bash_blocks(ROOT / "README.md")[1:] for line in block]
    assert commands, "the README shows no example commands"
    untested = [line for line in commands if line not in tested]
    assert not untested, f"README commands no test runs: {untested}"
    assert set(COMMANDS.values()) <= set(commands)  # and the README shows every example


def test_course_readme_blocks_are_the_checker_usage():
    (block,) = bash_blocks(ROOT / "examples" / "course" / "README.md")
    assert block == ["python -m examples.course.check N path/to/solution.py"]


def test_readme_install_table_has_a_line_per_machine_and_ci_follows_this_kinds_line():
    readme = (ROOT / "README.md").read_text()
    cells = [row.split("|") for row in readme.splitlines() if row.startswith("|") and "pip install" in row]
    rows = {cell[1].strip(): cell[2].strip() for cell in cells}
    cpu = next(line for machine, line in rows.items() if "CPU-only" in machine)
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu and "torch==2.13.0" in cpu
    assert any("NVIDIA" in machine for machine in rows)
    here = next(line for machine, line in rows.items() if "CI" in machine)
    ci = (ROOT / ".ci" / "run").read_text()
    assert here.strip("`") in ci


def test_the_console_script_is_the_train_cli():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "hashing-gym-train"]
    from agents import train

    assert script.load() is train.main


def test_every_test_that_reliability_md_names_exists():
    """docs/RELIABILITY.md names the test behind each row: each must exist (``*`` matches a name's rest)."""
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    named, current = [], None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?(::[\w*]+)?`", doc):
        current = match.group(1) or current
        if match.group(2):
            named.append((current, match.group(2)[2:]))
    assert len(named) > 30
    word = r"\w*"
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search("def " + name.replace("*", word) + r"\(", (ROOT / path).read_text())
    ]
    assert not missing, missing
