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

import contextlib
import itertools
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from queue_runtime.clock import to_datetime
from queue_runtime.config import SqliteConfig
from queue_runtime.errors import (
    InvalidReceiptError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
)
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage
from queue_runtime.provider import MAX_DELIVERY_REASON, TTL_EXPIRED_REASON

from .schema import open_database, translate

__all__ = ["Delivery", "SessionHold", "Store"]

_COLUMNS: Final = (
    "seq, session_id, message_id, body, attributes, correlation_id, content_type, "
    "time_to_live, enqueued_at, delivery_count, first_delivered_at, delivered_at, token, "
    "locked_until, dead_letter_reason, dead_letter_description, dead_letter_properties"
)
_RECEIPTS_PER_DELETE: Final = 200
"""Receipts completed by one statement (4 parameters each, within SQLite's oldest limit
of 999 parameters)."""
_TTL_DESCRIPTION: Final = "time to live passed before delivery"
_BLOCKED: Final = (
    "SELECT session_id FROM messages WHERE queue = :queue AND dead = 0 "
    "AND token IS NOT NULL AND session_id IS NOT NULL "
    "UNION SELECT session_id FROM sessions WHERE queue = :queue "
    "AND token IS NOT NULL AND locked_until > :now"
)
"""Sessions that may not hand out a message now (read after a sweep): one of theirs
is in flight, or a consumer holds the session lock."""


@dataclass(slots=True, eq=False)
class SessionHold:
    """This process's hold on a session: the lock token stored in the file."""

    queue: QueueName
    session_id: str
    token: str
    locked_until: float
    closed: bool = False
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a receipt's ``native`` carries: the row, which queue half, the session hold."""

    seq: int
    dead: bool
    hold: SessionHold | None


def _encode(mapping: Mapping[str, str] | None) -> bytes | None:
    return orjson.dumps(dict(mapping)) if mapping else None


def _decode(blob: bytes | None) -> dict[str, str]:
    return orjson.loads(blob) if blob else {}


class _Times(dict[float, datetime]):
    """Datetimes of Unix times, each made once (a batch's messages share most of theirs)."""

    def __missing__(self, timestamp: float) -> datetime:
        moment = self[timestamp] = to_datetime(timestamp)
        return moment


class _Unsettled(Exception):
    """A batch of completions that did not all go through (rolled back, then tried one by one)."""


class Store:
    """The database file behind one provider, used from one thread."""

    def __init__(self, config: SqliteConfig, path: str, provider_id: str) -> None:
        self.config = config
        self.path = path
        self.provider_id = provider_id
        self._connection: sqlite3.Connection | None = None
        self._known_queues: set[str] = set()
        self._seen_version = -1
        self._quiet_until: dict[str, float] = {}
        """Per queue, the clock time before which a sweep has nothing to do (from the
        last sweep and this connection's writes since); valid for ``_quiet_version``."""
        self._quiet_version = -1
        self._grouped = False

    # -- connection and transactions ----------------------------------------------

    def call(self, operation: str, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` with SQLite errors turned into :class:`QueueError`."""
        try:
            return function(*args)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, operation) from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = open_database(
                self.path,
                busy_timeout=self.config.busy_timeout,
                synchronous=self.config.synchronous,
            )
        return self._connection

    def open(self) -> None:
        """Open the file now (it is otherwise opened by the first call)."""
        self.db  # noqa: B018

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def run_group(
        self, jobs: Sequence[tuple[str, Callable[..., Any], tuple[Any, ...]]]
    ) -> list[tuple[bool, Any]]:
        """Run several calls in one transaction; per call ``(True, result)`` or
        ``(False, error)``, all known once the transaction is committed.

        Each call's writes are a savepoint: a call that raises leaves nothing
        behind and the others go on. If SQLite itself fails (a full disk, a
        lost lock), all is rolled back and each call is run again on its own,
        so each caller sees its own outcome."""
        if len(jobs) == 1:
            return [self._outcome(*jobs[0])]
        try:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return [self._outcome(*job) for job in jobs]
        outcomes: list[tuple[bool, Any]] = []
        self._grouped = True
        try:
            for _, function, args in jobs:
                try:
                    outcomes.append((True, function(*args)))
                except sqlite3.Error:
                    raise
                except Exception as error:  # its savepoint was rolled back
                    outcomes.append((False, error))
            self._grouped = False
            db.execute("COMMIT")
        except BaseException as error:
            self._grouped = False
            self._quiet_until.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not isinstance(error, sqlite3.Error):
                raise
            return [self._outcome(*job) for job in jobs]
        return outcomes

    def _outcome(
        self, operation: str, function: Callable[..., Any], args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        try:
            return True, self.call(operation, function, *args)
        except Exception as error:
            return False, error

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        if self._grouped:  # inside run_group's transaction
            db.execute("SAVEPOINT call")
            try:
                yield db
            except BaseException:
                self._quiet_until.clear()
                db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
                raise
            db.execute("RELEASE call")
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            self._quiet_until.clear()  # a sweep that is rolled back did not happen
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _due_by(self, queue: str, moment: float) -> None:
        """This connection wrote something time makes due at ``moment``."""
        quiet = self._quiet_until.get(queue)
        if quiet is not None and moment < quiet:
            self._quiet_until[queue] = moment

    def changed_elsewhere(self) -> bool:
        """Did another connection commit since this was last asked (or since a claim)?"""
        version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        changed = version != self._seen_version
        self._seen_version = version
        return changed

    def _note_version(self, db: sqlite3.Connection) -> None:
        self._seen_version = int(db.execute("PRAGMA data_version").fetchone()[0])

    # -- queues ---------------------------------------------------------------------

    def _queue(self, db: sqlite3.Connection, queue: str, now: float, operation: str) -> None:
        """Make sure ``queue`` exists (creating it when allowed), inside a write."""
        if queue in self._known_queues:
            return
        if self.config.create_queues:
            db.execute("INSERT OR IGNORE INTO queues VALUES (?, ?)", (queue, now))
        elif db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is None:
            raise QueueNotFoundError(queue, operation=operation)
        self._known_queues.add(queue)

    def _exists(self, db: sqlite3.Connection, queue: str) -> bool:
        if queue in self._known_queues:
            return True
        return db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is not None

    def create_queue(self, queue: str, now: float) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO queues VALUES (?, ?)", (queue, now))
        self._known_queues.add(queue)

    def delete_queue(self, queue: str) -> None:
        with self._write() as db:
            for table, column in (
                ("messages", "queue"),
                ("scheduled", "queue"),
                ("sessions", "queue"),
                ("queues", "name"),
            ):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))
        self._known_queues.discard(queue)
        self._quiet_until.pop(queue, None)

    # -- sending ----------------------------------------------------------------------

    def send(self, queue: str, messages: Sequence[Message], now: float) -> None:
        now_rows = []
        later_rows = []
        for m in messages:
            attributes = _encode(m.attributes)
            at = m.scheduled_enqueue_time
            due = at.timestamp() if at is not None else None
            if due is not None and due > now:
                later_rows.append(
                    (
                        queue,
                        due,
                        m.session_id,
                        m.message_id,
                        m.body,
                        attributes,
                        m.correlation_id,
                        m.content_type,
                        m.time_to_live,
                    )
                )
            else:
                ttl = m.time_to_live
                now_rows.append(
                    (
                        queue,
                        m.session_id,
                        m.message_id,
                        m.body,
                        attributes,
                        m.correlation_id,
                        m.content_type,
                        ttl,
                        now,
                        None if ttl is None else now + ttl,
                    )
                )
        with self._write() as db:
            self._queue(db, queue, now, "send")
            if now_rows:
                expiring = [row[9] for row in now_rows if row[9] is not None]
                if expiring:
                    self._due_by(queue, min(expiring))
                db.executemany(
                    "INSERT INTO messages (queue, session_id, message_id, body, attributes, "
                    "correlation_id, content_type, time_to_live, enqueued_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    now_rows,
                )
            if later_rows:
                self._due_by(queue, min(row[1] for row in later_rows))
                db.executemany(
                    "INSERT INTO scheduled (queue, due, session_id, message_id, body, "
                    "attributes, correlation_id, content_type, time_to_live) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    later_rows,
                )

    # -- time -------------------------------------------------------------------------

    def sweep(self, db: sqlite3.Connection, queue: str, now: float) -> None:
        """Apply what time made due in ``queue``: scheduled messages, run-out locks, TTLs.

        Only reads ``PRAGMA data_version`` while nothing can be due (see the module)."""
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._quiet_version:
            self._quiet_until.clear()  # another connection committed: its rows count too
            self._quiet_version = version
        elif now < self._quiet_until.get(queue, now):
            return
        db.execute(
            "INSERT INTO messages (queue, session_id, message_id, body, attributes, "
            "correlation_id, content_type, time_to_live, enqueued_at, expires_at) "
            "SELECT queue, session_id, message_id, body, attributes, correlation_id, "
            "content_type, time_to_live, due, due + time_to_live FROM scheduled "
            "WHERE queue = ? AND due <= ? ORDER BY due, id",
            (queue, now),
        )
        db.execute("DELETE FROM scheduled WHERE queue = ? AND due <= ?", (queue, now))
        db.execute(
            "UPDATE messages SET dead = 1, token = NULL, holder = NULL, locked_until = NULL, "
            "visible_at = 0, dead_letter_reason = ?, "
            "dead_letter_description = 'delivered ' || delivery_count || "
            "' times without being completed' "
            "WHERE queue = ? AND dead = 0 AND token IS NOT NULL AND locked_until <= ? "
            "AND delivery_count >= ?",
            (MAX_DELIVERY_REASON, queue, now, self.config.max_delivery_count),
        )
        db.execute(
            "UPDATE messages SET token = NULL, holder = NULL, locked_until = NULL, "
            "visible_at = 0 WHERE queue = ? AND dead IN (0, 1) AND token IS NOT NULL "
            "AND locked_until <= ?",
            (queue, now),
        )
        db.execute(
            "UPDATE messages SET dead = 1, visible_at = 0, dead_letter_reason = ?, "
            "dead_letter_description = ? WHERE queue = ? AND expires_at IS NOT NULL "
            "AND expires_at <= ? AND dead = 0 AND token IS NULL",
            (TTL_EXPIRED_REASON, _TTL_DESCRIPTION, queue, now),
        )
        row = db.execute(
            "SELECT min(t) FROM ("
            " SELECT min(locked_until) AS t FROM messages WHERE queue = ?1 AND dead = 0"
            "  AND token IS NOT NULL"
            " UNION ALL SELECT min(locked_until) FROM messages WHERE queue = ?1 AND dead = 1"
            "  AND token IS NOT NULL"
            " UNION ALL SELECT min(due) FROM scheduled WHERE queue = ?1"
            " UNION ALL SELECT * FROM (SELECT expires_at FROM messages WHERE queue = ?1"
            "  AND expires_at IS NOT NULL AND dead = 0 AND token IS NULL"
            "  ORDER BY expires_at LIMIT 1))",
            (queue,),
        ).fetchone()
        self._quiet_until[queue] = float("inf") if row[0] is None else float(row[0])

    def _next_due(self, db: sqlite3.Connection, queue: str, dead: int, now: float) -> float | None:
        """When time next changes what can be handed out of ``queue`` (clock seconds)."""
        row = db.execute(
            "SELECT min(t) FROM ("
            " SELECT min(visible_at) AS t FROM messages WHERE queue = ?1 AND dead = ?2"
            "  AND visible_at > 0 AND token IS NULL AND visible_at > ?3"
            " UNION ALL SELECT min(locked_until) FROM messages WHERE queue = ?1"
            "  AND dead = ?2 AND token IS NOT NULL"
            " UNION ALL SELECT min(due) FROM scheduled WHERE queue = ?1"
            " UNION ALL SELECT min(locked_until) FROM sessions WHERE queue = ?1"
            "  AND token IS NOT NULL AND locked_until > ?3)",
            (queue, dead, now),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    # -- handing out messages ---------------------------------------------------------

    def _blocked_sessions(self, db: sqlite3.Connection, queue: str, now: float) -> set[str]:
        """Sessions with a message in flight or a live session lock (after a sweep)."""
        return {row[0] for row in db.execute(_BLOCKED, {"queue": queue, "now": now})}

    def claim(
        self, queue: str, limit: int, now: float, *, dead: bool, groups: bool
    ) -> tuple[list[ReceivedMessage], float | None]:
        """Lock up to ``limit`` deliverable messages; ``(messages, next due time)``.

        With ``groups`` (emulated sessions), a session's messages go out only
        from its head, never while one of them is in flight or the session is
        locked; consecutive messages of one session may share a batch.
        Without, session messages are left for ``accept_session``.
        """
        operation = "receive_dead_letters" if dead else "receive"
        half = 1 if dead else 0
        with self._write() as db:
            self._queue(db, queue, now, operation)
            self.sweep(db, queue, now)
            if dead:
                seqs = [
                    row[0]
                    for row in db.execute(
                        "SELECT seq FROM messages WHERE queue = ? AND dead = 1 AND token IS NULL "
                        "AND visible_at <= ? ORDER BY seq LIMIT ?",
                        (queue, now, limit),
                    )
                ]
            elif not groups:
                seqs = [
                    row[0]
                    for row in db.execute(
                        "SELECT seq FROM messages WHERE queue = ? AND dead = 0 AND token IS NULL "
                        "AND session_id IS NULL AND visible_at <= ? ORDER BY seq LIMIT ?",
                        (queue, now, limit),
                    )
                ]
            else:
                seqs = self._grouped_candidates(db, queue, limit, now)
            if not seqs:
                due = self._next_due(db, queue, half, now)
                self._note_version(db)
                return [], due
            rows = self._deliver(db, queue, seqs, now, dead=dead, holder=None, until=None)
        times = _Times()
        return [self._received(queue, row, dead, None, times) for row in rows], None

    def _grouped_candidates(
        self, db: sqlite3.Connection, queue: str, limit: int, now: float
    ) -> list[int]:
        """The in-memory provider's batch, in its order: the oldest deliverable message
        (plain, or the head of a free session) first; after a session's head, the
        session's next waiting messages while they are visible; then the next oldest."""
        seen: set[str] = set()
        chosen: list[int] = []
        cursor = db.execute(
            "SELECT seq, session_id, visible_at FROM messages "
            "WHERE queue = :queue AND dead = 0 AND token IS NULL "
            f"AND (session_id IS NULL OR session_id NOT IN ({_BLOCKED})) ORDER BY seq",
            {"queue": queue, "now": now},
        )
        try:
            for seq, session_id, visible_at in cursor:
                if len(chosen) >= limit:
                    break
                if session_id is None:
                    if visible_at <= now:
                        chosen.append(seq)
                    continue
                if session_id in seen:
                    continue
                seen.add(session_id)  # its head: taken, or (delayed) keeping the rest waiting
                if visible_at > now:
                    continue
                chosen.append(seq)
                if len(chosen) < limit:
                    chosen.extend(
                        self._followers(db, queue, session_id, seq, limit - len(chosen), now)
                    )
        finally:
            cursor.close()
        return chosen

    @staticmethod
    def _followers(
        db: sqlite3.Connection, queue: str, session_id: str, after: int, limit: int, now: float
    ) -> list[int]:
        """The waiting messages of a session after ``after`` that are visible, in order."""
        followers = []
        for seq, visible_at in db.execute(
            "SELECT seq, visible_at FROM messages INDEXED BY messages_session "
            "WHERE queue = ? AND session_id = ? AND dead = 0 AND token IS NULL AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (queue, session_id, after, limit),
        ):
            if visible_at > now:
                break
            followers.append(seq)
        return followers

    def _deliver(
        self,
        db: sqlite3.Connection,
        queue: str,
        seqs: list[int],
        now: float,
        *,
        dead: bool,
        holder: str | None,
        until: float | None,
    ) -> list[tuple[Any, ...]]:
        token = secrets.token_hex(12)
        locked_until = until if until is not None else now + self.config.lock_duration
        self._due_by(queue, locked_until)
        counted = 0 if dead else 1
        marks = ",".join("?" * len(seqs))
        db.execute(
            "UPDATE messages SET token = ?, locked_until = ?, holder = ?, "
            "delivery_count = delivery_count + ?, "
            f"first_delivered_at = coalesce(first_delivered_at, ?), delivered_at = ? "
            f"WHERE seq IN ({marks})",
            [token, locked_until, holder, counted, now, now, *seqs],
        )
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE seq IN ({marks})",
            seqs,
        ).fetchall()
        order = {seq: position for position, seq in enumerate(seqs)}
        rows.sort(key=lambda row: order[row[0]])
        return rows

    def _received(
        self,
        queue: str,
        row: tuple[Any, ...],
        dead: bool,
        hold: SessionHold | None,
        times: _Times,
    ) -> ReceivedMessage:
        """The message of a row; ``times`` caches datetimes across a batch (its messages
        share their delivery time and lock expiry, and mostly their enqueue time)."""
        (
            seq,
            session_id,
            message_id,
            body,
            attributes,
            correlation_id,
            content_type,
            time_to_live,
            enqueued_at,
            delivery_count,
            first_delivered_at,
            delivered_at,
            token,
            locked_until,
            reason,
            description,
            properties,
        ) = row
        peek = token is None
        delivered = delivered_at if delivered_at is not None else enqueued_at
        receipt = ReceiptHandle(
            provider_id=self.provider_id,
            queue=QueueName(queue),
            token=f"peek-{seq}" if peek else token,
            locked_until=times[locked_until if locked_until is not None else delivered],
            dead_letter=dead,
            native=None if peek else Delivery(seq, dead, hold),
        )
        merged = _decode(attributes)
        if properties:
            merged.update(_decode(properties))
        return ReceivedMessage(
            body=bytes(body),
            attributes=merged,
            session_id=session_id,
            correlation_id=correlation_id,
            message_id=message_id,
            content_type=content_type,
            time_to_live=time_to_live,
            delivery_count=delivery_count,
            enqueued_at=times[enqueued_at],
            first_delivered_at=times[
                first_delivered_at if first_delivered_at is not None else delivered
            ],
            delivered_at=times[delivered],
            receipt=receipt,
            sequence_number=seq,
            dead_letter_reason=reason,
            dead_letter_description=description,
        )

    def unclaim(self, receipts: Sequence[ReceiptHandle]) -> None:
        """Give back messages a cancelled receive took but never handed over.

        Their delivery does not count: the consumer never saw them.
        """
        rows = []
        for receipt in receipts:
            native = receipt.native
            if isinstance(native, Delivery):
                rows.append((0 if native.dead else 1, native.seq, receipt.token))
                self._quiet_until.pop(receipt.queue, None)  # waiting again: a TTL may be due
        if not rows:
            return
        with self._write() as db:
            db.executemany(
                "UPDATE messages SET token = NULL, holder = NULL, locked_until = NULL, "
                "visible_at = 0, delivery_count = delivery_count - ? "
                "WHERE seq = ? AND token = ?",
                rows,
            )

    # -- settling -------------------------------------------------------------------

    def _check_hold(
        self, db: sqlite3.Connection, hold: SessionHold, now: float, operation: str
    ) -> None:
        """Raise unless ``hold`` still holds its session's lock."""
        if hold.lost:
            raise SessionLockLostError(
                f"the lock on session {hold.session_id!r} was lost",
                operation=operation,
                queue=hold.queue,
            )
        row = db.execute(
            "SELECT token, locked_until FROM sessions WHERE queue = ? AND session_id = ?",
            (hold.queue, hold.session_id),
        ).fetchone()
        if row is None or row[0] != hold.token or row[1] is None or row[1] <= now:
            hold.lost = True
            raise SessionLockLostError(
                f"the lock on session {hold.session_id!r} was lost (it expired or another "
                "consumer holds it now)",
                operation=operation,
                queue=hold.queue,
            )

    def _settling(
        self, db: sqlite3.Connection, receipt: ReceiptHandle, now: float, operation: str
    ) -> tuple[Delivery, int]:
        """The delivery a receipt stands for and its delivery count, or the right error."""
        native = receipt.native
        if receipt.provider_id != self.provider_id or not isinstance(native, Delivery):
            raise InvalidReceiptError(
                "the receipt was not issued by this provider", operation=operation
            )
        if native.hold is not None:
            if native.hold.closed and not native.hold.lost:
                raise InvalidReceiptError(
                    f"session {native.hold.session_id!r} was closed before the message was settled",
                    operation=operation,
                    queue=receipt.queue,
                )
            self._check_hold(db, native.hold, now, operation)
        row = db.execute(
            "SELECT delivery_count FROM messages WHERE seq = ? AND queue = ? AND dead = ? "
            "AND token = ? AND locked_until > ?",
            (native.seq, receipt.queue, 1 if native.dead else 0, receipt.token, now),
        ).fetchone()
        if row is None:
            raise InvalidReceiptError(
                "the lock expired or the message was already settled",
                operation=operation,
                queue=receipt.queue,
            )
        return native, int(row[0])

    def complete(self, receipt: ReceiptHandle, now: float) -> None:
        with self._write() as db:
            error = self._delete(db, receipt, now)
        if error is not None:
            raise error

    def complete_many(
        self, receipts: Sequence[ReceiptHandle], now: float
    ) -> list[QueueError | None]:
        """Complete each receipt in one transaction; per receipt ``None`` or its error.

        The common case (plain receipts of this provider, every lock still held)
        is one ``DELETE`` per ``_RECEIPTS_PER_DELETE`` receipts (each statement is a
        round trip for the GIL, which the event loop wants too); if any of them
        fails, the transaction is rolled back and each receipt is settled on its
        own to tell which one failed."""
        rows: list[Any] = []
        for receipt in receipts:
            native = receipt.native
            if (
                receipt.provider_id != self.provider_id
                or not isinstance(native, Delivery)
                or native.hold is not None
            ):
                break
            rows.append((native.seq, receipt.queue, 1 if native.dead else 0, receipt.token))
        else:
            with contextlib.suppress(_Unsettled), self._write() as db:
                step = _RECEIPTS_PER_DELETE
                for start in range(0, len(rows), step):
                    chunk = rows[start : start + step]
                    values = ",".join(["(?, ?, ?, ?)"] * len(chunk))
                    deleted = db.execute(
                        "DELETE FROM messages WHERE seq IN (SELECT m.seq "
                        f"FROM (VALUES {values}) AS r JOIN messages AS m ON m.seq = r.column1 "
                        "AND m.queue = r.column2 AND m.dead = r.column3 AND m.token = r.column4 "
                        "WHERE m.locked_until > ?)",
                        [*itertools.chain.from_iterable(chunk), now],
                    ).rowcount
                    if deleted != len(chunk):
                        raise _Unsettled
                return [None] * len(rows)
        with self._write() as db:
            return [self._delete(db, receipt, now) for receipt in receipts]

    def _delete(
        self, db: sqlite3.Connection, receipt: ReceiptHandle, now: float
    ) -> QueueError | None:
        """Complete one delivery: ``None``, or the error that kept it (nothing changed)."""
        native = receipt.native
        if (
            receipt.provider_id == self.provider_id
            and isinstance(native, Delivery)
            and native.hold is None
        ):
            # the common case in one statement: the row goes if the lock is still this one
            deleted = db.execute(
                "DELETE FROM messages WHERE seq = ? AND queue = ? AND dead = ? AND token = ? "
                "AND locked_until > ?",
                (native.seq, receipt.queue, 1 if native.dead else 0, receipt.token, now),
            ).rowcount
            if deleted:
                return None
        try:
            native, _ = self._settling(db, receipt, now, "complete")
        except QueueError as error:
            return error
        db.execute("DELETE FROM messages WHERE seq = ?", (native.seq,))
        return None

    def abandon(self, receipt: ReceiptHandle, delay: float | None, now: float) -> None:
        with self._write() as db:
            native, count = self._settling(db, receipt, now, "abandon")
            self._release(db, native.seq, native.dead, count, now + delay if delay else 0.0)

    def _release(
        self, db: sqlite3.Connection, seq: int, dead: bool, count: int, visible_at: float
    ) -> None:
        self._quiet_until.clear()  # waiting again: its time to live may have passed
        if not dead and count >= self.config.max_delivery_count:
            self._to_dead_letters(
                db,
                seq,
                MAX_DELIVERY_REASON,
                f"delivered {count} times without being completed",
                None,
            )
            return
        db.execute(
            "UPDATE messages SET token = NULL, holder = NULL, locked_until = NULL, "
            "visible_at = ? WHERE seq = ?",
            (visible_at, seq),
        )

    @staticmethod
    def _to_dead_letters(
        db: sqlite3.Connection,
        seq: int,
        reason: str,
        description: str | None,
        properties: Mapping[str, str] | None,
    ) -> None:
        db.execute(
            "UPDATE messages SET dead = 1, token = NULL, holder = NULL, locked_until = NULL, "
            "visible_at = 0, dead_letter_reason = ?, dead_letter_description = ?, "
            "dead_letter_properties = ? WHERE seq = ?",
            (reason, description, _encode(properties), seq),
        )

    def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None,
        properties: Mapping[str, str] | None,
        now: float,
    ) -> None:
        with self._write() as db:
            native, _ = self._settling(db, receipt, now, "dead_letter")
            if native.dead:
                raise InvalidReceiptError(
                    "the message is already in the dead-letter queue",
                    operation="dead_letter",
                    queue=receipt.queue,
                )
            self._to_dead_letters(db, native.seq, reason, description, properties)

    def renew_lock(self, receipt: ReceiptHandle, now: float) -> float:
        with self._write() as db:
            native, _ = self._settling(db, receipt, now, "renew_lock")
            if native.hold is not None:
                return self._renew_session(db, native.hold, now)
            until = now + self.config.lock_duration
            db.execute("UPDATE messages SET locked_until = ? WHERE seq = ?", (until, native.seq))
            return until

    # -- sessions -------------------------------------------------------------------

    def accept(
        self, queue: str, session_id: str | None, now: float
    ) -> tuple[SessionHold | None, float | None]:
        """Lock the named session, or the free one whose head is oldest.

        ``(hold, None)`` on success, ``(None, next due time)`` when no session
        is free (next available only). A named session that is locked, or has a
        message in flight, raises :class:`SessionLockedError`.
        """
        with self._write() as db:
            self._queue(db, queue, now, "accept_session")
            self.sweep(db, queue, now)
            if session_id is not None:
                if self._session_busy(db, queue, session_id, now):
                    raise SessionLockedError(
                        f"session {session_id!r} is locked by another consumer",
                        operation="accept_session",
                        queue=queue,
                    )
                chosen = str(session_id)
            else:
                available = self._free_session(db, queue, now)
                if available is None:
                    due = self._next_due(db, queue, 0, now)
                    self._note_version(db)
                    return None, due
                chosen = available
            hold = SessionHold(
                QueueName(queue),
                chosen,
                secrets.token_hex(12),
                now + self.config.session_lock_duration,
            )
            db.execute(
                "INSERT INTO sessions (queue, session_id, token, locked_until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (queue, session_id) DO UPDATE SET "
                "token = excluded.token, locked_until = excluded.locked_until",
                (queue, chosen, hold.token, hold.locked_until),
            )
        return hold, None

    @staticmethod
    def _session_busy(db: sqlite3.Connection, queue: str, session_id: str, now: float) -> bool:
        """Does ``session_id`` have a message in flight, or a live session lock?"""
        row = db.execute(
            "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_session "
            "WHERE queue = :queue AND session_id = :session AND dead = 0 "
            "AND token IS NOT NULL) "
            "OR EXISTS (SELECT 1 FROM sessions WHERE queue = :queue AND session_id = :session "
            "AND token IS NOT NULL AND locked_until > :now)",
            {"queue": queue, "session": session_id, "now": now},
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def _free_session(db: sqlite3.Connection, queue: str, now: float) -> str | None:
        """The session whose head is the oldest deliverable message, if any is free."""
        delayed: set[str] = set()
        cursor = db.execute(
            "SELECT session_id, visible_at FROM messages WHERE queue = :queue AND dead = 0 "
            f"AND token IS NULL AND session_id IS NOT NULL AND session_id NOT IN ({_BLOCKED}) "
            "ORDER BY seq",
            {"queue": queue, "now": now},
        )
        try:
            for session_id, visible_at in cursor:
                if session_id in delayed:
                    continue
                if visible_at <= now:
                    return str(session_id)
                delayed.add(session_id)  # its head waits out a delay: not available yet
        finally:
            cursor.close()
        return None

    def session_claim(
        self, hold: SessionHold, limit: int, now: float
    ) -> tuple[list[ReceivedMessage], float | None]:
        """The session's next waiting messages, in order, locked under the session lock."""
        with self._write() as db:
            self._check_hold(db, hold, now, "session_receive")
            self.sweep(db, hold.queue, now)
            seqs = []
            for seq, visible_at in db.execute(
                # without statistics the planner would walk every waiting message
                "SELECT seq, visible_at FROM messages INDEXED BY messages_session "
                "WHERE queue = ? AND session_id = ? AND dead = 0 AND token IS NULL "
                "ORDER BY seq LIMIT ?",
                (hold.queue, hold.session_id, limit),
            ):
                if visible_at > now:
                    break
                seqs.append(seq)
            if not seqs:
                due = self._next_due(db, hold.queue, 0, now)
                self._note_version(db)
                return [], due
            rows = self._deliver(
                db, hold.queue, seqs, now, dead=False, holder=hold.token, until=hold.locked_until
            )
        times = _Times()
        return [self._received(hold.queue, row, False, hold, times) for row in rows], None

    def renew_session(self, hold: SessionHold, now: float) -> float:
        with self._write() as db:
            self._check_hold(db, hold, now, "renew_session_lock")
            return self._renew_session(db, hold, now)

    def _renew_session(self, db: sqlite3.Connection, hold: SessionHold, now: float) -> float:
        until = now + self.config.session_lock_duration
        db.execute(
            "UPDATE sessions SET locked_until = ? WHERE queue = ? AND session_id = ?",
            (until, hold.queue, hold.session_id),
        )
        db.execute(
            "UPDATE messages SET locked_until = ? WHERE holder = ? AND token IS NOT NULL",
            (until, hold.token),
        )
        hold.locked_until = until
        return until

    def get_state(self, hold: SessionHold, now: float) -> bytes | None:
        with self._write() as db:
            self._check_hold(db, hold, now, "get_state")
            row = db.execute(
                "SELECT state FROM sessions WHERE queue = ? AND session_id = ?",
                (hold.queue, hold.session_id),
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def set_state(self, hold: SessionHold, state: bytes | None, now: float) -> None:
        with self._write() as db:
            self._check_hold(db, hold, now, "set_state")
            db.execute(
                "UPDATE sessions SET state = ? WHERE queue = ? AND session_id = ?",
                (state, hold.queue, hold.session_id),
            )

    def release_session(self, hold: SessionHold, now: float) -> None:
        """End ``hold``: its unsettled messages are waiting again at once."""
        with self._write() as db:
            row = db.execute(
                "SELECT token, locked_until FROM sessions WHERE queue = ? AND session_id = ?",
                (hold.queue, hold.session_id),
            ).fetchone()
            if row is None or row[0] != hold.token:
                hold.lost = True
                return  # someone else holds it now: nothing of ours is left
            if row[1] is None or row[1] <= now:
                hold.lost = True  # it ran out before the close; its messages did too
            held = db.execute(
                "SELECT seq, delivery_count FROM messages WHERE holder = ? AND token IS NOT NULL "
                "ORDER BY seq",
                (hold.token,),
            ).fetchall()
            for seq, count in held:
                self._release(db, seq, False, count, 0.0)
            db.execute(
                "UPDATE sessions SET token = NULL, locked_until = NULL "
                "WHERE queue = ? AND session_id = ?",
                (hold.queue, hold.session_id),
            )
            db.execute(
                "DELETE FROM sessions WHERE queue = ? AND session_id = ? AND state IS NULL",
                (hold.queue, hold.session_id),
            )

    # -- the dead-letter queue and counts ---------------------------------------------

    def _sweep_if_due(self, queue: str, now: float) -> None:
        """Sweep, but take the write lock only when something is due (reads stay reads)."""
        due = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM scheduled WHERE queue = ?1 AND due <= ?2) "
            "OR EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND dead IN (0, 1) "
            "AND token IS NOT NULL AND locked_until <= ?2) "
            "OR EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND expires_at IS NOT NULL "
            "AND expires_at <= ?2 AND dead = 0 AND token IS NULL)",
            (queue, now),
        ).fetchone()[0]
        if due:
            with self._write() as db:
                self.sweep(db, queue, now)

    def _readable(self, queue: str, operation: str) -> bool:
        """Does ``queue`` exist? Raises when it does not and queues are not created."""
        if self._exists(self.db, queue):
            return True
        if not self.config.create_queues:
            raise QueueNotFoundError(queue, operation=operation)
        return False

    def peek_dead_letters(self, queue: str, limit: int, now: float) -> list[ReceivedMessage]:
        if not self._readable(queue, "peek_dead_letters"):
            return []
        self._sweep_if_due(queue, now)
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE queue = ? AND dead = 1 ORDER BY seq LIMIT ?",
            (queue, limit),
        ).fetchall()
        times = _Times()
        return [
            self._received(queue, (*row[:12], None, *row[13:]), True, None, times) for row in rows
        ]

    def purge_dead_letters(self, queue: str, now: float) -> int:
        with self._write() as db:
            self._queue(db, queue, now, "purge_dead_letters")
            return db.execute(
                "DELETE FROM messages WHERE queue = ? AND dead = 1", (queue,)
            ).rowcount

    def counts(self, queue: str, now: float) -> tuple[int, int, int, int] | None:
        """``(waiting, in flight, scheduled, dead-lettered)``, or None for an unknown queue."""
        if not self._readable(queue, "queue_info"):
            return None
        self._sweep_if_due(queue, now)
        row = self.db.execute(
            "SELECT"
            " (SELECT count(*) FROM messages WHERE queue = ?1 AND dead = 0 AND token IS NULL),"
            " (SELECT count(*) FROM messages WHERE queue = ?1 AND dead = 0"
            "  AND token IS NOT NULL),"
            " (SELECT count(*) FROM scheduled WHERE queue = ?1),"
            " (SELECT count(*) FROM messages WHERE queue = ?1 AND dead = 1)",
            (queue,),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])
