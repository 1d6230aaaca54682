"""The engine's layout holds: folders by concern, no import circles (imports inside functions and type-only
imports included), and every format behind its registry."""

from __future__ import annotations

import ast
from pathlib import Path

from nc_engine.data.load import FORMATS as DATA_FORMATS

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "nc_engine"
TOP_LEVEL = {"__init__.py", "errors.py", "files.py"}  # the foundation every folder stands on


def _module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Engine modules this file imports, anywhere in it (`from pkg import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {m for m in found if m in modules}


def import_graph(package: Path = ENGINE) -> dict[str, set[str]]:
    paths = {_module_name(p, package.parent): p for p in package.rglob("*.py")}
    return {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_engine_has_no_import_circles():
    assert circles(import_graph()) == []


def test_the_circle_finder_sees_a_circle_closed_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import x\n")
    (package / "b.py").write_text("def x():\n    from pkg import a\n")
    (package / "c.py").write_text("from pkg.a import x\n")
    assert circles(import_graph(package)) == [["pkg.a", "pkg.b"]]


def test_engine_modules_live_in_folders():
    loose = sorted(p.name for p in ENGINE.glob("*.py") if p.name not in TOP_LEVEL)
    assert loose == [], f"put these in the folder of their concern: {loose}"


def test_every_data_format_has_its_module_and_opener():
    for data_format, where in DATA_FORMATS.items():
        module, function = where.split(":")
        source = (ENGINE / "data" / f"{module}.py").read_text(encoding="utf-8")
        assert f"def {function}(cfg: Config) -> DataSource:" in source, data_format
