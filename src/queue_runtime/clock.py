"""Time, injectable so that tests can move it without sleeping.

Everything in the runtime that asks "what time is it?" (lock expiry, TTL,
scheduled delivery, circuit breaker recovery) or waits out a delay (retry
back-off) goes through a :class:`Clock`. Production code uses
:class:`SystemClock`; tests use :class:`ManualClock` and call
:meth:`ManualClock.advance`, or :class:`LoopClock`, which follows the event
loop's clock, so that a loop with virtual time (``looptime``) moves the
provider's time and the actors' timers together.

Example:
    >>> from queue_runtime.clock import ManualClock
    >>> clock = ManualClock(start=1_000.0)
    >>> clock.advance(31.0)
    >>> clock.now()
    1031.0
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "SystemClock", "to_datetime", "wait_for_event"]


class Clock(Protocol):
    """A source of wall-clock time (Unix seconds) and of waiting."""

    def now(self) -> float:
        """Current time in Unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; cancellable."""
        ...


class SystemClock:
    """The real clock: :func:`time.time` and :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class LoopClock:
    """Unix time that moves with the running event loop's clock.

    ``now()`` is the wall-clock time when first read, plus however far
    ``loop.time()`` has moved since (or ``origin + loop.time()`` when an
    ``origin`` is given, for runs that must repeat exactly). On a normal loop
    that is real time; on a loop with virtual time it is virtual, and :meth:`sleep` (an
    ``asyncio.sleep``) costs no real time either. Must be read inside a
    running loop.

    Example:
        >>> import asyncio
        >>> async def elapsed() -> float:
        ...     clock = LoopClock()
        ...     start = clock.now()
        ...     await clock.sleep(0.01)
        ...     return clock.now() - start
        >>> asyncio.run(elapsed()) >= 0.01
        True
    """

    def __init__(self, origin: float | None = None) -> None:
        self._origin = origin
        """Unix time at loop time 0: given, or derived from the wall clock at first read."""

    def now(self) -> float:
        loop_time = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = time.time() - loop_time
        return self._origin + loop_time

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "LoopClock()"


class ManualClock:
    """A clock that only moves when told to.

    :meth:`advance` moves time and notifies subscribers (the in-memory
    provider subscribes so that lock expiry and scheduled messages take effect
    at once). :meth:`sleep` advances the clock by the requested amount instead
    of waiting, so retry back-off in tests costs no real time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every advance; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now})"


def to_datetime(timestamp: float) -> datetime:
    """Unix seconds to an aware UTC :class:`~datetime.datetime`."""
    return datetime.fromtimestamp(timestamp, tz=UTC)


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed; True if it is set.

    The one way the runtime waits for a wake-up with a bound. It uses
    ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11 ``wait_for``
    can swallow a cancellation, and a task that cannot be cancelled cannot be stopped.

    Example:
        >>> async def main() -> bool:
        ...     return await wait_for_event(asyncio.Event(), 0.01)
        >>> asyncio.run(main())
        False
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
