"""Keeps message and session locks alive while the bot holds them.

A message waiting in a session's mailbox, or being handled, must not lose
its lock (its visibility timeout on SQS): another consumer would get it and
the settle would fail. One renewer per bot tracks every held receipt and
native session and renews each at half of its remaining lock time — one
task, however many messages are held.

Example:
    >>> from queue_runtime.bot.locks import renew_after
    >>> renew_after(remaining=30.0)
    15.0
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Sequence

from queue_runtime.bot.context import BotContext
from queue_runtime.client import SessionClient
from queue_runtime.clock import wait_for_event
from queue_runtime.errors import InvalidReceiptError, QueueError, SessionLockLostError
from queue_runtime.messages import ReceiptHandle, ReceivedMessage
from queue_runtime.telemetry import log_fields

__all__ = ["LockRenewer", "renew_after"]

logger = logging.getLogger("queue_runtime.bot")

MIN_RENEW_DELAY = 0.05
COMPACT_AT = 4096
"""Heap size above which released entries are swept out."""
RENEW_AT_ONCE = 64
"""At most this many renewals run side by side."""
CHECK_EVERY = 1.0
"""The renewer looks at least this often, so holding a lock due later needs no wake-up."""

Held = ReceiptHandle | SessionClient


def renew_after(remaining: float) -> float:
    """Seconds to wait before renewing a lock that has ``remaining`` seconds left."""
    return max(MIN_RENEW_DELAY, remaining / 2)


class LockRenewer:
    """Renews the locks of held messages and sessions until they are released.

    Messages received together are scheduled together (one heap entry per
    batch); released ones are dropped lazily, and the heap is compacted when
    they outnumber the held ones, so memory follows what is held, not what passed.
    """

    def __init__(self, context: BotContext) -> None:
        self._context = context
        self._due: list[tuple[float, int, list[Held]]] = []
        self._held: set[int] = set()
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lock renewer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def hold(self, messages: Sequence[ReceivedMessage]) -> None:
        """Keep the locks of ``messages`` alive until each one is released."""
        if messages:
            self._schedule([message.receipt for message in messages])

    def hold_session(self, session: SessionClient) -> None:
        """Keep a native session's lock alive until :meth:`release`."""
        self._schedule([session])

    def release(self, held: ReceiptHandle | SessionClient) -> None:
        self._held.discard(id(held))

    def _schedule(self, group: list[Held]) -> None:
        self._held.update(id(held) for held in group)
        self._push(group)

    def _push(self, group: list[Held]) -> None:
        now = self._context.client.clock.now()
        remaining = min(held.locked_until.timestamp() for held in group) - now
        delay = renew_after(remaining)
        due = asyncio.get_running_loop().time() + delay
        heapq.heappush(self._due, (due, next(self._order), group))
        if len(self._due) > COMPACT_AT and len(self._due) > 2 * len(self._held):
            self._compact()
        if delay < CHECK_EVERY:
            self._wake.set()

    def _compact(self) -> None:
        kept = []
        for due, order, group in self._due:
            alive = [held for held in group if id(held) in self._held]
            if alive:
                kept.append((due, order, alive))
        heapq.heapify(kept)
        self._due = kept

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = min(self._due[0][0] - loop.time(), CHECK_EVERY) if self._due else CHECK_EVERY
            if wait > 0:
                self._wake.clear()
                await wait_for_event(self._wake, wait)
                continue
            _, _, group = heapq.heappop(self._due)
            due = [held for held in group if id(held) in self._held]
            renewed: list[Held] = []
            # side by side: one at a time, a slow provider would let locks lapse
            for start in range(0, len(due), RENEW_AT_ONCE):
                chunk = due[start : start + RENEW_AT_ONCE]
                results = await asyncio.gather(*(self._renew(held) for held in chunk))
                renewed.extend(held for held, ok in zip(chunk, results, strict=True) if ok)
            still_held = [held for held in renewed if id(held) in self._held]
            if still_held:
                self._push(still_held)

    async def _renew(self, held: Held) -> bool:
        """Renew one lock; False if it is gone for good."""
        client = self._context.client
        try:
            if isinstance(held, SessionClient):
                await held.renew_session_lock()
            else:
                await client.renew_message_lock(held)
        except (InvalidReceiptError, SessionLockLostError):
            if id(held) in self._held:  # counted when its settle fails (stats.lost_locks)
                self._held.discard(id(held))
                logger.warning("lock lost before the work finished: %r", held, extra=_fields(held))
            return False
        except QueueError as error:
            logger.warning("lock renewal failed, will retry: %s", error, extra=_fields(held))
        else:
            self._context.stats.lock_renewals += 1
        return True


def _fields(held: Held) -> dict[str, object]:
    if isinstance(held, SessionClient):
        return log_fields("renew_session_lock", held.queue, session_id=held.session_id)
    return log_fields("renew_lock", held.queue)
