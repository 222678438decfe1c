"""Fault injection: what each kind of fault does, on the bare provider and through
a FaultyProvider (the connection the test kit gives a bot)."""

from __future__ import annotations

import asyncio
import time

import pytest

import queue_runtime as qr
from queue_runtime.errors import (
    ConnectionFailedError,
    InvalidReceiptError,
    SessionLockLostError,
)
from queue_runtime.messages import QueueName
from queue_runtime.providers.memory import FaultInjector, InMemoryProvider
from queue_runtime.testing import FaultyProvider, VirtualClock

Q = QueueName("jobs")
pytestmark = pytest.mark.usefixtures("virtual_time")


def provider(**config: object) -> InMemoryProvider:
    return InMemoryProvider(qr.InMemoryConfig(**config), clock=VirtualClock())  # type: ignore[arg-type]


def message(body: str, session: str | None = None) -> qr.Message:
    return qr.Message(body.encode(), session_id=session)


async def test_a_dropped_send_stores_the_message_and_reports_a_transient_failure() -> None:
    shared = provider()
    connection = FaultyProvider(shared)
    connection.faults.drop_next("send")

    with pytest.raises(ConnectionFailedError) as caught:
        await connection.send(Q, [message("a")])

    assert caught.value.transient
    assert "lost" in str(caught.value)
    assert [m.body for m in shared.pending_messages(Q)] == [b"a"]


async def test_a_dropped_receive_leaves_the_messages_locked_until_the_lock_expires() -> None:
    shared = provider(lock_duration=30.0)
    connection = FaultyProvider(shared)
    await shared.send(Q, [message("a")])
    connection.faults.drop_next("receive")

    with pytest.raises(ConnectionFailedError):
        await connection.receive(Q, 10, timeout=0.0)
    assert shared.stats(Q).in_flight == 1
    assert await shared.receive(Q, 10, timeout=29.0) == []  # still locked

    [again] = await shared.receive(Q, 10, timeout=2.0)
    assert again.delivery_count == 2


async def test_a_failure_before_the_call_changes_nothing() -> None:
    shared = provider()
    connection = FaultyProvider(shared)
    connection.faults.fail_next("send", count=2)

    for _ in range(2):
        with pytest.raises(ConnectionFailedError):
            await connection.send(Q, [message("a")])
    await connection.send(Q, [message("b")])

    assert [m.body for m in shared.pending_messages(Q)] == [b"b"]
    assert connection.faults.injected == 2


async def test_a_lost_lock_through_a_faulty_provider_makes_the_message_visible_at_once() -> None:
    shared = provider(lock_duration=30.0)
    connection = FaultyProvider(shared)
    await shared.send(Q, [message("a")])
    [held] = await connection.receive(Q, 1, timeout=0.0)
    connection.faults.lose_lock_next("complete")

    with pytest.raises(InvalidReceiptError):
        await connection.complete(held.receipt)

    [again] = await shared.receive(Q, 1, timeout=0.0)  # no wait for the lock to expire
    assert again.message_id == held.message_id
    assert again.delivery_count == 2


async def test_a_lost_lock_on_the_bare_provider_only_reports_the_loss() -> None:
    shared = provider(lock_duration=30.0)
    await shared.send(Q, [message("a")])
    [held] = await shared.receive(Q, 1, timeout=0.0)
    shared.faults.lose_lock_next()

    with pytest.raises(InvalidReceiptError):
        await shared.complete(held.receipt)

    assert shared.stats(Q).in_flight == 1  # comes back when the lock expires
    await shared.complete(held.receipt)  # the lock itself was never touched
    assert shared.stats(Q).in_flight == 0


async def test_a_lost_lock_on_its_last_delivery_dead_letters_the_message_as_expiry_would() -> None:
    shared = provider(max_delivery_count=1)
    connection = FaultyProvider(shared)
    await shared.send(Q, [message("a")])
    [held] = await connection.receive(Q, 1, timeout=0.0)
    connection.faults.lose_lock_next("renew_lock")

    with pytest.raises(InvalidReceiptError):
        await connection.renew_lock(held.receipt)

    [dead] = shared.dead_letter_messages(Q)
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


async def test_a_lost_session_lock_releases_the_session_and_all_its_messages() -> None:
    shared = provider(session_mode="native")
    connection = FaultyProvider(shared)
    await shared.send(Q, [message("1", "s"), message("2", "s")])
    session = await connection.accept_session(Q, None, timeout=0.0)
    assert session is not None
    first, second = await session.receive(10, timeout=0.0)
    connection.faults.lose_lock_next("complete")

    with pytest.raises(InvalidReceiptError):
        await connection.complete(first.receipt)

    with pytest.raises(InvalidReceiptError):
        await connection.complete(second.receipt)  # the whole session went back
    again = await shared.accept_session(Q, None, timeout=0.0)
    assert again is not None
    assert [m.body for m in await again.receive(10, timeout=0.0)] == [b"1", b"2"]


async def test_losing_the_session_lock_on_renewal_raises_session_lock_lost() -> None:
    shared = provider(session_mode="native")
    connection = FaultyProvider(shared)
    await shared.send(Q, [message("1", "s")])
    session = await connection.accept_session(Q, None, timeout=0.0)
    assert session is not None
    connection.faults.lose_lock_next("renew_session_lock")

    with pytest.raises(SessionLockLostError):
        await session.renew_lock()

    assert await shared.accept_session(Q, None, timeout=0.0) is not None  # free again


async def test_a_delayed_call_takes_virtual_time_and_then_succeeds() -> None:
    loop = asyncio.get_running_loop()
    shared = provider()
    connection = FaultyProvider(shared)
    connection.faults.delay_next("send", 90.0)
    started, real = loop.time(), time.perf_counter()

    await connection.send(Q, [message("a")])

    assert loop.time() - started == pytest.approx(90.0)
    assert time.perf_counter() - real < 1.0
    assert shared.stats(Q).active == 1


async def test_random_delays_are_drawn_from_the_seed_within_their_bounds() -> None:
    def draws(seed: int) -> list[float]:
        faults = FaultInjector(seed=seed)
        faults.delay_randomly("*", 0.5, 1.0, max_seconds=3.0)
        return [faults.delay_for("receive") for _ in range(40)]

    first, again, other = draws(1), draws(1), draws(2)

    assert first == again
    assert first != other
    assert all(d == 0.0 or 1.0 <= d <= 3.0 for d in first)
    assert 0 < sum(1 for d in first if d) < 40


async def test_a_disconnected_provider_refuses_calls_and_loses_answers_in_flight() -> None:
    shared = provider(lock_duration=30.0)
    connection = FaultyProvider(shared)
    waiting = asyncio.ensure_future(connection.receive(Q, 10, timeout=5.0))
    await asyncio.sleep(1.0)
    await shared.send(Q, [message("a")])  # the waiting receive takes it ...
    connection.disconnect()  # ... but its answer never arrives

    with pytest.raises(ConnectionFailedError):
        await waiting
    with pytest.raises(ConnectionFailedError):
        await connection.send(Q, [message("b")])
    assert not connection.connected
    assert shared.stats(Q).in_flight == 1  # locked until the lock expires


async def test_closing_a_faulty_provider_leaves_the_provider_behind_it_open() -> None:
    shared = provider()
    connection = FaultyProvider(shared)

    await connection.aclose()

    await shared.send(Q, [message("a")])
    assert shared.stats(Q).active == 1


async def test_a_faulty_provider_refuses_the_injector_its_provider_applies_already() -> None:
    shared = InMemoryProvider()

    with pytest.raises(ValueError, match="its own FaultInjector"):
        FaultyProvider(shared, shared.faults)


@pytest.mark.parametrize(
    ("add", "message"),
    [
        (lambda f: f.fail_next("sned"), "unknown operation 'sned'"),
        (lambda f: f.lose_lock_next("send"), "holds no lock"),
        (lambda f: f.drop_randomly("send", 1.5), r"rate must be in \[0, 1\]"),
        (lambda f: f.delay_next("send", -1.0), "need 0 <= seconds"),
        (lambda f: f.delay_randomly("send", 0.5, 3.0, max_seconds=1.0), "need 0 <= seconds"),
        (lambda f: f.fail_next("send", count=0), "count must be a positive integer"),
    ],
)
async def test_bad_fault_rules_are_refused_with_a_message_naming_the_problem(
    add: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        add(FaultInjector())  # type: ignore[operator]


async def test_delay_rules_leave_check_alone_and_lose_lock_rules_only_match_lock_operations() -> (
    None
):
    faults = FaultInjector()
    faults.delay_next("complete", 1.0)
    faults.lose_lock_next()

    assert faults.check("send", after=False) is None  # "*" of a lose-lock rule: lock operations
    fault = faults.fault_for("complete", after=False)
    assert fault is not None
    assert fault.kind == "lose_lock"
    assert faults.delay_for("complete") == 1.0


async def test_a_health_probe_through_a_faulty_provider_sees_the_outage() -> None:
    from queue_runtime.health import probe_queue
    from queue_runtime.providers.memory import InMemoryProvider
    from queue_runtime.testing import FaultyProvider

    inner = InMemoryProvider()
    faulty = FaultyProvider(inner)
    async with qr.QueueClient(faulty) as client:
        healthy = await probe_queue(client, "jobs")
        faulty.faults.fail_next("queue_info")
        failing = await probe_queue(client, "jobs")

    assert healthy.ok
    assert not failing.ok
    assert failing.error is not None
    assert failing.error.transient
    await inner.aclose()
