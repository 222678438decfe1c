"""The README's layout table names every folder of the package and of tests/, and
every module of the core, the engine and the bot: a moved or new module that the
table does not show fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "queue_runtime"


def layout_rows() -> dict[str, set[str]]:
    """Folder -> the names written in backticks in its "holds" cell."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line.strip())
        if match:
            rows[match[1]] = {name.rstrip("/") for name in re.findall(r"`([^`]+)`", match[2])}
    return rows


def modules(folder: Path) -> set[str]:
    """Public modules and packages directly in ``folder`` (private ones too in actors/)."""
    names = {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    return names


def layers() -> set[str]:
    """The package's folders that have a row of their own (``bot``, ``cli``, ...)."""
    rows = layout_rows()
    names = {name for name in rows if name.startswith("src/queue_runtime/")}
    return {name.removeprefix("src/queue_runtime/").strip("/") for name in names} - {""}


def test_the_core_row_names_every_core_module() -> None:
    core = modules(PACKAGE) - layers()
    grouped = {name for name in core if (PACKAGE / name / "__init__.py").exists()}
    inside = {module for package in grouped for module in modules(PACKAGE / package)}

    assert layout_rows()["src/queue_runtime/"] == core | inside


def test_every_package_folder_outside_the_core_has_a_row() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}

    assert layers() <= folders
    assert folders - layers() <= layout_rows()["src/queue_runtime/"]  # the core's own folders


def test_the_engine_and_bot_rows_name_their_modules() -> None:
    rows = layout_rows()

    assert rows["src/queue_runtime/actors/"] == modules(PACKAGE / "actors")
    assert rows["src/queue_runtime/bot/"] == modules(PACKAGE / "bot")
    assert rows["src/queue_runtime/providers/"] == modules(PACKAGE / "providers")


def test_the_tests_row_names_every_test_folder() -> None:
    listed = {name for name in layout_rows()["tests/"] if "/" not in name or name.endswith("/")}
    folders = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").exists()}

    assert {name.rstrip("/") for name in listed} == folders


def test_the_table_parser_sees_a_missing_module(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    (tmp_path / "_b.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")

    assert modules(tmp_path) == {"a", "_b", "pkg"}
    assert "bot" in layout_rows()["src/queue_runtime/bot/"]
