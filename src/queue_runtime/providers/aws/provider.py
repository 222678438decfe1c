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
* **Dead-lettering** (:mod:`.settling`). Copy to the DLQ
  (``RedrivePolicy.deadLetterTargetArn``, else ``{queue}-dlq`` /
  ``{base}-dlq.fifo``) with a dead-letter record, *then* delete the original.
  Abandoning a message on its ``max_delivery_count``-th delivery, letting that
  delivery's lock expire, receiving it more often than that (no or a larger
  redrive policy) and receiving it after its time to live all dead-letter it
  with a reason (``MaxDeliveryCountExceeded``, ``TTLExpired``).
* **Sessions on FIFO queues** (``EMULATED``): session id = ``MessageGroupId``
  (see :mod:`.sessions`). ``accept_session`` receives batches and keeps other
  groups' messages buffered — visibility extended by a background task the
  provider owns (:mod:`.keeper`) — for later sessions or plain receives.
  Closing a session, losing its lock or closing the provider releases its
  messages (visibility 0).

The provider composes the parts: :mod:`.queues` (queue state, provisioning,
counts), :mod:`.receiving` (the receive loop), :mod:`.settling`,
:mod:`.sessions`, :mod:`.keeper` and :mod:`.dead_letters` (peek, purge).

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
import logging
import math
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
    SessionsNotSupportedError,
    ValidationError,
)
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import (
    MAX_DELIVERY_REASON,
    TTL_EXPIRED_REASON,
    Capabilities,
    ProviderBase,
    ProviderType,
    QueueInfo,
    SessionSupport,
)
from queue_runtime.telemetry import log_fields

from .dead_letters import DeadLetterTools
from .inflight import Held, Ledger, QueueState, SessionLock
from .keeper import Keeper
from .queues import SqsQueues
from .receiving import BUFFER_LIMIT, Receiving, check_count, wait_change
from .sessions import SessionBook, SqsSessionReceiver
from .settling import Settler
from .transport import MAX_BATCH, SqsTransport
from .wire import MAX_MESSAGE_SIZE, METADATA_RESERVE, Outgoing, encode

__all__ = ["MAX_DELIVERY_REASON", "TTL_EXPIRED_REASON", "SqsProvider", "create_provider"]

logger = logging.getLogger(__name__)

MAX_VISIBILITY: Final = 43_200


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
        wait = int(self.config.wait_time)
        limit = self.config.max_delivery_count
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
        self._queues = SqsQueues(self._transport, self.config)
        self._settler = Settler(
            self._transport,
            self._ledger,
            self.clock,
            visibility=self._visibility,
            max_delivery_count=limit,
        )
        self._sessions = SessionBook(
            self._queues, self._settler, self.clock, visibility=self._visibility
        )
        self._keeper = Keeper(
            self._queues,
            self._settler,
            self._sessions,
            self.clock,
            name=self._id,
            visibility=self._visibility,
        )
        self._receiving = Receiving(
            provider_id=self._id,
            queues=self._queues,
            transport=self._transport,
            ledger=self._ledger,
            settler=self._settler,
            sessions=self._sessions,
            keeper=self._keeper,
            clock=self.clock,
            visibility=self._visibility,
            wait=wait,
            max_delivery_count=limit,
        )
        self._dead_letters = DeadLetterTools(
            self._transport, self._ledger, self._settler, self._receiving, self.clock, wait=wait
        )

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
        self._queues.check_open("send")
        state = self._queues.state(queue, "send")
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
        self._queues.check_open("receive")
        check_count(max_messages)
        state = self._queues.state(queue, "receive")
        return await self._receiving.receive(state, max_messages, timeout, "receive", None)

    async def complete(self, receipt: ReceiptHandle) -> None:
        self._queues.check_open("complete")
        held = self._settler.lookup(receipt, "complete")
        await self._settler.call(held, "delete_message", "complete", ReceiptHandle=held.handle)
        self._settler.forget(held, "complete")

    async def complete_many(self, receipts: Sequence[ReceiptHandle]) -> list[QueueError | None]:
        """Complete several messages with ``DeleteMessageBatch`` (10 per request).

        Every receipt is tried; the result has one entry per receipt: ``None``
        if it was completed, else the error that kept it (``InvalidReceiptError``
        for a lost or unknown receipt, a transient error worth retrying alone).

        Example:
            >>> # batch = await provider.receive(queue, 10, timeout=5.0)
            >>> # results = await provider.complete_many([m.receipt for m in batch])
        """
        self._queues.check_open("complete")
        results: list[QueueError | None] = [None] * len(receipts)
        by_state: dict[int, tuple[QueueState, list[tuple[int, Held]]]] = {}
        for position, receipt in enumerate(receipts):
            try:
                held = self._settler.lookup(receipt, "complete")
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
                        self._settler.forget(held, "complete" if error is None else None)
                    results[position] = error
        return results

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        """Visible again at once or after ``delay`` s; at the delivery limit, dead-lettered."""
        self._queues.check_open("abandon")
        if delay is not None and not 0 <= delay <= MAX_VISIBILITY:
            raise ValidationError(
                f"must be between 0 and {MAX_VISIBILITY} seconds for SQS", field="delay"
            )
        held = self._settler.lookup(receipt, "abandon")
        limit = self.config.max_delivery_count
        if not held.state.dead_letter and held.delivery_count >= limit:
            description = f"abandoned on delivery {held.delivery_count} of {limit}"
            await self._settler.dead_letter(held, MAX_DELIVERY_REASON, description, "abandon")
            return
        group = held.group
        if group is not None and (held.holder is not None or group.buffered or len(group.out) > 1):
            # Keep the group here: releasing one message while we hold others of its
            # group would block the group in SQS, or reorder it.
            self._ledger.requeue(held, delay or 0.0, self.clock.now())
            self._keeper.ensure()
            held.state.notify()
            return
        await self._settler.call(
            held,
            "change_message_visibility",
            "abandon",
            ReceiptHandle=held.handle,
            VisibilityTimeout=math.ceil(delay or 0),
        )
        self._settler.forget(held, "abandon")

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
        self._queues.check_open("dead_letter")
        held = self._settler.lookup(receipt, "dead_letter")
        if held.state.dead_letter:
            raise InvalidReceiptError(
                "the message is already in the dead-letter queue",
                operation="dead_letter",
                queue=receipt.queue,
            )
        await self._settler.dead_letter(held, reason, description, "dead_letter", properties)

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the visibility by ``visibility_timeout`` from now (in a session: the session)."""
        self._queues.check_open("renew_lock")
        held = self._settler.lookup(receipt, "renew_lock")
        if held.holder is not None:
            await self._sessions.renew(held.holder, "renew_lock")
            return receipt.locked_until
        before = self.clock.now()
        await self._settler.call(
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
        self._queues.check_open("accept_session")
        state = self._queues.state(queue, "accept_session")
        if not state.fifo:
            raise SessionsNotSupportedError(
                "standard SQS queues have no sessions; use a .fifo queue",
                operation="accept_session",
                queue=queue,
            )
        await self._transport.url(state, "accept_session")
        await self._settler.sweep()
        self._keeper.ensure()
        if session_id is not None:
            return self._receiver(await self._sessions.accept(state, SessionId(session_id)))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            lock = await self._sessions.accept_any(state)
            if lock is not None:
                return self._receiver(lock)
            remaining = deadline - loop.time()
            if self._queues.closed or remaining <= 0:
                return None
            if state.buffered_count() >= BUFFER_LIMIT:
                await wait_change(state, remaining)
                continue
            await self._receiving.poll(state, MAX_BATCH, deadline, "accept_session")

    def _receiver(self, lock: SessionLock) -> SqsSessionReceiver:
        return SqsSessionReceiver(self._sessions, self._receiving.session_receive, lock)

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._queues.check_open("receive_dead_letters")
        check_count(max_messages)
        state = await self._queues.dead_letter_state(queue, "receive_dead_letters")
        return await self._receiving.receive(
            state, max_messages, timeout, "receive_dead_letters", None
        )

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        """Read DLQ messages without keeping them (SQS has no peek).

        Receives them with a short visibility and releases them at once: other
        readers may miss them for that moment, and each read counts as a
        receive in SQS. Waits up to one second for an empty DLQ.
        """
        self._queues.check_open("peek_dead_letters")
        state = await self._queues.dead_letter_state(queue, "peek_dead_letters")
        return await self._dead_letters.peek(state, max_messages)

    async def purge_dead_letters(self, queue: QueueName) -> int:
        """Purge the DLQ (``PurgeQueue``); returns SQS's approximate message count before it.

        SQS allows one purge per queue every 60 seconds (else ``ThrottledError``).
        """
        self._queues.check_open("purge_dead_letters")
        state = await self._queues.dead_letter_state(queue, "purge_dead_letters")
        return await self._dead_letters.purge(state)

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """SQS's approximate counts of ``queue`` and its DLQ (``GetQueueAttributes``).

        Receives nothing. ``depth`` is ``ApproximateNumberOfMessages`` (visible),
        ``in_flight`` ``ApproximateNumberOfMessagesNotVisible`` (which includes
        messages this provider keeps buffered for sessions). A queue without a
        DLQ (no RedrivePolicy and no ``{queue}-dlq``) reports
        ``dead_letter_depth=None``.
        """
        self._queues.check_open("queue_info")
        return await self._queues.info(queue)

    async def aclose(self) -> None:
        """Stop the keeper, release every message still held (visibility 0), close the client."""
        if self._queues.closed:
            return
        self._queues.close()
        await self._keeper.aclose()
        held: dict[int, Held] = {id(h): h for h in self._ledger.deliveries.values()}
        self._sessions.close()
        for state in self._queues.states():
            for source in (state, state.dead_letter_state):
                if source is not None:
                    held.update((id(h), h) for h in source.all_held())
        if held and self._transport.connected:
            try:
                async with asyncio.timeout(10):
                    await self._settler.release(list(held.values()), "aclose")
            except TimeoutError:
                logger.warning(
                    "SQS: releasing held messages on close timed out", extra=log_fields("aclose")
                )
        for state in self._queues.states():
            state.notify()
        await self._transport.aclose()

    # -- extras: the SDK client, provisioning -------------------------------------------

    async def client(self) -> Any:
        """The aiobotocore SQS client (created on first use), e.g. to register event hooks."""
        self._queues.check_open("client")
        return await self._transport.client()

    async def create_queue(
        self,
        queue: str,
        *,
        dead_letter_queue: bool = True,
        max_receive_count: int | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Create ``queue`` (FIFO if it ends in ``.fifo``) with its DLQ; returns its URL.

        Provisioning for users who set queues up from Python — setup scripts,
        local development against moto or LocalStack, tests — the way the
        runtime expects them: with ``dead_letter_queue`` (the default) it also
        creates ``{queue}-dlq`` (``{base}-dlq.fifo``) and sets the queue's
        ``RedrivePolicy`` with ``maxReceiveCount`` = ``max_receive_count``
        (default ``max_delivery_count``); ``attributes`` are further SQS queue
        attributes. The provider never creates a queue implicitly; where
        infrastructure code provisions the queues, it should set the same
        redrive policy.

        Example:
            >>> # await provider.create_queue("orders.fifo")  # + orders-dlq.fifo
        """
        self._queues.check_open("create_queue")
        return await self._queues.create(
            queue,
            dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count,
            attributes=attributes,
        )

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and its conventional DLQ, if they exist (see :meth:`create_queue`)."""
        self._queues.check_open("delete_queue")
        await self._queues.delete(queue)

    def __repr__(self) -> str:
        endpoint = "custom" if self.config.endpoint_url else "aws"
        return f"SqsProvider(id={self._id!r}, region={self.config.region!r}, endpoint={endpoint})"


def create_provider(config: Any, clock: Clock) -> SqsProvider:
    """Registry entry point: build the provider for an :class:`AwsSqsConfig`."""
    if not isinstance(config, AwsSqsConfig):
        raise ConfigurationError("expected AwsSqsConfig", field="provider")
    return SqsProvider(config, clock=clock)
