"""The sqlite provider in the contract suite, in both session modes.

Each harness has a file of its own in a fresh temporary directory, and a
ManualClock: lock expiry and scheduled messages are decided by the times
stored in the file compared with the clock, so moving the clock is enough.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.providers.sqlite import SqliteProvider

from .harness import HarnessBase, opened

_names = itertools.count(1)


class SqliteHarness(HarnessBase):
    lock_duration = 30.0
    max_delivery_count = 5

    def __init__(self, directory: Path, session_mode: str) -> None:
        self.clock = qr.ManualClock()
        self.path = directory / "queues.db"
        self.config = qr.SqliteConfig(
            path=str(self.path),
            session_mode=session_mode,  # type: ignore[arg-type]
            lock_duration=self.lock_duration,
            max_delivery_count=self.max_delivery_count,
            synchronous="normal",  # durability is not what this suite tests; fsyncs are slow
        )
        self.provider = SqliteProvider(self.config, clock=self.clock)
        super().__init__(qr.QueueClient(self.provider, clock=self.clock))

    async def queue(self, *, sessions: bool = True) -> str:
        name = f"contract-{next(_names)}"
        if sessions:
            self.session_queues.add(name)
        return name

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def now(self) -> datetime:
        return to_datetime(self.clock.now())

    def strict_client(self) -> qr.QueueClient:
        strict = qr.SqliteConfig(path=str(self.path), create_queues=False, synchronous="normal")
        return self.keep(qr.QueueClient(SqliteProvider(strict, clock=self.clock), clock=self.clock))


@asynccontextmanager
async def sqlite_harness(session_mode: str) -> AsyncIterator[SqliteHarness]:
    with tempfile.TemporaryDirectory(prefix="qr-contract-") as directory:
        async with opened(SqliteHarness(Path(directory), session_mode)) as harness:
            yield harness


HARNESSES = {
    "sqlite": lambda: sqlite_harness("emulated"),
    "sqlite-native": lambda: sqlite_harness("native"),
}
