"""The Azure Service Bus provider: the provider interface over azure-servicebus ``aio``.

One :class:`~azure.servicebus.aio.ServiceBusClient` per provider. Senders and
receivers are cached per queue (the dead-letter sub-queue has its own) and
closed by :meth:`AzureServiceBusProvider.aclose`; each accepted session is a
session receiver of its own, closed by its :class:`AzureSessionReceiver`.
Receipts carry the receiver that received the message, and settlement goes
through it, as Service Bus requires.

What the service does not offer directly:

* **Abandon with a delay.** Service Bus abandons at once. The provider keeps
  the message locked for the delay (renewing the lock of a non-session
  message as needed) and abandons it when the delay has passed, so the message
  keeps its place, its session order and its delivery count. The wait is a
  task the provider owns: :meth:`~AzureServiceBusProvider.aclose` abandons
  waiting messages at once. If the process dies meanwhile, the message
  reappears when its lock expires.
* **Purge.** Receive-and-delete from the dead-letter queue until it is empty
  (messages locked by someone else at that moment stay).
* **Which queues have sessions.** Service Bus refuses plain receivers on
  session-enabled queues and session receivers on the others. Unless
  ``session_queues`` says which queues are which, every queue reports
  ``NATIVE`` sessions and the provider learns from those refusals: a queue that
  refuses session receivers reports ``NONE`` from then on, and a plain receive
  on a queue that requires sessions returns nothing at its timeout (its
  messages are all in sessions), exactly like the in-memory provider's native
  mode.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.azure import AzureServiceBusProvider
    >>> config = qr.AzureServiceBusConfig(namespace="bus.servicebus.windows.net",
    ...                                   credential="managed_identity")
    >>> provider = AzureServiceBusProvider(config)   # connects on first use
    >>> provider.capabilities.max_batch_size, provider.capabilities.max_message_size
    (100, 258048)
    >>> import asyncio; asyncio.run(provider.aclose())
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    SessionCannotBeLockedError,
)
from azure.servicebus.exceptions import OperationTimeoutError as SdkOperationTimeoutError

from queue_runtime.clock import Clock, SystemClock, to_datetime
from queue_runtime.config import AzureServiceBusConfig
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
    Capabilities,
    ProviderBase,
    ProviderType,
    QueueInfo,
    SessionSupport,
)
from queue_runtime.telemetry import log_fields

from .batches import pack
from .connection import build_client, secret_values
from .errors import (
    SDK_ERRORS,
    refuses_plain_receivers,
    refuses_session_receivers,
    scrub,
    translate,
)
from .messages import MAX_DEAD_LETTER_TEXT, pack_description, to_received, to_service_bus
from .receivers import MIN_WAIT, Receiver, acquire
from .sdk import ReceiverSeam, SenderSeam, ServiceBusSeam
from .sessions import AzureSessionReceiver
from .settling import Delivery, abandon_later

__all__ = ["AzureServiceBusProvider", "AzureSessionReceiver", "create_provider"]

_log = logging.getLogger("queue_runtime.providers.azure")

MAX_BATCH_SIZE: Final = 100
"""Messages per send call (spec: Azure batches of at most 100)."""

ENVELOPE_RESERVE: Final = 4096
"""Bytes of ``max_message_size`` kept for the AMQP envelope: message id, session
id, correlation id and content type as AMQP properties, the encoding overhead of
each attribute, and batch framing. ``capabilities.max_message_size`` is the rest,
so a message the client lets through (body plus attributes) fits unless its
metadata is unusual (hundreds of attributes, very long ids); such a message fails
with MessageTooLargeError, measured on its encoded size, before anything is sent."""

PURGE_BATCH: Final = 100
PURGE_WAIT: Final = 1.0
"""Seconds a purge waits for more dead letters before it decides the DLQ is empty."""

_MIN_SESSION_WAIT: Final = 0.1
"""Shortest wait for "next available session" handed to the service."""


class AzureServiceBusProvider(ProviderBase):
    """Queues of one Service Bus namespace. Build it with
    :func:`queue_runtime.create_client` and an ``AzureServiceBusConfig``.

    ``client`` replaces the SDK client built from ``config`` (tests pass a fake
    with the same interface, see :mod:`queue_runtime.providers.azure.sdk`); the
    provider then owns and closes it.
    """

    def __init__(
        self,
        config: AzureServiceBusConfig,
        *,
        clock: Clock | None = None,
        client: ServiceBusSeam | None = None,
    ) -> None:
        if not isinstance(config, AzureServiceBusConfig):
            raise ConfigurationError("expected AzureServiceBusConfig", field="provider")
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._secrets = secret_values(config)
        self._credential: AsyncTokenCredential | None = None
        if client is None:
            built, self._credential = build_client(config)
            client = built  # mypy checks here that the real client fits the seam
        self._client: ServiceBusSeam = client
        reserve = min(ENVELOPE_RESERVE, config.max_message_size // 16)
        super().__init__(
            "azure",
            Capabilities(
                ProviderType.AZURE_SERVICE_BUS,
                MAX_BATCH_SIZE,
                config.max_message_size - reserve,
                config.max_delivery_count,
            ),
        )
        self._patterns = config.session_queue_patterns()
        self._senders: dict[str, SenderSeam] = {}
        self._receivers: dict[tuple[str, bool], Receiver] = {}
        self._sessions: set[AzureSessionReceiver] = set()
        self._delayed: set[asyncio.Task[None]] = set()
        self._requires_sessions: set[str] = set()
        self._refuses_sessions: set[str] = set()
        self._closed = False

    # -- the provider interface ---------------------------------------------

    def session_support(self, queue: QueueName) -> SessionSupport:
        """``NATIVE`` for session-enabled queues (all, unless configured or learned otherwise)."""
        if queue in self._refuses_sessions:
            return SessionSupport.NONE
        if self._patterns and not self._listed(queue):
            return SessionSupport.NONE
        return SessionSupport.NATIVE

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        """Send in order, as few SDK batches as their encoded size allows.

        Every message is encoded and checked against the size limit before the
        first batch goes out, so an oversize message fails the call with
        nothing sent.
        """
        self._check_open("send")
        if len(messages) > MAX_BATCH_SIZE:
            raise BatchTooLargeError(
                f"{len(messages)} messages in one call, the limit is {MAX_BATCH_SIZE}",
                operation="send",
                queue=queue,
            )
        outgoing = [to_service_bus(message) for message in messages]
        sender = self._sender(queue)
        try:
            parts = await pack(sender, queue, messages, outgoing, self.config.max_message_size)
            for part in parts:
                await sender.send_messages(part)
        except SDK_ERRORS as exc:
            await self._forget_missing(exc, queue)
            largest = max((message.size for message in messages), default=0)
            raise self._error(
                exc, "send", queue, size=largest, max_size=self.config.max_message_size
            ) from exc

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._check_open("receive")
        if queue in self._requires_sessions:
            # every message of a session-enabled queue belongs to a session
            await asyncio.sleep(max(0.0, timeout))
            return []
        return await self._receive(self._receiver(queue, False), queue, max_messages, timeout)

    async def complete(self, receipt: ReceiptHandle) -> None:
        delivery = self._delivery(receipt, "complete")
        try:
            await delivery.receiver.complete_message(delivery.message)
        except SDK_ERRORS as exc:
            raise self._error(exc, "complete", receipt.queue, delivery) from exc
        delivery.settled = True

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        """Make the message visible again, at once or (still locked meanwhile) after ``delay``."""
        delivery = self._delivery(receipt, "abandon")
        if delay:
            until = receipt.locked_until.timestamp()
            if delivery.session is None and until <= self.clock.now():
                raise InvalidReceiptError(
                    "the lock expired", operation="abandon", queue=receipt.queue
                )
            delivery.settled = True
            deadline = self.clock.now() + delay
            task = asyncio.create_task(
                abandon_later(delivery, deadline, until, self.clock, self._secrets)
            )
            self._delayed.add(task)
            task.add_done_callback(self._delayed.discard)
            if delivery.session is not None:
                delivery.session.hold(task)
            return
        try:
            await delivery.receiver.abandon_message(delivery.message)
        except SDK_ERRORS as exc:
            raise self._error(exc, "abandon", receipt.queue, delivery) from exc
        delivery.settled = True

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Dead-letter with ``reason``; ``properties`` travel packed into the description
        (the SDK takes none) and are read back as attributes of the dead letter."""
        delivery = self._delivery(receipt, "dead_letter")
        if delivery.dead_letter:
            raise InvalidReceiptError(
                "the message is already in the dead-letter queue",
                operation="dead_letter",
                queue=receipt.queue,
            )
        try:
            await delivery.receiver.dead_letter_message(
                delivery.message,
                reason=reason[:MAX_DEAD_LETTER_TEXT],
                error_description=pack_description(description, properties),
            )
        except SDK_ERRORS as exc:
            raise self._error(exc, "dead_letter", receipt.queue, delivery) from exc
        delivery.settled = True

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the message lock; for a session message, the session lock (which covers it)."""
        delivery = self._delivery(receipt, "renew_lock")
        try:
            if delivery.session is not None:
                until = await delivery.receiver.session.renew_lock()
            else:
                until = await delivery.receiver.renew_message_lock(delivery.message)
        except SDK_ERRORS as exc:
            raise self._error(exc, "renew_lock", receipt.queue, delivery) from exc
        receipt.extend(until)
        return until

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> AzureSessionReceiver | None:
        """Lock the named session, or the next one with messages; ``None`` if none in time."""
        self._check_open("accept_session")
        if self.session_support(queue) is SessionSupport.NONE:
            raise SessionsNotSupportedError(
                "this queue has no sessions", operation="accept_session", queue=queue
            )
        sdk = self._client.get_queue_receiver(
            queue,
            session_id=NEXT_AVAILABLE_SESSION if session_id is None else session_id,
            max_wait_time=max(timeout, _MIN_SESSION_WAIT) if session_id is None else None,
            prefetch_count=self.config.prefetch,
        )
        try:
            await sdk.__aenter__()
        except BaseException as exc:
            await self._close_quietly(sdk, "session receiver", queue)
            if not isinstance(exc, SDK_ERRORS):
                raise
            if session_id is None and isinstance(
                exc, SdkOperationTimeoutError | SessionCannotBeLockedError
            ):
                return None
            if refuses_session_receivers(exc):
                self._refuses_sessions.add(queue)
                raise SessionsNotSupportedError(
                    "the queue is not session-enabled", operation="accept_session", queue=queue
                ) from exc
            raise self._error(exc, "accept_session", queue) from exc
        session = AzureSessionReceiver(_SessionHost(self), queue, sdk)
        self._sessions.add(session)
        return session

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._check_open("receive_dead_letters")
        entry = self._receiver(queue, True)
        return await self._receive(
            entry, queue, max_messages, timeout, dead_letter=True, operation="receive_dead_letters"
        )

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        """Read up to ``max_messages`` dead letters from the oldest, without locking them."""
        self._check_open("peek_dead_letters")
        entry = self._receiver(queue, True)
        peeked: list[ServiceBusReceivedMessage] = []
        start = 1
        try:
            while len(peeked) < max_messages:
                page = await entry.sdk.peek_messages(
                    max_message_count=max_messages - len(peeked), sequence_number=start
                )
                if not page:
                    break
                peeked.extend(page)
                start = (page[-1].sequence_number or start) + 1
        except SDK_ERRORS as exc:
            await self._forget_missing(exc, queue)
            raise self._error(exc, "peek_dead_letters", queue) from exc
        now = to_datetime(self.clock.now())
        return [
            self._received(sb, queue, entry.sdk, None, dead_letter=True, now=now) for sb in peeked
        ]

    async def purge_dead_letters(self, queue: QueueName) -> int:
        """Receive-and-delete the DLQ until it stays empty for :data:`PURGE_WAIT` seconds."""
        self._check_open("purge_dead_letters")
        sdk = self._client.get_queue_receiver(
            queue,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
        )
        removed = 0
        try:
            await sdk.__aenter__()  # opening must not eat the first wait (see Receiver)
            while batch := await sdk.receive_messages(
                max_message_count=PURGE_BATCH, max_wait_time=PURGE_WAIT
            ):
                removed += len(batch)
        except SDK_ERRORS as exc:
            raise self._error(exc, "purge_dead_letters", queue) from exc
        finally:
            await self._close_quietly(sdk, "purge receiver", queue)
        return removed

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """Check that ``queue`` is reachable by peeking one message of its DLQ.

        A peek neither locks nor consumes, and works with Listen rights on
        session-enabled queues too (a dead-letter queue never requires
        sessions). Counts need the management API (Manage rights), which the
        provider does not use, so every count is ``None``.
        """
        await self.peek_dead_letters(queue, 1)
        return QueueInfo()

    async def aclose(self) -> None:
        """Abandon messages waiting out a delay, close sessions, receivers, senders, client.

        Idempotent; later calls fail with :class:`QueueError`.
        """
        if self._closed:
            return
        self._closed = True
        delayed = list(self._delayed)
        for task in delayed:
            task.cancel()
        await asyncio.gather(*delayed, return_exceptions=True)
        for session in list(self._sessions):
            await session.close()
        for (queue, _), entry in list(self._receivers.items()):
            await self._close_quietly(entry.sdk, "receiver", queue)
        for queue, sender in list(self._senders.items()):
            await self._close_quietly(sender, "sender", queue)
        self._receivers.clear()
        self._senders.clear()
        await self._close_quietly(self._client, "client", "")
        if self._credential is not None:
            await self._close_quietly(self._credential, "credential", "")

    # -- beyond the interface -----------------------------------------------

    async def schedule_messages(
        self, queue: str, messages: Sequence[Message], at: datetime
    ) -> list[int]:
        """Schedule ``messages`` for ``at``; returns their sequence numbers (to cancel them).

        ``QueueClient.schedule_message`` does not need this (it sends with a
        scheduled enqueue time); use it when you may want to cancel.
        """
        name = QueueName(queue)
        self._check_open("schedule")
        if at.tzinfo is None:
            raise ValidationError("must be a timezone-aware datetime", field="at")
        outgoing = [to_service_bus(message) for message in messages]
        try:
            return list(await self._sender(name).schedule_messages(outgoing, at))
        except SDK_ERRORS as exc:
            await self._forget_missing(exc, name)
            raise self._error(exc, "schedule", name) from exc

    async def cancel_scheduled_messages(self, queue: str, sequence_numbers: Sequence[int]) -> None:
        """Cancel scheduled messages that have not been enqueued yet."""
        name = QueueName(queue)
        self._check_open("cancel_scheduled")
        try:
            await self._sender(name).cancel_scheduled_messages(list(sequence_numbers))
        except SDK_ERRORS as exc:
            raise self._error(exc, "cancel_scheduled", name) from exc

    def __repr__(self) -> str:
        auth = "connection string" if self.config.connection_string else self.config.credential
        return f"AzureServiceBusProvider(id={self._id!r}, auth={auth!r})"

    # -- internals ------------------------------------------------------------

    def _listed(self, queue: str) -> bool:
        return any(fnmatch.fnmatchcase(queue, pattern) for pattern in self._patterns)

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise QueueError("the Azure Service Bus provider is closed", operation=operation)

    def _error(
        self,
        exc: BaseException,
        operation: str,
        queue: str,
        delivery: Delivery | None = None,
        *,
        size: int | None = None,
        max_size: int | None = None,
    ) -> QueueError:
        message_id = None if delivery is None else delivery.message.message_id
        error = translate(
            exc,
            operation=operation,
            queue=queue,
            message_id=message_id,
            secrets=self._secrets,
            size=size,
            max_size=max_size,
        )
        if delivery is None or operation not in ("complete", "abandon", "dead_letter"):
            return error
        if error.transient:
            delivery.uncertain = operation
        elif (
            type(error) is InvalidReceiptError
            and delivery.uncertain == operation
            and self._session_holds(delivery)
        ):
            # a session message has no lock of its own: with the session still ours,
            # "lock lost" means the earlier attempt settled it and only its answer was lost
            return InvalidReceiptError(
                f"the message was already settled with this receipt ({operation})",
                settled=operation,
                operation=operation,
                queue=queue,
                message_id=message_id,
            )
        return error

    def _session_holds(self, delivery: Delivery) -> bool:
        """True while the native session ``delivery`` came from is still locked by us."""
        session = delivery.session
        return (
            session is not None
            and not session.closed
            and session.locked_until.timestamp() > self.clock.now()
        )

    def _sender(self, queue: str) -> SenderSeam:
        sender = self._senders.get(queue)
        if sender is None:
            sender = self._senders[queue] = self._client.get_queue_sender(queue)
        return sender

    def _receiver(self, queue: str, dead_letter: bool) -> Receiver:
        entry = self._receivers.get((queue, dead_letter))
        if entry is None:
            sdk = self._client.get_queue_receiver(
                queue,
                sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letter else None,
                prefetch_count=self.config.prefetch,
            )
            entry = self._receivers[(queue, dead_letter)] = Receiver(sdk)
        return entry

    async def _forget_missing(self, exc: BaseException, queue: str) -> None:
        """Drop cached handlers of a queue the service says does not exist."""
        if not isinstance(exc, MessagingEntityNotFoundError):
            return
        sender = self._senders.pop(queue, None)
        if sender is not None:
            await self._close_quietly(sender, "sender", queue)
        for dead_letter in (False, True):
            entry = self._receivers.pop((queue, dead_letter), None)
            if entry is not None:
                await self._close_quietly(entry.sdk, "receiver", queue)

    async def _close_quietly(self, handler: Any, what: str, queue: str) -> None:
        """Close an SDK object; a failure is logged, never raised (closing is best effort)."""
        try:
            await handler.close()
        except Exception as exc:
            _log.warning(
                "closing the %s of queue %r failed: %s: %s",
                what,
                queue,
                type(exc).__name__,
                scrub(str(exc), self._secrets),
                extra=log_fields("close", queue),
            )

    async def _receive(
        self,
        entry: Receiver,
        queue: QueueName,
        max_messages: int,
        timeout: float,
        *,
        dead_letter: bool = False,
        operation: str = "receive",
    ) -> list[ReceivedMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if not await acquire(entry.lock, timeout):
            return []
        try:
            if not entry.opened:
                await entry.sdk.__aenter__()
                entry.opened = True
            wait = max(deadline - loop.time(), MIN_WAIT)
            batch = await entry.sdk.receive_messages(
                max_message_count=max_messages, max_wait_time=wait
            )
        except SDK_ERRORS as exc:
            if not dead_letter and refuses_plain_receivers(exc):
                _log.info(
                    "queue %r requires sessions: plain receives return nothing, use accept_session",
                    queue,
                    extra=log_fields("receive", queue),
                )
                self._requires_sessions.add(queue)
                self._receivers.pop((queue, False), None)
                await self._close_quietly(entry.sdk, "receiver", queue)
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                return []
            await self._forget_missing(exc, queue)
            raise self._error(exc, operation, queue) from exc
        finally:
            entry.lock.release()
        now = to_datetime(self.clock.now())
        return [
            self._received(sb, queue, entry.sdk, None, dead_letter=dead_letter, now=now)
            for sb in batch
        ]

    def _received(
        self,
        sb: ServiceBusReceivedMessage,
        queue: QueueName,
        receiver: ReceiverSeam,
        session: AzureSessionReceiver | None,
        *,
        dead_letter: bool,
        now: datetime,
    ) -> ReceivedMessage:
        lock_token = sb.lock_token
        # the SDK reports no message lock for session messages: the session lock covers them
        locked_until = session.locked_until if session is not None else sb.locked_until_utc or now
        native: Delivery | None = None
        if lock_token is None:
            token = f"peek-{sb.sequence_number}"
        else:
            token = str(lock_token)
            native = Delivery(
                queue=queue,
                dead_letter=dead_letter,
                token=token,
                receiver=receiver,
                message=sb,
                session=session,
                lock_span=max(0.0, (locked_until - now).total_seconds()),
            )
        receipt = ReceiptHandle(
            provider_id=self._id,
            queue=queue,
            token=token,
            locked_until=locked_until,
            dead_letter=dead_letter,
            native=native,
        )
        return to_received(sb, receipt=receipt, delivered_at=now, dead_letter=dead_letter)

    def _delivery(self, receipt: ReceiptHandle, operation: str) -> Delivery:
        """The delivery a receipt stands for, or InvalidReceiptError."""
        if not isinstance(receipt, ReceiptHandle) or receipt.provider_id != self._id:
            raise InvalidReceiptError(
                "the receipt was not issued by this provider", operation=operation
            )
        self._check_open(operation)
        delivery = receipt.native
        if (
            not isinstance(delivery, Delivery)
            or delivery.queue != receipt.queue
            or delivery.dead_letter != receipt.dead_letter
            or delivery.token != receipt.token
        ):
            raise InvalidReceiptError(
                "the receipt does not belong to a message of this queue",
                operation=operation,
                queue=receipt.queue,
            )
        if delivery.settled:
            raise InvalidReceiptError(
                "the message was already settled", operation=operation, queue=receipt.queue
            )
        if delivery.session is not None and delivery.session.closed:
            raise InvalidReceiptError(
                f"session {delivery.session.session_id!r} was closed before the message "
                "was settled",
                operation=operation,
                queue=receipt.queue,
            )
        return delivery


def create_provider(config: Any, clock: Clock) -> AzureServiceBusProvider:
    """Registry entry point: build the provider for an :class:`AzureServiceBusConfig`."""
    return AzureServiceBusProvider(config, clock=clock)


class _SessionHost:
    """The provider as its session receivers see it (:class:`.sessions.SessionHost`)."""

    __slots__ = ("_provider",)

    def __init__(self, provider: AzureServiceBusProvider) -> None:
        self._provider = provider

    def now(self) -> datetime:
        return to_datetime(self._provider.clock.now())

    def check_open(self, operation: str) -> None:
        self._provider._check_open(operation)

    def error(self, exc: BaseException, operation: str, queue: QueueName) -> QueueError:
        return self._provider._error(exc, operation, queue)

    def received(
        self,
        sb: ServiceBusReceivedMessage,
        queue: QueueName,
        sdk: ReceiverSeam,
        session: AzureSessionReceiver,
        now: datetime,
    ) -> ReceivedMessage:
        return self._provider._received(sb, queue, sdk, session, dead_letter=False, now=now)

    async def closed(self, session: AzureSessionReceiver, sdk: ReceiverSeam) -> None:
        self._provider._sessions.discard(session)
        await self._provider._close_quietly(sdk, "session receiver", session.queue)
