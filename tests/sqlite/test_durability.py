"""What the file keeps: messages, locks, session locks and state survive a new
provider on the same file (a restart, or another process), and providers on one
file see and respect each other's work."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

import queue_runtime as qr
from queue_runtime.providers.sqlite import SqliteProvider

from .conftest import OpenProvider

Q = qr.QueueName("jobs")


async def _one(
    provider: SqliteProvider, queue: str = Q, timeout: float = 1.0
) -> qr.ReceivedMessage:
    [message] = await provider.receive(qr.QueueName(queue), 1, timeout=timeout)
    return message


async def test_sent_messages_are_there_for_a_provider_opened_after_a_restart(
    open_provider: OpenProvider,
) -> None:
    first = open_provider()
    sent = qr.Message(
        b"\x00body\xff",
        attributes={"event_type": "push"},
        session_id="o/r/pull/1",
        correlation_id="c-1",
        content_type="application/json",
        time_to_live=3600.0,
    )
    await first.send(Q, [sent, qr.Message(b"second")])
    await first.aclose()

    second = open_provider()
    received = await second.receive(Q, 10, timeout=1.0)

    assert [m.body for m in received] == [b"\x00body\xff", b"second"]
    got = received[0]
    assert (got.message_id, dict(got.attributes), got.session_id) == (
        sent.message_id,
        {"event_type": "push"},
        "o/r/pull/1",
    )
    assert (got.correlation_id, got.content_type, got.time_to_live) == (
        "c-1",
        "application/json",
        3600.0,
    )
    assert got.delivery_count == 1


async def test_a_completed_message_stays_gone_after_a_restart(open_provider: OpenProvider) -> None:
    first = open_provider()
    await first.send(Q, [qr.Message(b"done"), qr.Message(b"left")])
    message = await _one(first)
    await first.complete(message.receipt)
    await first.aclose()

    second = open_provider()

    assert [m.body for m in await second.receive(Q, 10, timeout=0.1)] == [b"left"]


async def test_a_lock_held_when_the_process_died_holds_until_it_expires(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    first = open_provider(clock, lock_duration=30.0)
    await first.send(Q, [qr.Message(b"in hand")])
    taken = await _one(first)
    await first.aclose()  # never settled: as if the process had been killed

    second = open_provider(clock, lock_duration=30.0)
    assert await second.receive(Q, 1, timeout=0.1) == []
    clock.advance(31.0)
    again = await _one(second)

    assert again.message_id == taken.message_id
    assert again.delivery_count == 2


async def test_session_state_and_dead_letters_survive_a_restart(
    open_provider: OpenProvider,
) -> None:
    first = open_provider(session_mode="native")
    await first.send(Q, [qr.Message(b"x", session_id="s")])
    session = await first.accept_session(Q, qr.SessionId("s"), timeout=1.0)
    assert session is not None
    [message] = await session.receive(1, timeout=1.0)
    await session.set_state(b'{"step":3}')
    await first.dead_letter(
        message.receipt, "ValueError", "bad", {"queue_runtime.failure.handler": "H"}
    )
    await session.close()
    await first.aclose()

    second = open_provider(session_mode="native")
    again = await second.accept_session(Q, qr.SessionId("s"), timeout=1.0)
    assert again is not None
    [letter] = await second.peek_dead_letters(Q, 10)

    assert await again.get_state() == b'{"step":3}'
    assert (letter.dead_letter_reason, letter.dead_letter_description) == ("ValueError", "bad")
    assert letter.attributes["queue_runtime.failure.handler"] == "H"
    await again.close()


async def test_two_providers_on_one_file_never_hold_one_session_at_once(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    one = open_provider(clock, session_mode="native", session_lock_duration=60.0)
    two = open_provider(clock, session_mode="native", session_lock_duration=60.0)
    await one.send(Q, [qr.Message(f"{i}".encode(), session_id="pr-1") for i in range(3)])

    held = await one.accept_session(Q, None, timeout=1.0)
    assert held is not None
    with pytest.raises(qr.SessionLockedError):
        await two.accept_session(Q, qr.SessionId("pr-1"), timeout=0.1)
    assert await two.accept_session(Q, None, timeout=0.1) is None
    [first] = await held.receive(1, timeout=1.0)
    await one.complete(first.receipt)
    await held.close()
    taken = await two.accept_session(Q, None, timeout=1.0)

    assert taken is not None
    assert [m.body for m in await taken.receive(10, timeout=1.0)] == [b"1", b"2"]
    await taken.close()


async def test_a_session_lock_that_runs_out_in_one_provider_passes_to_another(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    one = open_provider(clock, session_mode="native", session_lock_duration=10.0)
    two = open_provider(clock, session_mode="native", session_lock_duration=10.0)
    await one.send(Q, [qr.Message(b"a", session_id="s")])
    old = await one.accept_session(Q, qr.SessionId("s"), timeout=1.0)
    assert old is not None
    [held] = await old.receive(1, timeout=1.0)

    clock.advance(11.0)
    new = await two.accept_session(Q, qr.SessionId("s"), timeout=1.0)
    assert new is not None

    with pytest.raises(qr.SessionLockLostError):
        await one.complete(held.receipt)
    with pytest.raises(qr.SessionLockLostError):
        await old.set_state(b"stale")
    [again] = await new.receive(1, timeout=1.0)
    assert (again.body, again.delivery_count) == (b"a", 2)
    await new.close()


async def test_plain_receives_of_two_providers_keep_a_session_in_order(
    open_provider: OpenProvider,
) -> None:
    one, two = open_provider(), open_provider()
    await one.send(Q, [qr.Message(f"{i}".encode(), session_id="s") for i in range(2)])

    first = await _one(one)
    blocked = await two.receive(Q, 10, timeout=0.1)
    await one.complete(first.receipt)
    second = await _one(two)

    assert first.body == b"0"
    assert blocked == []  # the session is in flight in the other provider
    assert second.body == b"1"


async def test_a_waiting_receive_wakes_for_a_send_by_another_provider(
    open_provider: OpenProvider,
) -> None:
    waiter, sender = open_provider(poll_interval=0.02), open_provider()
    await waiter.receive(Q, 1, timeout=0.0)  # the file and the queue exist

    async def send_later() -> None:
        await asyncio.sleep(0.2)
        await sender.send(Q, [qr.Message(b"late")])

    started = time.monotonic()
    sending = asyncio.create_task(send_later())
    received = await waiter.receive(Q, 1, timeout=5.0)
    elapsed = time.monotonic() - started
    await sending

    assert [m.body for m in received] == [b"late"]
    assert elapsed < 1.0


async def test_a_cancelled_receive_gives_back_what_it_took_without_counting_it(
    open_provider: OpenProvider,
) -> None:
    provider = open_provider()
    await provider.send(Q, [qr.Message(b"keep")])
    other = open_provider()

    receiving = asyncio.create_task(provider.receive(Q, 1, timeout=5.0))
    await asyncio.sleep(0)  # the claim is on its way to the worker thread
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    again = await _one(other, timeout=2.0)

    assert again.body == b"keep"
    assert again.delivery_count == 1


async def test_scheduled_messages_wait_in_the_file_across_a_restart(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    first = open_provider(clock)
    due = qr.Message(b"tick", scheduled_enqueue_time=qr.clock.to_datetime(clock.now() + 60))
    await first.send(Q, [due])
    assert await first.stats(Q) == (0, 0, 1, 0)
    await first.aclose()

    second = open_provider(clock)
    early = await second.receive(Q, 1, timeout=0.05)
    clock.advance(61.0)
    late = await _one(second)

    assert early == []
    assert late.body == b"tick"


async def test_the_event_loop_runs_on_while_a_call_waits_for_another_processs_lock(
    open_provider: OpenProvider, db_path: Path
) -> None:
    provider = open_provider(busy_timeout=1.0)
    await provider.send(Q, [qr.Message(b"x")])
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # another process's long write
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        with pytest.raises(qr.OperationTimeoutError):
            await provider.send(Q, [qr.Message(b"waits for the lock")])
        waited = time.monotonic() - started
    finally:
        ticking.cancel()
        locker.execute("ROLLBACK")
        locker.close()

    assert waited >= 0.9  # it waited out busy_timeout ...
    assert ticks >= 30  # ... on the worker thread: the loop went round all the while


async def test_a_batch_complete_answers_per_receipt_in_one_transaction(
    open_provider: OpenProvider,
) -> None:
    provider, other = open_provider(), open_provider()
    await provider.send(Q, [qr.Message(b"a"), qr.Message(b"b")])
    first, second = await provider.receive(Q, 2, timeout=1.0)
    await provider.complete(second.receipt)
    await other.send(Q, [qr.Message(b"theirs")])
    [theirs] = await other.receive(Q, 1, timeout=1.0)

    results = await provider.complete_many([first.receipt, second.receipt, theirs.receipt])

    assert results[0] is None
    assert isinstance(results[1], qr.InvalidReceiptError)  # settled already
    assert isinstance(results[2], qr.InvalidReceiptError)  # another provider's receipt
    assert await provider.stats(Q) == (0, 1, 0, 0)  # only the other provider's is left
    await other.complete(theirs.receipt)


async def test_a_batch_above_the_limit_is_refused_whole(open_provider: OpenProvider) -> None:
    provider = open_provider(max_batch_size=3)

    with pytest.raises(qr.BatchTooLargeError):
        await provider.send(Q, [qr.Message(f"{i}".encode()) for i in range(4)])

    assert await provider.stats(Q) == (0, 0, 0, 0)


def _readme_config(folder: Path) -> qr.QueueConfig:
    """The README's sqlite TOML block, loaded, with its file moved into ``folder``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The sqlite provider", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    file = folder / "queue.toml"
    file.write_text(block.replace("/var/lib/mybot/queues.db", str(folder / "q.db")))
    return qr.load_config(file, env={})


async def test_the_readme_configuration_selects_a_working_provider_through_the_registry(
    tmp_path: Path,
) -> None:
    config = _readme_config(tmp_path)

    async with await qr.create_client(config) as client:
        await client.send_message("jobs", qr.Message(b"via the registry"))
        received = await client.receive_message("jobs", timeout=1.0)
        assert received is not None
        await client.complete_message(received.receipt)

    assert isinstance(config.provider, qr.SqliteConfig)
    assert client.provider_type is qr.ProviderType.SQLITE
    assert received.body == b"via the registry"
    assert await asyncio.to_thread((tmp_path / "q.db").is_file)
