"""The keeper: buffered messages stay invisible while they wait for a session.

A session's poll keeps other groups' messages buffered for later sessions (or
plain receives). SQS would make them visible again when their visibility
timeout ends, so a background task, owned by the provider and started on
first need, every few seconds

* sweeps plain deliveries whose lock ran out (:meth:`.Settler.sweep`);
* ends session locks whose time ran out;
* extends the visibility of buffered messages due soon, and releases those
  nobody claimed for ``BUFFER_HOLD`` seconds.

Example:
    >>> # keeper = Keeper(queues, settler, sessions, clock, name="sqs-1", visibility=30)
    >>> # keeper.ensure()       # in a running event loop
    >>> # await keeper.aclose()  # cancels and awaits the task
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from queue_runtime.clock import Clock
from queue_runtime.errors import QueueError
from queue_runtime.telemetry import log_fields

from .inflight import Held
from .queues import SqsQueues
from .sessions import SessionBook
from .settling import Settler

__all__ = ["BUFFER_HOLD", "Keeper"]

logger = logging.getLogger(__name__)

BUFFER_HOLD: Final = 60.0
"""Seconds an unclaimed buffered message is kept before it is released to SQS."""


class Keeper:
    """The background task that keeps buffered messages invisible while they wait."""

    def __init__(
        self,
        queues: SqsQueues,
        settler: Settler,
        sessions: SessionBook,
        clock: Clock,
        *,
        name: str,
        visibility: int,
    ) -> None:
        self._queues = queues
        self._settler = settler
        self._sessions = sessions
        self._clock = clock
        self._name = name
        self._visibility = visibility
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running (or last) keeper task, if one was started."""
        return self._task

    def ensure(self) -> None:
        """Start the keeper unless it runs or the provider is closed."""
        if self._queues.closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(
            self._keep(), name=f"queue-runtime:{self._name}:keeper"
        )

    async def aclose(self) -> None:
        """Cancel the keeper and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        """Owned by the provider; cancelled and awaited by :meth:`aclose`."""
        interval = min(10.0, max(0.2, self._visibility / 3))
        while not self._queues.closed:
            await asyncio.sleep(interval)
            try:
                await self.keep_once()
            except QueueError as exc:
                logger.warning("SQS keeper: %s", exc, extra=log_fields("keep"))
            except Exception:  # the keeper must outlive surprises; they are logged
                logger.exception("SQS keeper failed; it keeps going", extra=log_fields("keep"))

    async def keep_once(self) -> None:
        """Extend buffered messages, release long-unclaimed ones, end lapsed sessions."""
        await self._settler.sweep()
        now = self._clock.now()
        for state in self._queues.states():
            extend: list[Held] = []
            release: list[Held] = []
            for group in list(state.groups.values()):
                if group.lock is not None:
                    await self._sessions.check_expiry(group.lock)
                    continue
                if not group.buffered:
                    continue
                oldest = min(held.buffered_at for held in group.buffered)
                if not group.out and now - oldest > BUFFER_HOLD:
                    release.extend(group.buffered)
                else:
                    due = now + self._visibility / 2
                    extend.extend(held for held in group.buffered if held.visible_at < due)
            if release:
                await self._settler.release(release, "keep_buffered")
            if extend:
                lost = await self._settler.extend(state, extend, now, "keep_buffered")
                for group in {id(h.group): h.group for h in lost if h.group}.values():
                    if group.buffered and group.lock is None:
                        await self._settler.release(list(group.buffered), "keep_buffered")
