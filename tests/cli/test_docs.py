"""docs/operations.md and the README's command-line section agree with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from queue_runtime.cli import ExitCode, build_parser
from queue_runtime.config import config_reference

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
README = (ROOT / "README.md").read_text()
SOURCES = "\n".join(
    path.read_text() for folder in ("src",) for path in (ROOT / folder).rglob("*.py")
)


def test_every_environment_variable_in_the_guide_exists() -> None:
    settings = {env for _, env, _, _ in config_reference()}
    mentioned = set(re.findall(r"\bQUEUE_(?:RUNTIME_)?[A-Z][A-Z_]*[A-Z]\b", OPERATIONS))
    mentioned.discard("QUEUE_RUNTIME_")

    unknown = {name for name in mentioned if name not in settings and f'"{name}"' not in SOURCES}

    assert mentioned, "the guide has an environment variable table"
    assert unknown == set()


def test_the_exit_code_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", OPERATIONS, re.MULTILINE))

    assert sorted(int(code) for code in table) == sorted(int(code) for code in ExitCode)


def test_the_command_table_lists_exactly_the_commands() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    table = OPERATIONS.split("| command | what it does |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)[ `]", table, re.MULTILINE))

    assert documented == set(commands.choices)


def _examples(text: str) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            command = line.split("|")[-1].split("#")[0].strip()
            if command.startswith("queue-runtime "):
                lines.append(command)
    return lines


@pytest.mark.parametrize("example", _examples(README) + _examples(OPERATIONS))
def test_documented_command_lines_parse(example: str) -> None:
    build_parser().parse_args(shlex.split(example)[1:])  # argparse exits on an error


def test_the_guide_links_the_configuration_and_telemetry_references() -> None:
    assert "(configuration.md)" in OPERATIONS
    assert "(telemetry.md)" in OPERATIONS
    assert "(docs/operations.md)" in README
