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
