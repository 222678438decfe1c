"""A locked Service Bus session: :class:`AzureSessionReceiver`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, cast

from queue_runtime.clock import to_datetime
from queue_runtime.errors import SessionNotFoundError, ValidationError
from queue_runtime.messages import QueueName, ReceivedMessage, SessionId

from .errors import SDK_ERRORS
from .receivers import MIN_WAIT, Receiver, acquire
from .sdk import ReceiverSeam

if TYPE_CHECKING:
    from .provider import AzureServiceBusProvider

__all__ = ["AzureSessionReceiver"]


class AzureSessionReceiver:
    """A locked Service Bus session (one session receiver). Close it to release the lock."""

    def __init__(self, provider: AzureServiceBusProvider, queue: QueueName, sdk: ReceiverSeam):
        self._provider = provider
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
    def session_id(self) -> SessionId:
        return self._session_id

    @property
    def locked_until(self) -> datetime:
        until = self._sdk.session.locked_until_utc
        return until if until is not None else to_datetime(self._provider.clock.now())

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        self._check("session_receive")
        provider = self._provider
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
            raise provider._error(exc, "session_receive", self._queue) from exc
        finally:
            self._entry.lock.release()
        now = to_datetime(provider.clock.now())
        return [
            provider._received(sb, self._queue, self._sdk, self, dead_letter=False, now=now)
            for sb in batch
        ]

    async def renew_lock(self) -> datetime:
        self._check("renew_session_lock")
        try:
            return await self._sdk.session.renew_lock()
        except SDK_ERRORS as exc:
            raise self._provider._error(exc, "renew_session_lock", self._queue) from exc

    async def get_state(self) -> bytes | None:
        self._check("get_state")
        try:
            state: bytes | None = await self._sdk.session.get_state()
        except SDK_ERRORS as exc:
            raise self._provider._error(exc, "get_state", self._queue) from exc
        return None if state is None else bytes(state)

    async def set_state(self, state: bytes | None) -> None:
        self._check("set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        try:
            await self._sdk.session.set_state(state)
        except SDK_ERRORS as exc:
            raise self._provider._error(exc, "set_state", self._queue) from exc

    async def close(self) -> None:
        """Release the session; its unsettled messages become available to the next holder."""
        if self.closed:
            return
        self.closed = True
        for task in list(self._held):
            task.cancel()  # closing releases the held message too
        self._provider._sessions.discard(self)
        await self._provider._close_quietly(self._sdk, "session receiver", self._queue)

    def hold(self, task: asyncio.Task[None]) -> None:
        """Hand out no messages until ``task`` (a delayed abandon of this session) is done."""
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    def __repr__(self) -> str:
        return f"AzureSessionReceiver(queue={self._queue!r}, session_id={self._session_id!r})"

    def _check(self, operation: str) -> None:
        self._provider._check_open(operation)
        if self.closed:
            raise SessionNotFoundError(
                f"session {self._session_id!r} was closed", operation=operation, queue=self._queue
            )
