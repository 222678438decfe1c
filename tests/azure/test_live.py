"""Live tests against a real Azure Service Bus namespace (skipped without one).

They run only when ``QUEUE_RUNTIME_AZURE_CONNECTION_STRING`` is set (a SAS
connection string with Send and Listen rights; Manage is not needed) and use
two existing queues, which they drain first, so give them queues of their own:

* ``QUEUE_RUNTIME_TEST_AZURE_QUEUE`` (default ``queue-runtime-test``): sessions
  disabled, lock duration of at least 30 s, max delivery count of at least 3;
* ``QUEUE_RUNTIME_TEST_AZURE_SESSION_QUEUE`` (default
  ``queue-runtime-test-sessions``): sessions enabled.

(The queue variables are not ``QUEUE_RUNTIME_AZURE_*``: that prefix is the
configuration's, and ``load_config`` rejects unknown ``azure.*`` settings.)

These check what the fake cannot: the service's delivery count, its error
conditions and messages (session refusals, lock loss), the real size limit of
a message, and session locks over AMQP.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

import queue_runtime as qr
from queue_runtime.providers.azure import AzureServiceBusProvider

CONNECTION_STRING = os.environ.get("QUEUE_RUNTIME_AZURE_CONNECTION_STRING", "")
QUEUE = os.environ.get("QUEUE_RUNTIME_TEST_AZURE_QUEUE", "queue-runtime-test")
SESSION_QUEUE = os.environ.get(
    "QUEUE_RUNTIME_TEST_AZURE_SESSION_QUEUE", "queue-runtime-test-sessions"
)

pytestmark = pytest.mark.skipif(
    not CONNECTION_STRING,
    reason="QUEUE_RUNTIME_AZURE_CONNECTION_STRING is not set: no live Azure Service Bus namespace",
)


async def _drain(client: qr.QueueClient) -> None:
    """Complete whatever earlier runs left in the test queues and their DLQs."""
    while batch := await client.receive_messages(QUEUE, 100, timeout=1.0):
        for message in batch:
            await client.complete_message(message.receipt)
    while (session := await client.accept_session(SESSION_QUEUE, timeout=1.0)) is not None:
        async with session:
            while batch := await session.receive_messages(100, timeout=1.0):
                for message in batch:
                    await session.complete_message(message.receipt)
    for queue in (QUEUE, SESSION_QUEUE):
        await client.purge_dead_letters(queue)


@pytest.fixture
async def client() -> AsyncIterator[qr.QueueClient]:
    config = qr.QueueConfig(
        provider=qr.AzureServiceBusConfig(connection_string=CONNECTION_STRING),  # type: ignore[arg-type]
        retry=qr.RetryPolicy(max_attempts=1),
    )
    async with await qr.create_client(config) as chosen:
        await _drain(chosen)
        yield chosen


async def _mine(client: qr.QueueClient, message_id: str) -> qr.ReceivedMessage:
    """Receive until the message with ``message_id`` comes (others are completed)."""
    for _ in range(20):
        received = await client.receive_message(QUEUE, timeout=5.0)
        assert received is not None, f"message {message_id} did not arrive"
        if received.message_id == message_id:
            return received
        await client.complete_message(received.receipt)
    raise AssertionError(f"message {message_id} did not arrive")


async def test_a_message_round_trips_with_delivery_count_one(client: qr.QueueClient) -> None:
    sent = qr.Message(
        b"\x00live\xff",
        attributes={"event_type": "push", "ü": "ä"},
        correlation_id="corr-1",
        content_type="application/octet-stream",
    )
    await client.send_message(QUEUE, sent)

    received = await _mine(client, sent.message_id)

    assert received.body == sent.body
    assert dict(received.attributes) == dict(sent.attributes)
    assert (received.correlation_id, received.content_type) == ("corr-1", sent.content_type)
    assert received.delivery_count == 1
    assert received.locked_until > received.delivered_at
    await client.complete_message(received.receipt)
    with pytest.raises(qr.InvalidReceiptError):
        await client.complete_message(received.receipt)


async def test_abandon_redelivers_with_a_higher_count_and_renewal_extends_the_lock(
    client: qr.QueueClient,
) -> None:
    sent = qr.Message(b"again")
    await client.send_message(QUEUE, sent)
    first = await _mine(client, sent.message_id)
    before = first.locked_until

    renewed = await client.renew_message_lock(first.receipt)
    await client.abandon_message(first.receipt)
    second = await _mine(client, sent.message_id)

    assert renewed >= before
    assert second.delivery_count == 2
    await client.complete_message(second.receipt)


async def test_a_session_keeps_order_state_and_its_lock(client: qr.QueueClient) -> None:
    session_id = f"live/{uuid.uuid4()}"
    await client.send_messages(
        SESSION_QUEUE, [qr.Message(f"{i}".encode(), session_id=session_id) for i in range(3)]
    )
    session = await client.accept_session(SESSION_QUEUE, session_id, timeout=10.0)
    assert session is not None
    async with session:
        with pytest.raises(qr.SessionLockedError):
            await client.accept_session(SESSION_QUEUE, session_id, timeout=5.0)
        bodies: list[bytes] = []
        while len(bodies) < 3 and (batch := await session.receive_messages(10, timeout=5.0)):
            for message in batch:
                assert message.delivery_count == 1
                assert message.locked_until == session.locked_until
                bodies.append(message.body)
                await session.complete_message(message.receipt)
        await session.set_state(b"step-3")
        assert await session.get_state() == b"step-3"
        before = session.locked_until
        assert await session.renew_session_lock() >= before

    assert bodies == [b"0", b"1", b"2"]


async def test_the_service_tells_which_queues_have_sessions(client: qr.QueueClient) -> None:
    started = time.monotonic()

    assert await client.receive_message(SESSION_QUEUE, timeout=2.0) is None
    with pytest.raises(qr.SessionsNotSupportedError):
        await client.accept_session(QUEUE, timeout=2.0)
    assert client.session_support(QUEUE) is qr.SessionSupport.NONE
    assert await client.accept_session(SESSION_QUEUE, timeout=2.0) is None
    assert time.monotonic() - started < 30


async def test_dead_letters_keep_their_reason_and_can_be_requeued(client: qr.QueueClient) -> None:
    sent = qr.Message(b"poison", attributes={"k": "v"})
    await client.send_message(QUEUE, sent)
    message = await _mine(client, sent.message_id)

    await client.dead_letter_message(message.receipt, "ValueError", "bad payload")
    letters = [m for m in await client.peek_dead_letters(QUEUE) if m.message_id == sent.message_id]
    requeued = await client.requeue_dead_letters(
        QUEUE, predicate=lambda m: m.message_id == sent.message_id
    )
    back = await _mine(client, sent.message_id)

    assert [(m.dead_letter_reason, m.dead_letter_description) for m in letters] == [
        ("ValueError", "bad payload")
    ]
    assert letters[0].delivery_count >= 1
    assert letters[0].attributes == {"k": "v"}
    assert requeued == 1
    assert back.attributes["k"] == "v"
    await client.complete_message(back.receipt)


async def test_a_message_at_the_client_size_limit_is_accepted_and_one_byte_more_is_not(
    client: qr.QueueClient,
) -> None:
    limit = client.max_message_size
    fits = qr.Message(b"y" * (limit - 2), attributes={"k": "v"})

    with pytest.raises(qr.MessageTooLargeError):
        await client.send_message(QUEUE, qr.Message(b"x" * (limit + 1)))
    await client.send_message(QUEUE, fits)
    received = await _mine(client, fits.message_id)

    assert received.body == fits.body
    await client.complete_message(received.receipt)


async def test_scheduled_messages_can_be_cancelled(client: qr.QueueClient) -> None:
    provider = client.provider
    assert isinstance(provider, AzureServiceBusProvider)
    at = datetime.now(UTC) + timedelta(minutes=5)

    numbers = await provider.schedule_messages(QUEUE, [qr.Message(b"never")], at)
    await provider.cancel_scheduled_messages(QUEUE, numbers)

    assert len(numbers) == 1


async def test_a_missing_queue_is_reported_by_name(client: qr.QueueClient) -> None:
    missing = f"queue-runtime-missing-{uuid.uuid4().hex[:8]}"

    with pytest.raises(qr.QueueNotFoundError) as caught:
        await client.send_message(missing, qr.Message(b"lost?"))

    assert caught.value.queue == missing
