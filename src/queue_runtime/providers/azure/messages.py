"""Between the runtime's messages and the SDK's.

Outgoing, a :class:`~queue_runtime.messages.Message` becomes a
:class:`~azure.servicebus.ServiceBusMessage`: body as one AMQP data section,
attributes as application properties (strings), ids, content type, time to
live and scheduled enqueue time as the matching AMQP properties and
annotations. Incoming, a :class:`~azure.servicebus.ServiceBusReceivedMessage`
is read only through its public accessors.

Decisions:

* **Delivery count.** Service Bus puts *deliveries so far minus one* into the
  AMQP header (the AMQP meaning: failed attempts before this one), and the
  Python SDK reports that number as is (0 on a first delivery), unlike the
  .NET and Java SDKs which add one. The runtime's ``delivery_count`` is 1 on
  first delivery, so this module adds one.
* **Time to live.** The SDK stores a TTL in whole seconds (it truncates); a
  fractional TTL is rounded *up* so that it neither expires early nor, below one
  second, vanishes (the SDK would drop a zero TTL).
* **Dead-letter reason.** The service keeps a dead letter's reason and
  description as the application properties ``DeadLetterReason`` and
  ``DeadLetterErrorDescription``; they are surfaced as
  ``dead_letter_reason``/``dead_letter_description`` and removed from
  ``attributes`` so that a requeued copy does not carry them back. Both are cut
  to :data:`MAX_DEAD_LETTER_TEXT` characters when dead-lettering.
* **Dead-letter properties.** ``dead_letter_message`` in the SDK takes no
  application properties, so the extra attributes given when dead-lettering
  (the bot's failure record) travel in the description: the text, then
  :data:`PROPERTIES_MARKER` and the properties as compact JSON. Reading from the
  DLQ splits them off again: the description is the text, the properties join
  ``attributes``. If both do not fit :data:`MAX_DEAD_LETTER_TEXT`, the text is
  shortened first, then the largest properties are dropped.
* **Foreign producers.** Property values that are not strings (other senders
  may use ints, booleans, UUIDs) become their ``str()``; a message without a
  message id gets ``sequence-<n>``; non-data bodies are encoded as UTF-8 text.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.azure.messages import to_service_bus
    >>> sb = to_service_bus(qr.Message(b"hi", attributes={"k": "v"}, message_id="m-1"))
    >>> sb.message_id, sb.application_properties
    ('m-1', {'k': 'v'})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

import orjson
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.amqp import AmqpMessageBodyType

from queue_runtime.errors import ValidationError
from queue_runtime.messages import Message, ReceiptHandle, ReceivedMessage

__all__ = [
    "DEAD_LETTER_PROPERTIES",
    "MAX_DEAD_LETTER_TEXT",
    "MAX_PROPERTY_LENGTH",
    "PROPERTIES_MARKER",
    "attributes_of",
    "body_of",
    "pack_description",
    "to_received",
    "to_service_bus",
    "unpack_description",
]

MAX_PROPERTY_LENGTH: Final = 128
"""The SDK's limit on message id and session id length."""

MAX_DEAD_LETTER_TEXT: Final = 4096
"""Longest dead-letter reason or description sent (longer ones are cut)."""

DEAD_LETTER_PROPERTIES: Final = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})

PROPERTIES_MARKER: Final = "\n--queue_runtime.properties--\n"
"""Separates a dead letter's description from the properties packed after it."""


def pack_description(description: str | None, properties: Mapping[str, str] | None) -> str | None:
    """The description to send: the text, plus ``properties`` after the marker.

    Bounded by :data:`MAX_DEAD_LETTER_TEXT`: the text is shortened first, then
    the largest properties are dropped.

    Example:
        >>> packed = pack_description("boom", {"k": "v"})
        >>> unpack_description(packed)
        ('boom', {'k': 'v'})
    """
    extra = dict(properties or {})
    text = description or ""
    while extra:
        tail = PROPERTIES_MARKER + orjson.dumps(extra).decode()
        room = MAX_DEAD_LETTER_TEXT - len(tail)
        if room >= 0:
            if len(text) > room:
                text = text[: max(0, room - 3)] + "..." if room >= 3 else ""
            return text + tail
        del extra[max(extra, key=lambda name: len(extra[name]))]
    return None if description is None else description[:MAX_DEAD_LETTER_TEXT]


def unpack_description(text: str | None) -> tuple[str | None, dict[str, str]]:
    """Split a received description into the text and the packed properties."""
    if text is None or PROPERTIES_MARKER not in text:
        return text, {}
    head, _, tail = text.rpartition(PROPERTIES_MARKER)
    try:
        loaded = orjson.loads(tail)
    except orjson.JSONDecodeError:
        return text, {}
    if not isinstance(loaded, dict):
        return text, {}
    return head or None, {str(k): str(v) for k, v in loaded.items()}


def to_service_bus(message: Message) -> ServiceBusMessage:
    """The SDK message for ``message``; raises ValidationError for ids the SDK refuses."""
    if len(message.message_id) > MAX_PROPERTY_LENGTH:
        raise ValidationError(
            f"Service Bus allows at most {MAX_PROPERTY_LENGTH} characters, "
            f"got {len(message.message_id)}",
            field="message_id",
        )
    ttl = message.time_to_live
    return ServiceBusMessage(
        message.body,
        application_properties=dict(message.attributes) or None,  # type: ignore[arg-type]
        session_id=message.session_id,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        time_to_live=None if ttl is None else timedelta(seconds=math.ceil(ttl)),
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time,
    )


def body_of(message: ServiceBusReceivedMessage) -> bytes:
    """The body as bytes, whatever AMQP body type the sender used."""
    body = message.body
    if message.body_type is AmqpMessageBodyType.DATA:
        return b"".join(bytes(section) for section in body)
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return str(body).encode()


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if value is None:
        return ""
    return str(value)


def attributes_of(message: ServiceBusReceivedMessage, *, dead_letter: bool) -> dict[str, str]:
    """Application properties as ``str`` to ``str`` (DLQ bookkeeping removed)."""
    properties: Mapping[str | bytes, object] = message.application_properties or {}
    attributes = {_text(key): _text(value) for key, value in properties.items()}
    if dead_letter:
        for name in DEAD_LETTER_PROPERTIES:
            attributes.pop(name, None)
    return attributes


def to_received(
    message: ServiceBusReceivedMessage,
    *,
    receipt: ReceiptHandle,
    delivered_at: datetime,
    dead_letter: bool,
) -> ReceivedMessage:
    """The runtime's view of a received (or peeked) SDK message.

    ``first_delivered_at``: Service Bus does not report when a message was first
    delivered, so it is ``delivered_at`` on a first delivery and the enqueue
    time (the earliest it can have been) on a redelivery.
    """
    delivery_count = (message.delivery_count or 0) + 1
    enqueued_at = message.enqueued_time_utc or delivered_at
    ttl = message.time_to_live
    attributes = attributes_of(message, dead_letter=dead_letter)
    description: str | None = None
    if dead_letter:
        description, packed = unpack_description(message.dead_letter_error_description)
        attributes.update(packed)
    return ReceivedMessage(
        body=body_of(message),
        attributes=attributes,
        session_id=message.session_id,
        correlation_id=message.correlation_id,
        message_id=message.message_id or f"sequence-{message.sequence_number}",
        content_type=message.content_type,
        time_to_live=None if ttl is None else ttl.total_seconds(),
        delivery_count=delivery_count,
        enqueued_at=enqueued_at,
        first_delivered_at=delivered_at if delivery_count == 1 else enqueued_at,
        delivered_at=delivered_at,
        receipt=receipt,
        sequence_number=message.sequence_number,
        dead_letter_reason=message.dead_letter_reason if dead_letter else None,
        dead_letter_description=description,
    )
