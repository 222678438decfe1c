"""Queues and what goes into them: creating and deleting queues, sending."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from queue_runtime.errors import QueueNotFoundError
from queue_runtime.messages import Message

from .rows import encode
from .transactions import Transactions

__all__ = ["Queues"]


class Queues(Transactions):
    """Queue rows and sends."""

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
            attributes = encode(m.attributes)
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
