"""Session locks as rows of ``sessions``: accepting a session, receiving from it,
renewing and releasing it, its state."""

from __future__ import annotations

import secrets
import sqlite3

from queue_runtime.errors import SessionLockedError, SessionLockLostError
from queue_runtime.messages import QueueName, ReceivedMessage

from .claiming import Claiming
from .rows import BLOCKED, SessionHold

__all__ = ["Sessions"]


class Sessions(Claiming):
    """Session locks, session receives and session state."""

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
            f"AND token IS NULL AND session_id IS NOT NULL AND session_id NOT IN ({BLOCKED}) "
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
        return self._received(hold.queue, rows, False, hold), None

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
