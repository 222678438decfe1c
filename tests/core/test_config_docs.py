"""docs/configuration.md lists every setting exactly as the config classes define it.

Regenerate the table with ``.venv/bin/python -m tests.core.test_config_docs``.
"""

from __future__ import annotations

from pathlib import Path

from queue_runtime.config import config_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN = "<!-- settings:begin (generated from queue_runtime.config.config_reference) -->"
END = "<!-- settings:end -->"


def render() -> str:
    rows = ["| TOML key | environment variable | type | default |", "|---|---|---|---|"]
    for key, env, kind, default in config_reference():
        kind = kind.replace("|", "\\|")  # a literal pipe would split the cell
        rows.append(f"| `{key}` | `{env}` | {kind} | `{default}` |")
    return "\n".join(rows)


def _table(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_configuration_doc_lists_every_setting() -> None:
    assert _table(DOC.read_text()) == render(), (
        "docs/configuration.md is out of date: run python -m tests.core.test_config_docs"
    )


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{rest.split(END, 1)[1]}")
