"""A locked Service Bus session: :class:`AzureSessionReceiver`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, cast

from queue_runtime.errors import QueueError, SessionNotFoundError, ValidationError
from queue_runtime.messages import QueueName, ReceivedMessage, SessionId

from .errors import SDK_ERRORS
from .receivers import MIN_WAIT, Receiver, acquire
from .sdk import ReceiverSeam

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusReceivedMessage

__all__ = ["AzureSessionReceiver", "SessionHost"]


class SessionHost(Protocol):
    """What a session receiver needs of its provider (the provider gives it one)."""

    def now(self) -> datetime:
        """The provider's clock, as an aware datetime."""
        ...

    def check_open(self, operation: str) -> None:
        """Raise if the provider was closed."""
        ...

    def error(self, exc: BaseException, operation: str, queue: QueueName) -> QueueError:
        """The runtime's error for an SDK error."""
        ...

    def received(
        self,
        sb: ServiceBusReceivedMessage,
        queue: QueueName,
        sdk: ReceiverSeam,
        session: AzureSessionReceiver,
        now: datetime,
    ) -> ReceivedMessage:
        """A received SDK message as the runtime's message, settled through ``session``."""
        ...

    async def closed(self, session: AzureSessionReceiver, sdk: ReceiverSeam) -> None:
        """Forget ``session`` and close its SDK receiver (quietly)."""
        ...


class AzureSessionReceiver:
    """A locked Service Bus session (one session receiver). Close it to release the lock."""

    def __init__(self, host: SessionHost, queue: QueueName, sdk: ReceiverSeam):
        self._host = host
        self._queue = queue
        self._sdk = sdk
        self._entry = Receiver(sdk, opened=True)
        self._held: set[asyncio.Task[None]] = set()
        self.closed = False
        raw = sdk.session.session_id
        try:
            self._session_id = SessionId(raw)
        except ValidationError:  # sent by another producer; keep it as it is
            self._session_id = cast(SessionId, raw)

    @property
    def queue(self) -> QueueName:
        return self._queue

    @property
    def session_id(self) -> SessionId:
        return self._session_id

    @property
    def locked_until(self) -> datetime:
        until = self._sdk.session.locked_until_utc
        return until if until is not None else self._host.now()

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        self._check("session_receive")
        host = self._host
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if not await acquire(self._entry.lock, timeout):
            return []
        try:
            if self._held:
                # a message abandoned with a delay comes back first: later ones wait for it
                _, pending = await asyncio.wait(
                    self._held, timeout=max(0.0, deadline - loop.time())
                )
                if pending:
                    return []
            batch = await self._sdk.receive_messages(
                max_message_count=max_messages,
                max_wait_time=max(deadline - loop.time(), MIN_WAIT),
            )
        except SDK_ERRORS as exc:
            raise host.error(exc, "session_receive", self._queue) from exc
        finally:
            self._entry.lock.release()
        now = host.now()
        return [host.received(sb, self._queue, self._sdk, self, now) for sb in batch]

    async def renew_lock(self) -> datetime:
        self._check("renew_session_lock")
        try:
            return await self._sdk.session.renew_lock()
        except SDK_ERRORS as exc:
            raise self._host.error(exc, "renew_session_lock", self._queue) from exc

    async def get_state(self) -> bytes | None:
        self._check("get_state")
        try:
            state: bytes | None = await self._sdk.session.get_state()
        except SDK_ERRORS as exc:
            raise self._host.error(exc, "get_state", self._queue) from exc
        return None if state is None else bytes(state)

    async def set_state(self, state: bytes | None) -> None:
        self._check("set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        try:
            await self._sdk.session.set_state(state)
        except SDK_ERRORS as exc:
            raise self._host.error(exc, "set_state", self._queue) from exc

    async def close(self) -> None:
        """Release the session; its unsettled messages become available to the next holder."""
        if self.closed:
            return
        self.closed = True
        for task in list(self._held):
            task.cancel()  # closing releases the held message too
        await self._host.closed(self, self._sdk)

    def hold(self, task: asyncio.Task[None]) -> None:
        """Hand out no messages until ``task`` (a delayed abandon of this session) is done."""
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    def __repr__(self) -> str:
        return f"AzureSessionReceiver(queue={self._queue!r}, session_id={self._session_id!r})"

    def _check(self, operation: str) -> None:
        self._host.check_open(operation)
        if self.closed:
            raise SessionNotFoundError(
                f"session {self._session_id!r} was closed", operation=operation, queue=self._queue
            )
