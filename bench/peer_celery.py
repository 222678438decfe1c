"""The Celery app of the peers benchmark: a no-op task on kombu's SQS transport.

Started by ``bench/peers.py`` as a user starts a worker::

    BENCH_ENDPOINT=http://127.0.0.1:PORT BENCH_QUEUE=q BENCH_MESSAGES=500 BENCH_RESULT=f \\
        celery -A bench.peer_celery worker -Q q --pool=solo --without-gossip \\
        --without-mingle --without-heartbeat

Settings a user tuning Celery for SQS would choose: acks late (a message is
deleted after its task ran, so a crash loses nothing: the bot's guarantee),
prefetch multiplier 10 (10 messages per receive, the SQS maximum), long poll 1 s
with no extra client-side pause after an empty poll (as the bot and the raw
loop), JSON, results ignored. The transport is kombu's own, with one addition:
``new_sqs_client`` (kombu's documented place to customise the boto3 client)
registers the benchmark's read-only delete observer, so that the worker is
timed to the delete of its last message like every other consumer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import kombu.transport
from celery import Celery
from kombu.transport import SQS

from bench.peer_sqs import KEY, REGION, WAIT_SECONDS, Recorder

ENDPOINT = os.environ.get("BENCH_ENDPOINT", "http://127.0.0.1:5000")
QUEUE = os.environ.get("BENCH_QUEUE", "celery")
recorder = Recorder(
    int(os.environ.get("BENCH_MESSAGES", "0")),
    Path(os.environ.get("BENCH_RESULT", os.devnull)),
)


class Channel(SQS.Channel):  # type: ignore[misc]
    def new_sqs_client(self, *args: Any, **kwargs: Any) -> Any:
        client = super().new_sqs_client(*args, **kwargs)
        recorder.watch(client)
        return client


class Transport(SQS.Transport):  # type: ignore[misc]
    Channel = Channel


kombu.transport.TRANSPORT_ALIASES["bench-sqs"] = f"{__name__}:Transport"

_host = ENDPOINT.removeprefix("http://")
app = Celery("bench", broker=f"bench-sqs://{KEY}:{KEY}@{_host}")
app.conf.update(
    broker_transport_options={
        "region": REGION,
        "is_secure": False,
        "wait_time_seconds": WAIT_SECONDS,
        "polling_interval": 0,
        "visibility_timeout": 30,
    },
    task_acks_late=True,
    worker_prefetch_multiplier=10,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    recorder.handled()


def task_messages(
    endpoint: str, queue: str, count: int, groups: int | None
) -> list[dict[str, Any]]:
    """The ``SendMessage`` requests Celery makes to publish ``count`` ``noop`` tasks to
    ``queue`` (``groups``: a FIFO queue, message ``i`` in group ``g{i % groups}``).

    Celery publishes one message per request; the benchmark records what each
    request would carry (a botocore ``before-parameter-build`` hook) and answers it
    locally (a ``before-call`` hook), so that it can deliver the same requests'
    content in batches of 10 instead, as it does for every other consumer.
    """
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        return _Accepted(), {"MessageId": f"captured-{len(sent)}"}

    publisher = Celery(
        "bench-publisher", broker=f"sqs://{KEY}:{KEY}@{endpoint.removeprefix('http://')}"
    )
    publisher.conf.broker_transport_options = {"region": REGION, "is_secure": False}
    with publisher.connection_for_write() as connection:
        channel = connection.default_channel
        events = channel.sqs().meta.events
        events.register("before-parameter-build.sqs.SendMessage", record)
        events.register("before-call.sqs.SendMessage", answer)
        producer = publisher.amqp.Producer(channel)
        for i in range(count):
            options = {} if groups is None else {"MessageGroupId": f"g{i % groups}"}
            publisher.send_task("noop", queue=queue, producer=producer, **options)
    return sent


class _Accepted:
    """The HTTP side of a captured request's answer: botocore reads only these."""

    status_code = 200
    headers: ClassVar[dict[str, str]] = {}
