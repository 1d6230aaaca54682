"""The shape the code promises a newcomer: short functions in the engine and the app, and no path
inside a run folder built anywhere but in nc_engine/run/runfolder.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nc_engine", "nc_tui")
MAX_LINES = 60


def functions():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield path.relative_to(ROOT), node


def test_no_function_is_longer_than_sixty_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in functions()
        if node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, "split these: " + "; ".join(long)


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings."""
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_only_the_run_folder_knows_its_layout():
    """Names of files inside a run folder appear in runfolder.py alone: everything else goes through it."""
    layout = re.compile(
        r"(report\.json|report\.csv|samples\.npz|events\.jsonl|log\.txt|triggers/|trials/"
        r"|inflight/|^mitigation$)"
    )
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "runfolder.py":
                continue
            for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
                if layout.search(node.value):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, "go through RunFolder: " + "; ".join(offenders)
