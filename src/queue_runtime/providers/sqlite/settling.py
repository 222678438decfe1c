"""Settling deliveries: complete (one or many in one transaction), abandon, dead-letter,
renew a lock; each checks that the receipt's lock still holds."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final

from queue_runtime.errors import InvalidReceiptError, QueueError
from queue_runtime.messages import ReceiptHandle

from .rows import Delivery
from .sessions import Sessions

__all__ = ["Settling"]

_RECEIPTS_PER_DELETE: Final = 200
"""Receipts completed by one statement (4 parameters each, within SQLite's oldest limit
of 999 parameters)."""


class _Unsettled(Exception):
    """A batch of completions that did not all go through (rolled back, then tried one by one)."""


class Settling(Sessions):
    """Complete, abandon, dead-letter and renew."""

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
