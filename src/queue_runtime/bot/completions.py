"""Completing messages in batches, where the provider can (SQS ``DeleteMessageBatch``, memory).

Session actors complete one message at a time, each waiting for its own
answer; many sessions complete at once. :class:`Completions` gathers those
completions into batch requests — group commit: no timer, no added latency.
The first completion goes out at once; while requests are out, the next ones
gather and go together, up to the provider's batch size, with at most
``MAX_REQUESTS`` requests in flight. Under load a request carries a full
batch; when idle, a completion costs what it did alone.

Each caller still learns its own message's fate: ``complete`` raises the
error of that receipt (``InvalidReceiptError`` for a lost lock), exactly like
``QueueClient.complete_message``, and its own ``complete`` span, a child of
its caller's processing span, whatever other messages shared the request.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> int:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2")])
    ...         batch = await client.receive_messages("jobs", 10, timeout=1.0)
    ...         completions = Completions(client)
    ...         await asyncio.gather(*(completions.complete(m.receipt) for m in batch))
    ...         await completions.close()
    ...         return client.provider.stats("jobs").active
    >>> asyncio.run(main())
    0
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextvars import Context

from opentelemetry import context as otel_context
from opentelemetry.context import Context as OtelContext

from queue_runtime.client import QueueClient
from queue_runtime.errors import QueueError
from queue_runtime.messages import ReceiptHandle
from queue_runtime.provider import SupportsCompleteMany

__all__ = ["MAX_REQUESTS", "Completions"]

Waiting = tuple[ReceiptHandle, "asyncio.Future[QueueError | None]", OtelContext]
"""A receipt, its caller's answer, and its caller's trace context."""

MAX_REQUESTS = 4
"""Batch requests in flight at once (more would split batches that could be full)."""


class Completions:
    """Group-commits the completions of one bot's messages."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._batch_size = client.max_batch_size
        self._waiting: deque[Waiting] = deque()
        self._senders: set[asyncio.Task[None]] = set()
        self._gathering = False
        """A sender is starting and will take what waits: no other is needed yet."""
        self.requests = 0
        """Batch requests made (for measuring)."""

    @staticmethod
    def worthwhile(client: QueueClient) -> bool:
        """True if ``client``'s provider completes in batches (else complete one by one)."""
        return isinstance(client.provider, SupportsCompleteMany)

    async def complete(self, receipt: ReceiptHandle) -> None:
        """Complete the message of ``receipt`` with others; raises its error, if any."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[QueueError | None] = loop.create_future()
        self._waiting.append((receipt, answer, otel_context.get_current()))
        if not self._gathering and len(self._senders) < MAX_REQUESTS:
            self._gathering = True
            # in a context of its own: the request is no one caller's (nor in its trace)
            sender = loop.create_task(self._send(), name="completions", context=Context())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        error = await answer
        if error is not None:
            raise error

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # what is completed in this moment goes together
        finally:
            self._gathering = False
        waiting = self._waiting
        while waiting:
            batch = [waiting.popleft() for _ in range(min(self._batch_size, len(waiting)))]
            self.requests += 1
            try:  # each message's span goes under its own processing span
                results = await self._client.complete_messages(
                    [item[0] for item in batch], contexts=[item[2] for item in batch]
                )
            except QueueError as error:  # nothing was tried (a closed client, say)
                results = [error] * len(batch)
            except asyncio.CancelledError:
                _answer(batch, QueueError("interrupted while completing", operation="complete"))
                raise
            except Exception as error:  # a provider bug: each caller sees it
                for _, answer, _ in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            for (_, answer, _), result in zip(batch, results, strict=True):
                if not answer.done():  # its caller may have been cancelled meanwhile
                    answer.set_result(result)

    async def close(self) -> None:
        """Stop sending: cancel requests in flight and fail what still waits (the
        messages come back after their locks expire, as with a failed settle)."""
        senders = list(self._senders)
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        waiting = list(self._waiting)
        self._waiting.clear()
        _answer(waiting, QueueError("the bot stopped before completing", operation="complete"))


def _answer(batch: list[Waiting], error: QueueError) -> None:
    for _, answer, _ in batch:
        if not answer.done():
            answer.set_result(error)
