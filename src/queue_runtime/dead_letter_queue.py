"""The dead-letter queue of a queue: receive, peek, walk, requeue and purge its messages.

:class:`DeadLetterQueue` is a base of :class:`~queue_runtime.QueueClient`: these
are its DLQ calls, for every provider. :mod:`queue_runtime.dlq` builds the DLQ
tooling (failure records, stats) on them.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> int:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("jobs", qr.Message(b"{}"))
    ...         [message] = await client.receive_messages("jobs", timeout=1.0)
    ...         await client.dead_letter_message(message.receipt, "ValueError")
    ...         return await client.requeue_dead_letters("jobs")
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from queue_runtime.crypto import UndecryptableMessage
from queue_runtime.errors import QueueError
from queue_runtime.messages import Message, MessageId, QueueName, ReceivedMessage
from queue_runtime.session_client import DEFAULT_RECEIVE_BATCH
from queue_runtime.settlement import Settlement

__all__ = ["REQUEUE_COUNT_ATTRIBUTE", "DeadLetterQueue"]

REQUEUE_COUNT_ATTRIBUTE = "queue_runtime.requeue_count"
"""Attribute a requeued dead letter carries: how often it was requeued."""


class DeadLetterQueue(Settlement):
    """The dead-letter-queue calls of :class:`~queue_runtime.QueueClient` (its base
    class; built on its settle calls)."""

    if TYPE_CHECKING:  # what they use of the client

        async def send_message(self, queue: str, message: Message) -> MessageId: ...

        async def _decrypt_all(
            self, batch: list[ReceivedMessage], *, dead_letter: bool = False, locked: bool = True
        ) -> list[ReceivedMessage]: ...

        def _receive_count(self, max_messages: int) -> int: ...

        def _receive_timeout(self, timeout: float | None) -> float: ...

    async def receive_dead_letters(
        self, queue: str, max_messages: int = DEFAULT_RECEIVE_BATCH, timeout: float | None = None
    ) -> list[ReceivedMessage]:
        """Peek-lock messages from ``queue``'s DLQ; completing one removes it from the DLQ."""
        name = QueueName(queue)
        count = self._receive_count(max_messages)
        wait = self._receive_timeout(timeout)
        batch = await self._call(
            "receive_dead_letters",
            name,
            lambda: self._provider.receive_dead_letters(name, count, wait),
            timeout=wait,
        )
        return await self._decrypt_all(batch, dead_letter=True)

    async def peek_dead_letters(self, queue: str, max_messages: int = 100) -> list[ReceivedMessage]:
        """Read up to ``max_messages`` DLQ messages with their reasons, without locking them."""
        name = QueueName(queue)
        batch = await self._call(
            "peek_dead_letters", name, lambda: self._provider.peek_dead_letters(name, max_messages)
        )
        return await self._decrypt_all(batch, dead_letter=True, locked=False)

    async def requeue_dead_letters(
        self,
        queue: str,
        *,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
        max_messages: int | None = None,
        timeout: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Send dead letters back to ``queue``; returns how many were requeued.

        Each message is sent first (same id, body, session id and attributes,
        plus ``queue_runtime.requeue_count``) and removed from the DLQ only
        after the send succeeded: a crash in between duplicates, never loses.
        Messages the ``predicate`` rejects stay in the DLQ, and so do messages
        that cannot be decrypted. With encryption on, requeued messages are
        encrypted afresh (new nonce and timestamp). ``progress``, if given, is
        called with the running count after each message is requeued. If
        removing a message from the DLQ fails after its send, the error
        propagates and the message is given back to the DLQ (duplicated, not lost).
        """
        name = QueueName(queue)

        async def requeue(message: ReceivedMessage) -> bool:
            if isinstance(message, UndecryptableMessage) or (
                predicate is not None and not predicate(message)
            ):
                return False
            count = int(message.attributes.get(REQUEUE_COUNT_ATTRIBUTE, "0")) + 1
            copy = message.to_message(
                attributes={**message.attributes, REQUEUE_COUNT_ATTRIBUTE: str(count)}
            )
            await self.send_message(name, copy)
            await self.complete_message(message.receipt)  # only after the send succeeded
            return True

        return await self.walk_dead_letters(
            name, requeue, max_messages=max_messages, timeout=timeout, progress=progress
        )

    async def walk_dead_letters(
        self,
        queue: str,
        settle: Callable[[ReceivedMessage], Awaitable[bool]],
        *,
        max_messages: int | None = None,
        timeout: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Receive ``queue``'s dead letters once each and let ``settle`` decide.

        ``settle(message)`` returns True when it removed the message from the
        DLQ (counted, and reported to ``progress``) and False to leave it
        there. Messages left there — or whose ``settle`` raised — are held until
        the walk ends (so none is seen twice) and then given back at once.
        Stops after ``max_messages`` settled, or when no new dead letter came
        within ``timeout``. Returns how many were settled.
        """
        name = QueueName(queue)
        settled = 0
        kept: list[ReceivedMessage] = []
        seen: set[str] = set()
        try:
            while max_messages is None or settled < max_messages:
                want = DEFAULT_RECEIVE_BATCH
                if max_messages is not None:
                    want = min(want, max_messages - settled)
                batch = await self.receive_dead_letters(name, want, timeout)
                fresh = [m for m in batch if m.message_id not in seen]
                if not fresh:
                    kept.extend(batch)
                    break
                for message in fresh:
                    seen.add(message.message_id)
                    try:
                        done = await settle(message)
                    except BaseException:
                        kept.append(message)  # e.g. sent but still in the DLQ: a duplicate
                        raise
                    if not done:
                        kept.append(message)
                        continue
                    settled += 1
                    if progress is not None:
                        progress(settled)
        finally:
            for message in kept:
                # if this fails, its lock runs out and it is visible in the DLQ again
                with contextlib.suppress(QueueError):
                    await self.abandon_message(message.receipt)
        return settled

    async def purge_dead_letters(self, queue: str) -> int:
        """Delete everything in ``queue``'s DLQ; returns how many messages were removed."""
        name = QueueName(queue)
        return await self._call(
            "purge_dead_letters", name, lambda: self._provider.purge_dead_letters(name)
        )
