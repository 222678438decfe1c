"""The in-memory message broker: peek-lock queues with sessions, in one event loop.

This is the engine behind :class:`~queue_runtime.providers.memory.InMemoryProvider`
(and the fake Service Bus used to test the Azure adapter). It keeps records,
locks and time; it knows nothing of receipts or the provider interface.

How a queue (an :class:`Entity`) is organised:

* every stored message is a :class:`Record` in ``records`` (ordered by sequence
  number);
* messages with a session id (when the entity groups by session) live in their
  :class:`Group`'s ``pending`` deque, in sequence order. A group is *free* when
  none of its messages is in flight and no session receiver holds it; only a
  free group's head can be handed out by a plain receive or make the group
  "next available" for ``accept_session``;
* ``ready_plain`` and ``ready_groups`` are heaps of candidates (plain records,
  heads of free groups), validated lazily when popped;
* time-driven changes (scheduled messages, abandon delays, lock expiry, session
  lock expiry) sit in heaps and are applied by :meth:`Entity.tick`, which every
  operation calls first.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from queue_runtime.clock import wait_for_event
from queue_runtime.messages import Message
from queue_runtime.provider import MAX_DELIVERY_REASON, TTL_EXPIRED_REASON

__all__ = ["Entity", "Group", "Record", "RecordState", "SessionLock"]


COMPACT_LOCKS_AT = 1024
"""Lock-expiry heap size above which entries of settled records are swept out."""


def _lock_entry_live(until: float, record: Record) -> bool:
    """Is a lock-expiry entry still the record's current message lock (not settled,
    not renewed since, not held under a session lock)?"""
    return (
        record.state is RecordState.IN_FLIGHT
        and record.holder is None
        and record.locked_until == until
    )


class RecordState(enum.Enum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    GONE = "gone"


@dataclass(slots=True, eq=False)
class SessionLock:
    """A session receiver's exclusive hold on a group."""

    group: Group
    token: str
    locked_until: float
    lost: bool = False
    closed: bool = False


@dataclass(slots=True, eq=False)
class Record:
    """One stored message and its delivery state."""

    message: Message
    seq: int
    enqueued_at: float
    group: Group | None
    expires_at: float | None = None
    delivery_count: int = 0
    first_delivered_at: float | None = None
    delivered_at: float | None = None
    visible_at: float = 0.0
    state: RecordState = RecordState.PENDING
    token: str | None = None
    locked_until: float = 0.0
    holder: SessionLock | None = None
    in_ready: bool = False
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    dead_letter_properties: Mapping[str, str] | None = None
    """Extra attributes given when dead-lettering; merged into the attributes read from the DLQ."""


@dataclass(slots=True, eq=False)
class Group:
    """The messages of one session id, in order, plus its lock and state."""

    key: str
    pending: deque[Record] = field(default_factory=deque)
    in_flight: int = 0
    lock: SessionLock | None = None
    state: bytes | None = None
    queued_seq: int | None = None

    @property
    def free(self) -> bool:
        return self.in_flight == 0 and self.lock is None

    def insert(self, record: Record) -> None:
        """Put ``record`` back at its place in sequence order (usually the front)."""
        index = 0
        for index, other in enumerate(self.pending):  # noqa: B007
            if other.seq > record.seq:
                break
        else:
            self.pending.append(record)
            return
        self.pending.insert(index, record)


class Entity:
    """A queue (or a dead-letter queue) and everything in it."""

    def __init__(
        self,
        name: str,
        *,
        grouping: bool,
        lock_duration: float,
        session_lock_duration: float,
        max_delivery_count: int | None,
        dead_letter: Entity | None = None,
    ) -> None:
        self.name = name
        self.grouping = grouping
        self.lock_duration = lock_duration
        self.session_lock_duration = session_lock_duration
        self.max_delivery_count = max_delivery_count
        self.dead_letter_entity = dead_letter
        self.records: dict[int, Record] = {}
        self.groups: dict[str, Group] = {}
        self.in_flight: dict[str, Record] = {}
        self.ready_plain: list[tuple[int, Record]] = []
        self.ready_groups: list[tuple[int, str]] = []
        self._delayed: list[tuple[float, int, Record]] = []
        self._locks: list[tuple[float, int, Record]] = []
        self._session_locks: list[tuple[float, int, SessionLock]] = []
        self._scheduled: list[tuple[float, int, Message]] = []
        self._expiring: list[tuple[float, int, Record]] = []
        self._seq = itertools.count(1)
        self._tiebreak = itertools.count()
        self._changed = asyncio.Event()

    # -- size and inspection ------------------------------------------------

    @property
    def is_dead_letter(self) -> bool:
        return self.dead_letter_entity is None

    @property
    def size(self) -> int:
        """Messages held, scheduled ones included (what ``max_queue_size`` bounds)."""
        return len(self.records) + len(self._scheduled)

    @property
    def scheduled_count(self) -> int:
        return len(self._scheduled)

    def pending_records(self) -> Iterator[Record]:
        return (r for r in self.records.values() if r.state is RecordState.PENDING)

    # -- change notification ------------------------------------------------

    def notify(self) -> None:
        """Wake every waiter; they re-check under the new state."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, now: float, deadline: float, clock_deadline: float) -> None:
        """Sleep until something changes, the next timed event is due, or ``deadline``.

        ``deadline`` is in event-loop time; ``clock_deadline`` is the same
        point in clock time, and the earliest timed event is compared to it.
        """
        loop = asyncio.get_running_loop()
        wait = deadline - loop.time()
        due = self.next_due()
        if due is not None and due < clock_deadline:
            wait = min(wait, max(0.0, due - now))
        if wait <= 0:
            return
        await wait_for_event(self._changed, wait)

    def next_due(self) -> float | None:
        """Clock time of the earliest scheduled, delayed or lock-expiry event."""
        times = [
            heap[0][0]
            for heap in (
                self._scheduled,
                self._delayed,
                self._locks,
                self._session_locks,
                self._expiring,
            )
            if heap
        ]
        return min(times) if times else None

    # -- time ----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Apply every time-driven change that is due at ``now``."""
        changed = False
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, message = heapq.heappop(self._scheduled)
            self.enqueue(message, now)
            changed = True
        while self._delayed and self._delayed[0][0] <= now:
            _, _, record = heapq.heappop(self._delayed)
            if record.state is RecordState.PENDING:
                self._make_ready(record)
                changed = True
        while self._locks and self._locks[0][0] <= now:
            until, _, record = heapq.heappop(self._locks)
            if _lock_entry_live(until, record):
                self.release(record, now, delay=None)
                changed = True
        while self._expiring and self._expiring[0][0] <= now:
            _, _, record = heapq.heappop(self._expiring)
            # a message in flight is not expired under its consumer; it is checked again
            # (and dead-lettered) if it comes back
            if record.state is RecordState.PENDING and self.expire_if_due(record, now):
                changed = True
        while self._session_locks and self._session_locks[0][0] <= now:
            until, _, lock = heapq.heappop(self._session_locks)
            if not lock.lost and not lock.closed and lock.locked_until == until:
                lock.lost = True
                self.unlock(lock, now)
                changed = True
        if changed:
            self.notify()

    # -- the life of a record -----------------------------------------------

    def schedule(self, message: Message, at: float) -> None:
        heapq.heappush(self._scheduled, (at, next(self._tiebreak), message))

    def enqueue(self, message: Message, now: float) -> Record:
        group = None
        if self.grouping and message.session_id is not None:
            group = self.groups.get(message.session_id)
            if group is None:
                group = self.groups[message.session_id] = Group(message.session_id)
        ttl = message.time_to_live
        record = Record(
            message=message,
            seq=next(self._seq),
            enqueued_at=now,
            group=group,
            expires_at=None if ttl is None or self.is_dead_letter else now + ttl,
        )
        self.records[record.seq] = record
        if record.expires_at is not None:
            heapq.heappush(self._expiring, (record.expires_at, record.seq, record))
        if group is not None:
            group.pending.append(record)
            if len(group.pending) == 1:
                self._offer_group(group)
        else:
            self._make_ready(record)
        return record

    def take_next(self, now: float, *, plain: bool, groups: bool) -> Record | None:
        """Pop the oldest deliverable record among plain records and/or free group heads.

        Expired records met on the way are dead-lettered.
        """
        while True:
            plain_top = self.ready_plain[0][0] if plain and self.ready_plain else None
            group_top = self.ready_groups[0][0] if groups and self.ready_groups else None
            if plain_top is None and group_top is None:
                return None
            if group_top is None or (plain_top is not None and plain_top < group_top):
                _, record = heapq.heappop(self.ready_plain)
                record.in_ready = False
                if record.state is not RecordState.PENDING or record.visible_at > now:
                    continue
            else:
                _, key = heapq.heappop(self.ready_groups)
                group = self.groups.get(key)
                if group is None or group.queued_seq != group_top:
                    continue
                group.queued_seq = None
                if not group.free or not group.pending:
                    continue
                record = group.pending[0]
                if record.seq != group_top or record.visible_at > now:
                    continue
            if self.expire_if_due(record, now):
                continue
            return record

    def take_group(self, now: float) -> Group | None:
        """Pop the free group whose head is oldest (for "next available session")."""
        while self.ready_groups:
            seq, key = heapq.heappop(self.ready_groups)
            group = self.groups.get(key)
            if group is None or group.queued_seq != seq:
                continue
            group.queued_seq = None
            if group.free and group.pending and group.pending[0].visible_at <= now:
                return group
        return None

    def deliver(self, record: Record, now: float, holder: SessionLock | None = None) -> None:
        """Lock ``record`` for a consumer (``holder`` for session receivers)."""
        group = record.group
        if group is not None:
            if group.pending and group.pending[0] is record:
                group.pending.popleft()
            else:
                group.pending.remove(record)
            group.in_flight += 1
        if not self.is_dead_letter:  # DLQ reads do not count as deliveries
            record.delivery_count += 1
        record.first_delivered_at = record.first_delivered_at or now
        record.delivered_at = now
        record.state = RecordState.IN_FLIGHT
        record.token = secrets.token_hex(16)
        record.holder = holder
        self.in_flight[record.token] = record
        if holder is None:
            record.locked_until = now + self.lock_duration
            heapq.heappush(self._locks, (record.locked_until, record.seq, record))
        else:
            record.locked_until = holder.locked_until

    def deliver_more_of_group(self, record: Record, now: float) -> Record | None:
        """The next record of ``record``'s group if it can go out in the same batch."""
        group = record.group
        while group is not None and group.pending and group.lock is None:
            candidate = group.pending[0]
            if candidate.visible_at > now:
                return None
            if self.expire_if_due(candidate, now):
                continue
            return candidate
        return None

    def renew(self, record: Record, now: float) -> float:
        record.locked_until = now + self.lock_duration
        heapq.heappush(self._locks, (record.locked_until, record.seq, record))
        return record.locked_until

    def complete(self, record: Record) -> None:
        self._settle(record)
        self._compact_locks()
        self._forget(record)
        if record.group is not None:
            self._after_group_change(record.group)
        self.notify()

    def _compact_locks(self) -> None:
        """Drop lock-expiry entries of settled (or renewed) records once they are most of
        the heap: a busy queue would otherwise keep every settled record for a lock time."""
        locks = self._locks
        if len(locks) > COMPACT_LOCKS_AT and len(locks) > 2 * len(self.in_flight):
            self._locks = [entry for entry in locks if _lock_entry_live(entry[0], entry[2])]
            heapq.heapify(self._locks)

    def release(self, record: Record, now: float, delay: float | None) -> None:
        """Put an in-flight record back (abandon or lock expiry), or dead-letter it."""
        self._settle(record)
        self._compact_locks()
        limit = self.max_delivery_count
        if limit is not None and record.delivery_count >= limit:
            self.move_to_dead_letter(
                record,
                MAX_DELIVERY_REASON,
                f"delivered {record.delivery_count} times without being completed",
            )
            return
        record.state = RecordState.PENDING
        record.visible_at = now + delay if delay else 0.0
        if record.group is not None:
            record.group.insert(record)
        if record.visible_at > now:
            heapq.heappush(self._delayed, (record.visible_at, record.seq, record))
        else:
            self._make_ready(record)
        if record.group is not None:
            self._after_group_change(record.group)
        self.notify()

    def dead_letter(
        self,
        record: Record,
        reason: str,
        description: str | None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Settle an in-flight record by moving it to the dead-letter entity."""
        self._settle(record)
        self.move_to_dead_letter(record, reason, description, properties)

    def move_to_dead_letter(
        self,
        record: Record,
        reason: str,
        description: str | None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Move ``record`` (pending or already settled) to the dead-letter entity."""
        target = self.dead_letter_entity
        assert target is not None, "a dead-letter queue has no dead-letter queue"
        if record.state is RecordState.PENDING and record.group is not None:
            record.group.pending.remove(record)
        self._forget(record)
        moved = target.enqueue(record.message, record.enqueued_at)
        moved.delivery_count = record.delivery_count
        moved.first_delivered_at = record.first_delivered_at
        moved.dead_letter_reason = reason
        moved.dead_letter_description = description
        moved.dead_letter_properties = dict(properties) if properties else None
        if record.group is not None:
            self._after_group_change(record.group)
        self.notify()
        target.notify()

    def remove_all(self) -> int:
        """Drop every stored message (purge); returns how many."""
        count = len(self.records)
        for record in list(self.records.values()):
            if record.state is RecordState.IN_FLIGHT:
                self._settle(record)
            self._forget(record)
        self.groups = {key: g for key, g in self.groups.items() if g.lock or g.state}
        for group in self.groups.values():
            group.pending.clear()
        self.ready_plain.clear()
        self.ready_groups.clear()
        self.notify()
        return count

    # -- sessions ------------------------------------------------------------

    def lock_group(self, group: Group, now: float) -> SessionLock:
        lock = SessionLock(group, secrets.token_hex(16), now + self.session_lock_duration)
        group.lock = lock
        heapq.heappush(self._session_locks, (lock.locked_until, next(self._tiebreak), lock))
        return lock

    def renew_session(self, lock: SessionLock, now: float) -> float:
        lock.locked_until = now + self.session_lock_duration
        heapq.heappush(self._session_locks, (lock.locked_until, next(self._tiebreak), lock))
        for record in self.in_flight.values():
            if record.holder is lock:
                record.locked_until = lock.locked_until
        return lock.locked_until

    def unlock(self, lock: SessionLock, now: float) -> None:
        """End a session hold: its unsettled messages go back, the group is free again."""
        group = lock.group
        held = [r for r in self.in_flight.values() if r.holder is lock]
        if group.lock is lock:
            group.lock = None
        for record in sorted(held, key=lambda r: r.seq, reverse=True):
            self.release(record, now, delay=None)
        self._after_group_change(group)
        self.notify()

    def group_for(self, key: str) -> Group:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key)
        return group

    def expire_if_due(self, record: Record, now: float) -> bool:
        """Dead-letter ``record`` if its time to live has passed; True if it did."""
        if record.expires_at is not None and record.expires_at <= now:
            if self.is_dead_letter:
                self._forget(record)
            else:
                self.move_to_dead_letter(
                    record, TTL_EXPIRED_REASON, "time to live passed before delivery"
                )
            return True
        return False

    # -- internals -------------------------------------------------------------

    def _settle(self, record: Record) -> None:
        if record.token is not None:
            self.in_flight.pop(record.token, None)
            record.token = None
        if record.state is RecordState.IN_FLIGHT and record.group is not None:
            record.group.in_flight -= 1
        record.holder = None
        record.state = RecordState.GONE

    def _forget(self, record: Record) -> None:
        record.state = RecordState.GONE
        self.records.pop(record.seq, None)

    def _make_ready(self, record: Record) -> None:
        if record.group is not None:
            self._offer_group(record.group)
        elif not record.in_ready:
            record.in_ready = True
            heapq.heappush(self.ready_plain, (record.seq, record))

    def _offer_group(self, group: Group) -> None:
        if group.free and group.pending:
            head = group.pending[0].seq
            if group.queued_seq != head:
                group.queued_seq = head
                heapq.heappush(self.ready_groups, (head, group.key))

    def _after_group_change(self, group: Group) -> None:
        if group.pending:
            self._offer_group(group)
        elif group.free and group.state is None:
            self.groups.pop(group.key, None)
