"""The promises of a bot, checked on what a test kit recorded.

:func:`violations` reads a :class:`Record` (what was published, every probe
call, the queue and the bots' counters at the end) and says, in words, every
promise that was broken:

1. **Nothing is left**: no message waits, is scheduled or is locked.
2. **Nothing is lost**: a message that left the queue without being
   dead-lettered had a probe call that returned (handled at least once before it
   was completed). Checked for messages of the event types probes take.
3. **One at a time per session**: no call began while another call of the same
   session id was running in a bot that had not crashed.
4. **In order per session**: the messages of a session were first handled in
   the order they were published (scheduled messages are not ordered).
5. **Poison is bounded**: no call saw a delivery count above the queue's
   ``max_delivery_count``.
6. **Counters add up**, for every bot: received = completed + abandoned +
   dead-lettered + lost locks + settle failures + in flight.

Example:
    >>> from queue_runtime.bot import BotStats
    >>> from queue_runtime.providers.memory import QueueStats
    >>> from queue_runtime.testing.invariants import Published, Record, violations
    >>> from queue_runtime.testing.probes import Journal
    >>> record = Record(
    ...     published=[Published("m1", "s1", {"event_type": "push"})],
    ...     journal=Journal(),
    ...     probe_event_types=frozenset({"push"}),
    ...     event_type_attribute="event_type",
    ...     dead_lettered=frozenset(),
    ...     queue=QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0),
    ...     bots=[BotStats(received=1, completed=1)],
    ...     max_delivery_count=5,
    ... )
    >>> print(*violations(record))
    lost: 'm1' (session 's1') left the queue without being dead-lettered, but no handler call ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from queue_runtime.bot import BotStats
from queue_runtime.providers.memory import QueueStats
from queue_runtime.testing.probes import Journal

__all__ = ["Published", "Record", "violations"]

SHOW = 5
"""Examples listed per broken invariant."""


@dataclass(frozen=True, slots=True)
class Published:
    """A message the test published."""

    message_id: str
    session_id: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)
    scheduled: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """What a kit saw: the input to :func:`violations`.

    ``event_type_attribute`` is ``None`` when the bot routes with a function
    (then nothing says which messages probes took, and check 2 is skipped).
    """

    published: Sequence[Published]
    journal: Journal
    probe_event_types: frozenset[str]
    event_type_attribute: str | None
    dead_lettered: frozenset[str]
    queue: QueueStats
    bots: Sequence[BotStats]
    max_delivery_count: int


def violations(record: Record) -> list[str]:
    """Every broken invariant, one line each (an empty list: all kept)."""
    return [
        *_nothing_left(record),
        *_nothing_lost(record),
        *_one_at_a_time(record),
        *_in_order(record),
        *_bounded_deliveries(record),
        *_counters_add_up(record),
    ]


def _nothing_left(record: Record) -> list[str]:
    queue = record.queue
    if queue.active or queue.in_flight or queue.scheduled:
        return [
            f"not finished: {queue.active} message(s) waiting, {queue.in_flight} locked, "
            f"{queue.scheduled} scheduled"
        ]
    return []


def _nothing_lost(record: Record) -> list[str]:
    attribute = record.event_type_attribute
    if attribute is None:
        return []
    if record.queue.active or record.queue.in_flight or record.queue.scheduled:
        return []  # some may still be in the queue: reported as "not finished"
    returned = {c.message_id for c in record.journal.events if c.outcome == "returned"}
    lost = [
        p
        for p in record.published
        if p.attributes.get(attribute) in record.probe_event_types
        and p.message_id not in record.dead_lettered
        and p.message_id not in returned
    ]
    return [
        f"lost: {p.message_id!r} (session {p.session_id!r}) left the queue without being "
        "dead-lettered, but no handler call for it returned"
        for p in lost[:SHOW]
    ] + _more(len(lost), "lost message")


def _one_at_a_time(record: Record) -> list[str]:
    overlaps = record.journal.overlaps
    return [
        f"concurrent: {later!r} began while {running!r} of the same session was running"
        for running, later in overlaps[:SHOW]
    ] + _more(len(overlaps), "overlap")


def _in_order(record: Record) -> list[str]:
    position: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for p in record.published:
        if p.session_id is not None and not p.scheduled and p.message_id not in position:
            index = counts.get(p.session_id, 0)
            position[p.message_id] = (p.session_id, index)
            counts[p.session_id] = index + 1
    last: dict[str, tuple[int, str]] = {}
    seen: set[str] = set()
    broken = []
    for call in record.journal.events:
        if call.message_id in seen or call.message_id not in position:
            continue
        seen.add(call.message_id)
        session, index = position[call.message_id]
        before = last.get(session)
        if before is not None and before[0] > index:
            broken.append(
                f"out of order: in session {session!r}, {call.message_id!r} (published "
                f"#{index + 1}) was first handled after {before[1]!r} (published #{before[0] + 1})"
            )
        if before is None or index > before[0]:
            last[session] = (index, call.message_id)
    return broken[:SHOW] + _more(len(broken), "order violation")


def _bounded_deliveries(record: Record) -> list[str]:
    over = [c for c in record.journal.events if c.delivery_count > record.max_delivery_count]
    return [
        f"delivered too often: {c!r} (max_delivery_count is {record.max_delivery_count})"
        for c in over[:SHOW]
    ] + _more(len(over), "call over the delivery limit")


def _counters_add_up(record: Record) -> list[str]:
    broken = []
    for number, stats in enumerate(record.bots, start=1):
        accounted = (
            stats.completed
            + stats.abandoned
            + stats.dead_lettered
            + stats.lost_locks
            + stats.settle_failures
            + stats.in_flight
        )
        if stats.received != accounted:
            broken.append(
                f"counters: bot #{number} received {stats.received} messages but accounts "
                f"for {accounted}: {stats}"
            )
    return broken


def _more(count: int, what: str) -> list[str]:
    return [f"... and {count - SHOW} more {what}(s)"] if count > SHOW else []
