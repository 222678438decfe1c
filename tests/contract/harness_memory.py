"""The in-memory provider in the contract suite, in both session modes."""

from __future__ import annotations

import itertools
from datetime import datetime

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.providers.memory import InMemoryProvider

from .harness import HarnessBase, opened

_names = itertools.count(1)


class MemoryHarness(HarnessBase):
    lock_duration = 30.0
    max_delivery_count = 5

    def __init__(self, session_mode: str = "emulated") -> None:
        self.clock = qr.ManualClock()
        config = qr.InMemoryConfig(
            session_mode=session_mode,  # type: ignore[arg-type]
            lock_duration=self.lock_duration,
            max_delivery_count=self.max_delivery_count,
        )
        self.provider = InMemoryProvider(config, clock=self.clock)
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
        provider = InMemoryProvider(qr.InMemoryConfig(create_queues=False), clock=self.clock)
        return self.keep(qr.QueueClient(provider, clock=self.clock))


HARNESSES = {
    "memory": lambda: opened(MemoryHarness("emulated")),
    "memory-native": lambda: opened(MemoryHarness("native")),
}
