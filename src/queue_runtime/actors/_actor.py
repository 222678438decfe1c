"""An asyncio runtime for pykka: actors that are tasks on one event loop.

pykka leaves three hooks to a runtime: the inbox, the future, and the actor
loop. Here the inbox is a deque with a wake-up future, the future is awaited
natively (never blocking the loop), and each actor's loop is an
:class:`asyncio.Task` that awaits ``async def`` handlers. Everything else is
pykka's: ``Actor.start()``, ``ref.tell()``, ``ref.ask()``, ``ref.proxy()``,
``on_start``/``on_stop``/``on_failure``, and the :class:`pykka.ActorRegistry`.

Differences from pykka's threading runtime, all forced by "never block the
loop":

* ``ref.ask()`` and ``ref.stop()`` return an :class:`AsyncioFuture` at once;
  ``await`` it. Its blocking ``get()`` raises instead of deadlocking when the
  answer is not there yet.
* ``on_start``, ``on_stop``, ``on_failure``, ``on_receive`` and proxied
  methods may be ``async def``; the actor awaits them.
* Actors live on the event loop that started them; ``tell`` from another
  thread must go through ``loop.call_soon_threadsafe``.
* ``concurrency`` (default 1) lets an actor work on several messages at once;
  1 keeps the classic one-message-at-a-time guarantee.

Example:
    >>> import asyncio
    >>> from queue_runtime.actors import AsyncioActor
    >>> class Greeter(AsyncioActor):
    ...     async def greet(self, name: str) -> str:
    ...         await asyncio.sleep(0)
    ...         return f"hello {name}"
    >>> async def main() -> str:
    ...     ref = Greeter.start()
    ...     try:
    ...         return await ref.proxy().greet("octocat")
    ...     finally:
    ...         await ref.stop()
    >>> asyncio.run(main())
    'hello octocat'
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, TypeVar, cast

import pykka
from pykka import ActorDeadError, ActorRef, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from queue_runtime.actors._future import AsyncioFuture, _error_of, _StopFuture
from queue_runtime.actors._inbox import _Inbox, _resolve, _StopFlag, _Workers

__all__ = ["AsyncioActor", "AsyncioActorRef", "StrayCancellation", "kill", "stop_all"]

logger = logging.getLogger("queue_runtime.actors")

A = TypeVar("A", bound="AsyncioActor")

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def _answer_dead(envelope: Any, actor: object) -> None:
    reply = envelope.reply_to
    if reply is not None and not reply.done():
        reply.set_exception((ActorDeadError, ActorDeadError(f"{actor} stopped"), None))


class StrayCancellation(Exception):
    """A message's code raised :class:`asyncio.CancelledError` although nobody cancelled it."""


class AsyncioActorRef(ActorRef[Any], Generic[A]):
    """An :class:`pykka.ActorRef` whose ``ask`` and ``stop`` never block: await them."""

    def ask(
        self, message: Any, *, block: bool = False, timeout: float | None = None
    ) -> AsyncioFuture[Any]:
        """Send ``message`` and return a future of the answer (``block`` is ignored)."""
        future: AsyncioFuture[Any] = AsyncioFuture(timeout)
        if not self.is_alive():
            future.set_exception((ActorDeadError, ActorDeadError(f"{self} not found"), None))
        else:
            self.actor_inbox.put(Envelope(message, reply_to=future))
        return future

    async def call(self, message: Any) -> Any:
        """``await ref.ask(message)``, handled in the calling task when a worker is idle.

        For an actor with ``concurrency > 1`` whose mailbox is empty and one of
        whose workers is idle — when :meth:`ask` would hand the message straight
        to that worker — the caller handles the message itself, on that worker's
        slot: the two task switches of an ask are saved, and everything else
        holds (the concurrency limit, messages starting in the order they were
        sent, ``stop()`` waiting for it, errors and
        :class:`StrayCancellation` as for an ask; :func:`kill` interrupts it and
        the caller gets :class:`pykka.ActorDeadError`). What differs: the
        message's code sees the caller's task and context variables, and
        cancelling the caller cancels the handling (an ask's would go on).
        Otherwise it is ``await ref.ask(message)``.

        Example:
            >>> import asyncio
            >>> from queue_runtime.actors import AsyncioActor
            >>> class Doubler(AsyncioActor):
            ...     concurrency = 4
            ...     async def on_receive(self, message: int) -> int:
            ...         return 2 * message
            >>> async def main() -> list[int]:
            ...     ref = Doubler.start()
            ...     try:
            ...         return [await ref.call(n) for n in (1, 2, 3)]
            ...     finally:
            ...         await ref.stop()
            >>> asyncio.run(main())
            [2, 4, 6]
        """
        inbox: _Inbox = self.actor_inbox  # type: ignore[assignment]
        workers = inbox.workers  # None unless the actor's workers are serving
        task = asyncio.current_task()
        if (
            workers is None
            or task is None
            or task in workers.callers  # a message calling its own actor: an ask
            or self.actor_stopped.is_set()
            or isinstance(message, _ActorStop)
            or (slot := inbox.lend()) is None
        ):
            return await self.ask(message)
        actor: AsyncioActor = self._actor_weakref()  # type: ignore[assignment]
        return await actor._handle_lent(message, slot, task, workers)

    # pykka's stop() returns a bool when blocking; here it never blocks
    def stop(  # type: ignore[override]
        self, *, block: bool = False, timeout: float | None = None
    ) -> AsyncioFuture[bool]:
        """Ask the actor to stop after the messages before this one; await for the result.

        The future is ``True`` if this stopped the actor, ``False`` if it was already dead.
        """
        result = _StopFuture(timeout)
        if not self.is_alive():
            result.set_exception((ActorDeadError, ActorDeadError(f"{self} not found"), None))
        else:
            self.actor_inbox.put(Envelope(_ActorStop(), reply_to=result))
        return result


async def stop_all(refs: Iterable[AsyncioActorRef[Any]]) -> None:
    """Stop many actors at once: all are asked first, then awaited (no task per actor)."""
    stopping = [ref.stop() for ref in refs]
    for future in stopping:
        await future


def kill(ref: ActorRef[Any]) -> None:
    """Cancel an asyncio actor's task now: running messages are interrupted, queued asks
    fail with :class:`pykka.ActorDeadError`. For supervisors whose grace period ran out."""
    actor = ref._actor_weakref()
    task = getattr(actor, "actor_task", None)
    if task is not None:
        task.cancel()


if TYPE_CHECKING:

    class _Actor:
        """pykka.Actor as type checkers should see it under this runtime: the same
        attributes, but lifecycle hooks that may be coroutines (pykka's are typed
        ``-> None``, which would make every ``async def on_stop`` an override error)."""

        actor_urn: str
        actor_inbox: Any
        actor_stopped: Any
        _actor_ref: ActorRef[Any]

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        @classmethod
        def start(cls, *args: Any, **kwargs: Any) -> Any: ...
        def stop(self) -> None: ...
        def on_receive(self, message: Any) -> Any: ...
        def _handle_receive(self, message: Any) -> Any: ...
        def _handle_failure(self, *exc_info: Any) -> None: ...
        def _actor_loop_teardown(self) -> None: ...

else:
    _Actor = pykka.Actor


class AsyncioActor(_Actor):
    """A pykka actor that runs as an asyncio task. Start it from inside a running loop.

    Subclasses write ``async def`` (or plain) ``on_receive``, methods called
    through ``ref.proxy()``, and the ``on_start``/``on_stop``/``on_failure``
    hooks. ``concurrency`` says how many messages it works on at once.
    """

    concurrency: ClassVar[int] = 1
    """How many messages this actor handles at once; 1 = strictly one at a time."""

    actor_task: asyncio.Task[None] | None = None
    """The task running the actor's loop; done when the actor stopped."""

    _live_tasks: ClassVar[set[asyncio.Task[None]]] = set()

    # defaults shared by all instances until an actor needs its own
    _running: tuple[Any, ...] | list[Any] = ()
    """Envelopes being handled right now (their askers are told if the actor dies)."""
    _workers: _Workers | None = None
    """Worker tasks (actors with ``concurrency > 1``)."""
    _failure: ExcInfo | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor_stopped = _StopFlag()
        self._actor_ref = AsyncioActorRef(self)
        # Per-actor state is created only when used (idle actors must stay small):
        # see the class-level defaults below.

    @property
    def actor_ref(self) -> AsyncioActorRef[Any]:
        return cast(AsyncioActorRef[Any], self._actor_ref)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> AsyncioActorRef[Any]:
        """Create, register and start the actor; returns its ref at once."""
        return cast(AsyncioActorRef[Any], super().start(*args, **kwargs))

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> AsyncioFuture[Any]:
        return AsyncioFuture()

    def _start_actor_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise RuntimeError(
                f"{type(self).__name__}.start() must be called from a running event loop"
            ) from None
        task = loop.create_task(self._run(), name=f"actor {self}")
        self.actor_task = task
        AsyncioActor._live_tasks.add(task)
        task.add_done_callback(AsyncioActor._live_tasks.discard)
        task.add_done_callback(self._loop_done)

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await _maybe_await(self.on_start())
        except Exception:
            self._handle_failure(*sys.exc_info())
            await self._call_on_failure(sys.exc_info())
        try:
            if self.concurrency <= 1:
                await self._serve_one_at_a_time()
            else:
                await self._serve_with_workers(self.concurrency)
        finally:
            await self._cancel_message_tasks()

    async def _serve_one_at_a_time(self) -> None:
        inbox = cast(_Inbox, self.actor_inbox)
        while not self.actor_stopped.is_set():
            if inbox.empty():
                await inbox.wait()
                continue  # woken: by a message, or by a failure that stopped the actor
            envelope = inbox.get()
            if isinstance(envelope.message, _ActorStop):
                await self._stop_gracefully(envelope)
                return
            await self._handle_envelope(envelope)

    async def _serve_with_workers(self, limit: int) -> None:
        """Hand messages to up to ``limit`` long-lived worker tasks (no task per message).

        A message that arrives while a worker is idle and nothing waits before it
        goes straight to that worker (:meth:`_Inbox.put`); this loop passes on the
        rest, and the stop request.
        """
        inbox = cast(_Inbox, self.actor_inbox)
        loop = asyncio.get_running_loop()
        workers = self._workers = inbox.workers = _Workers()
        try:
            while not self.actor_stopped.is_set():
                if inbox.empty():
                    await inbox.wait()
                    continue
                envelope = inbox.get()
                if isinstance(envelope.message, _ActorStop):
                    inbox.workers = None  # from now on everything queues behind the stop
                    await self._wait_until_idle(workers)
                    for slot in workers.idle:
                        slot.set_result(None)  # let idle workers end
                    workers.idle.clear()
                    await self._stop_gracefully(envelope)
                    return
                workers.holding = True
                while not workers.idle and len(workers.tasks) >= limit:
                    workers.freed = loop.create_future()
                    await workers.freed
                workers.holding = False
                if workers.idle:
                    workers.assign(workers.idle.pop(), envelope)
                else:
                    workers.busy += 1
                    workers.handed += 1
                    worker = loop.create_task(self._work(envelope, workers))
                    workers.tasks.add(worker)
                    worker.add_done_callback(workers.tasks.discard)
        finally:
            inbox.workers = None

    async def _work(self, envelope: Any, workers: _Workers) -> None:
        loop = asyncio.get_running_loop()
        while envelope is not None:
            workers.handed -= 1  # started on it
            try:
                await self._handle_envelope(envelope)
            finally:
                workers.done_one()
            if self.actor_stopped.is_set():
                return
            slot: asyncio.Future[Any] = loop.create_future()
            workers.idle.append(slot)
            _resolve(workers.freed)
            envelope = await slot

    async def _handle_lent(
        self, message: Any, slot: asyncio.Future[Any], caller: asyncio.Task[Any], workers: _Workers
    ) -> Any:
        """Handle ``message`` in ``caller``'s task on a worker's lent ``slot`` (see
        :meth:`AsyncioActorRef.call`): as that worker would, answering as an ask."""
        reply = _Answer()
        workers.callers.add(caller)
        try:
            await self._handle_envelope(Envelope(message, reply_to=reply))  # type: ignore[arg-type]
        except asyncio.CancelledError:
            killed = workers.give_back(caller, slot, self.actor_stopped.is_set())
            if not killed or caller.uncancel():
                raise
            # cancelled by kill() alone: like an asker whose worker was, it hears the actor died
        except BaseException:
            workers.give_back(caller, slot, self.actor_stopped.is_set())
            raise
        else:
            if workers.give_back(caller, slot, self.actor_stopped.is_set()):
                caller.uncancel()  # killed, but the message's code swallowed the cancellation
        return reply.get()

    @staticmethod
    async def _wait_until_idle(workers: _Workers) -> None:
        while workers.busy:
            workers.all_idle = asyncio.get_running_loop().create_future()
            await workers.all_idle

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        """Runs however the loop task ended (even cancelled before its first step):
        the actor is dead, and every ask it will never answer is told so."""
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        for envelope in list(self._running):
            _answer_dead(envelope, self)
        self._running = ()
        self._actor_loop_teardown()
        if not task.cancelled() and task.exception() is not None:
            logger.error("actor loop of %s crashed", self, exc_info=task.exception())

    async def _handle_envelope(self, envelope: Any) -> None:
        if not self._running:
            self._running = []
        running = cast(list[Any], self._running)
        running.append(envelope)
        try:
            response = self._handle_receive(envelope.message)
            if inspect.isawaitable(response):
                response = await response
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                _answer_dead(envelope, self)
                raise
            # a CancelledError nobody asked for (a dependency's future was cancelled):
            # a failure like any other, not a reason to stop the asker or this actor
            try:
                raise StrayCancellation(
                    f"{type(self).__name__} raised CancelledError without being cancelled"
                ) from sys.exc_info()[1]
            except StrayCancellation:
                self._failed(envelope)
        except Exception:
            self._failed(envelope)
        else:
            if envelope.reply_to is not None and not envelope.reply_to.done():
                envelope.reply_to.set(response)
        finally:
            running.remove(envelope)
        if self._failure is not None:
            exc_info, self._failure = self._failure, None
            await self._call_on_failure(exc_info)

    def _failed(self, envelope: Any) -> None:
        """The message raised: an asker gets the error; for a tell it is fatal to the actor."""
        if envelope.reply_to is not None:
            if not envelope.reply_to.done():
                envelope.reply_to.set_exception(sys.exc_info())
            return
        self._handle_failure(*sys.exc_info())
        self._failure = cast(ExcInfo, sys.exc_info())
        cast(_Inbox, self.actor_inbox).wake()  # the loop may be waiting for mail

    async def _stop_gracefully(self, envelope: Any) -> None:
        if self._workers is not None and self._workers.tasks:
            await asyncio.wait(set(self._workers.tasks))  # workers end once idle
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        logger.debug("stopped %s", self)
        try:
            await _maybe_await(self.on_stop())
        except Exception:
            self._handle_failure(*sys.exc_info())
        if envelope.reply_to is not None:
            envelope.reply_to.set(None)

    async def _call_on_failure(self, exc_info: ExcInfo) -> None:
        try:
            await _maybe_await(self.on_failure(*exc_info))
        except Exception:
            self._handle_failure(*sys.exc_info())

    async def _cancel_message_tasks(self) -> None:
        workers = self._workers
        if workers is None:
            return
        tasks = set(workers.tasks)
        for task in tasks:
            task.cancel()
        for caller in workers.callers:  # handling a message themselves (call())
            workers.killed.add(caller)
            caller.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        while workers.callers:
            workers.callers_gone = asyncio.get_running_loop().create_future()
            await workers.callers_gone

    # The lifecycle hooks may be coroutines here; the loop awaits them.

    def on_start(self) -> Awaitable[None] | None:
        """Runs before the first message (may be ``async``). Failing stops the actor."""
        return None

    def on_stop(self) -> Awaitable[None] | None:
        """Runs after the last message when the actor is stopped (may be ``async``)."""
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None] | None:
        """Runs when the actor dies of an exception, in ``on_start`` too (may be ``async``)."""
        return None

    def _actor_loop(self) -> NoReturn:  # pragma: no cover - the threading entry point
        raise RuntimeError("AsyncioActor runs as a task, not a thread")


class _Answer:
    """The reply of a message handled by its caller (:meth:`AsyncioActorRef.call`): only
    the part of :class:`AsyncioFuture` the actor uses, as nobody waits on it."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set(self, value: Any = None) -> None:
        self._done = True
        self._value = value

    def set_exception(self, exc_info: Any = None) -> None:
        self._done = True
        self._error = _error_of(exc_info if exc_info is not None else sys.exc_info())

    def get(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
