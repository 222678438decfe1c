"""No log record of queue-runtime ever shows a body, a key or a credential.

Every ``queue_runtime`` logger is captured at DEBUG while clients on the memory
provider (encrypted, with injected faults), on SQS (the moto server, with a
planted secret access key) and on Azure Service Bus (the fake namespace, with a
planted connection string) send, receive, settle, dead-letter, retry, trip the
circuit breaker, meet plaintext and undecryptable messages, and requeue and
purge dead letters. Then every part of every record — message, arguments,
``extra`` fields, exception text — is searched for the planted markers.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest

import queue_runtime as qr
from queue_runtime import dlq, telemetry
from queue_runtime.crypto import EncryptionKey
from queue_runtime.providers.memory import InMemoryProvider

BODY = "BODY-MARKER-4b1d9e"
KEY = b"KEY-MARKER-0123456789abcdefghijk"  # exactly 32 bytes of key material
AWS_SECRET = "AWS-SECRET-MARKER-77f0a1c3"
AZURE_SECRET = "AZURE-SECRET-MARKER-c0ffee42"
AZURE_CONNECTION_STRING = (
    "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={AZURE_SECRET}"
)
MARKERS = (
    BODY,
    AWS_SECRET,
    AZURE_SECRET,
    KEY.decode(),
    KEY.hex(),
    base64.b64encode(KEY).decode(),
    repr(KEY),
)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    root = logging.getLogger("queue_runtime")
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _everything_in(record: logging.LogRecord) -> str:
    """The record as any handler could render it: message, args, extras, exception."""
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def _body(n: int) -> bytes:
    return f'{{"n": {n}, "token": "{BODY}"}}'.encode()


async def _workload(client: qr.QueueClient, queue: str) -> None:
    """Send, receive, complete, abandon, dead-letter, read and requeue the DLQ, purge it."""
    await client.send_messages(
        queue, [qr.Message(_body(n), correlation_id="c-1") for n in range(4)]
    )
    first = await client.receive_messages(queue, 4, timeout=1.0)
    assert len(first) == 4
    await client.complete_message(first[0].receipt)
    await client.abandon_message(first[1].receipt)
    await client.dead_letter_message(first[2].receipt, "ValueError", f"failed on {BODY}")
    await client.dead_letter_message(first[3].receipt, f"free text {BODY}")
    [again] = await client.receive_messages(queue, 1, timeout=1.0)
    await client.complete_message(again.receipt)
    assert await dlq.requeue(
        client, queue, predicate=lambda m: m.dead_letter_reason == "ValueError"
    )
    [requeued] = await client.receive_messages(queue, 1, timeout=1.0)
    await client.complete_message(requeued.receipt)
    assert await dlq.purge(client, queue) >= 1


async def test_no_log_record_shows_a_body_key_or_credential(
    captured: list[logging.LogRecord],
) -> None:
    # memory, encrypted, with faults: retries, an opened and closed circuit, bad messages
    clock = qr.ManualClock()
    provider = InMemoryProvider(clock=clock)
    config = qr.QueueConfig(
        crypto=qr.CryptoConfig(enabled=True, plaintext_policy=qr.PlaintextPolicy.ALLOW_WITH_ALERT)
    )
    keys = qr.StaticKeyProvider(EncryptionKey("k1", KEY))
    async with qr.QueueClient(provider, config, keys=keys) as client:
        await _workload(client, "orders")
        provider.faults.fail_next("send", count=5)
        with pytest.raises(qr.ConnectionFailedError):
            await client.send_message("orders", qr.Message(_body(10)))
        with pytest.raises(qr.QueueError):  # the circuit opens on the 5th failure
            await client.send_message("orders", qr.Message(_body(11)))
        clock.advance(60.0)
        for n in range(3):  # half-open probes close it again
            await client.send_message("orders", qr.Message(_body(20 + n)))
        await provider.send(qr.QueueName("orders"), [qr.Message(_body(30))])  # plaintext
        other = qr.StaticKeyProvider(EncryptionKey("k2", bytes(32)))
        stranger = qr.QueueClient(provider, config, keys=other)  # not closed: shares the provider
        await stranger.send_message("orders", qr.Message(_body(31)))  # a key we do not have
        for message in await client.receive_messages("orders", 10, timeout=0):
            await client.complete_message(message.receipt)

    # SQS with a secret access key, against the moto server
    from queue_runtime.providers.aws import SqsProvider
    from tests import sqs_server

    await sqs_server.reset()
    sqs = SqsProvider(sqs_server.config(secret_access_key=AWS_SECRET, visibility_timeout=5.0))
    await sqs.create_queue("orders")
    async with qr.QueueClient(sqs) as client:
        await _workload(client, "orders")

    # Azure Service Bus with a connection string, on the fake namespace
    from queue_runtime.providers.azure.provider import AzureServiceBusProvider
    from tests.azure.fake_servicebus import FakeServiceBus, VirtualClock

    azure_clock = qr.ManualClock()
    virtual = VirtualClock(azure_clock)
    bus = FakeServiceBus(azure_clock, lock_duration=30.0, max_delivery_count=5)
    bus.create_queue("orders")
    azure = AzureServiceBusProvider(
        qr.AzureServiceBusConfig(connection_string=qr.Secret(AZURE_CONNECTION_STRING)),
        clock=virtual,
        client=bus,
    )
    try:
        async with qr.QueueClient(azure, clock=azure_clock) as client:
            await _workload(client, "orders")
    finally:
        virtual.close()

    # the capture saw the workload (so an empty capture cannot pass) ...
    messages = {record.getMessage() for record in captured}
    assert "sent a message" in messages
    assert "received a message" in messages
    assert {"completed a message", "abandoned a message"} <= messages
    assert "dead-lettered a message (ValueError)" in messages
    assert "dead-lettered a message (_OTHER)" in messages
    assert any(m.startswith("send failed") for m in messages)  # retries
    assert any("circuit opened" in m for m in messages)
    assert "received an unencrypted message" in messages
    assert any(m.startswith("could not decrypt") for m in messages)
    assert any(m.startswith("requeued") for m in messages)
    assert any(m.startswith("purged") for m in messages)
    # ... and no marker anywhere in it
    leaks = [
        (record.name, record.getMessage(), marker)
        for record in captured
        for marker in MARKERS
        if marker in _everything_in(record)
    ]
    assert leaks == []
    assert _unstructured(captured) == []


async def test_client_log_records_carry_the_structured_fields(
    captured: list[logging.LogRecord],
) -> None:
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        await client.send_message("orders", qr.Message(b"x", session_id="o/r/1", message_id="m-1"))
        [message] = await client.receive_messages("orders", 1, timeout=0)
        await client.complete_message(message.receipt)

    records = [r for r in captured if r.name == "queue_runtime.client"]
    assert [r.getMessage() for r in records] == [
        "sent a message",
        "received a message",
        "completed a message",
    ]
    for record in records:
        fields = {name: getattr(record, name) for name in telemetry.LOG_FIELDS}
        assert fields["queue"] == "orders"
        assert fields["operation"] in {"send", "receive", "complete"}
    received = vars(records[1])
    assert (received["message_id"], received["session_id"], received["delivery_count"]) == (
        "m-1",
        "o/r/1",
        1,
    )


async def test_a_bot_logs_no_body_even_when_handlers_fail_with_it(
    captured: list[logging.LogRecord],
) -> None:
    """Handlers' errors often quote the payload; the bot logs their type, never their text."""
    import asyncio

    from queue_runtime.bot import Bot, Event, Handler, PermanentFailure

    class Leaky(Handler):
        event_types = ("push",)

        async def handle(self, event: Event) -> None:
            payload = event.json()
            if payload["n"] == 0:
                raise PermanentFailure(f"cannot handle {payload}")
            if payload["n"] == 1 and event.attempt == 1:
                raise ValueError(f"bad token {payload['token']}")

    provider = InMemoryProvider()
    async with qr.QueueClient(provider) as client:
        await client.send_messages(
            "events",
            [qr.Message(_body(n), attributes={"event_type": "push"}) for n in range(3)]
            + [qr.Message(_body(9), attributes={"event_type": "unknown"})],
        )
        retry = qr.RetryPolicy(max_attempts=1, initial_delay=0.01)
        async with Bot(client, "events", [Leaky], retry=retry, receive_wait=0.05) as bot:
            while bot.stats().completed + bot.stats().dead_lettered < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    messages = {record.getMessage() for record in captured}
    assert "handler failed (ValueError), handling it again in place" in messages
    assert any(m.startswith("dead-lettered") for m in messages)
    leaks = [
        (record.name, record.getMessage()) for record in captured if BODY in _everything_in(record)
    ]
    assert leaks == []
    assert _unstructured(captured) == []


def _unstructured(records: list[logging.LogRecord]) -> list[str]:
    """Records at INFO and above without the structured fields (``operation`` et al.)."""
    return [
        f"{record.name}: {record.getMessage()}"
        for record in records
        if record.levelno >= logging.INFO and not hasattr(record, "operation")
    ]
