"""Tools that read a queue without receiving from it: peeking at and purging the
dead-letter queue, counting messages."""

from __future__ import annotations

from queue_runtime.errors import QueueNotFoundError
from queue_runtime.messages import ReceivedMessage

from .rows import COLUMNS
from .settling import Settling

__all__ = ["DeadLetterTools"]


class DeadLetterTools(Settling):
    """Peek, purge and counts."""

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
            f"SELECT {COLUMNS} FROM messages WHERE queue = ? AND dead = 1 ORDER BY seq LIMIT ?",
            (queue, limit),
        ).fetchall()
        return self._received(queue, [(*row[:12], None, *row[13:]) for row in rows], True, None)

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
