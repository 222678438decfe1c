"""Every file path the docs cite exists: a moved or deleted module or test shows up
here instead of in a reader's dead end."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(
    r"\b(?:src/queue_runtime|tests|bench|examples|scripts)/[\w/.-]+\.(?:py|toml|md)\b"
)


def cited_paths(text: str) -> set[str]:
    return set(CITED.findall(text))


def test_every_cited_path_exists() -> None:
    missing = sorted(
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in DOCS
        for path in cited_paths(doc.read_text())
        if not (ROOT / path).exists()
    )

    assert missing == []


def test_the_path_pattern_sees_a_cited_path() -> None:
    text = "see `tests/core/test_doc_paths.py` and bench/harness.py, not docs/x"

    assert cited_paths(text) == {"tests/core/test_doc_paths.py", "bench/harness.py"}
