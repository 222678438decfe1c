"""Receiving from SQS: held messages first, else a poll, until something can go out.

:class:`Receiving` runs the receive loop of plain receives, session receives
and DLQ receives: it hands out what the :class:`~.inflight.Ledger` holds,
else polls SQS (``ReceiveMessage``) and admits what arrives — dead-lettering
expired and over-delivered messages on the way — and turns held messages into
:class:`~queue_runtime.messages.ReceivedMessage`.

Polling: a long poll lasts as configured (``wait_time``), ending by the
receive's deadline; while the provider holds messages of a FIFO queue, SQS
hands out nothing of their groups, so it polls without waiting and waits for a
local change (a settle frees a group; a release returns messages) instead of
asking again at once.

Example:
    >>> check_count(10)
    >>> check_count(11)
    Traceback (most recent call last):
    queue_runtime.errors.ValidationError: max_messages: must be 1-10, got 11
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any, Final

from queue_runtime.clock import Clock, to_datetime
from queue_runtime.errors import QueueError, ValidationError
from queue_runtime.messages import ReceiptHandle, ReceivedMessage
from queue_runtime.provider import MAX_DELIVERY_REASON, TTL_EXPIRED_REASON
from queue_runtime.telemetry import log_fields

from .inflight import Held, Ledger, QueueState, SessionLock
from .keeper import Keeper
from .queues import SqsQueues
from .sessions import SessionBook
from .settling import Settler
from .transport import MAX_BATCH, SqsTransport
from .wire import Incoming, decode

__all__ = ["BUFFER_LIMIT", "Receiving", "check_count", "wait_change"]

logger = logging.getLogger(__name__)

REDRIVE_DESCRIPTION: Final = "moved by the queue's SQS redrive policy (maxReceiveCount)"
SHORT_POLL_INTERVAL: Final = 0.1
"""With ``wait_time=0``: how often an empty queue is asked again."""
POLL_SLACK: Final = 0.1
"""How far past a receive's deadline a whole-second long poll may end."""
BUFFER_LIMIT: Final = 100
"""Most messages of other groups that session polls keep buffered per queue."""


def check_count(max_messages: int) -> None:
    """SQS hands out 1-10 messages per ``ReceiveMessage``."""
    if not 1 <= max_messages <= MAX_BATCH:
        raise ValidationError(f"must be 1-{MAX_BATCH}, got {max_messages}", field="max_messages")


async def wait_change(state: QueueState, seconds: float) -> None:
    """Wait up to ``seconds`` for a change of the messages held of ``state``."""
    if seconds <= 0:
        return
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await state.changed.wait()


class Receiving:
    """The receive loop over the ledger and SQS, for one provider."""

    def __init__(
        self,
        *,
        provider_id: str,
        queues: SqsQueues,
        transport: SqsTransport,
        ledger: Ledger,
        settler: Settler,
        sessions: SessionBook,
        keeper: Keeper,
        clock: Clock,
        visibility: int,
        wait: int,
        max_delivery_count: int,
    ) -> None:
        self._provider_id = provider_id
        self._queues = queues
        self._transport = transport
        self._ledger = ledger
        self._settler = settler
        self._sessions = sessions
        self._keeper = keeper
        self._clock = clock
        self._visibility = visibility
        self._wait = wait
        self._limit = max_delivery_count

    async def receive(
        self,
        state: QueueState,
        max_messages: int,
        timeout: float,
        operation: str,
        lock: SessionLock | None,
    ) -> list[ReceivedMessage]:
        """Held messages first, else poll SQS, until something can go out or time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        await self._transport.url(state, operation)
        await self._settler.sweep()
        while True:
            if lock is not None:
                await self._sessions.check(lock, operation)
            taken = self._ledger.take(state, max_messages, lock, self._clock.now())
            if taken:
                now = self._clock.now()
                return [self._received(held, now) for held in taken]
            remaining = deadline - loop.time()
            if self._queues.closed or remaining <= 0:
                return []
            pause = self._poll_block(state, lock)
            if pause is None:
                await self.poll(
                    state, max_messages if lock is None else MAX_BATCH, deadline, operation
                )
            else:
                await wait_change(state, min(remaining, pause))

    async def session_receive(
        self, lock: SessionLock, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        """A receive of a locked session (a :data:`.sessions.SessionReceive`)."""
        check_count(max_messages)
        return await self.receive(lock.state, max_messages, timeout, "session_receive", lock)

    def _poll_wait(self, state: QueueState, deadline: float) -> int:
        """Whole seconds to long-poll SQS for.

        As configured (``wait_time``), ending by the deadline: SQS waits in whole
        seconds, so a poll may end up to ``POLL_SLACK`` after it (rule 10 of
        docs/design.md#delivery-contract allows 100 ms). No long poll while this
        provider holds messages of a FIFO queue: SQS hands out nothing of their groups
        until we settle them, and the next poll goes out when we do (see :meth:`poll`).
        """
        if state.grouped and state.groups:
            return 0
        remaining = deadline - asyncio.get_running_loop().time()
        return max(0, min(self._wait, math.floor(remaining + POLL_SLACK)))

    async def poll(self, state: QueueState, count: int, deadline: float, operation: str) -> None:
        """One ``ReceiveMessage`` into the ledger; after a short poll that found nothing,
        wait for a local change (a settle frees a group; a release returns messages)
        or the deadline, rather than ask SQS again at once. Only with ``wait_time=0``
        (short polling by configuration) is SQS asked again every ``SHORT_POLL_INTERVAL``.
        """
        wait = self._poll_wait(state, deadline)
        raw = await self._transport.receive(state, count, wait, self._visibility, operation)
        await self._admit(state, raw, operation)
        if raw or wait > 0:
            return
        remaining = deadline - asyncio.get_running_loop().time()
        pause = SHORT_POLL_INTERVAL if self._wait == 0 else remaining
        await wait_change(state, min(remaining, pause))

    def _poll_block(self, state: QueueState, lock: SessionLock | None) -> float | None:
        """``None`` if polling SQS may help; else how long to wait for a local change."""
        if lock is None:
            return None
        group = state.groups.get(lock.session_id)
        if group is not None and (group.out or group.buffered):
            # SQS returns nothing of a group while we hold some of it in flight
            delayed = [h.not_before for h in group.buffered if h.not_before]
            return max(0.01, min(delayed) - self._clock.now()) if delayed else 1.0
        if state.buffered_count() >= BUFFER_LIMIT:
            return 1.0
        return None

    async def _admit(
        self, state: QueueState, raw: Sequence[dict[str, Any]], operation: str
    ) -> None:
        """Take received messages into the ledger; dead-letter expired and over-delivered ones."""
        if not raw:
            return
        now = self._clock.now()
        limit = self._limit
        for item in raw:
            message = decode(item)
            held = self._ledger.hold(state, message, now, self._visibility)
            reason = description = None
            if state.dead_letter:
                pass
            elif message.receive_count > limit:
                reason = MAX_DELIVERY_REASON
                description = f"received {message.receive_count} times, more than {limit}"
            elif message.expires_at is not None and message.expires_at <= now:
                reason = TTL_EXPIRED_REASON
                description = "time to live passed before delivery"
            if reason is None:
                self._ledger.buffer(held)
                continue
            try:
                await self._settler.move_to_dead_letters(held, reason, description, operation)
            except QueueError as exc:
                logger.warning(
                    "SQS: could not dead-letter message %s (%s): %s; it stays in %s",
                    message.message_id,
                    reason,
                    exc,
                    state.sqs_name,
                    extra=log_fields(operation, state.name),
                )
                self._settler.forget(held)
        if state.grouped:
            self._keeper.ensure()
        state.notify()

    def _received(self, held: Held, now: float) -> ReceivedMessage:
        assert held.token is not None
        receipt = ReceiptHandle(
            provider_id=self._provider_id,
            queue=held.state.name,
            token=held.token,
            locked_until=to_datetime(held.locked_until),
            dead_letter=held.state.dead_letter,
        )
        received = _message(held.state, held.message, receipt, now, held.delivery_count)
        held.received = received
        return received

    def peeked(self, state: QueueState, message: Incoming, now: float) -> ReceivedMessage:
        """A message read without keeping it: its receipt settles nothing."""
        receipt = ReceiptHandle(
            provider_id=self._provider_id,
            queue=state.name,
            token=f"peek-{uuid.uuid4().hex}",
            locked_until=to_datetime(now),
            dead_letter=state.dead_letter,
        )
        return _message(state, message, receipt, now, message.receive_count)


def _message(
    state: QueueState, message: Incoming, receipt: ReceiptHandle, now: float, count: int
) -> ReceivedMessage:
    enqueued = message.sent_at or now
    first = message.first_received_at or now
    reason = description = None
    if state.dead_letter:
        record = message.dead_letter
        if record is not None:
            reason, description = record.reason, record.description
            count = record.delivery_count or count
            enqueued = record.enqueued_ms / 1000 if record.enqueued_ms else enqueued
            first = record.first_delivered_ms / 1000 if record.first_delivered_ms else first
        else:
            # moved by SQS itself: its only reason is maxReceiveCount; our read counted too
            reason, description = MAX_DELIVERY_REASON, REDRIVE_DESCRIPTION
            count = max(1, message.receive_count - 1)
    return ReceivedMessage(
        body=message.body,
        attributes=message.attributes,
        session_id=message.session_id,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        content_type=message.content_type,
        time_to_live=message.time_to_live,
        delivery_count=count,
        enqueued_at=to_datetime(enqueued),
        first_delivered_at=to_datetime(min(first, now)),
        delivered_at=to_datetime(now),
        receipt=receipt,
        sequence_number=message.sequence_number,
        dead_letter_reason=reason,
        dead_letter_description=description,
    )
