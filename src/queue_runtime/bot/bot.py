"""The bot: a supervised tree of actors that processes one queue.

::

    Bot
    ├── ReceiverActor            pulls from the provider, fans out
    ├── SessionSupervisor
    │   └── SessionActor x N     one per live session id, strictly in order
    ├── HandlerSupervisor
    │   └── Handler x k          user code, one actor per handler class
    ├── DeadLetterActor          escalation of messages that cannot succeed
    └── LockRenewer              keeps held messages' and sessions' locks alive

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> from queue_runtime.bot import Bot, Event, Handler
    >>> seen: list[str] = []
    >>> class Issues(Handler):
    ...     event_types = ("issues",)
    ...     async def handle(self, event: Event) -> None:
    ...         seen.append(event.json()["action"])
    >>> async def main() -> None:
    ...     client = await qr.create_client(qr.InMemoryConfig())
    ...     opened = qr.Message.from_json(
    ...         {"action": "opened"}, attributes={"event_type": "issues"}, session_id="o/r/issues/1"
    ...     )
    ...     await client.send_message("events", opened)
    ...     async with Bot(client, "events", [Issues]) as bot:
    ...         while bot.stats().completed < 1:
    ...             await asyncio.sleep(0.01)
    ...     await client.aclose()
    >>> asyncio.run(main())
    >>> seen
    ['opened']
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self, Unpack

from pykka import ActorDeadError
from pykka.messages import ProxyCall

from queue_runtime.actors import AsyncioActorRef
from queue_runtime.bot.completions import Completions
from queue_runtime.bot.context import BotContext, BotOptions, BotSettings, BotStats, handling_limit
from queue_runtime.bot.dead_letters import DeadLetterActor
from queue_runtime.bot.handlers import Handler, HandlerSupervisor, routes
from queue_runtime.bot.locks import LockRenewer
from queue_runtime.bot.receiver import ReceiverActor
from queue_runtime.bot.sessions import SessionSupervisor, _Parts
from queue_runtime.circuit import CircuitState
from queue_runtime.client import QueueClient, create_client
from queue_runtime.config import ProviderConfig, QueueConfig
from queue_runtime.health import (
    CheckResult,
    DeadLetterWatch,
    HealthReport,
    HealthServer,
    HealthStatus,
    check_circuits,
    check_handler_restarts,
    check_provider,
    check_receive_stall,
    probe_queue,
    serve_health,
)
from queue_runtime.messages import QueueName
from queue_runtime.telemetry import Observed, log_fields

__all__ = ["Bot"]

logger = logging.getLogger("queue_runtime.bot")


class Bot:
    """Processes ``queue`` with ``handlers``: in order per session, at least once.

    ``config_or_client`` is a :class:`~queue_runtime.QueueConfig` (or a
    provider config) — the bot then creates and closes its own client — or
    a :class:`~queue_runtime.QueueClient` that the caller keeps owning.

    Settings are a :class:`~queue_runtime.bot.BotSettings` (which lists each one
    and its default), given as ``settings=``, as keyword arguments of the same
    names, or both (the keywords win).
    """

    def __init__(
        self,
        config_or_client: QueueClient | QueueConfig | ProviderConfig,
        queue: str,
        handlers: Sequence[type[Handler]],
        *,
        settings: BotSettings | None = None,
        **options: Unpack[BotOptions],
    ) -> None:
        self.queue = QueueName(queue)
        """The queue this bot processes."""
        self.settings = dataclasses.replace(settings or BotSettings(), **options)
        self._handler_classes = list(handlers)
        routes(self._handler_classes)  # fail here, not in start()
        self._source = config_or_client
        self._client: QueueClient | None = (
            config_or_client if isinstance(config_or_client, QueueClient) else None
        )
        self._owns_client = self._client is None
        if self._client is not None:
            handling_limit(self.settings, self._client)  # fail here, not in start()
        self._context: BotContext | None = None
        self._refs: dict[str, AsyncioActorRef[Any]] = {}
        self._renewer: LockRenewer | None = None
        self._completions: Completions | None = None
        self._stopped = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        """Waits for an actor's stop request and stops the bot; owned and awaited here."""
        self._watchdog: asyncio.Task[None] | None = None
        """Restarts a stalled receiver; owned here, cancelled and awaited on stop."""
        self._retiring: set[asyncio.Task[None]] = set()
        """Stops of receivers the watchdog replaced (a hung receive may hold them up);
        owned here, awaited on stop."""
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._started_at = 0.0
        self._dead_letter_watch = DeadLetterWatch()
        self._endpoint = contextlib.AsyncExitStack()
        self._observed: Observed | None = None
        """The bot's live gauges (sessions, in flight, circuits), while it runs."""
        self.health_server: HealthServer | None = None
        """Where the health endpoint listens, when ``health_port`` was given."""

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the actor tree and begin pulling. Returns at once."""
        if self._state != "new":
            raise RuntimeError(f"a bot can be started once (it is {self._state})")
        self._state = "running"
        try:
            if self._client is None:
                source = self._source
                assert not isinstance(source, QueueClient)
                self._client = await create_client(source)
            context = self._context = BotContext(
                self._client,
                self.queue,
                self.settings,
                sorted({handler.__name__ for handler in self._handler_classes}),
            )
            renewer = self._renewer = LockRenewer(context)
            renewer.start()
            handlers = self._refs["handlers"] = HandlerSupervisor.start(
                self._handler_classes, policy=self.settings.restart_policy
            )
            dead_letters = self._refs["dead_letters"] = DeadLetterActor.start(context)
            parts = _Parts(context, handlers, dead_letters, renewer)
            parts.handler_refs.update(await handlers.proxy().routes())
            if Completions.worthwhile(self._client):
                parts.completions = self._completions = Completions(self._client)
            sessions = self._refs["sessions"] = SessionSupervisor.start(parts)
            self._refs["receiver"] = ReceiverActor.start(context, sessions, handlers, renewer)
            loop = asyncio.get_running_loop()
            self._watcher = loop.create_task(
                self._stop_on_request(context), name="bot stop on request"
            )
            self._watchdog = loop.create_task(self._watch_receiver(context), name="bot watchdog")
            self._started_at = loop.time()
            client = self._client
            self._observed = client.telemetry.observe(
                self.queue,
                active_sessions=lambda: context.stats.active_sessions,
                in_flight=lambda: context.stats.in_flight,
                circuits=lambda: {
                    "provider": client.circuit.state.value,
                    **context.circuits.states(),
                },
            )
            if self.settings.health_port is not None:
                self.health_server = await self._endpoint.enter_async_context(
                    serve_health(self.health, self.settings.health_port)
                )
        except BaseException:
            await self._tear_down()
            raise
        logger.info("bot started on %s", self.queue, extra=log_fields("start", self.queue))

    async def stop(self) -> None:
        """Stop gracefully: stop pulling, let running handlers finish within
        ``drain_timeout``, give back every prefetched message at once, close
        sessions and (if the bot created it) the client. Idempotent."""
        try:
            await self._stop()
        finally:
            await self._join_watcher()

    async def _stop(self) -> None:
        if self._state in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        if self._state == "new":
            self._state = "stopped"
            self._stopped.set()
            return
        self._state = "stopping"
        context = self._context
        assert context is not None
        context.stop_by = asyncio.get_running_loop().time() + self.settings.drain_timeout
        context.draining = True
        context.circuits.wake()  # messages held for an open circuit are given back now
        try:
            await self._stop_watchdog()  # it must not start a receiver while we stop this one
            receiver = self._refs.get("receiver")
            if receiver is not None and receiver.is_alive():
                await receiver.proxy().stop_pulling()
            await self._drain(context)
        finally:
            await self._tear_down()
            logger.info(
                "bot stopped on %s",
                self.queue,
                extra=log_fields("stop", self.queue),
            )

    async def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _tear_down(self) -> None:
        """Stop whatever was started, in dependency order; close an owned client."""
        await self._stop_watchdog()
        if self._observed is not None:
            self._observed.close()
            self._observed = None
        try:
            await self._endpoint.aclose()
            for name in ("receiver", "sessions", "handlers", "dead_letters"):
                ref = self._refs.get(name)
                if ref is not None:
                    await ref.stop()  # False (no error) if it had died already
                if name == "receiver":
                    await self._join_retiring()
            if self._renewer is not None:
                await self._renewer.stop()
            if self._completions is not None:
                await self._completions.close()
        finally:
            if self._owns_client and self._client is not None:
                await self._client.aclose()
            self._state = "stopped"
            self._stopped.set()

    async def _stop_on_request(self, context: BotContext) -> None:
        """The watcher: when an actor asks (a crash loop under ``on_escalation="stop"``),
        stop the bot from this task, so that no actor waits for its own stopping."""
        await context.stop_requested.wait()
        fields = log_fields("stop", self.queue)
        logger.error("stopping the bot: %s", context.stop_reason, extra=fields)
        try:
            await self._stop()
        except Exception:
            logger.exception("stopping the bot on request failed", extra=fields)

    async def _watch_receiver(self, context: BotContext) -> None:
        """The stall watchdog: replace the receiver if its pull loop stopped going round.

        It never waits on the stalled receiver: a receiver too busy to answer
        counts as stalled, and the replaced one stops in the background (a hung
        receive finishes, or times out, and gives back what it took), so a
        hanging provider call cannot hang the watchdog too.
        """
        timeout = self.settings.stall_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(timeout / 4, 5.0))
            receiver = self._refs["receiver"]
            try:
                async with asyncio.timeout(timeout):
                    stalled_for: float = await receiver.proxy().stalled_for()
            except (ActorDeadError, TimeoutError):
                stalled_for = float("inf")
            if stalled_for < timeout or context.draining:
                continue
            logger.error(
                "receiver stalled for %.0f s; restarting it",
                min(stalled_for, 1e9),
                extra=log_fields("receive", self.queue),
            )
            context.stats.receiver_restarts += 1
            self._refs["receiver"] = ReceiverActor.start(
                context, self._refs["sessions"], self._refs["handlers"], self._renewer
            )
            retiring = loop.create_task(self._retire(receiver), name="retiring receiver")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    async def _retire(self, receiver: AsyncioActorRef[ReceiverActor]) -> None:
        with contextlib.suppress(Exception):
            await receiver.stop()

    async def _join_retiring(self) -> None:
        """Wait (at most ``drain_timeout``) for replaced receivers to stop; then give up on
        them: a call that ignores cancellation cannot be ended from here."""
        retiring = set(self._retiring)
        if not retiring:
            return
        _, late = await asyncio.wait(retiring, timeout=self.settings.drain_timeout)
        if late:
            logger.warning(
                "%d replaced receiver(s) still stuck in a provider call at stop",
                len(late),
                extra=log_fields("stop", self.queue),
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _join_watcher(self) -> None:
        """Cancel the watcher if it is still waiting, and await it (unless we are it)."""
        watcher = self._watcher
        if watcher is None or watcher is asyncio.current_task():
            return
        if not (self._context is not None and self._context.stop_requested.is_set()):
            watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        self._watcher = None

    async def run(self) -> None:
        """Start, then wait until :meth:`stop` is called, SIGINT/SIGTERM arrives, or
        the bot stops itself (restart policy ``on_escalation="stop"``)."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        stopping: asyncio.Task[None] | None = None

        def on_signal() -> None:
            nonlocal stopping
            if stopping is None:
                stopping = loop.create_task(self.stop(), name="bot stop on signal")

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
        try:
            await self.start()
            await self._stopped.wait()
            if stopping is not None:
                await stopping
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()  # idempotent; also awaits the stop-on-request watcher

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- observation ----------------------------------------------------------------

    async def health(self) -> HealthReport:
        """How the bot is doing: Healthy, Degraded or Unhealthy, with one result per check.

        Checks: the bot is running; the provider answers without a message being
        consumed (with queue and DLQ depths where it can tell); circuit breakers
        (the provider's and each handler's); the receive loop (time since the last
        successful receive — pausing on purpose for back-pressure or an open circuit
        is not a stall — and the watchdog's view of the loop); handler restarts and
        crash loops; dead letters arriving. See :mod:`queue_runtime.health` for what
        each status means and ``docs/operations.md`` for probes.

        Example:
            >>> import asyncio
            >>> import queue_runtime as qr
            >>> from queue_runtime.bot import Bot, Event, Handler
            >>> class Noop(Handler):
            ...     event_types = ("*",)
            ...     async def handle(self, event: Event) -> None: ...
            >>> async def main() -> str:
            ...     async with Bot(qr.InMemoryConfig(), "events", [Noop], receive_wait=0.01) as bot:
            ...         await asyncio.sleep(0.05)
            ...         return (await bot.health()).status.label
            >>> asyncio.run(main())
            'healthy'
        """
        context = self._context
        if self._state != "running" or context is None:
            return HealthReport(
                (CheckResult("bot", HealthStatus.UNHEALTHY, f"the bot is {self._state}"),)
            )
        client = context.client
        settings = self.settings
        probe = await probe_queue(client, self.queue, timeout=min(5.0, settings.stall_timeout))
        now = asyncio.get_running_loop().time()
        stats = self.stats()
        receiver = self._refs["receiver"]._actor_weakref()
        handlers = self._refs["handlers"]._actor_weakref()
        last_receive: float | None = None
        stalled_for = float("inf")
        if isinstance(receiver, ReceiverActor):
            stalled_for = receiver.stalled_for()
            # pausing on purpose is not a stall: the circuit and handler checks say why
            last_receive = now if receiver.waiting_since is not None else receiver.last_receive
        provider_ok = (
            probe.ok or not probe.supported
        ) and client.circuit.state is CircuitState.CLOSED
        receive = check_receive_stall(
            now=now,
            last_receive=last_receive,
            started_at=self._started_at,
            threshold=settings.stall_timeout,
            provider_ok=provider_ok,
        )
        if stalled_for >= settings.stall_timeout:
            receive = CheckResult(
                "receive",
                HealthStatus.UNHEALTHY,
                f"the receive loop has not gone round for {min(stalled_for, 1e9):.0f} s "
                "(the watchdog restarts it)",
                {"receiver_restarts": stats.receiver_restarts},
            )
        escalated = isinstance(handlers, HandlerSupervisor) and handlers.is_escalated()
        dead_letters = probe.info.dead_letter_depth if probe.info is not None else None
        return HealthReport(
            (
                CheckResult("bot", HealthStatus.HEALTHY, f"running on {self.queue}"),
                check_provider(probe),
                check_circuits({"provider": client.circuit, **stats.circuits}),
                receive,
                check_handler_restarts(stats.handler_restarts, escalated=escalated),
                self._dead_letter_watch.observe(dead_letters, now),
            )
        )

    @property
    def stop_reason(self) -> str | None:
        """Why the bot stopped itself (a crash loop under ``on_escalation="stop"``), if it did."""
        return self._context.stop_reason if self._context is not None else None

    @property
    def client(self) -> QueueClient:
        if self._client is None:
            raise RuntimeError("the bot has not started")
        return self._client

    def stats(self) -> BotStats:
        """A snapshot of the bot's counters."""
        if self._context is None:
            return BotStats()
        snapshot = self._context.stats.copy()
        handlers = self._refs.get("handlers")
        actor = handlers._actor_weakref() if handlers is not None else None
        if isinstance(actor, HandlerSupervisor):
            snapshot.handler_restarts = actor.restart_count
        snapshot.held = self._context.circuits.held()
        snapshot.circuits = self._context.circuits.states()
        snapshot.provider_circuit = self._context.client.circuit.state.value
        return snapshot

    # -- internals --------------------------------------------------------------------

    async def _drain(self, context: BotContext) -> None:
        """Wait for in-flight messages to be settled, up to ``drain_timeout``; then interrupt."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + context.patience()  # what is left of drain_timeout
        while context.stats.in_flight > 0 and loop.time() < deadline:
            await context.wait_for_room(min(0.05, max(0.0, deadline - loop.time())))
        if context.stats.in_flight > 0:
            logger.warning(
                "drain timeout: interrupting %d in-flight messages (they are given back)",
                context.stats.in_flight,
                extra=log_fields("stop", self.queue),
            )
            for name, method in (("sessions", "cancel_sessions"), ("handlers", "interrupt")):
                ref = self._refs.get(name)
                if ref is not None and ref.is_alive():
                    await ref.ask(ProxyCall((method,), (), {}))
            while context.stats.in_flight > 0:
                await context.wait_for_room(0.05)
                if loop.time() > deadline + 5.0:
                    logger.error(
                        "%d messages did not settle after stop",
                        context.stats.in_flight,
                        extra=log_fields("stop", self.queue),
                    )
                    break
