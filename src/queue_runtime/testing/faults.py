"""A provider seen through an unreliable connection, for tests: the
:class:`FaultyProvider` applies a :class:`~queue_runtime.providers.memory.FaultInjector`'s
rules (every kind, delays included) to any provider, and can be cut off for good.

The meaning of each kind of fault is described in
:mod:`queue_runtime.providers.memory.faults`, where the rules live (the in-memory
provider applies them itself, too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.errors import (
    ConnectionFailedError,
    QueueError,
)
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import (
    Capabilities,
    QueueInfo,
    SessionProvider,
    SessionReceiver,
    SessionSupport,
    SupportsQueueInfo,
)
from queue_runtime.providers.memory.faults import FaultInjector, lost_lock_error

__all__ = ["FaultyProvider"]

T = TypeVar("T")


class FaultyProvider:
    """A provider seen through an unreliable connection: every call goes through the
    rules of ``faults`` (all kinds, delays included), and :meth:`disconnect` cuts the
    connection for good.

    Receipts and sessions are the wrapped provider's own, so several
    ``FaultyProvider`` s (several bot processes) can share one provider. Closing
    this closes the connection, not the provider behind it. Give it its own
    injector, not the wrapped provider's (whose rules the provider applies itself).

    Example:
        >>> import asyncio
        >>> import queue_runtime as qr
        >>> from queue_runtime.providers.memory import InMemoryProvider
        >>> from queue_runtime.testing import FaultyProvider
        >>> async def main() -> int:
        ...     shared = InMemoryProvider(clock=qr.ManualClock())  # retry back-off costs no time
        ...     connection = FaultyProvider(shared)
        ...     connection.faults.drop_next("send")
        ...     client = qr.QueueClient(connection)  # retries the lost answer: sent twice
        ...     await client.send_message("jobs", qr.Message(b"hi"))
        ...     return shared.stats("jobs").active
        >>> asyncio.run(main())
        2
    """

    def __init__(
        self,
        provider: SessionProvider,
        faults: FaultInjector | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if faults is not None and faults is getattr(provider, "faults", None):
            raise ValueError(
                "give FaultyProvider its own FaultInjector: the provider already applies "
                "the rules of its own one, so each would fire twice"
            )
        self.inner = provider
        self.faults = faults if faults is not None else FaultInjector()
        self._clock: Clock = clock or getattr(provider, "clock", None) or SystemClock()
        self._connected = True
        self._sessions: dict[object, _FaultySession] = {}
        """Native session locks (``receipt.native``) -> the session that holds them."""

    @property
    def connected(self) -> bool:
        """False once :meth:`disconnect` (or :meth:`aclose`) was called."""
        return self._connected

    def disconnect(self) -> None:
        """Cut the connection for good: every later call fails with a transient
        ``ConnectionFailedError``, and the answers of calls in progress are lost
        (what they received stays locked until the locks expire)."""
        self._connected = False

    # -- the provider interface, through the faults --------------------------------

    @property
    def provider_id(self) -> str:
        return self.inner.provider_id

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def clock(self) -> Clock:
        return self._clock

    def session_support(self, queue: QueueName) -> SessionSupport:
        return self.inner.session_support(queue)

    def check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None:
        check = getattr(self.inner, "check_messages", None)
        if check is not None:
            check(queue, messages)

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        await self._call("send", lambda: self.inner.send(queue, messages))

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        return await self._call("receive", lambda: self.inner.receive(queue, max_messages, timeout))

    async def complete(self, receipt: ReceiptHandle) -> None:
        await self._call("complete", lambda: self.inner.complete(receipt), receipt)

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        await self._call("abandon", lambda: self.inner.abandon(receipt, delay), receipt)

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        await self._call(
            "dead_letter",
            lambda: self.inner.dead_letter(receipt, reason, description, properties),
            receipt,
        )

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        return await self._call("renew_lock", lambda: self.inner.renew_lock(receipt), receipt)

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> SessionReceiver | None:
        receiver = await self._call(
            "accept_session", lambda: self.inner.accept_session(queue, session_id, timeout)
        )
        return None if receiver is None else _FaultySession(self, receiver)

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        return await self._call(
            "receive_dead_letters",
            lambda: self.inner.receive_dead_letters(queue, max_messages, timeout),
        )

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        return await self._call(
            "peek_dead_letters", lambda: self.inner.peek_dead_letters(queue, max_messages)
        )

    async def purge_dead_letters(self, queue: QueueName) -> int:
        return await self._call("purge_dead_letters", lambda: self.inner.purge_dead_letters(queue))

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """The health hook, through the same faults (a probe sees an outage too)."""
        inner = self.inner
        if not isinstance(inner, SupportsQueueInfo):
            raise QueueError("the wrapped provider cannot tell", operation="queue_info")
        return await self._call("queue_info", lambda: inner.queue_info(queue))

    async def aclose(self) -> None:
        """Close the connection (the wrapped provider stays open)."""
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"FaultyProvider({self.inner!r}, {state})"

    # -- internals ---------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        receipt: ReceiptHandle | None = None,
        session: _FaultySession | None = None,
    ) -> T:
        self._check_connected(operation)
        delay = self.faults.delay_for(operation)
        if delay > 0:
            await self._clock.sleep(delay)
            self._check_connected(operation)
        fault = self.faults.fault_for(operation, after=False)
        if fault is not None:
            if fault.kind != "lose_lock":
                raise fault.error
            # the lock really goes, as on expiry; then the call finds it gone
            if session is None and receipt is not None:
                session = self._sessions.get(receipt.native)
            if session is not None:
                await session.release()
                raise lost_lock_error(operation)
            if receipt is not None:
                await self._release(receipt)
        result = await call()
        self._check_connected(operation)  # a disconnect while waiting loses the answer
        fault = self.faults.fault_for(operation, after=True)
        if fault is not None:
            raise fault.error
        return result

    def _check_connected(self, operation: str) -> None:
        if not self._connected:
            raise ConnectionFailedError("disconnected from the provider", operation=operation)

    async def _release(self, receipt: ReceiptHandle) -> None:
        """Give a message lock back to the provider as its expiry would (quietly: if it
        is gone already, the call that follows says so)."""
        with contextlib.suppress(QueueError):
            await self.inner.abandon(receipt)


class _FaultySession:
    """A session receiver through a :class:`FaultyProvider`."""

    def __init__(self, connection: FaultyProvider, receiver: SessionReceiver) -> None:
        self._connection = connection
        self._receiver = receiver
        self._natives: set[object] = set()

    @property
    def session_id(self) -> SessionId:
        return self._receiver.session_id

    @property
    def locked_until(self) -> datetime:
        return self._receiver.locked_until

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        batch = await self._connection._call(
            "session_receive", lambda: self._receiver.receive(max_messages, timeout), session=self
        )
        for message in batch:
            native = message.receipt.native
            if native is not None:
                self._natives.add(native)
                self._connection._sessions[native] = self
        return batch

    async def renew_lock(self) -> datetime:
        return await self._connection._call(
            "renew_session_lock", self._receiver.renew_lock, session=self
        )

    async def get_state(self) -> bytes | None:
        return await self._connection._call("get_state", self._receiver.get_state, session=self)

    async def set_state(self, state: bytes | None) -> None:
        await self._connection._call(
            "set_state", lambda: self._receiver.set_state(state), session=self
        )

    async def close(self) -> None:
        await self._connection._call("close_session", self.release, session=self)

    async def release(self) -> None:
        """Release the session in the provider (its unsettled messages go back)."""
        for native in self._natives:
            self._connection._sessions.pop(native, None)
        self._natives.clear()
        await self._receiver.close()

    def __repr__(self) -> str:
        return f"_FaultySession(session_id={self.session_id!r})"
