"""Fixtures of the sqlite provider's own tests: a database path in a fresh directory,
and providers on it that are closed when the test ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.providers.sqlite import SqliteProvider

OpenProvider = Callable[..., SqliteProvider]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queues.db"


@pytest.fixture
async def open_provider(db_path: Path) -> AsyncIterator[OpenProvider]:
    """``open_provider(clock=..., **settings)``: a provider on the test's file.

    Every call is a separate provider with its own connection and thread, as a
    second process would have.
    """
    made: list[SqliteProvider] = []

    def make(
        clock: qr.Clock | None = None, path: Path | None = None, **settings: Any
    ) -> SqliteProvider:
        settings.setdefault("synchronous", "normal")
        config = qr.SqliteConfig(path=str(path or db_path), **settings)
        provider = SqliteProvider(config, clock=clock)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
