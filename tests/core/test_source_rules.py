"""Rules the source keeps: no import circle, no module over 700 lines, and no
reference to a specification outside the repository (docs/ holds the facts)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "queue_runtime"
MAX_LINES = 700


def module_name(path: Path, package: Path = PACKAGE) -> str:
    name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules ``name`` imports when it is imported: module level, including
    ``if TYPE_CHECKING:`` blocks (a circle for the type checker is one for readers)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(body: list[ast.stmt]) -> Iterator[str]:
        for node in body:
            if isinstance(node, ast.If):
                yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                yield from walk(node.body)
            elif isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    yield full if full in known else base

    return {target for target in walk(ast.parse(path.read_text()).body) if target in known} - {name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    known = set(paths)
    return {name: module_level_imports(path, name, known) for name, path in paths.items()}


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_the_circle_check_sees_a_circle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (package / "b.py").write_text("from pkg.a import A\n")
    (package / "c.py").write_text("def f():\n    from pkg import a\n")  # lazy: no circle

    assert circles(import_graph(package)) == [["pkg.a", "pkg.b"]]


def test_no_module_is_over_700_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }

    assert long == {}


def test_the_source_cites_no_outside_specification() -> None:
    citing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "spec §" in path.read_text() or "quality.md" in path.read_text()
    ]

    assert citing == []
