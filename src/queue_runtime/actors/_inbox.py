"""The mailbox of an asyncio actor, and the idle workers of one with ``concurrency > 1``."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pykka.messages import _ActorStop


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Inbox:
    """The mailbox: a deque plus one wake-up future for the actor waiting on it.

    For an actor with workers (``concurrency > 1``) it also knows the idle
    workers: a message that finds the mailbox empty and a worker idle goes to
    that worker at once, without waking the actor's loop to pass it on.
    """

    __slots__ = ("_items", "_waiter", "workers")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.workers: _Workers | None = None

    def put(self, envelope: Any, /) -> None:
        workers = self.workers
        if (
            workers is not None
            and workers.idle
            and not self._items
            and not workers.holding
            and not isinstance(envelope.message, _ActorStop)
        ):
            workers.assign(workers.idle.pop(), envelope)
            return
        self._items.append(envelope)
        self.wake()

    def lend(self) -> asyncio.Future[Any] | None:
        """An idle worker's slot, taken as if a message had just been :meth:`put` to it
        (counted busy): its caller handles the message itself, then gives the slot back
        (:meth:`_Workers.give_back`). None when a message put now would wait."""
        workers = self.workers
        if (
            workers is None
            or not workers.idle
            or self._items
            or workers.holding
            or workers.handed  # a message handed to a worker before must start first
        ):
            return None
        workers.busy += 1
        return workers.idle.pop()

    def get(self) -> Any:
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    async def wait(self) -> None:
        """Return when a message arrives (or :meth:`wake` is called)."""
        if not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def wake(self) -> None:
        """Wake the actor waiting for mail, without a message (it re-checks its state)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Workers:
    """The worker tasks of an actor with ``concurrency > 1``, and which of them are idle.

    ``busy`` counts the messages given to a worker and not yet handled, so that
    stopping waits for a message handed over but not yet started, too.
    """

    __slots__ = (
        "all_idle",
        "busy",
        "callers",
        "callers_gone",
        "freed",
        "handed",
        "holding",
        "idle",
        "killed",
        "tasks",
    )

    def __init__(self) -> None:
        self.idle: list[asyncio.Future[Any]] = []
        """One future per idle worker: its next message (None: end)."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy = 0
        self.handed = 0
        """Messages given to a worker that has not started on them yet."""
        self.holding = False
        """The actor's loop holds a message until a worker is free (it goes first)."""
        self.freed: asyncio.Future[None] | None = None
        self.all_idle: asyncio.Future[None] | None = None
        self.callers: set[asyncio.Task[Any]] = set()
        """Tasks handling a message themselves, on a lent worker's slot."""
        self.killed: set[asyncio.Task[Any]] = set()
        """Callers cancelled because the actor was killed (they must uncancel)."""
        self.callers_gone: asyncio.Future[None] | None = None

    def assign(self, slot: asyncio.Future[Any], envelope: Any) -> None:
        self.busy += 1
        self.handed += 1
        slot.set_result(envelope)

    def done_one(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            _resolve(self.all_idle)

    def give_back(self, caller: asyncio.Task[Any], slot: asyncio.Future[Any], ended: bool) -> bool:
        """``caller`` is done with the message it handled on ``slot``: the slot's worker
        is idle again, as after handling the message itself (or ends, if the actor
        ``ended``). True if the caller was cancelled by the actor's death."""
        self.callers.discard(caller)
        killed = caller in self.killed
        self.killed.discard(caller)
        self.done_one()
        if not slot.done():  # done: its worker was cancelled (the actor died)
            if ended:
                slot.set_result(None)
            else:
                self.idle.append(slot)
                _resolve(self.freed)
        if not self.callers:
            _resolve(self.callers_gone)
        return killed


class _StopFlag:
    """Just the part of ``threading.Event`` pykka uses, without its lock (actors are cheap)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
