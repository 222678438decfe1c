"""Domain types: queue names, ids, receipts and messages.

Identifiers are ``str`` subclasses validated at construction, so a value of
type :class:`QueueName` is known to be valid wherever it travels, and plain
``str`` is accepted (and validated) by every public function.

Example:
    >>> import queue_runtime as qr
    >>> qr.QueueName("orders.fifo").is_fifo
    True
    >>> msg = qr.Message.from_json({"action": "opened"}, session_id="octo/repo/pull/1")
    >>> msg.body, msg.session_id
    (b'{"action":"opened"}', 'octo/repo/pull/1')
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from queue_runtime.errors import ValidationError

__all__ = [
    "Message",
    "MessageId",
    "QueueName",
    "ReceiptHandle",
    "ReceivedMessage",
    "SessionId",
]

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.fifo)?")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
MAX_QUEUE_NAME = 260
MAX_SESSION_ID = 128
MAX_ATTRIBUTE_NAME = 256


class QueueName(str):
    """A queue name: 1-260 chars of ``[A-Za-z0-9_-]``, optional ``.fifo`` suffix.

    No leading or trailing ``-`` and no ``--``. Providers add their own limits
    (SQS: at most 80 characters including ``.fifo``).
    """

    __slots__ = ()

    def __new__(cls, value: str) -> QueueName:
        if isinstance(value, QueueName):
            return value
        if not isinstance(value, str):
            raise ValidationError(f"must be a string, not {type(value).__name__}", field="queue")
        if not 1 <= len(value) <= MAX_QUEUE_NAME:
            raise ValidationError(
                f"must be 1-{MAX_QUEUE_NAME} characters, got {len(value)}", field="queue"
            )
        if not _QUEUE_NAME.fullmatch(value):
            raise ValidationError(
                f"{value!r} may only contain letters, digits, '_' and '-' "
                "(with an optional '.fifo' suffix)",
                field="queue",
            )
        stem = value.removesuffix(".fifo")
        if stem.startswith("-") or stem.endswith("-") or "--" in stem:
            raise ValidationError(
                f"{value!r} must not start or end with '-' or contain '--'", field="queue"
            )
        return super().__new__(cls, value)

    @property
    def is_fifo(self) -> bool:
        """True for SQS FIFO queue names (``.fifo`` suffix)."""
        return self.endswith(".fifo")


class SessionId(str):
    """A session id: 1-128 printable ASCII characters (0x20-0x7E).

    All messages with the same session id are delivered in send order, one at a time.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> SessionId:
        if isinstance(value, SessionId):
            return value
        if not isinstance(value, str):
            raise ValidationError(
                f"must be a string, not {type(value).__name__}", field="session_id"
            )
        if not 1 <= len(value) <= MAX_SESSION_ID:
            raise ValidationError(
                f"must be 1-{MAX_SESSION_ID} characters, got {len(value)}", field="session_id"
            )
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise ValidationError(
                "may only contain printable ASCII characters (0x20-0x7E)", field="session_id"
            )
        return super().__new__(cls, value)


class MessageId(str):
    """A message id: any non-empty string; :meth:`new` makes a UUID4."""

    __slots__ = ()

    def __new__(cls, value: str) -> MessageId:
        if isinstance(value, MessageId):
            return value
        if not isinstance(value, str):
            raise ValidationError(
                f"must be a string, not {type(value).__name__}", field="message_id"
            )
        if not value:
            raise ValidationError("must not be empty", field="message_id")
        return super().__new__(cls, value)

    @classmethod
    def new(cls) -> MessageId:
        """A fresh random (UUID4) id."""
        return cls(str(uuid.uuid4()))


def _optional(value: str | None, kind: type[str], field_name: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, not {type(value).__name__}", field=field_name)
    return kind(value)


def _attributes(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be a mapping of str to str", field="attributes")
    checked: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_ATTRIBUTE_NAME:
            raise ValidationError(
                f"names must be strings of 1-{MAX_ATTRIBUTE_NAME} characters, got {key!r}",
                field="attributes",
            )
        if not isinstance(item, str):
            raise ValidationError(
                f"value of {key!r} must be a string, not {type(item).__name__}",
                field="attributes",
            )
        checked[key] = item
    return checked


@dataclass(frozen=True, slots=True, eq=True)
class Message:
    """An outgoing message. The body is opaque bytes; routing metadata stays readable.

    ``session_id`` and ``message_id`` are validated and stored as
    :class:`SessionId` and :class:`MessageId` (a UUID4 when not given).
    ``time_to_live`` is in seconds; ``scheduled_enqueue_time`` (aware
    datetime) delays visibility until then.
    """

    body: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    session_id: str | None = None
    correlation_id: str | None = None
    message_id: str = field(default_factory=MessageId.new)
    content_type: str | None = None
    time_to_live: float | None = None
    scheduled_enqueue_time: datetime | None = None

    def __post_init__(self) -> None:
        body: Any = self.body
        if isinstance(body, bytearray | memoryview):
            object.__setattr__(self, "body", bytes(body))
        elif not isinstance(body, bytes):
            raise ValidationError(
                f"must be bytes, not {type(body).__name__} (encode text first, "
                "or use Message.from_json)",
                field="body",
            )
        object.__setattr__(self, "attributes", _attributes(self.attributes))
        object.__setattr__(self, "session_id", _optional(self.session_id, SessionId, "session_id"))
        object.__setattr__(self, "message_id", MessageId(self.message_id))
        if self.correlation_id is not None and not isinstance(self.correlation_id, str):
            raise ValidationError("must be a string", field="correlation_id")
        ttl = self.time_to_live
        if ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl < math.inf
        ):
            raise ValidationError("must be a positive number of seconds", field="time_to_live")
        if self.content_type is not None and not isinstance(self.content_type, str):
            raise ValidationError("must be a string", field="content_type")
        when = self.scheduled_enqueue_time
        if when is not None and (not isinstance(when, datetime) or when.tzinfo is None):
            raise ValidationError(
                "must be a timezone-aware datetime", field="scheduled_enqueue_time"
            )

    @classmethod
    def from_json(cls, payload: Any, **fields: Any) -> Message:
        """A message whose body is ``payload`` serialised with orjson."""
        fields.setdefault("content_type", "application/json")
        return cls(orjson.dumps(payload), **fields)

    @property
    def size(self) -> int:
        """Bytes counted against size limits: body plus attribute names and values."""
        return len(self.body) + sum(
            len(key.encode()) + len(value.encode()) for key, value in self.attributes.items()
        )

    def __repr__(self) -> str:
        return (
            f"Message(message_id={self.message_id!r}, session_id={self.session_id!r}, "
            f"body=<{len(self.body)} bytes>)"
        )


class ReceiptHandle:
    """Proof of a delivery, needed to settle it. Opaque to users.

    It knows the provider instance, the queue (and whether the message came
    from the dead-letter queue) and when its lock expires. Its token is random
    and only valid in the queue it was issued for, so it cannot be replayed
    against another queue. ``native`` is for the adapter that issued it.
    """

    __slots__ = ("_locked_until", "dead_letter", "native", "provider_id", "queue", "token")

    def __init__(
        self,
        *,
        provider_id: str,
        queue: QueueName,
        token: str,
        locked_until: datetime,
        dead_letter: bool = False,
        native: object = None,
    ) -> None:
        self.provider_id = provider_id
        self.queue = queue
        self.token = token
        self.dead_letter = dead_letter
        self.native = native
        self._locked_until = locked_until

    @property
    def locked_until(self) -> datetime:
        """When the lock (visibility timeout) expires, as last known."""
        return self._locked_until

    def extend(self, locked_until: datetime) -> None:
        """Record a renewed lock. Called by providers after a successful renewal."""
        self._locked_until = locked_until

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ReceiptHandle)
            and self.provider_id == other.provider_id
            and self.queue == other.queue
            and self.token == other.token
        )

    def __hash__(self) -> int:
        return hash((self.provider_id, self.queue, self.token))

    def __repr__(self) -> str:
        where = f"{self.queue}/$deadletter" if self.dead_letter else self.queue
        return f"ReceiptHandle(queue={where!r}, locked_until={self._locked_until.isoformat()})"


@dataclass(frozen=True, slots=True, eq=False)
class ReceivedMessage:
    """A delivered message: what was sent, plus delivery facts and the receipt.

    ``delivery_count`` is 1 on first delivery. ``dead_letter_reason`` and
    ``dead_letter_description`` are set when the message was read from a DLQ.
    """

    body: bytes
    attributes: Mapping[str, str]
    session_id: str | None
    correlation_id: str | None
    message_id: str
    content_type: str | None
    time_to_live: float | None
    delivery_count: int
    enqueued_at: datetime
    first_delivered_at: datetime
    delivered_at: datetime
    receipt: ReceiptHandle
    sequence_number: int | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    _trace: Any = field(default=None, init=False, repr=False, compare=False)
    """The trace context the attributes carry, once telemetry has extracted it (a memo:
    the receive span and the process span both need it; see queue_runtime.telemetry)."""

    @property
    def locked_until(self) -> datetime:
        """When the lock on this delivery expires (follows renewals)."""
        return self.receipt.locked_until

    def json(self) -> Any:
        """The body parsed as JSON (orjson)."""
        return orjson.loads(self.body)

    def to_message(self, **changes: Any) -> Message:
        """An outgoing copy (same id, body, attributes, session) for forwarding or replay."""
        fields: dict[str, Any] = {
            "body": self.body,
            "attributes": dict(self.attributes),
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "message_id": self.message_id,
            "content_type": self.content_type,
            "time_to_live": self.time_to_live,
        }
        fields.update(changes)
        return Message(**fields)

    def __repr__(self) -> str:
        return (
            f"ReceivedMessage(message_id={self.message_id!r}, session_id={self.session_id!r}, "
            f"delivery_count={self.delivery_count}, body=<{len(self.body)} bytes>)"
        )
