"""Span scopes: a span made current for a ``with`` block, or ended by a batch call.

Example:
    >>> from queue_runtime.telemetry import Telemetry
    >>> with Telemetry("memory").receive("orders") as receiving:
    ...     receiving.received([])  # what the receive call returned
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import Token
from types import TracebackType
from typing import Final, Protocol, Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from queue_runtime.messages import ReceivedMessage
from queue_runtime.telemetry.conventions import (
    BATCH_COUNT,
    ERROR_TYPE,
    MESSAGE_ID,
    OUTCOME,
    error_type,
)
from queue_runtime.telemetry.propagation import creation_context, producer_of


class ProcessingRecorder(Protocol):
    """Where a :class:`Processing` records its duration (a client's ``Telemetry``)."""

    def record_processing(
        self, queue: str, seconds: float, error: str | None = None, outcome: str | None = None
    ) -> None: ...


_MAX_DESCRIPTION = 1024


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_DESCRIPTION]


class SpanScope:
    """A span, current for a ``with`` block, ended on exit; errors set its status.

    An exception leaving the block, or one passed to :meth:`fail`, becomes
    the span's ``error.type``, an ``exception`` event (type and message, no
    stack trace: frames can hold payload data) and an ERROR status.
    ``asyncio.CancelledError`` is not an error. A span whose context is not
    valid (nothing to continue) is never made current.

    Example:
        >>> from queue_runtime.telemetry import Telemetry
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
            producer = producer_of(creation_context(message))
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


UNTRACED: Final = _Untraced(INVALID_SPAN)


class Settling:
    """The settle spans of one batch call, one per message (see :meth:`Telemetry.settle_each`).

    Call :meth:`ended` with the call's result for each receipt (``None`` or its
    error); an exception leaving the ``with`` block ends every span that is still
    open with it (cancellation is not an error).

    Example:
        >>> from queue_runtime.telemetry import Telemetry
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
        self,
        span: Span,
        telemetry: ProcessingRecorder,
        queue: str,
        context: Context | None = None,
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


UNTRACED_SETTLING: Final = Settling([])
"""What :meth:`Telemetry.settle_each` gives while tracing is off (shared: holds nothing)."""
