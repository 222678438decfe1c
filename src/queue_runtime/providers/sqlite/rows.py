"""Rows of the file as the store hands them around: session holds, deliveries, and the
SQL and conversions the store's parts share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson

from queue_runtime.clock import to_datetime
from queue_runtime.messages import QueueName

__all__ = ["BLOCKED", "COLUMNS", "Delivery", "SessionHold", "Times", "decode", "encode"]

COLUMNS: Final = (
    "seq, session_id, message_id, body, attributes, correlation_id, content_type, "
    "time_to_live, enqueued_at, delivery_count, first_delivered_at, delivered_at, token, "
    "locked_until, dead_letter_reason, dead_letter_description, dead_letter_properties"
)
BLOCKED: Final = (
    "SELECT session_id FROM messages WHERE queue = :queue AND dead = 0 "
    "AND token IS NOT NULL AND session_id IS NOT NULL "
    "UNION SELECT session_id FROM sessions WHERE queue = :queue "
    "AND token IS NOT NULL AND locked_until > :now"
)
"""Sessions that may not hand out a message now (read after a sweep): one of theirs
is in flight, or a consumer holds the session lock."""


@dataclass(slots=True, eq=False)
class SessionHold:
    """This process's hold on a session: the lock token stored in the file."""

    queue: QueueName
    session_id: str
    token: str
    locked_until: float
    closed: bool = False
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a receipt's ``native`` carries: the row, which queue half, the session hold."""

    seq: int
    dead: bool
    hold: SessionHold | None


def encode(mapping: Mapping[str, str] | None) -> bytes | None:
    return orjson.dumps(dict(mapping)) if mapping else None


def decode(blob: bytes | None) -> dict[str, str]:
    return orjson.loads(blob) if blob else {}


class Times(dict[float, datetime]):
    """Datetimes of Unix times, each made once (a batch's messages share most of theirs)."""

    def __missing__(self, timestamp: float) -> datetime:
        moment = self[timestamp] = to_datetime(timestamp)
        return moment
