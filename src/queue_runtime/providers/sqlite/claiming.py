"""Handing out messages: claiming deliverable rows under a fresh lock token, in the
in-memory provider's order, and giving back a claim nobody received."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

from queue_runtime.messages import QueueName, ReceiptHandle, ReceivedMessage

from .rows import BLOCKED, COLUMNS, Delivery, SessionHold, Times, decode
from .sweeping import Sweeping

__all__ = ["Claiming"]


class Claiming(Sweeping):
    """Claims of plain messages (and of emulated sessions' heads and followers)."""

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
        return self._received(queue, rows, dead, None), None

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
            f"AND (session_id IS NULL OR session_id NOT IN ({BLOCKED})) ORDER BY seq",
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
            f"SELECT {COLUMNS} FROM messages WHERE seq IN ({marks})",
            seqs,
        ).fetchall()
        order = {seq: position for position, seq in enumerate(seqs)}
        rows.sort(key=lambda row: order[row[0]])
        return rows

    def _received(
        self,
        queue: str,
        rows: list[tuple[Any, ...]],
        dead: bool,
        hold: SessionHold | None,
    ) -> list[ReceivedMessage]:
        """The messages of rows (peeked ones have no token). Their datetimes are made
        once per distinct time (a batch's messages share their delivery time and lock
        expiry, and mostly their enqueue time); what all share is looked up once."""
        times = Times()
        name = QueueName(queue)
        provider_id = self.provider_id
        messages = []
        for (
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
        ) in rows:
            peek = token is None
            delivered = delivered_at if delivered_at is not None else enqueued_at
            receipt = ReceiptHandle(
                provider_id=provider_id,
                queue=name,
                token=f"peek-{seq}" if peek else token,
                locked_until=times[locked_until if locked_until is not None else delivered],
                dead_letter=dead,
                native=None if peek else Delivery(seq, dead, hold),
            )
            merged = decode(attributes)
            if properties:
                merged.update(decode(properties))
            messages.append(
                ReceivedMessage(
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
            )
        return messages

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
