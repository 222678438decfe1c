"""The dead-letter actor: where messages that cannot succeed are escalated.

Session actors ask it to dead-letter a message with a reason (the error
type) and a description (message, attempts). It settles the message through
the client and keeps the most recent records for inspection.

Example:
    >>> from queue_runtime.actors.dead_letters import describe_failure
    >>> describe_failure(ValueError("bad payload"), delivery_count=5, attempts=3)
    'ValueError: bad payload (delivery 5, 3 attempts in this delivery)'
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from queue_runtime.actors.context import BotContext
from queue_runtime.actors.runtime import AsyncioActor
from queue_runtime.errors import QueueError
from queue_runtime.messages import ReceivedMessage

__all__ = ["DeadLetterActor", "DeadLetterRecord", "describe_failure"]

logger = logging.getLogger("queue_runtime.actors")

MAX_DESCRIPTION = 1024
KEEP_RECORDS = 1000


def describe_failure(error: BaseException, *, delivery_count: int, attempts: int) -> str:
    """A bounded, single-line description of why a message failed (no stack trace)."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    text += f" (delivery {delivery_count}, {attempts} attempts in this delivery)"
    return text[:MAX_DESCRIPTION]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    message_id: str
    session_id: str | None
    reason: str
    description: str


class DeadLetterActor(AsyncioActor):
    """Dead-letters messages for the bot and remembers the last ``KEEP_RECORDS`` of them."""

    def __init__(self, context: BotContext) -> None:
        super().__init__()
        self._context = context
        self.records: deque[DeadLetterRecord] = deque(maxlen=KEEP_RECORDS)

    async def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> bool:
        """Move ``message`` to the DLQ; False if the lock was already lost (it comes back)."""
        try:
            await self._context.client.dead_letter_message(message.receipt, reason, description)
        except QueueError as error:
            logger.warning(
                "could not dead-letter %s (%s); it will be delivered again",
                message.message_id,
                error,
                extra={"message_id": message.message_id, "session_id": message.session_id},
            )
            return False
        self.records.append(
            DeadLetterRecord(message.message_id, message.session_id, reason, description)
        )
        logger.warning(
            "dead-lettered %s: %s",
            message.message_id,
            reason,
            extra={"message_id": message.message_id, "session_id": message.session_id},
        )
        return True
