"""Probes: stand-in handlers that record every event the bot hands them and do
what the test tells them to.

A :class:`Probe` takes the place of a handler (the bot runs ``probe.handler``,
a :class:`~queue_runtime.bot.Handler` subclass made for its event types).
Each call is recorded as a :class:`ProbeEvent` with the virtual time it began
and ended, its outcome and the bot incarnation that made it. Tell it what to do
with a script of steps, each taken by the next call it applies to:
``fail`` (raise — transient by default, so the bot retries), ``delay`` (take
virtual seconds, then succeed), ``succeed``, or ``call`` your own function.
Calls no step applies to succeed at once.

Then assert: ``await probe.expect(event_type=..., session_id=...)`` waits for a
call (in virtual time), ``probe.events`` lists them all, ``assert_order``
checks the order of first handling and ``assert_no_overlap`` that no two
calls of one session ran at once.

Example:
    >>> from queue_runtime.bot import PermanentFailure
    >>> from queue_runtime.testing import Probe
    >>> probe = Probe("push", name="Pushes").fail(2).delay(5.0).fail(error=PermanentFailure)
    >>> probe.handler.__name__, probe.handler.event_types
    ('Pushes', ('push',))
    >>> probe
    Probe('push', name='Pushes', script=[fail x2, delay 5s x1, fail x1])
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from queue_runtime.bot import Event, Handler

__all__ = ["ANY", "BotCrashed", "Journal", "Life", "Probe", "ProbeEvent", "ProbeFailure"]


class _Any(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any.ANY
"""Matches any value (``session_id=None`` matches only events without a session)."""

Outcome = Literal["running", "returned", "raised", "cancelled", "crashed"]
"""What became of a call: still running; returned (the bot completes the message);
raised (the bot retries, abandons or dead-letters); cancelled (a stop interrupted
it after the drain timeout); or cut off by a crash of its bot."""


class ProbeFailure(Exception):
    """What :meth:`Probe.fail` raises unless told otherwise: an ordinary error, so
    the bot retries the message (a permanent one would be dead-lettered at once)."""


@dataclass(eq=False, slots=True)
class ProbeEvent:
    """One call of a probe: the event, when it began and ended (loop time, virtual
    under the kit), how it ended, and which bot incarnation made it."""

    event: Event
    probe: str
    at: float
    incarnation: int
    outcome: Outcome = "running"
    ended_at: float | None = None
    error: BaseException | None = None

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def session_id(self) -> str | None:
        return self.event.session_id

    @property
    def message_id(self) -> str:
        return self.event.message_id

    @property
    def delivery_count(self) -> int:
        return self.event.delivery_count

    @property
    def attempt(self) -> int:
        return self.event.attempt

    def json(self) -> Any:
        """The event's body parsed as JSON."""
        return self.event.json()

    def __repr__(self) -> str:
        return (
            f"ProbeEvent({self.type!r}, session_id={self.session_id!r}, "
            f"message_id={self.message_id!r}, delivery={self.delivery_count}, "
            f"attempt={self.attempt}, at={self.at:g}, {self.outcome})"
        )


class Journal:
    """Every call of the probes that share it, in the order the calls began.

    It also watches sessions: a call that begins while another call of the same
    session id is running (in a bot that has not crashed) is an *overlap* — the
    bot promises there are none. Probes of one :class:`~queue_runtime.testing.BotKit`
    share its journal; a probe on its own has its own.
    """

    def __init__(self) -> None:
        self.events: list[ProbeEvent] = []
        self.overlaps: list[tuple[ProbeEvent, ProbeEvent]] = []
        """(running call, call that began during it) of one session."""
        self._running: dict[str, list[ProbeEvent]] = {}

    def began(self, call: ProbeEvent) -> None:
        self.events.append(call)
        session = call.session_id
        if session is None:
            return  # messages without a session may run side by side
        running = self._running.setdefault(session, [])
        self.overlaps.extend((other, call) for other in running)
        running.append(call)

    def ended(self, call: ProbeEvent) -> None:
        session = call.session_id
        if session is None:
            return
        running = self._running.get(session, [])
        if call in running:
            running.remove(call)
            if not running:
                del self._running[session]

    def crashed(self, incarnation: int, at: float) -> None:
        """The bot ``incarnation`` died: its running calls end here, cut off."""
        for call in self.events:
            if call.incarnation == incarnation and call.outcome == "running":
                call.outcome = "crashed"
                call.ended_at = at
                self.ended(call)


class BotCrashed(Exception):
    """Raised into a crashed bot by its probe calls: the process is gone, so its
    handlers end at once (nothing the dead bot does reaches the provider)."""


class Life:
    """One incarnation of a bot, as its probes see it: a number, and whether it died.

    Calls of a dead incarnation report nothing more: they raise :class:`BotCrashed`
    into the dead bot, so that its teardown is quick. ``Life(0)`` (a probe used
    without the kit) never dies.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self.dead = False
        self._died: asyncio.Event | None = asyncio.Event() if number else None

    def die(self) -> None:
        """The process is gone: running calls end, new ones never start."""
        if self._died is None:
            raise RuntimeError("Life(0) stands for a bot outside the kit and cannot die")
        self.dead = True
        self._died.set()

    def check(self) -> None:
        """Raise :class:`BotCrashed` if this incarnation died."""
        if self.dead:
            raise BotCrashed(f"bot #{self.number} crashed")

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` — or until this incarnation dies (then raise BotCrashed)."""
        if self._died is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._died.wait()
        self.check()


Action = Callable[[Event, Life], Awaitable[None]]
Behaviour = Callable[[Event], Awaitable[None] | None]
ErrorSpec = BaseException | type[BaseException] | Callable[[Event], BaseException]


@dataclass(slots=True)
class _Step:
    describe: str
    act: Action
    times: int | None
    when: Callable[[Event], bool] | None = None


@dataclass(slots=True)
class _Script:
    steps: list[_Step] = field(default_factory=list)

    def take(self, event: Event) -> _Step | None:
        """The first step that applies to ``event``, one of its times used up."""
        for step in self.steps:
            if step.when is not None and not step.when(event):
                continue
            if step.times is not None:
                step.times -= 1
                if step.times <= 0:
                    self.steps.remove(step)
            return step
        return None


class Probe:
    """A scriptable, recording stand-in for a handler of ``event_types``.

    ``name`` becomes the handler class's name (what failure records show);
    ``concurrency`` is the handler's (see :class:`~queue_runtime.bot.Handler`).
    Script methods return the probe, so they chain.
    """

    def __init__(
        self,
        *event_types: str,
        name: str = "Probe",
        concurrency: int = Handler.concurrency,
        journal: Journal | None = None,
    ) -> None:
        if not event_types:
            raise ValueError("a probe needs at least one event type")
        for event_type in event_types:
            if not isinstance(event_type, str) or not event_type:
                raise ValueError(f"event types must be non-empty strings, got {event_type!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.event_types: tuple[str, ...] = tuple(event_types)
        self.name = name
        self.concurrency = concurrency
        self.journal = journal or Journal()
        self._events: list[ProbeEvent] = []
        self._claimed: set[int] = set()
        self._changed = asyncio.Event()
        self._script = _Script()
        self._standalone: type[Handler] | None = None

    # -- the handler the bot runs -----------------------------------------------

    @property
    def handler(self) -> type[Handler]:
        """The handler class to give a :class:`~queue_runtime.bot.Bot` (made once)."""
        if self._standalone is None:
            self._standalone = self.handler_for(Life(0))
        return self._standalone

    def handler_for(self, life: Life) -> type[Handler]:
        """A handler class whose calls belong to the bot incarnation ``life``
        (the test kit makes one per incarnation, so a crash can cut its calls off)."""
        probe = self

        class ProbeHandler(Handler):
            event_types: ClassVar[tuple[str, ...]] = probe.event_types
            concurrency: ClassVar[int] = probe.concurrency

            async def handle(self, event: Event) -> None:
                await probe._handle(event, life)

        ProbeHandler.__name__ = ProbeHandler.__qualname__ = self.name
        return ProbeHandler

    # -- the script -----------------------------------------------------------------

    def fail(
        self,
        times: int | None = 1,
        *,
        error: ErrorSpec | None = None,
        when: Callable[[Event], bool] | None = None,
    ) -> Probe:
        """The next ``times`` calls (``None``: every call) raise ``error``: an
        exception, an exception class, or a function of the event; by default a
        :class:`ProbeFailure`, which the bot retries. Raise
        :class:`~queue_runtime.bot.PermanentFailure` to have it dead-lettered."""
        make = _error_factory(error)

        async def act(event: Event, life: Life) -> None:
            raise make(event)

        return self._add("fail", act, times, when)

    def delay(
        self,
        seconds: float,
        times: int | None = 1,
        *,
        when: Callable[[Event], bool] | None = None,
    ) -> Probe:
        """The next ``times`` calls take ``seconds`` (virtual under the kit), then succeed."""
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")

        async def act(event: Event, life: Life) -> None:
            await life.sleep(seconds)

        return self._add(f"delay {seconds:g}s", act, times, when)

    def succeed(
        self, times: int | None = 1, *, when: Callable[[Event], bool] | None = None
    ) -> Probe:
        """The next ``times`` calls succeed at once (a step between others)."""

        async def act(event: Event, life: Life) -> None:
            return None

        return self._add("succeed", act, times, when)

    def call(
        self,
        behaviour: Behaviour,
        times: int | None = 1,
        *,
        when: Callable[[Event], bool] | None = None,
    ) -> Probe:
        """The next ``times`` calls run ``behaviour(event)`` (sync or async): its
        return means success, its exception failure."""
        if not callable(behaviour):
            raise TypeError(f"behaviour must be callable, got {behaviour!r}")

        async def act(event: Event, life: Life) -> None:
            result = behaviour(event)
            if inspect.isawaitable(result):
                await result

        return self._add(getattr(behaviour, "__name__", "call"), act, times, when)

    def reset(self) -> Probe:
        """Forget the script: every later call succeeds at once."""
        self._script.steps.clear()
        return self

    # -- what happened ----------------------------------------------------------------

    @property
    def events(self) -> list[ProbeEvent]:
        """Every call so far, in the order they began."""
        return list(self._events)

    async def expect(
        self,
        event_type: str | None = None,
        session_id: str | _Any | None = ANY,
        *,
        message_id: str | None = None,
        where: Callable[[ProbeEvent], bool] | None = None,
        timeout: float = 60.0,
    ) -> ProbeEvent:
        """Wait for a call that matches, and return it.

        Each call is returned once: the next ``expect`` with the same filters
        returns the next matching call. ``timeout`` is in loop seconds (virtual
        under the kit); on timeout an ``AssertionError`` lists what was seen.
        """
        wanted = _describe(event_type, session_id, message_id, where)

        def matches(call: ProbeEvent) -> bool:
            return (
                id(call) not in self._claimed
                and (event_type is None or call.type == event_type)
                and (session_id is ANY or call.session_id == session_id)
                and (message_id is None or call.message_id == message_id)
                and (where is None or where(call))
            )

        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = next((call for call in self._events if matches(call)), None)
                    if found is not None:
                        self._claimed.add(id(found))
                        return found
                    await self._changed.wait()
        except TimeoutError:
            seen = "\n".join(f"  {call!r}" for call in self._events[-10:]) or "  (no calls)"
            raise AssertionError(
                f"{self.name}: no call {wanted} within {timeout:g} s; "
                f"{len(self._events)} call(s), the last ones:\n{seen}"
            ) from None

    def first_handled(self, session_id: str | _Any | None = ANY) -> list[ProbeEvent]:
        """The first call of each message (in the order they began), optionally of one session."""
        seen: set[str] = set()
        firsts = []
        for call in self._events:
            if call.message_id in seen:
                continue
            seen.add(call.message_id)
            if session_id is ANY or call.session_id == session_id:
                firsts.append(call)
        return firsts

    def assert_order(
        self,
        expected: Sequence[Hashable],
        *,
        key: Callable[[ProbeEvent], Hashable] = lambda call: call.message_id,
    ) -> None:
        """Assert that the messages ``expected`` names (by message id, or by ``key``)
        were each handled, and first handled in this order. Others are ignored."""
        firsts = [key(call) for call in self.first_handled()]
        missing = [item for item in expected if item not in firsts]
        if missing:
            raise AssertionError(f"{self.name}: never handled: {missing!r}")
        wanted = set(expected)
        actual = [item for item in firsts if item in wanted]
        if actual != list(expected):
            raise AssertionError(
                f"{self.name}: first handled in the order {actual!r}, expected {list(expected)!r}"
            )

    def assert_no_overlap(self) -> None:
        """Assert that no call of this probe ran while another call of its session ran."""
        mine = [(a, b) for a, b in self.journal.overlaps if self.name in (a.probe, b.probe)]
        if mine:
            lines = "\n".join(f"  {b!r} began during {a!r}" for a, b in mine[:10])
            raise AssertionError(f"{self.name}: calls of one session overlapped:\n{lines}")

    def __repr__(self) -> str:
        types = ", ".join(repr(t) for t in self.event_types)
        script = ", ".join(
            f"{s.describe} x{'∞' if s.times is None else s.times}" for s in self._script.steps
        )
        return f"Probe({types}, name={self.name!r}, script=[{script}])"

    # -- internals ----------------------------------------------------------------------

    def _add(
        self, describe: str, act: Action, times: int | None, when: Callable[[Event], bool] | None
    ) -> Probe:
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError(f"times must be a positive integer or None, got {times!r}")
        if times is not None and times < 1:
            raise ValueError(f"times must be a positive integer or None, got {times!r}")
        self._script.steps.append(_Step(describe, act, times, when))
        return self

    async def _handle(self, event: Event, life: Life) -> None:
        life.check()  # a dead process starts nothing
        loop = asyncio.get_running_loop()
        call = ProbeEvent(event, self.name, loop.time(), life.number)
        self._events.append(call)
        self.journal.began(call)
        self._changed.set()
        self._changed = asyncio.Event()
        step = self._script.take(event)
        try:
            if step is not None:
                await step.act(event, life)
        except asyncio.CancelledError as error:
            self._ended(call, "cancelled", loop.time(), error)
            raise
        except Exception as error:
            self._ended(call, "raised", loop.time(), error)  # unless cut off by a crash
            raise
        self._ended(call, "returned", loop.time())
        life.check()  # finished, but nobody is left to hear it

    def _ended(
        self, call: ProbeEvent, outcome: Outcome, at: float, error: BaseException | None = None
    ) -> None:
        if call.outcome != "running":
            return  # already cut off by a crash
        call.outcome = outcome
        call.ended_at = at
        call.error = error
        self.journal.ended(call)


def _error_factory(error: ErrorSpec | None) -> Callable[[Event], BaseException]:
    if error is None:
        return lambda event: ProbeFailure(f"scripted failure of {event.message_id}")
    if isinstance(error, BaseException):
        instance = error
        return lambda event: instance
    if isinstance(error, type):
        cls = error
        return lambda event: cls(f"scripted failure of {event.message_id}")
    if callable(error):
        return error
    raise TypeError(f"error must be an exception, an exception class or a function, not {error!r}")


def _describe(
    event_type: str | None,
    session_id: str | _Any | None,
    message_id: str | None,
    where: Callable[[ProbeEvent], bool] | None,
) -> str:
    parts = []
    if event_type is not None:
        parts.append(f"event_type={event_type!r}")
    if session_id is not ANY:
        parts.append(f"session_id={session_id!r}")
    if message_id is not None:
        parts.append(f"message_id={message_id!r}")
    if where is not None:
        parts.append("where=...")
    return f"with {', '.join(parts)}" if parts else "at all"
