"""The bot kit: a :class:`~queue_runtime.bot.Bot` on the in-memory provider,
under virtual time, with probes, faults, crashes and the checks that matter.

A :class:`BotKit` owns one :class:`~queue_runtime.providers.memory.InMemoryProvider`
(on a :class:`~queue_runtime.testing.VirtualClock`) and runs the bot on it
through a :class:`~queue_runtime.testing.FaultyProvider` — the
bot's connection, where ``kit.faults`` strike. The test publishes through a
connection of its own, which faults never touch.

``crash()`` models a process dying: the bot's connection is cut at once (no
settle reaches the provider any more, what it held stays locked until the locks
expire), probe calls of that bot are cut off and no new ones start, and the old
bot is stopped in the background — in virtual time, so its drain costs nothing.
``start()`` then starts a new bot on the same provider, as a restarted process
would. (Handlers that are not probes are not cut off: a call already running
when the bot crashes runs to its end, and its result is lost.)

Example:
    >>> from queue_runtime.testing import BotKit, run
    >>> async def main() -> list[str]:
    ...     kit = BotKit()
    ...     pushes = kit.probe("push").fail(1)  # fails once, then succeeds
    ...     async with kit:  # starts the bot; stops it and closes everything at the end
    ...         await kit.publish("push", {"ref": "main"}, session_id="octo/repo")
    ...         await kit.drain()
    ...         kit.assert_invariants()
    ...         return [f"{e.outcome} at {e.at:g}" for e in pushes.events]
    >>> run(main())
    ['raised at 0', 'returned at 0.5']
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self

import queue_runtime as qr
from queue_runtime.bot import Bot, BotStats, Handler
from queue_runtime.bot.context import BotOptions
from queue_runtime.clock import to_datetime
from queue_runtime.messages import Message, ReceivedMessage
from queue_runtime.providers.memory import FaultInjector, InMemoryProvider, QueueStats
from queue_runtime.testing.faults import FaultyProvider
from queue_runtime.testing.invariants import Published, Record, violations
from queue_runtime.testing.probes import Journal, Life, Probe
from queue_runtime.testing.virtual import VirtualClock, is_virtual

__all__ = ["BotKit", "KitStats"]

_BOT_OPTIONS = frozenset(BotOptions.__annotations__) | {"settings"}


@dataclass(frozen=True, slots=True)
class KitStats:
    """What happened in a kit, for assertions."""

    published: int
    bot: BotStats
    """The counters of every bot the kit started, added up."""
    queue: QueueStats
    """The provider's view of the queue now."""
    faults_injected: int
    crashes: int
    starts: int


class BotKit:
    """Runs a bot for a test: publish, drain, crash, restart, inspect, assert.

    ``handlers`` are the bot's handler classes and probes (more with :meth:`probe`
    and :meth:`replace` before :meth:`start`). ``memory`` configures the provider
    (session mode, lock durations, max delivery count); ``client`` the bot's client
    (retry, circuit breaker) — by default without jitter, so runs repeat exactly.
    ``seed`` seeds the random fault rules. Every other keyword is a
    :class:`~queue_runtime.bot.Bot` setting (``retry``, ``max_delivery_count``,
    ``session_idle_timeout``, ...). The kit must run on a virtual-time loop
    (:func:`~queue_runtime.testing.run`, or the ``bot_kit`` pytest fixture).
    """

    def __init__(
        self,
        handlers: Iterable[type[Handler] | Probe] = (),
        *,
        queue: str = "events",
        memory: qr.InMemoryConfig | None = None,
        client: qr.QueueConfig | None = None,
        seed: int | None = 0,
        **bot_options: Any,
    ) -> None:
        unknown = sorted(set(bot_options) - _BOT_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown Bot setting(s) {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(_BOT_OPTIONS))}"
            )
        self._state: Literal["new", "running", "crashed", "closed"] = "new"
        self.queue = qr.QueueName(queue)
        self.memory = memory or qr.InMemoryConfig()
        self.journal = Journal()
        self.clock = VirtualClock()
        self.provider = InMemoryProvider(self.memory, clock=self.clock)
        self.faults = FaultInjector(seed)
        """Faults on the bot's connection (the test's publishing is never touched)."""
        bot_options.setdefault("retry", qr.RetryPolicy(initial_delay=0.5, jitter=0.0))
        self._bot_options = bot_options
        self._client_config = client or qr.QueueConfig(
            provider=self.memory, retry=qr.RetryPolicy(jitter=0.0)
        )
        self._publisher = qr.QueueClient(
            self.provider, qr.QueueConfig(provider=self.memory), clock=self.clock
        )
        self._handlers: list[type[Handler] | Probe] = []
        for handler in handlers:
            self._add(handler)
        self._published: list[Published] = []
        self._bots: list[Bot] = []
        self._connections: list[FaultyProvider] = []
        self._clients: list[qr.QueueClient] = [self._publisher]
        self._bot: Bot | None = None
        self._life: Life | None = None
        self._lives = itertools.count(1)
        self._stopping: list[asyncio.Task[None]] = []
        """Crashed bots being stopped in the background; awaited by :meth:`close`."""
        self._crashes = 0

    # -- handlers -------------------------------------------------------------------

    @property
    def probes(self) -> list[Probe]:
        return [handler for handler in self._handlers if isinstance(handler, Probe)]

    def probe(self, *event_types: str, name: str = "Probe", concurrency: int = 64) -> Probe:
        """A new probe for ``event_types``, added to the bot's handlers."""
        probe = Probe(*event_types, name=name, concurrency=concurrency, journal=self.journal)
        self._add(probe)
        return probe

    def replace(self, handler: type[Handler]) -> Probe:
        """Put a probe in the place of ``handler``: same event types, name and concurrency."""
        self._before_start("replace")
        if handler not in self._handlers:
            raise ValueError(
                f"{getattr(handler, '__name__', handler)!r} is not a handler of this kit"
            )
        probe = Probe(
            *handler.event_types,
            name=handler.__name__,
            concurrency=handler.concurrency,
            journal=self.journal,
        )
        self._handlers[self._handlers.index(handler)] = probe
        return probe

    # -- the bot's life -----------------------------------------------------------------

    @property
    def bot(self) -> Bot:
        """The running bot."""
        if self._bot is None:
            raise RuntimeError(f"no bot is running (the kit is {self._state})")
        return self._bot

    async def start(self) -> None:
        """Start a bot (the first, or a new one after :meth:`crash`)."""
        if self._state not in ("new", "crashed"):
            raise RuntimeError(f"start() needs a new or crashed kit; it is {self._state}")
        if not is_virtual():
            raise RuntimeError(
                "BotKit needs virtual time: run it with queue_runtime.testing.run(...), "
                "or use the bot_kit pytest fixture"
            )
        life = Life(next(self._lives))
        connection = FaultyProvider(self.provider, self.faults, clock=self.clock)
        client = qr.QueueClient(connection, self._client_config, clock=self.clock)
        self._clients.append(client)
        handlers = [h.handler_for(life) if isinstance(h, Probe) else h for h in self._handlers]
        bot = Bot(client, self.queue, handlers, **self._bot_options)
        self._connections.append(connection)
        self._bots.append(bot)
        self._bot, self._life = bot, life
        self._state = "running"
        await bot.start()

    async def crash(self) -> None:
        """Kill the bot's process: see the module documentation for what that means."""
        if self._state != "running":
            raise RuntimeError(f"crash() needs a running bot; the kit is {self._state}")
        bot, life = self.bot, self._life
        assert life is not None
        self._connections[-1].disconnect()
        life.die()
        self.journal.crashed(life.number, asyncio.get_running_loop().time())
        self._crashes += 1
        self._bot, self._life = None, None
        self._state = "crashed"
        self._stopping.append(
            asyncio.get_running_loop().create_task(bot.stop(), name="crashed bot teardown")
        )

    async def restart(self, downtime: float = 0.0) -> None:
        """:meth:`crash`, wait ``downtime`` virtual seconds, :meth:`start` a new bot."""
        await self.crash()
        await asyncio.sleep(downtime)
        await self.start()

    async def close(self) -> None:
        """Stop the bot gracefully, finish crashed bots' teardown, close everything."""
        if self._state == "closed":
            return
        try:
            if self._bot is not None:
                await self._bot.stop()
        finally:
            self._bot, self._state = None, "closed"
            try:
                for stopping in self._stopping:
                    await stopping
            finally:
                for client in self._clients:
                    await client.aclose()
                await self.provider.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- publishing -------------------------------------------------------------------

    async def publish(
        self,
        event_type: str,
        payload: Any = None,
        *,
        session_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        delay: float | None = None,
    ) -> str:
        """Send an event of ``event_type`` (bytes, or JSON of ``payload``; ``{}`` if
        None) to the queue; returns its message id. ``delay`` schedules it that many
        virtual seconds ahead."""
        fields: dict[str, Any] = {
            "session_id": session_id,
            "attributes": {**(attributes or {}), self._event_type_attribute: event_type},
            "correlation_id": correlation_id,
        }
        if message_id is not None:
            fields["message_id"] = message_id
        if isinstance(payload, bytes):
            message = Message(payload, **fields)
        else:
            message = Message.from_json({} if payload is None else payload, **fields)
        return await self.publish_message(message, delay=delay)

    async def publish_message(self, message: Message, *, delay: float | None = None) -> str:
        """Send a ready-made message to the queue; returns its message id."""
        if delay is not None:
            if not 0 <= delay < float("inf"):
                raise ValueError(f"delay must be a non-negative number, got {delay!r}")
            at = to_datetime(self.clock.now()) + timedelta(seconds=delay)
            message = dataclasses.replace(message, scheduled_enqueue_time=at)
        message_id = await self._publisher.send_message(self.queue, message)
        self._published.append(
            Published(
                message_id=message_id,
                session_id=message.session_id,
                attributes=dict(message.attributes),
                scheduled=message.scheduled_enqueue_time is not None,
            )
        )
        return message_id

    @property
    def published(self) -> list[Published]:
        """Everything published through the kit, in order."""
        return list(self._published)

    # -- waiting ----------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (everything due in between happens)."""
        await asyncio.sleep(seconds)

    async def drain(self, timeout: float = 600.0, *, poll: float = 0.1) -> None:
        """Wait until every message was completed or dead-lettered: nothing waiting,
        scheduled or locked in the queue, nothing held by the bot. Checks every
        ``poll`` virtual seconds; raises ``AssertionError`` after ``timeout``."""
        if self._state != "running":
            raise RuntimeError(f"drain() needs a running bot; the kit is {self._state}")
        try:
            async with asyncio.timeout(timeout):
                # polling: queue and bot change on their own, and virtual waits cost nothing
                while not self._drained():  # noqa: ASYNC110
                    await asyncio.sleep(poll)
        except TimeoutError:
            raise AssertionError(
                f"not drained after {timeout:g} virtual seconds: queue {self._queue_stats()}, "
                f"bot {self.bot.stats()}"
            ) from None

    def _drained(self) -> bool:
        queue = self._queue_stats()
        return (
            queue.active == 0
            and queue.in_flight == 0
            and queue.scheduled == 0
            and self.bot.stats().in_flight == 0
        )

    # -- inspection -------------------------------------------------------------------

    def dead_letters(self) -> list[ReceivedMessage]:
        """The queue's dead letters, oldest first, with reasons and failure records."""
        return self.provider.dead_letter_messages(self.queue)

    def stats(self) -> KitStats:
        """Counts of what happened so far."""
        return KitStats(
            published=len(self._published),
            bot=_add_up(bot.stats() for bot in self._bots),
            queue=self._queue_stats(),
            faults_injected=self.faults.injected,
            crashes=self._crashes,
            starts=len(self._bots),
        )

    def check_invariants(self) -> list[str]:
        """What went wrong, if anything — see :mod:`queue_runtime.testing.invariants`
        (every message completed or dead-lettered, no session handled twice at
        once, per-session order of first handling, counters that add up)."""
        routed_by_attribute = self._bot_options.get("router") is None
        record = Record(
            published=self._published,
            journal=self.journal,
            probe_event_types=frozenset(t for p in self.probes for t in p.event_types),
            event_type_attribute=self._event_type_attribute if routed_by_attribute else None,
            dead_lettered=frozenset(m.message_id for m in self.dead_letters()),
            queue=self._queue_stats(),
            bots=[bot.stats() for bot in self._bots],
            max_delivery_count=self.memory.max_delivery_count,
        )
        return violations(record)

    def assert_invariants(self) -> None:
        """Raise ``AssertionError`` listing every broken invariant (none: return)."""
        broken = self.check_invariants()
        if broken:
            raise AssertionError("broken invariants:\n" + "\n".join(f"- {b}" for b in broken))

    def __repr__(self) -> str:
        return f"BotKit(queue={self.queue!r}, {self._state}, starts={len(self._bots)})"

    # -- internals --------------------------------------------------------------------

    def _add(self, handler: type[Handler] | Probe) -> None:
        self._before_start("adding a handler")
        if not isinstance(handler, Probe) and not (
            isinstance(handler, type) and issubclass(handler, Handler)
        ):
            raise TypeError(f"handlers must be Handler subclasses or probes, got {handler!r}")
        if isinstance(handler, Probe):
            handler.journal = self.journal  # one journal: one order of calls, one session watch
        self._handlers.append(handler)

    def _before_start(self, what: str) -> None:
        if self._state != "new":
            raise RuntimeError(f"{what} must happen before start(); the kit is {self._state}")

    @property
    def _event_type_attribute(self) -> str:
        attribute: str = self._bot_options.get("event_type_attribute", "event_type")
        return attribute

    def _queue_stats(self) -> QueueStats:
        return self.provider.stats(self.queue)


def _add_up(stats: Iterable[BotStats]) -> BotStats:
    """Counters added up; anything else (circuit states) as the latest bot has it."""
    total = BotStats()
    for one in stats:
        for field in dataclasses.fields(BotStats):
            value = getattr(one, field.name)
            if isinstance(value, int):
                value += getattr(total, field.name)
            setattr(total, field.name, value)
    return total
