"""The actor Bot end to end on SQS FIFO, through a moto server."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler, PermanentFailure
from queue_runtime.dlq import FailureRecord
from queue_runtime.providers.aws import SqsProvider
from tests.aws.conftest import record_calls


async def until(bot: Bot, done: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until ``done()``; fail with the bot's counters if it takes over ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"bot stalled: {bot.stats()}"
        await asyncio.sleep(0.05)


async def test_a_bot_handles_a_fifo_queue_in_order_per_session_and_dead_letters_poison(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    queue = "bot-events.fifo"
    await provider.create_queue(queue)
    seen: dict[str, list[int]] = defaultdict(list)

    class PullRequests(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("pull_request",)

        async def handle(self, event: Event) -> None:
            n = event.json()["n"]
            if event.session_id == "o/r/pull/0" and n == 2:
                raise ValueError("poison")
            seen[event.session_id or "-"].append(n)

    await client.send_messages(
        queue,
        [
            qr.Message.from_json(
                {"n": n}, attributes={"event_type": "pull_request"}, session_id=f"o/r/pull/{s}"
            )
            for n in range(4)
            for s in range(5)
        ],
    )
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
    bot = Bot(client, queue, [PullRequests], retry=retry, max_delivery_count=2, receive_wait=0.2)

    async with bot:
        await until(bot, lambda: bot.stats().completed >= 19 and bot.stats().dead_lettered >= 1)

    assert dict(seen) == {
        **{f"o/r/pull/{s}": [0, 1, 2, 3] for s in range(1, 5)},
        "o/r/pull/0": [0, 1, 3],
    }
    [letter] = await client.peek_dead_letters(queue)
    assert letter.dead_letter_reason == "ValueError"
    assert letter.session_id == "o/r/pull/0"
    assert bot.stats().in_flight == 0


async def test_a_dead_letter_on_sqs_carries_the_bots_failure_record(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    queue = "bot-records.fifo"
    await provider.create_queue(queue)

    class Rejecting(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            raise PermanentFailure("schema mismatch")

    await client.send_message(
        queue, qr.Message(b"{}", attributes={"event_type": "push"}, session_id="o/r")
    )
    bot = Bot(client, queue, [Rejecting], receive_wait=0.2, failure_tracebacks=True)
    async with bot:
        await until(bot, lambda: bot.stats().dead_lettered >= 1)

    [letter] = await client.peek_dead_letters(queue)
    record = FailureRecord.from_attributes(letter.attributes)
    assert letter.dead_letter_reason == "PermanentFailure"
    assert (record.reason, record.handler, record.queue) == ("PermanentFailure", "Rejecting", queue)
    assert record.delivery_count == 1
    assert [a.error for a in record.attempts] == ["PermanentFailure"]
    assert record.traceback is not None
    assert "schema mismatch" in record.traceback
    assert letter.attributes["event_type"] == "push"


async def test_a_poison_message_on_sqs_carries_the_history_of_its_failed_handlings(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    queue = "bot-poison.fifo"
    await provider.create_queue(queue)

    class AlwaysFailing(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            raise ValueError("cannot parse " + "x" * 5000)  # long: the description is cut

    await client.send_message(
        queue, qr.Message(b"{}", attributes={"event_type": "push"}, session_id="o/r")
    )
    # each failure is a failed handling, handled again in place after 0.05 s
    once = qr.RetryPolicy(max_attempts=1, initial_delay=0.05, jitter=0.0)
    bot = Bot(client, queue, [AlwaysFailing], receive_wait=0.2, retry=once, max_delivery_count=3)
    async with bot:
        await until(bot, lambda: bot.stats().dead_lettered >= 1)

    [letter] = await client.peek_dead_letters(queue)
    record = FailureRecord.from_attributes(letter.attributes)
    assert (record.reason, record.handler, record.delivery_count) == (
        "ValueError",
        "AlwaysFailing",
        1,  # the message never went back: no delivery spent but the first
    )
    assert [(a.error, a.delivery) for a in record.attempts] == [("ValueError", 1)] * 3
    assert record.first_failed_at is not None
    assert record.dead_lettered_at is not None
    assert record.first_failed_at <= record.dead_lettered_at  # ISO 8601, UTC
    assert record.first_failed_at == record.attempts[0].at
    assert record.traceback is None  # only with failure_tracebacks=True
    description = letter.dead_letter_description or ""
    assert description.startswith("ValueError: cannot parse xxx")
    assert description.endswith("(delivery 1, 3 attempts in this delivery)")
    assert len(description) <= 1024
    assert letter.session_id == "o/r"


async def test_a_busy_bot_completes_in_batches_of_many_messages_per_request(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    queue = "bot-batches.fifo"
    await provider.create_queue(queue)

    class Slow(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            await asyncio.sleep(0.01)  # many sessions finish together, as under real load

    total = 200
    await client.send_messages(
        queue,
        [
            qr.Message(b"{}", attributes={"event_type": "push"}, session_id=f"o/r/{n}")
            for n in range(total)
        ],
    )
    calls = await record_calls(provider)
    async with Bot(client, queue, [Slow], receive_wait=0.2) as bot:
        await until(bot, lambda: bot.stats().completed >= total)

    assert "DeleteMessage" not in calls
    deletes = calls.count("DeleteMessageBatch")
    assert total / deletes >= 5, f"{deletes} DeleteMessageBatch requests for {total} messages"
