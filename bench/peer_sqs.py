"""One SQS consumer process of the peers benchmark: the bot, the raw loop or dramatiq.

``python -m bench.peer_sqs KIND ENDPOINT QUEUE MESSAGES RESULT`` consumes
``MESSAGES`` pre-published messages of ``QUEUE`` on the moto server at
``ENDPOINT`` with a no-op handler, writes a :class:`Tally` as JSON to the file
``RESULT`` when the last one was settled, and keeps running (as a worker would)
until it is terminated. Celery's worker is started by its own command line
(``bench/peer_celery.py``) and reports the same way.

Kinds:

* ``raw``: aiobotocore ``ReceiveMessage`` of 10 (long poll 1 s), the no-op per
  message, one ``DeleteMessageBatch`` per receive: the limit.
* ``bot``: a :class:`~queue_runtime.actors.Bot` with a no-op handler on an
  :class:`~queue_runtime.providers.aws.SqsProvider` (``receive_wait`` 1 s).
* ``dramatiq``: a dramatiq ``Worker`` (8 threads, its default; prefetch 10, the
  SQS maximum) on ``dramatiq_sqs.SQSBroker`` with a no-op actor, in this process
  (the ``dramatiq`` command runs the same ``Worker`` in a forked child).

The settle is observed with botocore's ``after-call.sqs.DeleteMessage*`` events
on each consumer's own client (read-only), so every consumer is timed the same
way: from its first handler call to the return of the delete that removed its
last message.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"
KEY = "bench"
WAIT_SECONDS = 1
EVENT_TYPE = "bench"


@dataclass
class Tally:
    """What one consumer process measured of itself (``perf_counter`` is system-wide)."""

    first: float = 0.0
    """``time.perf_counter()`` at the first handler call."""
    last: float = 0.0
    """``time.perf_counter()`` when the delete of the last message returned."""
    cpu_first: float = 0.0
    """``time.process_time()`` (every thread of this process) at the first handler call."""
    cpu_last: float = 0.0
    handled: int = 0
    settled: int = 0


class Recorder:
    """Counts handler calls and settled messages, and writes the tally when all are settled.

    Thread-safe: dramatiq's and Celery's handlers and acks run in worker threads.
    """

    def __init__(self, messages: int, result: Path) -> None:
        self.messages = messages
        self.result = result
        self.tally = Tally()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def handled(self) -> None:
        with self.lock:
            if not self.tally.handled:
                self.tally.first, self.tally.cpu_first = time.perf_counter(), time.process_time()
            self.tally.handled += 1

    def settled(self, count: int) -> None:
        with self.lock:
            self.tally.settled += count
            if self.tally.settled < self.messages or self.done.is_set():
                return
            self.tally.last, self.tally.cpu_last = time.perf_counter(), time.process_time()
            partial = self.result.with_suffix(".partial")
            partial.write_text(json.dumps(asdict(self.tally)))
            partial.rename(self.result)  # the reader never sees half a file
            self.done.set()

    def watch(self, client: Any) -> None:
        """Observe ``client``'s deletes (a botocore or aiobotocore client)."""
        events = client.meta.events
        events.register("after-call.sqs.DeleteMessage", self._deleted_one)
        events.register("after-call.sqs.DeleteMessageBatch", self._deleted_batch)

    def _deleted_one(self, http_response: Any, **_: Any) -> None:
        if http_response.status_code == 200:
            self.settled(1)

    def _deleted_batch(self, parsed: dict[str, Any], **_: Any) -> None:
        self.settled(len(parsed.get("Successful") or []))


def wait_forever() -> None:
    """Run until terminated, as a worker does."""
    threading.Event().wait()


# -- raw aiobotocore -------------------------------------------------------------------


async def raw(endpoint: str, queue: str, recorder: Recorder) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
    ) as client:
        recorder.watch(client)
        url = (await client.get_queue_url(QueueName=queue))["QueueUrl"]
        while not recorder.done.is_set():
            response = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=WAIT_SECONDS,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages") or []
            for message in messages:  # the no-op handler
                _ = message["MessageAttributes"]["event_type"]["StringValue"]
                recorder.handled()
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ]
                await client.delete_message_batch(QueueUrl=url, Entries=entries)
        await asyncio.Event().wait()


# -- the bot ---------------------------------------------------------------------------


async def bot(endpoint: str, queue: str, recorder: Recorder) -> None:
    import queue_runtime as qr
    from queue_runtime.bot import Bot, Event, Handler
    from queue_runtime.providers.aws import SqsProvider

    class NoOp(Handler):
        event_types = (EVENT_TYPE,)

        async def handle(self, event: Event) -> None:
            recorder.handled()

    config = qr.AwsSqsConfig(
        region=REGION,
        endpoint_url=endpoint,
        access_key_id=KEY,
        secret_access_key=qr.Secret(KEY),
    )
    provider = SqsProvider(config)
    client = qr.QueueClient(provider, qr.QueueConfig(provider=config))
    recorder.watch(await provider.client())
    async with client, Bot(client, queue, [NoOp], receive_wait=WAIT_SECONDS):
        await asyncio.Event().wait()


# -- dramatiq --------------------------------------------------------------------------


def dramatiq_worker(endpoint: str, queue: str, recorder: Recorder) -> None:
    import dramatiq
    from dramatiq_sqs import SQSBroker

    broker = SQSBroker(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
    )
    dramatiq.set_broker(broker)
    recorder.watch(broker.sqs.meta.client)

    @dramatiq.actor(actor_name="noop", queue_name=queue, max_retries=0)  # type: ignore[untyped-decorator]
    def noop() -> None:
        recorder.handled()

    worker = dramatiq.Worker(broker, worker_timeout=WAIT_SECONDS * 1000, worker_threads=8)
    worker.start()
    wait_forever()


def dramatiq_body(queue: str) -> str:
    """The SQS body ``SQSBroker.enqueue`` would send for one ``noop`` message.

    ``dramatiq_sqs`` sends no ``MessageGroupId``, so it cannot publish to a FIFO
    queue; the benchmark publishes these bodies itself, with groups.
    """
    from base64 import b64encode

    import dramatiq

    message = dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})
    return b64encode(message.encode()).decode()


def main(argv: list[str]) -> None:
    kind, endpoint, queue, messages, result = argv
    recorder = Recorder(int(messages), Path(result))
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    if kind == "raw":
        asyncio.run(raw(endpoint, queue, recorder))
    elif kind == "bot":
        asyncio.run(bot(endpoint, queue, recorder))
    elif kind == "dramatiq":
        dramatiq_worker(endpoint, queue, recorder)
    else:
        raise SystemExit(f"unknown consumer {kind!r}: raw | bot | dramatiq")


if __name__ == "__main__":
    main(sys.argv[1:])
