"""Structured log fields: what every queue-runtime log record carries in ``extra=``.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.telemetry.logs import log_fields
    >>> log_fields("send", "orders", qr.Message(b"{}", message_id="m-1"))["message_id"]
    'm-1'
"""

from __future__ import annotations

from typing import Final

from opentelemetry import trace

from queue_runtime.messages import Message, ReceivedMessage

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
