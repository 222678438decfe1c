"""The synchronous core of the sqlite provider: every read and write of the file.

A :class:`Store` owns one ``sqlite3`` connection and is only ever used from
the provider's worker thread. Each method is one short transaction (writes
begin with ``BEGIN IMMEDIATE``, so the write lock is taken up front and a
claim can never be raced by another process between its read and its
write). Times are Unix seconds passed in by the caller (the provider reads
its clock on the event loop), so a ``ManualClock`` drives lock expiry here
as it does in memory.

The life of a row in ``messages``: waiting (``token IS NULL``, deliverable
from ``visible_at``), locked (``token`` set, until ``locked_until``; by a
session lock when ``holder`` is set), gone (deleted on complete), or moved
to the DLQ (``dead = 1``). Time-driven changes (a lock that ran out, a
scheduled message that is due, a time to live that passed) are applied by
:meth:`Store.sweep` at the start of every transaction that hands out
messages or counts them, so they hold across processes without a
background task: every process sees the same rows and the same clock. A
sweep remembers when the next such change can come (the earliest lock
expiry, scheduled time or time to live in the file), and the next one runs
its statements only once that time has come, or another connection has
committed since (``PRAGMA data_version``), or this one made something due
sooner or gave messages back.
"""

from __future__ import annotations

from .dead_letters import DeadLetterTools
from .rows import Delivery, SessionHold

__all__ = ["Delivery", "SessionHold", "Store"]


class Store(DeadLetterTools):
    """The database file behind one provider, used from one thread.

    Its parts, each a module and a base class, are built one on the other:
    :mod:`.transactions` (the connection, group commit), :mod:`.queues` (queues,
    sends), :mod:`.sweeping` (what time makes due), :mod:`.claiming` (handing
    messages out), :mod:`.sessions`, :mod:`.settling` and :mod:`.dead_letters`
    (peek, purge, counts).
    """
