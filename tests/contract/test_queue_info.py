"""The health hook ``queue_info``: every provider answers it without consuming a message.

Counts are exact on memory, approximate on SQS (exact on moto), and unknown
(``None``) on Azure Service Bus (it would need the management API).
"""

from __future__ import annotations

import pytest

import queue_runtime as qr
from queue_runtime.health import (
    HealthStatus,
    QueueInfo,
    SupportsQueueInfo,
    check_provider,
    probe_queue,
)

from .harness import Harness, drain


def _count(client: qr.QueueClient, value: int) -> int | None:
    """What the provider reports for ``value`` messages: Azure cannot count."""
    return None if client.provider_type is qr.ProviderType.AZURE_SERVICE_BUS else value


async def _info(client: qr.QueueClient, queue: str) -> QueueInfo:
    provider = client.provider
    assert isinstance(provider, SupportsQueueInfo), "every built-in provider has the hook"
    return await provider.queue_info(qr.QueueName(queue))


async def test_queue_info_takes_no_delivery_from_any_message(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_messages(queue, [qr.Message(f"m{i}".encode()) for i in range(3)])

    first = await _info(harness.client, queue)
    await _info(harness.client, queue)

    client = harness.client
    assert (first.depth, first.in_flight) == (_count(client, 3), _count(client, 0))
    received = await drain(harness, queue, 3)
    assert sorted(m.body for m in received) == [b"m0", b"m1", b"m2"]
    assert [m.delivery_count for m in received] == [1, 1, 1]


async def test_queue_info_tells_waiting_from_in_flight_messages(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_messages(queue, [qr.Message(b"a"), qr.Message(b"b")])
    held = await harness.client.receive_message(queue, timeout=5.0)
    assert held is not None

    info = await _info(harness.client, queue)

    client = harness.client
    assert (info.depth, info.in_flight) == (_count(client, 1), _count(client, 1))
    await harness.client.complete_message(held.receipt)


async def test_queue_info_counts_dead_letters_when_the_provider_can_tell(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    client = harness.client
    assert (await _info(client, queue)).dead_letter_depth == _count(client, 0)
    await harness.client.send_message(queue, qr.Message(b"poison"))
    message = await harness.client.receive_message(queue, timeout=5.0)
    assert message is not None
    await harness.client.dead_letter_message(message.receipt, "ValueError")

    info = await _info(harness.client, queue)

    assert (info.dead_letter_depth, info.depth) == (_count(client, 1), _count(client, 0))
    assert len(await harness.client.peek_dead_letters(queue)) == 1  # still there


async def test_queue_info_of_a_missing_queue_raises_queue_not_found(harness: Harness) -> None:
    client = harness.strict_client()

    with pytest.raises(qr.QueueNotFoundError):
        await _info(client, "no-such-queue")


async def test_a_probe_of_a_missing_queue_reports_the_provider_unhealthy(
    harness: Harness,
) -> None:
    client = harness.strict_client()

    probe = await probe_queue(client, "no-such-queue", timeout=10.0)
    result = check_provider(probe)

    assert isinstance(probe.error, qr.QueueNotFoundError)
    assert result.status is HealthStatus.UNHEALTHY
    assert "no-such-queue" in result.detail


async def test_a_probe_of_a_live_queue_reports_the_provider_healthy(harness: Harness) -> None:
    queue = await harness.queue(sessions=True)
    await harness.client.send_message(queue, qr.Message(b"x", session_id="s-1"))

    probe = await probe_queue(harness.client, queue, timeout=10.0)

    assert probe.ok, probe.error
    assert check_provider(probe).status is HealthStatus.HEALTHY
    await drain(harness, queue, 1)
