"""What the contract tests need from a provider under test.

Every provider joins the contract suite by giving a harness: a client on a
fresh namespace, a way to make locks expire, and a way to let time pass.
The memory harness moves a ManualClock; cloud harnesses wait for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol, TypeVar

import queue_runtime as qr


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


class HarnessBase:
    """What every harness keeps the same way: its client, the extra clients it made,
    the sessions the helpers left open, and which queues have sessions."""

    def __init__(self, client: qr.QueueClient) -> None:
        self.client = client
        self.session_queues: set[str] = set()
        self.open_sessions: list[qr.SessionClient] = []
        self._clients = [client]

    def keep(self, client: qr.QueueClient) -> qr.QueueClient:
        """Close ``client`` with the harness."""
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        while self.open_sessions:
            await self.open_sessions.pop().close()
        for client in reversed(self._clients):
            await client.aclose()


H = TypeVar("H", bound=HarnessBase)


@asynccontextmanager
async def opened(harness: H) -> AsyncIterator[H]:
    """Yield ``harness``, closing it afterwards."""
    try:
        yield harness
    finally:
        await harness.aclose()
