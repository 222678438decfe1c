"""Spans, metrics and structured log fields, through the OpenTelemetry API only.

queue-runtime never installs an SDK or an exporter: the application does (see
``docs/telemetry.md``). Without one the instruments are the API's no-ops and
no span is started at all, so the hot path stays cheap: trace context is only
injected when there is some and only extracted from messages that carry it,
and metric attributes are built once per queue.

Tracing follows the OpenTelemetry messaging semantic conventions:

=================  ========  =====================================================
span               kind      made by
=================  ========  =====================================================
``send {queue}``   PRODUCER  ``QueueClient.send_messages``; its context goes
                             into the messages' attributes (W3C ``traceparent``)
``receive {q}``    CLIENT    every receive call; linked to each message's producer
``process {q}``    CONSUMER  :meth:`Telemetry.process`; child of the producer's
                             context taken from the message, and linked to it
``complete {q}``,  CLIENT    the settle calls: one per message, also in a batch
``abandon {q}``,             call (:meth:`Telemetry.settle_each`)
``dead_letter {q}``
=================  ========  =====================================================

Metrics (every one with ``queue``, ``messaging.system`` and
``messaging.destination.name``; ``error.type`` is an error's class name):
``messaging.client.sent.messages``, ``messaging.client.consumed.messages``,
``messaging.client.operation.duration`` (each provider call),
``messaging.process.duration``, ``queue_runtime.messages.completed`` /
``.abandoned`` / ``.dead_lettered``, ``queue_runtime.retries``, and the
observed ``queue_runtime.sessions.active``, ``queue_runtime.messages.in_flight``
and ``queue_runtime.circuit.state``. Never message or session ids: they would
make a time series per message.

Logs: the ``queue_runtime`` logger hierarchy, with the fields of
:func:`log_fields` passed as ``extra=`` so that a formatter or a JSON handler
can pick them up. Bodies, keys and credentials are never logged.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> from queue_runtime.telemetry import Telemetry
    >>> async def main() -> str:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("orders", qr.Message(b"{}"))
    ...         [message] = await client.receive_messages("orders", timeout=1.0)
    ...         with client.telemetry.process(message) as processing:
    ...             processing.outcome = "completed"   # the handler ran here
    ...             await client.complete_message(message.receipt)
    ...         return client.telemetry.system
    >>> asyncio.run(main())
    'memory'
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import Token
from dataclasses import replace
from types import TracebackType
from typing import Final, Self

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracer,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from queue_runtime.messages import Message, ReceiptHandle, ReceivedMessage

__all__ = [
    "ABANDONED",
    "ACTIVE_SESSIONS",
    "CIRCUIT_STATE",
    "COMPLETED",
    "CONSUMED",
    "DEAD_LETTERED",
    "DURATION_BUCKETS",
    "INSTRUMENTATION_NAME",
    "IN_FLIGHT",
    "LOG_FIELDS",
    "OPERATION_DURATION",
    "PROCESS_DURATION",
    "RETRIES",
    "SENT",
    "Observed",
    "Processing",
    "Receiving",
    "Settling",
    "SpanScope",
    "Telemetry",
    "activate",
    "error_type",
    "log_fields",
]

INSTRUMENTATION_NAME: Final = "queue_runtime"
"""The tracer and meter name (the instrumentation scope)."""

try:
    _VERSION = importlib.metadata.version("queue-runtime")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "unknown"

logger = logging.getLogger("queue_runtime.telemetry")

# -- attribute names (OTel messaging conventions, plus our own) ------------------------

SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
MESSAGE_ID: Final = "messaging.message.id"
CONVERSATION_ID: Final = "messaging.message.conversation_id"
BATCH_COUNT: Final = "messaging.batch.message_count"
ERROR_TYPE: Final = "error.type"
QUEUE: Final = "queue"
DELIVERY_COUNT: Final = "queue_runtime.message.delivery_count"
OUTCOME: Final = "queue_runtime.outcome"
CIRCUIT: Final = "queue_runtime.circuit"
DEAD_LETTER_QUEUE: Final = "queue_runtime.dead_letter_queue"
OTHER_ERROR: Final = "_OTHER"
"""``error.type`` when the reason given is not a short identifier (conventions' fallback)."""

# -- instrument names ---------------------------------------------------------------

SENT: Final = "messaging.client.sent.messages"
CONSUMED: Final = "messaging.client.consumed.messages"
OPERATION_DURATION: Final = "messaging.client.operation.duration"
PROCESS_DURATION: Final = "messaging.process.duration"
COMPLETED: Final = "queue_runtime.messages.completed"
ABANDONED: Final = "queue_runtime.messages.abandoned"
DEAD_LETTERED: Final = "queue_runtime.messages.dead_lettered"
RETRIES: Final = "queue_runtime.retries"
ACTIVE_SESSIONS: Final = "queue_runtime.sessions.active"
IN_FLIGHT: Final = "queue_runtime.messages.in_flight"
CIRCUIT_STATE: Final = "queue_runtime.circuit.state"

DURATION_BUCKETS: Final = (
    *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
    *(20.0, 30.0),
)
"""Histogram boundaries in seconds: the conventions' advice, plus long-poll lengths."""

CIRCUIT_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""What ``queue_runtime.circuit.state`` reports for each circuit state."""

_OPERATION_TYPES: Final = {
    "send": "send",
    "receive": "receive",
    "session_receive": "receive",
    "complete": "settle",
    "abandon": "settle",
    "dead_letter": "settle",
    "process": "process",
}
_SETTLE_COUNTERS: Final = {
    "complete": COMPLETED,
    "abandon": ABANDONED,
    "dead_letter": DEAD_LETTERED,
}
_MAX_ERROR_TYPE = 64
_MAX_PROCESSING_SETS = 512
"""Attribute sets of ``messaging.process.duration`` a :class:`Telemetry` keeps built
(queues x error types x outcomes; a set beyond is built per recording, as correct)."""
_MAX_DESCRIPTION = 1024

LOG_FIELDS: Final = (
    "queue",
    "message_id",
    "session_id",
    "correlation_id",
    "operation",
    "delivery_count",
    "trace_id",
)
"""The structured fields every queue-runtime log record carries (``None`` when unknown)."""


def error_type(error: BaseException | str) -> str:
    """The low-cardinality ``error.type`` of an error: its class name.

    A string (a dead-letter reason, say) is used as it is when it looks like a
    class name, and becomes ``_OTHER`` otherwise, so that free text can never
    make a metric series of its own.

    Example:
        >>> error_type(ValueError("bad")), error_type("NoHandler"), error_type("free text!")
        ('ValueError', 'NoHandler', '_OTHER')
    """
    if isinstance(error, BaseException):
        return type(error).__name__
    if error.isidentifier() and len(error) <= _MAX_ERROR_TYPE:
        return error
    return OTHER_ERROR


def log_fields(
    operation: str,
    queue: str | None = None,
    message: Message | ReceivedMessage | None = None,
    *,
    session_id: str | None = None,
) -> dict[str, object]:
    """The ``extra=`` of a log record: :data:`LOG_FIELDS`, from ``message`` where given
    (``session_id`` names the session of a record about a session, not a message).

    ``trace_id`` is the current span's (32 hex digits), so that logs and
    traces can be joined. Only identifiers: never the body or attributes.

    Example:
        >>> import queue_runtime as qr
        >>> fields = log_fields("send", "orders", qr.Message(b"secret", message_id="m-1"))
        >>> fields["queue"], fields["message_id"], fields["operation"], fields["trace_id"]
        ('orders', 'm-1', 'send', None)
    """
    span_context = trace.get_current_span().get_span_context()
    fields: dict[str, object] = {
        "queue": None if queue is None else str(queue),
        "message_id": None,
        "session_id": session_id,
        "correlation_id": None,
        "operation": operation,
        "delivery_count": None,
        "trace_id": trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None,
    }
    if message is not None:
        fields["message_id"] = message.message_id
        fields["session_id"] = message.session_id
        fields["correlation_id"] = message.correlation_id
        if isinstance(message, ReceivedMessage):
            fields["delivery_count"] = message.delivery_count
            if queue is None:
                fields["queue"] = str(message.receipt.queue)
    return fields


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_DESCRIPTION]


class _AttributeSetter(Setter[dict[str, str]]):
    """Writes propagation fields (``traceparent``, ...) into message attributes."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = str(value)


_SETTER: Final = _AttributeSetter()


_fields: tuple[object, frozenset[str]] = (None, frozenset())


def _creation_context(message: ReceivedMessage) -> Context | None:
    """The producer's context carried by a message, or ``None`` if it carries none.

    Extracted once per message (the receive span's link and the process span both
    need it) and into an empty context, so nothing of the caller's context leaks
    into it: it holds what the message carries, trace and baggage, and only that.
    """
    global _fields
    known = message._trace
    if known is not None:
        return known or None  # an empty context: it carried nothing the propagator took
    attributes = message.attributes
    propagator = propagate.get_global_textmap()
    seen, fields = _fields
    if seen is not propagator:  # the propagator builds its field set on every call
        fields = frozenset(propagator.fields)
        _fields = (propagator, fields)
    if fields.isdisjoint(attributes):
        return None  # the common untraced case: no extraction at all
    context = propagator.extract(attributes, Context())
    object.__setattr__(message, "_trace", context)  # a memo on a frozen value (see its field)
    return context or None


def _producer(creation: Context | None) -> SpanContext | None:
    """The producer's span in a message's context, if it carries a valid one."""
    if creation is None:
        return None
    producer = trace.get_current_span(creation).get_span_context()
    return producer if producer.is_valid else None


# -- span scopes -----------------------------------------------------------------------


class SpanScope:
    """A span, current for a ``with`` block, ended on exit; errors set its status.

    An exception leaving the block, or one passed to :meth:`fail`, becomes
    the span's ``error.type``, an ``exception`` event (type and message, no
    stack trace: frames can hold payload data) and an ERROR status.
    ``asyncio.CancelledError`` is not an error. A span whose context is not
    valid (nothing to continue) is never made current.

    Example:
        >>> with Telemetry("memory").settle("abandon", "orders") as scope:
        ...     scope.fail(TimeoutError("slow"))  # an ERROR span, with an SDK
    """

    __slots__ = ("_description", "_error", "_token", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._token: Token[Context] | None = None
        self._error: str | None = None
        self._description = ""

    def __enter__(self) -> Self:
        if self.span.get_span_context().is_valid:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, Exception):
                self.fail(exc)
            self._finish()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self.span.end()

    def end(self, error: BaseException | None = None) -> None:
        """End the span without a ``with`` block (it was never current), failed with
        ``error`` if one is given: how a batch call ends its messages' spans."""
        if error is not None:
            self.fail(error)
        self._finish()
        self.span.end()

    def fail(self, error: BaseException) -> None:
        """Record ``error`` (caught inside the block) on the span."""
        self._error = error_type(error)
        if self.span.is_recording():
            self._description = _describe(error)
            self.span.add_event(
                "exception", {"exception.type": self._error, "exception.message": str(error)}
            )

    def _finish(self) -> None:
        if self._error is not None and self.span.is_recording():
            self.span.set_attribute(ERROR_TYPE, self._error)
            self.span.set_status(Status(StatusCode.ERROR, self._description))


class Receiving(SpanScope):
    """The span of one receive call; :meth:`received` reports what came."""

    __slots__ = ()

    def received(self, messages: Sequence[ReceivedMessage]) -> None:
        """Describe the batch on the span and link it to each message's producer."""
        span = self.span
        if not span.is_recording():
            return
        span.set_attribute(BATCH_COUNT, len(messages))
        if len(messages) == 1:
            span.set_attribute(MESSAGE_ID, messages[0].message_id)
        for message in messages:
            producer = _producer(_creation_context(message))
            if producer is not None:
                span.add_link(producer)


class _Untraced(Receiving):
    """The scope of every span while tracing is off: nothing to do, no state (shared)."""

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def end(self, error: BaseException | None = None) -> None:
        return None

    def fail(self, error: BaseException) -> None:
        return None

    def received(self, messages: Sequence[ReceivedMessage]) -> None:
        return None


_UNTRACED: Final = _Untraced(INVALID_SPAN)


class Settling:
    """The settle spans of one batch call, one per message (see :meth:`Telemetry.settle_each`).

    Call :meth:`ended` with the call's result for each receipt (``None`` or its
    error); an exception leaving the ``with`` block ends every span that is still
    open with it (cancellation is not an error).

    Example:
        >>> receipts = []  # a batch call's receipts, of one queue
        >>> with Telemetry("memory").settle_each("complete", "orders", receipts) as settling:
        ...     settling.ended([])  # one result per receipt
    """

    __slots__ = ("_scopes",)

    def __init__(self, scopes: list[SpanScope]) -> None:
        self._scopes = scopes

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        error = exc_info[1]
        scopes, self._scopes = self._scopes, []
        for scope in scopes:
            scope.end(error if isinstance(error, Exception) else None)

    def ended(self, results: Sequence[BaseException | None]) -> None:
        """End each message's span with its result: ``None``, or the error that kept it."""
        scopes, self._scopes = self._scopes, []
        if scopes:  # none while tracing is off
            for scope, result in zip(scopes, results, strict=True):
                scope.end(result)


class Processing(SpanScope):
    """The CONSUMER span of processing one message (see :meth:`Telemetry.process`).

    ``trace_context`` is what the handler should run in (pass it to
    :func:`activate` in the handler's task); ``None`` when there is nothing to
    continue. Call :meth:`fail` for each failed attempt and set
    :attr:`outcome` (``"completed"``, ``"abandoned"``, ``"dead_lettered"`` or
    ``"lost"``) before the block ends: failures followed by a completion were
    retried away and do not make the processing an error.

    Example:
        >>> import asyncio
        >>> import queue_runtime as qr
        >>> async def main() -> str | None:
        ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
        ...         await client.send_message("orders", qr.Message(b"{}"))
        ...         [message] = await client.receive_messages("orders", timeout=1.0)
        ...         with client.telemetry.process(message) as processing:
        ...             processing.fail(TimeoutError("downstream slow"))  # attempt 1
        ...             await client.complete_message(message.receipt)  # attempt 2 worked
        ...             processing.outcome = "completed"
        ...         return processing.outcome
        >>> asyncio.run(main())
        'completed'
    """

    __slots__ = ("_context", "_queue", "_started", "_telemetry", "outcome")

    def __init__(
        self, span: Span, telemetry: Telemetry, queue: str, context: Context | None = None
    ) -> None:
        super().__init__(span)
        self._telemetry = telemetry
        self._queue = queue
        self._context = context
        self._started = 0.0
        self.outcome: str | None = None
        """How processing ended; recorded on the span and the duration."""

    @property
    def trace_context(self) -> Context | None:
        """The context to make current where the handler runs (another task): the
        processing span in the message's context, with the message's baggage."""
        return self._context

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        if self._context is not None:
            self._token = otel_context.attach(self._context)
        return self

    def _finish(self) -> None:
        outcome = self.outcome
        if outcome == "completed":
            self._error = None
        span = self.span
        if span.is_recording():
            if outcome is not None:
                span.set_attribute(OUTCOME, outcome)
            super()._finish()
        self._telemetry.record_processing(
            self._queue, time.perf_counter() - self._started, self._error, self.outcome
        )


class _Activation:
    """Makes a context current for a ``with`` block (nothing for ``None``)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: Context | None) -> None:
        self._context = context
        self._token: Token[Context] | None = None

    def __enter__(self) -> None:
        if self._context is not None:
            self._token = otel_context.attach(self._context)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)


def activate(context: Context | None) -> AbstractContextManager[None]:
    """Run a ``with`` block in ``context`` (a :attr:`Processing.trace_context`).

    Context does not cross tasks by itself: an actor's worker task must make
    the processing span current before it calls the user's handler.

    Example:
        >>> from opentelemetry import trace
        >>> with activate(None):
        ...     trace.get_current_span().get_span_context().is_valid
        False
    """
    return _Activation(context)


_UNTRACED_SETTLING: Final = Settling([])
"""What :meth:`Telemetry.settle_each` gives while tracing is off (shared: holds nothing)."""


# -- instruments ---------------------------------------------------------------------


class Observed:
    """A registration of live values for the observed gauges; :meth:`close` ends it."""

    def __init__(
        self,
        instruments: _Instruments,
        attributes: Mapping[str, str],
        active_sessions: Callable[[], int] | None,
        in_flight: Callable[[], int] | None,
        circuits: Callable[[], Mapping[str, str]] | None,
    ) -> None:
        self._instruments = instruments
        self.attributes = attributes
        self.active_sessions = active_sessions
        self.in_flight = in_flight
        self.circuits = circuits

    def close(self) -> None:
        """Stop reporting these values (idempotent)."""
        self._instruments.forget(self)


class _Instruments:
    """The instruments of one meter. Observed gauges are created once, here, because
    an SDK keeps only the first callbacks registered under an instrument name."""

    def __init__(self, meter: Meter) -> None:
        self.sent = meter.create_counter(
            SENT, "{message}", "Messages the client tried to send (error.type if it failed)."
        )
        self.consumed = meter.create_counter(
            CONSUMED, "{message}", "Messages delivered to the application by receive calls."
        )
        self.operation_duration = meter.create_histogram(
            OPERATION_DURATION,
            "s",
            "Duration of each provider call (each attempt; retries are counted apart).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.process_duration = meter.create_histogram(
            PROCESS_DURATION,
            "s",
            "Duration of processing one message, handler attempts and settlement included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.settled = {
            COMPLETED: meter.create_counter(COMPLETED, "{message}", "Messages completed."),
            ABANDONED: meter.create_counter(ABANDONED, "{message}", "Messages abandoned."),
            DEAD_LETTERED: meter.create_counter(
                DEAD_LETTERED,
                "{message}",
                "Messages moved to the dead-letter queue (error.type: the reason).",
            ),
        }
        self.retries = meter.create_counter(
            RETRIES, "{retry}", "Retries of failed provider calls and handler attempts."
        )
        self._observed: tuple[Observed, ...] = ()
        meter.create_observable_up_down_counter(
            ACTIVE_SESSIONS, [self._sessions], "{session}", "Session actors alive."
        )
        meter.create_observable_up_down_counter(
            IN_FLIGHT, [self._in_flight], "{message}", "Messages received and not yet settled."
        )
        meter.create_observable_gauge(
            CIRCUIT_STATE,
            [self._circuits],
            "",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        )

    def observe(self, observed: Observed) -> None:
        self._observed = (*self._observed, observed)  # copied: callbacks run on other threads

    def forget(self, observed: Observed) -> None:
        self._observed = tuple(o for o in self._observed if o is not observed)

    def _sessions(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._count(lambda o: o.active_sessions)

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._count(lambda o: o.in_flight)

    def _count(self, pick: Callable[[Observed], Callable[[], int] | None]) -> Iterable[Observation]:
        observations = []
        for observed in self._observed:
            read = pick(observed)
            if read is None:
                continue
            try:
                observations.append(Observation(read(), observed.attributes))
            except Exception:
                logger.exception("a telemetry callback failed", extra=log_fields("observe"))
        return observations

    def _circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for observed in self._observed:
            if observed.circuits is None:
                continue
            try:
                states = dict(observed.circuits())
            except Exception:
                logger.exception("a telemetry callback failed", extra=log_fields("observe"))
                continue
            for name, state in states.items():
                value = CIRCUIT_VALUES.get(str(state))
                if value is not None:
                    observations.append(Observation(value, {**observed.attributes, CIRCUIT: name}))
        return observations


_global_instruments: _Instruments | None = None
_instruments_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def _instruments(meter_provider: MeterProvider | None) -> _Instruments:
    """One set of instruments per meter provider (the global one when ``None``)."""
    global _global_instruments
    if meter_provider is None:
        if _global_instruments is None:
            # the API's proxy meter when no SDK is set yet: it binds to the SDK later
            _global_instruments = _Instruments(metrics.get_meter(INSTRUMENTATION_NAME, _VERSION))
        return _global_instruments
    found = _instruments_by_provider.get(meter_provider)
    if found is None:
        found = _Instruments(meter_provider.get_meter(INSTRUMENTATION_NAME, _VERSION))
        _instruments_by_provider[meter_provider] = found
    return found


# -- the facade ------------------------------------------------------------------------


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
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, _VERSION, tracer_provider)
        self._follows_global = isinstance(self._tracer, ProxyTracer)
        """True while our tracer is the API's proxy: an SDK may be set later, or never."""
        self._records = not isinstance(self._tracer, NoOpTracer)
        """False for a tracer of the API's no-op provider, given as ``tracer_provider=``."""
        self._instruments = _instruments(meter_provider)
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
            found = {**self._queue(queue), OPERATION_NAME: _operation_name(operation)}
            kind = _OPERATION_TYPES.get(operation)
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
            return _UNTRACED
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
        propagate.inject(carrier, setter=_SETTER)
        if not carrier:
            return messages
        return [
            replace(m, attributes={**m.attributes, **carrier}) if isinstance(m, Message) else m
            for m in messages
        ]

    def receive(self, queue: str, session_id: str | None = None) -> Receiving:
        """The span of one receive call; call :meth:`Receiving.received` with the result."""
        if not self.tracing:
            return _UNTRACED
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
            return _UNTRACED
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
            return _UNTRACED_SETTLING
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
        creation = _creation_context(message)
        if not self.tracing:  # no span; still hand the message's trace and baggage on
            if not creation:  # nothing to continue (or nothing the propagator understood)
                return Processing(INVALID_SPAN, self, queue)
            return Processing(trace.get_current_span(creation), self, queue, creation)
        producer = _producer(creation)
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
        self._instruments.settled[_SETTLE_COUNTERS[operation]].add(count, attributes)

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


def _operation_name(operation: str) -> str:
    return "receive" if operation == "session_receive" else operation
