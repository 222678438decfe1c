"""Behaviour of the in-memory provider that the cross-provider contract does not cover.

Fault injection, queue management, queue size limits, the two session modes,
delays and scheduling against a :class:`ManualClock`, waking of waiting
receives, lock renewal, session receivers, foreign receipts, the DLQ, TTL
and the inspection helpers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from queue_runtime.client import QueueClient
from queue_runtime.clock import ManualClock, to_datetime
from queue_runtime.config import InMemoryConfig
from queue_runtime.errors import (
    ConnectionFailedError,
    InvalidReceiptError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
    ThrottledError,
    ValidationError,
)
from queue_runtime.messages import (
    Message,
    QueueName,
    ReceiptHandle,
    ReceivedMessage,
    SessionId,
)
from queue_runtime.providers.memory import (
    FaultInjector,
    InMemoryProvider,
    MemorySessionReceiver,
    QueueStats,
)
from queue_runtime.providers.memory.faults import OPERATIONS

Q = QueueName("jobs")


def msg(body: str, session: str | None = None, **fields: Any) -> Message:
    return Message(
        body.encode(), session_id=None if session is None else SessionId(session), **fields
    )


def bodies(batch: Sequence[ReceivedMessage]) -> list[bytes]:
    return [m.body for m in batch]


def sid(value: str) -> SessionId:
    return SessionId(value)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def provider(clock: ManualClock) -> AsyncIterator[InMemoryProvider]:
    memory = InMemoryProvider(clock=clock)
    yield memory
    await memory.aclose()


async def make(clock: ManualClock | None = None, **config: Any) -> InMemoryProvider:
    return InMemoryProvider(InMemoryConfig(**config), clock=clock)


# -- fault injection -------------------------------------------------------------


async def test_fault_before_send_raises_and_stores_nothing(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("send")

    with pytest.raises(ConnectionFailedError) as caught:
        await provider.send(Q, [msg("lost")])

    assert caught.value.operation == "send"
    assert caught.value.transient
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)
    assert faults.injected == 1
    await provider.send(Q, [msg("kept")])  # the rule was used up
    assert [m.body for m in provider.pending_messages(Q)] == [b"kept"]


async def test_fault_after_send_stores_the_message_but_the_call_raises(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("send", after=True)

    with pytest.raises(ConnectionFailedError):
        await provider.send(Q, [msg("delivered anyway")])

    assert [m.body for m in provider.pending_messages(Q)] == [b"delivered anyway"]
    assert bodies(await provider.receive(Q, 10, timeout=0)) == [b"delivered anyway"]


async def test_fail_next_with_count_fails_exactly_that_many_calls(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("receive", count=2)

    for _ in range(2):
        with pytest.raises(ConnectionFailedError):
            await provider.receive(Q, 1, timeout=0)
    assert await provider.receive(Q, 1, timeout=0) == []
    assert faults.injected == 2


async def test_fault_before_complete_leaves_the_message_locked_and_the_receipt_valid(
    clock: ManualClock,
) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    await provider.send(Q, [msg("a")])
    [received] = await provider.receive(Q, 1, timeout=0)
    faults.fail_next("complete")

    with pytest.raises(ConnectionFailedError):
        await provider.complete(received.receipt)

    assert provider.stats(Q).in_flight == 1
    await provider.complete(received.receipt)
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)


async def test_fault_after_complete_removes_the_message_and_a_retry_is_rejected(
    clock: ManualClock,
) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    await provider.send(Q, [msg("a")])
    [received] = await provider.receive(Q, 1, timeout=0)
    faults.fail_next("complete", after=True)

    with pytest.raises(ConnectionFailedError):
        await provider.complete(received.receipt)

    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)
    with pytest.raises(InvalidReceiptError):
        await provider.complete(received.receipt)


async def test_fault_with_custom_error_class_raises_that_class(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("receive", error=ThrottledError)

    with pytest.raises(ThrottledError) as caught:
        await provider.receive(Q, 1, timeout=0)
    assert caught.value.operation == "receive"


async def test_fault_with_error_factory_raises_what_it_builds(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("send", error=lambda op: RuntimeError(f"boom in {op}"))

    with pytest.raises(RuntimeError, match="boom in send"):
        await provider.send(Q, [msg("a")])


async def test_wildcard_fault_hits_the_next_operation_of_any_kind(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("*")

    with pytest.raises(ConnectionFailedError) as caught:
        await provider.receive_dead_letters(Q, 1, timeout=0)
    assert caught.value.operation == "receive_dead_letters"
    await provider.send(Q, [msg("a")])


async def test_clear_removes_every_fault_rule(clock: ManualClock) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_next("send", count=5)
    faults.fail_randomly("receive", 1.0)

    faults.clear()

    await provider.send(Q, [msg("a")])
    assert bodies(await provider.receive(Q, 1, timeout=0)) == [b"a"]
    assert faults.injected == 0


async def _random_failure_pattern(seed: int, calls: int) -> list[bool]:
    faults = FaultInjector(seed=seed)
    provider = InMemoryProvider(clock=ManualClock(), faults=faults)
    faults.fail_randomly("receive", 0.5)
    pattern = []
    for _ in range(calls):
        try:
            await provider.receive(Q, 1, timeout=0)
        except ConnectionFailedError:
            pattern.append(True)
        else:
            pattern.append(False)
    await provider.aclose()
    return pattern


async def test_fail_randomly_with_a_seed_is_reproducible() -> None:
    first = await _random_failure_pattern(seed=1234, calls=60)
    second = await _random_failure_pattern(seed=1234, calls=60)

    assert first == second
    assert 10 < sum(first) < 50  # about half fail: the rate is honoured
    assert first != await _random_failure_pattern(seed=4321, calls=60)


async def test_fail_randomly_with_rate_zero_never_fails(clock: ManualClock) -> None:
    faults = FaultInjector(seed=1)
    provider = InMemoryProvider(clock=clock, faults=faults)
    faults.fail_randomly("send", 0.0)

    for n in range(20):
        await provider.send(Q, [msg(str(n))])
    assert provider.stats(Q).active == 20


@pytest.mark.parametrize("operation", ["sned", "Send", "", "complete_message"])
def test_unknown_fault_operation_is_rejected(operation: str) -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="unknown operation"):
        faults.fail_next(operation)
    with pytest.raises(ValueError, match="unknown operation"):
        faults.fail_randomly(operation, 0.5)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_fail_randomly_rejects_a_rate_outside_zero_to_one(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        FaultInjector().fail_randomly("send", rate)


@dataclass
class _Scene:
    """A provider with one of everything, so that any operation can be called."""

    provider: InMemoryProvider
    faults: FaultInjector
    receipt: ReceiptHandle
    receiver: MemorySessionReceiver


async def _scene() -> _Scene:
    faults = FaultInjector()
    provider = InMemoryProvider(clock=ManualClock(), faults=faults)
    await provider.send(Q, [msg("plain"), msg("held", "s")])
    [plain] = await provider.receive(Q, 1, timeout=0)
    receiver = await provider.accept_session(Q, sid("s"), 0)
    assert receiver is not None
    assert bodies(await receiver.receive(1, 0)) == [b"held"]
    return _Scene(provider, faults, plain.receipt, receiver)


OPERATION_CALLS: dict[str, Callable[[_Scene], Coroutine[Any, Any, object]]] = {
    "send": lambda s: s.provider.send(Q, [msg("x")]),
    "receive": lambda s: s.provider.receive(Q, 1, 0),
    "complete": lambda s: s.provider.complete(s.receipt),
    "abandon": lambda s: s.provider.abandon(s.receipt),
    "dead_letter": lambda s: s.provider.dead_letter(s.receipt, "Poison"),
    "renew_lock": lambda s: s.provider.renew_lock(s.receipt),
    "accept_session": lambda s: s.provider.accept_session(Q, None, 0),
    "session_receive": lambda s: s.receiver.receive(1, 0),
    "renew_session_lock": lambda s: s.receiver.renew_lock(),
    "get_state": lambda s: s.receiver.get_state(),
    "set_state": lambda s: s.receiver.set_state(b"state"),
    "close_session": lambda s: s.receiver.close(),
    "receive_dead_letters": lambda s: s.provider.receive_dead_letters(Q, 1, 0),
    "peek_dead_letters": lambda s: s.provider.peek_dead_letters(Q, 1),
    "purge_dead_letters": lambda s: s.provider.purge_dead_letters(Q),
    "create_queue": lambda s: s.provider.create_queue("another"),
    "delete_queue": lambda s: s.provider.delete_queue(Q),
    "queue_info": lambda s: s.provider.queue_info(Q),
}


def test_every_fault_operation_has_a_call_in_this_suite() -> None:
    assert set(OPERATION_CALLS) == OPERATIONS


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_every_named_fault_operation_can_be_made_to_fail(operation: str) -> None:
    scene = await _scene()
    before = scene.provider.stats(Q)
    scene.faults.fail_next(operation)

    with pytest.raises(ConnectionFailedError) as caught:
        await OPERATION_CALLS[operation](scene)

    assert caught.value.operation == operation
    assert scene.faults.injected == 1
    assert scene.provider.stats(Q) == before  # a fault before the call changes nothing
    await scene.provider.aclose()


# -- queue size, creation and deletion --------------------------------------------


async def test_full_queue_throttles_with_retry_after_and_stores_nothing(clock: ManualClock) -> None:
    provider = await make(clock, max_queue_size=3)
    await provider.send(Q, [msg("1"), msg("2")])

    with pytest.raises(ThrottledError) as caught:
        await provider.send(Q, [msg("3"), msg("4")])  # one would fit, the batch does not

    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert caught.value.transient
    assert caught.value.queue == Q
    assert [m.body for m in provider.pending_messages(Q)] == [b"1", b"2"]
    await provider.send(Q, [msg("3")])
    with pytest.raises(ThrottledError):
        await provider.send(Q, [msg("4")])
    assert provider.stats(Q).active == 3


async def test_full_queue_has_room_again_after_a_complete(clock: ManualClock) -> None:
    provider = await make(clock, max_queue_size=1)
    await provider.send(Q, [msg("1")])
    [received] = await provider.receive(Q, 1, 0)
    with pytest.raises(ThrottledError):  # in-flight messages still take room
        await provider.send(Q, [msg("2")])

    await provider.complete(received.receipt)

    await provider.send(Q, [msg("2")])
    assert [m.body for m in provider.pending_messages(Q)] == [b"2"]


async def test_scheduled_messages_count_against_max_queue_size(clock: ManualClock) -> None:
    provider = await make(clock, max_queue_size=1)
    await provider.send(Q, [msg("later", scheduled_enqueue_time=to_datetime(clock.now() + 60))])

    with pytest.raises(ThrottledError):
        await provider.send(Q, [msg("now")])
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=1, dead_lettered=0)


async def test_without_auto_create_a_missing_queue_is_not_found_until_created(
    clock: ManualClock,
) -> None:
    provider = await make(clock, create_queues=False)

    with pytest.raises(QueueNotFoundError) as caught:
        await provider.send(Q, [msg("a")])
    assert caught.value.queue == Q
    assert "jobs" in str(caught.value)
    with pytest.raises(QueueNotFoundError):
        await provider.receive(Q, 1, 0)
    with pytest.raises(QueueNotFoundError):
        await provider.accept_session(Q, None, 0)
    with pytest.raises(QueueNotFoundError):
        await provider.receive_dead_letters(Q, 1, 0)

    await provider.create_queue("jobs")
    await provider.send(Q, [msg("a")])
    await provider.create_queue("jobs")  # creating again keeps what is there
    assert bodies(await provider.receive(Q, 1, 0)) == [b"a"]


async def test_deleted_queue_is_not_found_without_auto_create(clock: ManualClock) -> None:
    provider = await make(clock, create_queues=False)
    await provider.create_queue("jobs")
    await provider.send(Q, [msg("a")])

    await provider.delete_queue("jobs")

    with pytest.raises(QueueNotFoundError):
        await provider.send(Q, [msg("b")])
    with pytest.raises(QueueNotFoundError):
        provider.stats("jobs")


async def test_delete_queue_drops_messages_dead_letters_and_receipts(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a"), msg("b"), msg("c")])
    first, second = await provider.receive(Q, 2, 0)
    await provider.dead_letter(first.receipt, "Poison")

    await provider.delete_queue("jobs")

    with pytest.raises(InvalidReceiptError):
        await provider.complete(second.receipt)
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)
    assert provider.dead_letter_messages(Q) == []


async def test_delete_of_a_missing_queue_is_a_no_op(provider: InMemoryProvider) -> None:
    await provider.delete_queue("never-created")


# -- session modes ------------------------------------------------------------------


async def test_native_sessions_hide_session_messages_from_plain_receive(
    clock: ManualClock,
) -> None:
    provider = await make(clock, session_mode="native")
    await provider.send(Q, [msg("a1", "a"), msg("p1"), msg("a2", "a"), msg("p2")])

    assert bodies(await provider.receive(Q, 10, 0)) == [b"p1", b"p2"]
    assert await provider.receive(Q, 10, 0) == []
    assert provider.stats(Q).active == 2

    receiver = await provider.accept_session(Q, None, 0)
    assert receiver is not None
    assert receiver.session_id == "a"
    assert bodies(await receiver.receive(10, 0)) == [b"a1", b"a2"]


async def test_native_plain_receive_with_only_session_messages_returns_at_the_timeout() -> None:
    provider = await make(session_mode="native")
    await provider.send(Q, [msg("a1", "a")])

    started = time.monotonic()
    assert await provider.receive(Q, 1, timeout=0.2) == []
    assert 0.15 <= time.monotonic() - started < 0.5
    await provider.aclose()


async def test_emulated_sessions_block_a_session_while_its_message_is_in_flight(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a"), msg("b1", "b")])

    [a1] = await provider.receive(Q, 1, 0)
    assert a1.body == b"a1"
    assert bodies(await provider.receive(Q, 1, 0)) == [b"b1"]
    assert await provider.receive(Q, 1, 0) == []  # a2 waits behind a1

    await provider.complete(a1.receipt)
    assert bodies(await provider.receive(Q, 1, 0)) == [b"a2"]


async def test_emulated_batch_returns_consecutive_messages_of_one_session_in_order(
    provider: InMemoryProvider,
) -> None:
    await provider.send(
        Q, [msg("a1", "a"), msg("b1", "b"), msg("a2", "a"), msg("p1"), msg("a3", "a")]
    )

    batch = await provider.receive(Q, 10, 0)

    assert sorted(bodies(batch)) == [b"a1", b"a2", b"a3", b"b1", b"p1"]
    assert [m.body for m in batch if m.session_id == "a"] == [b"a1", b"a2", b"a3"]
    assert all(m.delivery_count == 1 for m in batch)


async def test_emulated_batch_limit_cuts_a_session_and_blocks_the_rest(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a"), msg("a3", "a")])

    batch = await provider.receive(Q, 2, 0)
    assert bodies(batch) == [b"a1", b"a2"]
    assert await provider.receive(Q, 2, 0) == []

    await provider.complete(batch[0].receipt)
    assert await provider.receive(Q, 2, 0) == []  # a2 is still in flight
    await provider.complete(batch[1].receipt)
    assert bodies(await provider.receive(Q, 2, 0)) == [b"a3"]


async def test_emulated_session_in_flight_cannot_be_accepted(provider: InMemoryProvider) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a")])
    [a1] = await provider.receive(Q, 1, 0)

    with pytest.raises(SessionLockedError):
        await provider.accept_session(Q, sid("a"), 0)
    assert await provider.accept_session(Q, None, 0) is None

    await provider.complete(a1.receipt)
    receiver = await provider.accept_session(Q, None, 0)
    assert receiver is not None
    assert receiver.session_id == "a"


async def test_emulated_plain_receive_skips_a_session_held_by_a_receiver(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("p1")])
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None

    assert bodies(await provider.receive(Q, 10, 0)) == [b"p1"]

    await receiver.close()
    assert bodies(await provider.receive(Q, 10, 0)) == [b"a1"]


# -- delays and scheduling ------------------------------------------------------------


async def test_abandon_with_delay_hides_the_message_until_the_clock_passes_it(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a")])
    [first] = await provider.receive(Q, 1, 0)

    await provider.abandon(first.receipt, delay=10)

    assert await provider.receive(Q, 1, 0) == []
    assert provider.stats(Q) == QueueStats(active=1, in_flight=0, scheduled=0, dead_lettered=0)
    clock.advance(9.5)
    assert await provider.receive(Q, 1, 0) == []
    clock.advance(0.5)
    [again] = await provider.receive(Q, 1, 0)
    assert again.body == b"a"
    assert again.delivery_count == 2


async def test_abandon_without_delay_makes_the_message_visible_at_once(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a")])
    [first] = await provider.receive(Q, 1, 0)

    await provider.abandon(first.receipt)

    [again] = await provider.receive(Q, 1, 0)
    assert again.delivery_count == 2
    with pytest.raises(InvalidReceiptError):
        await provider.complete(first.receipt)


async def test_abandon_with_delay_of_a_session_message_blocks_the_later_ones(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a"), msg("b1", "b")])
    [a1] = await provider.receive(Q, 1, 0)

    await provider.abandon(a1.receipt, delay=10)

    assert bodies(await provider.receive(Q, 10, 0)) == [b"b1"]  # a2 must not overtake a1
    assert await provider.accept_session(Q, None, 0) is None
    clock.advance(10)
    batch = await provider.receive(Q, 10, 0)
    assert bodies(batch) == [b"a1", b"a2"]
    assert [m.delivery_count for m in batch] == [2, 1]


async def test_abandon_with_delay_inside_a_session_receiver_blocks_the_later_ones(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a")])
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None
    [a1] = await receiver.receive(1, 0)

    await provider.abandon(a1.receipt, delay=10)

    assert await receiver.receive(10, 0) == []
    clock.advance(10)
    assert bodies(await receiver.receive(10, 0)) == [b"a1", b"a2"]


async def test_scheduled_message_is_invisible_until_due(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    due = to_datetime(clock.now() + 60)
    await provider.send(Q, [msg("later", scheduled_enqueue_time=due), msg("now")])

    assert provider.stats(Q) == QueueStats(active=1, in_flight=0, scheduled=1, dead_lettered=0)
    [now] = await provider.receive(Q, 10, 0)
    assert now.body == b"now"
    await provider.complete(now.receipt)
    clock.advance(59.9)
    assert await provider.receive(Q, 10, 0) == []
    clock.advance(0.1)
    [later] = await provider.receive(Q, 10, 0)
    assert later.body == b"later"
    assert later.enqueued_at == due
    assert provider.stats(Q).scheduled == 0


async def test_scheduled_time_in_the_past_is_visible_at_once(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("past", scheduled_enqueue_time=to_datetime(clock.now() - 5))])

    assert provider.stats(Q).scheduled == 0
    assert bodies(await provider.receive(Q, 1, 0)) == [b"past"]


async def test_waiting_receive_wakes_when_the_manual_clock_passes_a_scheduled_time(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("later", scheduled_enqueue_time=to_datetime(clock.now() + 60))])
    task = asyncio.create_task(provider.receive(Q, 1, timeout=5))
    await asyncio.sleep(0.05)
    assert not task.done()

    started = time.monotonic()
    clock.advance(60)
    batch = await asyncio.wait_for(task, 2)

    assert bodies(batch) == [b"later"]
    assert time.monotonic() - started < 1.0


async def test_waiting_receive_wakes_when_a_scheduled_message_falls_due_in_real_time() -> None:
    provider = InMemoryProvider()  # the system clock
    await provider.send(Q, [msg("soon", scheduled_enqueue_time=to_datetime(time.time() + 0.2))])

    started = time.monotonic()
    batch = await provider.receive(Q, 1, timeout=3)

    assert bodies(batch) == [b"soon"]
    assert 0.1 <= time.monotonic() - started < 1.0
    await provider.aclose()


# -- waiting and closing ------------------------------------------------------------


async def test_waiting_receive_returns_as_soon_as_a_message_is_sent() -> None:
    provider = InMemoryProvider()
    task = asyncio.create_task(provider.receive(Q, 1, timeout=5))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await provider.send(Q, [msg("hello")])
    batch = await asyncio.wait_for(task, 2)

    assert bodies(batch) == [b"hello"]
    assert time.monotonic() - started < 0.5
    await provider.aclose()


async def test_empty_receive_returns_nothing_at_the_timeout() -> None:
    provider = InMemoryProvider()
    started = time.monotonic()

    assert await provider.receive(Q, 1, timeout=0.3) == []

    assert 0.2 <= time.monotonic() - started <= 0.4
    await provider.aclose()


async def test_waiting_accept_session_returns_when_a_session_message_arrives() -> None:
    provider = InMemoryProvider(InMemoryConfig(session_mode="native"))
    task = asyncio.create_task(provider.accept_session(Q, None, timeout=5))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await provider.send(Q, [msg("a1", "a")])
    receiver = await asyncio.wait_for(task, 2)

    assert receiver is not None
    assert receiver.session_id == "a"
    assert time.monotonic() - started < 0.5
    await provider.aclose()


async def test_waiting_session_receive_returns_when_its_message_arrives() -> None:
    provider = InMemoryProvider()
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None
    task = asyncio.create_task(receiver.receive(1, timeout=5))
    await asyncio.sleep(0.05)

    await provider.send(Q, [msg("b1", "b")])
    await asyncio.sleep(0.05)
    assert not task.done()  # another session's message does not count
    started = time.monotonic()
    await provider.send(Q, [msg("a1", "a")])

    assert bodies(await asyncio.wait_for(task, 2)) == [b"a1"]
    assert time.monotonic() - started < 0.5
    await provider.aclose()


async def test_aclose_wakes_waiting_receives_and_later_calls_fail() -> None:
    provider = InMemoryProvider()
    await provider.send(Q, [msg("a")])
    [held] = await provider.receive(Q, 1, 0)
    receiving = asyncio.create_task(provider.receive(Q, 1, timeout=5))
    accepting = asyncio.create_task(provider.accept_session(Q, None, timeout=5))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await provider.aclose()

    assert await asyncio.wait_for(receiving, 2) == []
    assert await asyncio.wait_for(accepting, 2) is None
    assert time.monotonic() - started < 0.5
    with pytest.raises(QueueError, match="closed"):
        await provider.send(Q, [msg("b")])
    with pytest.raises(QueueError, match="closed"):
        await provider.receive(Q, 1, 0)
    with pytest.raises(QueueError, match="closed"):
        await provider.complete(held.receipt)
    with pytest.raises(QueueError, match="closed"):
        await provider.accept_session(Q, None, 0)
    await provider.aclose()  # closing twice is fine


async def test_aclose_wakes_a_waiting_session_receive_which_returns_nothing() -> None:
    provider = InMemoryProvider()
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None
    task = asyncio.create_task(receiver.receive(1, timeout=5))
    await asyncio.sleep(0.05)

    await provider.aclose()

    # "waiting receives return" (InMemoryProvider.aclose): like a plain receive,
    # a session receive that was waiting returns an empty batch
    assert await asyncio.wait_for(task, 2) == []
    with pytest.raises(QueueError, match="closed"):
        await receiver.receive(1, 0)


# -- locks --------------------------------------------------------------------------------


async def test_renew_lock_keeps_the_message_from_redelivery_past_the_original_expiry(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a")])
    [received] = await provider.receive(Q, 1, 0)
    assert received.locked_until == to_datetime(clock.now() + 30)
    clock.advance(20)

    until = await provider.renew_lock(received.receipt)

    assert until == to_datetime(clock.now() + 30)
    assert received.locked_until == until
    clock.advance(20)  # 40 s after delivery: the original lock would have expired
    assert await provider.receive(Q, 1, 0) == []
    assert provider.stats(Q).in_flight == 1
    await provider.complete(received.receipt)


async def test_expired_lock_redelivers_and_cannot_be_renewed(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a")])
    [received] = await provider.receive(Q, 1, 0)
    clock.advance(30)

    with pytest.raises(InvalidReceiptError):
        await provider.renew_lock(received.receipt)
    [again] = await provider.receive(Q, 1, 0)
    assert again.delivery_count == 2
    assert again.first_delivered_at == received.first_delivered_at
    assert again.delivered_at == to_datetime(clock.now())


# -- session receivers ----------------------------------------------------------------


async def test_session_state_is_kept_between_receivers(provider: InMemoryProvider) -> None:
    receiver = await provider.accept_session(Q, sid("s"), 0)
    assert receiver is not None
    assert await receiver.get_state() is None

    await receiver.set_state(b"step-1")
    assert await receiver.get_state() == b"step-1"
    await receiver.close()

    again = await provider.accept_session(Q, sid("s"), 0)
    assert again is not None
    assert await again.get_state() == b"step-1"
    await again.set_state(None)
    assert await again.get_state() is None


async def test_session_state_must_be_bytes(provider: InMemoryProvider) -> None:
    receiver = await provider.accept_session(Q, sid("s"), 0)
    assert receiver is not None
    bad: Any = "text"

    with pytest.raises(ValidationError):
        await receiver.set_state(bad)
    assert await receiver.get_state() is None


async def test_session_renew_lock_keeps_the_session_past_its_first_expiry(
    clock: ManualClock,
) -> None:
    provider = await make(clock, session_lock_duration=60)
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a")])
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None
    assert receiver.locked_until == to_datetime(clock.now() + 60)
    [a1] = await receiver.receive(1, 0)
    clock.advance(50)

    until = await receiver.renew_lock()

    assert until == to_datetime(clock.now() + 60) == receiver.locked_until
    clock.advance(50)  # 100 s after accepting
    assert bodies(await receiver.receive(1, 0)) == [b"a2"]
    await provider.complete(a1.receipt)  # the message lock followed the session lock
    with pytest.raises(SessionLockedError):
        await provider.accept_session(Q, sid("a"), 0)


async def test_closing_a_session_releases_unsettled_messages_at_once(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a")])
    receiver = await provider.accept_session(Q, sid("a"), 0)
    assert receiver is not None
    held = await receiver.receive(10, 0)

    await receiver.close()

    assert provider.stats(Q) == QueueStats(active=2, in_flight=0, scheduled=0, dead_lettered=0)
    again = await provider.receive(Q, 10, 0)  # no clock advance needed
    assert bodies(again) == [b"a1", b"a2"]
    assert [m.delivery_count for m in again] == [2, 2]
    with pytest.raises(InvalidReceiptError):
        await provider.complete(held[0].receipt)
    with pytest.raises(SessionNotFoundError):
        await receiver.receive(1, 0)
    await receiver.close()  # closing twice is fine


async def test_expired_session_lock_is_lost_and_the_session_can_be_taken_over(
    clock: ManualClock,
) -> None:
    provider = await make(clock, session_lock_duration=60)
    await provider.send(Q, [msg("a1", "a")])
    old = await provider.accept_session(Q, sid("a"), 0)
    assert old is not None
    [first] = await old.receive(1, 0)
    with pytest.raises(SessionLockedError):
        await provider.accept_session(Q, sid("a"), 0)

    clock.advance(60)

    with pytest.raises(SessionLockLostError):
        await old.receive(1, 0)
    with pytest.raises(SessionLockLostError):
        await old.renew_lock()
    with pytest.raises(SessionLockLostError):
        await provider.complete(first.receipt)
    new = await provider.accept_session(Q, None, 0)
    assert new is not None
    assert new.session_id == "a"
    [again] = await new.receive(1, 0)
    assert again.body == b"a1"
    assert again.delivery_count == 2
    await provider.complete(again.receipt)


async def test_next_available_session_skips_locked_sessions(provider: InMemoryProvider) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("b1", "b")])
    first = await provider.accept_session(Q, None, 0)
    second = await provider.accept_session(Q, None, 0)

    assert first is not None
    assert second is not None
    assert (first.session_id, second.session_id) == ("a", "b")
    assert await provider.accept_session(Q, None, 0) is None


# -- receipts ------------------------------------------------------------------------------


async def test_receipts_from_another_provider_instance_are_rejected(clock: ManualClock) -> None:
    one = InMemoryProvider(clock=clock)
    other = InMemoryProvider(clock=clock)
    await one.send(Q, [msg("a")])
    await other.send(Q, [msg("b")])
    [received] = await one.receive(Q, 1, 0)

    with pytest.raises(InvalidReceiptError):
        await other.complete(received.receipt)
    with pytest.raises(InvalidReceiptError):
        await other.abandon(received.receipt)
    with pytest.raises(InvalidReceiptError):
        await other.dead_letter(received.receipt, "Poison")
    with pytest.raises(InvalidReceiptError):
        await other.renew_lock(received.receipt)

    assert other.stats(Q).active == 1
    assert one.stats(Q).in_flight == 1
    await one.complete(received.receipt)

    # a receipt naming the other instance is rejected even with a token this one knows
    [mine] = await other.receive(Q, 1, 0)
    foreign = ReceiptHandle(
        provider_id=one.provider_id,
        queue=Q,
        token=mine.receipt.token,
        locked_until=mine.locked_until,
        native=mine.receipt.native,
    )
    with pytest.raises(InvalidReceiptError):
        await other.complete(foreign)
    assert other.stats(Q).in_flight == 1


async def test_receipt_cannot_be_replayed_against_another_queue(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a")])
    await provider.send(QueueName("other"), [msg("b")])
    [received] = await provider.receive(Q, 1, 0)
    forged = ReceiptHandle(
        provider_id=provider.provider_id,
        queue=QueueName("other"),
        token=received.receipt.token,
        locked_until=received.locked_until,
    )

    with pytest.raises(InvalidReceiptError):
        await provider.complete(forged)
    await provider.complete(received.receipt)


async def test_receive_rejects_a_batch_size_outside_the_limits(provider: InMemoryProvider) -> None:
    with pytest.raises(ValidationError):
        await provider.receive(Q, 0, 0)
    with pytest.raises(ValidationError):
        await provider.receive(Q, 101, 0)
    receiver = await provider.accept_session(Q, sid("s"), 0)
    assert receiver is not None
    with pytest.raises(ValidationError):
        await receiver.receive(0, 0)


# -- dead-letter queue ------------------------------------------------------------------


async def test_dead_letter_keeps_reason_description_and_message_fields(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("bad", "s", attributes={"kind": "push"}, correlation_id="corr-1")])
    [received] = await provider.receive(Q, 1, 0)

    await provider.dead_letter(received.receipt, "Poison", "cannot parse")

    [dead] = provider.dead_letter_messages(Q)
    assert (dead.body, dead.session_id, dead.correlation_id) == (b"bad", "s", "corr-1")
    assert dead.attributes == {"kind": "push"}
    assert dead.message_id == received.message_id
    assert (dead.dead_letter_reason, dead.dead_letter_description) == ("Poison", "cannot parse")
    assert dead.delivery_count == 1
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=1)


async def test_dead_letter_of_a_session_message_unblocks_the_next_one(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a")])
    [a1] = await provider.receive(Q, 1, 0)

    await provider.dead_letter(a1.receipt, "Poison")

    assert bodies(await provider.receive(Q, 1, 0)) == [b"a2"]


async def test_receive_dead_letters_and_complete_removes_from_the_dlq(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a"), msg("b")])
    for received in await provider.receive(Q, 2, 0):
        await provider.dead_letter(received.receipt, "Poison")

    batch = await provider.receive_dead_letters(Q, 10, 0)

    assert bodies(batch) == [b"a", b"b"]
    assert all(m.receipt.dead_letter for m in batch)
    assert [m.delivery_count for m in batch] == [1, 1]  # DLQ reads are not deliveries
    assert await provider.receive_dead_letters(Q, 10, 0) == []  # locked while in flight
    with pytest.raises(InvalidReceiptError):
        await provider.dead_letter(batch[0].receipt, "Again")
    await provider.complete(batch[0].receipt)
    assert bodies(provider.dead_letter_messages(Q)) == [b"b"]
    assert provider.stats(Q).dead_lettered == 1
    await provider.abandon(batch[1].receipt)
    assert bodies(await provider.receive_dead_letters(Q, 10, 0)) == [b"b"]


async def test_peek_dead_letters_takes_no_lock(provider: InMemoryProvider) -> None:
    await provider.send(Q, [msg("a")])
    [received] = await provider.receive(Q, 1, 0)
    await provider.dead_letter(received.receipt, "Poison")

    [peeked] = await provider.peek_dead_letters(Q, 10)

    assert peeked.body == b"a"
    with pytest.raises(InvalidReceiptError):
        await provider.complete(peeked.receipt)
    assert bodies(await provider.receive_dead_letters(Q, 10, 0)) == [b"a"]


async def test_purge_dead_letters_returns_how_many_were_removed(
    provider: InMemoryProvider,
) -> None:
    await provider.send(Q, [msg("a"), msg("b"), msg("c")])
    for received in await provider.receive(Q, 3, 0):
        await provider.dead_letter(received.receipt, "Poison")
    [locked] = await provider.receive_dead_letters(Q, 1, 0)

    assert await provider.purge_dead_letters(Q) == 3

    assert provider.dead_letter_messages(Q) == []
    assert provider.stats(Q).dead_lettered == 0
    assert await provider.purge_dead_letters(Q) == 0
    with pytest.raises(InvalidReceiptError):
        await provider.complete(locked.receipt)


async def test_max_delivery_count_moves_the_message_to_the_dlq(clock: ManualClock) -> None:
    provider = await make(clock, max_delivery_count=2)
    await provider.send(Q, [msg("poison")])

    [first] = await provider.receive(Q, 1, 0)
    await provider.abandon(first.receipt)
    [second] = await provider.receive(Q, 1, 0)
    clock.advance(30)  # lock expiry counts like an abandon

    assert await provider.receive(Q, 1, 0) == []
    [dead] = provider.dead_letter_messages(Q)
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == second.delivery_count == 2


async def test_ttl_expired_message_goes_to_the_dlq_with_reason_ttl_expired(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("stale", time_to_live=10), msg("fresh")])
    clock.advance(10)

    assert bodies(await provider.receive(Q, 10, 0)) == [b"fresh"]

    [dead] = provider.dead_letter_messages(Q)
    assert dead.body == b"stale"
    assert dead.dead_letter_reason == "TTLExpired"
    assert dead.delivery_count == 0


async def test_ttl_expired_session_message_is_dead_lettered_not_delivered(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("a1", "a"), msg("a2", "a", time_to_live=10), msg("a3", "a")])
    [a1] = await provider.receive(Q, 1, 0)
    clock.advance(11)
    await provider.renew_lock(a1.receipt)
    await provider.complete(a1.receipt)

    assert bodies(await provider.receive(Q, 10, 0)) == [b"a3"]
    assert [m.dead_letter_reason for m in provider.dead_letter_messages(Q)] == ["TTLExpired"]


async def test_ttl_expired_message_is_not_counted_as_waiting(
    provider: InMemoryProvider, clock: ManualClock
) -> None:
    await provider.send(Q, [msg("stale", time_to_live=10)])

    clock.advance(10)

    # the message can never be delivered: inspection must not report it as waiting
    assert provider.pending_messages(Q) == []
    assert provider.stats(Q) == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=1)


async def test_next_available_session_is_not_one_whose_messages_all_expired(
    clock: ManualClock,
) -> None:
    provider = await make(clock, session_mode="native")
    await provider.send(Q, [msg("a1", "a", time_to_live=10)])
    clock.advance(10)

    assert await provider.accept_session(Q, None, 0) is None
    assert [m.dead_letter_reason for m in provider.dead_letter_messages(Q)] == ["TTLExpired"]


# -- inspection ------------------------------------------------------------------------------


async def test_stats_count_every_state(provider: InMemoryProvider, clock: ManualClock) -> None:
    later = to_datetime(clock.now() + 60)
    await provider.send(Q, [msg("1"), msg("2"), msg("3"), msg("4", scheduled_enqueue_time=later)])
    first, second = await provider.receive(Q, 2, 0)
    await provider.dead_letter(first.receipt, "Poison")

    assert provider.stats(Q) == QueueStats(active=1, in_flight=1, scheduled=1, dead_lettered=1)
    assert [m.body for m in provider.pending_messages(Q)] == [b"3"]

    await provider.complete(second.receipt)
    clock.advance(60)
    assert provider.stats(Q) == QueueStats(active=2, in_flight=0, scheduled=0, dead_lettered=1)
    assert [m.body for m in provider.pending_messages(Q)] == [b"3", b"4"]


async def test_settled_messages_do_not_stay_in_the_lock_expiry_heap() -> None:
    """A busy queue must not keep every settled record until its lock would have expired."""
    provider = InMemoryProvider(InMemoryConfig(max_queue_size=100_000))
    client = QueueClient(provider)
    await client.send_messages("busy", [Message(b"x") for _ in range(5_000)])
    while batch := await client.receive_messages("busy", 100, timeout=0):
        await client.complete_messages([m.receipt for m in batch])

    entity = provider._entities[QueueName("busy")]
    assert len(entity._locks) <= 2 * 1024
    await provider.aclose()


async def test_complete_many_settles_each_receipt_and_reports_each_error() -> None:
    provider = InMemoryProvider(InMemoryConfig())
    await provider.send(Q, [msg("1"), msg("2"), msg("3")])
    first, second, third = await provider.receive(Q, 3, 0)
    await provider.complete(second.receipt)
    provider.faults.fail_next("complete")

    results = await provider.complete_many([first.receipt, second.receipt, third.receipt])

    assert isinstance(results[0], ConnectionFailedError)  # the injected fault
    assert isinstance(results[1], InvalidReceiptError)  # settled already
    assert results[2] is None
    assert provider.stats(Q).in_flight == 1  # only the faulted one is still held
    await provider.aclose()
