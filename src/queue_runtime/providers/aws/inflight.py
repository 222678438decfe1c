"""What the SQS provider holds in flight: the messages it received and has not let go.

SQS itself tracks visibility; the provider keeps its own record of every
message it holds invisible so that it can

* reject stale, foreign and repeated receipts (SQS accepts old receipt handles
  and deletes idempotently, the delivery contract does not);
* keep FIFO groups in order: messages of a group it holds are handed out one
  batch at a time, in the order SQS delivered them, never while an earlier one
  is out (plain receive) or locked by another session;
* buffer other groups' messages that an ``accept_session`` pulled in, until a
  later session (or a plain receive) takes them.

Nothing here does I/O; :mod:`.receiving` and :mod:`.settling` drive it.

Example:
    >>> import queue_runtime as qr
    >>> state = QueueState(qr.QueueName("jobs.fifo"), "jobs.fifo", dead_letter=False)
    >>> state.fifo, state.key
    (True, 'jobs.fifo')
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import secrets
from collections import deque
from dataclasses import dataclass, field

from queue_runtime.errors import InvalidReceiptError, SessionLockLostError
from queue_runtime.messages import QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import SettledReceipts

from .wire import Incoming

__all__ = ["Group", "Held", "Ledger", "QueueState", "SessionLock"]


@dataclass(slots=True, eq=False)
class SessionLock:
    """A session held by one receiver of this provider (exclusive within the process)."""

    state: QueueState
    session_id: SessionId
    locked_until: float
    closed: bool = False
    lost: bool = False

    @property
    def ended(self) -> bool:
        return self.closed or self.lost


@dataclass(slots=True, eq=False)
class Held:
    """One received SQS message this provider holds invisible (buffered or handed out)."""

    state: QueueState
    message: Incoming
    seq: int
    """Local arrival order; within a FIFO group it is the group's order."""
    visible_at: float
    """When SQS will make the message visible again (our estimate, Unix seconds)."""
    buffered_at: float
    group: Group | None = None
    extra: int = 0
    """Redeliveries that happened here without SQS (local abandon within a held group)."""
    not_before: float = 0.0
    """Abandoned with a delay: not handed out again before this time."""
    token: str | None = None
    holder: SessionLock | None = None
    received: ReceivedMessage | None = None
    settling: bool = False
    gone: bool = False

    @property
    def handle(self) -> str:
        return self.message.handle

    @property
    def delivery_count(self) -> int:
        return self.message.receive_count + self.extra

    @property
    def locked_until(self) -> float:
        return self.holder.locked_until if self.holder is not None else self.visible_at


@dataclass(slots=True, eq=False)
class Group:
    """The messages of one FIFO message group that this provider holds."""

    key: str
    session_id: SessionId | None
    buffered: list[Held] = field(default_factory=list)
    """Received but not handed out, in group order."""
    out: list[Held] = field(default_factory=list)
    """Handed out and not yet settled."""
    lock: SessionLock | None = None

    @property
    def empty(self) -> bool:
        return not self.buffered and not self.out and self.lock is None

    def available(self, now: float) -> bool:
        """Can its next buffered message be handed out now (FIFO: no lock, none out)?"""
        return (
            self.lock is None
            and not self.out
            and bool(self.buffered)
            and self.buffered[0].not_before <= now
        )

    def insert(self, held: Held) -> None:
        """Put ``held`` back into the buffer at its place in group order."""
        index = len(self.buffered)
        while index > 0 and self.buffered[index - 1].seq > held.seq:
            index -= 1
        self.buffered.insert(index, held)


@dataclass(slots=True, eq=False)
class QueueState:
    """One SQS queue as seen by this provider: URL, held messages, session locks, state.

    ``name`` is the runtime's queue (receipts name it); ``sqs_name`` is the SQS
    queue behind this state — the same, or its DLQ when ``dead_letter``.
    """

    name: QueueName
    sqs_name: str
    dead_letter: bool
    url: str | None = None
    dead_letter_state: QueueState | None = None
    groups: dict[str, Group] = field(default_factory=dict)
    ready: deque[Held] = field(default_factory=deque)
    """Received messages of standard queues and DLQs not yet handed out."""
    session_states: dict[str, bytes] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def fifo(self) -> bool:
        return self.sqs_name.endswith(".fifo")

    @property
    def grouped(self) -> bool:
        """Messages are tracked by FIFO group (FIFO source queues; DLQs are read plainly)."""
        return self.fifo and not self.dead_letter

    @property
    def key(self) -> str:
        return self.sqs_name

    def notify(self) -> None:
        """Wake everything waiting for a change of this queue's held messages."""
        self.changed.set()
        self.changed = asyncio.Event()

    def group(self, key: str, session_id: SessionId | None) -> Group:
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = Group(key, session_id)
        return found

    def buffered_count(self) -> int:
        return sum(len(group.buffered) for group in self.groups.values())

    def all_held(self) -> list[Held]:
        held = list(self.ready)
        for group in self.groups.values():
            held.extend(group.out)
            held.extend(group.buffered)
        return held


class Ledger:
    """Every message the provider holds, and the live delivery behind each receipt token.

    Memory is bounded by what is in flight: a delivery is dropped when it is
    settled, released, superseded by a redelivery or found expired.
    """

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id
        self.deliveries: dict[str, Held] = {}
        self.settled = SettledReceipts()
        """Receipts settled through this provider: a retried settle is told so."""
        self._latest: dict[tuple[str, str], Held] = {}
        self._expiries: list[tuple[float, int, Held]] = []
        self._seq = itertools.count()

    def hold(self, state: QueueState, message: Incoming, now: float, visibility: int) -> Held:
        """Record a message just received; an earlier delivery of it is void from now on."""
        key = (state.key, message.sqs_id)
        old = self._latest.get(key)
        if old is not None:
            self.forget(old)
        held = Held(state, message, next(self._seq), now + visibility, now)
        self._latest[key] = held
        return held

    def buffer(self, held: Held) -> None:
        """Keep ``held`` for a later hand-out (its FIFO group's buffer, or the ready list)."""
        state = held.state
        if state.grouped:
            message = held.message
            group = state.group(message.group_id or message.sqs_id, message.session_id)
            held.group = group
            group.buffered.append(held)
        else:
            state.ready.append(held)

    def take(
        self, state: QueueState, limit: int, lock: SessionLock | None, now: float
    ) -> list[Held]:
        """Hand out up to ``limit`` held messages and register their deliveries.

        FIFO rules: a session takes its own group's next messages; a plain
        receive takes only groups that are neither locked nor out, oldest head
        first, several consecutive messages of one group at a time.
        """
        taken: list[Held] = []
        if not state.grouped:
            while state.ready and len(taken) < limit:
                taken.append(state.ready.popleft())
        elif lock is not None:
            group = state.groups.get(lock.session_id)
            if group is not None:
                taken = self._consecutive(group, limit, now)
        else:
            candidates = [g for g in state.groups.values() if g.available(now)]
            candidates.sort(key=lambda g: g.buffered[0].seq)
            for group in candidates:
                taken.extend(self._consecutive(group, limit - len(taken), now))
                if len(taken) >= limit:
                    break
        for held in taken:
            held.token = secrets.token_hex(16)
            held.holder = lock
            self.deliveries[held.token] = held
            if lock is None:
                self.watch(held)
        return taken

    @staticmethod
    def _consecutive(group: Group, limit: int, now: float) -> list[Held]:
        moved: list[Held] = []
        while group.buffered and len(moved) < limit and group.buffered[0].not_before <= now:
            moved.append(group.buffered.pop(0))
        group.out.extend(moved)
        return moved

    def watch(self, held: Held) -> None:
        """Note when a plain delivery's lock runs out (again after a renewal)."""
        heapq.heappush(self._expiries, (held.visible_at, held.seq, held))

    def expired(self, now: float) -> list[Held]:
        """Plain deliveries whose lock has run out since the last call."""
        found: list[Held] = []
        while self._expiries and self._expiries[0][0] <= now:
            until, _, held = heapq.heappop(self._expiries)
            if held.gone or held.token is None or held.holder is not None:
                continue
            if held.visible_at == until:
                found.append(held)
        return found

    def lookup(self, receipt: ReceiptHandle, operation: str, now: float) -> Held:
        """The live delivery ``receipt`` stands for, or the right error."""
        if not isinstance(receipt, ReceiptHandle) or receipt.provider_id != self.provider_id:
            raise InvalidReceiptError(
                "the receipt was not issued by this provider", operation=operation
            )
        held = self.deliveries.get(receipt.token)
        if (held is None or held.gone) and (how := self.settled.how(receipt.token)):
            raise InvalidReceiptError(
                f"the message was already settled with this receipt ({how})",
                settled=how,
                operation=operation,
                queue=receipt.queue,
            )
        if held is None or held.gone:
            raise InvalidReceiptError(
                "the lock expired, the message was delivered again, or it was already settled",
                operation=operation,
                queue=receipt.queue,
            )
        if held.state.name != receipt.queue or held.state.dead_letter != receipt.dead_letter:
            raise InvalidReceiptError(
                "the receipt belongs to another queue", operation=operation, queue=receipt.queue
            )
        message_id = held.message.message_id
        lock = held.holder
        problem: str | None = None
        if lock is not None:
            if lock.lost or (not lock.closed and lock.locked_until <= now):
                raise SessionLockLostError(
                    f"the lock on session {lock.session_id!r} was lost",
                    operation=operation,
                    queue=receipt.queue,
                    message_id=message_id,
                )
            if lock.closed:
                problem = f"session {lock.session_id!r} was closed before the message was settled"
        elif held.visible_at <= now:
            problem = "the lock expired"
        if problem is None and held.settling:
            problem = "the message is being settled by another call"
        if problem is not None:
            raise InvalidReceiptError(
                problem, operation=operation, queue=receipt.queue, message_id=message_id
            )
        return held

    def forget(self, held: Held, settled: str | None = None) -> None:
        """Drop ``held``: its receipt is void from now on; ``settled``: how it was settled."""
        if settled is not None and held.token is not None:
            self.settled.add(held.token, settled)
        held.gone = True
        if held.token is not None:
            self.deliveries.pop(held.token, None)
        key = (held.state.key, held.message.sqs_id)
        if self._latest.get(key) is held:
            del self._latest[key]
        group = held.group
        state = held.state
        if group is not None:
            if held in group.out:
                group.out.remove(held)
            elif held in group.buffered:
                group.buffered.remove(held)
            if group.empty and state.groups.get(group.key) is group:
                del state.groups[group.key]
        elif held in state.ready:
            state.ready.remove(held)

    def requeue(self, held: Held, delay: float, now: float) -> None:
        """Abandon without SQS: back into its group's buffer, one delivery more."""
        group = held.group
        assert group is not None
        if held.token is not None:
            self.settled.add(held.token, "abandon")
            self.deliveries.pop(held.token, None)
            held.token = None
        if held in group.out:
            group.out.remove(held)
        held.holder = None
        held.extra += 1
        held.not_before = now + delay if delay else 0.0
        held.buffered_at = now
        group.insert(held)
