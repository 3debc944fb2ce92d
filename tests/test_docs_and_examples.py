import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


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


def test_quickstart_runs_quickly_and_the_teacher_beats_random():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    scores = dict(re.findall(r"(\w+) policy: mAP@all = ([0-9.]+)", result.stdout))
    assert float(scores["teacher"]) > 0.9 > 0.3 > float(scores["random"])
