"""A locked session of a queue: its messages in order, its state, its lock.

:meth:`QueueClient.accept_session <queue_runtime.QueueClient.accept_session>`
returns one; its calls go through the client's retries, circuit breaker and
telemetry.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> bytes | None:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("orders", qr.Message(b"{}", session_id="o/r/pull/1"))
    ...         session = await client.accept_session("orders", timeout=1.0)
    ...         assert session is not None
    ...         async with session:
    ...             await session.set_state(b"seen 1")
    ...             return await session.get_state()
    >>> asyncio.run(main())
    b'seen 1'
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from queue_runtime.lifecycle import Closing
from queue_runtime.messages import QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import SessionReceiver
from queue_runtime.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

__all__ = ["SessionClient"]

NO_RETRY = RetryPolicy.never()
"""For calls that must not be repeated (a session receive: see its docstring)."""

DEFAULT_RECEIVE_BATCH = 10
"""Messages one receive call asks for unless told (as :class:`~queue_runtime.QueueClient`)."""


class ClientCalls(Protocol):
    """What a session uses of its :class:`~queue_runtime.QueueClient`: the settle
    calls, and the client's own path for a call (retries, breaker, telemetry)."""

    async def complete_message(self, receipt: ReceiptHandle) -> None: ...

    async def abandon_message(self, receipt: ReceiptHandle, delay: float | None = None) -> None: ...

    async def dead_letter_message(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None: ...

    async def _call(
        self,
        operation: str,
        queue: str,
        call: Callable[[], Awaitable[T]],
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> T: ...

    async def _receive(
        self,
        operation: str,
        queue: QueueName,
        call: Callable[[], Awaitable[list[ReceivedMessage]]],
        wait: float,
        *,
        session_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[ReceivedMessage]: ...

    def _receive_count(self, max_messages: int) -> int: ...

    def _receive_timeout(self, timeout: float | None) -> float: ...


class SessionClient(Closing):
    """A locked session. Use as an async context manager so the lock is always released.

    Messages received here are settled here (or through the client).
    """

    def __init__(self, client: ClientCalls, queue: QueueName, receiver: SessionReceiver) -> None:
        self._client = client
        self._receiver = receiver
        self.queue = queue

    @property
    def session_id(self) -> SessionId:
        return self._receiver.session_id

    @property
    def locked_until(self) -> datetime:
        """When the session lock expires unless renewed."""
        return self._receiver.locked_until

    async def receive_message(self, timeout: float | None = None) -> ReceivedMessage | None:
        """The session's next message, or ``None`` after ``timeout`` seconds."""
        batch = await self.receive_messages(1, timeout)
        return batch[0] if batch else None

    async def receive_messages(
        self, max_messages: int = DEFAULT_RECEIVE_BATCH, timeout: float | None = None
    ) -> list[ReceivedMessage]:
        """Up to ``max_messages`` of the session's next messages, in order.

        A failed receive is not retried: if only its answer was lost, the
        messages it took stay locked to the session, and a retry would hand out
        the ones after them first. Close the session instead (the bot does), and
        everything comes back in order.
        """
        client = self._client
        count = client._receive_count(max_messages)
        wait = client._receive_timeout(timeout)
        return await client._receive(
            "session_receive",
            self.queue,
            lambda: self._receiver.receive(count, wait),
            wait,
            session_id=self.session_id,
            retry=NO_RETRY,
        )

    async def complete_message(self, receipt: ReceiptHandle) -> None:
        await self._client.complete_message(receipt)

    async def abandon_message(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        await self._client.abandon_message(receipt, delay)

    async def dead_letter_message(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        await self._client.dead_letter_message(receipt, reason, description, properties)

    async def renew_session_lock(self) -> datetime:
        """Extend the session lock; returns the new expiry."""
        return await self._client._call("renew_session_lock", self.queue, self._receiver.renew_lock)

    async def get_state(self) -> bytes | None:
        """The session's state blob (``None`` if never set)."""
        return await self._client._call("get_state", self.queue, self._receiver.get_state)

    async def set_state(self, state: bytes | None) -> None:
        """Replace the session's state blob (``None`` clears it)."""
        await self._client._call("set_state", self.queue, lambda: self._receiver.set_state(state))

    async def close(self) -> None:
        """Release the session; its unsettled messages become available again at once."""
        await self._receiver.close()

    async def aclose(self) -> None:
        """The same as :meth:`close` (what ``async with`` calls)."""
        await self.close()

    def __repr__(self) -> str:
        return f"SessionClient(queue={self.queue!r}, session_id={self.session_id!r})"
