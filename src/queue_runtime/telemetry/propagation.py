"""Trace context in messages: injected on send, extracted once per received message,
and made current where a handler runs.

Example:
    >>> from queue_runtime.telemetry.propagation import activate
    >>> with activate(None):  # nothing to continue: nothing is attached
    ...     pass
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import Token
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanContext

from queue_runtime.messages import ReceivedMessage


class _AttributeSetter(Setter[dict[str, str]]):
    """Writes propagation fields (``traceparent``, ...) into message attributes."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = str(value)


ATTRIBUTE_SETTER: Final = _AttributeSetter()


_fields: tuple[object, frozenset[str]] = (None, frozenset())


def creation_context(message: ReceivedMessage) -> Context | None:
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


def producer_of(creation: Context | None) -> SpanContext | None:
    """The producer's span in a message's context, if it carries a valid one."""
    if creation is None:
        return None
    producer = trace.get_current_span(creation).get_span_context()
    return producer if producer.is_valid else None


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
