"""What the actors of one bot share: settings, counters, and the client.

Each actor owns its own state; this is only the read-mostly context every
actor of a bot needs (the settings it was built with, the client) and the
counters that ``bot.stats()`` reports. Everything runs on one event loop, so
counters need no locks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from queue_runtime.bot.circuits import HandlerCircuits
from queue_runtime.bot.handlers import RestartPolicy
from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.client import QueueClient
from queue_runtime.clock import wait_for_event
from queue_runtime.errors import ConfigurationError
from queue_runtime.messages import QueueName, ReceivedMessage
from queue_runtime.retry import RetryPolicy

__all__ = ["BotContext", "BotOptions", "BotSettings", "BotStats", "Router"]

Router = Callable[[ReceivedMessage], str | None]
"""Picks the event type of a message; ``None`` means "no handler"."""


@dataclass(frozen=True, slots=True)
class BotSettings:
    """How a bot behaves: every setting of :class:`~queue_runtime.bot.Bot` and its default.

    * ``max_sessions`` — native sessions held at once.
    * ``session_idle_timeout`` — a session actor is stopped after this many idle
      seconds (native sessions are released as soon as they are drained).
    * ``mailbox_size`` — messages a native session pump fetches at a time.
    * ``max_in_flight`` — received but unsettled messages; pulling pauses above it.
    * ``drain_timeout`` — how long ``stop()`` lets running handlers finish.
    * ``max_delivery_count`` — failed handlings after which a message is
      dead-lettered. Unset, it is the provider's own delivery limit
      (``client.max_delivery_count``, from the provider's config); it may be lower,
      never higher. Each failed handling is handled again in place, so a poison
      message spends one delivery of the queue's limit.
    * ``retry`` — the attempts of one handling, in place (default: 3 attempts in
      all, 1 s then 2 s apart with ±20 % jitter); the next handling follows one
      back-off step later.
    * ``event_type_attribute`` / ``router`` — how the event type is found.
    * ``unrouted`` — ``"dead_letter"`` (reason ``NoHandler``) or ``"complete"``.
    * ``permanent_errors`` — exception types dead-lettered at once, like
      :class:`~queue_runtime.bot.PermanentFailure`.
    * ``unordered_concurrency`` — lanes for messages without a session id.
    * ``receive_wait`` — how long one receive waits for messages.
    * ``failure_tracebacks`` — add a truncated traceback to the failure record of
      each dead letter (off by default: tracebacks may hold payload data).
    * ``restart_policy`` — restart back-off of crashed handlers and what a
      crash loop does: pause pulling (default) or stop the bot; see
      :class:`~queue_runtime.bot.RestartPolicy`.
    * ``handler_circuit`` — thresholds of each handler's circuit breaker (by
      default open after 5 consecutive failures, probe after 30 s, close after 3
      successes; ``CircuitBreakerConfig(enabled=False)`` turns them off). While one
      is open the bot stops pulling and holds the messages waiting for that
      handler with their locks kept alive, so an outage downstream burns no
      delivery counts; see :mod:`queue_runtime.bot.circuits`.
    * ``stall_timeout`` — a receiver whose pull loop has not gone round for this
      long (every round is bounded by timeouts, so it is stuck or dead) is
      restarted by the bot's watchdog.
    * ``health_port`` — serve ``/healthz`` (liveness) and ``/readyz`` (readiness)
      from ``Bot.health()`` on this port, on all interfaces (off by default; 0
      picks a free port, see ``Bot.health_server``).

    Example:
        >>> from queue_runtime.bot import BotSettings
        >>> settings = BotSettings(max_in_flight=200)
        >>> settings.max_in_flight, settings.max_delivery_count  # None: the provider's
        (200, None)
        >>> BotSettings(max_sessions=0)
        Traceback (most recent call last):
        ...
        queue_runtime.errors.ConfigurationError: max_sessions: must be at least 1
    """

    max_sessions: int = 100
    session_idle_timeout: float = 60.0
    mailbox_size: int = 10
    max_in_flight: int = 1000
    drain_timeout: float = 30.0
    max_delivery_count: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    event_type_attribute: str = "event_type"
    router: Router | None = None
    unrouted: Literal["dead_letter", "complete"] = "dead_letter"
    permanent_errors: Sequence[type[BaseException]] = ()
    unordered_concurrency: int = 32
    receive_wait: float = 1.0
    failure_tracebacks: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    handler_circuit: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    stall_timeout: float = 120.0
    health_port: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "permanent_errors", tuple(self.permanent_errors))
        for name in ("max_sessions", "mailbox_size", "max_in_flight", "max_delivery_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError("must be at least 1", field=name)
        if self.unordered_concurrency < 1:
            raise ConfigurationError("must be at least 1", field="unordered_concurrency")
        for name in ("session_idle_timeout", "drain_timeout", "receive_wait", "stall_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigurationError("must be positive", field=name)
        if self.unrouted not in ("dead_letter", "complete"):
            raise ConfigurationError("must be 'dead_letter' or 'complete'", field="unrouted")


class BotOptions(TypedDict, total=False):
    """:class:`BotSettings` fields as keyword arguments of ``Bot(...)`` (no defaults here:
    a field left out keeps the value of ``settings``, or ``BotSettings``' default)."""

    max_sessions: int
    session_idle_timeout: float
    mailbox_size: int
    max_in_flight: int
    drain_timeout: float
    max_delivery_count: int | None
    retry: RetryPolicy
    event_type_attribute: str
    router: Router | None
    unrouted: Literal["dead_letter", "complete"]
    permanent_errors: Sequence[type[BaseException]]
    unordered_concurrency: int
    receive_wait: float
    failure_tracebacks: bool
    restart_policy: RestartPolicy
    handler_circuit: CircuitBreakerConfig
    stall_timeout: float
    health_port: int | None


@dataclass(slots=True)
class BotStats:
    """Counters of a bot since it started (a snapshot when returned by ``bot.stats()``)."""

    received: int = 0
    completed: int = 0
    retried: int = 0
    abandoned: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    active_sessions: int = 0
    handler_restarts: int = 0
    receiver_restarts: int = 0
    """Times the stall watchdog restarted a receiver that had stopped going round."""
    lock_renewals: int = 0
    lost_locks: int = 0
    """Settles that found the lock gone (the message comes back: handled again)."""
    settle_failures: int = 0
    """Settles that failed otherwise (the message comes back after its lock expires).

    received == completed + abandoned + dead_lettered + lost_locks + settle_failures
    + in_flight, at every moment."""
    held: int = 0
    """Messages waiting for a handler whose circuit is open (locks kept alive)."""
    circuits: dict[str, str] = field(default_factory=dict)
    """Handler name -> circuit state (``"closed"``, ``"open"``, ``"half_open"``)."""
    provider_circuit: str = "closed"
    """The state of the client's circuit breaker around provider calls."""

    def copy(self) -> BotStats:
        return dataclasses.replace(self, circuits=dict(self.circuits))


def handling_limit(settings: BotSettings, client: QueueClient) -> int:
    """The bot's limit of failed handlings: its own setting, or the provider's delivery
    limit; a setting above the provider's is refused (the provider would dead-letter
    the message first, without its failure record).

    Example:
        >>> import queue_runtime as qr
        >>> from queue_runtime.providers.memory import InMemoryProvider
        >>> client = qr.QueueClient(InMemoryProvider(qr.InMemoryConfig(max_delivery_count=10)))
        >>> handling_limit(BotSettings(), client)
        10
        >>> handling_limit(BotSettings(max_delivery_count=3), client)
        3
    """
    limit = client.max_delivery_count
    wanted = settings.max_delivery_count
    if wanted is None:
        return limit
    if wanted > limit:
        raise ConfigurationError(
            f"{wanted} is above the provider's delivery limit {limit} "
            f"({client.provider_type.value}): lower it, or raise the provider's max_delivery_count",
            field="max_delivery_count",
        )
    return wanted


class BotContext:
    """Settings, client and counters shared by one bot's actors."""

    def __init__(
        self,
        client: QueueClient,
        queue: QueueName,
        settings: BotSettings,
        handler_names: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.queue = queue
        self.settings = settings
        self.max_delivery_count = handling_limit(settings, client)
        """Failed handlings after which a message is dead-lettered (see :class:`BotSettings`)."""
        self.stats = BotStats()
        self.circuits = HandlerCircuits(handler_names, settings.handler_circuit)
        """One circuit breaker per handler class (see :mod:`queue_runtime.bot.circuits`)."""
        self.draining = False
        """Set when the bot stops: no new work starts, prefetched messages are abandoned."""
        self.stop_by: float | None = None
        """Event-loop time by which a stopping bot must be done (start + ``drain_timeout``)."""
        self._room = asyncio.Event()
        self.stop_requested = asyncio.Event()
        """Set by an actor that wants the bot stopped; the bot's own task does the stopping."""
        self.stop_reason: str | None = None

    def patience(self) -> float:
        """Seconds a stopping part may still wait for something in flight: what is left
        until :attr:`stop_by`, or ``drain_timeout`` when the bot is not stopping."""
        if self.stop_by is None:
            return self.settings.drain_timeout
        return max(0.0, self.stop_by - asyncio.get_running_loop().time())

    def too_late(self, round: int) -> bool:
        """True if the bot is stopping and the retry policy's pause before retry ``round``
        would end after its drain deadline (the settle rounds of :mod:`.settling`)."""
        return self.stop_by is not None and self.patience() < self.settings.retry.delay(round)

    def request_stop(self, reason: str) -> None:
        """Ask the bot to stop gracefully (it stops in a task it owns; this returns at once)."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    def settled(self, count: int = 1) -> None:
        """Record that ``count`` in-flight messages were settled (or given up)."""
        self.stats.in_flight -= count
        self.wake()

    def wake(self) -> None:
        """Wake whoever waits in :meth:`wait_for_room` (a message or a session slot freed)."""
        self._room.set()

    async def wait_for_room(self, timeout: float) -> None:
        """Wait until something was settled or freed, or ``timeout`` seconds passed."""
        self._room.clear()
        await wait_for_event(self._room, timeout)
