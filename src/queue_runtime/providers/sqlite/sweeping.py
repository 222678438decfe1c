"""Time-driven changes of rows (see :mod:`.store`): scheduled messages coming due,
locks running out, times to live passing, and messages given back to waiting or to
the dead-letter queue after ``max_delivery_count`` deliveries."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from queue_runtime.provider import MAX_DELIVERY_REASON, TTL_EXPIRED_REASON

from .queues import Queues
from .rows import encode

__all__ = ["Sweeping"]

_TTL_DESCRIPTION: Final = "time to live passed before delivery"


class Sweeping(Queues):
    """Applying what time made due, and giving messages back."""

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
            (reason, description, encode(properties), seq),
        )
