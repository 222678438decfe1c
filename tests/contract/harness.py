"""What the contract tests need from a provider under test.

Every provider joins the contract suite by giving a harness: a client on a
fresh namespace, a way to make locks expire, and a way to let time pass.
The memory harness moves a ManualClock; cloud harnesses wait for real.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.providers.memory import InMemoryProvider

_names = itertools.count(1)


class Harness(Protocol):
    session_queues: set[str]
    open_sessions: list[qr.SessionClient]
    client: qr.QueueClient
    lock_duration: float
    max_delivery_count: int

    async def queue(self, *, sessions: bool = True) -> str:
        """A new, empty queue (with its DLQ); ``sessions`` asks for session ordering."""
        ...

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` of provider time pass."""
        ...

    def now(self) -> datetime:
        """The provider's current time."""
        ...

    def strict_client(self) -> qr.QueueClient:
        """A client on which queues must exist before use (rule 9)."""
        ...


class MemoryHarness:
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
        self.client = qr.QueueClient(self.provider, clock=self.clock)
        self._strict: list[qr.QueueClient] = []
        self.session_queues: set[str] = set()
        self.open_sessions: list[qr.SessionClient] = []

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
        provider = InMemoryProvider(qr.InMemoryConfig(auto_create_queues=False), clock=self.clock)
        client = qr.QueueClient(provider, clock=self.clock)
        self._strict.append(client)
        return client

    async def aclose(self) -> None:
        await close_sessions(self)
        for client in self._strict:
            await client.aclose()
        await self.client.aclose()


@asynccontextmanager
async def memory_harness(session_mode: str = "emulated") -> AsyncIterator[MemoryHarness]:
    harness = MemoryHarness(session_mode)
    try:
        yield harness
    finally:
        await harness.aclose()


async def receive_one(
    harness: Harness, queue: str, timeout: float = 5.0
) -> qr.ReceivedMessage | None:
    """The queue's next message; through the next session if the queue has native sessions.

    A session opened here stays open (and its lock held) until the harness closes.
    """
    client = harness.client
    native = client.session_support(queue) is qr.SessionSupport.NATIVE
    if native and queue in harness.session_queues:
        session = await client.accept_session(queue, timeout=timeout)
        if session is None:
            return None
        harness.open_sessions.append(session)
        return await session.receive_message(timeout=timeout)
    return await client.receive_message(queue, timeout=timeout)


async def close_sessions(harness: Harness) -> None:
    """Close the sessions :func:`receive_one` and :func:`drain` left open."""
    while harness.open_sessions:
        await harness.open_sessions.pop().close()


async def drain(harness: Harness, queue: str, count: int) -> list[qr.ReceivedMessage]:
    """Receive and complete ``count`` messages in batches, in the order they came."""
    client = harness.client
    received: list[qr.ReceivedMessage] = []
    native = client.session_support(queue) is qr.SessionSupport.NATIVE
    while len(received) < count:
        if native and queue in harness.session_queues:
            session = await client.accept_session(queue, timeout=5.0)
            assert session is not None, f"messages went missing: got {len(received)} of {count}"
            async with session:
                while batch := await session.receive_messages(10, timeout=0.2):
                    for message in batch:
                        await session.complete_message(message.receipt)
                    received.extend(batch)
            continue
        batch = await client.receive_messages(queue, 10, timeout=5.0)
        assert batch, f"messages went missing: got {len(received)} of {count}"
        for message in batch:
            await client.complete_message(message.receipt)
        received.extend(batch)
    return received
