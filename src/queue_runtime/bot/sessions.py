"""Session actors: one per live session id, processing its messages strictly in order.

A :class:`SessionActor` receives batches of its session's messages
(:class:`Deliver`) and, for each: works out the event type, asks the handler,
and settles the receipt — complete on success; on failure retry in place with
the bot's retry policy (later messages wait, so order holds), and after a
failed handling handle it again, still in place, until it has failed
``max_delivery_count`` handlings (then dead-letter it) — at once on a
permanent failure. A message leaves the actor's hands unsettled only if its
lock is lost or the bot stops: then the rest of its session's batch is given
back too, so the session comes back in order.

The :class:`SessionSupervisor` creates session actors on demand, routes
batches to them, and stops the ones idle for ``session_idle_timeout``.
Messages without a session id go to a small pool of "unordered" actors and
are processed concurrently.

Example:
    >>> from queue_runtime.bot.sessions import unordered_key
    >>> [unordered_key(position, lanes=4) for position in (0, 1, 5)]
    ['unordered/0', 'unordered/1', 'unordered/1']
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pykka import ActorDeadError
from pykka.messages import ProxyCall

from queue_runtime.actors import AsyncioActor, AsyncioActorRef, AsyncioFuture, kill, stop_all
from queue_runtime.bot.completions import Completions
from queue_runtime.bot.context import BotContext
from queue_runtime.bot.dead_letters import (
    DeadLetterActor,
    FailureHistories,
    FailureHistory,
    describe_failure,
    failure_properties,
)
from queue_runtime.bot.handlers import (
    Admitted,
    Event,
    HandlerSupervisor,
    NotAdmitted,
    PermanentFailure,
)
from queue_runtime.bot.locks import LockRenewer
from queue_runtime.bot.settling import settle_again
from queue_runtime.crypto import UndecryptableMessage
from queue_runtime.errors import (
    BatchTooLargeError,
    CryptoError,
    InvalidReceiptError,
    MessageTooLargeError,
    QueueError,
    UnencryptedMessageError,
    ValidationError,
)
from queue_runtime.messages import ReceivedMessage
from queue_runtime.telemetry import Processing, error_type, log_fields

__all__ = ["Deliver", "Outcome", "SessionActor", "SessionSupervisor", "unordered_key"]

logger = logging.getLogger("queue_runtime.bot")

NO_HANDLER = "NoHandler"
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    PermanentFailure,
    CryptoError,
    ValidationError,
    MessageTooLargeError,
    BatchTooLargeError,
    UnencryptedMessageError,
)
"""Handler errors that say the message itself can never succeed: dead-lettered at once.
Other permanent queue errors (configuration, authentication, a missing queue) are
about the deployment, not the message: they are retried and count for the circuit."""
_NOTHING: set[str] = cast(set[str], frozenset())  # shared, never added to: outside batches


UNORDERED = "unordered/"
"""Key prefix of the lanes of messages without session id (no order to keep)."""


def unordered_key(position: int, lanes: int) -> str:
    """The lane of the ``position``-th message without session id: lanes take turns, so a
    receive's batch spreads over distinct lanes and no message waits behind another's
    settle (hashing message ids put two of ten in one lane most of the time)."""
    return f"{UNORDERED}{position % lanes}"


class Outcome(enum.Enum):
    COMPLETED = "completed"
    ABANDONED = "abandoned"
    DEAD_LETTERED = "dead_lettered"
    LOST = "lost"
    """The settle failed (lock lost): the provider delivers the message again."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """A batch of one session's messages, in order.

    ``done`` is set when the batch is through: True if every message was completed
    or dead-lettered, False if some came back (or may still be locked).
    """

    messages: Sequence[ReceivedMessage]
    done: AsyncioFuture[bool] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A receiver's batch for the supervisor to fan out by session id."""

    messages: Sequence[ReceivedMessage]


@dataclass(frozen=True, slots=True)
class Retire:
    key: str


@dataclass(slots=True)
class _Parts:
    """The collaborators a session actor needs (refs and shared services)."""

    context: BotContext
    handlers: AsyncioActorRef[HandlerSupervisor]
    dead_letters: AsyncioActorRef[DeadLetterActor]
    renewer: LockRenewer
    handler_refs: dict[str, AsyncioActorRef[Any]] = field(default_factory=dict)
    completions: Completions | None = None
    """Batched completion, where the provider has it (SQS); else one by one."""
    histories: FailureHistories = field(default_factory=FailureHistories)
    """Failures of messages that may come back, so a record spans their deliveries."""


class SessionActor(AsyncioActor):
    """Processes the messages of one session (or one unordered lane), one at a time."""

    _interrupted: tuple[ReceivedMessage, ...] = ()
    """Messages whose settle was cut off by cancellation (rare; per instance when set)."""
    _processing: Processing | None = None
    """The processing span of the message in hand (its context goes to the handler)."""

    def __init__(self, key: str, parts: _Parts) -> None:
        super().__init__()
        self.key = key
        self._parts = parts
        self._context = parts.context
        self.idle_since: float | None = None
        """Loop time since when the actor has had nothing to do (None while busy)."""
        self._settled: set[str] = _NOTHING
        """Tokens of this batch's receipts already settled (so none is settled twice)."""

    async def on_receive(self, message: Any) -> None:
        if not isinstance(message, Deliver):
            return super().on_receive(message)  # type: ignore[no-any-return]
        self.idle_since = None
        clean = False
        try:
            clean = await self._process_batch(message.messages)
        finally:
            self._settled = _NOTHING  # an idle actor keeps nothing of its last batch
            if message.done is not None and not message.done.done():
                message.done.set(clean)
            if self.actor_inbox.empty():
                self.idle_since = asyncio.get_running_loop().time()
        return None

    async def _process_batch(self, messages: Sequence[ReceivedMessage]) -> bool:
        """Process in order; once one message is not settled for good, give the rest back.

        Whatever happens — a handler failure, a failed settle, an error in routing,
        cancellation after the drain timeout — every message of the batch ends
        completed, dead-lettered or abandoned (or, if even that fails, left to
        its lock expiry), and none is processed after one that comes back.
        Returns True if every message was completed or dead-lettered.
        """
        self._settled = set()
        ordered = not self.key.startswith(UNORDERED)
        clean = True
        try:
            for index, message in enumerate(messages):
                if self._context.draining:
                    outcome = Outcome.ABANDONED
                    await self._abandon(message)
                else:
                    outcome = await self._process_guarded(message)
                if outcome not in (Outcome.COMPLETED, Outcome.DEAD_LETTERED):
                    clean = False
                    if ordered:
                        # later messages must not overtake the one that comes back
                        await self._abandon_all(messages[index + 1 :])
                        return False
        except asyncio.CancelledError:
            # interrupted (drain timeout): give back this batch and everything queued
            leftovers = [m for m in messages if m.receipt.token not in self._settled]
            await asyncio.shield(self._give_back(leftovers + self._take_queued()))
            raise
        return clean

    async def _give_back(self, messages: list[ReceivedMessage]) -> None:
        """Abandon after an interruption: the unsettled ones, and once more (quietly) any
        whose settle was cut off, so nothing waits out its lock."""
        await self._abandon_all(messages)
        interrupted, self._interrupted = self._interrupted, ()
        for message in interrupted:
            with contextlib.suppress(QueueError):
                await self._context.client.abandon_message(message.receipt)

    async def _process_guarded(self, message: ReceivedMessage) -> Outcome:
        """:meth:`_process` inside the message's processing span, turning a bug outside
        the handler (a raising router, say) into a failure of this message instead of
        the death of the session actor."""
        with self._context.client.telemetry.process(message) as processing:
            self._processing = processing
            try:
                outcome = await self._process(message)
            except Exception as error:
                processing.fail(error)
                outcome = await self._failed_outside_handler(message, error)
            finally:
                self._processing = None
            processing.outcome = outcome.value
            return outcome

    async def _failed_outside_handler(self, message: ReceivedMessage, error: Exception) -> Outcome:
        if message.receipt.token in self._settled:  # it failed while settling
            self._context.stats.settle_failures += 1
            return Outcome.LOST
        # the type only at ERROR: an error's text may quote the payload
        logger.error(
            "processing failed outside the handler: %s",
            error_type(error),
            extra=log_fields("process", None, message),
        )
        logger.debug("processing failed outside the handler", exc_info=error)
        history = self._parts.histories.of(message.message_id)
        history.add(self._context.client.clock.now(), error, message.delivery_count)
        return await self._give_up(message, error, attempts=1, history=history)

    async def _process(self, message: ReceivedMessage) -> Outcome:
        context = self._context
        settings = context.settings
        processing = self._processing
        if isinstance(message, UndecryptableMessage):
            # the client could not decrypt it (or refused it as plaintext): permanent
            if processing is not None:
                processing.fail(message.error)
            return await self._dead_letter_error(message, message.error, attempts=0)
        event_type = self._event_type(message)
        if event_type is None or (
            event_type not in self._parts.handler_refs and not await self._has_handler(event_type)
        ):
            if settings.unrouted == "complete":
                return await self._complete(message)
            return await self._dead_letter(
                message, NO_HANDLER, f"no handler for event type {event_type!r}"
            )
        retry = settings.retry
        histories = self._parts.histories
        history = histories.get(message.message_id)  # made on the first failure only
        if history is not None and history.handlings >= context.max_delivery_count:
            # it failed often enough before, and came back: its dead-lettering did not go through
            handler = self._known_handler(event_type) or await self._handler(event_type)
            handler_name = handler.actor_class.__name__
            error = history.last_error or RuntimeError("failed before")
            return await self._dead_letter_error(
                message, error, 0, handler=handler_name, history=history
            )
        attempt = 1  # handler calls in this delivery
        charged = 0  # failures of this handling charged to the message (not to an open circuit)
        while True:
            handler = self._known_handler(event_type) or await self._handler(event_type)
            handler_name = handler.actor_class.__name__
            circuit = context.circuits[handler_name]
            probe: bool | None = False
            if not circuit.admits_now():
                probe = await circuit.admit(give_up=lambda: context.draining)
            if probe is None:  # held while the circuit was open, and the bot is stopping
                return await self._abandon(message)
            verdict = False
            try:
                trace_context = processing.trace_context if processing is not None else None
                event = Event.from_message(message, event_type, attempt, trace_context)
                await handler.call(event if probe else Admitted(event, circuit.admits_now))
            except NotAdmitted:
                continue  # the circuit opened before the call started: held at admit()
            except Exception as error:
                if isinstance(error, ActorDeadError) and not handler.is_alive():
                    # the handler actor died under us; the supervisor restarts it
                    self._parts.handler_refs.pop(event_type, None)
                    if context.draining:
                        return await self._abandon(message)
                    continue
                history = history or histories.of(message.message_id)
                history.add(context.client.clock.now(), error, message.delivery_count)
                if processing is not None:
                    processing.fail(error)
                if self._is_permanent(error):
                    return await self._dead_letter_error(
                        message, error, attempt, handler=handler_name, history=history
                    )
                verdict = True
                attempt += 1
                if not circuit.failed(probe, message.message_id):
                    # the circuit opened: the downstream is down, not this message; the
                    # next admit() holds it (lock kept alive) until the circuit lets it try
                    continue
                charged += 1
                if charged >= retry.attempts:  # this handling failed: handle it again, in place
                    history.handlings += 1
                    charged = 0
                    if history.handlings >= context.max_delivery_count:
                        return await self._dead_letter_error(
                            message, error, attempt - 1, handler=handler_name, history=history
                        )
                    logger.info(
                        "handler failed (%s), handling it again in place",
                        error_type(error),
                        extra=log_fields("process", None, message),
                    )
                if context.draining:  # stopping: it comes back later, its failures remembered
                    return await self._abandon(message)
                context.stats.retried += 1
                context.client.telemetry.count_retry("process", context.queue, error)
                await asyncio.sleep(retry.delay(charged or retry.attempts))
                if context.draining:
                    return await self._abandon(message)
            else:
                verdict = True
                circuit.succeeded(probe)
                histories.forget(message.message_id)
                return await self._complete(message)
            finally:
                if not verdict:  # cancelled, or the handler died: the probe slot is free again
                    circuit.released(probe)

    async def _give_up(
        self,
        message: ReceivedMessage,
        error: Exception,
        attempts: int,
        *,
        history: FailureHistory,
        handler: str | None = None,
    ) -> Outcome:
        """After the in-place retries: dead-letter on the last allowed delivery, else abandon."""
        if message.delivery_count >= self._context.max_delivery_count:
            return await self._dead_letter_error(
                message, error, attempts, handler=handler, history=history
            )
        logger.info(
            "handler failed (%s), abandoning for redelivery",
            error_type(error),
            extra=log_fields("process", None, message),
        )
        return await self._abandon(message)

    def _take_queued(self) -> list[ReceivedMessage]:
        """Empty the mailbox, returning the messages of the batches that waited in it."""
        queued: list[ReceivedMessage] = []
        others = []
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if isinstance(envelope.message, Deliver):
                queued.extend(envelope.message.messages)
                if envelope.message.done is not None and not envelope.message.done.done():
                    envelope.message.done.set(False)
            else:
                others.append(envelope)  # left for the actor's teardown to answer
        for envelope in others:
            self.actor_inbox.put(envelope)
        return queued

    # -- routing ----------------------------------------------------------------

    def _event_type(self, message: ReceivedMessage) -> str | None:
        settings = self._context.settings
        if settings.router is not None:
            return settings.router(message)
        return message.attributes.get(settings.event_type_attribute)

    # Known routes are looked up without a coroutine (one per message would cost
    # measurably); the supervisor is asked only for the others.

    def _known_handler(self, event_type: str) -> AsyncioActorRef[Any] | None:
        """The live handler already known for ``event_type``, or None."""
        ref = self._parts.handler_refs.get(event_type)
        return ref if ref is not None and ref.is_alive() else None

    async def _has_handler(self, event_type: str) -> bool:
        """The supervisor's answer: does some handler take ``event_type``?"""
        return await self._parts.handlers.ask(ProxyCall(("handles",), (event_type,), {}))  # type: ignore[no-any-return]

    async def _handler(self, event_type: str) -> AsyncioActorRef[Any]:
        """The supervisor's live handler for ``event_type`` (restarted if it died), kept."""
        ref: AsyncioActorRef[Any] | None = await self._parts.handlers.ask(
            ProxyCall(("ref_for",), (event_type,), {})
        )
        assert ref is not None
        self._parts.handler_refs[event_type] = ref
        return ref

    def _is_permanent(self, error: Exception) -> bool:
        permanent = (*CONTENT_ERRORS, *self._context.settings.permanent_errors)
        return isinstance(error, permanent)

    # -- settling -----------------------------------------------------------------

    async def _complete(self, message: ReceivedMessage) -> Outcome:
        completions = self._parts.completions
        complete = (
            self._context.client.complete_message if completions is None else completions.complete
        )
        outcome = await self._settle(message, complete, "complete")
        if outcome is Outcome.COMPLETED:
            self._context.stats.completed += 1
        return outcome

    async def _abandon(self, message: ReceivedMessage) -> Outcome:
        outcome = await self._settle(message, self._context.client.abandon_message, "abandon")
        if outcome is Outcome.COMPLETED:
            self._context.stats.abandoned += 1
            return Outcome.ABANDONED
        return outcome

    async def _abandon_all(self, messages: Sequence[ReceivedMessage]) -> None:
        for message in messages:
            if message.receipt.token not in self._settled:
                await self._abandon(message)

    async def _dead_letter_error(
        self,
        message: ReceivedMessage,
        error: BaseException,
        attempts: int,
        *,
        handler: str | None = None,
        history: FailureHistory | None = None,
    ) -> Outcome:
        """Dead-letter a message that failed with ``error``: its type is the reason."""
        description = describe_failure(
            error, delivery_count=message.delivery_count, attempts=attempts
        )
        return await self._dead_letter(
            message,
            type(error).__name__,
            description,
            error=error,
            handler=handler,
            history=history,
        )

    async def _dead_letter(
        self,
        message: ReceivedMessage,
        reason: str,
        description: str,
        *,
        error: BaseException | None = None,
        handler: str | None = None,
        history: FailureHistory | None = None,
    ) -> Outcome:
        context = self._context
        properties: dict[str, str] | None = None
        try:
            properties = failure_properties(
                reason=reason,
                queue=context.queue,
                handler=handler,
                delivery_count=message.delivery_count,
                history=history or FailureHistory(),
                now=context.client.clock.now(),
                error=error,
                tracebacks=context.settings.failure_tracebacks,
            )
        except Exception:  # a record is worth less than dead-lettering the message
            logger.exception(
                "could not build the failure record of %s",
                message.message_id,
                extra=log_fields("dead_letter", None, message),
            )
        self._settled.add(message.receipt.token)
        self._parts.renewer.release(message.receipt)
        try:
            processing = self._processing
            trace_context = processing.trace_context if processing is not None else None
            moved = await self._parts.dead_letters.ask(
                ProxyCall(
                    ("dead_letter",),
                    (message, reason, description, properties),
                    {"trace_context": trace_context},
                )
            )
        finally:
            self._context.settled()
        if moved:
            self._parts.histories.forget(message.message_id)
            self._context.stats.dead_lettered += 1
            return Outcome.DEAD_LETTERED
        self._context.stats.settle_failures += 1
        return Outcome.LOST

    async def _settle(self, message: ReceivedMessage, settle: Any, operation: str) -> Outcome:
        self._settled.add(message.receipt.token)
        self._parts.renewer.release(message.receipt)
        try:
            try:
                await settle(message.receipt)  # the usual case: settled at once
            except QueueError as error:
                await self._settle_again(message, settle, operation, error)
        except asyncio.CancelledError:
            self._interrupted = (*self._interrupted, message)  # did it take effect? unknown
            raise
        except InvalidReceiptError:
            self._context.stats.lost_locks += 1
            logger.warning(
                "lock lost before settling; the message will be delivered again",
                extra=log_fields("settle", None, message),
            )
            return Outcome.LOST
        except QueueError as error:
            self._context.stats.settle_failures += 1
            logger.warning(
                "could not settle (%s); the message will be delivered again",
                error,
                extra=log_fields("settle", None, message),
            )
            return Outcome.LOST
        finally:
            self._context.settled()
        return Outcome.COMPLETED

    async def _settle_again(
        self, message: ReceivedMessage, settle: Any, operation: str, failure: QueueError
    ) -> None:
        """After the first call of ``settle`` failed with ``failure``: again in rounds (see
        :mod:`.settling`), the lock kept alive between them. (Kept out of :meth:`_settle`:
        the rounds' closures and frames cost every message, measurably.)"""
        renewer = self._parts.renewer
        retry = self._context.settings.retry

        async def pause(round: int) -> None:
            renewer.hold([message])
            try:
                await asyncio.sleep(retry.delay(round))
            finally:
                renewer.release(message.receipt)

        await settle_again(
            failure,
            lambda: settle(message.receipt),
            operation,
            pause=pause,
            too_late=self._context.too_late,
        )


class SessionSupervisor(AsyncioActor):
    """Creates, routes to, and retires session actors."""

    def __init__(self, parts: _Parts) -> None:
        super().__init__()
        self._parts = parts
        self._sessions: dict[str, AsyncioActorRef[SessionActor]] = {}
        self._pins: dict[str, int] = {}
        """Keys whose lifetime native session pumps manage (never swept): how many pumps."""
        self._unordered = 0
        """Messages without session id routed so far (the next one's lane)."""
        self._sweeper: asyncio.Task[None] | None = None

    def on_start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep(), name="session sweeper"
        )

    async def on_stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.stop_sessions()

    async def on_receive(self, message: Any) -> None:
        if isinstance(message, Route):
            self._route(message.messages)
        elif isinstance(message, Retire):
            if self._idle_for(message.key) is not None:
                self._retire(message.key)
        else:
            super().on_receive(message)

    def open(self, key: str, *, pinned: bool = False) -> AsyncioActorRef[SessionActor]:
        """The session actor for ``key``, started if needed.

        A native session pump opens its actor ``pinned``: the pump, not the
        idle sweep, decides when it closes.
        """
        ref = self._sessions.get(key)
        if ref is None or not ref.is_alive():
            ref = self._sessions[key] = SessionActor.start(key, self._parts)
            self._parts.context.stats.active_sessions = len(self._sessions)
        if pinned:
            self._pins[key] = self._pins.get(key, 0) + 1
        return ref

    def release(self, key: str) -> None:
        """A native session pump is done with ``key``; the last one out stops the actor."""
        pins = self._pins.get(key, 0) - 1
        if pins > 0:
            self._pins[key] = pins
            return
        self._pins.pop(key, None)
        self._retire(key)

    def _retire(self, key: str) -> None:
        """Forget ``key``'s actor and ask it to stop after what it has queued.

        Not awaited: the supervisor must stay responsive, and a new actor for
        the same key is only ever started once this one has nothing left to do
        (the sweep retires idle actors only; pumps release after their batch).
        """
        ref = self._sessions.pop(key, None)
        self._parts.context.stats.active_sessions = len(self._sessions)
        if ref is not None:
            ref.stop()

    async def stop_sessions(self) -> None:
        refs = list(self._sessions.values())
        self._sessions.clear()
        self._pins.clear()
        self._parts.context.stats.active_sessions = 0
        await stop_all(refs)

    def cancel_sessions(self) -> None:
        """Interrupt every session actor now (after the drain timeout)."""
        for ref in self._sessions.values():
            kill(ref)

    def _route(self, messages: Sequence[ReceivedMessage]) -> None:
        lanes = self._parts.context.settings.unordered_concurrency
        batches: dict[str, list[ReceivedMessage]] = {}
        for message in messages:
            key = message.session_id
            if key is None:
                key = unordered_key(self._unordered, lanes)
                self._unordered += 1
            batches.setdefault(key, []).append(message)
        for key, batch in batches.items():
            self.open(key).tell(Deliver(batch))

    async def _sweep(self) -> None:
        timeout = self._parts.context.settings.session_idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 2, 5.0))
            for key in list(self._sessions):
                idle = self._idle_for(key)
                if idle is not None and idle >= timeout:
                    self.actor_ref.tell(Retire(key))

    def _idle_for(self, key: str) -> float | None:
        """How long the (unpinned) session actor of ``key`` has had nothing to do."""
        ref = self._sessions.get(key)
        actor = ref._actor_weakref() if ref is not None else None
        if key in self._pins or not isinstance(actor, SessionActor):
            return None
        if actor.idle_since is None or not actor.actor_inbox.empty():
            return None
        return asyncio.get_running_loop().time() - actor.idle_since
