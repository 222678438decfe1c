"""A session of an SQS FIFO queue: one message group, locked by one receiver.

SQS has no sessions; FIFO message groups give the ordering, and
:class:`~queue_runtime.providers.aws.SqsProvider` adds the rest:

* **Lock.** Exclusive within the provider instance that accepted it, for
  ``visibility_timeout`` seconds, extended by :meth:`SqsSessionReceiver.renew_lock`
  (which also extends the visibility of every message of the session it holds).
  Across processes SQS's group blocking keeps the order: nobody else receives a
  message of the group while one of its messages is in flight here. It does not
  stop another process from receiving the group's *next* message once
  everything held here is settled.
* **Receive.** The session's buffered messages first, in order; else a poll of
  SQS, keeping other groups' messages buffered for later sessions. While a
  message of the session is out, SQS holds back the rest of its group, so
  settle before asking for more than one batch.
* **State.** SQS stores none: :meth:`get_state`/:meth:`set_state` keep it in the
  provider's memory, per queue and session id. It survives closing and
  re-accepting the session in the same process, not a restart and not another
  process.
* **Close.** Releases the session's unsettled and buffered messages
  (visibility 0) so any consumer can take the session at once.

:class:`SessionBook` is the provider's bookkeeping of the sessions it holds:
which groups are locked and until when, accepting, renewing, checking and
ending locks, and the sessions' state.

Example:
    >>> # session = await client.accept_session("orders.fifo", timeout=5.0)
    >>> # async with session:
    >>> #     message = await session.receive_message(timeout=5.0)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeAlias

from queue_runtime.clock import Clock, to_datetime
from queue_runtime.errors import (
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
    ValidationError,
)
from queue_runtime.messages import ReceivedMessage, SessionId

from .inflight import Group, QueueState, SessionLock
from .queues import SqsQueues
from .settling import Settler

__all__ = ["SessionBook", "SessionReceive", "SqsSessionReceiver"]

SessionReceive: TypeAlias = Callable[[SessionLock, int, float], Awaitable[list[ReceivedMessage]]]
"""Receives up to ``max_messages`` of a locked session within ``timeout`` seconds."""


class SessionBook:
    """The sessions (locked FIFO groups) one provider holds, and their state."""

    def __init__(
        self, queues: SqsQueues, settler: Settler, clock: Clock, *, visibility: int
    ) -> None:
        self._queues = queues
        self._settler = settler
        self._clock = clock
        self._visibility = visibility

    async def accept(self, state: QueueState, session_id: SessionId) -> SessionLock:
        """Lock the session ``session_id``; raise if this provider holds it already."""
        group = state.groups.get(session_id)
        if group is not None and group.lock is not None:
            await self.check_expiry(group.lock)
        if group is not None and (group.lock is not None or group.out):
            raise SessionLockedError(
                f"session {session_id!r} is locked by another consumer",
                operation="accept_session",
                queue=state.name,
            )
        return await self._lock(state, state.group(session_id, session_id))

    async def accept_any(self, state: QueueState) -> SessionLock | None:
        """Lock the free session whose buffered head is oldest, if there is one."""
        for group in list(state.groups.values()):
            if group.lock is not None:
                await self.check_expiry(group.lock)
        free = self._free_group(state)
        return None if free is None else await self._lock(state, free)

    def _free_group(self, state: QueueState) -> Group | None:
        now = self._clock.now()
        free = [g for g in state.groups.values() if g.session_id is not None and g.available(now)]
        return min(free, key=lambda g: g.buffered[0].seq) if free else None

    async def _lock(self, state: QueueState, group: Group) -> SessionLock:
        assert group.session_id is not None
        before = self._clock.now()
        lock = SessionLock(state, group.session_id, before + self._visibility)
        group.lock = lock
        if group.buffered:  # align their visibility with the new session lock
            await self._settler.extend(state, list(group.buffered), before, "accept_session")
        return lock

    async def check_expiry(self, lock: SessionLock) -> None:
        """End ``lock`` as lost if its time ran out."""
        if not lock.ended and lock.locked_until <= self._clock.now():
            await self.end(lock, lost=True)

    async def check(self, lock: SessionLock, operation: str) -> None:
        """Raise unless the provider is open and ``lock`` is still held."""
        self._queues.check_open(operation)
        await self.check_expiry(lock)
        if lock.lost:
            raise SessionLockLostError(
                f"the lock on session {lock.session_id!r} was lost",
                operation=operation,
                queue=lock.state.name,
            )
        if lock.closed:
            raise SessionNotFoundError(
                f"session {lock.session_id!r} was closed",
                operation=operation,
                queue=lock.state.name,
            )

    async def renew(self, lock: SessionLock, operation: str) -> datetime:
        """Extend ``lock`` and the visibility of every message of its session held here."""
        await self.check(lock, operation)
        group = lock.state.groups.get(lock.session_id)
        before = self._clock.now()
        if group is not None and (group.out or group.buffered):
            await self._settler.extend(lock.state, [*group.out, *group.buffered], before, operation)
        lock.locked_until = before + self._visibility
        until = to_datetime(lock.locked_until)
        if group is not None:
            for held in group.out:
                if held.received is not None:
                    held.received.receipt.extend(until)
        return until

    async def end(self, lock: SessionLock, *, lost: bool) -> None:
        """Close or lose a session: its messages go back to SQS (visibility 0) at once."""
        if lock.ended:
            lock.closed = lock.closed or not lost
            return
        if lost:
            lock.lost = True
        else:
            lock.closed = True
        state = lock.state
        group = state.groups.get(lock.session_id)
        if group is None or group.lock is not lock:
            state.notify()
            return
        group.lock = None
        delivered, waiting = list(group.out), list(group.buffered)
        if group.empty:
            del state.groups[group.key]
        what = "session lock lost" if lost else "session closed"
        await self._settler.give_up(delivered, "close_session", what)
        await self._settler.release(waiting, "close_session")
        state.notify()

    def close(self) -> None:
        """The provider is closing: every session it holds counts as closed."""
        for state in self._queues.states():
            for group in state.groups.values():
                if group.lock is not None:
                    group.lock.closed = True

    @staticmethod
    def state(lock: SessionLock) -> bytes | None:
        """The session's state in this process."""
        return lock.state.session_states.get(lock.session_id)

    @staticmethod
    def set_state(lock: SessionLock, value: bytes | None) -> None:
        """Keep ``value`` as the session's state (``None`` clears it)."""
        if value is None:
            lock.state.session_states.pop(lock.session_id, None)
        else:
            lock.state.session_states[lock.session_id] = value


class SqsSessionReceiver:
    """A locked session (message group) of an SQS FIFO queue."""

    def __init__(self, book: SessionBook, receive: SessionReceive, lock: SessionLock) -> None:
        self._book = book
        self._receive = receive
        self._lock = lock

    @property
    def session_id(self) -> SessionId:
        return self._lock.session_id

    @property
    def locked_until(self) -> datetime:
        return to_datetime(self._lock.locked_until)

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        return await self._receive(self._lock, max_messages, timeout)

    async def renew_lock(self) -> datetime:
        return await self._book.renew(self._lock, "renew_session_lock")

    async def get_state(self) -> bytes | None:
        """The session's state in this process (SQS keeps none)."""
        await self._book.check(self._lock, "get_state")
        return self._book.state(self._lock)

    async def set_state(self, state: bytes | None) -> None:
        """Keep ``state`` for this session in this process's memory (``None`` clears it)."""
        await self._book.check(self._lock, "set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        self._book.set_state(self._lock, state)

    async def close(self) -> None:
        """Release the session; its unsettled messages become available again at once."""
        await self._book.end(self._lock, lost=False)

    def __repr__(self) -> str:
        return (
            f"SqsSessionReceiver(queue={self._lock.state.name!r}, session_id={self.session_id!r})"
        )
