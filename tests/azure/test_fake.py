"""The fake namespace behaves like Service Bus where the adapter depends on it.

These tests talk to the fake directly, through the SDK's own types, so they
pin down what the adapter tests and the contract suite can rely on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)

from .conftest import World
from .fake_servicebus import FakeReceiver


async def _send(world: World, queue: str, *messages: ServiceBusMessage) -> None:
    sender = world.bus.get_queue_sender(queue)
    batch = await sender.create_message_batch()
    for message in messages:
        batch.add_message(message)
    await sender.send_messages(batch)


async def _one(receiver: FakeReceiver) -> ServiceBusReceivedMessage:
    [message] = await receiver.receive_messages(max_message_count=1, max_wait_time=1.0)
    return message


async def test_a_received_message_is_the_sdks_own_object_read_from_the_wire(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(
        world,
        queue,
        ServiceBusMessage(
            b"\x00body\xff",
            application_properties={"k": "v"},
            message_id="m-1",
            correlation_id="c-1",
            content_type="application/json",
        ),
    )
    receiver = world.bus.get_queue_receiver(queue)

    message = await _one(receiver)

    assert type(message) is ServiceBusReceivedMessage
    assert b"".join(message.body) == b"\x00body\xff"
    assert message.application_properties == {b"k": b"v"}  # wire types: bytes
    assert (message.message_id, message.correlation_id) == ("m-1", "c-1")
    assert message.content_type == "application/json"
    assert message.sequence_number == 1
    assert isinstance(message.lock_token, uuid.UUID)
    assert message.enqueued_time_utc is not None
    assert message.locked_until_utc is not None
    assert message.locked_until_utc.timestamp() == pytest.approx(world.clock.now() + 30, abs=0.01)


async def test_the_header_delivery_count_starts_at_zero_like_service_bus(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(world, queue, ServiceBusMessage(b"x"))
    receiver = world.bus.get_queue_receiver(queue)

    first = await _one(receiver)
    await receiver.abandon_message(first)
    second = await _one(receiver)

    assert (first.delivery_count, second.delivery_count) == (0, 1)


async def test_settling_twice_or_after_lock_expiry_raises_the_sdks_errors(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(world, queue, ServiceBusMessage(b"a"), ServiceBusMessage(b"b"))
    receiver = world.bus.get_queue_receiver(queue)
    first = await _one(receiver)
    await receiver.complete_message(first)

    with pytest.raises(MessageAlreadySettled):
        await receiver.complete_message(first)
    second = await _one(receiver)
    world.clock.advance(31)
    with pytest.raises(MessageLockLostError):
        await receiver.complete_message(second)


async def test_a_message_settles_only_through_the_receiver_that_received_it(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(world, queue, ServiceBusMessage(b"a"))
    first, other = world.bus.get_queue_receiver(queue), world.bus.get_queue_receiver(queue)
    message = await _one(first)
    other.running = True

    with pytest.raises(MessageLockLostError):
        await other.complete_message(message)
    await first.complete_message(message)


async def test_session_queues_refuse_plain_receivers_and_sessionless_messages(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    plain = make_queue()

    with pytest.raises(ServiceBusError, match="requires sessions"):
        await world.bus.get_queue_receiver(queue).receive_messages(max_wait_time=0.1)
    with pytest.raises(ServiceBusError, match="does not require sessions"):
        await world.bus.get_queue_receiver(plain, session_id="s").__aenter__()
    with pytest.raises(ServiceBusError, match="SessionId was not set"):
        await _send(world, queue, ServiceBusMessage(b"no session"))


async def test_session_receivers_lock_sessions_like_service_bus(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    await _send(world, queue, ServiceBusMessage(b"1", session_id="s"))
    holder = world.bus.get_queue_receiver(queue, session_id=NEXT_AVAILABLE_SESSION)
    await holder.__aenter__()

    assert holder.session.session_id == "s"
    with pytest.raises(SessionCannotBeLockedError):
        await world.bus.get_queue_receiver(queue, session_id="s").__aenter__()
    with pytest.raises(OperationTimeoutError):
        await world.bus.get_queue_receiver(
            queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=0.1
        ).__aenter__()
    message = await _one(holder)
    assert message.locked_until_utc is None  # the SDK: session messages have no own lock
    with pytest.raises(TypeError):
        await holder.renew_message_lock(message)
    world.clock.advance(301)
    with pytest.raises(SessionLockLostError):
        await holder.receive_messages(max_wait_time=0.1)


async def test_dead_letters_carry_reason_and_description_as_the_service_sets_them(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(world, queue, ServiceBusMessage(b"bad", application_properties={"k": "v"}))
    receiver = world.bus.get_queue_receiver(queue)
    await receiver.dead_letter_message(await _one(receiver), "Why", "Because")
    dead = world.bus.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER)

    [peeked] = await dead.peek_messages(10, sequence_number=1)
    letter = await _one(dead)

    for message in (peeked, letter):
        assert message.dead_letter_reason == "Why"
        assert message.dead_letter_error_description == "Because"
        assert message.application_properties is not None
        assert message.application_properties[b"k"] == b"v"
    assert peeked.lock_token is None
    with pytest.raises(ValueError, match="peeked"):
        await dead.complete_message(peeked)


async def test_receive_and_delete_removes_on_delivery(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    await _send(world, queue, ServiceBusMessage(b"gone"))
    receiver = world.bus.get_queue_receiver(
        queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    )

    message = await _one(receiver)

    assert message.lock_token is None
    assert world.bus.active_count(queue) == 0


async def test_missing_queues_and_oversize_messages_raise_the_sdks_errors(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(max_message_size=1024)
    sender = world.bus.get_queue_sender(queue)
    batch = await sender.create_message_batch()

    with pytest.raises(MessagingEntityNotFoundError):
        await world.bus.get_queue_sender("nope").create_message_batch()
    with pytest.raises(MessageSizeExceededError):
        batch.add_message(ServiceBusMessage(b"x" * 2048))
    with pytest.raises(MessageSizeExceededError):
        await sender.send_messages(ServiceBusMessage(b"x" * 2048))
