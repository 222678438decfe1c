"""The client: one API over every provider, with what no provider should repeat.

:class:`QueueClient` validates names and messages, splits batches to the
provider's limits, retries transient failures with the configured
:class:`~queue_runtime.retry.RetryPolicy`, fails fast through a circuit
breaker when the provider keeps failing, and bounds every call with a
timeout. Providers only translate.

With ``QueueConfig(crypto=CryptoConfig(enabled=True))`` and a
:class:`~queue_runtime.crypto.KeyProvider` (``keys=``), bodies are encrypted on
send and decrypted on receive, transparently (docs/design.md#encryption). A message that cannot
be decrypted (or a plaintext one under ``PlaintextPolicy.REJECT``) is never
dropped and never fails its batch: it is returned in place as an
:class:`~queue_runtime.crypto.UndecryptableMessage` carrying the error and its
receipt, for the caller to dead-letter.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> str:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("orders", qr.Message(b"{}", session_id="o/r/pull/1"))
    ...         session = await client.accept_session("orders", timeout=1.0)
    ...         assert session is not None
    ...         async with session:
    ...             msg = await session.receive_message(timeout=1.0)
    ...             assert msg is not None
    ...             await session.complete_message(msg.receipt)
    ...             return session.session_id
    >>> asyncio.run(main())
    'o/r/pull/1'
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from queue_runtime.circuit import CircuitBreaker
from queue_runtime.clock import Clock, SystemClock
from queue_runtime.config import ProviderConfig, QueueConfig, load_config
from queue_runtime.crypto import EnvKeyProvider, KeyProvider, MessageCrypto, UndecryptableMessage
from queue_runtime.errors import (
    ConfigurationError,
    InvalidReceiptError,
    MessageTooLargeError,
    OperationTimeoutError,
    QueueError,
    SessionLockedError,
    SessionsNotSupportedError,
    ValidationError,
)
from queue_runtime.messages import (
    Message,
    MessageId,
    QueueName,
    ReceiptHandle,
    ReceivedMessage,
    SessionId,
)
from queue_runtime.provider import (
    ProviderType,
    QueueProvider,
    SessionProvider,
    SessionReceiver,
    SessionSupport,
    SupportsCompleteMany,
    create_provider,
)
from queue_runtime.retry import RetryPolicy
from queue_runtime.telemetry import Telemetry, activate, error_type, log_fields

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["REQUEUE_COUNT_ATTRIBUTE", "QueueClient", "SessionClient", "create_client"]

T = TypeVar("T")

logger = logging.getLogger("queue_runtime.client")

NO_RETRY = RetryPolicy.never()
"""For calls that must not be repeated (a session receive: see its docstring)."""

REQUEUE_COUNT_ATTRIBUTE = "queue_runtime.requeue_count"
"""Attribute a requeued dead letter carries: how often it was requeued."""

DEFAULT_RECEIVE_BATCH = 10

SESSION_LOCKED_RETRY = 0.5
"""Seconds between tries of a named session another consumer holds (within the timeout)."""


async def create_client(
    config: QueueConfig | ProviderConfig | None = None,
    *,
    clock: Clock | None = None,
    keys: KeyProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> QueueClient:
    """Build a client for ``config``.

    ``config`` may be a full :class:`QueueConfig`, just a provider config
    (``InMemoryConfig()``, ``AwsSqsConfig(...)``, ...), or ``None`` to load it
    from ``QUEUE_RUNTIME_CONFIG``/``QUEUE_PROVIDER`` and the environment
    (:func:`~queue_runtime.config.load_config`). Invalid configuration fails
    here with :class:`~queue_runtime.errors.ConfigurationError`.

    When ``config.crypto.enabled`` and no ``keys`` are given, the keys are read
    from ``QUEUE_RUNTIME_ENCRYPTION_KEYS``
    (:meth:`~queue_runtime.crypto.EnvKeyProvider.from_env`).

    Spans and metrics go to the global OpenTelemetry providers unless
    ``tracer_provider``/``meter_provider`` are given (:mod:`queue_runtime.telemetry`).
    """
    if config is None:
        config = load_config()
    elif not isinstance(config, QueueConfig):
        config = QueueConfig(provider=config)
    if config.crypto.enabled and keys is None:
        keys = EnvKeyProvider.from_env()
    clock = clock or SystemClock()
    return QueueClient(
        create_provider(config.provider, clock),
        config,
        clock=clock,
        keys=keys,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


class QueueClient:
    """Send, receive and settle messages; accept sessions; manage the DLQ.

    Names and ids may be given as plain ``str``; they are validated. Timeouts
    are float seconds; ``None`` means the configured default.

    ``keys`` is required when ``config.crypto.enabled`` and refused otherwise
    (so that keys given to a client that would not use them cannot go unnoticed).

    Every call is traced and measured through OpenTelemetry (:attr:`telemetry`);
    without an SDK that costs one to two microseconds per call.
    """

    def __init__(
        self,
        provider: QueueProvider,
        config: QueueConfig | None = None,
        *,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._provider = provider
        self.config = config or QueueConfig()
        self._clock: Clock = clock or getattr(provider, "clock", None) or SystemClock()
        self.circuit = CircuitBreaker(self.config.circuit_breaker, self._clock)
        """The provider's circuit breaker (state visible for health checks)."""
        self.telemetry = Telemetry(
            provider.capabilities.provider_type.value,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        """Spans and metrics of this client; the actors record processing through it."""
        self.crypto: MessageCrypto | None = None
        """The encryption engine (``None`` when encryption is off); ``crypto.stats`` counts."""
        if self.config.crypto.enabled:
            if keys is None:
                raise ConfigurationError(
                    "encryption is enabled but the client has no key provider (keys=...)",
                    field="crypto.enabled",
                )
            self.crypto = MessageCrypto(keys, self.config.crypto, self._clock)
        elif keys is not None:
            raise ConfigurationError(
                "keys were given but encryption is disabled; set crypto.enabled",
                field="crypto.enabled",
            )
        self._closed = False

    # -- capabilities -----------------------------------------------------------

    @property
    def provider(self) -> QueueProvider:
        return self._provider

    @property
    def clock(self) -> Clock:
        """The clock the client (and its provider) tells time by."""
        return self._clock

    @property
    def provider_type(self) -> ProviderType:
        return self._provider.capabilities.provider_type

    @property
    def max_batch_size(self) -> int:
        """Most messages one provider request carries (the client splits larger sends)."""
        return self._provider.capabilities.max_batch_size

    @property
    def max_message_size(self) -> int:
        """Largest message (body plus attributes) in bytes."""
        return self._provider.capabilities.max_message_size

    @property
    def max_delivery_count(self) -> int:
        """Deliveries after which the provider dead-letters a message (its own limit)."""
        return self._provider.capabilities.max_delivery_count

    def session_support(self, queue: str) -> SessionSupport:
        """How ``queue`` orders messages by session (native, emulated or none)."""
        if not isinstance(self._provider, SessionProvider):
            return SessionSupport.NONE
        return self._provider.session_support(QueueName(queue))

    # -- sending ----------------------------------------------------------------

    async def send_message(self, queue: str, message: Message) -> MessageId:
        """Send one message; returns its id."""
        [message_id] = await self.send_messages(queue, [message])
        return message_id

    async def send_messages(self, queue: str, messages: Iterable[Message]) -> list[MessageId]:
        """Send messages in order, split into provider-sized batches; returns their ids.

        Every message is checked before the first request, so an oversize
        message fails the call with nothing sent. A failure part-way raises
        after the earlier batches were sent; sending them all again is safe
        for at-least-once consumers (and SQS FIFO deduplicates by message id).
        With encryption on, bodies are encrypted first and the size limits
        apply to the encrypted messages.
        """
        name = QueueName(queue)
        batch = list(messages)
        with self.telemetry.send(name, batch):
            if self.crypto is not None:
                for message in batch:
                    if not isinstance(message, Message):
                        self._check_messages(name, [message])  # raises the ValidationError
                batch = [await self.crypto.encrypt_message(message) for message in batch]
            batch = self.telemetry.inject(batch)  # before the size checks: they count it
            self._check_messages(name, batch)
            provider_check = getattr(self._provider, "check_messages", None)
            if provider_check is not None:  # a provider's own, exact rules (optional hook)
                provider_check(name, batch)
            for chunk in self._chunks(batch):
                try:
                    await self._call(
                        "send", name, functools.partial(self._provider.send, name, chunk)
                    )
                except Exception as error:
                    self.telemetry.count_sent(name, len(chunk), error)
                    raise
                self.telemetry.count_sent(name, len(chunk))
                _log_each("sent a message", "send", name, chunk)
        return [MessageId(message.message_id) for message in batch]

    async def schedule_message(self, queue: str, message: Message, at: datetime) -> MessageId:
        """Send ``message`` so that it becomes visible at ``at`` (aware datetime)."""
        return await self.send_message(queue, replace(message, scheduled_enqueue_time=at))

    # -- receiving and settling ---------------------------------------------------

    async def receive_message(
        self, queue: str, timeout: float | None = None
    ) -> ReceivedMessage | None:
        """Wait up to ``timeout`` seconds for one message; ``None`` if none came."""
        batch = await self.receive_messages(queue, 1, timeout)
        return batch[0] if batch else None

    async def receive_messages(
        self, queue: str, max_messages: int = DEFAULT_RECEIVE_BATCH, timeout: float | None = None
    ) -> list[ReceivedMessage]:
        """Wait up to ``timeout`` seconds for up to ``max_messages`` messages (peek-lock).

        Returns an empty list when the timeout passes; cancellable. More than
        the provider's batch limit is capped at the limit.
        """
        name = QueueName(queue)
        count = self._receive_count(max_messages)
        wait = self._receive_timeout(timeout)
        return await self._receive(
            "receive", name, lambda: self._provider.receive(name, count, wait), wait
        )

    async def _receive(
        self,
        operation: str,
        queue: QueueName,
        call: Callable[[], Awaitable[list[ReceivedMessage]]],
        wait: float,
        *,
        session_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[ReceivedMessage]:
        """One receive call with its span, decryption, counting and logs."""
        with self.telemetry.receive(queue, session_id) as receiving:
            batch = await self._call(operation, queue, call, timeout=wait, retry=retry)
            batch = await self._decrypt_all(batch)
            receiving.received(batch)
        self.telemetry.count_received(queue, len(batch))
        _log_each("received a message", "receive", queue, batch)
        return batch

    async def complete_message(self, receipt: ReceiptHandle) -> None:
        """Remove the message for good. Raises InvalidReceiptError if the lock was lost."""
        await self._settle(
            "complete", receipt, lambda: self._provider.complete(receipt), "completed a message"
        )

    async def complete_messages(
        self,
        receipts: Sequence[ReceiptHandle],
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> list[QueueError | None]:
        """Complete several messages of one queue in as few requests as the provider allows.

        Returns one entry per receipt: ``None`` if it was completed, else the
        error that kept it (``InvalidReceiptError`` if its lock was lost). A
        receipt whose batch entry failed transiently is retried on its own, with
        the client's retry policy. Providers without batch completion (Azure)
        complete the messages one by one, side by side.

        Each message gets its own ``complete`` span, a child of
        ``contexts[i]`` for ``receipts[i]`` (OpenTelemetry contexts; default:
        the current context): code that gathers the completions of many
        messages into one call passes each message's processing context.

        Example:
            >>> import asyncio
            >>> import queue_runtime as qr
            >>> async def main() -> list[qr.QueueError | None]:
            ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
            ...         await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2")])
            ...         batch = await client.receive_messages("jobs", 10, timeout=1.0)
            ...         return await client.complete_messages([m.receipt for m in batch])
            >>> asyncio.run(main())
            [None, None]
        """
        if not receipts:
            return []
        queue = receipts[0].queue
        if any(receipt.queue != queue for receipt in receipts):
            raise ValidationError("receipts of one queue only", field="receipts")
        if contexts is not None and len(contexts) != len(receipts):
            raise ValidationError("one context per receipt", field="contexts")
        provider = self._provider
        if not isinstance(provider, SupportsCompleteMany):
            return await self._complete_each(receipts, contexts)
        with self.telemetry.settle_each("complete", queue, receipts, contexts) as settling:
            attempt = _Attempt(lambda: provider.complete_many(receipts))
            results = list(await self._call("complete", queue, attempt))
            if attempt.uncertain:  # an attempt whose answer was lost may have completed some
                results = [None if _already("complete", error) else error for error in results]
            retry = [i for i, error in enumerate(results) if error is not None and error.transient]
            if retry:  # the rest of the batch is done: only these go again, each on its own
                again = await asyncio.gather(
                    *(self._complete_again(receipts[i]) for i in retry), return_exceptions=True
                )
                for position, outcome in zip(retry, again, strict=True):
                    result = _settle_result(outcome)
                    # a transient batch entry may have been deleted after all
                    results[position] = None if _already("complete", result) else result
            settling.ended(results)
        completed = results.count(None)
        if completed:  # one recording for the batch: an SDK's cost is per recording
            self.telemetry.count_settled("complete", receipts[0], count=completed)
        if logger.isEnabledFor(logging.DEBUG):
            for receipt, result in zip(receipts, results, strict=True):
                if result is None:
                    _log_settled("completed a message", "complete", receipt)
        return results

    async def _complete_again(self, receipt: ReceiptHandle) -> None:
        """Retry one entry of a batch completion (inside that message's span)."""
        await self._call("complete", receipt.queue, lambda: self._provider.complete(receipt))

    async def _complete_each(
        self, receipts: Sequence[ReceiptHandle], contexts: Sequence[Context | None] | None
    ) -> list[QueueError | None]:
        """Complete each message on its own, side by side; per receipt, None or its error."""
        parents = contexts if contexts is not None else [None] * len(receipts)
        outcomes = await asyncio.gather(
            *(self._complete_in(r, parent) for r, parent in zip(receipts, parents, strict=True)),
            return_exceptions=True,
        )
        return [_settle_result(outcome) for outcome in outcomes]

    async def _complete_in(self, receipt: ReceiptHandle, context: Context | None) -> None:
        with activate(context):  # the message's span goes under its own context
            await self.complete_message(receipt)

    async def abandon_message(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        """Make the message visible again, at once or after ``delay`` seconds."""
        if delay is not None and delay < 0:
            raise ValidationError("must not be negative", field="delay")
        await self._settle(
            "abandon",
            receipt,
            lambda: self._provider.abandon(receipt, delay),
            "abandoned a message",
        )

    async def dead_letter_message(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Move the message to the DLQ with ``reason`` (short, e.g. an error type) and detail.

        ``properties`` are extra string attributes of the dead letter (the bot
        puts its failure record there); every provider returns them in the
        ``attributes`` of messages read from the DLQ. Providers may drop the
        largest ones if the dead letter would not fit their size limits.
        """
        if not reason:
            raise ValidationError("must not be empty", field="reason")
        extra: dict[str, str] | None = None
        if properties:
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
                raise ValidationError("names and values must be strings", field="properties")
            extra = dict(properties)
        # the reason only as an error type: it is free text, the description even more so
        await self._settle(
            "dead_letter",
            receipt,
            lambda: self._provider.dead_letter(receipt, reason, description, extra),
            f"dead-lettered a message ({error_type(reason)})",
            reason,
        )

    async def _settle(
        self,
        operation: str,
        receipt: ReceiptHandle,
        call: Callable[[], Awaitable[None]],
        logged: str,
        reason: str | None = None,
    ) -> None:
        """One settle call with its span, counting and log line."""
        with self.telemetry.settle(operation, receipt.queue, dead_letter=receipt.dead_letter):
            attempt = _Attempt(call)
            try:
                await self._call(operation, receipt.queue, attempt)
            except InvalidReceiptError as error:
                if not (attempt.uncertain and _already(operation, error)):
                    raise
                # an earlier attempt took effect and only its answer was lost
        self.telemetry.count_settled(operation, receipt, reason)
        _log_settled(logged, operation, receipt)

    async def renew_message_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the message's lock; returns the new expiry."""
        return await self._call(
            "renew_lock", receipt.queue, lambda: self._provider.renew_lock(receipt)
        )

    # -- sessions ---------------------------------------------------------------

    async def accept_session(
        self, queue: str, session_id: str | None = None, timeout: float | None = None
    ) -> SessionClient | None:
        """Lock the named session, or the next one with messages waiting.

        Returns ``None`` when no session became available within ``timeout``.
        A named session held by another consumer is tried again until
        ``timeout`` (the holder may be about to close it); if it is still held
        then, :class:`~queue_runtime.errors.SessionLockedError` is raised.
        ``timeout=0`` asks once. Contention is not a provider failure: it
        never counts against the circuit breaker.

        Example:
            >>> import asyncio
            >>> import queue_runtime as qr
            >>> async def main() -> str:
            ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
            ...         holder = await client.accept_session("orders", "o/r/pull/1", timeout=0)
            ...         try:
            ...             await client.accept_session("orders", "o/r/pull/1", timeout=0.1)
            ...         except qr.SessionLockedError:
            ...             return f"locked; circuit {client.circuit.state.value}"
            ...         finally:
            ...             await holder.close()
            ...         return "accepted twice"
            >>> asyncio.run(main())
            'locked; circuit closed'
        """
        name = QueueName(queue)
        wanted = None if session_id is None else SessionId(session_id)
        provider = self._provider
        if not isinstance(provider, SessionProvider) or (
            provider.session_support(name) is SessionSupport.NONE
        ):
            raise SessionsNotSupportedError(
                "this queue has no sessions", operation="accept_session", queue=name
            )
        wait = self._receive_timeout(timeout)
        deadline = self._clock.now() + wait
        while True:
            try:
                receiver = await self._call(
                    "accept_session",
                    name,
                    lambda: provider.accept_session(name, wanted, wait),
                    timeout=wait,
                )
                break
            except SessionLockedError:
                left = deadline - self._clock.now()
                if wanted is None or left <= 0:
                    raise
                await self._clock.sleep(min(SESSION_LOCKED_RETRY, left))
        return None if receiver is None else SessionClient(self, name, receiver)

    # -- dead-letter queue ------------------------------------------------------

    async def receive_dead_letters(
        self, queue: str, max_messages: int = DEFAULT_RECEIVE_BATCH, timeout: float | None = None
    ) -> list[ReceivedMessage]:
        """Peek-lock messages from ``queue``'s DLQ; completing one removes it from the DLQ."""
        name = QueueName(queue)
        count = self._receive_count(max_messages)
        wait = self._receive_timeout(timeout)
        batch = await self._call(
            "receive_dead_letters",
            name,
            lambda: self._provider.receive_dead_letters(name, count, wait),
            timeout=wait,
        )
        return await self._decrypt_all(batch, dead_letter=True)

    async def peek_dead_letters(self, queue: str, max_messages: int = 100) -> list[ReceivedMessage]:
        """Read up to ``max_messages`` DLQ messages with their reasons, without locking them."""
        name = QueueName(queue)
        batch = await self._call(
            "peek_dead_letters", name, lambda: self._provider.peek_dead_letters(name, max_messages)
        )
        return await self._decrypt_all(batch, dead_letter=True, locked=False)

    async def requeue_dead_letters(
        self,
        queue: str,
        *,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
        max_messages: int | None = None,
        timeout: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Send dead letters back to ``queue``; returns how many were requeued.

        Each message is sent first (same id, body, session id and attributes,
        plus ``queue_runtime.requeue_count``) and removed from the DLQ only
        after the send succeeded: a crash in between duplicates, never loses.
        Messages the ``predicate`` rejects stay in the DLQ, and so do messages
        that cannot be decrypted. With encryption on, requeued messages are
        encrypted afresh (new nonce and timestamp). ``progress``, if given, is
        called with the running count after each message is requeued. If
        removing a message from the DLQ fails after its send, the error
        propagates and the message is given back to the DLQ (duplicated, not lost).
        """
        name = QueueName(queue)

        async def requeue(message: ReceivedMessage) -> bool:
            if isinstance(message, UndecryptableMessage) or (
                predicate is not None and not predicate(message)
            ):
                return False
            count = int(message.attributes.get(REQUEUE_COUNT_ATTRIBUTE, "0")) + 1
            copy = message.to_message(
                attributes={**message.attributes, REQUEUE_COUNT_ATTRIBUTE: str(count)}
            )
            await self.send_message(name, copy)
            await self.complete_message(message.receipt)  # only after the send succeeded
            return True

        return await self.walk_dead_letters(
            name, requeue, max_messages=max_messages, timeout=timeout, progress=progress
        )

    async def walk_dead_letters(
        self,
        queue: str,
        settle: Callable[[ReceivedMessage], Awaitable[bool]],
        *,
        max_messages: int | None = None,
        timeout: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Receive ``queue``'s dead letters once each and let ``settle`` decide.

        ``settle(message)`` returns True when it removed the message from the
        DLQ (counted, and reported to ``progress``) and False to leave it
        there. Messages left there — or whose ``settle`` raised — are held until
        the walk ends (so none is seen twice) and then given back at once.
        Stops after ``max_messages`` settled, or when no new dead letter came
        within ``timeout``. Returns how many were settled.
        """
        name = QueueName(queue)
        settled = 0
        kept: list[ReceivedMessage] = []
        seen: set[str] = set()
        try:
            while max_messages is None or settled < max_messages:
                want = DEFAULT_RECEIVE_BATCH
                if max_messages is not None:
                    want = min(want, max_messages - settled)
                batch = await self.receive_dead_letters(name, want, timeout)
                fresh = [m for m in batch if m.message_id not in seen]
                if not fresh:
                    kept.extend(batch)
                    break
                for message in fresh:
                    seen.add(message.message_id)
                    try:
                        done = await settle(message)
                    except BaseException:
                        kept.append(message)  # e.g. sent but still in the DLQ: a duplicate
                        raise
                    if not done:
                        kept.append(message)
                        continue
                    settled += 1
                    if progress is not None:
                        progress(settled)
        finally:
            for message in kept:
                # if this fails, its lock runs out and it is visible in the DLQ again
                with contextlib.suppress(QueueError):
                    await self.abandon_message(message.receipt)
        return settled

    async def purge_dead_letters(self, queue: str) -> int:
        """Delete everything in ``queue``'s DLQ; returns how many messages were removed."""
        name = QueueName(queue)
        return await self._call(
            "purge_dead_letters", name, lambda: self._provider.purge_dead_letters(name)
        )

    # -- lifecycle ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the provider and its connections. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._provider.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"QueueClient(provider={self.provider_type.value})"

    # -- internals ----------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        queue: str,
        call: Callable[[], Awaitable[T]],
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> T:
        """Run one provider call with the circuit breaker, a timeout and retries.

        Each attempt's duration goes to ``messaging.client.operation.duration``;
        each retry is counted and logged.
        """
        if self._closed:
            raise QueueError("the client is closed", operation=operation, queue=queue)
        limit = self.config.timeouts.send + (timeout or 0.0)
        retry = retry or self.config.retry
        telemetry = self.telemetry
        circuit = self.circuit
        attempt = 1
        while True:
            trial = circuit.admit(operation=operation, queue=queue)
            started = time.perf_counter()
            try:
                try:
                    async with asyncio.timeout(limit) as deadline:
                        result = await call()
                finally:
                    circuit.release(trial)  # its outcome is recorded below, in the same step
            except TimeoutError as exc:
                if not deadline.expired():
                    telemetry.record_operation(operation, queue, time.perf_counter() - started, exc)
                    raise
                error: QueueError = OperationTimeoutError(
                    f"no answer within {limit:g} s", operation=operation, queue=queue
                )
                error.__cause__ = exc
            except QueueError as exc:
                error = exc.with_context(operation=operation, queue=queue)
            except Exception as exc:  # a provider bug: measured, then it propagates
                telemetry.record_operation(operation, queue, time.perf_counter() - started, exc)
                raise
            else:
                telemetry.record_operation(operation, queue, time.perf_counter() - started)
                if circuit.record_success():
                    logger.info("provider circuit closed again", extra=log_fields(operation, queue))
                return result
            telemetry.record_operation(operation, queue, time.perf_counter() - started, error)
            if isinstance(error, SessionLockedError):
                raise error  # contention, not a fault: not counted, and retried by accept_session
            if error.transient and circuit.record_failure():
                logger.warning(
                    "provider circuit opened after repeated failures (%s)",
                    error_type(error),
                    extra=log_fields(operation, queue),
                )
            if not retry.should_retry(error, attempt):
                raise error
            delay = retry.delay(attempt, error)
            telemetry.count_retry(operation, queue, error)
            logger.warning(
                "%s failed (%s); retry %d in %.2f s",
                operation,
                error,
                attempt,
                delay,
                extra=log_fields(operation, queue),
            )
            await self._clock.sleep(delay)
            attempt += 1

    async def _decrypt_all(
        self, batch: list[ReceivedMessage], *, dead_letter: bool = False, locked: bool = True
    ) -> list[ReceivedMessage]:
        """Decrypt a received batch in place; bad messages become UndecryptableMessage.

        Dead letters are checked for authenticity but not freshness or replay.
        If something other than a crypto failure interrupts (a key provider
        down, cancellation), the batch's locks are given back before re-raising.
        """
        crypto = self.crypto
        if crypto is None or not batch:
            return batch
        try:
            return [await crypto.open_received(m, dead_letter=dead_letter) for m in batch]
        except BaseException:
            if locked:
                for message in batch:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._provider.abandon(message.receipt, None))
            raise

    def _check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None:
        limit = self.max_message_size
        unordered = self.session_support(queue) is SessionSupport.NONE
        for message in messages:
            if not isinstance(message, Message):
                raise ValidationError(
                    f"expected a Message, got {type(message).__name__}", field="messages"
                )
            if message.size > limit:
                raise MessageTooLargeError(
                    message.size,
                    limit,
                    operation="send",
                    queue=queue,
                    message_id=message.message_id,
                )
            if unordered and message.session_id is not None:
                raise SessionsNotSupportedError(
                    f"queue {queue!r} has no sessions, but the message has session id "
                    f"{message.session_id!r}",
                    operation="send",
                    queue=queue,
                    message_id=message.message_id,
                )

    def _chunks(self, messages: Sequence[Message]) -> Iterable[list[Message]]:
        """Split into batches within both the count and the byte limit."""
        chunk: list[Message] = []
        size = 0
        for message in messages:
            if chunk and (
                len(chunk) >= self.max_batch_size or size + message.size > self.max_message_size
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(message)
            size += message.size
        if chunk:
            yield chunk

    def _receive_count(self, max_messages: int) -> int:
        if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
            raise ValidationError(
                f"must be a positive integer, got {max_messages!r}", field="max_messages"
            )
        return min(max_messages, self.max_batch_size)

    def _receive_timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.config.timeouts.receive
        if not 0 <= timeout < math.inf:
            raise ValidationError(
                f"must be a non-negative number, got {timeout!r}", field="timeout"
            )
        return float(timeout)


class SessionClient:
    """A locked session. Use as an async context manager so the lock is always released.

    Messages received here are settled here (or through the client).
    """

    def __init__(self, client: QueueClient, queue: QueueName, receiver: SessionReceiver) -> None:
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"SessionClient(queue={self.queue!r}, session_id={self.session_id!r})"


def _log_each(
    text: str, operation: str, queue: str, messages: Iterable[Message | ReceivedMessage]
) -> None:
    """One DEBUG record per message, with its identifiers (the fields cost nothing when off)."""
    if logger.isEnabledFor(logging.DEBUG):
        for message in messages:
            logger.debug(text, extra=log_fields(operation, queue, message))


class _Attempt(Generic[T]):
    """A provider call that notes whether an attempt failed in a way that may have
    taken effect (a transient error or a timeout: the answer may have been lost)."""

    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call
        self.uncertain = False

    async def __call__(self) -> T:
        try:
            return await self._call()
        except BaseException as error:
            if not isinstance(error, QueueError) or error.transient:
                self.uncertain = True
            raise


def _already(operation: str, error: BaseException | None) -> bool:
    """True if ``error`` is the provider's proof that ``operation`` was already done
    with this receipt (by an attempt whose answer was lost)."""
    return isinstance(error, InvalidReceiptError) and error.settled == operation


def _settle_result(outcome: BaseException | None) -> QueueError | None:
    """A gathered settle's result: None, or its QueueError (anything else propagates)."""
    if outcome is None or isinstance(outcome, QueueError):
        return outcome
    raise outcome


def _log_settled(text: str, operation: str, receipt: ReceiptHandle) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(text, extra=log_fields(operation, receipt.queue))
