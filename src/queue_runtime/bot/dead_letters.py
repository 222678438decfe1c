"""The dead-letter actor: where messages that cannot succeed are escalated.

Session actors ask it to dead-letter a message with a reason (the error
type), a description (message, attempts) and a failure record (see
:mod:`queue_runtime.dlq`: handler, original queue, attempt history, times;
a traceback only when the bot was built with ``failure_tracebacks=True``).
It settles the message through the client.

Example:
    >>> from queue_runtime.bot.dead_letters import (
    ...     FailureHistory, describe_failure, failure_properties
    ... )
    >>> describe_failure(ValueError("bad payload"), delivery_count=5, attempts=3)
    'ValueError: bad payload (delivery 5, 3 attempts in this delivery)'
    >>> history = FailureHistory()
    >>> history.add(0.0, ValueError("bad"))
    >>> record = failure_properties(
    ...     reason="ValueError", queue="events", handler="Pushes", delivery_count=5,
    ...     history=history, now=1.0,
    ... )
    >>> record["queue_runtime.failure.attempts"]
    '[{"at":"1970-01-01T00:00:00.000+00:00","error":"ValueError"}]'
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from opentelemetry.context import Context

from queue_runtime import dlq
from queue_runtime.actors import AsyncioActor
from queue_runtime.bot.context import BotContext
from queue_runtime.bot.settling import settle_in_rounds
from queue_runtime.errors import QueueError
from queue_runtime.messages import ReceivedMessage
from queue_runtime.telemetry import activate, log_fields

__all__ = [
    "DeadLetterActor",
    "FailureHistories",
    "FailureHistory",
    "describe_failure",
    "failure_properties",
]

logger = logging.getLogger("queue_runtime.bot")

MAX_DESCRIPTION = 1024
KEEP_ATTEMPTS = 10
"""Failed attempts kept in a failure record (the most recent ones)."""
KEEP_HISTORIES = 10_000
"""Messages whose failures are remembered between deliveries."""
MAX_TRACEBACK = 2048
"""Characters of a traceback kept (its end: the innermost frames and the error)."""


def describe_failure(error: BaseException, *, delivery_count: int, attempts: int) -> str:
    """A bounded, single-line description of why a message failed (no stack trace).

    A long error text is cut, never the delivery and attempt counts after it.

    Example:
        >>> text = describe_failure(ValueError("x" * 5000), delivery_count=2, attempts=3)
        >>> len(text), text[-47:]
        (1024, 'xx... (delivery 2, 3 attempts in this delivery)')
    """
    text = " ".join(f"{type(error).__name__}: {error}".splitlines())
    counts = f" (delivery {delivery_count}, {attempts} attempts in this delivery)"
    room = MAX_DESCRIPTION - len(counts)
    if len(text) > room:
        text = text[: room - 3] + "..."
    return text + counts


@dataclass(slots=True)
class FailureHistory:
    """The failed attempts of one message as this process saw them (the last few),
    across its deliveries."""

    attempts: deque[tuple[float, str, int | None]] = field(
        default_factory=lambda: deque(maxlen=KEEP_ATTEMPTS)
    )
    first_at: float | None = None
    last_error: BaseException | None = None
    handlings: int = 0
    """Handlings that failed: each one all of the retry policy's attempts, in place."""

    def add(self, at: float, error: BaseException, delivery: int | None = None) -> None:
        """Record a failed attempt at ``at`` (Unix seconds), on delivery ``delivery``."""
        if self.first_at is None:
            self.first_at = at
        self.attempts.append((at, type(error).__name__, delivery))
        self.last_error = error


class FailureHistories:
    """Failure histories by message id, so that a failure record spans deliveries.

    A message that failed and was abandoned usually comes back to the same
    process; its history is waiting for it. Bounded: beyond ``limit``
    messages the least recently failed are forgotten (their records then
    start again). Entries are dropped when a message is completed or
    dead-lettered.

    Example:
        >>> histories = FailureHistories(limit=2)
        >>> histories.of("m1").add(0.0, ValueError("bad"), delivery=1)
        >>> histories.of("m1").add(1.0, ValueError("bad"), delivery=2)
        >>> len(histories.of("m1").attempts)
        2
        >>> histories.forget("m1"); len(histories.of("m1").attempts)
        0
    """

    def __init__(self, limit: int = KEEP_HISTORIES) -> None:
        self._limit = limit
        self._histories: OrderedDict[str, FailureHistory] = OrderedDict()

    def of(self, message_id: str) -> FailureHistory:
        """The history of ``message_id`` (a new, empty one if none is kept)."""
        history = self._histories.get(message_id)
        if history is None:
            history = self._histories[message_id] = FailureHistory()
            if len(self._histories) > self._limit:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(message_id)
        return history

    def get(self, message_id: str) -> FailureHistory | None:
        """The history of ``message_id`` if one is kept (nothing is made)."""
        return self._histories.get(message_id)

    def forget(self, message_id: str) -> None:
        self._histories.pop(message_id, None)

    def __len__(self) -> int:
        return len(self._histories)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _attempt(at: float, error: str, delivery: int | None) -> dict[str, object]:
    entry: dict[str, object] = {"at": _iso(at), "error": error}
    if delivery is not None:
        entry["delivery"] = delivery
    return entry


def _traceback(error: BaseException) -> str:
    """The traceback of ``error`` in at most ``MAX_TRACEBACK`` characters: the error
    line (cut to a quarter of that) and as many innermost frames as fit."""
    head = "Traceback (most recent call last):\n"
    last = "".join(traceback.format_exception_only(error))
    if len(last) > MAX_TRACEBACK // 4:
        last = last[: MAX_TRACEBACK // 4 - 4] + "...\n"
    frames = "".join(traceback.format_tb(error.__traceback__))
    room = MAX_TRACEBACK - len(head) - len(last)
    if len(frames) > room:
        frames = "  ...\n" + frames[len(frames) - room + 6 :]
    return head + frames + last


def failure_properties(
    *,
    reason: str,
    queue: str,
    handler: str | None,
    delivery_count: int,
    history: FailureHistory,
    now: float,
    error: BaseException | None = None,
    tracebacks: bool = False,
) -> dict[str, str]:
    """The failure record of a dead letter, as attributes (see :mod:`queue_runtime.dlq`).

    No stack trace unless ``tracebacks`` (it may hold payload data or secrets).
    """
    record = {
        dlq.REASON: reason,
        dlq.QUEUE: queue,
        dlq.DELIVERY_COUNT: str(delivery_count),
        dlq.FIRST_FAILED_AT: _iso(history.first_at if history.first_at is not None else now),
        dlq.DEAD_LETTERED_AT: _iso(now),
        dlq.ATTEMPTS: orjson.dumps(
            [_attempt(at, name, delivery) for at, name, delivery in history.attempts]
        ).decode(),
    }
    if handler is not None:
        record[dlq.HANDLER] = handler
    error = error if error is not None else history.last_error
    if tracebacks and error is not None:
        record[dlq.TRACEBACK] = _traceback(error)
    return record


class DeadLetterActor(AsyncioActor):
    """Dead-letters messages for the bot."""

    def __init__(self, context: BotContext) -> None:
        super().__init__()
        self._context = context

    async def dead_letter(
        self,
        message: ReceivedMessage,
        reason: str,
        description: str,
        properties: Mapping[str, str] | None = None,
        trace_context: Context | None = None,
    ) -> bool:
        """Move ``message`` to the DLQ (with ``properties``, its failure record);
        False if the lock was already lost (it comes back). ``trace_context``: the
        processing span the dead-letter span belongs under."""
        client = self._context.client
        retry = self._context.settings.retry
        try:
            with activate(trace_context):
                await settle_in_rounds(
                    lambda: client.dead_letter_message(
                        message.receipt, reason, description, properties
                    ),
                    "dead_letter",
                    pause=lambda round: asyncio.sleep(retry.delay(round)),
                    too_late=self._context.too_late,
                )
        except QueueError as error:
            logger.warning(
                "could not dead-letter %s (%s); it will be delivered again",
                message.message_id,
                error,
                extra=log_fields("dead_letter", None, message),
            )
            return False
        logger.warning(
            "dead-lettered %s: %s",
            message.message_id,
            reason,
            extra=log_fields("dead_letter", None, message),
        )
        return True
