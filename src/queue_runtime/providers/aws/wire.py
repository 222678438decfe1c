"""How a :class:`~queue_runtime.messages.Message` travels through SQS, and back.

SQS knows a text body (restricted characters, at least one of them) and at most
ten typed message attributes; it assigns its own message ids. What does not fit
that model travels in **one** reserved String attribute, ``qr.meta``, holding
compact JSON:

=====  =====================================================================
key    meaning
=====  =====================================================================
id     the runtime's message id (always present)
s      session id (FIFO queues also carry it as ``MessageGroupId``)
c, t   correlation id, content type
l      time to live in seconds (SQS has none; checked on receive)
b      body encoding: absent = the SQS body is the UTF-8 body; ``"a"`` = the
       body is the Binary attribute ``qr.body``; ``"e"`` = empty body
a      user attributes SQS cannot carry natively (names or values outside
       SQS's character rules, empty values, or more than the free slots);
       on a dead letter also the properties given when dead-lettering
d      dead-letter record: reason ``r``, description ``d``, delivery count
       ``n``, original enqueue time ``q`` and first delivery ``f`` (Unix ms),
       source queue ``src``
=====  =====================================================================

User attributes become String ``MessageAttributes`` as long as SQS accepts
them (nine slots, eight when the body needs ``qr.body``). Names starting with
``qr.`` are reserved and rejected.

Sizes are counted the way SQS counts them: body plus, for each attribute, its
name, its data type string and its value. FIFO deduplication ids are a hash of
the complete entry (which includes the message id): a retried send of the same
message is dropped by SQS within its five-minute window, while a requeued or
changed copy with the same id is not.

Example:
    >>> import queue_runtime as qr
    >>> out = encode(qr.Message(b"hi", message_id="m-1"), fifo=False, now=0.0)
    >>> out.body, out.attributes["qr.meta"]["StringValue"], out.size
    ('hi', '{"id":"m-1"}', 27)
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from queue_runtime.errors import MessageTooLargeError, SessionsNotSupportedError, ValidationError
from queue_runtime.messages import Message, SessionId

__all__ = [
    "BODY_ATTRIBUTE",
    "MAX_ATTRIBUTES",
    "MAX_DELAY",
    "MAX_MESSAGE_SIZE",
    "METADATA_RESERVE",
    "META_ATTRIBUTE",
    "RESERVED_PREFIX",
    "DeadLetterRecord",
    "Incoming",
    "Outgoing",
    "dead_letter_copy",
    "decode",
    "encode",
]

MAX_MESSAGE_SIZE: Final = 262_144
"""SQS's limit for one message, and for the sum of a batch (body + attributes)."""
METADATA_RESERVE: Final = 2_048
"""Bytes of each message kept for ``qr.meta``, data type strings and dead-letter records."""
MAX_ATTRIBUTES: Final = 10
MAX_DELAY: Final = 900
META_ATTRIBUTE: Final = "qr.meta"
BODY_ATTRIBUTE: Final = "qr.body"
RESERVED_PREFIX: Final = "qr."
_PLACEHOLDER: Final = "."
_STRING: Final = "String"
_BINARY: Final = "Binary"
_MAX_NAME: Final = 256
MAX_REASON: Final = 256

# Characters SQS refuses in bodies and String values (XML 1.0 rules).
_NOT_SQS_TEXT: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_GROUP_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")


def is_sqs_text(text: str) -> bool:
    """True if SQS accepts ``text`` as a body or String value (it must also be non-empty)."""
    return bool(text) and _NOT_SQS_TEXT.search(text) is None


def _native_name(name: str) -> bool:
    lowered = name.lower()
    return (
        len(name) <= _MAX_NAME
        and _ATTRIBUTE_NAME.fullmatch(name) is not None
        and not lowered.startswith(("aws.", "amazon."))
    )


def _json(value: Mapping[str, Any]) -> str:
    text = orjson.dumps(value).decode()
    if not is_sqs_text(text):  # e.g. U+FFFE inside a value: escape everything non-ASCII
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def _string(value: str) -> dict[str, Any]:
    return {"DataType": _STRING, "StringValue": value}


def _attribute_size(name: str, attribute: Mapping[str, Any]) -> int:
    value = attribute.get("StringValue")
    data = value.encode() if isinstance(value, str) else bytes(attribute.get("BinaryValue") or b"")
    return len(name.encode()) + len(str(attribute["DataType"]).encode()) + len(data)


def _size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    return len(body.encode()) + sum(_attribute_size(k, v) for k, v in attributes.items())


def _dedup_id(group_id: str, body: str, attributes: Mapping[str, Mapping[str, Any]]) -> str:
    digest = hashlib.sha256()
    for text in (group_id, body):
        digest.update(text.encode())
        digest.update(b"\x00")
    for name in sorted(attributes):
        attribute = attributes[name]
        value = attribute.get("StringValue")
        data = value.encode() if isinstance(value, str) else bytes(attribute["BinaryValue"])
        for part in (name.encode(), str(attribute["DataType"]).encode(), data):
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
    return digest.hexdigest()


TRACE_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
"""W3C trace-context attributes: new on every send, so not part of a message's identity."""


def _message_dedup_id(group_id: str, message: Message) -> str:
    """FIFO deduplication id of a message: everything that makes it this message, except
    trace context — re-sending a message (a GitHub redelivery, say) from another trace
    must still be recognised as the same message within SQS's five-minute window."""
    digest = hashlib.sha256()
    parts = [
        group_id,
        message.message_id,
        message.correlation_id or "",
        message.content_type or "",
        "" if message.time_to_live is None else repr(message.time_to_live),
    ]
    for name in sorted(message.attributes):
        if name.lower() not in TRACE_FIELDS:
            parts += [name, message.attributes[name]]
    for part in (*(text.encode() for text in parts), message.body):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.hexdigest()


def _plain_group(message_id: str) -> str:
    """The MessageGroupId of a message without session on a FIFO queue: its own group."""
    return "qr-" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message in SQS terms, ready for ``SendMessageBatch``."""

    message_id: str
    body: str
    attributes: dict[str, dict[str, Any]]
    group_id: str | None
    delay: int
    size: int
    dedup_id: str | None = None
    """FIFO deduplication id; None: a hash of the whole entry."""

    def entry(self, entry_id: str) -> dict[str, Any]:
        """The ``SendMessageBatch`` entry (with group and deduplication id on FIFO queues)."""
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": self.body}
        if self.attributes:
            entry["MessageAttributes"] = self.attributes
        if self.delay:
            entry["DelaySeconds"] = self.delay
        if self.group_id is not None:
            entry["MessageGroupId"] = self.group_id
            entry["MessageDeduplicationId"] = self.dedup_id or _dedup_id(
                self.group_id, self.body, self.attributes
            )
        return entry


def encode(message: Message, *, fifo: bool, now: float) -> Outgoing:
    """Translate ``message`` for a FIFO or standard queue; ``now`` is for scheduling.

    Raises ValidationError (reserved attribute names, session ids SQS refuses,
    delays SQS cannot express), SessionsNotSupportedError (a session on a
    standard queue) and MessageTooLargeError (counted the SQS way).
    """
    meta: dict[str, Any] = {"id": message.message_id}
    for name in message.attributes:
        if name.lower().startswith(RESERVED_PREFIX):
            raise ValidationError(
                f"attribute names starting with {RESERVED_PREFIX!r} are reserved for the "
                f"runtime, got {name!r}",
                field="attributes",
                message_id=message.message_id,
            )
    group_id: str | None = None
    if message.session_id is not None:
        if not fifo:
            raise SessionsNotSupportedError(
                "standard SQS queues have no sessions; use a .fifo queue",
                message_id=message.message_id,
            )
        if not _GROUP_ID.fullmatch(message.session_id):
            raise ValidationError(
                "SQS FIFO group ids may not contain spaces (printable ASCII 0x21-0x7E)",
                field="session_id",
                message_id=message.message_id,
            )
        meta["s"] = message.session_id
        group_id = message.session_id
    elif fifo:
        group_id = _plain_group(message.message_id)
    if message.correlation_id is not None:
        meta["c"] = message.correlation_id
    if message.content_type is not None:
        meta["t"] = message.content_type
    if message.time_to_live is not None:
        meta["l"] = message.time_to_live

    delay = 0
    if message.scheduled_enqueue_time is not None:
        delay = max(0, math.ceil(message.scheduled_enqueue_time.timestamp() - now))
        if delay and fifo:
            raise ValidationError(
                "SQS FIFO queues cannot delay single messages; schedule on a standard queue",
                field="scheduled_enqueue_time",
                message_id=message.message_id,
            )
        if delay > MAX_DELAY:
            raise ValidationError(
                f"SQS delays messages by at most {MAX_DELAY} s, asked for {delay} s",
                field="scheduled_enqueue_time",
                message_id=message.message_id,
            )

    attributes: dict[str, dict[str, Any]] = {}
    text: str | None = None
    if message.body:
        try:
            decoded = message.body.decode()
        except UnicodeDecodeError:
            decoded = ""
        text = decoded if is_sqs_text(decoded) else None
    if text is None:
        if message.body:
            meta["b"] = "a"
            attributes[BODY_ATTRIBUTE] = {"DataType": _BINARY, "BinaryValue": message.body}
        else:
            meta["b"] = "e"
        text = _PLACEHOLDER

    free = MAX_ATTRIBUTES - 1 - len(attributes)
    overflow: dict[str, str] = {}
    for name, value in message.attributes.items():
        if free > 0 and _native_name(name) and is_sqs_text(value):
            attributes[name] = _string(value)
            free -= 1
        else:
            overflow[name] = value
    if overflow:
        meta["a"] = overflow
    attributes[META_ATTRIBUTE] = _string(_json(meta))

    size = _size(text, attributes)
    if size > MAX_MESSAGE_SIZE:
        raise MessageTooLargeError(
            size, MAX_MESSAGE_SIZE, operation="send", message_id=message.message_id
        )
    dedup_id = None if group_id is None else _message_dedup_id(group_id, message)
    return Outgoing(message.message_id, text, attributes, group_id, delay, size, dedup_id)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """Why and when a message was dead-lettered (from ``qr.meta``'s ``d``)."""

    reason: str
    description: str | None
    delivery_count: int | None
    enqueued_ms: int | None
    first_delivered_ms: int | None
    source: str | None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received SQS message, decoded."""

    sqs_id: str
    handle: str
    body: bytes
    attributes: dict[str, str]
    message_id: str
    session_id: SessionId | None
    correlation_id: str | None
    content_type: str | None
    time_to_live: float | None
    group_id: str | None
    receive_count: int
    sent_at: float
    first_received_at: float | None
    sequence_number: int | None
    dead_letter: DeadLetterRecord | None
    raw: dict[str, Any] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)

    @property
    def expires_at(self) -> float | None:
        """When the time to live runs out (Unix seconds), counted from the SQS send time."""
        return None if self.time_to_live is None else self.sent_at + self.time_to_live


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _meta(raw_attributes: Mapping[str, Any]) -> dict[str, Any]:
    value = (raw_attributes.get(META_ATTRIBUTE) or {}).get("StringValue")
    if not isinstance(value, str):
        return {}
    try:
        meta = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def decode(raw: dict[str, Any]) -> Incoming:
    """Decode one message of a ``ReceiveMessage`` response (any producer's, not only ours)."""
    system: dict[str, Any] = raw.get("Attributes") or {}
    raw_attributes: dict[str, Any] = raw.get("MessageAttributes") or {}
    meta = _meta(raw_attributes)

    encoding = meta.get("b")
    if encoding == "a":
        body = bytes((raw_attributes.get(BODY_ATTRIBUTE) or {}).get("BinaryValue") or b"")
    elif encoding == "e":
        body = b""
    else:
        body = str(raw.get("Body", "")).encode()

    attributes: dict[str, str] = {}
    for name, attribute in raw_attributes.items():
        if name.lower().startswith(RESERVED_PREFIX):
            continue
        value = attribute.get("StringValue")
        if isinstance(value, str):
            attributes[name] = value
        elif attribute.get("BinaryValue") is not None:
            attributes[name] = base64.b64encode(bytes(attribute["BinaryValue"])).decode()
    extra = meta.get("a")
    if isinstance(extra, dict):
        attributes.update({str(k): str(v) for k, v in extra.items()})

    group_id = _text(system.get("MessageGroupId"))
    session: str | None = _text(meta.get("s")) if meta else group_id
    try:
        session_id = SessionId(session) if session is not None else None
    except ValidationError:
        session_id = None
    ttl = meta.get("l")
    record = meta.get("d")
    dead_letter = None
    if isinstance(record, dict):
        dead_letter = DeadLetterRecord(
            reason=str(record.get("r") or "DeadLettered"),
            description=_text(record.get("d")),
            delivery_count=_int(record.get("n")),
            enqueued_ms=_int(record.get("q")),
            first_delivered_ms=_int(record.get("f")),
            source=_text(record.get("src")),
        )
    sent = _int(system.get("SentTimestamp"))
    first = _int(system.get("ApproximateFirstReceiveTimestamp"))
    return Incoming(
        sqs_id=str(raw["MessageId"]),
        handle=str(raw["ReceiptHandle"]),
        body=body,
        attributes=attributes,
        message_id=_text(meta.get("id")) or str(raw["MessageId"]),
        session_id=session_id,
        correlation_id=_text(meta.get("c")),
        content_type=_text(meta.get("t")),
        time_to_live=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
        group_id=group_id,
        receive_count=max(1, _int(system.get("ApproximateReceiveCount")) or 1),
        sent_at=sent / 1000 if sent is not None else 0.0,
        first_received_at=first / 1000 if first is not None else None,
        sequence_number=_int(system.get("SequenceNumber")),
        dead_letter=dead_letter,
        raw=raw,
        meta=meta,
    )


def _copy_attribute(attribute: Mapping[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = {"DataType": attribute["DataType"]}
    for key in ("StringValue", "BinaryValue"):
        if attribute.get(key) is not None:
            copy[key] = attribute[key]
    return copy


def dead_letter_copy(
    message: Incoming,
    *,
    reason: str,
    description: str | None,
    delivery_count: int,
    source: str,
    fifo: bool,
    properties: Mapping[str, str] | None = None,
) -> Outgoing:
    """The copy of ``message`` for the DLQ: same body and attributes plus a dead-letter record.

    ``properties`` (extra attributes, e.g. the bot's failure record) join the
    overflow attributes in ``qr.meta``'s ``a``, so they decode as attributes.
    If the copy would not fit into SQS's size limit, the description is
    shortened first, then the largest properties are dropped (never the message).
    """
    raw_attributes: dict[str, Any] = message.raw.get("MessageAttributes") or {}
    attributes = {
        name: _copy_attribute(attribute)
        for name, attribute in raw_attributes.items()
        if name != META_ATTRIBUTE
    }
    meta = dict(message.meta) or {"id": message.message_id}
    if "s" not in meta and message.session_id is not None:
        meta["s"] = message.session_id
    record: dict[str, Any] = {"r": reason[:MAX_REASON], "n": delivery_count, "src": source}
    record["q"] = round(message.sent_at * 1000)
    if message.first_received_at is not None:
        record["f"] = round(message.first_received_at * 1000)
    body = str(message.raw.get("Body") or _PLACEHOLDER)
    base = _size(body, attributes)

    found = meta.get("a")
    overflow: dict[str, Any] = found if isinstance(found, dict) else {}
    extra = dict(properties or {})

    def build(text: str | None) -> tuple[dict[str, dict[str, Any]], int]:
        meta["d"] = {**record, "d": text} if text is not None else record
        if overflow or extra:
            meta["a"] = {**overflow, **extra}
        full = {**attributes, META_ATTRIBUTE: _string(_json(meta))}
        return full, base + _attribute_size(META_ATTRIBUTE, full[META_ATTRIBUTE])

    full, size = build(description)
    if size > MAX_MESSAGE_SIZE and description:
        keep = max(0, len(description) - (size - MAX_MESSAGE_SIZE) - 8)
        description = description[:keep] + "..." if keep else None
        full, size = build(description)
    while size > MAX_MESSAGE_SIZE and extra:
        del extra[max(extra, key=lambda name: len(extra[name]))]
        full, size = build(description)
    if size > MAX_MESSAGE_SIZE:
        raise MessageTooLargeError(
            size, MAX_MESSAGE_SIZE, operation="dead_letter", message_id=message.message_id
        )
    group_id: str | None = None
    dedup_id: str | None = None
    if fifo:
        group_id = message.group_id or (
            message.session_id if message.session_id else _plain_group(message.message_id)
        )
        # one copy per SQS message: a copy sent again (a retry after a lost answer)
        # within SQS's five-minute window is dropped, whatever its record says
        identity = f"dead-letter\x00{source}\x00{message.sqs_id}"
        dedup_id = hashlib.sha256(identity.encode()).hexdigest()
    return Outgoing(message.message_id, body, full, group_id, 0, size, dedup_id)
