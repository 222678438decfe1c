"""SQS through the bot against a raw aiobotocore loop, on a FIFO queue in a moto server.

Both consume ``MESSAGES`` messages spread over ``GROUPS`` message groups
(sessions), two per group, sent group after group (``g0 g1 ... g99 g0 g1 ...``)
by raw ``SendMessageBatch`` calls before the clock starts, each run on a fresh
queue of the same size (moto scans the whole queue on every receive).

* **raw** (the baseline): ``ReceiveMessage`` of 10 (every attribute, as the
  provider asks, long poll of 1 s), a no-op handler per message that reads its
  ``event_type``, then one ``DeleteMessageBatch`` for the batch; again until done.
* **bot**: a :class:`~queue_runtime.actors.Bot` with a no-op handler on a
  :class:`~queue_runtime.providers.aws.SqsProvider` (``receive_wait`` 1 s, so the
  same long poll), started inside the timed section. As in ``bench/bot.py`` the
  clock stops when the last message is completed; stopping the bot afterwards
  waits for the receive in flight (a long poll of up to ``receive_wait``: its
  answer is taken, not thrown away) and is reported as ``bot_stop_ms``.

Requests are counted by operation on each side's aiobotocore client with
botocore's ``before-call.sqs`` event (for the bot, on the provider's client from
:meth:`SqsProvider.client`), and messages per receive and per delete with
``after-call`` events. "Messages per receive" counts the receives that returned
messages: the bot also polls while every remaining group is in flight (FIFO
hands out nothing of a group with a message in flight; the provider then
polls without waiting at SQS and asks again at its next settle), and the last
receive of a run finds nothing; those empty polls say nothing about batching.
They are reported separately.

Rows (medians of 5 interleaved runs after a warm-up; request counts summed over
the 5 runs): throughput in messages/s, bot vs raw; messages per non-empty
receive; messages per delete request.

Run: ``.venv/bin/python -m bench.sqs_bot`` (part of ``python -m bench``; starts
its own moto server on 127.0.0.1 in a separate process).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import get_session

import queue_runtime as qr
from bench.harness import Row, interleaved_runs, report, save
from bench.sqs_raw import moto_server
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.aws import SqsProvider

MESSAGES = 200
GROUPS = 100
REGION = "us-east-1"
WAIT_SECONDS = 1
BATCH_TARGET = 9.0
RATIO_TARGET = 0.9

_names = itertools.count()


class NoOp(Handler):
    event_types = ("bench",)

    async def handle(self, event: Event) -> None:
        return None


@dataclass
class Requests:
    """SQS requests one client made, by operation, and the messages they carried."""

    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    received: int = 0
    nonempty_receives: int = 0
    deleted: int = 0

    def watch(self, client: Any) -> None:
        """Count ``client``'s requests from now on (botocore event hooks; read-only)."""
        events = client.meta.events
        events.register("before-call.sqs", self._before_call, unique_id=f"bench-{id(self)}")
        events.register("after-call.sqs.ReceiveMessage", self._received)
        events.register("after-call.sqs.DeleteMessage", self._deleted_one)
        events.register("after-call.sqs.DeleteMessageBatch", self._deleted_batch)

    def reset(self) -> Requests:
        """Return the counts so far and start again from zero."""
        counted = Requests(self.calls.copy(), self.received, self.nonempty_receives, self.deleted)
        self.calls.clear()
        self.received = self.nonempty_receives = self.deleted = 0
        return counted

    def _before_call(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _received(self, parsed: dict[str, Any], **_: Any) -> None:
        count = len(parsed.get("Messages") or [])
        self.received += count
        self.nonempty_receives += count > 0

    def _deleted_one(self, http_response: Any, **_: Any) -> None:
        self.deleted += 1

    def _deleted_batch(self, parsed: dict[str, Any], **_: Any) -> None:
        self.deleted += len(parsed.get("Successful") or [])

    def __add__(self, other: Requests) -> Requests:
        return Requests(
            self.calls + other.calls,
            self.received + other.received,
            self.nonempty_receives + other.nonempty_receives,
            self.deleted + other.deleted,
        )

    @property
    def per_receive(self) -> float:
        return self.received / max(1, self.nonempty_receives)

    @property
    def per_delete(self) -> float:
        return self.deleted / max(1, self.calls["DeleteMessage"] + self.calls["DeleteMessageBatch"])


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    """Messages per second, until the last message was completed."""
    cpu: float
    """Seconds of this process's CPU time (moto runs in another process)."""
    requests: Requests
    stop: float = 0.0
    """Seconds the consumer took to stop after that (the bot: ``bot.stop()``)."""


class Bench:
    def __init__(self, endpoint: str, runner: asyncio.Runner) -> None:
        self.endpoint = endpoint
        self.runner = runner
        self.raw: Any = None
        self.raw_requests = Requests()
        self.bot_requests = Requests()

    async def start(self) -> None:
        self._raw_context = get_session().create_client(
            "sqs",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        self.raw = await self._raw_context.__aenter__()
        self.raw_requests.watch(self.raw)
        config = qr.AwsSqsConfig(
            region=REGION,
            endpoint_url=self.endpoint,
            access_key_id="bench",
            secret_access_key=qr.Secret("bench"),
            max_delivery_count=100,
        )
        self.provider = SqsProvider(config)
        self.client = qr.QueueClient(self.provider, qr.QueueConfig(provider=config))
        self.bot_requests.watch(await self.provider.client())

    async def stop(self) -> None:
        await self.client.aclose()
        await self._raw_context.__aexit__(None, None, None)

    async def filled_queue(self) -> tuple[str, str]:
        """A new FIFO queue holding ``MESSAGES`` messages in ``GROUPS`` groups: (name, url)."""
        name = f"bench-bot-{next(_names)}.fifo"
        created = await self.raw.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
        url = str(created["QueueUrl"])
        for start in range(0, MESSAGES, 10):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": "{}",
                    "MessageGroupId": f"o/r/pull/{i % GROUPS}",
                    "MessageDeduplicationId": f"m{i}",
                    "MessageAttributes": {
                        "event_type": {"DataType": "String", "StringValue": "bench"}
                    },
                }
                for i in range(start, min(start + 10, MESSAGES))
            ]
            await self.raw.send_message_batch(QueueUrl=url, Entries=entries)
        return name, url

    def timed(
        self, consume: Callable[[str, str], Awaitable[float | None]], requests: Requests
    ) -> Callable[[], Run]:
        """A measurement for the harness: messages/s of ``consume`` on a filled queue.

        ``consume`` returns when it has stopped; if it returns a ``perf_counter()``
        time, that is when the last message was completed (the rest was stopping).
        """

        def run() -> Run:
            async def once() -> Run:
                name, url = await self.filled_queue()
                requests.reset()
                started, cpu = time.perf_counter(), time.process_time()
                done = await consume(name, url)
                stopped = time.perf_counter()
                done = done or stopped
                rate = MESSAGES / (done - started)
                return Run(rate, time.process_time() - cpu, requests.reset(), stopped - done)

            return self.runner.run(once())

        return run

    async def raw_loop(self, name: str, url: str) -> None:
        done = 0
        while done < MESSAGES:
            response = await self.raw.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=WAIT_SECONDS,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages") or []
            for message in messages:  # the no-op handler
                _ = message["MessageAttributes"]["event_type"]["StringValue"]
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ]
                await self.raw.delete_message_batch(QueueUrl=url, Entries=entries)
                done += len(messages)

    async def bot(self, name: str, url: str) -> float:
        async with Bot(self.client, name, [NoOp], receive_wait=WAIT_SECONDS) as bot:
            while bot.stats().completed < MESSAGES:  # noqa: ASYNC110 - polling is the measurement
                await asyncio.sleep(0.005)
            done = time.perf_counter()
        stats = bot.stats()
        assert stats.completed == MESSAGES, stats
        return done


def measure(bench: Bench) -> list[Row]:
    runs = interleaved_runs(
        {
            "raw": bench.timed(bench.raw_loop, bench.raw_requests),
            "bot": bench.timed(bench.bot, bench.bot_requests),
        }
    )
    raw_rate = statistics.median(run.rate for run in runs["raw"])
    bot_rate = statistics.median(run.rate for run in runs["bot"])
    raw = sum((run.requests for run in runs["raw"]), Requests())
    bot = sum((run.requests for run in runs["bot"]), Requests())
    ratio = bot_rate / raw_rate
    return [
        Row(
            f"SQS bot vs raw loop, FIFO {GROUPS} groups x {MESSAGES // GROUPS}, moto",
            bot_rate,
            "m/s",
            baseline=raw_rate,
            ratio=ratio,
            target=f">= {RATIO_TARGET} x raw",
            met=ratio >= RATIO_TARGET,
            detail={
                "bot_requests": dict(sorted(bot.calls.items())),
                "raw_requests": dict(sorted(raw.calls.items())),
                "bot_cpu_ms_per_run": _median_ms(run.cpu for run in runs["bot"]),
                "raw_cpu_ms_per_run": _median_ms(run.cpu for run in runs["raw"]),
                "bot_stop_ms": _median_ms(run.stop for run in runs["bot"]),
            },
        ),
        Row(
            "SQS bot: messages per non-empty ReceiveMessage",
            bot.per_receive,
            "msg",
            baseline=raw.per_receive,
            ratio=bot.per_receive / raw.per_receive,
            target=f">= {BATCH_TARGET:g}",
            met=bot.per_receive >= BATCH_TARGET,
            detail={
                "bot_empty_receives": bot.calls["ReceiveMessage"] - bot.nonempty_receives,
                "raw_empty_receives": raw.calls["ReceiveMessage"] - raw.nonempty_receives,
            },
        ),
        Row(
            "SQS bot: messages per delete request",
            bot.per_delete,
            "msg",
            baseline=raw.per_delete,
            ratio=bot.per_delete / raw.per_delete,
            target=f">= {BATCH_TARGET:g}",
            met=bot.per_delete >= BATCH_TARGET,
        ),
    ]


def _median_ms(seconds: Iterable[float]) -> float:
    return round(statistics.median(seconds) * 1e3, 1)


def main() -> list[Row]:
    with moto_server() as endpoint, asyncio.Runner() as runner:
        bench = Bench(endpoint, runner)
        runner.run(bench.start())
        try:
            rows = measure(bench)
        finally:
            runner.run(bench.stop())
    report("SQS through the bot vs raw aiobotocore, moto server (median of 5 interleaved)", rows)
    print(f"\nwrote {save('sqs_bot', rows)}")
    return rows


if __name__ == "__main__":
    main()
