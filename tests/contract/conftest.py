"""The contract suite runs once per provider harness.

Each ``harness_*.py`` module beside this file contributes harnesses: it
defines ``HARNESSES``, a mapping of a test id (e.g. ``"memory"``) to a
function returning an async context manager that yields a
:class:`~tests.contract.harness.Harness`. Adding a provider to the suite is
adding such a module.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from .harness import Harness

HarnessFactory = Callable[[], AbstractAsyncContextManager[Harness]]


def _discover() -> dict[str, HarnessFactory]:
    found: dict[str, HarnessFactory] = {}
    for path in sorted(Path(__file__).parent.glob("harness_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        found.update(module.HARNESSES)
    return found


HARNESSES = _discover()


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param]() as chosen:
        yield chosen
