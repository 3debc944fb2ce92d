"""docs/bad-input.md stays true: every refusal it lists is asserted by the test it names."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "bad-input.md"


def table_rows():
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and cells[4].startswith("`tests/"):
            rows.append((cells[3].strip("`"), cells[4].strip("`")))
    return rows


def test_the_table_covers_the_issue_list():
    rows = table_rows()
    assert len(rows) >= 30
    text = TABLE.read_text()
    for case in (
        "NaN or inf",
        "truncated IDX",
        "magic number",
        "CIFAR-10 batches",
        ".mat",
        "not divisible by",
        "not 0/1",
        "action outside",
        "out of range",
        "holds no run",
        "unknown algorithm",
    ):
        assert case in text


@pytest.mark.parametrize(("message", "test"), table_rows())
def test_each_refusal_is_asserted_by_the_test_it_names(message, test):
    path, name = test.split("::")
    source = (ROOT / path).read_text()
    functions = {
        node.name: ast.get_source_segment(source, node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }
    assert name in functions, f"{test} does not exist"
    # The message may sit in the test's body, in its parametrize list just above it, or in a
    # module-level list of cases that the parametrize names.
    start = source.index(f"def {name}(")
    decorated = source[source.rfind("\n\n\n", 0, start) : start] + functions[name]
    module = ast.parse(source)
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if re.search(rf"\b{node.targets[0].id}\b", decorated):
                decorated += ast.get_source_segment(source, node)
    unescaped = re.sub(r"\\(.)", r"\1", decorated)
    assert message in decorated or message in unescaped, f"{test} does not mention {message!r}"
