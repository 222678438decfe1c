"""How the SQS adapter polls: long polls while it holds nothing, and no request storm.

SQS bills and throttles per request. A receive waits in one long poll as long as
the configured ``wait_time`` and its own timeout allow; while the provider holds
messages of a FIFO queue, SQS would hand out nothing of their groups anyway, so
it polls briefly and asks again when one of its own settles frees a group.
"""

from __future__ import annotations

import asyncio
import time

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.aws import SqsProvider

from .conftest import record_calls, record_receive_waits


async def empty_receive(provider: SqsProvider, timeout: float) -> tuple[list[int], float]:
    """Receive from a new, empty queue: the polls' ``WaitTimeSeconds`` and the seconds taken."""
    queue = qr.QueueName("idle")
    await provider.create_queue(queue)
    waits = await record_receive_waits(provider)
    started = time.monotonic()
    assert await provider.receive(queue, 10, timeout) == []
    return waits, time.monotonic() - started


async def test_a_receive_on_an_empty_queue_is_one_long_poll_that_ends_on_time(
    provider: SqsProvider,
) -> None:
    waits, took = await empty_receive(provider, 2.0)

    assert waits == [2]  # not a long poll of 1 s and then short polls every 0.1 s
    assert 1.9 <= took <= 2.5


async def test_a_receive_too_short_for_a_long_poll_asks_once_and_waits_out_its_time(
    provider: SqsProvider,
) -> None:
    waits, took = await empty_receive(provider, 0.6)

    assert waits == [0]
    assert 0.5 <= took <= 0.9


async def test_while_a_fifo_group_is_held_a_settle_triggers_the_next_poll(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    queue = qr.QueueName("held.fifo")
    await provider.create_queue(queue)
    await client.send_messages(
        queue, [qr.Message(b"1", session_id="pr-1"), qr.Message(b"2", session_id="pr-1")]
    )
    [first] = await provider.receive(queue, 1, 1.0)  # SQS now holds back "2" (same group)
    waits = await record_receive_waits(provider)
    calls = await record_calls(provider)

    waiting = asyncio.ensure_future(provider.receive(queue, 10, 5.0))
    await asyncio.sleep(0.5)
    polls_while_held = calls.count("ReceiveMessage")
    completed_at = time.monotonic()
    await provider.complete(first.receipt)
    second = await waiting

    assert [m.body for m in second] == [b"2"]
    assert time.monotonic() - completed_at < 0.5  # not after a long poll ran out
    assert polls_while_held == 1  # one short poll, then waiting for a local change
    assert waits[0] == 0  # the poll made while "1" was held did not wait at SQS
    await provider.complete(second[0].receipt)


async def test_an_idle_bot_asks_sqs_about_once_per_receive_wait(provider: SqsProvider) -> None:
    class Nothing(Handler):
        event_types = ("e",)

        async def handle(self, event: Event) -> None:
            return None

    queue = qr.QueueName("quiet.fifo")
    await provider.create_queue(queue)
    calls = await record_calls(provider)
    client = qr.QueueClient(provider, qr.QueueConfig(provider=provider.config))

    async with Bot(client, queue, [Nothing], receive_wait=1.0):
        await asyncio.sleep(3.0)

    assert 2 <= calls.count("ReceiveMessage") <= 5  # 10 a second before the fix
