"""Rules 9 and 10: missing queues, oversize messages, and receive timeouts."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

import queue_runtime as qr

from .harness import Harness


async def test_sending_to_a_missing_queue_names_it_and_sends_nothing(harness: Harness) -> None:
    client = harness.strict_client()

    with pytest.raises(qr.QueueNotFoundError) as caught:
        await client.send_message("no-such-queue", qr.Message(b"lost?"))

    assert caught.value.queue == "no-such-queue"
    assert "no-such-queue" in str(caught.value)


async def test_an_oversize_message_is_rejected_before_anything_is_sent(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    limit = harness.client.max_message_size
    small = qr.Message(b"fits")
    large = qr.Message(b"x" * (limit + 1))

    with pytest.raises(qr.MessageTooLargeError) as caught:
        await harness.client.send_messages(queue, [small, large])

    assert (caught.value.size, caught.value.max_size) == (limit + 1, limit)
    assert await harness.client.receive_message(queue, timeout=0.2) is None


async def test_a_message_exactly_at_the_limit_is_accepted(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    limit = harness.client.max_message_size
    body = b"y" * (limit - len("k") - len("v"))

    await harness.client.send_message(queue, qr.Message(body, attributes={"k": "v"}))
    received = await harness.client.receive_message(queue, timeout=5.0)

    assert received is not None
    assert received.body == body


async def test_receive_on_an_empty_queue_returns_nothing_at_the_timeout(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)

    started = time.monotonic()
    message = await harness.client.receive_message(queue, timeout=0.5)
    elapsed = time.monotonic() - started

    assert message is None
    assert 0.4 <= elapsed <= 0.6


async def test_a_waiting_receive_can_be_cancelled(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    waiting = asyncio.create_task(harness.client.receive_message(queue, timeout=10.0))
    await asyncio.sleep(0.1)

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    await harness.client.send_message(queue, qr.Message(b"still there"))
    received = await harness.client.receive_message(queue, timeout=5.0)
    assert received is not None
    assert received.body == b"still there"


async def test_a_scheduled_message_appears_only_when_due(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    sent_at = harness.now() + timedelta(seconds=3)

    await harness.client.schedule_message(queue, qr.Message(b"tick"), sent_at)
    early = await harness.client.receive_message(queue, timeout=0.2)
    await harness.pass_time(4.0)
    due = await harness.client.receive_message(queue, timeout=5.0)

    assert early is None
    assert due is not None
    assert due.body == b"tick"
