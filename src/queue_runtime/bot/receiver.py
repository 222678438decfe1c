"""The receiver actor: pulls messages from the provider and fans them out to sessions.

Two ways to pull, chosen by the queue's session support:

* **emulated / none** (SQS FIFO, standard queues, memory default): receive
  batches and hand them to the session supervisor, which routes by session
  id. The provider's group blocking guarantees no later message of a session
  arrives while an earlier one is held.
* **native** (Azure Service Bus, memory ``native``): accept up to
  ``max_sessions`` sessions; one pump per session receives its messages,
  waits until its session actor has settled them before receiving more, and
  releases the session as soon as a receive (``receive_wait``) finds nothing,
  so that held slots always go to sessions with work waiting.

Pulling pauses while ``max_in_flight`` messages are held (back-pressure),
while the provider's circuit breaker is open, while some handler's circuit
breaker is open (native pumps then release their sessions after the batch in
hand), and while the handler supervisor has escalated; with the restart
policy's ``on_escalation="stop"`` the receiver then asks the bot to stop (the
bot does so in a task it owns).
The pull loops are tasks the receiver owns: it cancels and awaits them when
it stops.

Example:
    >>> from queue_runtime.bot.receiver import backoff
    >>> [backoff(n) for n in (1, 2, 3, 10)]
    [0.1, 0.2, 0.4, 5.0]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pykka import ActorDeadError

from queue_runtime.actors import AsyncioActor, AsyncioActorRef, AsyncioFuture
from queue_runtime.bot.context import BotContext
from queue_runtime.bot.handlers import HandlerSupervisor
from queue_runtime.bot.locks import LockRenewer
from queue_runtime.bot.sessions import Deliver, Route, SessionSupervisor
from queue_runtime.client import SessionClient
from queue_runtime.errors import (
    CircuitOpenError,
    QueueError,
    SessionLockLostError,
    SessionNotFoundError,
    SessionsNotSupportedError,
)
from queue_runtime.messages import ReceivedMessage
from queue_runtime.provider import SessionSupport
from queue_runtime.telemetry import log_fields

__all__ = ["ReceiverActor", "backoff"]

logger = logging.getLogger("queue_runtime.bot")

T = TypeVar("T")


async def _finish_when_cancelled(
    call: Coroutine[Any, Any, T],
    give_back: Callable[[T], Awaitable[None]],
    patience: Callable[[], float],
) -> T:
    """Await ``call``; if cancelled meanwhile, let it finish and ``give_back`` its result.

    Stopping must not throw away a receive the provider already answered: on
    SQS the messages are invisible by then, and would wait out their
    visibility timeout. But a call that hangs (its own timeout and retries can
    add up to half a minute) is waited for only ``patience()`` seconds, so
    that the bot still stops within its ``drain_timeout``; then it is
    cancelled, and whatever it took comes back when its lock expires.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        waited = patience()
        done, _ = await asyncio.wait({task}, timeout=waited)
        if not done:
            logger.warning(
                "gave up after %.1f s on a receive still in flight at stop; what it took "
                "comes back when its lock expires",
                waited,
            )
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled() and task.exception() is None:
            with contextlib.suppress(Exception):
                await give_back(task.result())
        raise


def backoff(failures: int) -> float:
    """Pause after ``failures`` consecutive receive failures: 0.1 s doubling, at most 5 s."""
    return min(0.1 * 2.0 ** (failures - 1), 5.0)


class ReceiverActor(AsyncioActor):
    """Pulls from one queue for a bot."""

    def __init__(
        self,
        context: BotContext,
        sessions: AsyncioActorRef[SessionSupervisor],
        handlers: AsyncioActorRef[HandlerSupervisor],
        renewer: LockRenewer,
    ) -> None:
        super().__init__()
        self._context = context
        self._sessions = sessions
        self._handlers = handlers
        self._renewer = renewer
        self._pull: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._open_sessions: set[SessionClient] = set()
        self.last_receive: float | None = None
        """Event-loop time of the last successful receive (for health)."""
        self._heartbeat = 0.0
        """Event-loop time the pull loop last went round (for the stall watchdog)."""
        self.waiting_since: float | None = None
        """Event-loop time since when pulling has paused on purpose (back-pressure, an
        open handler circuit, a crash loop); None while pulling."""

    def on_start(self) -> None:
        self._session_calls = self._sessions.proxy()
        self._handler_calls = self._handlers.proxy()
        support = self._context.client.session_support(self._context.queue)
        pull = self._accept_sessions if support is SessionSupport.NATIVE else self._pull_batches
        loop = asyncio.get_running_loop()
        self._heartbeat = loop.time()
        self._pull = loop.create_task(pull(), name="receiver")

    async def on_stop(self) -> None:
        await self.stop_pulling()
        pumps = list(self._pumps)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for session in list(self._open_sessions):  # a pump cancelled before it ever ran
            await self._close_session(session)

    async def stop_pulling(self) -> None:
        """Stop receiving new messages and sessions (session pumps stop after their batch)."""
        pull, self._pull = self._pull, None
        if pull is not None:
            pull.cancel()
            await asyncio.gather(pull, return_exceptions=True)

    # -- emulated sessions: batches routed by session id -------------------------

    async def _pull_batches(self) -> None:
        context = self._context
        settings = context.settings
        client = context.client
        batch_size = client.max_batch_size
        failures = 0
        while True:
            self._beat()
            room = settings.max_in_flight - context.stats.in_flight
            if room <= 0 or self._context.circuits.any_open() or await self._escalated():
                await self._wait_for_room()
                continue
            try:
                batch = await _finish_when_cancelled(
                    client.receive_messages(
                        context.queue, min(room, batch_size), timeout=settings.receive_wait
                    ),
                    self._give_back,
                    context.patience,
                )
            except Exception as error:  # a bug in a provider must not stop the bot pulling
                failures += 1
                await self._pause(error, failures)
                continue
            failures = 0
            self.last_receive = asyncio.get_running_loop().time()
            self.waiting_since = None
            if batch:
                self._hold(batch)
                self._sessions.tell(Route(batch))

    # -- native sessions: one pump per accepted session ---------------------------

    async def _accept_sessions(self) -> None:
        context = self._context
        settings = context.settings
        failures = 0
        try:
            while True:
                self._beat()
                if (
                    len(self._pumps) >= settings.max_sessions
                    or context.stats.in_flight >= settings.max_in_flight
                    or context.circuits.any_open()
                    or await self._escalated()
                ):
                    await self._wait_for_room()
                    continue
                try:
                    session = await _finish_when_cancelled(
                        context.client.accept_session(context.queue, timeout=settings.receive_wait),
                        self._give_back_session,
                        context.patience,
                    )
                except SessionsNotSupportedError:
                    # the provider learnt that this queue has no sessions: pull plainly
                    logger.info(
                        "queue %s has no sessions; receiving without them",
                        context.queue,
                        extra=log_fields("accept_session", context.queue),
                    )
                    await self._pull_batches()
                    return
                except Exception as error:
                    failures += 1
                    await self._pause(error, failures)
                    continue
                failures = 0
                self.last_receive = asyncio.get_running_loop().time()
                self.waiting_since = None
                if session is None:
                    continue
                self._open_sessions.add(session)
                pump = asyncio.get_running_loop().create_task(
                    self._pump(session), name=f"session pump {session.session_id}"
                )
                self._pumps.add(pump)
                pump.add_done_callback(self._pump_done)
        finally:
            # let every pump finish its current batch and close its session
            for pump in list(self._pumps):
                pump.cancel()

    def _pump_done(self, pump: asyncio.Task[None]) -> None:
        self._pumps.discard(pump)
        self._context.wake()  # a session slot is free
        if not pump.cancelled() and pump.exception() is not None:
            logger.error(
                "session pump failed",
                exc_info=pump.exception(),
                extra=log_fields("session_receive", self._context.queue),
            )

    async def _pump(self, session: SessionClient) -> None:
        """Feed one accepted session to its actor, a batch at a time, until it is drained."""
        context = self._context
        settings = context.settings
        loop = asyncio.get_running_loop()
        key = session.session_id
        opened = False
        try:
            self._renewer.hold_session(session)
            actor = await self._session_calls.open(key, pinned=True)
            opened = True
            while not (context.draining or context.circuits.any_open()):
                try:
                    batch = await session.receive_messages(
                        settings.mailbox_size, timeout=settings.receive_wait
                    )
                except (SessionLockLostError, SessionNotFoundError):
                    logger.warning(
                        "lost the lock on session %s",
                        key,
                        extra=log_fields("session_receive", context.queue, session_id=key),
                    )
                    return
                except QueueError as error:
                    # not retried (a lost answer would let later messages overtake):
                    # closing the session gives back everything, in order
                    logger.warning(
                        "receive from session %s failed (%s); releasing it",
                        key,
                        error,
                        extra=log_fields("session_receive", context.queue, session_id=key),
                    )
                    return
                if not batch:
                    return  # drained for now: free the slot for a session with work waiting
                self.last_receive = loop.time()
                context.stats.received += len(batch)
                context.stats.in_flight += len(batch)
                done: AsyncioFuture[bool] = AsyncioFuture()
                try:
                    actor.tell(Deliver(batch, done))
                except ActorDeadError:
                    context.stats.settle_failures += len(batch)
                    context.settled(len(batch))  # closing the session gives them back
                    return
                try:
                    clean = await done
                except asyncio.CancelledError:
                    await done  # stopping: the batch in hand is settled or given back first
                    return
                if not clean:
                    # a message came back (or its settle failed and it may still be locked):
                    # closing the session returns everything in order before anything newer
                    return
        except asyncio.CancelledError:
            return  # stopping while waiting for messages
        finally:
            await self._close_session(session)
            if opened:
                with contextlib.suppress(ActorDeadError):
                    await self._session_calls.release(key)

    async def _close_session(self, session: SessionClient) -> None:
        """Release a native session lock (its unsettled messages become available at once)."""
        self._open_sessions.discard(session)
        self._renewer.release(session)
        try:
            await session.close()
        except Exception as error:
            logger.warning(
                "could not close session %s: %s",
                session.session_id,
                error,
                extra=log_fields("close_session", session.queue, session_id=session.session_id),
            )

    # -- shared -------------------------------------------------------------------

    async def _give_back(self, batch: list[ReceivedMessage]) -> None:
        """Abandon what a receive cut short by stopping had already taken."""
        client = self._context.client
        results = await asyncio.gather(
            *(client.abandon_message(m.receipt) for m in batch), return_exceptions=True
        )
        failed = sum(1 for result in results if isinstance(result, BaseException))
        if failed:
            logger.warning(
                "%d messages received while stopping wait out their locks",
                failed,
                extra=log_fields("abandon", self._context.queue),
            )

    async def _give_back_session(self, session: SessionClient | None) -> None:
        if session is not None:
            await self._close_session(session)

    def _beat(self) -> None:
        self._heartbeat = asyncio.get_running_loop().time()

    def stalled_for(self) -> float:
        """Seconds since the pull loop last went round (0 once pulling was stopped).

        Every round is bounded (receives by the client's timeouts, pauses by
        their back-off), so a long silence means the loop is stuck or dead.
        """
        if self._pull is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._heartbeat

    def _hold(self, batch: list[Any]) -> None:
        stats = self._context.stats
        stats.received += len(batch)
        stats.in_flight += len(batch)
        self._renewer.hold(batch)

    async def _escalated(self) -> bool:
        """True while handlers crash-loop (pulling pauses); with the restart policy's
        ``on_escalation="stop"`` it also asks the bot to stop."""
        escalated: bool = await self._handler_calls.is_escalated()
        context = self._context
        if escalated and context.settings.restart_policy.on_escalation == "stop":
            context.request_stop("handlers are crash-looping")
        return escalated

    async def _wait_for_room(self) -> None:
        self.waiting_since = self.waiting_since or asyncio.get_running_loop().time()
        await self._context.wait_for_room(self._context.settings.receive_wait)

    async def _pause(self, error: Exception, failures: int) -> None:
        fields = log_fields("receive", self._context.queue)
        if not isinstance(error, QueueError):
            delay = backoff(failures)
            logger.error(
                "receive failed unexpectedly; retrying in %.1f s",
                delay,
                exc_info=error,
                extra=fields,
            )
        elif isinstance(error, CircuitOpenError):
            delay = error.retry_after or 1.0
            logger.warning("provider circuit open; pausing receive for %.1f s", delay, extra=fields)
        else:
            delay = backoff(failures)
            level = logging.WARNING if error.transient else logging.ERROR
            logger.log(level, "receive failed (%s); retrying in %.1f s", error, delay, extra=fields)
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        while (left := until - loop.time()) > 0:  # a long pause is not a stall
            await asyncio.sleep(min(left, 1.0))
            self._beat()
