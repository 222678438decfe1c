"""Settling a handled message, again after a transient failure, until it is settled.

The client retries a failed settle with its retry policy; when those attempts
are spent, the bot tries a few more rounds while the message's lock lasts.
A message that is given up comes back: handled again, and on a session its
later messages must come back behind it, each losing a delivery.

A settle whose answer was lost took effect. Its retry then finds the receipt
gone; providers that can prove the receipt was settled that way say so
(:attr:`~queue_runtime.errors.InvalidReceiptError.settled`), and after a
transient failure that counts as done.

Example:
    >>> import asyncio
    >>> from queue_runtime.errors import ConnectionFailedError, InvalidReceiptError
    >>> answers = [
    ...     ConnectionFailedError("answer lost"),
    ...     InvalidReceiptError("gone", settled="complete"),
    ... ]
    >>> async def complete() -> None:
    ...     raise answers.pop(0)
    >>> async def main() -> None:
    ...     await settle_in_rounds(complete, "complete", rounds=3, pause=lambda n: asyncio.sleep(0))
    >>> asyncio.run(main())  # the first round took effect: done
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from queue_runtime.errors import InvalidReceiptError, QueueError

__all__ = ["SETTLE_ROUNDS", "settle_again", "settle_in_rounds"]

SETTLE_ROUNDS = 3
"""Client calls made for one settle at most (each with the client's own retries)."""


async def settle_in_rounds(
    settle: Callable[[], Awaitable[None]],
    operation: str,
    *,
    rounds: int = SETTLE_ROUNDS,
    pause: Callable[[int], Awaitable[object]],
    too_late: Callable[[int], bool] = lambda round: False,
) -> None:
    """Call ``settle`` (the ``operation``: complete, abandon, dead_letter) until it works.

    After a transient failure, ``pause(round)`` is awaited and it is called
    again, at most ``rounds`` times in all, and not when ``too_late(round)``
    (that pause would end after the caller must be done: a stopping bot's
    drain deadline). An
    ``InvalidReceiptError`` proving the receipt was settled by ``operation``
    after a transient failure means an earlier round took effect: done. Raises
    the last error otherwise.
    """
    try:
        await settle()
        return
    except QueueError as error:
        failure = error
    await settle_again(failure, settle, operation, rounds=rounds, pause=pause, too_late=too_late)


async def settle_again(
    failure: QueueError,
    settle: Callable[[], Awaitable[None]],
    operation: str,
    *,
    rounds: int = SETTLE_ROUNDS,
    pause: Callable[[int], Awaitable[object]],
    too_late: Callable[[int], bool] = lambda round: False,
) -> None:
    """Go on as :func:`settle_in_rounds` after its first call of ``settle`` failed with
    ``failure``: raise it unless it is transient, else pause and call again.

    For callers that make the first call themselves: a settle that works at once
    (nearly all of them) then needs no rounds, pauses or ``too_late`` set up.
    """
    for round in range(1, rounds):  # ``round`` calls have failed so far
        if isinstance(failure, InvalidReceiptError) or not failure.transient or too_late(round):
            raise failure
        await pause(round)
        try:
            await settle()
            return
        except InvalidReceiptError as error:
            if error.settled == operation:
                return  # an earlier round took effect; only its answer was lost
            raise
        except QueueError as error:
            failure = error
    raise failure
