"""Handlers: the user's code, as actors, one class per group of event types.

Subclass :class:`Handler`, list the event types it takes, and write
``async def handle(self, event)``. Returning means "done" (the message is
completed); raising means "failed, retry"; raising :class:`PermanentFailure`
(or a type in the bot's ``permanent_errors``) means "this can never succeed:
dead-letter it now".

A handler instance works on up to ``concurrency`` events at once, never two
of the same session (the session actor waits for each answer). Set
``concurrency = 1`` for strictly one event at a time. State kept on the
handler lives as long as the actor; a crashed handler is restarted fresh.
``handle`` runs in the session actor's task when one of the handler's workers
is idle (:meth:`AsyncioActorRef.call <queue_runtime.actors.AsyncioActorRef.call>`),
else in a worker task: do not rely on which task, or keep context variables set.

Example:
    >>> from queue_runtime.bot import Event, Handler
    >>> class PullRequests(Handler):
    ...     event_types = ("pull_request",)
    ...     async def handle(self, event: Event) -> None:
    ...         payload = event.json()
    ...         print(payload["action"], event.session_id)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal

import orjson
from opentelemetry.context import Context

from queue_runtime.actors import AsyncioActor, AsyncioActorRef, kill, stop_all
from queue_runtime.errors import ConfigurationError
from queue_runtime.messages import ReceivedMessage
from queue_runtime.telemetry import activate, log_fields

__all__ = [
    "WILDCARD",
    "Event",
    "Handler",
    "HandlerSupervisor",
    "PermanentFailure",
    "RestartPolicy",
    "routes",
]

logger = logging.getLogger("queue_runtime.bot")

WILDCARD = "*"
"""An event type that matches every event without a more specific handler."""


class PermanentFailure(Exception):
    """Raise from a handler when retrying cannot help: the message is dead-lettered now."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How crashed handler actors are restarted, and when crash-looping escalates.

    A handler that died is restarted after ``initial_backoff`` seconds,
    doubling with each restart in the ``window`` up to ``max_backoff``. More
    than ``max_restarts`` restarts of one handler within ``window`` seconds is
    an escalation: ``"pause"`` stops pulling until the window has passed
    without that many restarts; ``"stop"`` also stops the bot gracefully
    (``bot.run()`` then returns).

    Example:
        >>> policy = RestartPolicy(max_restarts=3, on_escalation="stop")
        >>> [policy.backoff(n) for n in (1, 2, 3)]
        [0.1, 0.2, 0.4]
        >>> RestartPolicy(max_backoff=0.15).backoff(3)
        0.15
    """

    max_restarts: int = 10
    window: float = 60.0
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    on_escalation: Literal["pause", "stop"] = "pause"

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ConfigurationError("must not be negative", field="restart_policy.max_restarts")
        if not self.window > 0:
            raise ConfigurationError("must be positive", field="restart_policy.window")
        if not 0 <= self.initial_backoff <= self.max_backoff:
            raise ConfigurationError(
                "need 0 <= initial_backoff <= max_backoff", field="restart_policy.initial_backoff"
            )
        if self.on_escalation not in ("pause", "stop"):
            raise ConfigurationError(
                "must be 'pause' or 'stop'", field="restart_policy.on_escalation"
            )

    def backoff(self, restarts: int) -> float:
        """The delay before the ``restarts``-th restart in the window (1-based)."""
        return min(self.initial_backoff * 2.0 ** (restarts - 1), self.max_backoff)


@dataclass(frozen=True, slots=True)
class Event:
    """One message, as a handler sees it."""

    type: str
    session_id: str | None
    body: bytes
    attributes: Mapping[str, str]
    correlation_id: str | None
    message_id: str
    delivery_count: int
    attempt: int
    """1-based attempt within this delivery (in-place retries count up)."""
    message: ReceivedMessage
    trace_context: Context | None = field(default=None, repr=False, compare=False)
    """The processing span's context: current while ``handle`` runs."""

    @classmethod
    def from_message(
        cls,
        message: ReceivedMessage,
        event_type: str,
        attempt: int = 1,
        trace_context: Context | None = None,
    ) -> Event:
        return cls(
            type=event_type,
            session_id=message.session_id,
            body=message.body,
            attributes=message.attributes,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            delivery_count=message.delivery_count,
            attempt=attempt,
            message=message,
            trace_context=trace_context,
        )

    def json(self) -> Any:
        """The body parsed as JSON (orjson)."""
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return (
            f"Event(type={self.type!r}, session_id={self.session_id!r}, "
            f"message_id={self.message_id!r}, attempt={self.attempt})"
        )


@dataclass(frozen=True, slots=True)
class Admitted:
    """An event for a handler, called only if ``admits()`` still holds when its turn comes.

    A session actor checks the handler's circuit before it asks; the call itself
    starts a little later, on the handler's worker. If the circuit opened in
    between, the call is not made (:class:`NotAdmitted`), so no call ever starts
    against a downstream the circuit has declared down.
    """

    event: Event
    admits: Callable[[], bool]


class NotAdmitted(Exception):
    """The handler's circuit opened between admission and the call; nothing was called."""


class Handler(AsyncioActor):
    """Base class of user handlers. Override :meth:`handle`; set ``event_types``."""

    event_types: ClassVar[tuple[str, ...]] = ()
    """The event types this handler takes; ``("*",)`` takes whatever no other handler does."""

    concurrency: ClassVar[int] = 64

    async def handle(self, event: Event) -> None:
        """Process one event. Raise to fail it (see the module docs for what happens)."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    async def on_receive(self, message: Any) -> Any:
        if isinstance(message, Admitted):
            if not message.admits():
                raise NotAdmitted(type(self).__name__)
            message = message.event
        if isinstance(message, Event):
            if message.trace_context is None:  # nothing to make current (no SDK, no trace)
                return await self.handle(message)
            with activate(message.trace_context):  # the handler's spans join the message's trace
                return await self.handle(message)
        return super().on_receive(message)


def routes(handlers: Iterable[type[Handler]]) -> dict[str, type[Handler]]:
    """Event type -> handler class; a clear error for anything that is not a valid set."""
    table: dict[str, type[Handler]] = {}
    for handler in handlers:
        if not (isinstance(handler, type) and issubclass(handler, Handler)):
            raise TypeError(f"handlers must be Handler subclasses, got {handler!r}")
        if not handler.event_types:
            raise ValueError(f"{handler.__name__}.event_types is empty")
        for event_type in handler.event_types:
            if event_type in table:
                raise ValueError(
                    f"event type {event_type!r} has two handlers: "
                    f"{table[event_type].__name__} and {handler.__name__}"
                )
            table[event_type] = handler
    if not table:
        raise ValueError("a bot needs at least one handler")
    return table


class HandlerSupervisor(AsyncioActor):
    """Starts one actor per handler class, hands out refs, restarts crashed handlers.

    A handler that died (crash in ``on_start``, a failing ``tell``) is
    restarted with exponential back-off as the :class:`RestartPolicy` says
    (default 0.1 s, 0.2 s, ... up to 30 s). More than ``max_restarts``
    restarts within ``window`` seconds is an escalation: the bot stops pulling
    until the window has passed without that many restarts (and with
    ``on_escalation="stop"`` stops itself).
    """

    concurrency = 16  # a restart's back-off must not hold up other questions

    def __init__(
        self,
        handlers: list[type[Handler]],
        *,
        policy: RestartPolicy | None = None,
    ) -> None:
        super().__init__()
        self._classes = routes(handlers)
        self._refs: dict[type[Handler], AsyncioActorRef[Any]] = {}
        self._restarts: dict[type[Handler], list[float]] = {}
        self.policy = policy or RestartPolicy()
        self.restart_count = 0
        self._restarting: dict[type[Handler], asyncio.Future[AsyncioActorRef[Any]]] = {}

    def on_start(self) -> None:
        for handler in set(self._classes.values()):
            self._refs[handler] = handler.start()

    async def on_stop(self) -> None:
        for restarting in list(self._restarting.values()):
            restarting.cancel()
        await asyncio.gather(*self._restarting.values(), return_exceptions=True)
        await stop_all(self._refs.values())

    def interrupt(self) -> None:
        """Cancel every handler's running work now (the bot's drain timeout passed)."""
        for ref in self._refs.values():
            kill(ref)

    def is_escalated(self) -> bool:
        """True while some handler restarted more than ``max_restarts`` times in the window."""
        now = asyncio.get_running_loop().time()
        policy = self.policy
        return any(
            sum(1 for t in times if now - t < policy.window) > policy.max_restarts
            for times in self._restarts.values()
        )

    def routes(self) -> dict[str, AsyncioActorRef[Any]]:
        """The live handler of every declared event type (the wildcard excluded), so that
        session actors need not ask for each one on their first message."""
        return {
            event_type: ref
            for event_type, handler in self._classes.items()
            if event_type != WILDCARD and (ref := self._refs[handler]).is_alive()
        }

    def handles(self, event_type: str) -> bool:
        return event_type in self._classes or WILDCARD in self._classes

    async def ref_for(self, event_type: str) -> AsyncioActorRef[Any] | None:
        """The live handler for ``event_type`` (restarting it if it died), or None."""
        handler = self._classes.get(event_type) or self._classes.get(WILDCARD)
        if handler is None:
            return None
        ref = self._refs[handler]
        if ref.is_alive():
            return ref
        restarting = self._restarting.get(handler)
        if restarting is None:  # the first to notice restarts it; the others wait for that
            restarting = self._restarting[handler] = asyncio.ensure_future(self._restart(handler))
            restarting.add_done_callback(lambda _: self._restarting.pop(handler, None))
        return await asyncio.shield(restarting)

    async def _restart(self, handler: type[Handler]) -> AsyncioActorRef[Any]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        policy = self.policy
        recent = [t for t in self._restarts.get(handler, []) if now - t < policy.window]
        recent.append(now)
        self._restarts[handler] = recent
        self.restart_count += 1
        if len(recent) > policy.max_restarts:
            logger.error(
                "handler %s restarted %d times in %.0f s: escalating (%s)",
                handler.__name__,
                len(recent),
                policy.window,
                policy.on_escalation,
                extra=log_fields("restart_handler"),
            )
        delay = policy.backoff(len(recent))
        logger.warning(
            "restarting crashed handler %s in %.1f s",
            handler.__name__,
            delay,
            extra=log_fields("restart_handler"),
        )
        await asyncio.sleep(delay)
        ref = self._refs[handler] = handler.start()
        return ref

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        logger.error("handler supervisor failed: %r", exception_value)
