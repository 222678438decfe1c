"""The provider's fast paths keep every guarantee of the slow ones: a sweep skipped
while nothing can be due still sees what another connection made due, a batch of
completions with one bad receipt still answers per receipt, and calls that share
one transaction (group commit) still fail or succeed each on its own."""

from __future__ import annotations

import asyncio

import pytest

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.errors import InvalidReceiptError
from queue_runtime.provider import TTL_EXPIRED_REASON

from .conftest import OpenProvider

Q = qr.QueueName("jobs")


async def test_a_message_scheduled_by_another_connection_comes_due_while_sweeps_are_skipped(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    consumer = open_provider(clock)
    producer = open_provider(clock)
    assert await consumer.receive(Q, 1, timeout=0) == []  # swept: nothing due, ever
    due = to_datetime(clock.now() + 5.0)
    await producer.send(Q, [qr.Message(b"later", scheduled_enqueue_time=due)])
    assert await consumer.receive(Q, 1, timeout=0) == []
    clock.advance(6.0)

    [message] = await consumer.receive(Q, 1, timeout=0)

    assert message.body == b"later"


async def test_a_lock_taken_by_another_connection_runs_out_while_sweeps_are_skipped(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    first = open_provider(clock, lock_duration=10.0)
    second = open_provider(clock, lock_duration=10.0)
    assert await first.receive(Q, 1, timeout=0) == []  # swept: nothing due, ever
    await first.send(Q, [qr.Message(b"a")])
    assert await second.receive(Q, 1, timeout=0) != []  # locked until +10 s
    assert await first.receive(Q, 1, timeout=0) == []  # second holds it
    clock.advance(11.0)

    [again] = await first.receive(Q, 1, timeout=0)

    assert again.delivery_count == 2


async def test_an_abandoned_message_whose_time_to_live_passed_is_swept_to_the_dlq(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    provider = open_provider(clock, lock_duration=60.0)
    await provider.send(Q, [qr.Message(b"short", time_to_live=5.0)])
    [message] = await provider.receive(Q, 1, timeout=0)
    clock.advance(6.0)
    assert await provider.receive(Q, 1, timeout=0) == []  # swept: quiet until its lock runs out
    await provider.abandon(message.receipt)

    assert await provider.receive(Q, 1, timeout=0) == []
    [dead] = await provider.peek_dead_letters(Q, 1)
    assert dead.dead_letter_reason == TTL_EXPIRED_REASON


async def test_a_batch_of_completions_with_a_lost_lock_answers_for_each_receipt(
    open_provider: OpenProvider,
) -> None:
    clock = qr.ManualClock()
    provider = open_provider(clock, lock_duration=10.0)
    await provider.send(Q, [qr.Message(b"1"), qr.Message(b"2"), qr.Message(b"3")])
    first, second, third = await provider.receive(Q, 3, timeout=0)
    await provider.complete(second.receipt)  # settled already: its receipt is no longer valid

    results = await provider.complete_many([first.receipt, second.receipt, third.receipt])

    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], InvalidReceiptError)
    assert await provider.stats(Q) == (0, 0, 0, 0)


async def test_calls_that_share_a_transaction_fail_or_succeed_each_on_its_own(
    open_provider: OpenProvider,
) -> None:
    provider = open_provider()
    await provider.send(Q, [qr.Message(b"1")])
    [message] = await provider.receive(Q, 1, timeout=0)
    await provider.complete(message.receipt)

    # queued together while the thread is busy: one transaction, one commit
    outcomes = await asyncio.gather(
        provider.send(Q, [qr.Message(b"2")]),
        provider.complete(message.receipt),  # fails: already completed
        provider.send(Q, [qr.Message(b"3")]),
        return_exceptions=True,
    )

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], InvalidReceiptError)
    bodies = [m.body for m in await provider.receive(Q, 10, timeout=0)]
    assert bodies == [b"2", b"3"]


async def test_calls_queued_together_are_committed_in_one_transaction(
    open_provider: OpenProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = open_provider()
    await provider.send(Q, [qr.Message(b"0")])  # the file is open
    groups: list[int] = []
    run_group = provider._store.run_group

    def counted(jobs):  # type: ignore[no-untyped-def]
        groups.append(len(jobs))
        return run_group(jobs)

    monkeypatch.setattr(provider._store, "run_group", counted)

    await asyncio.gather(*(provider.send(Q, [qr.Message(b"%d" % n)]) for n in range(1, 6)))

    assert sum(groups) == 5
    assert len(groups) < 5
    assert len(await provider.receive(Q, 10, timeout=0)) == 6


async def test_a_batch_of_completions_with_a_lost_lock_inside_a_group_answers_for_each(
    open_provider: OpenProvider,
) -> None:
    provider = open_provider()
    await provider.send(Q, [qr.Message(b"1"), qr.Message(b"2")])
    first, second = await provider.receive(Q, 2, timeout=0)
    await provider.complete(second.receipt)  # settled already: its receipt is no longer valid

    # queued together: the batch's one statement deletes the first row, then finds the
    # second gone; its savepoint is rolled back and each receipt is settled on its own
    outcomes = await asyncio.gather(
        provider.send(Q, [qr.Message(b"3")]),
        provider.complete_many([first.receipt, second.receipt]),
        provider.send(Q, [qr.Message(b"4")]),
    )

    assert outcomes[1][0] is None
    assert isinstance(outcomes[1][1], InvalidReceiptError)
    assert [m.body for m in await provider.receive(Q, 10, timeout=0)] == [b"3", b"4"]
    assert await provider.stats(Q) == (0, 2, 0, 0)
