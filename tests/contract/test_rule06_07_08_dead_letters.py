"""Rules 6, 7 and 8: dead-lettering, max delivery count, TTL; plus DLQ tooling."""

from __future__ import annotations

import pytest

import queue_runtime as qr
from queue_runtime.client import REQUEUE_COUNT_ATTRIBUTE

from .harness import Harness, close_sessions, receive_one


async def _one(harness: Harness, queue: str) -> qr.ReceivedMessage:
    message = await receive_one(harness, queue)
    assert message is not None
    return message


async def _dead_letters(harness: Harness, queue: str, count: int) -> list[qr.ReceivedMessage]:
    for _ in range(50):
        letters = await harness.client.peek_dead_letters(queue)
        if len(letters) >= count:
            return letters
        await harness.pass_time(0.2)
    raise AssertionError(f"expected {count} dead letters in {queue}")


async def test_a_dead_lettered_message_keeps_its_metadata_and_says_why(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    sent = qr.Message(
        b"poison", attributes={"event_type": "push"}, session_id="o/r", correlation_id="c-1"
    )
    await harness.client.send_message(queue, sent)
    message = await _one(harness, queue)

    await harness.client.dead_letter_message(message.receipt, "ValueError", "bad payload")
    [letter] = await _dead_letters(harness, queue, 1)

    assert letter.body == b"poison"
    assert letter.message_id == sent.message_id
    assert letter.dead_letter_reason == "ValueError"
    assert letter.dead_letter_description == "bad payload"
    assert letter.attributes["event_type"] == "push"
    assert letter.session_id == "o/r"
    assert letter.correlation_id == "c-1"
    assert letter.delivery_count == 1
    assert await harness.client.receive_message(queue, timeout=0.2) is None


async def test_properties_given_when_dead_lettering_are_attributes_of_the_dead_letter(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    sent = qr.Message(b"poison", attributes={"event_type": "push"}, session_id="o/r")
    await harness.client.send_message(queue, sent)
    message = await _one(harness, queue)
    properties = {
        "queue_runtime.failure.handler": "Pushes",
        "queue_runtime.failure.attempts": '[{"at":"2026-01-01T00:00:00Z","error":"ValueError"}]',
    }

    await harness.client.dead_letter_message(
        message.receipt, "ValueError", "bad payload", properties
    )
    [letter] = await _dead_letters(harness, queue, 1)
    [locked] = await harness.client.receive_dead_letters(queue, 1, timeout=5.0)
    await harness.client.abandon_message(locked.receipt)

    for read in (letter, locked):
        assert {k: read.attributes[k] for k in properties} == properties
        assert read.attributes["event_type"] == "push"
        assert read.dead_letter_reason == "ValueError"
        assert read.dead_letter_description == "bad payload"


async def test_a_message_never_completed_goes_to_the_dlq_after_max_deliveries(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"always fails"))

    counts = []
    for _ in range(harness.max_delivery_count):
        message = await _one(harness, queue)
        counts.append(message.delivery_count)
        await harness.client.abandon_message(message.receipt)
    [letter] = await _dead_letters(harness, queue, 1)

    assert counts == list(range(1, harness.max_delivery_count + 1))
    assert letter.body == b"always fails"
    assert letter.delivery_count == harness.max_delivery_count
    assert letter.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert await harness.client.receive_message(queue, timeout=0.2) is None


async def test_lock_expiry_counts_as_a_failed_delivery(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"crashy consumer"))

    for _ in range(harness.max_delivery_count):
        await _one(harness, queue)
        await harness.pass_time(harness.lock_duration + 1)
    [letter] = await _dead_letters(harness, queue, 1)

    assert letter.delivery_count == harness.max_delivery_count


async def test_an_expired_message_is_not_delivered(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"stale", time_to_live=1.0))
    await harness.client.send_message(queue, qr.Message(b"fresh"))

    await harness.pass_time(2.0)
    message = await _one(harness, queue)

    assert message.body == b"fresh"
    assert await harness.client.receive_message(queue, timeout=0.2) is None


async def test_requeue_sends_dead_letters_back_with_their_session_and_a_count(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    await harness.client.send_message(
        queue, qr.Message(b"again", attributes={"k": "v"}, session_id="o/r/pull/9")
    )
    message = await _one(harness, queue)
    await harness.client.dead_letter_message(message.receipt, "Timeout")
    await _dead_letters(harness, queue, 1)
    await close_sessions(harness)

    requeued = await harness.client.requeue_dead_letters(queue)
    back = await _one(harness, queue)

    assert requeued == 1
    assert back.body == b"again"
    assert back.session_id == "o/r/pull/9"
    assert back.attributes["k"] == "v"
    assert back.attributes[REQUEUE_COUNT_ATTRIBUTE] == "1"
    assert await harness.client.peek_dead_letters(queue) == []


async def test_selective_requeue_leaves_the_rest_in_the_dlq(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_messages(queue, [qr.Message(b"keep"), qr.Message(b"retry")])
    for _ in range(2):
        message = await _one(harness, queue)
        await harness.client.dead_letter_message(message.receipt, "Boom")
    await _dead_letters(harness, queue, 2)

    requeued = await harness.client.requeue_dead_letters(
        queue, predicate=lambda m: m.body == b"retry"
    )
    await harness.pass_time(0.5)

    assert requeued == 1
    assert [m.body for m in await harness.client.peek_dead_letters(queue)] == [b"keep"]
    assert (await _one(harness, queue)).body == b"retry"


async def test_purge_empties_the_dlq(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_messages(queue, [qr.Message(b"1"), qr.Message(b"2")])
    for _ in range(2):
        message = await _one(harness, queue)
        await harness.client.dead_letter_message(message.receipt, "Boom")
    await _dead_letters(harness, queue, 2)

    removed = await harness.client.purge_dead_letters(queue)

    assert removed == 2
    assert await harness.client.peek_dead_letters(queue) == []


async def test_dead_lettering_a_settled_message_fails(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"done"))
    message = await _one(harness, queue)
    await harness.client.complete_message(message.receipt)

    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.dead_letter_message(message.receipt, "Late")
    assert await harness.client.peek_dead_letters(queue) == []


async def test_the_provider_reports_the_delivery_limit_it_dead_letters_by(harness: Harness) -> None:
    # the bot takes this limit for its failed handlings (one owner: the provider's config)
    assert harness.client.max_delivery_count == harness.max_delivery_count
