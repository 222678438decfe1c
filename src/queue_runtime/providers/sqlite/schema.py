"""The file: its schema and version, opening it safely, and what SQLite errors mean.

A queue-runtime database is marked by ``PRAGMA application_id`` (``QRDB``) and
carries its schema version in ``PRAGMA user_version``. Opening refuses, with
an error naming the path and the problem, anything it cannot use without
risk: a file that is not SQLite (or is damaged), another application's
database, a schema version this code does not know (newer or older), a
read-only file or directory. A new (empty) file gets the schema in one
transaction, so a half-made schema is never left behind.

Example:
    >>> SCHEMA_VERSION
    1
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from queue_runtime.errors import ConfigurationError, OperationTimeoutError, QueueError

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "StorageFullError", "open_database", "translate"]

APPLICATION_ID: Final = 0x51524442  # "QRDB"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
) WITHOUT ROWID;

-- one row per stored message, dead = 1 in the queue's dead-letter queue.
-- token IS NULL: waiting (visible from visible_at), token set: locked until locked_until,
-- by a session lock when holder is set.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes BLOB,
    correlation_id TEXT,
    content_type TEXT,
    time_to_live REAL,
    enqueued_at REAL NOT NULL,
    visible_at REAL NOT NULL DEFAULT 0,
    expires_at REAL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    first_delivered_at REAL,
    delivered_at REAL,
    token TEXT,
    locked_until REAL,
    holder TEXT,
    dead_letter_reason TEXT,
    dead_letter_description TEXT,
    dead_letter_properties BLOB
);
CREATE INDEX messages_waiting ON messages (queue, dead, seq) WHERE token IS NULL;
CREATE INDEX messages_locked ON messages (queue, dead, locked_until) WHERE token IS NOT NULL;
CREATE INDEX messages_session ON messages (queue, session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX messages_delayed ON messages (queue, dead, visible_at) WHERE visible_at > 0;
CREATE INDEX messages_expiring ON messages (queue, expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX messages_holder ON messages (holder) WHERE holder IS NOT NULL;

-- messages sent with a scheduled enqueue time, until it comes
CREATE TABLE scheduled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    due REAL NOT NULL,
    session_id TEXT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes BLOB,
    correlation_id TEXT,
    content_type TEXT,
    time_to_live REAL
);
CREATE INDEX scheduled_due ON scheduled (queue, due);

-- session locks (token, locked_until) and session state, a row without either is deleted
CREATE TABLE sessions (
    queue TEXT NOT NULL,
    session_id TEXT NOT NULL,
    token TEXT,
    locked_until REAL,
    state BLOB,
    PRIMARY KEY (queue, session_id)
) WITHOUT ROWID;
"""


class StorageFullError(QueueError):
    """The database file cannot grow: the disk (or ``max_page_count``) is full.

    Nothing of the failed call was stored, and nothing stored before is harmed;
    the call can be repeated once there is room.
    """


def translate(exc: sqlite3.Error, path: str, operation: str | None) -> QueueError:
    """The :class:`QueueError` for an SQLite error, naming the file and the problem."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    where = f"SQLite queue database {path!r}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return OperationTimeoutError(
            f"{where} stayed locked by another connection beyond sqlite.busy_timeout ({exc})",
            operation=operation,
        )
    if name == "SQLITE_FULL":
        return StorageFullError(
            f"{where} is full: no room on the disk (or max_page_count reached); "
            "nothing of this call was stored",
            operation=operation,
        )
    if name.startswith("SQLITE_READONLY"):
        return ConfigurationError(
            f"{where} is read-only ({exc}); the provider needs to write the file, its "
            "-wal and -shm files and their directory",
            field="sqlite.path",
        )
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT"):
        return ConfigurationError(
            f"{where} is not a usable SQLite database ({exc}): it is damaged or another "
            "kind of file; nothing was changed in it",
            field="sqlite.path",
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return ConfigurationError(f"cannot open {where} ({exc})", field="sqlite.path")
    return QueueError(f"{where}: {exc}", operation=operation)


def open_database(path: str, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, checked and ready for use.

    The connection is in autocommit mode: callers open their own short
    transactions (``BEGIN IMMEDIATE`` for writes).
    """
    directory = Path(path).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the directory of SQLite queue database {path!r}: {exc.strerror or exc}",
            field="sqlite.path",
        ) from exc
    if os.path.isdir(path):
        raise ConfigurationError(
            f"SQLite queue database {path!r} is a directory, not a file", field="sqlite.path"
        )
    try:
        connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "open") from exc
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _check_or_create(connection, path)
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigurationError(
                f"SQLite queue database {path!r} cannot use WAL mode (journal mode is {mode!r})",
                field="sqlite.path",
            )
        connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except sqlite3.Error as exc:
        connection.close()
        raise translate(exc, path, "open") from exc
    except QueueError:
        connection.close()
        raise
    return connection


def _check_or_create(connection: sqlite3.Connection, path: str) -> None:
    application_id, version = _marks(connection)
    if application_id == 0 and version == 0:
        connection.execute("BEGIN IMMEDIATE")
        try:
            application_id, version = _marks(connection)  # another process may have won
            if application_id == 0 and version == 0:
                tables = connection.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
                if tables:
                    raise ConfigurationError(
                        f"{path!r} is an SQLite database of another application "
                        f"({tables} tables, no queue-runtime mark); refusing to use it",
                        field="sqlite.path",
                    )
                for statement in _SCHEMA.split(";"):  # executescript would commit first
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                application_id, version = APPLICATION_ID, SCHEMA_VERSION
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    if application_id != APPLICATION_ID:
        raise ConfigurationError(
            f"{path!r} is not a queue-runtime database (SQLite application_id "
            f"{application_id:#x}, expected {APPLICATION_ID:#x}); refusing to use it",
            field="sqlite.path",
        )
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"SQLite queue database {path!r} has schema version {version}, newer than "
            f"this queue-runtime knows ({SCHEMA_VERSION}): upgrade queue-runtime; the file "
            "was not changed",
            field="sqlite.path",
        )
    if version != SCHEMA_VERSION:
        raise ConfigurationError(
            f"SQLite queue database {path!r} has unknown schema version {version} "
            f"(this queue-runtime knows version {SCHEMA_VERSION}); the file was not changed",
            field="sqlite.path",
        )


def _marks(connection: sqlite3.Connection) -> tuple[int, int]:
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    return int(application_id), int(version)
