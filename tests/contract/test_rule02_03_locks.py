"""Rules 2 and 3: peek-lock, lock expiry, redelivery, and settling exactly once."""

from __future__ import annotations

import pytest

import queue_runtime as qr

from .harness import Harness


async def _one(harness: Harness, queue: str) -> qr.ReceivedMessage:
    message = await harness.client.receive_message(queue, timeout=5.0)
    assert message is not None
    return message


async def test_a_locked_message_is_invisible_to_other_consumers(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"only"))

    await _one(harness, queue)
    second = await harness.client.receive_message(queue, timeout=0.2)

    assert second is None


async def test_an_expired_lock_redelivers_with_a_higher_count_and_voids_the_old_receipt(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"again"))
    first = await _one(harness, queue)

    await harness.pass_time(harness.lock_duration + 1)
    second = await _one(harness, queue)

    assert second.message_id == first.message_id
    assert second.delivery_count == first.delivery_count + 1
    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.complete_message(first.receipt)
    await harness.client.complete_message(second.receipt)


async def test_complete_removes_the_message_for_good(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"done"))
    message = await _one(harness, queue)

    await harness.client.complete_message(message.receipt)
    await harness.pass_time(harness.lock_duration + 1)

    assert await harness.client.receive_message(queue, timeout=0.2) is None


async def test_a_second_complete_fails_and_changes_nothing(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_messages(queue, [qr.Message(b"a"), qr.Message(b"b")])
    first = await _one(harness, queue)
    await harness.client.complete_message(first.receipt)

    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.complete_message(first.receipt)
    remaining = await _one(harness, queue)

    assert remaining.body == b"b"
    assert remaining.delivery_count == 1


async def test_complete_with_an_expired_receipt_fails_and_changes_nothing(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"late"))
    message = await _one(harness, queue)
    await harness.pass_time(harness.lock_duration + 1)

    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.complete_message(message.receipt)
    again = await _one(harness, queue)

    assert again.body == b"late"
    assert again.delivery_count == 2


async def test_a_receipt_cannot_settle_a_message_of_another_queue(harness: Harness) -> None:
    queue, other = await harness.queue(sessions=False), await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"mine"))
    await harness.client.send_message(other, qr.Message(b"theirs"))
    mine = await _one(harness, queue)
    theirs = await _one(harness, other)
    forged = qr.ReceiptHandle(
        provider_id=mine.receipt.provider_id,
        queue=qr.QueueName(other),
        token=mine.receipt.token,
        locked_until=mine.receipt.locked_until,
        native=mine.receipt.native,
    )

    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.complete_message(forged)
    await harness.client.complete_message(theirs.receipt)
    await harness.client.complete_message(mine.receipt)


async def test_abandon_makes_the_message_visible_again_at_once(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"retry me"))
    first = await _one(harness, queue)

    await harness.client.abandon_message(first.receipt)
    second = await _one(harness, queue)

    assert second.message_id == first.message_id
    assert second.delivery_count == 2
    with pytest.raises(qr.InvalidReceiptError):
        await harness.client.complete_message(first.receipt)


async def test_abandon_with_a_delay_hides_the_message_until_the_delay_passed(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"later"))
    first = await _one(harness, queue)

    await harness.client.abandon_message(first.receipt, delay=2.0)
    hidden = await harness.client.receive_message(queue, timeout=0.1)
    await harness.pass_time(2.5)
    visible = await harness.client.receive_message(queue, timeout=5.0)

    assert hidden is None
    assert visible is not None
    assert visible.message_id == first.message_id


async def test_renewing_a_lock_keeps_the_message_invisible_past_the_first_expiry(
    harness: Harness,
) -> None:
    queue = await harness.queue(sessions=False)
    await harness.client.send_message(queue, qr.Message(b"slow work"))
    message = await _one(harness, queue)
    first_expiry = message.locked_until

    await harness.pass_time(harness.lock_duration * 0.6)
    renewed = await harness.client.renew_message_lock(message.receipt)
    await harness.pass_time(harness.lock_duration * 0.6)

    assert renewed > first_expiry
    assert message.locked_until == renewed
    assert await harness.client.receive_message(queue, timeout=0.1) is None
    await harness.client.complete_message(message.receipt)
