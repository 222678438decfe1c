"""SQS throughput against a local moto server: single vs batched calls, raw vs the runtime.

Run: ``.venv/bin/python -m bench.sqs_raw`` (starts its own moto server on 127.0.0.1, in
a separate process so that its CPU time does not compete with the client's).

Rows, each the median of 5 interleaved runs after a warm-up, in messages/s:

* raw aiobotocore ``SendMessage`` one by one (the baseline of the send ratio);
* raw ``SendMessageBatch`` of 10;
* raw ``ReceiveMessage`` of 1 + ``DeleteMessage`` (the baseline of the receive ratio);
* raw ``ReceiveMessage`` of 10 + ``DeleteMessageBatch``;
* the same batched loops through :class:`~queue_runtime.QueueClient` and the SQS
  provider (``send_messages``, ``receive_messages`` + ``complete_many``), as a
  ratio to the raw batched loops: the runtime's overhead.

Absolute numbers say little; the ratios are the point. moto answers every
request with ``Connection: close`` (each call pays a new TCP connection), and
it scans the whole queue for every message sent and every receive, so every
variant moves the same number of messages through queues of the same size.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiobotocore.session import get_session

import queue_runtime as qr
from bench.harness import Row, interleaved, report, save
from queue_runtime.providers.aws import SqsProvider

MESSAGES = 200
SINGLE_SENDS = BATCH_SENDS = RECEIVES = MESSAGES
REGION = "us-east-1"

_names = itertools.count()


class Bench:
    def __init__(self, endpoint: str, runner: asyncio.Runner) -> None:
        self.endpoint = endpoint
        self.runner = runner
        self.raw: Any = None
        self.provider: SqsProvider | None = None
        self.client: qr.QueueClient | None = None

    async def start(self) -> None:
        session = get_session()
        self._raw_context = session.create_client(
            "sqs",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        self.raw = await self._raw_context.__aenter__()
        config = qr.AwsSqsConfig(
            region=REGION,
            endpoint_url=self.endpoint,
            access_key_id="bench",
            secret_access_key=qr.Secret("bench"),
            max_delivery_count=100,
        )
        self.provider = SqsProvider(config)
        self.client = qr.QueueClient(self.provider, qr.QueueConfig(provider=config))

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        await self._raw_context.__aexit__(None, None, None)

    async def queue(self) -> tuple[str, str]:
        name = f"bench-{next(_names)}"
        url = (await self.raw.create_queue(QueueName=name))["QueueUrl"]
        return name, str(url)

    async def fill(self, url: str, count: int) -> None:
        for start in range(0, count, 10):
            entries = [
                {"Id": str(i), "MessageBody": f"m{start + i}"}
                for i in range(min(10, count - start))
            ]
            await self.raw.send_message_batch(QueueUrl=url, Entries=entries)

    def timed(
        self,
        count: int,
        prepare: Callable[[], Awaitable[Any]],
        body: Callable[[Any], Awaitable[int]],
    ) -> Callable[[], float]:
        """A sync measurement (for the harness): messages/s of ``body`` after ``prepare``."""

        def run() -> float:
            async def once() -> float:
                prepared = await prepare()
                started = time.perf_counter()
                done = await body(prepared)
                elapsed = time.perf_counter() - started
                assert done == count, f"handled {done} of {count}"
                return count / elapsed

            return self.runner.run(once())

        return run

    # -- raw aiobotocore ---------------------------------------------------------------

    async def raw_single_sends(self, queue: tuple[str, str]) -> int:
        for i in range(SINGLE_SENDS):
            await self.raw.send_message(QueueUrl=queue[1], MessageBody=f"m{i}")
        return SINGLE_SENDS

    async def raw_batch_sends(self, queue: tuple[str, str]) -> int:
        await self.fill(queue[1], BATCH_SENDS)
        return BATCH_SENDS

    async def filled(self) -> tuple[str, str]:
        queue = await self.queue()
        await self.fill(queue[1], RECEIVES)
        return queue

    async def raw_single_receives(self, queue: tuple[str, str]) -> int:
        done = 0
        while done < RECEIVES:
            response = await self.raw.receive_message(QueueUrl=queue[1], MaxNumberOfMessages=1)
            for message in response.get("Messages", []):
                await self.raw.delete_message(
                    QueueUrl=queue[1], ReceiptHandle=message["ReceiptHandle"]
                )
                done += 1
        return done

    async def raw_batch_receives(self, queue: tuple[str, str]) -> int:
        done = 0
        requests = 0
        while done < RECEIVES:
            response = await self.raw.receive_message(QueueUrl=queue[1], MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            requests += 1
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ]
                await self.raw.delete_message_batch(QueueUrl=queue[1], Entries=entries)
                done += len(messages)
        self.raw_per_receive = done / requests
        return done

    # -- through the runtime -----------------------------------------------------------

    async def runtime_batch_sends(self, queue: tuple[str, str]) -> int:
        assert self.client is not None
        messages = [qr.Message(f"m{i}".encode()) for i in range(BATCH_SENDS)]
        await self.client.send_messages(queue[0], messages)
        return BATCH_SENDS

    async def runtime_batch_receives(self, queue: tuple[str, str]) -> int:
        assert self.client is not None
        assert self.provider is not None
        done = 0
        requests = 0
        while done < RECEIVES:
            batch = await self.client.receive_messages(queue[0], 10, timeout=1.0)
            requests += 1
            if batch:
                await self.provider.complete_many([m.receipt for m in batch])
                done += len(batch)
        self.runtime_per_receive = done / requests
        return done


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process on a free local port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("the moto server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> list[Row]:
    with moto_server() as endpoint, asyncio.Runner() as runner:
        bench = Bench(endpoint, runner)
        runner.run(bench.start())
        try:
            rows = measure(bench)
        finally:
            runner.run(bench.stop())
    report("SQS against moto (messages/s, median of 5 interleaved runs)", rows)
    print(f"\nwrote {save('sqs_raw', rows)}")
    return rows


def measure(bench: Bench) -> list[Row]:
    sends = interleaved(
        {
            "raw_single": bench.timed(SINGLE_SENDS, bench.queue, bench.raw_single_sends),
            "raw_batch": bench.timed(BATCH_SENDS, bench.queue, bench.raw_batch_sends),
            "runtime_batch": bench.timed(BATCH_SENDS, bench.queue, bench.runtime_batch_sends),
        }
    )
    receives = interleaved(
        {
            "raw_single": bench.timed(RECEIVES, bench.filled, bench.raw_single_receives),
            "raw_batch": bench.timed(RECEIVES, bench.filled, bench.raw_batch_receives),
            "runtime_batch": bench.timed(RECEIVES, bench.filled, bench.runtime_batch_receives),
        }
    )

    def row(name: str, value: float, baseline: float | None, target: str = "") -> Row:
        ratio = value / baseline if baseline else None
        return Row(name, value, "msg/s", baseline, ratio, target)

    runtime_receive = row(
        "runtime receive 10 + complete_many (vs raw batched)",
        receives["runtime_batch"],
        receives["raw_batch"],
        ">= 0.9 x raw, >= 9 per receive",
    )
    runtime_receive.met = (runtime_receive.ratio or 0) >= 0.9 and bench.runtime_per_receive >= 9
    runtime_receive.detail = {
        "messages_per_receive_request": round(bench.runtime_per_receive, 2),
        "raw_messages_per_receive_request": round(bench.raw_per_receive, 2),
    }
    runtime_send = row(
        "runtime send_messages, batches of 10 (vs raw batched)",
        sends["runtime_batch"],
        sends["raw_batch"],
        ">= 0.9 x raw",
    )
    runtime_send.met = (runtime_send.ratio or 0) >= 0.9
    return [
        row("raw SendMessage, one by one", sends["raw_single"], None),
        row("raw SendMessageBatch of 10 (vs one by one)", sends["raw_batch"], sends["raw_single"]),
        runtime_send,
        row("raw receive 1 + DeleteMessage", receives["raw_single"], None),
        row(
            "raw receive 10 + DeleteMessageBatch (vs one by one)",
            receives["raw_batch"],
            receives["raw_single"],
        ),
        runtime_receive,
    ]


if __name__ == "__main__":
    main()
