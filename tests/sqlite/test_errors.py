"""Files the provider must not use, and failures it must not hide: each gives a
QueueError naming the path and the problem, and nothing stored is lost or changed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import queue_runtime as qr
from queue_runtime.providers.sqlite import SCHEMA_VERSION, SqliteProvider, StorageFullError

from .conftest import OpenProvider

Q = qr.QueueName("jobs")


async def _make_database(open_provider: OpenProvider, path: Path) -> None:
    provider = open_provider(path=path)
    await provider.send(Q, [qr.Message(b"kept")])
    await provider.aclose()


async def test_a_file_of_garbage_is_refused_by_name_and_left_as_it_was(
    open_provider: OpenProvider, db_path: Path
) -> None:
    garbage = os.urandom(8192)
    await asyncio.to_thread(db_path.write_bytes, garbage)

    with pytest.raises(qr.ConfigurationError) as caught:
        await open_provider().send(Q, [qr.Message(b"lost?")])

    assert str(db_path) in str(caught.value)
    assert "not a usable SQLite database" in str(caught.value)
    assert caught.value.field == "sqlite.path"
    assert await asyncio.to_thread(db_path.read_bytes) == garbage


async def test_another_applications_database_is_refused(
    open_provider: OpenProvider, db_path: Path
) -> None:
    with sqlite3.connect(db_path) as other:
        other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    before = await asyncio.to_thread(db_path.read_bytes)

    with pytest.raises(qr.ConfigurationError) as caught:
        await open_provider().open()

    assert "another application" in str(caught.value)
    assert str(db_path) in str(caught.value)
    assert await asyncio.to_thread(db_path.read_bytes) == before


async def test_a_database_of_a_newer_schema_version_is_refused_unchanged(
    open_provider: OpenProvider, db_path: Path
) -> None:
    await _make_database(open_provider, db_path)
    with sqlite3.connect(db_path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(qr.ConfigurationError) as caught:
        await open_provider().receive(Q, 1, timeout=0.0)

    assert f"schema version {SCHEMA_VERSION + 1}, newer" in str(caught.value)
    assert str(db_path) in str(caught.value)
    with sqlite3.connect(db_path) as check:
        assert check.execute("SELECT count(*) FROM messages").fetchone() == (1,)


async def test_a_database_of_an_unknown_older_version_is_refused(
    open_provider: OpenProvider, db_path: Path
) -> None:
    await _make_database(open_provider, db_path)
    with sqlite3.connect(db_path) as older:
        older.execute("PRAGMA user_version = 0")

    with pytest.raises(qr.ConfigurationError, match="unknown schema version 0"):
        await open_provider().open()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process, even for root (which ignores modes:
    then the file is made immutable)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


async def test_a_read_only_file_gives_a_clear_error_and_stays_intact(
    open_provider: OpenProvider, db_path: Path
) -> None:
    await _make_database(open_provider, db_path)
    before = await asyncio.to_thread(db_path.read_bytes)

    with read_only(db_path), pytest.raises(qr.ConfigurationError) as caught:
        await open_provider().send(Q, [qr.Message(b"lost?")])

    assert str(db_path) in str(caught.value)
    assert "read-only" in str(caught.value)
    assert await asyncio.to_thread(db_path.read_bytes) == before


async def test_a_file_locked_beyond_busy_timeout_fails_transiently_and_then_works(
    open_provider: OpenProvider, db_path: Path
) -> None:
    await _make_database(open_provider, db_path)
    provider = open_provider(busy_timeout=0.2)
    await provider.open()
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # another process writing for a long time

    try:
        with pytest.raises(qr.OperationTimeoutError) as caught:
            await provider.send(Q, [qr.Message(b"waits")])
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert caught.value.transient
    assert str(db_path) in str(caught.value)
    assert "busy_timeout" in str(caught.value)
    await provider.send(Q, [qr.Message(b"now")])
    received = await provider.receive(Q, 10, timeout=0.1)
    assert [m.body for m in received] == [b"kept", b"now"]


async def test_a_full_disk_fails_the_send_and_harms_nothing_stored(
    open_provider: OpenProvider, db_path: Path
) -> None:
    provider = open_provider()
    stored = [qr.Message(f"stored-{i}".encode()) for i in range(20)]
    await provider.send(Q, stored)
    pages = await provider._call(
        "test", lambda: provider._store.db.execute("PRAGMA page_count").fetchone()[0]
    )
    # the file may not grow any more: as if the disk were full
    await provider._call(
        "test", lambda: provider._store.db.execute(f"PRAGMA max_page_count = {pages + 2}")
    )
    big = [qr.Message(os.urandom(60_000)) for _ in range(4)]

    with pytest.raises(StorageFullError) as caught:
        await provider.send(Q, big)

    assert isinstance(caught.value, qr.QueueError)
    assert not caught.value.transient
    assert str(db_path) in str(caught.value)
    assert await provider.stats(Q) == (20, 0, 0, 0)  # nothing of the failed batch
    received = await provider.receive(Q, 100, timeout=0.1)
    assert [m.body for m in received] == [m.body for m in stored]
    for message in received:  # and the provider goes on working
        await provider.complete(message.receipt)
    with sqlite3.connect(db_path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_queue_whose_creation_was_rolled_back_is_created_by_the_next_send(
    open_provider: OpenProvider,
) -> None:
    provider = open_provider()
    other = open_provider()  # another process: it knows only what is in the file
    await provider.send(Q, [qr.Message(b"first")])
    pages = await provider._call(
        "test", lambda: provider._store.db.execute("PRAGMA page_count").fetchone()[0]
    )
    await provider._call(
        "test", lambda: provider._store.db.execute(f"PRAGMA max_page_count = {pages + 2}")
    )
    fresh = qr.QueueName("fresh")
    with pytest.raises(StorageFullError):  # the queue's row goes with the failed send
        await provider.send(fresh, [qr.Message(os.urandom(60_000)) for _ in range(4)])
    await provider._call(
        "test", lambda: provider._store.db.execute("PRAGMA max_page_count = 1073741823")
    )

    await provider.send(fresh, [qr.Message(b"again")])

    assert (await other.queue_info(fresh)).depth == 1


async def test_a_missing_queue_is_named_when_queues_are_not_created(
    open_provider: OpenProvider,
) -> None:
    strict = open_provider(create_queues=False)

    with pytest.raises(qr.QueueNotFoundError) as caught:
        await strict.send(qr.QueueName("typo"), [qr.Message(b"x")])

    assert caught.value.queue == "typo"
    await strict.create_queue("typo")
    await strict.send(qr.QueueName("typo"), [qr.Message(b"x")])
    assert await strict.stats("typo") == (1, 0, 0, 0)


async def test_a_path_that_is_a_directory_is_refused(
    open_provider: OpenProvider, tmp_path: Path
) -> None:
    with pytest.raises(qr.ConfigurationError, match="is a directory"):
        await open_provider(path=tmp_path).open()


async def test_the_provider_shows_its_path_and_mode_but_no_secrets(db_path: Path) -> None:
    provider = SqliteProvider(qr.SqliteConfig(path=str(db_path)))

    assert repr(provider) == (
        f"SqliteProvider(id={provider.provider_id!r}, path={str(db_path)!r}, "
        "session_mode='emulated')"
    )
    await provider.aclose()
