"""The package's folders are layers: each imports only the layers before it.

The README's layout table lists them in this order. The core (the modules
directly in ``queue_runtime`` and the CORE_PACKAGES folders) imports no layer;
the actor engine knows nothing of queues; providers know nothing of the bot; the
test kit and the command line come last. Imports are read from the source,
module level and inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_source_rules import PACKAGE, module_name

LAYERS = ["core", "actors", "bot", "providers", "github", "testing", "cli"]
CORE_PACKAGES = {"config", "crypto", "telemetry"}
"""Folders that are part of the core (its modules, grouped), not layers of their own."""

# Old homes of moved names forward them, with a DeprecationWarning, for one
# release: the bot's names (queue_runtime.actors.__getattr__) and the GitHub
# event builders, which are test support.
ALLOWED = {
    ("queue_runtime.actors", "queue_runtime.bot"),
    ("queue_runtime.github.events", "queue_runtime.testing.github_events"),
    ("queue_runtime.providers.memory.faults", "queue_runtime.testing.faults"),
}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def edges() -> Iterator[tuple[str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for target in imports(path):
            if target.split(".")[0] == "queue_runtime":
                yield source, target


def test_the_layers_are_the_packages_folders() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}

    assert folders == (set(LAYERS) - {"core"}) | CORE_PACKAGES


@pytest.mark.parametrize("name", LAYERS)
def test_a_layer_imports_only_the_layers_before_it(name: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(name) + 1])
    wrong = sorted(
        f"{source} imports {target}"
        for source, target in edges()
        if layer(source) == name
        and layer(target) not in allowed
        and (source, target) not in ALLOWED
    )

    assert wrong == []


def test_the_layer_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from queue_runtime.bot import Bot\n")

    assert list(imports(module)) == ["queue_runtime.bot"]
    assert layer("queue_runtime.bot.sessions") == "bot"
    assert layer("queue_runtime.client") == "core"
    assert layer("queue_runtime.telemetry.spans") == "core"
    assert layer("queue_runtime.crypto.keys") == "core"
