"""The contract suite runs once per provider harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .harness import Harness, memory_harness

PROVIDERS = ["memory", "memory-native"]


@pytest.fixture(params=PROVIDERS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param in ("memory", "memory-native"):
        mode = "native" if request.param == "memory-native" else "emulated"
        async with memory_harness(mode) as memory:
            yield memory
    else:  # pragma: no cover - each provider issue adds its branch
        raise AssertionError(f"unknown provider {request.param}")
