"""The client: one API over every provider, with what no provider should repeat.

:class:`QueueClient` validates names and messages, splits batches to the
provider's limits, retries transient failures with the configured
:class:`~queue_runtime.retry.RetryPolicy`, fails fast through a circuit
breaker when the provider keeps failing, and bounds every call with a
timeout. Providers only translate. Each provider call goes through the same
layers, in ``QueueClient._call``: retry → circuit breaker → telemetry
(:meth:`~queue_runtime.telemetry.Telemetry.measure`) → provider (with its timeout).
Its settle calls are :class:`~queue_runtime.settlement.Settlement`'s, its DLQ
calls :class:`~queue_runtime.dead_letter_queue.DeadLetterQueue`'s (its bases).

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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from queue_runtime.circuit import CircuitBreaker
from queue_runtime.clock import Clock, SystemClock
from queue_runtime.config import ProviderConfig, QueueConfig, load_config
from queue_runtime.crypto import EnvKeyProvider, KeyProvider, MessageCrypto
from queue_runtime.dead_letter_queue import REQUEUE_COUNT_ATTRIBUTE, DeadLetterQueue
from queue_runtime.errors import (
    CircuitOpenError,
    ConfigurationError,
    MessageTooLargeError,
    OperationTimeoutError,
    QueueError,
    SessionLockedError,
    SessionsNotSupportedError,
    ValidationError,
)
from queue_runtime.lifecycle import Closing
from queue_runtime.messages import (
    Message,
    MessageId,
    QueueName,
    ReceivedMessage,
    SessionId,
)
from queue_runtime.provider import (
    ProviderType,
    QueueProvider,
    SessionProvider,
    SessionSupport,
    SupportsMessageCheck,
    create_provider,
)
from queue_runtime.retry import RetryPolicy
from queue_runtime.session_client import DEFAULT_RECEIVE_BATCH, SessionClient
from queue_runtime.telemetry import Telemetry, error_type, log_fields

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["REQUEUE_COUNT_ATTRIBUTE", "QueueClient", "SessionClient", "create_client"]

T = TypeVar("T")

logger = logging.getLogger("queue_runtime.client")

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


class QueueClient(DeadLetterQueue, Closing):
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
        if not isinstance(provider, QueueProvider):
            members = (name for name in vars(QueueProvider) if not name.startswith("_"))
            missing = ", ".join(sorted(n for n in members if not hasattr(provider, n)))
            raise TypeError(
                f"QueueClient takes a provider, not {type(provider).__name__} (it lacks "
                f"{missing}); for a configuration use `await queue_runtime.create_client(config)`"
            )
        self._provider = provider
        self._provider_check = (
            provider.check_messages if isinstance(provider, SupportsMessageCheck) else None
        )
        """The provider's own, exact rules for what may be sent (an optional hook)."""
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
            if self._provider_check is not None:
                self._provider_check(name, batch)
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

    # -- receiving ----------------------------------------------------------------

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

    # -- lifecycle ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the provider and its connections. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._provider.aclose()

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
        """Run one provider call through the layers: retry → breaker → telemetry → provider.

        The retries (with back-off, each counted and logged) are here; the
        circuit breaker is :meth:`_guarded`; the telemetry is
        :meth:`Telemetry.measure <queue_runtime.telemetry.Telemetry.measure>` (each
        attempt's duration); the provider call is bounded by a timeout (:func:`_bounded`).
        """
        if self._closed:
            raise QueueError("the client is closed", operation=operation, queue=queue)
        limit = self.config.timeouts.send + (timeout or 0.0)
        retry = retry or self.config.retry
        attempt = 1
        while True:
            try:
                return await self._guarded(operation, queue, call, limit)
            except QueueError as failed:
                error = failed
            if isinstance(error, SessionLockedError | CircuitOpenError):
                raise error  # contention (retried by accept_session), or failing fast
            if not retry.should_retry(error, attempt):
                raise error
            delay = retry.delay(attempt, error)
            self.telemetry.count_retry(operation, queue, error)
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

    async def _guarded(
        self, operation: str, queue: str, call: Callable[[], Awaitable[T]], limit: float
    ) -> T:
        """One attempt through the circuit breaker: refused at once while it is open
        (:class:`~queue_runtime.errors.CircuitOpenError`), and its outcome counted."""
        circuit = self.circuit
        trial = circuit.admit(operation=operation, queue=queue)
        try:
            try:
                result = await self.telemetry.measure(
                    operation, queue, _bounded(call, limit, operation, queue)
                )
            finally:
                circuit.release(trial)  # its outcome is recorded below, in the same step
        except SessionLockedError:
            raise  # contention, not a fault: not counted
        except QueueError as error:
            if error.transient and circuit.record_failure():
                logger.warning(
                    "provider circuit opened after repeated failures (%s)",
                    error_type(error),
                    extra=log_fields(operation, queue),
                )
            raise
        if circuit.record_success():
            logger.info("provider circuit closed again", extra=log_fields(operation, queue))
        return result

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


async def _bounded(call: Callable[[], Awaitable[T]], limit: float, operation: str, queue: str) -> T:
    """The provider call, within ``limit`` seconds; its errors with the call's context.

    Running out of time is an :class:`~queue_runtime.errors.OperationTimeoutError`
    (transient); a provider's own ``TimeoutError`` or any other non-queue error
    (a provider bug) propagates as it is.
    """
    error: QueueError
    try:
        async with asyncio.timeout(limit) as deadline:
            return await call()
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        error = OperationTimeoutError(
            f"no answer within {limit:g} s", operation=operation, queue=queue
        )
        error.__cause__ = exc
    except QueueError as exc:
        error = exc.with_context(operation=operation, queue=queue)
    raise error


def _log_each(
    text: str, operation: str, queue: str, messages: Iterable[Message | ReceivedMessage]
) -> None:
    """One DEBUG record per message, with its identifiers (the fields cost nothing when off)."""
    if logger.isEnabledFor(logging.DEBUG):
        for message in messages:
            logger.debug(text, extra=log_fields(operation, queue, message))
