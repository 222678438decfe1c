"""The sqlite provider: the bot against a hand-written sqlite3 loop, sends, and processes.

Every run uses a fresh database file in a temporary directory on the machine's
disk, at the provider's defaults (WAL, ``synchronous=FULL``: one fsync per
committed transaction, ``busy_timeout`` 10 s). Rows:

* **bot vs hand-written loop**: 1,000 sessions x 20 messages, a no-op handler.
  The baseline is the loop a user would write instead of the runtime, in an
  asyncio program, with the bot's batching and the provider's guarantees, so
  that the ratio measures the runtime and the provider, not a different
  design. Its own minimal table (seq, session id, body, attributes, lock
  token, lock-until, delivery count; an index of waiting rows and one of lock
  expiries), with the provider's pragmas (WAL, the same ``synchronous`` and
  ``busy_timeout``). Every SQLite call runs on one worker thread that owns
  the connection, awaited from the event loop with ``run_in_executor`` (an
  asyncio program must not block its loop; the provider does the same).
  Repeatedly: one ``BEGIN IMMEDIATE`` transaction releases the locks that
  ran out, selects the 100 oldest waiting rows (``CLAIM``: the bot's receiver
  asks for ``max_batch_size``, 100, and gets 100 here) and locks each with a
  token of its own and ``now + lock_duration``, counting the delivery; on
  the loop, each message's attributes are decoded and its ``event_type``
  read (the no-op handler, routed as the bot routes); then the 100 are
  deleted in transactions of 40 receipts (``COMPLETE``: the bot's
  completion requests hold 36-45 receipts on average at 2,000 in flight;
  the row's detail prints the same run's figure), each
  ``DELETE ... WHERE seq = ? AND token = ? AND locked_until > ?`` (a lost
  lock must not delete: peek-lock, not delete-on-read), with
  ``executemany``, the rows gone checked against the receipts. One consumer
  that settles a batch before claiming the next keeps per-session order by
  construction, and it does nothing it does not need: no sweeps of TTLs or
  schedules, no session index, no datetimes. The bot runs with
  ``receive_wait`` 0.05 s and ``max_in_flight`` 2,000, as in ``bench/bot.py``;
  both are timed from the start of consuming (the bot: its start) to the last
  settle. Target (issue #15): ≥ 0.5 x the loop and ≥ 3,000 msg/s.
* **send_messages**: 20,000 messages in one ``client.send_messages`` call (the
  client splits it into batches of ``max_batch_size``, 100: one transaction
  each), against raw ``executemany`` inserts in transactions of 100 into the
  minimal table. Target: ≥ 20,000 msg/s.
* **three bot processes on one file** against one, same 20,000 messages:
  each process opens the file and says it is ready; the clock starts when all
  are told to go and stops when the queue is empty (polled every 20 ms).

huey's and persist-queue's SQLite queues are measured side by side with the bot
on this provider in ``bench/peers.py`` (the tools a user would pick instead).

Run: ``.venv/bin/python -m bench sqlite`` (part of ``python -m bench``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import orjson

import queue_runtime as qr
from bench.harness import Row, interleaved, report, save
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.sqlite import SqliteProvider

SESSIONS = 1_000
PER_SESSION = 20
TOTAL = SESSIONS * PER_SESSION
QUEUE = "bench"
CLAIM = 100
COMPLETE = 40
PROCESSES = 3
PROCESS_TIMEOUT = 300.0
_receipts_per_request: list[float] = []
"""Per bot run, the receipts its completion requests held on average."""


class NoOp(Handler):
    event_types = ("bench",)

    async def handle(self, event: Event) -> None:
        return None


def config(path: Path) -> qr.SqliteConfig:
    return qr.SqliteConfig(path=str(path))


def _messages() -> list[qr.Message]:
    return [
        qr.Message(b"{}", attributes={"event_type": "bench"}, session_id=f"o/r/pull/{s}")
        for _ in range(PER_SESSION)
        for s in range(SESSIONS)
    ]


@contextmanager
def _files() -> Iterator[Callable[[], Path]]:
    """Fresh database paths in a temporary directory on the machine's disk."""
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as directory:
        count = 0

        def fresh() -> Path:
            nonlocal count
            count += 1
            return Path(directory) / f"queues-{count}.db"

        yield fresh


async def _client(path: Path) -> qr.QueueClient:
    return await qr.create_client(qr.QueueConfig(provider=config(path)))


async def _filled(path: Path) -> None:
    async with await _client(path) as client:
        await client.send_messages(QUEUE, _messages())


# -- the hand-written loop ---------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    """A connection with the provider's pragmas (read from its config)."""
    settings = config(path)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout * 1000)}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {settings.synchronous.upper()}")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "session_id TEXT, body BLOB, attributes BLOB, token TEXT, locked_until REAL, "
        "delivery_count INTEGER NOT NULL DEFAULT 0)"
    )
    connection.execute("CREATE INDEX IF NOT EXISTS waiting ON messages (seq) WHERE token IS NULL")
    connection.execute(
        "CREATE INDEX IF NOT EXISTS locked ON messages (locked_until) WHERE token IS NOT NULL"
    )
    return connection


def _rows() -> list[tuple[str | None, bytes, bytes]]:
    return [(m.session_id, m.body, orjson.dumps(m.attributes)) for m in _messages()]


def _raw_fill(path: Path) -> None:
    connection = _connect(path)
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO messages (session_id, body, attributes) VALUES (?, ?, ?)", _rows()
        )
    connection.close()


Claimed = tuple[int, str, str | None, bytes, bytes]
"""seq, lock token, session id, body, attributes."""


def _claim(connection: sqlite3.Connection, limit: int, lock_duration: float) -> list[Claimed]:
    """One transaction: locks that ran out are released, then the oldest waiting rows are
    locked, each with its own token until ``now + lock_duration``, their delivery counted."""
    now = time.time()
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "UPDATE messages SET token = NULL, locked_until = NULL "
            "WHERE token IS NOT NULL AND locked_until <= ?",
            (now,),
        )
        rows = connection.execute(
            "SELECT seq, session_id, body, attributes FROM messages WHERE token IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        claimed = [(row[0], secrets.token_hex(12), *row[1:]) for row in rows]
        connection.executemany(
            "UPDATE messages SET token = ?, locked_until = ?, "
            "delivery_count = delivery_count + 1 WHERE seq = ?",
            [(row[1], now + lock_duration, row[0]) for row in claimed],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return claimed


def _delete(connection: sqlite3.Connection, receipts: list[tuple[int, str]]) -> int:
    """One transaction: each row goes if its lock is still this token's; the count gone."""
    now = time.time()
    connection.execute("BEGIN IMMEDIATE")
    try:
        cursor = connection.executemany(
            "DELETE FROM messages WHERE seq = ? AND token = ? AND locked_until > ?",
            [(seq, token, now) for seq, token in receipts],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return cursor.rowcount


async def hand_written(path: Path) -> int:
    """Claim, handle, delete in batches, until nothing is waiting; the messages handled.

    What a user of an asyncio program writes instead of the runtime: the SQLite
    calls run on one worker thread that owns the connection, awaited from the
    event loop."""
    loop = asyncio.get_running_loop()
    lock_duration = config(path).lock_duration
    done = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand-written") as thread:
        connection = await loop.run_in_executor(thread, _connect, path)
        try:
            while claimed := await loop.run_in_executor(
                thread, _claim, connection, CLAIM, lock_duration
            ):
                for row in claimed:  # the no-op handler, routed by event type as the bot does
                    _ = orjson.loads(row[4]).get("event_type")
                for start in range(0, len(claimed), COMPLETE):
                    receipts = [(row[0], row[1]) for row in claimed[start : start + COMPLETE]]
                    gone = await loop.run_in_executor(thread, _delete, connection, receipts)
                    if gone != len(receipts):
                        raise RuntimeError(f"{len(receipts) - gone} locks were lost")
                done += len(claimed)
        finally:
            await loop.run_in_executor(thread, connection.close)
    return done


def baseline_run(runner: asyncio.Runner, fresh: Callable[[], Path]) -> float:
    path = fresh()
    _raw_fill(path)
    started = time.perf_counter()
    done = runner.run(hand_written(path))
    elapsed = time.perf_counter() - started
    assert done == TOTAL, done
    return TOTAL / elapsed


# -- the bot ------------------------------------------------------------------------------


async def _bot_consume(path: Path) -> float:
    async with await _client(path) as client:
        started = time.perf_counter()
        async with Bot(client, QUEUE, [NoOp], max_in_flight=2_000, receive_wait=0.05) as bot:
            while bot.stats().completed < TOTAL:  # noqa: ASYNC110 - polling is the measurement
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - started
            completions = bot._completions  # how the bot batched: the baseline's COMPLETE
            if completions is not None and completions.requests:
                _receipts_per_request.append(TOTAL / completions.requests)
    return TOTAL / elapsed


def bot_run(runner: asyncio.Runner, fresh: Callable[[], Path]) -> float:
    path = fresh()
    runner.run(_filled(path))
    return runner.run(_bot_consume(path))


# -- sends ----------------------------------------------------------------------------------


async def _send(path: Path, messages: list[qr.Message]) -> float:
    async with await _client(path) as client:
        await client.send_messages(QUEUE, messages[:1])  # open the file, create the queue
        started = time.perf_counter()
        await client.send_messages(QUEUE, messages)
        return len(messages) / (time.perf_counter() - started)


def raw_sends(path: Path) -> float:
    connection = _connect(path)
    rows = _rows()
    batch = config(path).max_batch_size
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO messages (session_id, body, attributes) VALUES (?, ?, ?)",
            rows[start : start + batch],
        )
        connection.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - started)
    connection.close()
    return rate


# -- processes ------------------------------------------------------------------------------


def processes_run(runner: asyncio.Runner, fresh: Callable[[], Path], count: int) -> float:
    """Messages per second of ``count`` bot processes sharing one filled file."""
    path = fresh()
    runner.run(_filled(path))
    bots = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.sqlite_bot", str(path), QUEUE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for bot in bots:
            assert bot.stdout is not None
            if bot.stdout.readline().strip() != "ready":
                raise RuntimeError("a bot process did not start")
        started = time.perf_counter()
        for bot in bots:
            assert bot.stdin is not None
            bot.stdin.write("go\n")
            bot.stdin.flush()
        elapsed = runner.run(_until_empty(path, started))
    finally:
        for bot in bots:
            bot.terminate()
        for bot in bots:
            bot.wait(timeout=30)
    return TOTAL / elapsed


async def _until_empty(path: Path, started: float) -> float:
    provider = SqliteProvider(config(path))
    try:
        while True:
            info = await provider.queue_info(qr.QueueName(QUEUE))
            if not info.depth and not info.in_flight:
                return time.perf_counter() - started
            if time.perf_counter() - started > PROCESS_TIMEOUT:
                raise RuntimeError(f"bots did not empty the queue in {PROCESS_TIMEOUT} s")
            await asyncio.sleep(0.02)
    finally:
        await provider.aclose()


def measure() -> list[Row]:
    rows: list[Row] = []
    with _files() as fresh, asyncio.Runner() as runner:
        consume = interleaved(
            {
                "hand-written": lambda: baseline_run(runner, fresh),
                "bot": lambda: bot_run(runner, fresh),
            }
        )
        messages = _messages()
        sends = interleaved(
            {
                "raw": lambda: raw_sends(fresh()),
                "send_messages": lambda: runner.run(_send(fresh(), messages)),
            }
        )
        shared = interleaved(
            {
                "one": lambda: processes_run(runner, fresh, 1),
                "three": lambda: processes_run(runner, fresh, PROCESSES),
            }
        )
    ratio = consume["bot"] / consume["hand-written"]
    rows.append(
        Row(
            f"sqlite: bot, {SESSIONS:,} sessions x {PER_SESSION}, no-op, vs hand-written loop",
            consume["bot"],
            "m/s",
            baseline=consume["hand-written"],
            ratio=ratio,
            target=">= 0.5 x loop and >= 3,000 msg/s",
            met=ratio >= 0.5 and consume["bot"] >= 3_000,
        )
    )
    if _receipts_per_request:  # to compare with the loop's COMPLETE
        rows[-1].detail = {
            "bot_receipts_per_complete": round(statistics.median(_receipts_per_request), 1),
            "loop_receipts_per_complete": COMPLETE,
        }
    rows.append(
        Row(
            f"sqlite: send_messages, {TOTAL:,} in one call, vs raw inserts of 100",
            sends["send_messages"],
            "m/s",
            baseline=sends["raw"],
            ratio=sends["send_messages"] / sends["raw"],
            target=">= 20,000 msg/s",
            met=sends["send_messages"] >= 20_000,
        )
    )
    rows.append(
        Row(
            f"sqlite: {PROCESSES} bot processes on one file vs one process, total",
            shared["three"],
            "m/s",
            baseline=shared["one"],
            ratio=shared["three"] / shared["one"],
        )
    )
    rows[-1].detail = {"synchronous": config(Path("x")).synchronous, "cpus": os.cpu_count() or 0}
    return rows


def main() -> list[Row]:
    load = os.getloadavg()
    rows = measure()
    report("sqlite provider (median of 5 interleaved runs)", rows)
    print(f"load average at start {load}, at end {os.getloadavg()} (2 cores, shared)")
    print(f"\nwrote {save('sqlite', rows)}")
    return rows


if __name__ == "__main__":
    main()
