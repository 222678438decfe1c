"""A fake Service Bus namespace behind the adapter's SDK seam, for tests.

It stands in for :class:`azure.servicebus.aio.ServiceBusClient` and the senders,
receivers and sessions it hands out (the Protocols in
:mod:`queue_runtime.providers.azure.sdk`), and is faithful where the adapter
depends on it:

* **Real SDK message objects, both ways.** A send takes the SDK's own
  :class:`~azure.servicebus.ServiceBusMessageBatch` (size-bounded by the SDK)
  and stores the AMQP-encoded payloads exactly as they would go on the wire
  (``encode_payload``). A delivery decodes them with the SDK's
  ``decode_payload``, adds what the broker adds (``x-opt-sequence-number``,
  ``x-opt-enqueued-time``, ``x-opt-locked-until`` as AMQP timestamps, the
  header delivery count, ``DeadLetterReason``/``DeadLetterErrorDescription``
  application properties in the DLQ), re-encodes and decodes again, and wraps
  the result in a real :class:`~azure.servicebus.ServiceBusReceivedMessage`
  with a real transfer frame (the lock token is its delivery tag). So the
  adapter reads every field through the SDK's own accessors and wire types.
* **The service's semantics come from the in-memory engine**
  (:mod:`queue_runtime.providers.memory.broker`): peek-lock, lock expiry and
  redelivery, sessions and session locks, max delivery count, TTL, DLQ.
  Time is a :class:`~queue_runtime.clock.ManualClock`.
* **Real exceptions.** Service-side failures are raised as the SDK raises them:
  an AMQP error condition (``amqp:not-found``,
  ``com.microsoft:session-cannot-be-locked``, ``com.microsoft:timeout``,
  ``com.microsoft:message-lock-lost`` ...) turned into an exception by the SDK's
  own ``PyamqpTransport.create_servicebus_exception``. Client-side checks
  (settling twice → ``MessageAlreadySettled``, a closed handler →
  ``ValueError``, renewing a message lock on a session receiver → ``TypeError``,
  an expired lock → ``MessageLockLostError``) mirror the SDK receiver's code and
  use the same private message state it does (``_settled``,
  ``_is_peeked_message``, ``_expiry``).
* **Sessions as Service Bus has them:** a session-enabled queue refuses plain
  receivers and messages without a session id; a plain queue refuses session
  receivers; "next available session" times out with ``OperationTimeoutError``.

Not modelled: connections, links, credit and prefetch, partitions, duplicate
detection, the transfer DLQ, auto-forwarding, sequence numbers that survive
dead-lettering or scheduling (the DLQ and a scheduled message get new ones),
peeking scheduled messages. The fake is stricter than the service in one place:
a message must be settled through the receiver that received it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSessionFilter,
    ServiceBusSubQueue,
)
from azure.servicebus._common.constants import (
    ERROR_CODE_MESSAGE_LOCK_LOST,
    ERROR_CODE_SESSION_CANNOT_BE_LOCKED,
    ERROR_CODE_SESSION_LOCK_LOST,
    ERROR_CODE_TIMEOUT,
)
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.error import AMQPLinkError, ErrorCondition
from azure.servicebus._pyamqp.message import Header
from azure.servicebus._pyamqp.message import Message as AmqpMessage
from azure.servicebus._pyamqp.performatives import TransferFrame
from azure.servicebus._pyamqp.utils import (
    amqp_long_value,
    amqp_string_value,
    amqp_timestamp_value,
)
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    ServiceBusError,
)

from queue_runtime.clock import ManualClock, to_datetime
from queue_runtime.messages import Message
from queue_runtime.providers.memory.broker import Entity, Record, SessionLock

__all__ = ["FakeReceiver", "FakeSender", "FakeServiceBus", "FakeSession", "VirtualClock"]

_log = logging.getLogger(__name__)

X_OPT_SEQUENCE_NUMBER = b"x-opt-sequence-number"
X_OPT_ENQUEUED_TIME = b"x-opt-enqueued-time"
X_OPT_LOCKED_UNTIL = b"x-opt-locked-until"
X_OPT_SCHEDULED_ENQUEUE_TIME = b"x-opt-scheduled-enqueue-time"
_TIME_ANNOTATIONS = (X_OPT_ENQUEUED_TIME, X_OPT_LOCKED_UNTIL, X_OPT_SCHEDULED_ENQUEUE_TIME)

NEEDS_SESSION_RECEIVER = (
    "It is not possible for an entity that requires sessions to create a non-sessionful "
    "message receiver."
)
NEEDS_PLAIN_RECEIVER = (
    "A sessionful message receiver cannot be created on an entity that does not require "
    "sessions. Ensure RequiresSession is set to true when creating a Queue or Subscription "
    "to enable sessionful behavior."
)
NEEDS_SESSION_ID = (
    "The SessionId was not set on a message, and it cannot be sent to the entity. Entities "
    "that have session support enabled can only receive messages that have the SessionId "
    "set to a valid value."
)


def service_error(condition: bytes, description: str) -> ServiceBusError:
    """The exception the SDK raises when the service answers with ``condition``."""
    return PyamqpTransport.create_servicebus_exception(
        _log, AMQPLinkError(condition, description=description)
    )


def _shutdown_error() -> ValueError:
    return ValueError(
        "The handler has already been shutdown. Please use ServiceBusClient to create a new "
        "instance."
    )


class VirtualClock:
    """Provider time that only moves with a :class:`ManualClock`, and that can be waited on.

    ``sleep(s)`` returns once the manual clock has been advanced ``s`` seconds
    (the ManualClock's own ``sleep`` advances time instead, which suits retry
    back-off but not a provider that waits out a delay).
    """

    def __init__(self, manual: ManualClock) -> None:
        self.manual = manual
        self._moved = asyncio.Event()
        self._unsubscribe = manual.subscribe(self._on_advance)

    def now(self) -> float:
        return self.manual.now()

    async def sleep(self, seconds: float) -> None:
        deadline = self.manual.now() + max(0.0, seconds)
        await asyncio.sleep(0)
        while self.manual.now() < deadline:
            moved = self._moved
            await moved.wait()

    def close(self) -> None:
        self._unsubscribe()

    def _on_advance(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()


@dataclass(eq=False)
class FakeQueue:
    """One queue of the fake namespace: its entity (and DLQ) and scheduled messages."""

    name: str
    requires_session: bool
    entity: Entity
    max_message_size: int
    max_batch_size: int
    """Bytes a batch may hold (premium: 1 MiB while a single message may be 100 MiB)."""
    scheduled: dict[int, tuple[float, Message]] = field(default_factory=dict)

    @property
    def dead_letter(self) -> Entity:
        dead = self.entity.dead_letter_entity
        assert dead is not None
        return dead

    def tick(self, now: float) -> None:
        due = sorted((at, number) for number, (at, _) in self.scheduled.items() if at <= now)
        for at, number in due:
            _, message = self.scheduled.pop(number)
            self.entity.enqueue(message, at)
        self.entity.tick(now)
        self.dead_letter.tick(now)
        if due:
            self.entity.notify()


class FakeServiceBus:
    """A namespace of fake queues; use where a ``ServiceBusClient`` is expected.

    Queues must be created (:meth:`create_queue`) unless ``auto_create`` is set.
    :meth:`fail_next` makes the next call of an operation raise a given error
    (before it has any effect), e.g. a real ``ServiceBusServerBusyError``.
    """

    def __init__(
        self,
        clock: ManualClock,
        *,
        lock_duration: float = 30.0,
        session_lock_duration: float = 300.0,
        max_delivery_count: int = 10,
        max_message_size: int = 262_144,
        auto_create: bool = False,
        peek_page_size: int | None = None,
        namespace: str = "fake.servicebus.windows.net",
    ) -> None:
        self.clock = clock
        self.namespace = namespace
        self.lock_duration = lock_duration
        self.session_lock_duration = session_lock_duration
        self.max_delivery_count = max_delivery_count
        self.max_message_size = max_message_size
        self.auto_create = auto_create
        self.peek_page_size = peek_page_size
        """At most this many messages per peek (the service may return fewer than asked)."""
        self.queues: dict[str, FakeQueue] = {}
        self.handlers: list[FakeSender | FakeReceiver] = []
        self.closed = False
        self.sent_batches = 0
        self._faults: dict[str, list[BaseException]] = {}
        self._schedule_numbers = itertools.count(1_000_000)
        self._unsubscribe = clock.subscribe(self._on_clock)

    # -- administration (what the portal or ARM would do) ------------------

    def create_queue(
        self,
        name: str,
        *,
        requires_session: bool = False,
        lock_duration: float | None = None,
        max_delivery_count: int | None = None,
        max_message_size: int | None = None,
        max_batch_size: int | None = None,
    ) -> FakeQueue:
        lock = self.lock_duration if lock_duration is None else lock_duration
        dead_letter = Entity(
            f"{name}/$deadletterqueue",
            grouping=False,
            lock_duration=lock,
            session_lock_duration=self.session_lock_duration,
            max_delivery_count=None,
        )
        entity = Entity(
            name,
            grouping=requires_session,
            lock_duration=lock,
            session_lock_duration=self.session_lock_duration,
            max_delivery_count=max_delivery_count or self.max_delivery_count,
            dead_letter=dead_letter,
        )
        size = max_message_size or self.max_message_size
        queue = FakeQueue(name, requires_session, entity, size, max_batch_size or size)
        self.queues[name] = queue
        return queue

    def fail_next(self, operation: str, error: BaseException) -> None:
        """Raise ``error`` from the next call of ``operation`` (``send``, ``receive``,
        ``complete``, ``abandon``, ``dead_letter``, ``renew_lock``, ``accept_session``,
        ``peek``, ``get_state``, ``set_state``, ``renew_session_lock``, ``schedule``)."""
        self._faults.setdefault(operation, []).append(error)

    def active_count(self, name: str) -> int:
        """Messages waiting or in flight in queue ``name`` (not its DLQ)."""
        return len(self.queues[name].entity.records)

    def dead_letter_count(self, name: str) -> int:
        return len(self.queues[name].dead_letter.records)

    def scheduled_count(self, name: str) -> int:
        return len(self.queues[name].scheduled)

    @property
    def open_handlers(self) -> list[FakeSender | FakeReceiver]:
        return [handler for handler in self.handlers if not handler.closed]

    # -- the ServiceBusClient surface -------------------------------------

    def get_queue_sender(self, queue_name: str, **_: Any) -> FakeSender:
        sender = FakeSender(self, queue_name)
        self.handlers.append(sender)
        return sender

    def get_queue_receiver(
        self,
        queue_name: str,
        *,
        session_id: str | ServiceBusSessionFilter | None = None,
        sub_queue: ServiceBusSubQueue | str | None = None,
        receive_mode: ServiceBusReceiveMode | str = ServiceBusReceiveMode.PEEK_LOCK,
        max_wait_time: float | None = None,
        prefetch_count: int = 0,
    ) -> FakeReceiver:
        if sub_queue and session_id:
            raise ValueError("session_id and sub_queue can not be specified simultaneously.")
        if max_wait_time is not None and max_wait_time <= 0:
            raise ValueError("The max_wait_time must be greater than 0.")
        receiver = FakeReceiver(
            self,
            queue_name,
            session_id=session_id,
            dead_letter=bool(sub_queue),
            receive_mode=ServiceBusReceiveMode(receive_mode),
            max_wait_time=max_wait_time,
            prefetch_count=prefetch_count,
        )
        self.handlers.append(receiver)
        return receiver

    async def close(self) -> None:
        for handler in self.handlers:
            await handler.close()
        if not self.closed:
            self.closed = True
            self._unsubscribe()

    # -- internals --------------------------------------------------------------

    def queue(self, name: str) -> FakeQueue:
        queue = self.queues.get(name)
        if queue is None:
            if not self.auto_create:
                raise service_error(
                    ErrorCondition.NotFound,
                    f"The messaging entity 'sb://{self.namespace}/{name}' could not be found. "
                    "To know more visit https://aka.ms/sbResourceMgrExceptions.",
                )
            queue = self.create_queue(name)
        queue.tick(self.clock.now())
        return queue

    def fault(self, operation: str) -> None:
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    def next_schedule_number(self) -> int:
        return next(self._schedule_numbers)

    def _on_clock(self) -> None:
        now = self.clock.now()
        for queue in self.queues.values():
            queue.tick(now)
            queue.entity.notify()
            queue.dead_letter.notify()


# -- wire format ------------------------------------------------------------------


def _payloads(message: ServiceBusMessage | ServiceBusMessageBatch | list[Any]) -> Iterator[bytes]:
    """The AMQP-encoded messages a send puts on the wire."""
    if isinstance(message, ServiceBusMessageBatch):
        yield from (bytes(payload) for payload in message._message[5])
        return
    for single in message if isinstance(message, list) else [message]:
        probe = ServiceBusMessageBatch(max_size_in_bytes=2**62)
        probe.add_message(single)
        yield bytes(probe._message[5][0])


def _stored(payload: bytes) -> tuple[Message, float | None]:
    """The engine's envelope for a payload: the wire bytes plus the fields it routes by.

    Returns the envelope and the scheduled enqueue time (Unix seconds), if any.
    """
    decoded = decode_payload(memoryview(payload))
    properties = decoded.properties
    group = properties.group_id if properties is not None else None
    message_id = properties.message_id if properties is not None else None
    ttl_ms = decoded.header.ttl if decoded.header is not None else None
    scheduled_ms = (decoded.message_annotations or {}).get(X_OPT_SCHEDULED_ENQUEUE_TIME)
    envelope = Message(
        payload,
        session_id=None if group is None else _str(group),
        message_id=_str(message_id) if message_id else str(uuid.uuid4()),
        time_to_live=ttl_ms / 1000 if ttl_ms else None,
    )
    return envelope, None if scheduled_ms is None else scheduled_ms / 1000


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# typed wrappers of pyamqp's (untyped) AMQP value constructors
def _long(value: int) -> Any:
    return amqp_long_value(value)  # type: ignore[no-untyped-call]


def _timestamp(value: int) -> Any:
    return amqp_timestamp_value(value)  # type: ignore[no-untyped-call]


def _string(value: str) -> Any:
    return amqp_string_value(value)  # type: ignore[no-untyped-call]


def _retyped(values: dict[Any, Any] | None) -> dict[Any, Any]:
    """Decoded AMQP values ready to encode again with the types the service uses."""
    out: dict[Any, Any] = {}
    for key, value in (values or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = _timestamp(value) if key in _TIME_ANNOTATIONS else _long(value)
        else:
            out[key] = value
    return out


def _delivered(record: Record, *, dead_letter: bool) -> AmqpMessage:
    """The AMQP message the broker transfers for ``record``, as the receiver decodes it."""
    stored = decode_payload(memoryview(record.message.body))
    header = stored.header
    annotations = _retyped(stored.message_annotations)
    annotations[X_OPT_SEQUENCE_NUMBER] = _long(record.seq)
    annotations[X_OPT_ENQUEUED_TIME] = _timestamp(int(record.enqueued_at * 1000))
    if record.locked_until:
        annotations[X_OPT_LOCKED_UNTIL] = _timestamp(int(record.locked_until * 1000))
    properties = _retyped(stored.application_properties)
    if dead_letter:
        if record.dead_letter_reason is not None:
            properties[b"DeadLetterReason"] = _string(record.dead_letter_reason)
        if record.dead_letter_description is not None:
            properties[b"DeadLetterErrorDescription"] = _string(record.dead_letter_description)
    transferred = stored._replace(
        # Service Bus sends deliveries-so-far minus one: the AMQP "failed attempts before"
        header=Header(
            durable=None if header is None else header.durable,
            priority=None if header is None else header.priority,
            ttl=None if header is None else header.ttl,
            first_acquirer=record.delivery_count <= 1,
            delivery_count=max(record.delivery_count - 1, 0),
        ),
        message_annotations=annotations,
        application_properties=properties or None,
    )
    return decode_payload(memoryview(bytes(encode_payload(bytearray(), transferred))))


# -- senders -----------------------------------------------------------------------


class FakeSender:
    """``ServiceBusSender`` of one fake queue."""

    def __init__(self, bus: FakeServiceBus, queue: str) -> None:
        self.bus = bus
        self.queue_name = queue
        self.closed = False

    async def create_message_batch(
        self, max_size_in_bytes: int | None = None
    ) -> ServiceBusMessageBatch:
        limit = self._open().max_batch_size
        if max_size_in_bytes and max_size_in_bytes > limit:
            raise ValueError(
                f"Max message size: {max_size_in_bytes} is too large, acceptable max batch "
                f"size is: {limit} bytes."
            )
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or limit)

    async def send_messages(
        self,
        message: ServiceBusMessage | ServiceBusMessageBatch,
        *,
        timeout: float | None = None,
    ) -> None:
        queue = self._open()
        self.bus.fault("send")
        payloads = list(_payloads(message))
        if not isinstance(message, ServiceBusMessageBatch):
            for payload in payloads:
                if len(payload) > queue.max_message_size:
                    raise service_error(
                        ErrorCondition.LinkMessageSizeExceeded,
                        f"The received message (delivery-id:0, size:{len(payload)} bytes) "
                        f"exceeds the limit ({queue.max_message_size} bytes) currently allowed "
                        "on the link.",
                    )
        stored = [_stored(payload) for payload in payloads]
        if queue.requires_session and any(m.session_id is None for m, _ in stored):
            raise service_error(ErrorCondition.NotAllowed, NEEDS_SESSION_ID)
        now = self.bus.clock.now()
        for envelope, at in stored:
            if at is not None and at > now:
                queue.scheduled[self.bus.next_schedule_number()] = (at, envelope)
            else:
                queue.entity.enqueue(envelope, now)
        self.bus.sent_batches += 1
        queue.entity.notify()

    async def schedule_messages(
        self,
        messages: list[ServiceBusMessage],
        schedule_time_utc: datetime,
        *,
        timeout: float | None = None,
    ) -> list[int]:
        queue = self._open()
        self.bus.fault("schedule")
        numbers = []
        for payload in _payloads(messages):
            envelope, _ = _stored(payload)
            number = self.bus.next_schedule_number()
            queue.scheduled[number] = (schedule_time_utc.timestamp(), envelope)
            numbers.append(number)
        queue.tick(self.bus.clock.now())
        return numbers

    async def cancel_scheduled_messages(
        self, sequence_numbers: list[int], *, timeout: float | None = None
    ) -> None:
        queue = self._open()
        self.bus.fault("cancel")
        for number in sequence_numbers:
            queue.scheduled.pop(number, None)

    async def close(self) -> None:
        self.closed = True

    def _open(self) -> FakeQueue:
        if self.closed:
            raise _shutdown_error()
        return self.bus.queue(self.queue_name)


# -- receivers -----------------------------------------------------------------------


class FakeSession:
    """``ServiceBusSession`` of a fake session receiver."""

    def __init__(self, receiver: FakeReceiver, session_id: str | None) -> None:
        self._receiver = receiver
        self._session_id = session_id
        self.lock: SessionLock | None = None

    @property
    def session_id(self) -> str:
        assert self._session_id is not None, "the session is not accepted yet"
        return self._session_id

    @property
    def locked_until_utc(self) -> datetime | None:
        return None if self.lock is None else to_datetime(self.lock.locked_until)

    async def get_state(self, *, timeout: float | None = None) -> bytes:
        lock = self._live("get_state")
        state: bytes = lock.group.state  # type: ignore[assignment]  # None when unset, like the SDK
        return state

    async def set_state(
        self, state: str | bytes | bytearray | None, *, timeout: float | None = None
    ) -> None:
        lock = self._live("set_state")
        lock.group.state = (
            state.encode() if isinstance(state, str) else (None if state is None else bytes(state))
        )

    async def renew_lock(self, *, timeout: float | None = None) -> datetime:
        lock = self._live("renew_session_lock")
        until = self._receiver.queue.entity.renew_session(lock, self._receiver.bus.clock.now())
        return to_datetime(until)

    def _live(self, operation: str) -> SessionLock:
        receiver = self._receiver
        receiver.check_live()
        receiver.bus.fault(operation)
        receiver.queue.tick(receiver.bus.clock.now())
        lock = self.lock
        assert lock is not None, "the session is not accepted yet"
        if lock.lost:
            raise service_error(ERROR_CODE_SESSION_LOCK_LOST, "The session lock has expired.")
        return lock


class FakeReceiver:
    """``ServiceBusReceiver`` of a fake queue, its DLQ, or one of its sessions."""

    def __init__(
        self,
        bus: FakeServiceBus,
        queue: str,
        *,
        session_id: str | ServiceBusSessionFilter | None,
        dead_letter: bool,
        receive_mode: ServiceBusReceiveMode,
        max_wait_time: float | None,
        prefetch_count: int,
    ) -> None:
        self.bus = bus
        self.queue_name = queue
        self.dead_letter = dead_letter
        self.receive_mode = receive_mode
        self.max_wait_time = max_wait_time
        self.prefetch_count = prefetch_count
        self.requested_session = session_id
        named = None if session_id in (None, NEXT_AVAILABLE_SESSION) else str(session_id)
        self._session = None if session_id is None else FakeSession(self, named)
        self.running = False
        self.closed = False
        self._delivery_ids = itertools.count()
        self._last_sequence_number = 0

    @property
    def session(self) -> FakeSession:
        # like the SDK: typed as a session, None on a receiver without one
        return self._session  # type: ignore[return-value]

    @property
    def queue(self) -> FakeQueue:
        return self.bus.queue(self.queue_name)

    @property
    def entity(self) -> Entity:
        queue = self.queue
        return queue.dead_letter if self.dead_letter else queue.entity

    async def __aenter__(self) -> FakeReceiver:
        if self.closed:
            raise ValueError(
                "The handler has already been shutdown. Please use ServiceBusClient to create a "
                "new instance."
            )
        await self._open()
        return self

    async def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]:
        self.check_live()
        if max_wait_time is not None and max_wait_time <= 0:
            raise ValueError("The max_wait_time must be greater than 0.")
        if max_message_count is not None and max_message_count <= 0:
            raise ValueError("The max_message_count must be greater than 0")
        wait = max_wait_time if max_wait_time is not None else self.max_wait_time or 60.0
        count = max_message_count if max_message_count is not None else self.prefetch_count
        await self._open()
        self.bus.fault("receive")
        if not count:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            now = self.bus.clock.now()
            queue = self.queue
            lock = self._session.lock if self._session is not None else None
            if lock is not None and lock.lost:
                raise service_error(ERROR_CODE_SESSION_LOCK_LOST, "The session lock has expired.")
            entity = queue.dead_letter if self.dead_letter else queue.entity
            records = self._take(entity, lock, now, count)
            if records or loop.time() >= deadline or self.closed:
                break
            await entity.wait_for_change(now, deadline, now + (deadline - loop.time()))
        messages = [self._message(entity, record) for record in records]
        if self.receive_mode is ServiceBusReceiveMode.RECEIVE_AND_DELETE:
            for record in records:
                entity.complete(record)
        if messages:
            self._last_sequence_number = messages[-1].sequence_number or 0
        return messages

    async def peek_messages(
        self, max_message_count: int = 1, *, sequence_number: int = 0, timeout: float | None = None
    ) -> list[ServiceBusReceivedMessage]:
        self.check_live()
        await self._open()
        self.bus.fault("peek")
        start = sequence_number or self._last_sequence_number + 1
        entity = self.entity
        group = self._session.lock.group if self._session and self._session.lock else None
        records = [
            record
            for record in entity.records.values()
            if record.seq >= start and (group is None or record.group is group)
        ][: min(max_message_count, self.bus.peek_page_size or max_message_count)]
        messages = [
            ServiceBusReceivedMessage(
                _delivered(record, dead_letter=entity.is_dead_letter),
                receiver=self,
                is_peeked_message=True,
                amqp_transport=PyamqpTransport,
            )
            for record in records
        ]
        if messages:
            self._last_sequence_number = messages[-1].sequence_number or 0
        return messages

    async def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        await self._settle(message, "complete")

    async def abandon_message(self, message: ServiceBusReceivedMessage) -> None:
        await self._settle(message, "abandon")

    async def dead_letter_message(
        self,
        message: ServiceBusReceivedMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None:
        await self._settle(message, "dead_letter", reason, error_description)

    async def renew_message_lock(
        self, message: ServiceBusReceivedMessage, *, timeout: float | None = None
    ) -> datetime:
        if self._session is not None:
            raise TypeError(
                "Renewing message lock is an invalid operation when working with sessions."
                "Please renew the session lock instead."
            )
        self.check_live()
        self._check_message_alive(message, "renew")
        self.bus.fault("renew_lock")
        now = self.bus.clock.now()
        self.queue.tick(now)
        record = self._record(message)
        until = self.entity.renew(record, now)
        message._expiry = to_datetime(until)
        return message._expiry

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.running = False
        session = self._session
        lock = None if session is None else session.lock
        if lock is not None and not lock.lost and not lock.closed:
            lock.closed = True
            queue = self.bus.queues.get(self.queue_name)
            if queue is not None:
                queue.entity.unlock(lock, self.bus.clock.now())

    def check_live(self) -> None:
        if self.closed:
            raise _shutdown_error()

    # -- internals --------------------------------------------------------------

    async def _open(self) -> None:
        """Attach: check the entity and the receiver kind, accept the session."""
        if self.running:
            return
        self.check_live()
        queue = self.queue
        if self.dead_letter:
            pass
        elif self._session is None:
            if queue.requires_session:
                raise service_error(ErrorCondition.NotAllowed, NEEDS_SESSION_RECEIVER)
        else:
            if not queue.requires_session:
                raise service_error(ErrorCondition.NotAllowed, NEEDS_PLAIN_RECEIVER)
            self.bus.fault("accept_session")
            await self._accept(queue, self._session)
        self.running = True

    async def _accept(self, queue: FakeQueue, session: FakeSession) -> None:
        entity = queue.entity
        if self.requested_session != NEXT_AVAILABLE_SESSION:
            group = entity.group_for(session.session_id)
            if not group.free:
                raise service_error(
                    ERROR_CODE_SESSION_CANNOT_BE_LOCKED,
                    f"The requested session '{session.session_id}' cannot be accepted. It may be "
                    "locked by another receiver.",
                )
            session.lock = entity.lock_group(group, self.bus.clock.now())
            return
        loop = asyncio.get_running_loop()
        wait = self.max_wait_time if self.max_wait_time is not None else 65.0
        deadline = loop.time() + wait
        while True:
            now = self.bus.clock.now()
            queue.tick(now)
            available = entity.take_group(now)
            if available is not None:
                session.lock = entity.lock_group(available, now)
                session._session_id = available.key
                return
            if loop.time() >= deadline or self.closed:
                raise service_error(
                    ERROR_CODE_TIMEOUT,
                    "The operation did not complete within the allotted timeout of "
                    f"{wait:g} seconds.",
                )
            await entity.wait_for_change(now, deadline, now + (deadline - loop.time()))

    def _take(
        self, entity: Entity, lock: SessionLock | None, now: float, limit: int
    ) -> list[Record]:
        records: list[Record] = []
        if lock is not None:
            group = lock.group
            while group.pending and len(records) < limit:
                record = group.pending[0]
                if record.visible_at > now:
                    break
                if entity.expire_if_due(record, now):
                    continue
                entity.deliver(record, now, holder=lock)
                records.append(record)
            return records
        while len(records) < limit:
            next_record = entity.take_next(now, plain=True, groups=False)
            if next_record is None:
                break
            entity.deliver(next_record, now)
            records.append(next_record)
        return records

    def _message(self, entity: Entity, record: Record) -> ServiceBusReceivedMessage:
        assert record.token is not None
        frame = TransferFrame(
            handle=0,
            delivery_id=next(self._delivery_ids),
            delivery_tag=uuid.UUID(hex=record.token).bytes_le,
            message_format=0,
            settled=self.receive_mode is ServiceBusReceiveMode.RECEIVE_AND_DELETE,
        )
        return ServiceBusReceivedMessage(
            _delivered(record, dead_letter=entity.is_dead_letter),
            receive_mode=self.receive_mode,
            receiver=self,
            frame=frame,
            amqp_transport=PyamqpTransport,
        )

    def _check_message_alive(self, message: ServiceBusReceivedMessage, action: str) -> None:
        # the SDK receiver's own checks, in its order
        if message._is_peeked_message:
            raise ValueError(
                f"The operation {action} is not supported for peeked messages."
                "Only messages received using receive methods in PEEK_LOCK mode can be settled."
            )
        if self.receive_mode is ServiceBusReceiveMode.RECEIVE_AND_DELETE:
            raise ValueError(
                f"The operation {action} is not supported in 'RECEIVE_AND_DELETE' receive mode."
            )
        if message._settled:
            raise MessageAlreadySettled(action=action)
        if not self.running:
            raise ValueError(
                f"Failed to {action} the message as the handler has already been shutdown."
                "Please use ServiceBusClient to create a new instance."
            )

    def _record(self, message: ServiceBusReceivedMessage) -> Record:
        """The in-flight record a message's lock token stands for (the service's lookup)."""
        token = message.lock_token
        record = None if token is None else self.entity.in_flight.get(uuid.UUID(str(token)).hex)
        lock = None if self._session is None else self._session.lock
        received_by: object = message._receiver
        if record is None or record.holder is not lock or received_by is not self:
            raise service_error(
                ERROR_CODE_MESSAGE_LOCK_LOST,
                "The lock supplied is invalid. Either the lock expired, or the message has "
                "already been removed from the queue.",
            )
        return record

    async def _settle(
        self,
        message: ServiceBusReceivedMessage,
        operation: str,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        self.check_live()
        if not isinstance(message, ServiceBusReceivedMessage):
            raise TypeError("Parameter 'message' must be of type ServiceBusReceivedMessage")
        self._check_message_alive(message, operation)
        now = self.bus.clock.now()
        expiry = message.locked_until_utc
        if self._session is None and expiry is not None and expiry.timestamp() <= now:
            raise MessageLockLostError(message="The lock on the message lock has expired.")
        self.bus.fault(operation)
        self.queue.tick(now)
        lock = None if self._session is None else self._session.lock
        if lock is not None and lock.lost:
            raise service_error(ERROR_CODE_SESSION_LOCK_LOST, "The session lock has expired.")
        record = self._record(message)
        entity = self.entity
        if operation == "complete":
            entity.complete(record)
        elif operation == "abandon":
            entity.release(record, now, delay=None)
        elif entity.is_dead_letter:
            raise service_error(
                ErrorCondition.NotAllowed, "Cannot dead-letter a message in a dead-letter queue."
            )
        else:
            entity.dead_letter(record, reason or "", description)
        message._settled = True
