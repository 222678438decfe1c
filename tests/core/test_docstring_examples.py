"""The examples in public docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import queue_runtime

SKIP = {
    "queue_runtime.cli.demo",  # a script, not an API
    "queue_runtime.github.events",  # moved: importing it warns (tests/github/)
}


def _modules() -> list[str]:
    names = ["queue_runtime"]
    for info in pkgutil.walk_packages(queue_runtime.__path__, "queue_runtime."):
        if info.name in SKIP:
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
