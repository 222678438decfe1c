"""The in-memory provider: the provider interface over the in-memory broker.

Faithful to the delivery contract (peek-lock, lock expiry and redelivery,
per-session FIFO with group blocking, exclusive session locks, DLQ after
``max_delivery_count``, TTL, scheduling, size and batch limits), so code
tested here behaves the same on SQS and Azure. Two session modes:

* ``"emulated"`` (default, like SQS FIFO): a plain receive hands out session
  messages too, never one whose session has a message in flight (several
  consecutive messages of one session may come in one batch, as SQS FIFO
  does); ``accept_session`` also works.
* ``"native"`` (like Azure Service Bus): session messages only through
  ``accept_session``.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.memory import InMemoryProvider
    >>> async def main() -> int:
    ...     provider = InMemoryProvider()
    ...     await provider.send(qr.QueueName("jobs"), [qr.Message(b"hi")])
    ...     [msg] = await provider.receive(qr.QueueName("jobs"), 1, timeout=0.1)
    ...     await provider.complete(msg.receipt)
    ...     return msg.delivery_count
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from queue_runtime.clock import Clock, SystemClock, to_datetime
from queue_runtime.config import InMemoryConfig
from queue_runtime.errors import (
    BatchTooLargeError,
    InvalidReceiptError,
    MessageTooLargeError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
    ThrottledError,
    ValidationError,
)
from queue_runtime.messages import (
    Message,
    QueueName,
    ReceiptHandle,
    ReceivedMessage,
    SessionId,
)
from queue_runtime.provider import (
    Capabilities,
    ProviderBase,
    ProviderType,
    QueueInfo,
    SessionSupport,
    SettledReceipts,
)

from .broker import Entity, Record, SessionLock
from .faults import FaultInjector

__all__ = ["InMemoryProvider", "MemorySessionReceiver", "QueueStats", "create_provider"]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue, for assertions in tests."""

    active: int
    """Waiting to be received (visible or delayed by an abandon)."""
    in_flight: int
    scheduled: int
    dead_lettered: int


class InMemoryProvider(ProviderBase):
    """Queues in this process's memory. Create with :func:`queue_runtime.create_client`
    and ``InMemoryConfig()``, or directly to inspect and inject faults in tests."""

    def __init__(
        self,
        config: InMemoryConfig | None = None,
        *,
        clock: Clock | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.config = config or InMemoryConfig()
        self.clock: Clock = clock or SystemClock()
        self.faults = faults or FaultInjector()
        super().__init__(
            "memory",
            Capabilities(
                ProviderType.MEMORY,
                self.config.max_batch_size,
                self.config.max_message_size,
                self.config.max_delivery_count,
            ),
        )
        self._entities: dict[str, Entity] = {}
        self._settled = SettledReceipts()
        """Receipts settled here: a retried settle whose answer was lost is told so."""
        self._closed = False
        subscribe = getattr(self.clock, "subscribe", None)
        self._unsubscribe = subscribe(self._on_clock_moved) if callable(subscribe) else None

    # -- the provider interface ---------------------------------------------

    def session_support(self, queue: QueueName) -> SessionSupport:
        if self.config.session_mode == "native":
            return SessionSupport.NATIVE
        return SessionSupport.EMULATED

    async def create_queue(self, queue: str) -> None:
        """Create ``queue`` (and its DLQ). Needed when ``create_queues`` is off."""
        self._before("create_queue")
        name = QueueName(queue)
        if name not in self._entities:
            self._entities[name] = self._new_entity(name)

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``, its DLQ and everything in them."""
        self._before("delete_queue")
        entity = self._entities.pop(QueueName(queue), None)
        if entity is not None:
            entity.notify()

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        self._before("send")
        entity = self._entity(queue, "send")
        limit = self.config.max_message_size
        if len(messages) > self.config.max_batch_size:
            raise BatchTooLargeError(
                f"{len(messages)} messages in one call, the limit is {self.config.max_batch_size}",
                operation="send",
                queue=queue,
            )
        total = 0
        for message in messages:
            if message.size > limit:
                raise MessageTooLargeError(
                    message.size,
                    limit,
                    operation="send",
                    queue=queue,
                    message_id=message.message_id,
                )
            total += message.size
        if total > limit:
            raise BatchTooLargeError(
                f"batch is {total} bytes, the limit is {limit}", operation="send", queue=queue
            )
        if entity.size + len(messages) > self.config.max_queue_size:
            raise ThrottledError(
                f"queue is full ({self.config.max_queue_size} messages)",
                operation="send",
                queue=queue,
                retry_after=1.0,
            )
        now = self.clock.now()
        entity.tick(now)
        for message in messages:
            at = message.scheduled_enqueue_time
            if at is not None and at.timestamp() > now:
                entity.schedule(message, at.timestamp())
            else:
                entity.enqueue(message, now)
        entity.notify()
        self._after("send")

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._before("receive")
        entity = self._entity(queue, "receive")
        emulated = self.config.session_mode == "emulated"
        return await self._receive_from(entity, queue, max_messages, timeout, groups=emulated)

    async def complete(self, receipt: ReceiptHandle) -> None:
        self._before("complete")
        entity, record = self._settling(receipt, "complete")
        entity.complete(record)
        self._settled.add(receipt.token, "complete")
        self._after("complete")

    async def complete_many(self, receipts: Sequence[ReceiptHandle]) -> list[QueueError | None]:
        """Complete several messages in one call; per receipt, None or its error.

        Each receipt is settled, and meets injected faults, on its own, like one
        entry of an SQS ``DeleteMessageBatch``.
        """
        results: list[QueueError | None] = []
        for receipt in receipts:
            try:
                await self.complete(receipt)
            except QueueError as error:
                results.append(error)
            else:
                results.append(None)
        return results

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        self._before("abandon")
        if delay is not None and not 0 <= delay < float("inf"):
            raise ValidationError(f"must be a non-negative number, got {delay!r}", field="delay")
        entity, record = self._settling(receipt, "abandon")
        entity.release(record, self.clock.now(), delay)
        self._settled.add(receipt.token, "abandon")
        self._after("abandon")

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self._before("dead_letter")
        entity, record = self._settling(receipt, "dead_letter")
        if entity.is_dead_letter:
            raise InvalidReceiptError(
                "the message is already in the dead-letter queue",
                operation="dead_letter",
                queue=receipt.queue,
            )
        entity.dead_letter(record, reason, description, properties)
        self._settled.add(receipt.token, "dead_letter")
        self._after("dead_letter")

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        self._before("renew_lock")
        entity, record = self._settling(receipt, "renew_lock")
        now = self.clock.now()
        if record.holder is not None:
            until = entity.renew_session(record.holder, now)
        else:
            until = entity.renew(record, now)
        receipt.extend(to_datetime(until))
        self._after("renew_lock")
        return receipt.locked_until

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> MemorySessionReceiver | None:
        self._before("accept_session")
        entity = self._entity(queue, "accept_session")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = self.clock.now()
            entity.tick(now)
            if session_id is not None:
                group = entity.group_for(session_id)
                if not group.free:
                    raise SessionLockedError(
                        f"session {session_id!r} is locked by another consumer",
                        operation="accept_session",
                        queue=queue,
                    )
                lock = entity.lock_group(group, now)
                break
            available = entity.take_group(now)
            if available is not None:
                lock = entity.lock_group(available, now)
                break
            if loop.time() >= deadline or self._closed:
                return None
            await entity.wait_for_change(now, deadline, now + (deadline - loop.time()))
        self._after("accept_session")
        return MemorySessionReceiver(self, entity, queue, lock)

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._before("receive_dead_letters")
        entity = self._dead_letter_entity(queue, "receive_dead_letters")
        return await self._receive_from(entity, queue, max_messages, timeout, groups=False)

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        self._before("peek_dead_letters")
        entity = self._dead_letter_entity(queue, "peek_dead_letters")
        records = list(entity.records.values())[:max_messages]
        return [self._received(entity, queue, record, peek=True) for record in records]

    async def purge_dead_letters(self, queue: QueueName) -> int:
        self._before("purge_dead_letters")
        return self._dead_letter_entity(queue, "purge_dead_letters").remove_all()

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """Counts of ``queue`` without receiving from it (the health hook).

        Exact: messages waiting (scheduled ones not included), in flight, and
        in the DLQ. Does not create the queue: a queue never used reads as
        empty, or raises QueueNotFoundError when ``create_queues`` is off.
        """
        self._before("queue_info")
        entity = self._entities.get(queue)
        if entity is None:
            if not self.config.create_queues:
                raise QueueNotFoundError(queue, operation="queue_info")
            return QueueInfo(depth=0, in_flight=0, dead_letter_depth=0)
        stats = self.stats(queue)  # the queue exists: this creates nothing
        info = QueueInfo(
            depth=stats.active, in_flight=stats.in_flight, dead_letter_depth=stats.dead_lettered
        )
        self._after("queue_info")
        return info

    async def aclose(self) -> None:
        """Close the provider; waiting receives return, later calls fail."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for entity in self._entities.values():
            entity.notify()

    # -- inspection for tests -------------------------------------------------

    def stats(self, queue: str) -> QueueStats:
        """How many messages of ``queue`` are waiting, in flight, scheduled and dead-lettered."""
        entity = self._entity(QueueName(queue), "stats")
        dead = entity.dead_letter_entity
        return QueueStats(
            active=sum(1 for _ in entity.pending_records()),
            in_flight=len(entity.in_flight),
            scheduled=entity.scheduled_count,
            dead_lettered=len(dead.records) if dead is not None else 0,
        )

    def pending_messages(self, queue: str) -> list[Message]:
        """The messages of ``queue`` waiting to be received, oldest first."""
        entity = self._entity(QueueName(queue), "pending_messages")
        return [record.message for record in entity.pending_records()]

    def dead_letter_messages(self, queue: str) -> list[ReceivedMessage]:
        """Everything in ``queue``'s DLQ, oldest first, with reasons (no locks taken)."""
        name = QueueName(queue)
        entity = self._dead_letter_entity(name, "dead_letter_messages")
        return [self._received(entity, name, r, peek=True) for r in entity.records.values()]

    def __repr__(self) -> str:
        return f"InMemoryProvider(id={self._id!r}, session_mode={self.config.session_mode!r})"

    # -- internals ------------------------------------------------------------

    def _new_entity(self, name: str) -> Entity:
        config = self.config
        dead_letter = Entity(
            f"{name}/$deadletterqueue",
            grouping=False,
            lock_duration=config.lock_duration,
            session_lock_duration=config.session_lock_duration,
            max_delivery_count=None,
        )
        return Entity(
            name,
            grouping=True,
            lock_duration=config.lock_duration,
            session_lock_duration=config.session_lock_duration,
            max_delivery_count=config.max_delivery_count,
            dead_letter=dead_letter,
        )

    def _entity(self, queue: QueueName, operation: str) -> Entity:
        entity = self._entities.get(queue)
        if entity is None:
            if not self.config.create_queues:
                raise QueueNotFoundError(queue, operation=operation)
            entity = self._entities[queue] = self._new_entity(queue)
        entity.tick(self.clock.now())
        return entity

    def _dead_letter_entity(self, queue: QueueName, operation: str) -> Entity:
        dead = self._entity(queue, operation).dead_letter_entity
        assert dead is not None
        return dead

    def _before(self, operation: str) -> None:
        if self._closed:
            raise QueueError("the in-memory provider is closed", operation=operation)
        error = self.faults.check(operation, after=False)
        if error is not None:
            raise error

    def _after(self, operation: str) -> None:
        error = self.faults.check(operation, after=True)
        if error is not None:
            raise error

    def _on_clock_moved(self) -> None:
        for entity in self._entities.values():
            entity.notify()

    async def _receive_from(
        self, entity: Entity, queue: QueueName, max_messages: int, timeout: float, *, groups: bool
    ) -> list[ReceivedMessage]:
        if not 1 <= max_messages <= self.config.max_batch_size:
            raise ValidationError(
                f"must be 1-{self.config.max_batch_size}, got {max_messages}",
                field="max_messages",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            now = self.clock.now()
            entity.tick(now)
            batch = self._take(entity, now, max_messages, groups=groups)
            if batch or loop.time() >= deadline or self._closed:
                break
            await entity.wait_for_change(now, deadline, now + (deadline - loop.time()))
        received = [self._received(entity, queue, record) for record in batch]
        self._after("receive_dead_letters" if entity.is_dead_letter else "receive")
        return received

    @staticmethod
    def _take(entity: Entity, now: float, limit: int, *, groups: bool) -> list[Record]:
        batch: list[Record] = []
        while len(batch) < limit:
            record: Record | None = entity.take_next(now, plain=True, groups=groups)
            if record is None:
                break
            # consecutive messages of the same session may share a batch (SQS FIFO does)
            while record is not None:
                entity.deliver(record, now)
                batch.append(record)
                if len(batch) >= limit:
                    break
                record = entity.deliver_more_of_group(record, now)
        return batch

    def _received(
        self, entity: Entity, queue: QueueName, record: Record, *, peek: bool = False
    ) -> ReceivedMessage:
        message = record.message
        token = f"peek-{record.seq}" if peek or record.token is None else record.token
        delivered = record.delivered_at or record.enqueued_at
        receipt = ReceiptHandle(
            provider_id=self._id,
            queue=queue,
            token=token,
            locked_until=to_datetime(record.locked_until),
            dead_letter=entity.is_dead_letter,
            native=record.holder,
        )
        attributes = message.attributes
        if record.dead_letter_properties:
            attributes = {**attributes, **record.dead_letter_properties}
        return ReceivedMessage(
            body=message.body,
            attributes=attributes,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            content_type=message.content_type,
            time_to_live=message.time_to_live,
            delivery_count=record.delivery_count,
            enqueued_at=to_datetime(record.enqueued_at),
            first_delivered_at=to_datetime(record.first_delivered_at or delivered),
            delivered_at=to_datetime(delivered),
            receipt=receipt,
            sequence_number=record.seq,
            dead_letter_reason=record.dead_letter_reason,
            dead_letter_description=record.dead_letter_description,
        )

    def _settling(self, receipt: ReceiptHandle, operation: str) -> tuple[Entity, Record]:
        """The entity and in-flight record a receipt stands for, or the right error."""
        if not isinstance(receipt, ReceiptHandle) or receipt.provider_id != self._id:
            raise InvalidReceiptError(
                "the receipt was not issued by this provider", operation=operation
            )
        entity = self._entities.get(receipt.queue)
        if entity is not None and receipt.dead_letter:
            entity = entity.dead_letter_entity
        if entity is None:
            raise InvalidReceiptError(
                "the queue of this receipt no longer exists",
                operation=operation,
                queue=receipt.queue,
            )
        entity.tick(self.clock.now())
        lock = receipt.native
        if isinstance(lock, SessionLock) and lock.lost:
            raise SessionLockLostError(
                f"the lock on session {lock.group.key!r} was lost",
                operation=operation,
                queue=receipt.queue,
            )
        record = entity.in_flight.get(receipt.token)
        if record is None and (how := self._settled.how(receipt.token)):
            raise InvalidReceiptError(
                f"the message was already settled with this receipt ({how})",
                settled=how,
                operation=operation,
                queue=receipt.queue,
            )
        if isinstance(lock, SessionLock) and lock.closed:
            raise InvalidReceiptError(
                f"session {lock.group.key!r} was closed before the message was settled",
                operation=operation,
                queue=receipt.queue,
            )
        if record is None:
            raise InvalidReceiptError(
                "the lock expired or the message was already settled",
                operation=operation,
                queue=receipt.queue,
            )
        return entity, record


class MemorySessionReceiver:
    """A locked session of an :class:`InMemoryProvider` queue."""

    def __init__(
        self, provider: InMemoryProvider, entity: Entity, queue: QueueName, lock: SessionLock
    ) -> None:
        self._provider = provider
        self._entity = entity
        self._queue = queue
        self._lock = lock
        self._session_id = SessionId(lock.group.key)

    @property
    def session_id(self) -> SessionId:
        return self._session_id

    @property
    def locked_until(self) -> datetime:
        return to_datetime(self._lock.locked_until)

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        provider = self._provider
        if not 1 <= max_messages <= provider.config.max_batch_size:
            raise ValidationError(
                f"must be 1-{provider.config.max_batch_size}, got {max_messages}",
                field="max_messages",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        waited = False
        while True:
            if waited and provider._closed:
                return []  # closed while waiting: like a plain receive, return empty-handed
            now = self._check("session_receive")
            batch = self._take(now, max_messages)
            if batch or loop.time() >= deadline or provider._closed:
                break
            await self._entity.wait_for_change(now, deadline, now + (deadline - loop.time()))
            waited = True
        received = [provider._received(self._entity, self._queue, r) for r in batch]
        provider._after("session_receive")
        return received

    async def renew_lock(self) -> datetime:
        now = self._check("renew_session_lock")
        self._entity.renew_session(self._lock, now)
        self._provider._after("renew_session_lock")
        return self.locked_until

    async def get_state(self) -> bytes | None:
        self._check("get_state")
        return self._lock.group.state

    async def set_state(self, state: bytes | None) -> None:
        self._check("set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        self._lock.group.state = state
        self._provider._after("set_state")

    async def close(self) -> None:
        """Release the session; unsettled messages become available again at once."""
        lock = self._lock
        if lock.closed or lock.lost:
            lock.closed = True
            return
        faults = self._provider.faults
        if (error := faults.check("close_session", after=False)) is not None:
            raise error
        lock.closed = True
        self._entity.unlock(lock, self._provider.clock.now())
        if (error := faults.check("close_session", after=True)) is not None:
            raise error

    def __repr__(self) -> str:
        return f"MemorySessionReceiver(queue={self._queue!r}, session_id={self._session_id!r})"

    def _check(self, operation: str) -> float:
        self._provider._before(operation)
        now = self._provider.clock.now()
        self._entity.tick(now)
        if self._lock.closed:
            raise SessionNotFoundError(
                f"session {self._session_id!r} was closed", operation=operation, queue=self._queue
            )
        if self._lock.lost:
            raise SessionLockLostError(
                f"the lock on session {self._session_id!r} was lost",
                operation=operation,
                queue=self._queue,
            )
        return now

    def _take(self, now: float, limit: int) -> list[Record]:
        group = self._lock.group
        batch: list[Record] = []
        while group.pending and len(batch) < limit:
            record = group.pending[0]
            if record.visible_at > now:
                break
            if self._entity.expire_if_due(record, now):
                continue
            self._entity.deliver(record, now, holder=self._lock)
            batch.append(record)
        return batch


def create_provider(config: Any, clock: Clock) -> InMemoryProvider:
    """Registry entry point: build the provider for an :class:`InMemoryConfig`."""
    return InMemoryProvider(config, clock=clock)
