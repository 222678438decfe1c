"""The command line over the Azure Service Bus adapter (on the fake SDK client), in-process.

The adapter runs unchanged; only the SDK client under it is the fake of
:mod:`tests.azure.fake_servicebus`. Configuration through the environment is
covered in ``test_commands.py`` (a real namespace is needed to go further).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import queue_runtime as qr
from queue_runtime.cli import ExitCode
from queue_runtime.providers.azure import AzureServiceBusProvider
from tests.azure.fake_servicebus import FakeServiceBus, VirtualClock

from .conftest import Cli

CONNECTION_STRING = (
    "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=Root;"
    "SharedAccessKey=ZmFrZS1rZXktbm90LWEtc2VjcmV0"
)


@pytest.fixture
async def azure() -> AsyncIterator[tuple[FakeServiceBus, qr.QueueClient]]:
    clock = qr.ManualClock()
    provider_clock = VirtualClock(clock)
    bus = FakeServiceBus(clock)
    bus.create_queue("events", requires_session=True)
    bus.create_queue("jobs")
    config = qr.AzureServiceBusConfig(connection_string=CONNECTION_STRING)  # type: ignore[arg-type]
    provider = AzureServiceBusProvider(config, clock=provider_clock, client=bus)
    try:
        async with qr.QueueClient(provider, clock=clock) as client:
            yield bus, client
    finally:
        provider_clock.close()


async def test_send_then_receive_takes_the_next_session(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    bus, client = azure

    sent = await cli("send", "events", "--body", "opened", "--session", "o/r/pull/1", client=client)
    received = await cli("--json", "receive", "events", "--timeout", "2", client=client)

    assert sent.code == received.code == ExitCode.OK, sent.err + received.err
    [record] = received.json()
    assert (record["session_id"], record["body"]) == ("o/r/pull/1", "opened")
    assert bus.active_count("events") == 0


async def test_dlq_stats_and_health_where_azure_cannot_count(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    _, client = azure
    await client.send_message("jobs", qr.Message(b"poison"))
    message = await client.receive_message("jobs", timeout=2.0)
    assert message is not None
    await client.dead_letter_message(message.receipt, "ValueError")

    stats = await cli("--json", "dlq", "stats", "jobs", client=client)
    health = await cli("--json", "health", "jobs", "--max-dead-letters", "0", client=client)

    assert stats.code == ExitCode.OK, stats.err
    assert stats.json()["by_reason"] == {"ValueError": 1}
    assert stats.json()["dead_letter_depth"] is None  # counted by peeking instead
    assert health.code == ExitCode.OK, health.err  # the depth is unknown, not too deep
    checks = {c["name"]: c for c in health.json()["checks"]}
    assert checks["provider"]["status"] == "healthy"
    assert checks["dead_letters"]["detail"] == "depth unknown (the provider cannot tell)"


async def test_health_of_a_missing_azure_queue_is_unhealthy(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    _, client = azure

    result = await cli("health", "nope", client=client)

    assert result.code == ExitCode.FAILED
    assert "QueueNotFoundError" not in result.err  # a report, not an error
    assert result.out.startswith("unhealthy\n")


async def _dead_letter(
    client: qr.QueueClient, queue: str, message: qr.Message, reason: str
) -> None:
    await client.send_message(queue, message)
    if message.session_id is None:
        received = await client.receive_message(queue, timeout=2.0)
        assert received is not None
        await client.dead_letter_message(received.receipt, reason, f"{reason} failed")
        return
    session = await client.accept_session(queue, message.session_id, timeout=2.0)
    assert session is not None
    async with session:
        received = await session.receive_message(timeout=2.0)
        assert received is not None
        await session.dead_letter_message(received.receipt, reason, f"{reason} failed")


async def test_peek_gives_the_messages_back_at_once_on_plain_and_session_queues(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    bus, client = azure
    await client.send_message("jobs", qr.Message(b"look", message_id="m-1"))
    await client.send_message(
        "events", qr.Message(b"pr", message_id="m-2", session_id="o/r/pull/1")
    )

    plain = await cli("peek", "jobs", "--timeout", "2", client=client)
    sessions = await cli("--json", "peek", "events", "--timeout", "2", client=client)

    assert plain.code == sessions.code == ExitCode.OK, plain.err + sessions.err
    assert "message m-1" in plain.out
    assert "body (4 bytes): look" in plain.out
    [record] = sessions.json()
    assert (record["message_id"], record["session_id"], record["body"]) == (
        "m-2",
        "o/r/pull/1",
        "pr",
    )
    # no lock to wait out (the virtual clock has not moved): both are there again
    assert bus.active_count("jobs") == 1
    again = await client.receive_message("jobs", timeout=0.5)
    assert again is not None
    assert again.delivery_count == 2  # a peek counts as a delivery, as documented
    session = await client.accept_session("events", "o/r/pull/1", timeout=0.5)
    assert session is not None
    async with session:
        taken = await session.receive_message(timeout=0.5)
        assert taken is not None
        assert (taken.message_id, taken.delivery_count) == ("m-2", 2)


async def test_peek_of_a_session_another_consumer_holds_fails_with_one_line(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    _, client = azure
    await client.send_message("events", qr.Message(b"pr", session_id="o/r/pull/1"))
    holder = await client.accept_session("events", "o/r/pull/1", timeout=0.5)
    assert holder is not None
    try:
        result = await cli(
            "peek", "events", "--session", "o/r/pull/1", "--timeout", "1", client=client
        )
    finally:
        await holder.close()

    assert result.code == ExitCode.FAILED
    assert "locked by another" in result.err
    assert "Traceback" not in result.err
    assert client.circuit.state is qr.CircuitState.CLOSED


async def test_dlq_list_requeue_and_purge_through_azure(
    cli: Cli, azure: tuple[FakeServiceBus, qr.QueueClient]
) -> None:
    _, client = azure
    await _dead_letter(client, "jobs", qr.Message(b"v", message_id="m-v"), "ValueError")
    await _dead_letter(client, "jobs", qr.Message(b"k", message_id="m-k"), "KeyError")
    await _dead_letter(
        client, "events", qr.Message(b"s", message_id="m-s", session_id="o/r/pull/9"), "KeyError"
    )

    listed = await cli("--json", "dlq", "list", "jobs", client=client)
    human = await cli("dlq", "list", "events", "--body", client=client)
    requeued = await cli("dlq", "requeue", "jobs", "--reason", "KeyError", "-y", client=client)
    requeued_session = await cli("--json", "dlq", "requeue", "events", "--yes", client=client)
    purged = await cli("--json", "dlq", "purge", "jobs", "--yes", client=client)

    for result in (listed, human, requeued, requeued_session, purged):
        assert result.code == ExitCode.OK, result.err
    assert sorted((r["message_id"], r["dead_letter_reason"]) for r in listed.json()) == [
        ("m-k", "KeyError"),
        ("m-v", "ValueError"),
    ]
    assert "dead_letter_reason: KeyError" in human.out
    assert "dead_letter_description: KeyError failed" in human.out
    assert "body (1 bytes): s" in human.out
    assert requeued.out == "requeued 1 to jobs\n"
    assert requeued_session.json() == {"queue": "events", "requeued": 1}
    assert purged.json() == {"queue": "jobs", "purged": 1}  # the ValueError one
    assert await client.peek_dead_letters("jobs") == []
    assert await client.peek_dead_letters("events") == []

    back = await client.receive_message("jobs", timeout=0.5)
    assert back is not None
    assert (back.message_id, back.body) == ("m-k", b"k")
    assert back.attributes.get("queue_runtime.requeue_count") == "1"
    session = await client.accept_session("events", "o/r/pull/9", timeout=0.5)
    assert session is not None  # requeued into its own session
    async with session:
        again = await session.receive_message(timeout=0.5)
        assert again is not None
        assert (again.message_id, again.body) == ("m-s", b"s")
