"""The bot side by side with the tools a user would pick instead.

**SQS** (a moto server on 127.0.0.1 in its own process, counting the requests it
answers: ``bench/moto_counted.py``). Every run consumes ``MESSAGES`` no-op
messages, pre-published (in batches of 10, before the consumer starts) to a
fresh queue, by one consumer process started for that run
(``bench/peer_sqs.py``, ``bench/peer_celery.py``):

* ``raw``: aiobotocore receive 10 (long poll 1 s) → no-op → ``DeleteMessageBatch``: the limit;
* ``bot``: queue-runtime's ``Bot`` on the SQS provider, defaults but ``receive_wait`` 1 s;
* ``celery solo`` / ``celery threads``: a Celery worker on kombu's SQS transport
  (``--pool=solo``, and ``--pool=threads -c 8``), acks late, prefetch multiplier 10,
  long poll 1 s without a pause after an empty poll;
* ``dramatiq``: a dramatiq worker (8 threads) on ``dramatiq_sqs.SQSBroker``.

Each tool's messages are its own envelope (Celery's task message, dramatiq's
message, our attributes + body), same count, same queue, same groups. On a
standard queue and on a FIFO queue (``GROUPS`` message groups, sent group after
group). A run is timed inside the consumer from its first handler call to the
return of the delete of its last message (process start-up and connecting are
not timed: a worker pays them once); CPU is the consumer process's (every
thread) over the same span. Requests are every request the server answered
from the moment the consumer process was started to its last delete, start-up
included (``GetQueueUrl``, ``ListQueues``, ...), per message.

**Local** (one process): the bot on the memory provider against FastStream's
in-memory test broker (``TestRedisBroker``) driving an equivalent no-op handler.
FastStream's test broker calls the subscriber inside ``publish``: there is no
queue, no acknowledgement and no concurrency, so its row is FastStream's
per-message cost with nothing durable behind it, not a consumer of a queue.
Both rows publish ``LOCAL_MESSAGES`` messages over ``LOCAL_SESSIONS`` keys and are
timed from the first publish to the last handler return (the bot: its last
completion).

Interleaved (every candidate in turn, a warm-up round, then ``REPEATS`` rounds),
medians. Run: ``.venv/bin/python -m bench peers`` (part of ``python -m bench``;
needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from bench.harness import Row, interleaved_runs, report, save
from bench.moto_counted import Served, counted_moto_server, served
from bench.peer_sqs import EVENT_TYPE, KEY, REGION, Tally, dramatiq_body

MESSAGES = 200
GROUPS = 100
REPEATS = 5
CONSUMER_TIMEOUT = 180.0
"""Seconds a consumer may take to start and settle every message of a run."""
LOCAL_MESSAGES = 20_000
LOCAL_SESSIONS = 1_000
FILE_MESSAGES = 5_000
RAW_TARGET = 0.95
CELERY_TARGET = 1.5

PEERS = ("celery", "kombu", "dramatiq", "dramatiq-sqs", "faststream", "huey", "persist-queue")

_names = itertools.count()


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    """Messages per second, first handler call to last delete."""
    cpu: float
    """CPU seconds of the consumer process per message, over the same span."""
    served: Served
    """What the server answered from the consumer's start to its last delete."""


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    kind: str
    """How its messages look: ``queue-runtime``, ``celery`` or ``dramatiq``."""
    command: Callable[[str, str, Path], tuple[list[str], dict[str, str]]]
    """(endpoint, queue, result file) -> (argv, extra environment)."""


def _ours(kind: str) -> Callable[[str, str, Path], tuple[list[str], dict[str, str]]]:
    def command(endpoint: str, queue: str, result: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.peer_sqs", kind, endpoint, queue]
        return [*argv, str(MESSAGES), str(result)], {}

    return command


def _celery(*pool: str) -> Callable[[str, str, Path], tuple[list[str], dict[str, str]]]:
    def command(endpoint: str, queue: str, result: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "celery", "-A", "bench.peer_celery", "worker", "-Q", queue]
        argv += [*pool, "--without-gossip", "--without-mingle", "--without-heartbeat"]
        argv += ["--loglevel=WARNING"]
        environment = {
            "BENCH_ENDPOINT": endpoint,
            "BENCH_QUEUE": queue,
            "BENCH_MESSAGES": str(MESSAGES),
            "BENCH_RESULT": str(result),
        }
        return argv, environment

    return command


CONSUMERS = [
    Consumer("raw aiobotocore loop", "queue-runtime", _ours("raw")),
    Consumer("queue-runtime bot", "queue-runtime", _ours("bot")),
    Consumer("celery, solo pool", "celery", _celery("--pool=solo")),
    Consumer("celery, threads pool x 8", "celery", _celery("--pool=threads", "-c", "8")),
    Consumer("dramatiq, 8 threads", "dramatiq", _ours("dramatiq")),
]
RAW, BOT = CONSUMERS[0].name, CONSUMERS[1].name


class SqsBench:
    def __init__(self, endpoint: str, workdir: Path) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        self.sqs = boto3.client(
            "sqs",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )

    def filled_queue(self, consumer: Consumer, fifo: bool) -> tuple[str, str]:
        """A fresh queue holding ``MESSAGES`` messages for ``consumer``: (name, url)."""
        name = f"peers-{next(_names)}" + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true"} if fifo else {}
        url = str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        entries = self._entries(consumer.kind, name, fifo)
        for start in range(0, len(entries), 10):
            batch = [{"Id": str(i), **e} for i, e in enumerate(entries[start : start + 10])]
            response = self.sqs.send_message_batch(QueueUrl=url, Entries=batch)
            assert not response.get("Failed"), response["Failed"]
        return name, url

    def _entries(self, kind: str, queue: str, fifo: bool) -> list[dict[str, Any]]:
        if kind == "celery":
            from bench.peer_celery import task_messages

            sent = task_messages(self.endpoint, queue, MESSAGES, GROUPS if fifo else None)
            return [{k: v for k, v in s.items() if k != "QueueUrl"} for s in sent]
        entries: list[dict[str, Any]] = []
        for i in range(MESSAGES):
            if kind == "dramatiq":
                entry: dict[str, Any] = {"MessageBody": dramatiq_body(queue)}
            else:
                entry = {
                    "MessageBody": "{}",
                    "MessageAttributes": {
                        "event_type": {"DataType": "String", "StringValue": EVENT_TYPE}
                    },
                }
            if fifo:
                entry["MessageGroupId"] = f"g{i % GROUPS}"
                entry["MessageDeduplicationId"] = f"m{i}"
            entries.append(entry)
        return entries

    def timed(self, consumer: Consumer, fifo: bool) -> Callable[[], Run]:
        def run() -> Run:
            name, url = self.filled_queue(consumer, fifo)
            result = self.workdir / f"{name}.json"
            argv, environment = consumer.command(self.endpoint, name, result)
            served(self.endpoint, reset=True)
            process = subprocess.Popen(
                argv,
                env={**os.environ, **environment},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                tally = _wait_for(result, process)
                counts = served(self.endpoint)
            finally:
                _stop(process)
            self.sqs.delete_queue(QueueUrl=url)
            assert tally.settled >= MESSAGES, (consumer, tally)
            assert tally.handled >= MESSAGES, (consumer, tally)
            elapsed = tally.last - tally.first
            return Run(MESSAGES / elapsed, (tally.cpu_last - tally.cpu_first) / MESSAGES, counts)

        return run


def _wait_for(result: Path, process: subprocess.Popen[bytes]) -> Tally:
    deadline = time.monotonic() + CONSUMER_TIMEOUT
    while not result.exists():
        if process.poll() is not None:
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"consumer exited with {process.returncode}: {errors[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumer did not settle every message in {CONSUMER_TIMEOUT} s")
        time.sleep(0.01)
    import json

    return Tally(**json.loads(result.read_text()))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the consumer's process group (Celery: warm shutdown), kill it if slow."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.stderr:
        process.stderr.close()


@dataclass(frozen=True, slots=True)
class Side:
    """One consumer's medians on one queue shape."""

    name: str
    rate: float
    cpu: float
    requests: float
    """Requests per message."""
    by_operation: dict[str, float]
    """Requests per run, by operation."""
    receive_ms: float
    """Mean time the server took to answer one ``ReceiveMessage``."""
    rates: tuple[float, ...] = ()
    """Every measured run's messages per second, in the order they ran (the spread)."""


def sqs_sides(bench: SqsBench, fifo: bool) -> list[Side]:
    runs = interleaved_runs(
        {consumer.name: bench.timed(consumer, fifo) for consumer in CONSUMERS}, repeats=REPEATS
    )
    sides = []
    for name, measured in runs.items():
        total: collections.Counter[str] = sum(
            (r.served.requests for r in measured), collections.Counter()
        )
        seconds = sum(r.served.seconds.get("ReceiveMessage", 0.0) for r in measured)
        runs_count = len(measured)
        sides.append(
            Side(
                name,
                statistics.median(r.rate for r in measured),
                statistics.median(r.cpu for r in measured),
                total.total() / (MESSAGES * runs_count),
                {op: n / runs_count for op, n in sorted(total.items())},
                seconds * 1e3 / max(1, total["ReceiveMessage"]),
                tuple(round(r.rate, 1) for r in measured),
            )
        )
    return sides


def sqs_rows(shape: str, sides: list[Side]) -> list[Row]:
    by_name = {side.name: side for side in sides}
    raw, bot = by_name[RAW], by_name[BOT]
    rows = [
        Row(
            f"SQS {shape}: bot vs raw loop, {MESSAGES} msgs",
            bot.rate,
            "m/s",
            baseline=raw.rate,
            ratio=bot.rate / raw.rate,
            target=f">= {RAW_TARGET} x raw",
            met=bot.rate / raw.rate >= RAW_TARGET,
        )
    ]
    for side in sides[2:]:
        celery = side.name.startswith("celery")
        rows.append(
            Row(
                f"SQS {shape}: bot vs {side.name}",
                bot.rate,
                "m/s",
                baseline=side.rate,
                ratio=bot.rate / side.rate,
                target=f">= {CELERY_TARGET} x celery" if celery else "",
                met=bot.rate / side.rate >= CELERY_TARGET if celery else None,
            )
        )
    for row in rows:
        row.detail = {}
    rows[0].detail = {
        side.name: (
            f"{side.rate:.1f} msg/s, {side.requests:.2f} requests/msg, "
            f"{side.cpu * 1e3:.2f} ms CPU/msg, moto {side.receive_ms:.0f} ms/receive, "
            f"per run {side.by_operation}, runs {side.rates} msg/s"
        )
        for side in sides
    }
    return rows


def print_sides(title: str, sides: list[Side], baseline: str, ours: str) -> None:
    """The side-by-side table: each consumer against the baseline and against ours."""
    by_name = {side.name: side for side in sides}
    print(f"\n{title}")
    print(
        f"{'consumer':30} {'msg/s':>9} {'x ' + baseline[:12]:>16} {'ours / this':>12}"
        f" {'requests/msg':>13} {'CPU ms/msg':>11} {'moto ms/receive':>16}"
    )
    for side in sides:
        requests_shown = f"{side.requests:.2f}" if side.by_operation else "-"
        receive_shown = f"{side.receive_ms:.0f}" if side.by_operation else "-"
        print(
            f"{side.name:30} {side.rate:>9,.1f} {side.rate / by_name[baseline].rate:>16.2f}"
            f" {by_name[ours].rate / side.rate:>12.2f} {requests_shown:>13}"
            f" {side.cpu * 1e3:>11.3f} {receive_shown:>16}"
        )


# -- local ---------------------------------------------------------------------------


def _local_messages() -> list[tuple[str, int]]:
    return [(f"o/r/pull/{i % LOCAL_SESSIONS}", i) for i in range(LOCAL_MESSAGES)]


async def bot_memory() -> tuple[float, float]:
    """The bot on the memory provider: publish (batched) and handle ``LOCAL_MESSAGES``."""
    import queue_runtime as qr
    from queue_runtime.bot import Bot, Event, Handler
    from queue_runtime.providers.memory import InMemoryProvider

    class NoOp(Handler):
        event_types = (EVENT_TYPE,)

        async def handle(self, event: Event) -> None:
            return None

    provider = InMemoryProvider(qr.InMemoryConfig(max_queue_size=1_000_000))
    client = qr.QueueClient(provider)
    messages = [
        qr.Message(b"{}", attributes={"event_type": EVENT_TYPE}, session_id=session)
        for session, _ in _local_messages()
    ]
    async with client, Bot(client, "bench", [NoOp], max_in_flight=2_000, receive_wait=0.05) as bot:
        started, cpu = time.perf_counter(), time.process_time()
        await client.send_messages("bench", messages)
        while bot.stats().completed < LOCAL_MESSAGES:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.001)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return LOCAL_MESSAGES / elapsed, cpu / LOCAL_MESSAGES


async def faststream_test_broker() -> tuple[float, float]:
    """FastStream's in-memory ``TestRedisBroker``: publish each message to a list subscriber
    with a no-op handler (the test broker runs the handler inside ``publish``)."""
    from faststream.redis import RedisBroker, TestRedisBroker

    broker = RedisBroker()
    handled = 0

    @broker.subscriber(list="bench")  # type: ignore[untyped-decorator]
    async def noop(body: dict[str, Any]) -> None:
        nonlocal handled
        handled += 1

    async with TestRedisBroker(broker) as test_broker:
        started, cpu = time.perf_counter(), time.process_time()
        for session, index in _local_messages():
            await test_broker.publish({"index": index}, list="bench", correlation_id=session)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert handled == LOCAL_MESSAGES, handled
    return LOCAL_MESSAGES / elapsed, cpu / LOCAL_MESSAGES


# -- local file queues ---------------------------------------------------------------


async def bot_sqlite(path: Path) -> tuple[float, float]:
    """The bot on the sqlite provider, ``FILE_MESSAGES`` pre-published unordered messages."""
    import queue_runtime as qr
    from queue_runtime.bot import Bot, Event, Handler

    first: list[tuple[float, float]] = []

    class NoOp(Handler):
        event_types = (EVENT_TYPE,)

        async def handle(self, event: Event) -> None:
            if not first:
                first.append((time.perf_counter(), time.process_time()))

    client = await qr.create_client(qr.QueueConfig(provider=qr.SqliteConfig(path=str(path))))
    async with client:
        messages = [  # distinct messages: each its own id, spread over the unordered lanes
            qr.Message(b"{}", attributes={"event_type": EVENT_TYPE}) for _ in range(FILE_MESSAGES)
        ]
        await client.send_messages("bench", messages)
        async with Bot(client, "bench", [NoOp], max_in_flight=2_000, receive_wait=0.05) as bot:
            while bot.stats().completed < FILE_MESSAGES:  # noqa: ASYNC110 - the measurement
                await asyncio.sleep(0.001)
            last = time.perf_counter(), time.process_time()
    return _rate_and_cpu(first[0], last, FILE_MESSAGES)


def huey_sqlite(path: Path) -> tuple[float, float]:
    """huey's ``SqliteHuey`` (its defaults: WAL, one worker thread), pre-enqueued no-op tasks,
    timed from the first task call to the last task's return."""
    from huey import SqliteHuey
    from huey.signals import SIGNAL_COMPLETE

    huey = SqliteHuey("bench", filename=str(path), results=False)
    first: list[tuple[float, float]] = []
    last: list[tuple[float, float]] = []
    done = threading.Event()

    @huey.task()  # type: ignore[untyped-decorator]
    def noop() -> None:
        if not first:
            first.append((time.perf_counter(), time.process_time()))

    count = 0

    def executed(signal_name: str, task: Any, *args: Any) -> None:  # after the task ran
        nonlocal count
        count += 1
        if count == FILE_MESSAGES:
            last.append((time.perf_counter(), time.process_time()))
            done.set()

    huey.signal(SIGNAL_COMPLETE)(executed)
    for _ in range(FILE_MESSAGES):
        noop()
    handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        if not done.wait(CONSUMER_TIMEOUT):
            raise RuntimeError(f"huey handled {count} of {FILE_MESSAGES}")
    finally:
        consumer.stop(graceful=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        huey.storage.close()
    return _rate_and_cpu(first[0], last[0], FILE_MESSAGES)


def persist_queue_sqlite(path: Path) -> tuple[float, float]:
    """persist-queue's ``SQLiteAckQueue`` (its defaults: WAL, a commit per call): pre-put
    items, then ``get`` → no-op → ``ack`` in one thread."""
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(path), multithreading=False)
    for index in range(FILE_MESSAGES):
        queue.put({"event_type": EVENT_TYPE, "index": index})
    item = queue.get(block=False)
    first = time.perf_counter(), time.process_time()
    handled = 0
    while True:
        _ = item["event_type"]  # the no-op
        queue.ack(item)
        handled += 1
        if handled == FILE_MESSAGES:
            break
        item = queue.get(block=False)
    last = time.perf_counter(), time.process_time()
    queue.close()
    return _rate_and_cpu(first, last, FILE_MESSAGES)


def _rate_and_cpu(
    first: tuple[float, float], last: tuple[float, float], count: int
) -> tuple[float, float]:
    return count / (last[0] - first[0]), (last[1] - first[1]) / count


def file_sides() -> list[Side]:
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as directory:
        files = itertools.count()

        def fresh() -> Path:
            return Path(directory) / f"queue-{next(files)}.db"

        runner = asyncio.Runner()
        with runner:
            runs = interleaved_runs(
                {
                    "queue-runtime bot, sqlite": lambda: runner.run(bot_sqlite(fresh())),
                    "huey SqliteHuey, 1 thread": lambda: huey_sqlite(fresh()),
                    "persist-queue SQLiteAckQueue": lambda: persist_queue_sqlite(fresh()),
                },
                repeats=REPEATS,
            )
    return _local_medians(runs)


def _local_medians(runs: dict[str, list[tuple[float, float]]]) -> list[Side]:
    nan = float("nan")
    return [
        Side(
            name,
            statistics.median(rate for rate, _ in measured),
            statistics.median(cpu for _, cpu in measured),
            nan,
            {},
            nan,
            tuple(round(rate, 1) for rate, _ in measured),
        )
        for name, measured in runs.items()
    ]


def local_sides() -> list[Side]:
    runner = asyncio.Runner()
    with runner:
        runs = interleaved_runs(
            {
                "queue-runtime bot, memory": lambda: runner.run(bot_memory()),
                "faststream TestRedisBroker": lambda: runner.run(faststream_test_broker()),
            },
            repeats=REPEATS,
        )
    return _local_medians(runs)


def versions() -> dict[str, str]:
    found = {}
    for name in PEERS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def missing_peers() -> list[str]:
    """The ``bench`` extra's packages that are not installed."""
    return [name for name, version in versions().items() if version == "not installed"]


def main() -> list[Row]:
    if missing := missing_peers():
        # Nothing is installed implicitly: say what to install, and count it as missed.
        print(f"\npeers: not run, missing {', '.join(missing)}: pip install -e '.[bench]'")
        return [
            Row(
                "peers: not run (the bench extra is not installed)",
                0.0,
                "",
                target="pip install -e '.[bench]'",
                met=False,
            )
        ]
    load = os.getloadavg()
    rows: list[Row] = []
    tables: list[tuple[str, list[Side], str, str]] = []
    with counted_moto_server() as endpoint, tempfile.TemporaryDirectory() as workdir:
        bench = SqsBench(endpoint, Path(workdir))
        for shape, fifo in (("standard", False), ("FIFO", True)):
            sides = sqs_sides(bench, fifo)
            title = f"SQS {shape} queue, {MESSAGES} no-op messages" + (
                f" in {GROUPS} groups" if fifo else ""
            )
            tables.append((title, sides, RAW, BOT))
            rows.extend(sqs_rows(shape, sides))
    local = local_sides()
    tables.append(
        (f"local, one process, {LOCAL_MESSAGES:,} messages", local, local[0].name, local[0].name)
    )
    rows.append(
        Row(
            "local: bot on memory vs FastStream TestRedisBroker",
            local[0].rate,
            "m/s",
            baseline=local[1].rate,
            ratio=local[0].rate / local[1].rate,
        )
    )
    files = file_sides()
    tables.append(
        (
            f"local SQLite file queues, one process, {FILE_MESSAGES:,} pre-published messages",
            files,
            files[0].name,
            files[0].name,
        )
    )
    for side in files[1:]:
        rows.append(
            Row(
                f"local: bot on sqlite vs {side.name}",
                files[0].rate,
                "m/s",
                baseline=side.rate,
                ratio=files[0].rate / side.rate,
                target="ahead (> 1)",
                met=files[0].rate > side.rate,
            )
        )
    report("peers: the bot against the tools a user would pick instead", rows)
    for table in tables:
        print_sides(*table)
    for _, sides, _, _ in tables:
        for side in sides:
            print(f"  {side.name}: runs {side.rates} msg/s")
    print(f"\nversions: {versions()}")
    print(f"load average at start {load}, at end {os.getloadavg()} (2 cores, shared)")
    print(f"\nwrote {save('peers', rows)}")
    return rows


if __name__ == "__main__":
    main()
