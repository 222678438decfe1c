"""Keeps message and session locks alive while the bot holds them.

A message waiting in a session's mailbox, or being handled, must not lose
its lock (its visibility timeout on SQS): another consumer would get it and
the settle would fail. One renewer per bot tracks every held receipt and
native session and renews each at half of its remaining lock time — one
task, however many messages are held.

Example:
    >>> from queue_runtime.actors.locks import renew_after
    >>> renew_after(remaining=30.0)
    15.0
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging

from queue_runtime.actors.context import BotContext
from queue_runtime.client import SessionClient
from queue_runtime.errors import InvalidReceiptError, QueueError, SessionLockLostError
from queue_runtime.messages import ReceiptHandle, ReceivedMessage

__all__ = ["LockRenewer", "renew_after"]

logger = logging.getLogger("queue_runtime.actors")

MIN_RENEW_DELAY = 0.05
RENEW_AT_ONCE = 64
"""At most this many renewals run side by side."""
CHECK_EVERY = 1.0
"""The renewer looks at least this often, so holding a lock due later needs no wake-up."""

Held = ReceiptHandle | SessionClient


def renew_after(remaining: float) -> float:
    """Seconds to wait before renewing a lock that has ``remaining`` seconds left."""
    return max(MIN_RENEW_DELAY, remaining / 2)


class LockRenewer:
    """Renews the locks of held messages and sessions until they are released."""

    def __init__(self, context: BotContext) -> None:
        self._context = context
        self._due: list[tuple[float, int, Held]] = []
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

    def hold(self, message: ReceivedMessage) -> None:
        """Keep ``message``'s lock alive until :meth:`release`."""
        self._schedule(message.receipt)

    def hold_session(self, session: SessionClient) -> None:
        """Keep a native session's lock alive until :meth:`release`."""
        self._schedule(session)

    def release(self, held: ReceiptHandle | SessionClient) -> None:
        self._held.discard(id(held))

    def _schedule(self, held: Held) -> None:
        self._held.add(id(held))
        self._push(held)

    def _push(self, held: Held) -> None:
        now = self._context.client.clock.now()
        remaining = held.locked_until.timestamp() - now
        delay = renew_after(remaining)
        heapq.heappush(
            self._due, (asyncio.get_running_loop().time() + delay, next(self._order), held)
        )
        if delay < CHECK_EVERY:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._due and id(self._due[0][2]) not in self._held:
                heapq.heappop(self._due)  # released; drop lazily
            if not self._due:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_EVERY):
                        await self._wake.wait()
                continue
            wait = min(self._due[0][0] - loop.time(), CHECK_EVERY)
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel
                        await self._wake.wait()
                continue
            due: list[Held] = []
            now = loop.time()
            while self._due and self._due[0][0] <= now and len(due) < RENEW_AT_ONCE:
                _, _, held = heapq.heappop(self._due)
                if id(held) in self._held:
                    due.append(held)
            # renewed side by side: one at a time, a slow provider would let locks lapse
            await asyncio.gather(*(self._renew(held) for held in due))

    async def _renew(self, held: Held) -> None:
        client = self._context.client
        try:
            if isinstance(held, SessionClient):
                await held.renew_session_lock()
            else:
                await client.renew_message_lock(held)
        except (InvalidReceiptError, SessionLockLostError):
            if id(held) in self._held:
                self._held.discard(id(held))
                self._context.stats.lost_locks += 1
                logger.warning("lock lost before the work finished: %r", held)
            return
        except QueueError as error:
            logger.warning("lock renewal failed, will retry: %s", error)
        else:
            self._context.stats.lock_renewals += 1
        if id(held) in self._held:
            self._push(held)
