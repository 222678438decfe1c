"""The sqlite provider: the provider interface over one SQLite file in WAL mode.

Durable and shared by every process on the machine: a ``send`` that
returned is in the file (with ``synchronous="full"``, on the disk), a
``complete`` that returned is gone for good, and message locks, session
locks and session state are rows in the file, so they hold across processes
and survive restarts. The delivery contract is the in-memory provider's
(peek-lock with lock expiry and redelivery, delivery counts, per-session
FIFO with group blocking, exclusive session locks, DLQ after
``max_delivery_count``, TTL, scheduling, size and batch limits), in the same
two session modes (``"emulated"``, the default, and ``"native"``).

**Why a worker thread of our own, not aiosqlite.** Every call goes to one
dedicated thread per provider, which owns the provider's one ``sqlite3``
connection; the event loop only awaits the result. That is the design
aiosqlite has too, but here it costs no dependency and lets a call be a
whole transaction run by one function on that thread (a receive's sweep,
claim and read are one ``BEGIN IMMEDIATE`` ... ``COMMIT``), instead of one
loop round trip per statement. Serializing a process's calls through one
connection is also the single-writer pattern SQLite wants; other processes
wait for the write lock up to ``busy_timeout``. Calls that queue up while the
thread is busy (a receive and the completions behind it, say) run together,
in order, in one transaction with a savepoint each: one commit, so one fsync,
for all of them (group commit); each call fails or succeeds on its own, and
none is answered before the commit.

**Waiting.** A receive that finds nothing waits on the event loop (never in
the thread): for a write by this provider, for the next time-driven change
it read from the file (a lock running out, a delayed or scheduled message
coming due), or for another process's commit, which it notices by polling
``PRAGMA data_version`` every ``poll_interval``.

Example:
    >>> import asyncio, tempfile, os
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.sqlite import SqliteProvider
    >>> async def main(path: str) -> int:
    ...     provider = SqliteProvider(qr.SqliteConfig(path=path))
    ...     await provider.send(qr.QueueName("jobs"), [qr.Message(b"hi")])
    ...     [msg] = await provider.receive(qr.QueueName("jobs"), 1, timeout=0.1)
    ...     await provider.complete(msg.receipt)
    ...     await provider.aclose()
    ...     return msg.delivery_count
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     asyncio.run(main(os.path.join(folder, "queues.db")))
    1
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from queue_runtime.clock import Clock, SystemClock, to_datetime, wait_for_event
from queue_runtime.config import SqliteConfig
from queue_runtime.errors import (
    BatchTooLargeError,
    MessageTooLargeError,
    QueueError,
    SessionNotFoundError,
    ValidationError,
)
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import (
    Capabilities,
    ProviderBase,
    ProviderType,
    QueueInfo,
    SessionSupport,
)

from .store import SessionHold, Store

__all__ = ["SqliteProvider", "SqliteSessionReceiver", "create_provider"]

T = TypeVar("T")


class SqliteProvider(ProviderBase):
    """Queues in one SQLite file. Create with :func:`queue_runtime.create_client` and
    ``SqliteConfig(path=...)``, or directly (with a ``clock``) in tests."""

    def __init__(self, config: SqliteConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or SqliteConfig()
        self.clock: Clock = clock or SystemClock()
        self.path = os.path.abspath(os.path.expanduser(self.config.path))
        """The database file, made absolute when the provider was created."""
        super().__init__(
            "sqlite",
            Capabilities(
                ProviderType.SQLITE,
                self.config.max_batch_size,
                self.config.max_message_size,
                self.config.max_delivery_count,
            ),
        )
        self._store = Store(self.config, self.path, self._id)
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="queue-runtime-sqlite"
        )
        self._jobs: collections.deque[_Job] = collections.deque()
        self._jobs_lock = threading.Lock()
        self._draining = False
        """A drain of ``_jobs`` is queued or running on the thread (under ``_jobs_lock``)."""
        self._changed = asyncio.Event()
        self._last_poll = 0.0
        self._closed = False
        subscribe = getattr(self.clock, "subscribe", None)
        self._unsubscribe = subscribe(self._notify) if callable(subscribe) else None

    # -- the provider interface ---------------------------------------------

    def session_support(self, queue: QueueName) -> SessionSupport:
        if self.config.session_mode == "native":
            return SessionSupport.NATIVE
        return SessionSupport.EMULATED

    async def open(self) -> None:
        """Open (and if needed create) the file now, rather than on the first call.

        Raises :class:`~queue_runtime.errors.ConfigurationError` naming the
        path for a file that is not a queue-runtime database, of an unknown
        schema version, damaged or read-only.
        """
        await self._call("open", self._store.open)

    async def create_queue(self, queue: str) -> None:
        """Create ``queue`` (and its DLQ). Needed when ``create_queues`` is off."""
        name = QueueName(queue)
        await self._call("create_queue", self._store.create_queue, name, self.clock.now())

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``, its DLQ, its sessions and everything in them."""
        await self._call("delete_queue", self._store.delete_queue, QueueName(queue))
        self._notify()

    def check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None:
        """Raise for any message this provider would refuse (before anything is sent)."""
        limit = self.config.max_message_size
        for message in messages:
            if message.size > limit:
                raise MessageTooLargeError(
                    message.size,
                    limit,
                    operation="send",
                    queue=queue,
                    message_id=message.message_id,
                )

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        self._open_for("send")
        if len(messages) > self.config.max_batch_size:
            raise BatchTooLargeError(
                f"{len(messages)} messages in one call, the limit is {self.config.max_batch_size}",
                operation="send",
                queue=queue,
            )
        self.check_messages(queue, messages)
        await self._call("send", self._store.send, queue, list(messages), self.clock.now())
        self._notify()

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._open_for("receive")
        self._check_count(max_messages)
        groups = self.config.session_mode == "emulated"
        return await self._wait_for(
            "receive",
            lambda now: self._store.claim(queue, max_messages, now, dead=False, groups=groups),
            timeout,
        )

    async def complete(self, receipt: ReceiptHandle) -> None:
        self._open_for("complete")
        await self._call("complete", self._store.complete, receipt, self.clock.now())
        self._notify()

    async def complete_many(self, receipts: Sequence[ReceiptHandle]) -> list[QueueError | None]:
        """Complete several messages in one transaction; per receipt, None or its error.

        Example:
            >>> # results = await provider.complete_many([m.receipt for m in batch])
        """
        self._open_for("complete")
        results: list[QueueError | None] = await self._call(
            "complete", self._store.complete_many, list(receipts), self.clock.now()
        )
        self._notify()
        return results

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        self._open_for("abandon")
        if delay is not None and not 0 <= delay < float("inf"):
            raise ValidationError(f"must be a non-negative number, got {delay!r}", field="delay")
        await self._call("abandon", self._store.abandon, receipt, delay, self.clock.now())
        self._notify()

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self._open_for("dead_letter")
        extra = dict(properties) if properties else None
        now = self.clock.now()
        await self._call(
            "dead_letter", self._store.dead_letter, receipt, reason, description, extra, now
        )
        self._notify()

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        self._open_for("renew_lock")
        until: float = await self._call(
            "renew_lock", self._store.renew_lock, receipt, self.clock.now()
        )
        receipt.extend(to_datetime(until))
        return receipt.locked_until

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> SqliteSessionReceiver | None:
        self._open_for("accept_session")
        holds = await self._wait_for(
            "accept_session",
            lambda now: self._accept_attempt(queue, session_id, now),
            timeout,
            give_back=self._release_holds,
        )
        if not holds:
            return None
        return SqliteSessionReceiver(self, holds[0])

    def _accept_attempt(
        self, queue: QueueName, session_id: SessionId | None, now: float
    ) -> tuple[list[SessionHold], float | None]:
        hold, due = self._store.accept(queue, session_id, now)
        return ([hold] if hold is not None else []), due

    def _release_holds(self, holds: Sequence[SessionHold], now: float) -> None:
        for hold in holds:
            self._store.release_session(hold, now)

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        self._open_for("receive_dead_letters")
        self._check_count(max_messages)
        return await self._wait_for(
            "receive_dead_letters",
            lambda now: self._store.claim(queue, max_messages, now, dead=True, groups=False),
            timeout,
        )

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        self._open_for("peek_dead_letters")
        letters: list[ReceivedMessage] = await self._call(
            "peek_dead_letters",
            self._store.peek_dead_letters,
            queue,
            max_messages,
            self.clock.now(),
        )
        return letters

    async def purge_dead_letters(self, queue: QueueName) -> int:
        self._open_for("purge_dead_letters")
        count: int = await self._call(
            "purge_dead_letters", self._store.purge_dead_letters, queue, self.clock.now()
        )
        return count

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """Exact counts of ``queue`` without receiving from it (the health hook).

        Messages waiting (scheduled ones not included), in flight, and in the
        DLQ. Does not create the queue: one never used reads as empty, or
        raises QueueNotFoundError when ``create_queues`` is off.
        """
        self._open_for("queue_info")
        counts = await self._call("queue_info", self._store.counts, queue, self.clock.now())
        if counts is None:
            return QueueInfo(depth=0, in_flight=0, dead_letter_depth=0)
        waiting, in_flight, _, dead = counts
        return QueueInfo(depth=waiting, in_flight=in_flight, dead_letter_depth=dead)

    async def stats(self, queue: str) -> tuple[int, int, int, int]:
        """``(waiting, in flight, scheduled, dead-lettered)`` of ``queue``, for tests and tools."""
        counts = await self._call("stats", self._store.counts, QueueName(queue), self.clock.now())
        return counts if counts is not None else (0, 0, 0, 0)

    async def aclose(self) -> None:
        """Close the provider: waiting receives return, later calls fail, the file is closed."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._notify()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._store.close)
        self._thread.shutdown(wait=False)

    def __repr__(self) -> str:
        return (
            f"SqliteProvider(id={self._id!r}, path={self.path!r}, "
            f"session_mode={self.config.session_mode!r})"
        )

    # -- internals ------------------------------------------------------------

    def _open_for(self, operation: str) -> None:
        if self._closed:
            raise QueueError(f"the sqlite provider of {self.path!r} is closed", operation=operation)

    def _check_count(self, max_messages: int) -> None:
        if not 1 <= max_messages <= self.config.max_batch_size:
            raise ValidationError(
                f"must be 1-{self.config.max_batch_size}, got {max_messages}",
                field="max_messages",
            )

    def _notify(self) -> None:
        """Wake every waiter; they look at the file again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _call(self, operation: str, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the worker thread (SQLite errors become QueueErrors)."""
        result: T = await self._submit(operation, function, *args)
        return result

    def _submit(
        self, operation: str, function: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Queue a call for the worker thread; its answer comes once it is committed.

        Calls that queue up while the thread is busy run together, in order, in
        one transaction (:meth:`Store.run_group`): one commit, one fsync for all.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        with self._jobs_lock:
            self._jobs.append((operation, function, args, answer))
            if self._draining:
                return answer
            self._draining = True
        try:
            self._thread.submit(self._drain, loop)
        except RuntimeError:  # the thread was shut down
            with self._jobs_lock:
                self._draining = False
            raise
        return answer

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the worker thread: run what is queued, a group at a time, until none is left."""
        while True:
            with self._jobs_lock:
                jobs = list(self._jobs)
                self._jobs.clear()
                if not jobs:
                    self._draining = False
                    return
            try:
                outcomes = self._store.run_group([(job[0], job[1], job[2]) for job in jobs])
            except Exception as error:  # a bug: its callers see it rather than hang
                outcomes = [(False, error)] * len(jobs)
            with contextlib.suppress(RuntimeError):  # a closed loop: no one waits any more
                loop.call_soon_threadsafe(_answer, [job[3] for job in jobs], outcomes)

    async def _wait_for(
        self,
        operation: str,
        attempt: Callable[[float], tuple[list[T], float | None]],
        timeout: float,
        give_back: Callable[[Sequence[T], float], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> list[T]:
        """Repeat ``attempt(now)`` until it takes something, ``stop()``, or ``timeout`` passed.

        ``attempt`` runs on the worker thread and returns what it took (locked
        in the file) and, when it took nothing, the clock time of the next
        time-driven change. If the caller is cancelled while an attempt runs,
        what it took is given back on the thread (``give_back``, by default
        the messages are unlocked without counting the delivery).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while not self._closed and not stop():
            changed = self._changed
            now = self.clock.now()
            job = self._submit(operation, attempt, now)
            try:
                outcome: tuple[list[T], float | None] = await asyncio.shield(job)
            except asyncio.CancelledError:
                undo: Callable[[Sequence[Any], float], None] = give_back or self._unclaim
                job.add_done_callback(functools.partial(self._give_back, undo=undo, now=now))
                raise
            taken, due = outcome
            if taken:
                return taken
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if due is not None:
                remaining = min(remaining, max(0.001, due - now))
            await self._wait_for_change(changed, remaining, operation)
        return []

    def _give_back(
        self,
        done: asyncio.Future[Any],
        undo: Callable[[Sequence[Any], float], None],
        now: float,
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        taken, _ = done.result()
        if not taken or self._closed:
            return  # (closed: the locks run out, and the messages come back then)
        # queued on the worker thread: it runs before a later aclose closes the file
        self._thread.submit(self._store.call, "give_back", undo, taken, now)

    def _unclaim(self, taken: Sequence[Any], now: float) -> None:
        self._store.unclaim([message.receipt for message in taken])

    async def _wait_for_change(
        self, changed: asyncio.Event, seconds: float, operation: str
    ) -> None:
        """Sleep until this provider writes, another process commits, or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        poll = self.config.poll_interval
        while True:
            left = until - loop.time()
            if left <= 0:
                return
            if await wait_for_event(changed, min(left, poll)) or self._closed:
                return
            if loop.time() - self._last_poll >= poll / 2:
                self._last_poll = loop.time()
                if await self._call(operation, self._store.changed_elsewhere):
                    self._notify()
                    return
            elif changed is not self._changed:
                return


class SqliteSessionReceiver:
    """A locked session of a :class:`SqliteProvider` queue; the lock is a row in the file."""

    def __init__(self, provider: SqliteProvider, hold: SessionHold) -> None:
        self._provider = provider
        self._hold = hold
        self._session_id = SessionId(hold.session_id)

    @property
    def session_id(self) -> SessionId:
        return self._session_id

    @property
    def locked_until(self) -> datetime:
        return to_datetime(self._hold.locked_until)

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        provider = self._provider
        self._check("session_receive")
        provider._check_count(max_messages)
        store, hold = provider._store, self._hold
        return await provider._wait_for(
            "session_receive",
            lambda now: store.session_claim(hold, max_messages, now),
            timeout,
            stop=lambda: hold.closed,  # closed while waiting: return empty-handed
        )

    async def renew_lock(self) -> datetime:
        self._check("renew_session_lock")
        provider = self._provider
        await provider._call(
            "renew_session_lock", provider._store.renew_session, self._hold, provider.clock.now()
        )
        return self.locked_until

    async def get_state(self) -> bytes | None:
        self._check("get_state")
        provider = self._provider
        state: bytes | None = await provider._call(
            "get_state", provider._store.get_state, self._hold, provider.clock.now()
        )
        return state

    async def set_state(self, state: bytes | None) -> None:
        self._check("set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        provider = self._provider
        await provider._call(
            "set_state", provider._store.set_state, self._hold, state, provider.clock.now()
        )

    async def close(self) -> None:
        """Release the session; unsettled messages become available again at once."""
        hold = self._hold
        if hold.closed:
            return
        hold.closed = True
        provider = self._provider
        if hold.lost or provider._closed:
            return  # the lock is gone already, or runs out in the file
        await provider._call(
            "close_session", provider._store.release_session, hold, provider.clock.now()
        )
        provider._notify()

    def __repr__(self) -> str:
        return f"SqliteSessionReceiver(queue={self._hold.queue!r}, session_id={self._session_id!r})"

    def _check(self, operation: str) -> None:
        self._provider._open_for(operation)
        if self._hold.closed:
            raise SessionNotFoundError(
                f"session {self._session_id!r} was closed",
                operation=operation,
                queue=self._hold.queue,
            )


_Job = tuple[str, Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
"""An operation's name, the store function and its arguments, and the caller's answer."""


def _answer(answers: list[asyncio.Future[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    for answer, (ok, value) in zip(answers, outcomes, strict=True):
        if answer.done():  # (shielded callers are never cancelled here; others may be)
            continue
        if ok:
            answer.set_result(value)
        else:
            answer.set_exception(value)


def create_provider(config: Any, clock: Clock) -> SqliteProvider:
    """Registry entry point: build the provider for a :class:`SqliteConfig`."""
    return SqliteProvider(config, clock=clock)
