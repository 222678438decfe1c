"""The docstring examples of the Azure provider run (the general doctest run skips
provider packages that need optional extras)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "queue_runtime.providers.azure",
    "queue_runtime.providers.azure.connection",
    "queue_runtime.providers.azure.errors",
    "queue_runtime.providers.azure.messages",
    "queue_runtime.providers.azure.provider",
    "queue_runtime.providers.azure.sdk",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
