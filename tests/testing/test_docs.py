"""docs/testing.md is true: its python blocks, in order, are the tests of this module."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def _source() -> str:
    """The doc's python blocks, each at its own line numbers (tracebacks point into the doc)."""
    text = DOC.read_text()
    lines = ["" for _ in text.splitlines()]
    for block in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        first = text.count("\n", 0, block.start(1))
        for offset, line in enumerate(block.group(1).splitlines()):
            lines[first + offset] = line
    return "\n".join(lines)


exec(compile(_source(), str(DOC), "exec"))


def test_the_doc_defines_tests() -> None:
    tests = [
        name
        for name in globals()
        if name.startswith("test_") and name != "test_the_doc_defines_tests"
    ]
    assert len(tests) >= 10, tests
