"""The store's connection and transactions: one ``sqlite3`` connection, used from the
provider's worker thread, and group commit (several calls in one transaction, a
savepoint each)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from queue_runtime.config import SqliteConfig

from .schema import open_database, translate

__all__ = ["Transactions"]


class Transactions:
    """The connection and its transactions: the base of :class:`~.store.Store`."""

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
            self._forget()
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

    def _forget(self) -> None:
        """What this connection remembers of the file, after a rollback undid some of it."""
        self._quiet_until.clear()  # a sweep that is rolled back did not happen
        self._known_queues.clear()  # nor did the creation of a queue

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        if self._grouped:  # inside run_group's transaction
            db.execute("SAVEPOINT call")
            try:
                yield db
            except BaseException:
                self._forget()
                db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
                raise
            db.execute("RELEASE call")
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            self._forget()
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
