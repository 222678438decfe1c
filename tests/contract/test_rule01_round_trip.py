"""Rule 1: a sent message is received with identical body, attributes, ids."""

from __future__ import annotations

import queue_runtime as qr

from .harness import Harness, drain, receive_one


async def test_received_message_is_identical_to_the_sent_one(harness: Harness) -> None:
    queue = await harness.queue()
    sent = qr.Message(
        b'{"action":"opened","n":42}\x00\xff',
        attributes={"event_type": "pull_request", "x-github-delivery": "abc-123"},
        session_id="octo/repo/pull/42",
        correlation_id="corr-7",
        content_type="application/json",
    )

    await harness.client.send_message(queue, sent)
    received = await receive_one(harness, queue)

    assert received is not None
    assert received.body == sent.body
    assert dict(received.attributes) == dict(sent.attributes)
    assert received.session_id == "octo/repo/pull/42"
    assert received.correlation_id == "corr-7"
    assert received.message_id == sent.message_id
    assert received.content_type == "application/json"
    assert received.delivery_count == 1
    assert received.enqueued_at <= received.delivered_at
    assert received.locked_until > received.delivered_at
    await harness.client.complete_message(received.receipt)


async def test_a_message_without_session_or_attributes_round_trips(harness: Harness) -> None:
    queue = await harness.queue(sessions=False)
    sent = qr.Message(b"")

    await harness.client.send_message(queue, sent)
    received = await receive_one(harness, queue)

    assert received is not None
    assert received.body == b""
    assert dict(received.attributes) == {}
    assert received.session_id is None
    assert received.correlation_id is None
    assert received.message_id == sent.message_id


async def test_a_batch_arrives_complete_and_in_order(harness: Harness) -> None:
    queue = await harness.queue()
    sent = [qr.Message(f"{i}".encode(), session_id="s/1") for i in range(25)]

    ids = await harness.client.send_messages(queue, sent)
    received = await drain(harness, queue, len(sent))

    assert ids == [m.message_id for m in sent]
    assert [m.body for m in received] == [m.body for m in sent]


async def test_to_message_forwards_an_identical_copy(harness: Harness) -> None:
    queue, other = await harness.queue(), await harness.queue()
    await harness.client.send_message(
        queue, qr.Message(b"fwd", attributes={"k": "v"}, session_id="s", correlation_id="c")
    )
    first = await receive_one(harness, queue)
    assert first is not None

    await harness.client.send_message(other, first.to_message())
    await harness.client.complete_message(first.receipt)
    copy = await receive_one(harness, other)

    assert copy is not None
    assert (copy.body, dict(copy.attributes), copy.session_id, copy.correlation_id) == (
        b"fwd",
        {"k": "v"},
        "s",
        "c",
    )
    assert copy.message_id == first.message_id
