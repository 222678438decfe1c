"""A message whose last allowed delivery expires is dead-lettered once, not twice.

The bug this caught (fixed, see docs/reliability.md): when the lock of a
message's last allowed delivery expired, the SQS provider copied it to the DLQ
("lock expired on delivery 1 of 1") and then deleted the original with the
expired receipt. A receive running meanwhile — a bot's
receiver polls all the time — lets SQS apply the queue's redrive policy to
the now visible message, which moves the original to the same DLQ. The DLQ
then holds the message twice (and a requeue would send it back twice). The
fault soak met this after lost receive answers left deliveries to expire.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider
from tests import sqs_server

TRIES = 6
"""Scenarios run side by side: each hits the race about every other time."""


async def dead_letters_after_last_lock_expires(name: str) -> list[str | None]:
    provider = SqsProvider(
        sqs_server.config(visibility_timeout=1.0, max_delivery_count=1, wait_time=0.0)
    )
    async with qr.QueueClient(provider, qr.QueueConfig(provider=provider.config)) as client:
        await provider.create_queue(name)  # redrive policy: maxReceiveCount 1
        await client.send_message(name, qr.Message(b"x", session_id="s"))
        [message] = await client.receive_messages(name, 10, timeout=5.0)
        assert message.delivery_count == 1  # the last allowed one; it is never settled
        until = time.monotonic() + 2.5
        while time.monotonic() < until:  # poll on, as a bot's receiver does
            assert await client.receive_messages(name, 10, timeout=0.05) == []
        letters = await client.peek_dead_letters(name)
    return [letter.dead_letter_description for letter in letters]


@pytest.mark.timeout(60)
async def test_a_message_whose_last_lock_expires_is_dead_lettered_once(
    sqs: SqsProvider,
) -> None:
    found = await asyncio.gather(
        *(dead_letters_after_last_lock_expires(f"expiry-{n}.fifo") for n in range(TRIES))
    )

    assert [len(descriptions) for descriptions in found] == [1] * TRIES, found
