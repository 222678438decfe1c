"""The examples in the SQS adapter's docstrings run (they need aiobotocore, no server)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "queue_runtime.providers.aws",
    "queue_runtime.providers.aws.errors",
    "queue_runtime.providers.aws.inflight",
    "queue_runtime.providers.aws.provider",
    "queue_runtime.providers.aws.sessions",
    "queue_runtime.providers.aws.transport",
    "queue_runtime.providers.aws.wire",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)

    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
