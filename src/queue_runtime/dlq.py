"""Dead-letter queue tooling: failure records, listing, stats, requeue and purge.

Over a :class:`~queue_runtime.QueueClient`, for any provider:

* :func:`list_dead_letters` — the dead letters with reasons and failure records;
* :func:`dead_letter_stats` — counts by error type and by handler;
* :func:`requeue` — send (matching) dead letters back to their queue, with
  their session ids; each is sent first and removed from the DLQ only after
  the send succeeded, so a failure in between duplicates, never loses;
* :func:`purge` — delete (matching) dead letters.

When the bot dead-letters a message it adds a **failure record** as
attributes of the dead letter (readable from every provider's DLQ, see
:meth:`~queue_runtime.QueueClient.dead_letter_message`):

==========================================  ===========================================
attribute                                   meaning
==========================================  ===========================================
``queue_runtime.failure.reason``            error type (also ``dead_letter_reason``)
``queue_runtime.failure.handler``           handler class name (absent if none ran)
``queue_runtime.failure.queue``             the queue the message was taken from
``queue_runtime.failure.delivery_count``    the delivery on which it was dead-lettered
``queue_runtime.failure.first_failed_at``   first failure seen (ISO 8601, UTC)
``queue_runtime.failure.dead_lettered_at``  when it was dead-lettered (ISO 8601, UTC)
``queue_runtime.failure.attempts``          compact JSON: the last 10 failed attempts,
                                            ``[{"at": ..., "error": ..., "delivery": n}]``
``queue_runtime.failure.traceback``         only with ``Bot(failure_tracebacks=True)``:
                                            the end of the traceback, truncated
==========================================  ===========================================

The attempt history and first-failure time cover the attempts the bot's
process saw, across deliveries: a message that failed, was abandoned and came
back to the same process keeps its history (up to 10,000 such messages are
remembered per bot). Deliveries handled by another process are counted in
``delivery_count`` only.

Example:
    >>> from queue_runtime.dlq import FailureRecord
    >>> record = FailureRecord.from_attributes({
    ...     "queue_runtime.failure.reason": "ValueError",
    ...     "queue_runtime.failure.handler": "Pushes",
    ...     "queue_runtime.failure.attempts": '[{"at":"2026-01-01","error":"ValueError"}]',
    ... })
    >>> record.reason, record.handler, [a.error for a in record.attempts]
    ('ValueError', 'Pushes', ['ValueError'])

    >>> import asyncio
    >>> import queue_runtime as qr
    >>> from queue_runtime import dlq
    >>> async def main() -> tuple[dict[str, int], int, int]:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         for reason in ("ValueError", "ValueError", "KeyError"):
    ...             await client.send_message("jobs", qr.Message(reason.encode()))
    ...             [m] = await client.receive_messages("jobs", 1, timeout=0.1)
    ...             await client.dead_letter_message(m.receipt, reason)
    ...         stats = await dlq.dead_letter_stats(client, "jobs")
    ...         requeued = await dlq.requeue(
    ...             client, "jobs", predicate=lambda m: m.dead_letter_reason == "KeyError"
    ...         )
    ...         purged = await dlq.purge(client, "jobs")
    ...         return stats.by_reason, requeued, purged
    >>> asyncio.run(main())
    ({'ValueError': 2, 'KeyError': 1}, 1, 2)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from queue_runtime.client import QueueClient
from queue_runtime.messages import ReceivedMessage
from queue_runtime.telemetry import log_fields

__all__ = [
    "ATTEMPTS",
    "DEAD_LETTERED_AT",
    "DELIVERY_COUNT",
    "FAILURE_PREFIX",
    "FIRST_FAILED_AT",
    "HANDLER",
    "NO_HANDLER",
    "QUEUE",
    "REASON",
    "TRACEBACK",
    "Attempt",
    "DeadLetter",
    "DeadLetterStats",
    "FailureRecord",
    "Predicate",
    "Progress",
    "dead_letter_stats",
    "list_dead_letters",
    "purge",
    "requeue",
]

logger = logging.getLogger("queue_runtime.dlq")

Predicate = Callable[[ReceivedMessage], bool]
"""Selects dead letters: True means "this one"."""
Progress = Callable[[int], None]
"""Called with the running count after each message requeued or purged."""

NO_HANDLER: Final = "(none)"
"""The handler key in :class:`DeadLetterStats` of dead letters without a handler."""

FAILURE_PREFIX: Final = "queue_runtime.failure."
REASON: Final = FAILURE_PREFIX + "reason"
HANDLER: Final = FAILURE_PREFIX + "handler"
QUEUE: Final = FAILURE_PREFIX + "queue"
DELIVERY_COUNT: Final = FAILURE_PREFIX + "delivery_count"
FIRST_FAILED_AT: Final = FAILURE_PREFIX + "first_failed_at"
DEAD_LETTERED_AT: Final = FAILURE_PREFIX + "dead_lettered_at"
ATTEMPTS: Final = FAILURE_PREFIX + "attempts"
TRACEBACK: Final = FAILURE_PREFIX + "traceback"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt: when (ISO 8601, UTC), the error type, and on which delivery."""

    at: str
    error: str
    delivery: int | None = None


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """The failure record of a dead letter, read back from its attributes."""

    reason: str | None = None
    handler: str | None = None
    queue: str | None = None
    delivery_count: int | None = None
    first_failed_at: str | None = None
    dead_lettered_at: str | None = None
    attempts: tuple[Attempt, ...] = ()
    traceback: str | None = None

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> FailureRecord:
        """Parse what is there; missing or malformed parts are left empty."""
        count = attributes.get(DELIVERY_COUNT)
        return cls(
            reason=attributes.get(REASON),
            handler=attributes.get(HANDLER),
            queue=attributes.get(QUEUE),
            delivery_count=int(count) if count is not None and count.isdigit() else None,
            first_failed_at=attributes.get(FIRST_FAILED_AT),
            dead_lettered_at=attributes.get(DEAD_LETTERED_AT),
            attempts=_attempts(attributes.get(ATTEMPTS)),
            traceback=attributes.get(TRACEBACK),
        )


def _attempts(text: str | None) -> tuple[Attempt, ...]:
    if not text:
        return ()
    try:
        loaded = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(loaded, list):
        return ()
    return tuple(
        Attempt(
            str(item.get("at", "")),
            str(item.get("error", "")),
            delivery if isinstance(delivery := item.get("delivery"), int) else None,
        )
        for item in loaded
        if isinstance(item, dict)
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter with why it failed."""

    message: ReceivedMessage
    reason: str | None
    description: str | None
    failure: FailureRecord


@dataclass(frozen=True, slots=True)
class DeadLetterStats:
    """Dead letters counted by error type (reason) and by handler class."""

    total: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_handler: dict[str, int] = field(default_factory=dict)
    """Keyed by handler class name; :data:`NO_HANDLER` for letters without one."""


async def list_dead_letters(client: QueueClient, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters of ``queue`` with reasons, without locking them."""
    letters = await client.peek_dead_letters(queue, limit)
    return [
        DeadLetter(
            message=message,
            reason=message.dead_letter_reason,
            description=message.dead_letter_description,
            failure=FailureRecord.from_attributes(message.attributes),
        )
        for message in letters
    ]


async def dead_letter_stats(
    client: QueueClient, queue: str, limit: int = 10_000
) -> DeadLetterStats:
    """Counts of (up to ``limit``) dead letters of ``queue`` by error type and by handler."""
    letters = await list_dead_letters(client, queue, limit)
    reasons = Counter(letter.reason or letter.failure.reason or "unknown" for letter in letters)
    handlers = Counter(letter.failure.handler or NO_HANDLER for letter in letters)
    return DeadLetterStats(len(letters), dict(reasons), dict(handlers))


async def requeue(
    client: QueueClient,
    queue: str,
    predicate: Predicate | None = None,
    progress: Progress | None = None,
    *,
    max_messages: int | None = None,
) -> int:
    """Send the (matching) dead letters back to ``queue``; returns how many.

    Send first, then remove from the DLQ (see
    :meth:`~queue_runtime.QueueClient.requeue_dead_letters`): a failure in
    between leaves a duplicate, never a loss. Messages the predicate rejects
    stay in the DLQ.
    """
    requeued = await client.requeue_dead_letters(
        queue, predicate=predicate, max_messages=max_messages, progress=progress
    )
    logger.info("requeued %d dead letters", requeued, extra=log_fields("requeue", queue))
    return requeued


async def purge(
    client: QueueClient,
    queue: str,
    predicate: Predicate | None = None,
    progress: Progress | None = None,
    *,
    timeout: float = 1.0,
) -> int:
    """Delete the (matching) dead letters of ``queue``; returns how many were removed.

    Without a predicate this is one purge of the whole DLQ. With one, dead
    letters are received and the matching ones completed; the others are
    given back to the DLQ.
    """
    if predicate is None:
        purged = await client.purge_dead_letters(queue)
        if progress is not None:
            progress(purged)
        logger.info("purged %d dead letters", purged, extra=log_fields("purge", queue))
        return purged

    async def remove_matching(message: ReceivedMessage) -> bool:
        if not predicate(message):
            return False
        await client.complete_message(message.receipt)
        return True

    purged = await client.walk_dead_letters(
        queue, remove_matching, timeout=timeout, progress=progress
    )
    logger.info("purged %d dead letters", purged, extra=log_fields("purge", queue))
    return purged
