"""Settling messages: complete (one or a batch), abandon, dead-letter, renew a lock.

:class:`Settlement` is a base of :class:`~queue_runtime.QueueClient`: these are
its settle calls, each through the client's retries, circuit breaker and
telemetry (``QueueClient._call``). A settle whose answer was lost is not an
error when the retry finds it already done.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> None:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("jobs", qr.Message(b"{}"))
    ...         [message] = await client.receive_messages("jobs", timeout=1.0)
    ...         await client.abandon_message(message.receipt)  # visible again, at once
    >>> asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from queue_runtime.errors import InvalidReceiptError, QueueError, ValidationError
from queue_runtime.messages import ReceiptHandle
from queue_runtime.provider import QueueProvider, SupportsCompleteMany
from queue_runtime.telemetry import Telemetry, activate, error_type, log_fields

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from queue_runtime.retry import RetryPolicy

__all__ = ["Settlement"]

T = TypeVar("T")

logger = logging.getLogger("queue_runtime.client")
"""The client's logger: these are the client's calls."""


class Settlement:
    """The settle calls of :class:`~queue_runtime.QueueClient` (its base class)."""

    if TYPE_CHECKING:  # what they use of the client
        _provider: QueueProvider
        telemetry: Telemetry

        async def _call(
            self,
            operation: str,
            queue: str,
            call: Callable[[], Awaitable[T]],
            *,
            timeout: float | None = None,
            retry: RetryPolicy | None = None,
        ) -> T: ...

    async def complete_message(self, receipt: ReceiptHandle) -> None:
        """Remove the message for good. Raises InvalidReceiptError if the lock was lost."""
        await self._settle(
            "complete", receipt, lambda: self._provider.complete(receipt), "completed a message"
        )

    async def complete_messages(
        self,
        receipts: Sequence[ReceiptHandle],
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> list[QueueError | None]:
        """Complete several messages of one queue in as few requests as the provider allows.

        Returns one entry per receipt: ``None`` if it was completed, else the
        error that kept it (``InvalidReceiptError`` if its lock was lost). A
        receipt whose batch entry failed transiently is retried on its own, with
        the client's retry policy. Providers without batch completion (Azure)
        complete the messages one by one, side by side.

        Each message gets its own ``complete`` span, a child of
        ``contexts[i]`` for ``receipts[i]`` (OpenTelemetry contexts; default:
        the current context): code that gathers the completions of many
        messages into one call passes each message's processing context.

        Example:
            >>> import asyncio
            >>> import queue_runtime as qr
            >>> async def main() -> list[qr.QueueError | None]:
            ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
            ...         await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2")])
            ...         batch = await client.receive_messages("jobs", 10, timeout=1.0)
            ...         return await client.complete_messages([m.receipt for m in batch])
            >>> asyncio.run(main())
            [None, None]
        """
        if not receipts:
            return []
        queue = receipts[0].queue
        if any(receipt.queue != queue for receipt in receipts):
            raise ValidationError("receipts of one queue only", field="receipts")
        if contexts is not None and len(contexts) != len(receipts):
            raise ValidationError("one context per receipt", field="contexts")
        provider = self._provider
        if not isinstance(provider, SupportsCompleteMany):
            return await self._complete_each(receipts, contexts)
        with self.telemetry.settle_each("complete", queue, receipts, contexts) as settling:
            attempt = _Attempt(lambda: provider.complete_many(receipts))
            results = list(await self._call("complete", queue, attempt))
            if attempt.uncertain:  # an attempt whose answer was lost may have completed some
                results = [None if _already("complete", error) else error for error in results]
            retry = [i for i, error in enumerate(results) if error is not None and error.transient]
            if retry:  # the rest of the batch is done: only these go again, each on its own
                again = await asyncio.gather(
                    *(self._complete_again(receipts[i]) for i in retry), return_exceptions=True
                )
                for position, outcome in zip(retry, again, strict=True):
                    result = _settle_result(outcome)
                    # a transient batch entry may have been deleted after all
                    results[position] = None if _already("complete", result) else result
            settling.ended(results)
        completed = results.count(None)
        if completed:  # one recording for the batch: an SDK's cost is per recording
            self.telemetry.count_settled("complete", receipts[0], count=completed)
        if logger.isEnabledFor(logging.DEBUG):
            for receipt, result in zip(receipts, results, strict=True):
                if result is None:
                    _log_settled("completed a message", "complete", receipt)
        return results

    async def _complete_again(self, receipt: ReceiptHandle) -> None:
        """Retry one entry of a batch completion (inside that message's span)."""
        await self._call("complete", receipt.queue, lambda: self._provider.complete(receipt))

    async def _complete_each(
        self, receipts: Sequence[ReceiptHandle], contexts: Sequence[Context | None] | None
    ) -> list[QueueError | None]:
        """Complete each message on its own, side by side; per receipt, None or its error."""
        parents = contexts if contexts is not None else [None] * len(receipts)
        outcomes = await asyncio.gather(
            *(self._complete_in(r, parent) for r, parent in zip(receipts, parents, strict=True)),
            return_exceptions=True,
        )
        return [_settle_result(outcome) for outcome in outcomes]

    async def _complete_in(self, receipt: ReceiptHandle, context: Context | None) -> None:
        with activate(context):  # the message's span goes under its own context
            await self.complete_message(receipt)

    async def abandon_message(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        """Make the message visible again, at once or after ``delay`` seconds."""
        if delay is not None and delay < 0:
            raise ValidationError("must not be negative", field="delay")
        await self._settle(
            "abandon",
            receipt,
            lambda: self._provider.abandon(receipt, delay),
            "abandoned a message",
        )

    async def dead_letter_message(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Move the message to the DLQ with ``reason`` (short, e.g. an error type) and detail.

        ``properties`` are extra string attributes of the dead letter (the bot
        puts its failure record there); every provider returns them in the
        ``attributes`` of messages read from the DLQ. Providers may drop the
        largest ones if the dead letter would not fit their size limits.
        """
        if not reason:
            raise ValidationError("must not be empty", field="reason")
        extra: dict[str, str] | None = None
        if properties:
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
                raise ValidationError("names and values must be strings", field="properties")
            extra = dict(properties)
        # the reason only as an error type: it is free text, the description even more so
        await self._settle(
            "dead_letter",
            receipt,
            lambda: self._provider.dead_letter(receipt, reason, description, extra),
            f"dead-lettered a message ({error_type(reason)})",
            reason,
        )

    async def _settle(
        self,
        operation: str,
        receipt: ReceiptHandle,
        call: Callable[[], Awaitable[None]],
        logged: str,
        reason: str | None = None,
    ) -> None:
        """One settle call with its span, counting and log line."""
        with self.telemetry.settle(operation, receipt.queue, dead_letter=receipt.dead_letter):
            attempt = _Attempt(call)
            try:
                await self._call(operation, receipt.queue, attempt)
            except InvalidReceiptError as error:
                if not (attempt.uncertain and _already(operation, error)):
                    raise
                # an earlier attempt took effect and only its answer was lost
        self.telemetry.count_settled(operation, receipt, reason)
        _log_settled(logged, operation, receipt)

    async def renew_message_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the message's lock; returns the new expiry."""
        return await self._call(
            "renew_lock", receipt.queue, lambda: self._provider.renew_lock(receipt)
        )


class _Attempt(Generic[T]):
    """A provider call that notes whether an attempt failed in a way that may have
    taken effect (a transient error or a timeout: the answer may have been lost)."""

    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call
        self.uncertain = False

    async def __call__(self) -> T:
        try:
            return await self._call()
        except BaseException as error:
            if not isinstance(error, QueueError) or error.transient:
                self.uncertain = True
            raise


def _already(operation: str, error: BaseException | None) -> bool:
    """True if ``error`` is the provider's proof that ``operation`` was already done
    with this receipt (by an attempt whose answer was lost)."""
    return isinstance(error, InvalidReceiptError) and error.settled == operation


def _settle_result(outcome: BaseException | None) -> QueueError | None:
    """A gathered settle's result: None, or its QueueError (anything else propagates)."""
    if outcome is None or isinstance(outcome, QueueError):
        return outcome
    raise outcome


def _log_settled(text: str, operation: str, receipt: ReceiptHandle) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(text, extra=log_fields(operation, receipt.queue))
