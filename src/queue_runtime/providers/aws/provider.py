"""The Amazon SQS provider: the provider interface over aiobotocore.

One aiobotocore client per provider, created on first use and reused
(connection pooling), closed by :meth:`SqsProvider.aclose`; SDK retries are off
so the client's retry policy and circuit breaker govern (:mod:`.transport`).

What SQS does not do itself, the provider adds (see the README, "AWS SQS"):

* **Receipts.** SQS accepts old receipt handles and deletes idempotently. The
  provider remembers each delivery it handed out while it is in flight
  (:class:`.inflight.Ledger`) and rejects expired, superseded, foreign and
  already-settled receipts with :class:`~queue_runtime.errors.InvalidReceiptError`
  without calling SQS.
* **Dead-lettering.** Copy to the DLQ (``RedrivePolicy.deadLetterTargetArn``,
  else ``{queue}-dlq`` / ``{base}-dlq.fifo``) with a dead-letter record, *then*
  delete the original. Abandoning a message on its ``max_delivery_count``-th
  delivery, letting that delivery's lock expire, receiving it more often than
  that (no or a larger redrive policy) and receiving it after its time to live
  all dead-letter it with a reason (``MaxDeliveryCountExceeded``, ``TTLExpired``).
* **Sessions on FIFO queues** (``EMULATED``): session id = ``MessageGroupId``
  (see :mod:`.sessions`). ``accept_session`` receives batches and keeps other
  groups' messages buffered — visibility extended by a background task the
  provider owns — for later sessions or plain receives. Closing a session,
  losing its lock or closing the provider releases its messages (visibility 0).

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.aws import SqsProvider
    >>> provider = SqsProvider(qr.AwsSqsConfig(region="eu-west-1"))
    >>> provider.session_support(qr.QueueName("orders.fifo")).value
    'emulated'
    >>> provider.capabilities.max_batch_size, provider.capabilities.max_message_size
    (10, 260096)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from queue_runtime.clock import Clock, SystemClock, to_datetime
from queue_runtime.config import AwsSqsConfig
from queue_runtime.errors import (
    BatchTooLargeError,
    ConfigurationError,
    InvalidReceiptError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
    SessionsNotSupportedError,
    ValidationError,
)
from queue_runtime.health import QueueInfo
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import (
    MAX_DELIVERY_REASON,
    TTL_EXPIRED_REASON,
    Capabilities,
    ProviderBase,
    ProviderType,
    SessionSupport,
)
from queue_runtime.telemetry import log_fields

from .inflight import Group, Held, Ledger, QueueState, SessionLock
from .sessions import SqsSessionReceiver
from .transport import (
    MAX_BATCH,
    SqsTransport,
    check_queue_name,
    dead_letter_queue_name,
)
from .wire import (
    MAX_MESSAGE_SIZE,
    METADATA_RESERVE,
    Incoming,
    Outgoing,
    dead_letter_copy,
    decode,
    encode,
)

__all__ = ["MAX_DELIVERY_REASON", "TTL_EXPIRED_REASON", "SqsProvider", "create_provider"]

logger = logging.getLogger(__name__)

REDRIVE_DESCRIPTION: Final = "moved by the queue's SQS redrive policy (maxReceiveCount)"
MAX_VISIBILITY: Final = 43_200
SHORT_POLL_INTERVAL: Final = 0.1
"""With ``wait_time=0``: how often an empty queue is asked again."""
POLL_SLACK: Final = 0.1
"""How far past a receive's deadline a whole-second long poll may end."""
PEEK_VISIBILITY: Final = 30
BUFFER_LIMIT: Final = 100
"""Most messages of other groups that session polls keep buffered per queue."""
BUFFER_HOLD: Final = 60.0
"""Seconds an unclaimed buffered message is kept before it is released to SQS."""


class SqsProvider(ProviderBase):
    """Amazon SQS queues, standard and FIFO. Built by :func:`queue_runtime.create_client`
    from an :class:`~queue_runtime.config.AwsSqsConfig`, or directly.

    The clock must tell wall-clock time: SQS times visibility for real.
    """

    def __init__(self, config: AwsSqsConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or AwsSqsConfig()
        if self.config.visibility_timeout < 1:
            raise ConfigurationError(
                "must be at least 1 second for SQS: the peek-lock needs a visibility timeout",
                field="aws.visibility_timeout",
            )
        self.clock: Clock = clock or SystemClock()
        self._visibility = math.ceil(self.config.visibility_timeout)
        self._wait = int(self.config.wait_time)
        # 10 per batch; 256 KiB minus a 2 KiB reserve for the runtime's metadata
        super().__init__(
            "sqs",
            Capabilities(
                ProviderType.AWS_SQS,
                MAX_BATCH,
                MAX_MESSAGE_SIZE - METADATA_RESERVE,
                self.config.max_delivery_count,
            ),
        )
        self._transport = SqsTransport(self.config)
        self._ledger = Ledger(self._id)
        self._queues: dict[str, QueueState] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- the provider interface -------------------------------------------------

    def session_support(self, queue: QueueName) -> SessionSupport:
        """``EMULATED`` for FIFO queues (``.fifo``), ``NONE`` for standard queues."""
        return SessionSupport.EMULATED if QueueName(queue).is_fifo else SessionSupport.NONE

    def check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None:
        """Validate every message the way SQS will count and accept it, before the
        client sends the first batch (so a bad 25th message means nothing is sent)."""
        now = self.clock.now()
        for message in messages:
            try:
                encode(message, fifo=queue.is_fifo, now=now)
            except QueueError as exc:
                raise exc.with_context(operation="send", queue=queue) from None

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        """Send up to 10 messages with one ``SendMessageBatch``.

        If SQS rejects some entries the call raises, naming the failed message
        ids; the others were sent (a retry sends them again: FIFO queues drop
        the duplicates, standard queues deliver them twice).
        """
        self._before("send")
        state = self._state(queue, "send")
        if len(messages) > MAX_BATCH:
            raise BatchTooLargeError(
                f"{len(messages)} messages in one call, SQS takes at most {MAX_BATCH}",
                operation="send",
                queue=queue,
            )
        now = self.clock.now()
        outgoing: list[Outgoing] = []
        for message in messages:
            try:
                outgoing.append(encode(message, fifo=state.fifo, now=now))
            except QueueError as exc:
                raise exc.with_context(operation="send", queue=queue) from None
        total = sum(item.size for item in outgoing)
        if total > MAX_MESSAGE_SIZE:
            raise BatchTooLargeError(
                f"the batch is {total} bytes as SQS counts them, the limit is {MAX_MESSAGE_SIZE}",
                operation="send",
                queue=queue,
            )
        if outgoing:
            await self._transport.send(state, outgoing, "send")

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._before("receive")
        self._check_count(max_messages)
        state = self._state(queue, "receive")
        return await self._receive(state, max_messages, timeout, "receive", None)

    async def complete(self, receipt: ReceiptHandle) -> None:
        self._before("complete")
        held = self._lookup(receipt, "complete")
        await self._settle_call(held, "delete_message", "complete", ReceiptHandle=held.handle)
        self._forget(held, "complete")

    async def complete_many(self, receipts: Sequence[ReceiptHandle]) -> list[QueueError | None]:
        """Complete several messages with ``DeleteMessageBatch`` (10 per request).

        Every receipt is tried; the result has one entry per receipt: ``None``
        if it was completed, else the error that kept it (``InvalidReceiptError``
        for a lost or unknown receipt, a transient error worth retrying alone).

        Example:
            >>> # batch = await provider.receive(queue, 10, timeout=5.0)
            >>> # results = await provider.complete_many([m.receipt for m in batch])
        """
        self._before("complete")
        results: list[QueueError | None] = [None] * len(receipts)
        by_state: dict[int, tuple[QueueState, list[tuple[int, Held]]]] = {}
        for position, receipt in enumerate(receipts):
            try:
                held = self._lookup(receipt, "complete")
            except QueueError as exc:
                results[position] = exc
                continue
            held.settling = True
            by_state.setdefault(id(held.state), (held.state, []))[1].append((position, held))
        for state, helds in by_state.values():
            for start in range(0, len(helds), MAX_BATCH):
                chunk = helds[start : start + MAX_BATCH]
                pairs = [(h.handle, h.message.message_id) for _, h in chunk]
                try:
                    errors = await self._transport.delete_batch(state, pairs, "complete")
                except QueueError as exc:
                    errors = dict.fromkeys(range(len(chunk)), exc)
                finally:
                    for _, held in chunk:
                        held.settling = False
                for index, (position, held) in enumerate(chunk):
                    error = errors.get(index)
                    if error is None or isinstance(error, InvalidReceiptError):
                        self._forget(held, "complete" if error is None else None)
                    results[position] = error
        return results

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        """Visible again at once or after ``delay`` s; at the delivery limit, dead-lettered."""
        self._before("abandon")
        if delay is not None and not 0 <= delay <= MAX_VISIBILITY:
            raise ValidationError(
                f"must be between 0 and {MAX_VISIBILITY} seconds for SQS", field="delay"
            )
        held = self._lookup(receipt, "abandon")
        limit = self.config.max_delivery_count
        if not held.state.dead_letter and held.delivery_count >= limit:
            description = f"abandoned on delivery {held.delivery_count} of {limit}"
            await self._dead_letter_settle(held, MAX_DELIVERY_REASON, description, "abandon")
            return
        group = held.group
        if group is not None and (held.holder is not None or group.buffered or len(group.out) > 1):
            # Keep the group here: releasing one message while we hold others of its
            # group would block the group in SQS, or reorder it.
            self._ledger.requeue(held, delay or 0.0, self.clock.now())
            self._ensure_keeper()
            held.state.notify()
            return
        await self._settle_call(
            held,
            "change_message_visibility",
            "abandon",
            ReceiptHandle=held.handle,
            VisibilityTimeout=math.ceil(delay or 0),
        )
        self._forget(held, "abandon")

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Copy the message to the DLQ with ``reason``/``description``, then delete it.

        ``properties`` travel in the copy's ``qr.meta`` (as overflow attributes),
        so they are read back as attributes of the dead letter.
        """
        self._before("dead_letter")
        held = self._lookup(receipt, "dead_letter")
        if held.state.dead_letter:
            raise InvalidReceiptError(
                "the message is already in the dead-letter queue",
                operation="dead_letter",
                queue=receipt.queue,
            )
        await self._dead_letter_settle(held, reason, description, "dead_letter", properties)

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the visibility by ``visibility_timeout`` from now (in a session: the session)."""
        self._before("renew_lock")
        held = self._lookup(receipt, "renew_lock")
        if held.holder is not None:
            await self._renew_session(held.holder, "renew_lock")
            return receipt.locked_until
        before = self.clock.now()
        await self._settle_call(
            held,
            "change_message_visibility",
            "renew_lock",
            ReceiptHandle=held.handle,
            VisibilityTimeout=self._visibility,
        )
        held.visible_at = before + self._visibility
        self._ledger.watch(held)
        receipt.extend(to_datetime(held.visible_at))
        return receipt.locked_until

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> SqsSessionReceiver | None:
        """Lock a session (message group) of a FIFO queue, exclusive within this provider."""
        self._before("accept_session")
        state = self._state(queue, "accept_session")
        if not state.fifo:
            raise SessionsNotSupportedError(
                "standard SQS queues have no sessions; use a .fifo queue",
                operation="accept_session",
                queue=queue,
            )
        await self._transport.url(state, "accept_session")
        await self._sweep()
        self._ensure_keeper()
        if session_id is not None:
            sid = SessionId(session_id)
            group = state.groups.get(sid)
            if group is not None and group.lock is not None:
                await self._check_lock_expiry(group.lock)
            if group is not None and (group.lock is not None or group.out):
                raise SessionLockedError(
                    f"session {sid!r} is locked by another consumer",
                    operation="accept_session",
                    queue=queue,
                )
            return await self._lock(state, state.group(sid, sid))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            for group in list(state.groups.values()):
                if group.lock is not None:
                    await self._check_lock_expiry(group.lock)
            free = self._free_session_group(state)
            if free is not None:
                return await self._lock(state, free)
            remaining = deadline - loop.time()
            if self._closed or remaining <= 0:
                return None
            if state.buffered_count() >= BUFFER_LIMIT:
                await self._wait_change(state, remaining)
                continue
            await self._poll(state, MAX_BATCH, deadline, "accept_session")

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._before("receive_dead_letters")
        self._check_count(max_messages)
        state = await self._dead_letter_state(queue, "receive_dead_letters")
        return await self._receive(state, max_messages, timeout, "receive_dead_letters", None)

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        """Read DLQ messages without keeping them (SQS has no peek).

        Receives them with a short visibility and releases them at once: other
        readers may miss them for that moment, and each read counts as a
        receive in SQS. Waits up to one second for an empty DLQ.
        """
        self._before("peek_dead_letters")
        state = await self._dead_letter_state(queue, "peek_dead_letters")
        await self._sweep()
        seen: dict[str, Incoming] = {}
        handles: list[str] = []
        wait = min(1, self._wait)
        try:
            while len(seen) < max_messages:
                count = min(MAX_BATCH, max_messages - len(seen))
                raw = await self._transport.receive(
                    state, count, wait, PEEK_VISIBILITY, "peek_dead_letters"
                )
                wait = 0
                if not raw:
                    break
                for item in raw:
                    message = decode(item)
                    handles.append(message.handle)
                    seen.setdefault(message.sqs_id, message)
        finally:
            if handles:
                changes = [(handle, 0) for handle in handles]
                await self._transport.set_visibility(state, changes, "peek_dead_letters")
        now = self.clock.now()
        return [self._peeked(state, message, now) for message in seen.values()]

    async def purge_dead_letters(self, queue: QueueName) -> int:
        """Purge the DLQ (``PurgeQueue``); returns SQS's approximate message count before it.

        SQS allows one purge per queue every 60 seconds (else ``ThrottledError``).
        """
        self._before("purge_dead_letters")
        state = await self._dead_letter_state(queue, "purge_dead_letters")
        response = await self._transport.call(
            state,
            "get_queue_attributes",
            "purge_dead_letters",
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes") or {}
        count = sum(int(value) for value in attributes.values() if str(value).isdigit())
        await self._transport.call(state, "purge_queue", "purge_dead_letters")
        for held in [*state.ready, *self._ledger.deliveries.values()]:
            if held.state is state:
                self._forget(held)
        return count

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """SQS's approximate counts of ``queue`` and its DLQ (``GetQueueAttributes``).

        Receives nothing. ``depth`` is ``ApproximateNumberOfMessages`` (visible),
        ``in_flight`` ``ApproximateNumberOfMessagesNotVisible`` (which includes
        messages this provider keeps buffered for sessions). A queue without a
        DLQ (no RedrivePolicy and no ``{queue}-dlq``) reports
        ``dead_letter_depth=None``.
        """
        self._before("queue_info")
        state = self._state(queue, "queue_info")
        attributes = await self._counts(state)
        try:
            dlq = await self._transport.dead_letter_state(state)
        except (QueueNotFoundError, ConfigurationError):
            dead_letters = None
        else:
            dead_letters = (await self._counts(dlq)).get("ApproximateNumberOfMessages")
        return QueueInfo(
            depth=attributes.get("ApproximateNumberOfMessages"),
            in_flight=attributes.get("ApproximateNumberOfMessagesNotVisible"),
            dead_letter_depth=dead_letters,
        )

    async def _counts(self, state: QueueState) -> dict[str, int]:
        response = await self._transport.call(
            state,
            "get_queue_attributes",
            "queue_info",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response.get("Attributes") or {}
        return {key: int(value) for key, value in attributes.items() if str(value).isdigit()}

    async def aclose(self) -> None:
        """Stop the keeper, release every message still held (visibility 0), close the client."""
        if self._closed:
            return
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        held: dict[int, Held] = {id(h): h for h in self._ledger.deliveries.values()}
        for state in self._queues.values():
            for group in state.groups.values():
                if group.lock is not None:
                    group.lock.closed = True
            for source in (state, state.dead_letter_state):
                if source is not None:
                    held.update((id(h), h) for h in source.all_held())
        if held and self._transport.connected:
            try:
                async with asyncio.timeout(10):
                    await self._release(list(held.values()), "aclose")
            except TimeoutError:
                logger.warning(
                    "SQS: releasing held messages on close timed out", extra=log_fields("aclose")
                )
        for state in self._queues.values():
            state.notify()
        await self._transport.aclose()

    # -- extras: the SDK client, queues for tests and demos -------------------------

    async def client(self) -> Any:
        """The aiobotocore SQS client (created on first use), e.g. to register event hooks."""
        self._before("client")
        return await self._transport.client()

    async def create_queue(
        self,
        queue: str,
        *,
        dead_letter_queue: bool = True,
        max_receive_count: int | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Create ``queue`` (FIFO if it ends in ``.fifo``) for tests and demos; returns its URL.

        With ``dead_letter_queue`` (the default) it also creates ``{queue}-dlq``
        (``{base}-dlq.fifo``) and sets the queue's ``RedrivePolicy`` with
        ``maxReceiveCount`` = ``max_receive_count`` (default ``max_delivery_count``).
        Production queues are provisioned outside the runtime; the provider
        never creates a queue implicitly.

        Example:
            >>> # await provider.create_queue("orders.fifo")  # + orders-dlq.fifo
        """
        self._before("create_queue")
        name = QueueName(queue)
        check_queue_name(name, "create_queue")
        receive_count = max_receive_count or self.config.max_delivery_count
        url = await self._transport.create_queue(
            name,
            max_receive_count=receive_count if dead_letter_queue else None,
            attributes=attributes or {},
        )
        if self.config.cache_queue_urls:
            self._state(name, "create_queue").url = url
        return url

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and its conventional DLQ, if they exist (tests and demos)."""
        self._before("delete_queue")
        name = QueueName(queue)
        for sqs_name in (name, dead_letter_queue_name(name)):
            await self._transport.delete_queue(sqs_name)
        self._queues.pop(name, None)

    def __repr__(self) -> str:
        endpoint = "custom" if self.config.endpoint_url else "aws"
        return f"SqsProvider(id={self._id!r}, region={self.config.region!r}, endpoint={endpoint})"

    # -- queues ---------------------------------------------------------------------

    def _before(self, operation: str) -> None:
        if self._closed:
            raise QueueError("the SQS provider is closed", operation=operation)

    @staticmethod
    def _check_count(max_messages: int) -> None:
        if not 1 <= max_messages <= MAX_BATCH:
            raise ValidationError(
                f"must be 1-{MAX_BATCH}, got {max_messages}", field="max_messages"
            )

    def _state(self, queue: str, operation: str) -> QueueState:
        name = QueueName(queue)
        state = self._queues.get(name)
        if state is None:
            check_queue_name(name, operation)
            state = self._queues[name] = QueueState(name, name, dead_letter=False)
        return state

    async def _dead_letter_state(self, queue: str, operation: str) -> QueueState:
        return await self._transport.dead_letter_state(self._state(queue, operation))

    # -- receiving --------------------------------------------------------------------

    def _poll_wait(self, state: QueueState, deadline: float) -> int:
        """Whole seconds to long-poll SQS for.

        As configured (``wait_time``), ending by the deadline: SQS waits in whole
        seconds, so a poll may end up to ``POLL_SLACK`` after it (rule 10 of
        docs/design.md#delivery-contract allows 100 ms). No long poll while this
        provider holds messages of a FIFO queue: SQS hands out nothing of their groups
        until we settle them, and the next poll goes out when we do (see :meth:`_poll`).
        """
        if state.grouped and state.groups:
            return 0
        remaining = deadline - asyncio.get_running_loop().time()
        return max(0, min(self._wait, math.floor(remaining + POLL_SLACK)))

    async def _poll(self, state: QueueState, count: int, deadline: float, operation: str) -> None:
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
        await self._wait_change(state, min(remaining, pause))

    async def _receive(
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
        await self._sweep()
        while True:
            if lock is not None:
                await self._check_session(lock, operation)
            taken = self._ledger.take(state, max_messages, lock, self.clock.now())
            if taken:
                now = self.clock.now()
                return [self._received(held, now) for held in taken]
            remaining = deadline - loop.time()
            if self._closed or remaining <= 0:
                return []
            pause = self._poll_block(state, lock)
            if pause is None:
                await self._poll(
                    state, max_messages if lock is None else MAX_BATCH, deadline, operation
                )
            else:
                await self._wait_change(state, min(remaining, pause))

    def _poll_block(self, state: QueueState, lock: SessionLock | None) -> float | None:
        """``None`` if polling SQS may help; else how long to wait for a local change."""
        if lock is None:
            return None
        group = state.groups.get(lock.session_id)
        if group is not None and (group.out or group.buffered):
            # SQS returns nothing of a group while we hold some of it in flight
            delayed = [h.not_before for h in group.buffered if h.not_before]
            return max(0.01, min(delayed) - self.clock.now()) if delayed else 1.0
        if state.buffered_count() >= BUFFER_LIMIT:
            return 1.0
        return None

    async def _admit(
        self, state: QueueState, raw: Sequence[dict[str, Any]], operation: str
    ) -> None:
        """Take received messages into the ledger; dead-letter expired and over-delivered ones."""
        if not raw:
            return
        now = self.clock.now()
        limit = self.config.max_delivery_count
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
                await self._dead_letter_held(held, reason, description, operation)
            except QueueError as exc:
                logger.warning(
                    "SQS: could not dead-letter message %s (%s): %s; it stays in %s",
                    message.message_id,
                    reason,
                    exc,
                    state.sqs_name,
                    extra=log_fields(operation, state.name),
                )
                self._forget(held)
        if state.grouped:
            self._ensure_keeper()
        state.notify()

    def _received(self, held: Held, now: float) -> ReceivedMessage:
        assert held.token is not None
        receipt = ReceiptHandle(
            provider_id=self._id,
            queue=held.state.name,
            token=held.token,
            locked_until=to_datetime(held.locked_until),
            dead_letter=held.state.dead_letter,
        )
        received = self._message(held.state, held.message, receipt, now, held.delivery_count)
        held.received = received
        return received

    def _peeked(self, state: QueueState, message: Incoming, now: float) -> ReceivedMessage:
        receipt = ReceiptHandle(
            provider_id=self._id,
            queue=state.name,
            token=f"peek-{uuid.uuid4().hex}",
            locked_until=to_datetime(now),
            dead_letter=state.dead_letter,
        )
        return self._message(state, message, receipt, now, message.receive_count)

    @staticmethod
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

    @staticmethod
    async def _wait_change(state: QueueState, seconds: float) -> None:
        if seconds <= 0:
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await state.changed.wait()

    # -- settling -------------------------------------------------------------------

    def _lookup(self, receipt: ReceiptHandle, operation: str) -> Held:
        return self._ledger.lookup(receipt, operation, self.clock.now())

    def _forget(self, held: Held, settled: str | None = None) -> None:
        self._ledger.forget(held, settled)
        held.state.notify()

    async def _settle_call(self, held: Held, method: str, operation: str, **params: Any) -> None:
        """One receipt request for ``held``; a receipt SQS refuses is forgotten."""
        held.settling = True
        try:
            await self._transport.call(
                held.state,
                method,
                operation,
                receipt=True,
                message_id=held.message.message_id,
                **params,
            )
        except InvalidReceiptError:
            self._forget(held)
            raise
        finally:
            held.settling = False

    async def _dead_letter_settle(
        self,
        held: Held,
        reason: str,
        description: str | None,
        operation: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        held.settling = True
        try:
            await self._dead_letter_held(held, reason, description, operation, properties)
        finally:
            held.settling = False

    async def _dead_letter_held(
        self,
        held: Held,
        reason: str,
        description: str | None,
        operation: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Copy to the DLQ, then delete the original — never the other way round."""
        state = held.state
        dlq = await self._transport.dead_letter_state(state)
        copy = dead_letter_copy(
            held.message,
            reason=reason,
            description=description,
            delivery_count=held.delivery_count,
            source=state.sqs_name,
            fifo=dlq.fifo,
            properties=properties,
        )
        await self._transport.send(dlq, [copy], operation)
        await self._settle_call(held, "delete_message", operation, ReceiptHandle=held.handle)
        self._forget(held, operation)

    # -- letting go -------------------------------------------------------------------

    async def _release(self, helds: Sequence[Held], operation: str) -> None:
        """Let SQS deliver these again (keeping an abandon delay); best effort, never raises."""
        now = self.clock.now()
        by_state: dict[int, tuple[QueueState, list[tuple[str, int]]]] = {}
        for held in helds:
            self._forget(held)
            seconds = math.ceil(max(0.0, held.not_before - now))
            by_state.setdefault(id(held.state), (held.state, []))[1].append((held.handle, seconds))
        for state, changes in by_state.values():
            try:
                await self._transport.set_visibility(state, changes, operation)
            except QueueError as exc:
                logger.warning(
                    "SQS: could not release %d messages of %s: %s (they reappear when their "
                    "visibility timeout ends)",
                    len(changes),
                    state.sqs_name,
                    exc,
                    extra=log_fields(operation, state.name),
                )

    async def _give_up(self, helds: Sequence[Held], operation: str, what: str) -> None:
        """Release failed deliveries; dead-letter those at the delivery limit."""
        limit = self.config.max_delivery_count
        release: list[Held] = []
        for held in helds:
            if not held.state.dead_letter and held.token and held.delivery_count >= limit:
                try:
                    description = f"{what} on delivery {held.delivery_count} of {limit}"
                    await self._dead_letter_held(held, MAX_DELIVERY_REASON, description, operation)
                    continue
                except QueueError as exc:
                    logger.warning(
                        "SQS: could not dead-letter message %s: %s",
                        held.message.message_id,
                        exc,
                        extra=log_fields(operation, held.state.name),
                    )
            release.append(held)
        await self._release(release, operation)

    async def _sweep(self) -> None:
        """Plain deliveries whose lock ran out: forget them, dead-letter those at the limit."""
        for held in self._ledger.expired(self.clock.now()):
            if held.gone:
                continue
            group = held.group
            limit = self.config.max_delivery_count
            if (
                not held.state.dead_letter
                and held.delivery_count >= limit
                and await self._hide_again(held)
            ):
                description = f"lock expired on delivery {held.delivery_count} of {limit}"
                try:
                    await self._dead_letter_held(
                        held, MAX_DELIVERY_REASON, description, "lock_expiry"
                    )
                    continue
                except QueueError as exc:
                    logger.warning(
                        "SQS: could not dead-letter message %s after its last delivery: %s",
                        held.message.message_id,
                        exc,
                        extra=log_fields("lock_expiry", held.state.name),
                    )
            self._forget(held)
            if group is not None and group.buffered and group.lock is None:
                # it is visible in SQS again: let SQS have the rest of its group too
                await self._release(list(group.buffered), "lock_expiry")

    async def _hide_again(self, held: Held) -> bool:
        """Make a message whose lock ran out invisible again before dead-lettering it.

        By now SQS may hand it out again — or its redrive policy may move it to the
        DLQ on the next receive, anyone's. Copying it to the DLQ ourselves would
        then leave it there twice. So first take it back: if that fails (SQS says
        it is no longer in flight, or it is gone), someone else has it, and the
        redrive policy or the next receive's over-delivery check dead-letters it,
        once.
        """
        try:
            await self._transport.call(
                held.state,
                "change_message_visibility",
                "lock_expiry",
                receipt=True,
                message_id=held.message.message_id,
                ReceiptHandle=held.handle,
                VisibilityTimeout=math.ceil(max(self._visibility, 30.0)),
            )
        except QueueError:
            return False
        return True

    # -- sessions (see .sessions for the semantics) -------------------------------------

    def _free_session_group(self, state: QueueState) -> Group | None:
        now = self.clock.now()
        free = [g for g in state.groups.values() if g.session_id is not None and g.available(now)]
        return min(free, key=lambda g: g.buffered[0].seq) if free else None

    async def _lock(self, state: QueueState, group: Group) -> SqsSessionReceiver:
        assert group.session_id is not None
        before = self.clock.now()
        lock = SessionLock(state, group.session_id, before + self._visibility)
        group.lock = lock
        if group.buffered:  # align their visibility with the new session lock
            await self._extend(state, list(group.buffered), before, "accept_session")
        return SqsSessionReceiver(self, state, lock)

    async def _extend(
        self, state: QueueState, helds: Sequence[Held], before: float, operation: str
    ) -> list[Held]:
        """Extend visibility by ``visibility_timeout``; forget (and return) those SQS refused."""
        changes = [(held.handle, self._visibility) for held in helds]
        failed = await self._transport.set_visibility(state, changes, operation)
        lost: list[Held] = []
        for index, held in enumerate(helds):
            if index in failed:
                self._forget(held)
                lost.append(held)
            else:
                held.visible_at = before + self._visibility
        return lost

    async def _check_lock_expiry(self, lock: SessionLock) -> None:
        if not lock.ended and lock.locked_until <= self.clock.now():
            await self._end_session(lock, lost=True)

    async def _check_session(self, lock: SessionLock, operation: str) -> None:
        self._before(operation)
        await self._check_lock_expiry(lock)
        if lock.lost:
            raise SessionLockLostError(
                f"the lock on session {lock.session_id!r} was lost",
                operation=operation,
                queue=lock.state.name,
            )
        if lock.closed:
            raise SessionNotFoundError(
                f"session {lock.session_id!r} was closed",
                operation=operation,
                queue=lock.state.name,
            )

    async def _session_receive(
        self, lock: SessionLock, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._check_count(max_messages)
        return await self._receive(lock.state, max_messages, timeout, "session_receive", lock)

    async def _renew_session(self, lock: SessionLock, operation: str) -> datetime:
        await self._check_session(lock, operation)
        group = lock.state.groups.get(lock.session_id)
        before = self.clock.now()
        if group is not None and (group.out or group.buffered):
            await self._extend(lock.state, [*group.out, *group.buffered], before, operation)
        lock.locked_until = before + self._visibility
        until = to_datetime(lock.locked_until)
        if group is not None:
            for held in group.out:
                if held.received is not None:
                    held.received.receipt.extend(until)
        return until

    async def _end_session(self, lock: SessionLock, *, lost: bool) -> None:
        """Close or lose a session: its messages go back to SQS (visibility 0) at once."""
        if lock.ended:
            lock.closed = lock.closed or not lost
            return
        if lost:
            lock.lost = True
        else:
            lock.closed = True
        state = lock.state
        group = state.groups.get(lock.session_id)
        if group is None or group.lock is not lock:
            state.notify()
            return
        group.lock = None
        delivered, waiting = list(group.out), list(group.buffered)
        if group.empty:
            del state.groups[group.key]
        what = "session lock lost" if lost else "session closed"
        await self._give_up(delivered, "close_session", what)
        await self._release(waiting, "close_session")
        state.notify()

    @staticmethod
    def _session_state(lock: SessionLock) -> bytes | None:
        return lock.state.session_states.get(lock.session_id)

    @staticmethod
    def _set_session_state(lock: SessionLock, value: bytes | None) -> None:
        if value is None:
            lock.state.session_states.pop(lock.session_id, None)
        else:
            lock.state.session_states[lock.session_id] = value

    # -- the keeper: buffered messages stay invisible while they wait -----------------

    def _ensure_keeper(self) -> None:
        if self._closed or (self._keeper is not None and not self._keeper.done()):
            return
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name=f"queue-runtime:{self._id}:keeper"
        )

    async def _keep(self) -> None:
        """Owned by the provider; cancelled and awaited by :meth:`aclose`."""
        interval = min(10.0, max(0.2, self._visibility / 3))
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                await self._keep_once()
            except QueueError as exc:
                logger.warning("SQS keeper: %s", exc, extra=log_fields("keep"))
            except Exception:  # the keeper must outlive surprises; they are logged
                logger.exception("SQS keeper failed; it keeps going", extra=log_fields("keep"))

    async def _keep_once(self) -> None:
        """Extend buffered messages, release long-unclaimed ones, end lapsed sessions."""
        await self._sweep()
        now = self.clock.now()
        for state in list(self._queues.values()):
            extend: list[Held] = []
            release: list[Held] = []
            for group in list(state.groups.values()):
                if group.lock is not None:
                    await self._check_lock_expiry(group.lock)
                    continue
                if not group.buffered:
                    continue
                oldest = min(held.buffered_at for held in group.buffered)
                if not group.out and now - oldest > BUFFER_HOLD:
                    release.extend(group.buffered)
                else:
                    due = now + self._visibility / 2
                    extend.extend(held for held in group.buffered if held.visible_at < due)
            if release:
                await self._release(release, "keep_buffered")
            if extend:
                lost = await self._extend(state, extend, now, "keep_buffered")
                for group in {id(h.group): h.group for h in lost if h.group}.values():
                    if group.buffered and group.lock is None:
                        await self._release(list(group.buffered), "keep_buffered")


def create_provider(config: Any, clock: Clock) -> SqsProvider:
    """Registry entry point: build the provider for an :class:`AwsSqsConfig`."""
    if not isinstance(config, AwsSqsConfig):
        raise ConfigurationError("expected AwsSqsConfig", field="provider")
    return SqsProvider(config, clock=clock)
