"""What the Azure adapter adds on top of the SDK, tested against the fake namespace.

The delivery contract itself is the contract suite (``tests/contract``, harness
``azure-fake``); these are the adapter's own decisions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusSubQueue

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.providers.azure.messages import (
    MAX_DEAD_LETTER_TEXT,
    pack_description,
    unpack_description,
)
from queue_runtime.providers.azure.provider import AzureServiceBusProvider

from .conftest import PLANTED, World
from .fake_servicebus import service_error

Q = qr.QueueName


async def _let_tasks_run() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- handlers -----------------------------------------------------------------------


async def test_senders_and_receivers_are_cached_per_queue_and_closed_by_aclose(
    world: World, make_queue: Callable[..., str]
) -> None:
    first, second = make_queue(), make_queue()
    provider = world.provider()
    client = world.client(provider)
    for queue in (first, first, second):
        await client.send_message(queue, qr.Message(b"x"))
        assert await client.receive_message(queue, timeout=1.0) is not None
    await client.peek_dead_letters(first)
    await client.receive_dead_letters(first, timeout=0.05)

    kinds = sorted(
        (type(h).__name__, h.queue_name, getattr(h, "dead_letter", False))
        for h in world.bus.open_handlers
    )
    assert kinds == [
        ("FakeReceiver", first, False),
        ("FakeReceiver", first, True),
        ("FakeReceiver", second, False),
        ("FakeSender", first, False),
        ("FakeSender", second, False),
    ]

    await provider.aclose()
    await provider.aclose()

    assert world.bus.open_handlers == []
    assert world.bus.closed
    with pytest.raises(qr.QueueError, match="closed"):
        await provider.send(Q(first), [qr.Message(b"late")])


async def test_each_accepted_session_has_its_own_receiver_closed_with_the_session(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    provider = world.provider()
    client = world.client(provider)
    await client.send_messages(
        queue, [qr.Message(b"a", session_id="a"), qr.Message(b"b", session_id="b")]
    )
    one = await client.accept_session(queue, timeout=1.0)
    two = await client.accept_session(queue, timeout=1.0)
    assert one is not None
    assert two is not None

    assert {one.session_id, two.session_id} == {"a", "b"}
    assert len(world.bus.open_handlers) == 3  # the sender and two session receivers
    await one.close()
    assert len(world.bus.open_handlers) == 2
    await provider.aclose()  # closes the session still open
    assert world.bus.open_handlers == []


async def test_concurrent_receives_on_one_queue_take_turns_on_its_receiver(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    waiting = asyncio.create_task(client.receive_message(queue, timeout=2.0))
    await asyncio.sleep(0.05)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.receive_message(queue, timeout=0.2) is None
    assert 0.15 <= loop.time() - started <= 0.4
    await client.send_message(queue, qr.Message(b"for the first"))
    received = await waiting

    assert received is not None
    assert received.body == b"for the first"


# -- sending ------------------------------------------------------------------------


async def test_a_call_is_split_into_as_many_sdk_batches_as_the_encoded_size_needs(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()
    messages = [qr.Message(bytes([65 + i]) * 100_000) for i in range(3)]

    await provider.send(Q(queue), messages)

    assert world.bus.sent_batches == 2
    client = world.client(provider)
    bodies = [m.body[:1] for m in await client.receive_messages(queue, 10, timeout=1.0)]
    assert bodies == [b"A", b"B", b"C"]


async def test_a_message_too_big_once_encoded_fails_the_call_before_anything_is_sent(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()
    limit = provider.capabilities.max_message_size
    # within the client's limit (body + attributes), but the AMQP encoding of 1,500
    # attributes adds more than the envelope reserve
    attributes = {f"{i:04d}": "" for i in range(1500)}
    crowded = qr.Message(b"z" * (limit - 6000), attributes=attributes)
    assert crowded.size <= limit

    with pytest.raises(qr.MessageTooLargeError) as caught:
        await provider.send(Q(queue), [qr.Message(b"small"), crowded])

    assert caught.value.max_size == 262_144
    assert caught.value.size > 262_144
    assert caught.value.message_id == crowded.message_id
    assert world.bus.active_count(queue) == 0


async def test_a_message_larger_than_a_batch_but_within_the_message_limit_goes_alone(
    world: World, make_queue: Callable[..., str]
) -> None:
    # premium tier: batches up to 1 MiB, single messages up to the entity's limit
    queue = make_queue(max_message_size=4 * 1024 * 1024, max_batch_size=1024 * 1024)
    provider = world.provider(max_message_size=4 * 1024 * 1024)
    big = qr.Message(b"B" * (2 * 1024 * 1024))

    await provider.send(Q(queue), [qr.Message(b"a"), big, qr.Message(b"c")])

    assert world.bus.sent_batches == 3
    received = await world.client(provider).receive_messages(queue, 10, timeout=1.0)
    assert [m.body[:1] for m in received] == [b"a", b"B", b"c"]


async def test_more_than_a_hundred_messages_in_one_provider_call_is_refused(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()

    with pytest.raises(qr.BatchTooLargeError):
        await provider.send(Q(queue), [qr.Message(b"x")] * 101)
    await world.client(provider).send_messages(queue, [qr.Message(b"x")] * 250)

    assert world.bus.active_count(queue) == 250
    assert world.bus.sent_batches == 3


async def test_a_message_id_longer_than_service_bus_allows_is_a_validation_error(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()

    with pytest.raises(qr.ValidationError) as caught:
        await client.send_messages(
            queue, [qr.Message(b"ok"), qr.Message(b"x", message_id="m" * 129)]
        )

    assert caught.value.field == "message_id"
    assert world.bus.active_count(queue) == 0


async def test_a_fractional_time_to_live_is_rounded_up_to_whole_seconds(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"short", time_to_live=0.4))

    message = await client.receive_message(queue, timeout=1.0)

    assert message is not None
    assert message.time_to_live == 1.0


async def test_scheduled_messages_can_be_cancelled_by_sequence_number(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()
    client = world.client(provider)
    at = to_datetime(world.clock.now()) + timedelta(seconds=60)
    [keep] = await provider.schedule_messages(queue, [qr.Message(b"keep")], at)
    [drop] = await provider.schedule_messages(queue, [qr.Message(b"drop")], at)

    await provider.cancel_scheduled_messages(queue, [drop])
    assert await client.receive_message(queue, timeout=0.05) is None
    world.clock.advance(61)
    received = await client.receive_messages(queue, 10, timeout=0.5)

    assert keep != drop
    assert [m.body for m in received] == [b"keep"]
    with pytest.raises(qr.ValidationError):
        await provider.schedule_messages(queue, [qr.Message(b"x")], at.replace(tzinfo=None))


# -- receiving ----------------------------------------------------------------------


async def test_delivery_count_is_one_on_first_delivery_though_the_sdk_says_zero(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))

    first = await client.receive_message(queue, timeout=1.0)
    assert first is not None
    assert first.receipt.native is not None
    raw = first.receipt.native.message  # type: ignore[attr-defined]
    await client.abandon_message(first.receipt)
    second = await client.receive_message(queue, timeout=1.0)

    assert raw.delivery_count == 0
    assert first.delivery_count == 1
    assert second is not None
    assert second.delivery_count == 2
    assert first.first_delivered_at == first.delivered_at
    assert second.first_delivered_at == second.enqueued_at  # Service Bus does not say


async def test_a_session_message_is_locked_by_its_session_and_renewing_it_renews_the_session(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    await client.send_message(queue, qr.Message(b"x", session_id="s"))
    session = await client.accept_session(queue, timeout=1.0)
    assert session is not None
    message = await session.receive_message(timeout=1.0)
    assert message is not None
    assert message.locked_until == session.locked_until

    world.clock.advance(100)
    renewed = await client.renew_message_lock(message.receipt)

    assert renewed == session.locked_until
    assert renewed == to_datetime(world.clock.now() + 300)
    await session.complete_message(message.receipt)
    await session.close()


async def test_session_state_round_trips_and_clears(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    session = await client.accept_session(queue, "stateful", timeout=1.0)
    assert session is not None

    await session.set_state(b"\x00state")
    assert await session.get_state() == b"\x00state"
    await session.set_state(None)
    assert await session.get_state() is None
    with pytest.raises(qr.ValidationError):
        await session.set_state("text")  # type: ignore[arg-type]
    await session.close()


async def test_a_closed_session_refuses_calls_and_settling_its_messages(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    await client.send_message(queue, qr.Message(b"x", session_id="s"))
    session = await client.accept_session(queue, "s", timeout=1.0)
    assert session is not None
    message = await session.receive_message(timeout=1.0)
    assert message is not None

    await session.close()
    await session.close()

    with pytest.raises(qr.SessionNotFoundError):
        await session.receive_message(timeout=0.1)
    with pytest.raises(qr.InvalidReceiptError):
        await client.complete_message(message.receipt)


async def test_a_lost_session_lock_is_reported_on_renewal_and_state(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    session = await client.accept_session(queue, "s", timeout=1.0)
    assert session is not None

    world.clock.advance(301)

    with pytest.raises(qr.SessionLockLostError):
        await session.renew_session_lock()
    with pytest.raises(qr.SessionLockLostError):
        await session.get_state()
    await session.close()


async def test_peek_reads_every_dead_letter_across_pages(
    world: World, make_queue: Callable[..., str]
) -> None:
    world.bus.peek_page_size = 2
    queue = make_queue()
    client = world.client()
    await client.send_messages(queue, [qr.Message(f"{i}".encode()) for i in range(5)])
    for message in await client.receive_messages(queue, 10, timeout=1.0):
        await client.dead_letter_message(message.receipt, "Boom")

    letters = await client.peek_dead_letters(queue)
    again = await client.peek_dead_letters(queue, max_messages=3)

    assert [m.body for m in letters] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.body for m in again] == [b"0", b"1", b"2"]
    assert all(m.dead_letter_reason == "Boom" for m in letters)
    assert all("DeadLetterReason" not in m.attributes for m in letters)
    with pytest.raises(qr.InvalidReceiptError):
        await client.complete_message(letters[0].receipt)


async def test_purge_deletes_what_is_not_locked_and_counts_it(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_messages(queue, [qr.Message(b"1"), qr.Message(b"2"), qr.Message(b"3")])
    for message in await client.receive_messages(queue, 10, timeout=1.0):
        await client.dead_letter_message(message.receipt, "Boom")
    held = await client.receive_dead_letters(queue, 1, timeout=1.0)

    removed = await client.purge_dead_letters(queue)

    assert removed == 2
    assert world.bus.dead_letter_count(queue) == 1
    await client.complete_message(held[0].receipt)
    assert world.bus.dead_letter_count(queue) == 0


# -- settling -----------------------------------------------------------------------


async def test_dead_letter_text_is_cut_to_what_service_bus_keeps(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None

    await client.dead_letter_message(message.receipt, "R" * 5000, "D" * 5000)
    [letter] = await client.peek_dead_letters(queue)

    assert letter.dead_letter_reason == "R" * MAX_DEAD_LETTER_TEXT
    assert letter.dead_letter_description == "D" * MAX_DEAD_LETTER_TEXT


async def test_a_dead_letter_cannot_be_dead_lettered_again(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    await client.dead_letter_message(message.receipt, "Boom")
    [letter] = await client.receive_dead_letters(queue, timeout=1.0)

    with pytest.raises(qr.InvalidReceiptError):
        await client.dead_letter_message(letter.receipt, "Again")
    await client.complete_message(letter.receipt)


async def test_a_receipt_of_another_provider_is_refused(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    mine, theirs = world.client(), world.client()
    await mine.send_message(queue, qr.Message(b"x"))
    message = await mine.receive_message(queue, timeout=1.0)
    assert message is not None

    with pytest.raises(qr.InvalidReceiptError):
        await theirs.complete_message(message.receipt)
    await mine.complete_message(message.receipt)


async def test_a_delayed_abandon_keeps_renewing_a_lock_shorter_than_the_delay(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"later"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None

    await client.abandon_message(message.receipt, delay=70.0)
    for _ in range(3):  # 75 s in steps of 25: past two 30 s locks
        assert await client.receive_message(queue, timeout=0.05) is None
        world.clock.advance(25)
        await _let_tasks_run()
    again = await client.receive_message(queue, timeout=1.0)

    assert again is not None
    assert again.delivery_count == 2
    with pytest.raises(qr.InvalidReceiptError):
        await client.complete_message(message.receipt)


async def test_closing_the_provider_abandons_delayed_messages_at_once(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()
    client = world.client(provider)
    await client.send_message(queue, qr.Message(b"later"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    await client.abandon_message(message.receipt, delay=600.0)
    await _let_tasks_run()

    await provider.aclose()

    assert not world.bus.queues[queue].entity.in_flight
    other = world.client()
    again = await other.receive_message(queue, timeout=1.0)
    assert again is not None
    assert again.delivery_count == 2


async def test_a_delayed_abandon_of_a_session_message_holds_the_session_order(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    await client.send_messages(
        queue, [qr.Message(f"{i}".encode(), session_id="s") for i in range(2)]
    )
    session = await client.accept_session(queue, "s", timeout=1.0)
    assert session is not None
    first = await session.receive_message(timeout=1.0)
    assert first is not None

    await session.abandon_message(first.receipt, delay=5.0)
    world.clock.advance(6)
    await _let_tasks_run()
    again = await session.receive_message(timeout=1.0)

    assert again is not None
    assert (again.body, again.delivery_count) == (b"0", 2)
    await session.close()


async def test_a_delayed_abandon_with_an_expired_lock_fails_at_once(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    world.clock.advance(31)

    with pytest.raises(qr.InvalidReceiptError):
        await client.abandon_message(message.receipt, delay=5.0)


async def test_a_failed_delayed_abandon_is_logged_without_secrets(
    world: World, make_queue: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    world.bus.fail_next("abandon", service_error(b"amqp:internal-error", f"bad key {PLANTED}"))

    with caplog.at_level(logging.WARNING, logger="queue_runtime.providers.azure"):
        await client.abandon_message(message.receipt, delay=1.0)
        world.clock.advance(2)
        await _let_tasks_run()

    assert "delayed abandon" in caplog.text
    assert PLANTED not in caplog.text
    assert "***" in caplog.text


# -- which queues have sessions ---------------------------------------------------


async def test_a_queue_that_refuses_session_receivers_reports_no_sessions_after(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    assert client.session_support(queue) is qr.SessionSupport.NATIVE

    with pytest.raises(qr.SessionsNotSupportedError):
        await client.accept_session(queue, timeout=0.1)

    assert client.session_support(queue) is qr.SessionSupport.NONE


async def test_a_plain_receive_on_a_session_queue_returns_nothing_at_the_timeout(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    await client.send_message(queue, qr.Message(b"x", session_id="s"))
    loop = asyncio.get_running_loop()

    for _ in range(2):
        started = loop.time()
        assert await client.receive_message(queue, timeout=0.2) is None
        assert 0.15 <= loop.time() - started <= 0.4
    assert len(world.bus.handlers) == 2  # the sender, and the one refused receiver
    session = await client.accept_session(queue, timeout=1.0)
    assert session is not None
    await session.close()


async def test_configured_session_queues_decide_session_support_up_front(
    world: World, make_queue: Callable[..., str]
) -> None:
    sessions, plain = make_queue(sessions=True), make_queue()
    provider = world.provider(session_queues=f"{sessions}, pr-*")
    client = world.client(provider)

    assert client.session_support(sessions) is qr.SessionSupport.NATIVE
    assert client.session_support("pr-12") is qr.SessionSupport.NATIVE
    assert client.session_support(plain) is qr.SessionSupport.NONE
    with pytest.raises(qr.SessionsNotSupportedError):
        await client.accept_session(plain, timeout=0.1)
    assert world.bus.handlers == []  # the configuration said so: the service was not asked


def test_session_queue_patterns_are_validated() -> None:
    with pytest.raises(qr.ConfigurationError) as caught:
        qr.AzureServiceBusConfig(namespace="a.servicebus.windows.net", session_queues="ok, not ok")
    assert caught.value.field == "azure.session_queues"


# -- secrets ------------------------------------------------------------------------


async def test_the_provider_never_shows_its_secrets(world: World) -> None:
    provider = world.provider()
    secret_config = qr.AzureServiceBusConfig(
        namespace="bus.servicebus.windows.net",
        credential="client_secret",
        tenant_id="t",
        client_id="c",
        client_secret=PLANTED,  # type: ignore[arg-type]
    )
    built = AzureServiceBusProvider(secret_config)
    try:
        for text in (repr(provider), str(provider), repr(built), repr(provider.config)):
            assert PLANTED not in text
    finally:
        await built.aclose()


async def test_sdk_errors_that_quote_a_secret_are_scrubbed_everywhere(
    world: World, make_queue: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    client = world.client()
    world.bus.fail_next(
        "send", service_error(b"amqp:unauthorized-access", f"SharedAccessKey={PLANTED} is wrong")
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(qr.AuthorizationError) as caught:
        await client.send_message(queue, qr.Message(b"x"))

    error = caught.value
    for text in (str(error), repr(error), error.message, str(error.context)):
        assert PLANTED not in text
    assert PLANTED not in "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("queue_runtime")
    )


async def test_the_dead_letter_sub_queue_is_read_through_its_own_receiver(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    await client.send_message(queue, qr.Message(b"x"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    await client.dead_letter_message(message.receipt, "Boom")

    [letter] = await client.receive_dead_letters(queue, timeout=1.0)

    assert letter.receipt.dead_letter
    receiver = letter.receipt.native.receiver  # type: ignore[attr-defined]
    assert receiver.dead_letter
    assert ServiceBusSubQueue.DEAD_LETTER  # the SDK's sub-queue the provider asks for
    await client.complete_message(letter.receipt)
    assert world.bus.dead_letter_count(queue) == 0


def test_dead_letter_properties_packed_into_the_description_fit_the_limit() -> None:
    properties = {"small": "s", "huge": "h" * MAX_DEAD_LETTER_TEXT}

    packed = pack_description("d" * MAX_DEAD_LETTER_TEXT, properties)

    assert packed is not None
    assert len(packed) <= MAX_DEAD_LETTER_TEXT
    text, unpacked = unpack_description(packed)
    assert unpacked == {"small": "s"}
    assert text is not None
    assert text.startswith("ddd")
    assert text.endswith("...")
    assert unpack_description("plain text") == ("plain text", {})


@pytest.mark.parametrize("sessions", [True, False])
async def test_a_complete_whose_answer_was_lost_is_proven_done_only_in_a_held_session(
    world: World, make_queue: Callable[..., str], sessions: bool
) -> None:
    # the service completes the message, the answer is lost: the SDK does not mark it
    # settled, so the client's retry reaches the service, which says "lock lost"
    from azure.servicebus.exceptions import ServiceBusConnectionError

    queue = make_queue(sessions=sessions)
    client = world.client()
    await client.send_message(queue, qr.Message(b"x", session_id="s" if sessions else None))
    session = await client.accept_session(queue, timeout=1.0) if sessions else None
    if session is not None:
        message = await session.receive_message(timeout=1.0)
    else:
        message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    native: Any = message.receipt.native
    receiver: Any = native.receiver
    settle = receiver.complete_message

    async def complete_then_lose_the_answer(sb: Any) -> None:
        await settle(sb)
        sb._settled = False
        receiver.complete_message = settle
        raise ServiceBusConnectionError(message="connection reset after the request")

    receiver.complete_message = complete_then_lose_the_answer

    if sessions:  # the session is still ours: the earlier attempt completed it
        await client.complete_message(message.receipt)
    else:  # a plain message's lock may really have expired: not provable
        with pytest.raises(qr.InvalidReceiptError) as refused:
            await client.complete_message(message.receipt)
        assert refused.value.settled is None
    entity = world.bus.queue(queue).entity
    assert (len(entity.records), len(entity.in_flight)) == (0, 0)  # completed, once
    if session is not None:
        await session.close()
