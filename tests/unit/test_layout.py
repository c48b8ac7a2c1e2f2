"""The layout's rules, checked on the source: what imports what, and how long code gets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from al_tasks.config import REPO_ROOT

PRODUCT = REPO_ROOT / "al_tasks"
PLUGINS = REPO_ROOT / "plugins"
#: What the product must never import: the harness, the Airflow side and Airflow itself.
FORBIDDEN = (
    "devstack",
    "plugins",
    "dags",
    "tests",
    "bench",
    "airflow",
    "al_common",
    "al_operators",
    "al_sensors",
    "al_notifiers",
    "al_daily",
    "al_triggers",
)
MAX_FUNCTION_LINES = 60
MAX_EXECUTE_LINES = 15


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_the_product_imports_nothing_from_the_harness_or_airflow():
    offending = {}
    for path in python_files(PRODUCT):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        if bad:
            offending[str(path.relative_to(REPO_ROOT))] = bad
    assert offending == {}
    assert len(python_files(PRODUCT)) > 20  # the scan looked at the package


def test_the_scan_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from airflow.sdk import DAG\n    import devstack.demo\n")
    assert {m.split(".")[0] for m in imported_modules(sample)} == {"airflow", "devstack"}


def functions(path: Path):
    """(qualified name, number of lines, node) of every function in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                yield owner + child.name, child.end_lineno - child.lineno + 1, child


@pytest.mark.parametrize("root", [PRODUCT, PLUGINS], ids=["al_tasks", "plugins"])
def test_no_function_is_longer_than_60_lines(root):
    too_long = {
        f"{path.relative_to(REPO_ROOT)}:{name}": lines
        for path in python_files(root)
        for name, lines, _ in functions(path)
        if lines > MAX_FUNCTION_LINES
    }
    assert too_long == {}


def test_every_operator_execute_is_short():
    long_executes = {}
    executes = 0
    for path in python_files(PLUGINS):
        for name, lines, _ in functions(path):
            if name.endswith(".execute"):
                executes += 1
                if lines >= MAX_EXECUTE_LINES:
                    long_executes[f"{path.name}:{name}"] = lines
    assert long_executes == {}
    assert executes >= 12
