"""The names queue-runtime's telemetry uses: attributes, instruments, histogram buckets.

They follow the OpenTelemetry messaging semantic conventions, plus queue-runtime's
own (``queue``, ``queue_runtime.*``); :func:`error_type` keeps ``error.type`` to
a low-cardinality identifier.

Example:
    >>> from queue_runtime.telemetry.conventions import PROCESS_DURATION, error_type
    >>> PROCESS_DURATION, error_type(KeyError("x"))
    ('messaging.process.duration', 'KeyError')
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

INSTRUMENTATION_NAME: Final = "queue_runtime"
"""The tracer and meter name (the instrumentation scope)."""

try:
    PACKAGE_VERSION = importlib.metadata.version("queue-runtime")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    PACKAGE_VERSION = "unknown"

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

OPERATION_TYPES: Final = {
    "send": "send",
    "receive": "receive",
    "session_receive": "receive",
    "complete": "settle",
    "abandon": "settle",
    "dead_letter": "settle",
    "process": "process",
}
SETTLE_COUNTERS: Final = {
    "complete": COMPLETED,
    "abandon": ABANDONED,
    "dead_letter": DEAD_LETTERED,
}
_MAX_ERROR_TYPE = 64


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


def operation_name(operation: str) -> str:
    return "receive" if operation == "session_receive" else operation
