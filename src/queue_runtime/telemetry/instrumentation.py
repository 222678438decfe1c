"""The :class:`Telemetry` of one client: its spans and metrics, for one messaging system.

Example:
    >>> from queue_runtime.telemetry import Telemetry
    >>> Telemetry("memory").tracing  # no SDK configured
    False
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracer,
    SpanKind,
    TracerProvider,
)

from queue_runtime.messages import Message, ReceiptHandle, ReceivedMessage
from queue_runtime.telemetry.conventions import (
    BATCH_COUNT,
    CONVERSATION_ID,
    DEAD_LETTER_QUEUE,
    DELIVERY_COUNT,
    DESTINATION,
    ERROR_TYPE,
    INSTRUMENTATION_NAME,
    MESSAGE_ID,
    OPERATION_NAME,
    OPERATION_TYPE,
    OPERATION_TYPES,
    OUTCOME,
    PACKAGE_VERSION,
    QUEUE,
    SETTLE_COUNTERS,
    SYSTEM,
    error_type,
    operation_name,
)
from queue_runtime.telemetry.instruments import Observed, instruments_of
from queue_runtime.telemetry.propagation import ATTRIBUTE_SETTER, creation_context, producer_of
from queue_runtime.telemetry.spans import (
    UNTRACED,
    UNTRACED_SETTLING,
    Processing,
    Receiving,
    Settling,
    SpanScope,
)

T = TypeVar("T")

_MAX_PROCESSING_SETS = 512
"""Attribute sets of ``messaging.process.duration`` a :class:`Telemetry` keeps built
(queues x error types x outcomes; a set beyond is built per recording, as correct)."""


class Telemetry:
    """Spans and metrics of one client, for one messaging system.

    Every :class:`~queue_runtime.QueueClient` has one (``client.telemetry``),
    made from the global tracer and meter providers unless it was given
    ``tracer_provider=``/``meter_provider=`` (as OpenTelemetry
    instrumentations take them). The global providers are looked up through
    the API's proxies, so an application that configures its SDK after
    creating clients is still traced and measured.

    Example:
        >>> telemetry = Telemetry("aws_sqs")
        >>> with telemetry.settle("complete", "orders"):
        ...     pass
        >>> telemetry
        Telemetry(system='aws_sqs')
    """

    def __init__(
        self,
        system: str,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.system = system
        """The ``messaging.system``: ``memory``, ``aws_sqs`` or ``servicebus``."""
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, PACKAGE_VERSION, tracer_provider)
        self._follows_global = isinstance(self._tracer, ProxyTracer)
        """True while our tracer is the API's proxy: an SDK may be set later, or never."""
        self._records = not isinstance(self._tracer, NoOpTracer)
        """False for a tracer of the API's no-op provider, given as ``tracer_provider=``."""
        self._instruments = instruments_of(meter_provider)
        self._queue_attributes: dict[str, dict[str, str]] = {}
        self._operation_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self._processing_attributes: dict[tuple[str, str | None, str | None], dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"Telemetry(system={self.system!r})"

    # -- attributes (built once per queue and operation; never mutated) ---------------

    def _queue(self, queue: str) -> dict[str, str]:
        found = self._queue_attributes.get(queue)
        if found is None:
            name = str(queue)
            found = {QUEUE: name, SYSTEM: self.system, DESTINATION: name}
            self._queue_attributes[queue] = found
        return found

    def _operation(self, operation: str, queue: str) -> dict[str, str]:
        key = (operation, queue)
        found = self._operation_attributes.get(key)
        if found is None:
            found = {**self._queue(queue), OPERATION_NAME: operation_name(operation)}
            kind = OPERATION_TYPES.get(operation)
            if kind is not None:
                found[OPERATION_TYPE] = kind
            self._operation_attributes[key] = found
        return found

    # -- spans ---------------------------------------------------------------------

    @property
    def tracing(self) -> bool:
        """False while no tracer provider is set, or the API's no-op one: spans are
        skipped, not even started as no-ops (an incoming trace context and its
        baggage are still handed on).

        It asks what the API's ``ProxyTracer`` asks on every call before it hands
        out no-op spans (``opentelemetry.trace._TRACER_PROVIDER``). Should the
        API ever lose that variable, this says True and spans are always started.
        """
        if not self._follows_global:
            return self._records
        provider = getattr(trace, "_TRACER_PROVIDER", True)
        return provider is not None and not isinstance(provider, NoOpTracerProvider)

    def send(self, queue: str, messages: Sequence[Message]) -> SpanScope:
        """The PRODUCER span of one send call; :meth:`inject` inside it.

        One span per call, whatever the number of messages (a batch shares
        its context).
        """
        if not self.tracing:
            return UNTRACED
        attributes: dict[str, str | int] = {**self._operation("send", queue)}
        if len(messages) == 1 and isinstance(messages[0], Message):
            attributes[MESSAGE_ID] = messages[0].message_id
            if messages[0].session_id is not None:
                attributes[CONVERSATION_ID] = messages[0].session_id
        elif len(messages) > 1:
            attributes[BATCH_COUNT] = len(messages)
        span = self._tracer.start_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        return SpanScope(span)

    def inject(self, messages: list[Message]) -> list[Message]:
        """``messages`` with the current trace context in their attributes.

        The global propagator decides the fields (W3C ``traceparent`` and
        ``tracestate``, and ``baggage``, by default). Returns the same list
        when there is nothing to propagate; a field already there is replaced.
        Without an SDK there is only something to propagate when the current
        context holds it: a trace being continued (a processed message's), baggage.
        """
        if not self.tracing and not otel_context.get_current():
            return messages  # no SDK, and no trace or baggage to hand on
        carrier: dict[str, str] = {}
        propagate.inject(carrier, setter=ATTRIBUTE_SETTER)
        if not carrier:
            return messages
        return [
            replace(m, attributes={**m.attributes, **carrier}) if isinstance(m, Message) else m
            for m in messages
        ]

    def receive(self, queue: str, session_id: str | None = None) -> Receiving:
        """The span of one receive call; call :meth:`Receiving.received` with the result."""
        if not self.tracing:
            return UNTRACED
        attributes = self._operation("receive", queue)
        if session_id is not None:
            attributes = {**attributes, CONVERSATION_ID: session_id}
        span = self._tracer.start_span(
            f"receive {queue}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return Receiving(span)

    def settle(
        self,
        operation: str,
        queue: str,
        *,
        dead_letter: bool = False,
        context: Context | None = None,
    ) -> SpanScope:
        """The span of a ``complete``, ``abandon`` or ``dead_letter`` call of one message:
        a child of ``context`` (default: the current context)."""
        if not self.tracing:
            return UNTRACED
        attributes = self._operation(operation, queue)
        if dead_letter:
            attributes = {**attributes, DEAD_LETTER_QUEUE: "true"}
        span = self._tracer.start_span(
            f"{operation} {queue}", context=context, kind=SpanKind.CLIENT, attributes=attributes
        )
        return SpanScope(span)

    def settle_each(
        self,
        operation: str,
        queue: str,
        receipts: Sequence[ReceiptHandle],
        contexts: Sequence[Context | None] | None = None,
    ) -> Settling:
        """One settle span per message of a batch call, each a child of its own context
        (``contexts[i]`` for ``receipts[i]``; default: the current one), so that every
        message's settle span is under its own ``process`` span, whoever else's
        messages shared the provider request."""
        if not self.tracing:
            return UNTRACED_SETTLING
        parents = contexts if contexts is not None else [None] * len(receipts)
        return Settling(
            [
                self.settle(operation, queue, dead_letter=receipt.dead_letter, context=parent)
                for receipt, parent in zip(receipts, parents, strict=True)
            ]
        )

    def process(self, message: ReceivedMessage) -> Processing:
        """The CONSUMER span of processing ``message``, and its duration.

        The span is a child of the producer's context carried by the message
        (and links to it, as the conventions ask, so the relation survives an
        application that starts its own trace). Use it as a context manager
        around handling *and* settling, so that the settle span is its child.
        """
        queue = message.receipt.queue
        creation = creation_context(message)
        if not self.tracing:  # no span; still hand the message's trace and baggage on
            if not creation:  # nothing to continue (or nothing the propagator understood)
                return Processing(INVALID_SPAN, self, queue)
            return Processing(trace.get_current_span(creation), self, queue, creation)
        producer = producer_of(creation)
        attributes: dict[str, str | int] = {
            **self._operation("process", queue),
            MESSAGE_ID: message.message_id,
            DELIVERY_COUNT: message.delivery_count,
        }
        if message.session_id is not None:
            attributes[CONVERSATION_ID] = message.session_id
        links = [Link(producer)] if producer is not None else None
        span = self._tracer.start_span(
            f"process {queue}",
            context=creation,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        # the span in the message's context, not the current one: its baggage goes along
        return Processing(span, self, queue, trace.set_span_in_context(span, creation))

    # -- metrics -----------------------------------------------------------------------

    def record_processing(
        self, queue: str, seconds: float, error: str | None = None, outcome: str | None = None
    ) -> None:
        """Processing a message of ``queue`` took ``seconds`` (``error``: an error type)."""
        key = (queue, error, outcome)
        attributes = self._processing_attributes.get(key)
        if attributes is None:
            attributes = self._processing(queue, error, outcome)
        self._instruments.process_duration.record(seconds, attributes)

    def _processing(self, queue: str, error: str | None, outcome: str | None) -> dict[str, str]:
        """The attributes of a processing duration: one mapping per distinct set, shared
        by every recording of that set (the SDK copies what it keeps), and at most
        :data:`_MAX_PROCESSING_SETS` of them kept: a caller passing free text as
        ``error`` (it becomes ``_OTHER``) would otherwise grow the cache per message."""
        error_name = None if error is None else error_type(error)
        outcome_name = None if outcome is None else error_type(outcome)  # an identifier
        cached = self._processing_attributes
        if (error_name, outcome_name) != (error, outcome):
            # a raw value that cleans to another one: share the clean set's mapping
            clean = cached.get((queue, error_name, outcome_name))
            if clean is not None:
                return clean
            key = (queue, error_name, outcome_name)
        else:
            key = (queue, error, outcome)
        attributes = {**self._operation("process", queue)}
        if error_name is not None:
            attributes[ERROR_TYPE] = error_name
        if outcome_name is not None:
            attributes[OUTCOME] = outcome_name
        if len(cached) < _MAX_PROCESSING_SETS:
            cached[key] = attributes
        return attributes

    async def measure(self, operation: str, queue: str, call: Awaitable[T]) -> T:
        """Await one provider call (one attempt) and return its result, recording its
        duration in ``messaging.client.operation.duration``, with the ``error.type``
        of an exception it raised (cancellation is not measured).

        Example:
            >>> import asyncio
            >>> async def call() -> str:
            ...     return "done"
            >>> asyncio.run(Telemetry("memory").measure("send", "orders", call()))
            'done'
        """
        started = time.perf_counter()
        try:
            result = await call
        except Exception as error:
            self.record_operation(operation, queue, time.perf_counter() - started, error)
            raise
        self.record_operation(operation, queue, time.perf_counter() - started)
        return result

    def record_operation(
        self, operation: str, queue: str, seconds: float, error: BaseException | None = None
    ) -> None:
        """One provider call took ``seconds`` (failed with ``error``)."""
        attributes = self._operation(operation, queue)
        if error is not None:
            attributes = {**attributes, ERROR_TYPE: error_type(error)}
        self._instruments.operation_duration.record(seconds, attributes)

    def count_sent(self, queue: str, count: int, error: BaseException | None = None) -> None:
        """``count`` messages were sent (or failed to be, with ``error``)."""
        attributes = self._operation("send", queue)
        if error is not None:
            attributes = {**attributes, ERROR_TYPE: error_type(error)}
        self._instruments.sent.add(count, attributes)

    def count_received(self, queue: str, count: int) -> None:
        """``count`` messages were delivered by a receive call (nothing counted for 0)."""
        if count:
            self._instruments.consumed.add(count, self._queue(queue))

    def count_settled(
        self, operation: str, receipt: ReceiptHandle, reason: str | None = None, *, count: int = 1
    ) -> None:
        """A message (``count`` messages of ``receipt``'s queue) was completed, abandoned
        or dead-lettered (with ``reason``).

        Settling a message read from the dead-letter queue is DLQ upkeep, not
        the fate of a message of the queue: it is not counted.
        """
        if receipt.dead_letter:
            return
        attributes = self._queue(receipt.queue)
        if reason is not None:
            attributes = {**attributes, ERROR_TYPE: error_type(reason)}
        self._instruments.settled[SETTLE_COUNTERS[operation]].add(count, attributes)

    def count_retry(self, operation: str, queue: str, error: BaseException) -> None:
        """A failed provider call or handler attempt (``operation="process"``) is retried."""
        attributes = {**self._operation(operation, queue), ERROR_TYPE: error_type(error)}
        self._instruments.retries.add(1, attributes)

    def observe(
        self,
        queue: str,
        *,
        active_sessions: Callable[[], int] | None = None,
        in_flight: Callable[[], int] | None = None,
        circuits: Callable[[], Mapping[str, str]] | None = None,
    ) -> Observed:
        """Report live values of ``queue``'s consumer until :meth:`Observed.close`.

        The callbacks run when a metric reader collects — possibly on the
        reader's thread — so they must only read (counters, a state):
        ``circuits`` maps a circuit's name (``"provider"``, a handler class)
        to its state (``"closed"``, ``"half_open"``, ``"open"``).

        Example:
            >>> telemetry = Telemetry("memory")
            >>> observed = telemetry.observe("orders", in_flight=lambda: 3)
            >>> observed.close()
        """
        observed = Observed(
            self._instruments, self._queue(queue), active_sessions, in_flight, circuits
        )
        self._instruments.observe(observed)
        return observed
