"""Virtual time: event loops whose clock jumps to the next timer instead of waiting.

A bot waits a lot — lock expiry (30 s), retry back-off, session idle timeouts
(60 s), circuit breaker recovery (30 s). Under virtual time every such wait
costs no real time: when nothing is ready to run, the loop's clock jumps to
the next timer. The test kit runs the bot, the in-memory provider and its
:class:`VirtualClock` on one such loop, so that provider time (lock expiry,
TTL, scheduled messages) and the actors' timers move together.

The loop is `looptime <https://pypi.org/project/looptime/>`_'s (install
``queue-runtime[testing]``): :func:`run` runs a coroutine on a fresh virtual
loop, like :func:`asyncio.run`; :func:`virtual_time` switches virtual time on
for a loop that is already running (the pytest fixtures do that for the test's
loop).

Example:
    >>> import asyncio
    >>> from queue_runtime.testing import run
    >>> async def an_hour() -> float:
    ...     loop = asyncio.get_running_loop()
    ...     start = loop.time()
    ...     await asyncio.sleep(3600)  # returns at once, in real time
    ...     return loop.time() - start
    >>> run(an_hour())
    3600.0
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from queue_runtime.clock import LoopClock

if TYPE_CHECKING:
    from looptime import LoopTimeEventLoop

__all__ = ["EPOCH", "VirtualClock", "is_virtual", "new_event_loop", "run", "virtual_time"]

T = TypeVar("T")
L = TypeVar("L", bound=asyncio.AbstractEventLoop)

EPOCH = 1_700_000_000.0
"""The Unix time a :class:`VirtualClock` reads when its loop's time is 0."""

NOOP_CYCLES = 1
"""Loop iterations looptime lets pass before it moves the clock. Nothing in the
runtime waits on threads or sockets, so one is enough; fewer iterations per
jump make long simulated timelines cheap."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop with virtual time, starting at 0."""
    loop: asyncio.AbstractEventLoop = _looptime().new_event_loop(noop_cycles=NOOP_CYCLES)
    return _precise(loop)


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` on a fresh virtual-time loop and return its result, like
    :func:`asyncio.run` (which on Python 3.11 takes no loop factory)."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True if ``loop`` (default: the running one) runs on virtual time right now."""
    loop = loop or asyncio.get_running_loop()
    try:
        from looptime import LoopTimeEventLoop
    except ImportError:
        return False
    return isinstance(loop, LoopTimeEventLoop) and loop.looptime_on


@contextlib.contextmanager
def virtual_time(loop: asyncio.AbstractEventLoop | None = None) -> Iterator[None]:
    """Switch virtual time on for ``loop`` (default: the running one) inside the block.

    The loop's clock carries on from where it is, and real time takes over again
    at the end of the block. Whatever measures time (a kit, a bot) must live
    entirely inside the block: a clock that was read in both modes jumps.
    """
    patched = _precise(_patched(loop or asyncio.get_running_loop()))
    if patched.looptime_on:
        yield  # already virtual (a looptime marker, an outer block): nothing to switch
        return
    patched.setup_looptime(noop_cycles=NOOP_CYCLES)  # the clock carries on where it is
    with patched.looptime_enabled():
        yield


class VirtualClock(LoopClock):
    """A :class:`~queue_runtime.clock.LoopClock` that starts at a fixed Unix time.

    ``now()`` is :data:`EPOCH` plus the loop's time, where ``LoopClock`` adds the
    wall-clock time it first saw. A fixed start makes runs repeat bit for bit
    (a seeded simulation reproduces exactly), and keeps timestamps readable.

    Example:
        >>> import asyncio
        >>> async def read() -> float:
        ...     clock = VirtualClock()
        ...     await clock.sleep(30.0)
        ...     return clock.now()
        >>> run(read()) == EPOCH + 30.0
        True
    """

    def __init__(self, epoch: float = EPOCH) -> None:
        super().__init__(origin=epoch)
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"VirtualClock(epoch={self.epoch!r})"


def _looptime() -> Any:
    try:
        import looptime
    except ImportError as exc:  # pragma: no cover - the testing extra is not installed
        raise RuntimeError(
            "virtual time needs looptime: pip install 'queue-runtime[testing]'"
        ) from exc
    return looptime


def _patched(loop: asyncio.AbstractEventLoop) -> LoopTimeEventLoop:
    """``loop`` as a looptime loop (patched in place, still on real time, if it was not)."""
    looptime = _looptime()
    if isinstance(loop, looptime.LoopTimeEventLoop):
        already: LoopTimeEventLoop = loop
        return already
    if not isinstance(loop, asyncio.BaseEventLoop):
        raise TypeError(f"virtual time needs an asyncio.BaseEventLoop, got {type(loop).__name__}")
    patched: LoopTimeEventLoop = looptime.patch_event_loop(loop, _enabled=False)
    return patched


class _PreciseTimers:
    """Fire a timer when the loop's time has reached it, not up to a nanosecond before.

    asyncio runs every timer due before ``time() + _clock_resolution`` (1 ns).
    On real time that is harmless: a task that finds its deadline a hair ahead
    waits again and real time moves on. On virtual time nothing moves while a
    timer is ready, so such a task — one that sleeps ``deadline - loop.time()``
    while that is positive, as the lock renewer and the in-memory provider do —
    would spin forever on a float rounding error. With a resolution of one
    unit in the last place, a timer runs only once the clock has reached it
    (the virtual clock jumps to it first).
    """

    @property
    def _clock_resolution(self) -> float:
        loop = cast(asyncio.AbstractEventLoop, self)
        return math.ulp(loop.time()) if getattr(loop, "looptime_on", False) else 1e-9

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        pass  # set by BaseEventLoop.__init__; the property above decides


_PRECISE: dict[type, type] = {}


def _precise(loop: L) -> L:
    """``loop`` with :class:`_PreciseTimers` mixed into its class (in place, once)."""
    cls = type(loop)
    if issubclass(cls, _PreciseTimers):
        return loop
    precise = _PRECISE.get(cls)
    if precise is None:
        precise = _PRECISE[cls] = type(f"Precise{cls.__name__}", (_PreciseTimers, cls), {})
    loop.__class__ = precise
    return loop
