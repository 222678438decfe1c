"""Dead-letter queue tooling: peek at and purge an SQS DLQ.

SQS has no peek: :meth:`DeadLetterTools.peek` receives with a short visibility
and releases at once. A purge is SQS's ``PurgeQueue`` (one per queue every 60
seconds), after counting what it removes. Receiving dead letters for keeps is
an ordinary receive of the DLQ (:class:`.receiving.Receiving`).

Example:
    >>> # tools = DeadLetterTools(transport, settler, receiving, clock, wait=20)
    >>> # peeked = await tools.peek(dlq_state, 10)
    >>> # removed = await tools.purge(dlq_state)
"""

from __future__ import annotations

from typing import Final

from queue_runtime.clock import Clock
from queue_runtime.messages import ReceivedMessage

from .inflight import Ledger, QueueState
from .receiving import Receiving
from .settling import Settler
from .transport import MAX_BATCH, SqsTransport
from .wire import Incoming, decode

__all__ = ["PEEK_VISIBILITY", "DeadLetterTools"]

PEEK_VISIBILITY: Final = 30
"""Seconds a peeked message stays invisible if releasing it fails."""


class DeadLetterTools:
    """Peek at and purge the DLQs of one provider."""

    def __init__(
        self,
        transport: SqsTransport,
        ledger: Ledger,
        settler: Settler,
        receiving: Receiving,
        clock: Clock,
        *,
        wait: int,
    ) -> None:
        self._transport = transport
        self._ledger = ledger
        self._settler = settler
        self._receiving = receiving
        self._clock = clock
        self._wait = wait

    async def peek(self, state: QueueState, max_messages: int) -> list[ReceivedMessage]:
        """Receive up to ``max_messages`` of the DLQ ``state`` and release them at once."""
        await self._settler.sweep()
        seen: dict[str, Incoming] = {}
        handles: list[str] = []
        wait = min(1, self._wait)
        try:
            while len(seen) < max_messages:
                count = min(MAX_BATCH, max_messages - len(seen))
                raw = await self._transport.receive(
                    state, count, wait, PEEK_VISIBILITY, "peek_dead_letters"
                )
                wait = 0
                if not raw:
                    break
                for item in raw:
                    message = decode(item)
                    handles.append(message.handle)
                    seen.setdefault(message.sqs_id, message)
        finally:
            if handles:
                changes = [(handle, 0) for handle in handles]
                await self._transport.set_visibility(state, changes, "peek_dead_letters")
        now = self._clock.now()
        return [self._receiving.peeked(state, message, now) for message in seen.values()]

    async def purge(self, state: QueueState) -> int:
        """``PurgeQueue`` the DLQ ``state``; SQS's approximate message count before it."""
        response = await self._transport.call(
            state,
            "get_queue_attributes",
            "purge_dead_letters",
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes") or {}
        count = sum(int(value) for value in attributes.values() if str(value).isdigit())
        await self._transport.call(state, "purge_queue", "purge_dead_letters")
        for held in [*state.ready, *self._ledger.deliveries.values()]:
            if held.state is state:
                self._settler.forget(held)
        return count
