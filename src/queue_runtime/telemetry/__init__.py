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

from queue_runtime.telemetry.conventions import (
    ABANDONED,
    ACTIVE_SESSIONS,
    BATCH_COUNT,
    CIRCUIT,
    CIRCUIT_STATE,
    CIRCUIT_VALUES,
    COMPLETED,
    CONSUMED,
    CONVERSATION_ID,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED,
    DELIVERY_COUNT,
    DESTINATION,
    DURATION_BUCKETS,
    ERROR_TYPE,
    IN_FLIGHT,
    INSTRUMENTATION_NAME,
    MESSAGE_ID,
    OPERATION_DURATION,
    OPERATION_NAME,
    OPERATION_TYPE,
    OTHER_ERROR,
    OUTCOME,
    PROCESS_DURATION,
    QUEUE,
    RETRIES,
    SENT,
    SYSTEM,
    error_type,
)
from queue_runtime.telemetry.instrumentation import Telemetry
from queue_runtime.telemetry.instruments import Observed
from queue_runtime.telemetry.logs import LOG_FIELDS, log_fields
from queue_runtime.telemetry.propagation import activate
from queue_runtime.telemetry.spans import Processing, Receiving, Settling, SpanScope

__all__ = [
    "ABANDONED",
    "ACTIVE_SESSIONS",
    "BATCH_COUNT",
    "CIRCUIT",
    "CIRCUIT_STATE",
    "CIRCUIT_VALUES",
    "COMPLETED",
    "CONSUMED",
    "CONVERSATION_ID",
    "DEAD_LETTERED",
    "DEAD_LETTER_QUEUE",
    "DELIVERY_COUNT",
    "DESTINATION",
    "DURATION_BUCKETS",
    "ERROR_TYPE",
    "INSTRUMENTATION_NAME",
    "IN_FLIGHT",
    "LOG_FIELDS",
    "MESSAGE_ID",
    "OPERATION_DURATION",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "OTHER_ERROR",
    "OUTCOME",
    "PROCESS_DURATION",
    "QUEUE",
    "RETRIES",
    "SENT",
    "SYSTEM",
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
