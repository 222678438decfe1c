"""A delivery is spent only on a handler: each test is one way good messages used to
lose deliveries (and so reach the provider's delivery limit) without a handler failure."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import FaultInjector, InMemoryProvider

QUEUE = "events"
FAST = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
CLIENT_RETRY = qr.RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0)


class Seen:
    """Handler calls by message id, and the delivery count each call saw."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.deliveries: dict[str, list[int]] = {}
        self.order: list[tuple[str | None, int]] = []


def recorder(seen: Seen, fails: Callable[[Event], bool] = lambda e: False) -> type[Handler]:
    class Recorder(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            seen.calls[event.message_id] += 1
            seen.deliveries.setdefault(event.message_id, []).append(event.delivery_count)
            if fails(event):
                raise ValueError("cannot handle this one")
            seen.order.append((event.session_id, event.json()["n"]))

    return Recorder


def numbered(count: int, session: str | None = "s") -> list[qr.Message]:
    return [
        qr.Message.from_json({"n": n}, attributes={"event_type": "e"}, session_id=session)
        for n in range(count)
    ]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def bot_on(provider: InMemoryProvider, seen: Seen, **settings: object) -> Bot:
    client = qr.QueueClient(
        provider,
        qr.QueueConfig(retry=CLIENT_RETRY, circuit_breaker=qr.CircuitBreakerConfig(enabled=False)),
    )
    fails = settings.pop("fails", lambda e: False)
    return Bot(client, QUEUE, [recorder(seen, fails)], retry=FAST, receive_wait=0.05, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_a_complete_whose_answer_was_lost_gives_back_nothing(mode: str) -> None:
    # the first complete takes effect and its answer is lost; the client's retry finds
    # the receipt settled. Before: counted as a lost lock, and the rest of the batch was
    # given back (a delivery each) so that nothing overtook a message that was gone.
    faults = FaultInjector()
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode), faults=faults)  # type: ignore[arg-type]
    await qr.QueueClient(provider).send_messages(QUEUE, numbered(5))
    faults.drop_next("complete")
    seen = Seen()
    async with bot_on(provider, seen) as bot:
        await until(lambda: bot.stats().completed == 5)
        stats = bot.stats()

    assert (stats.lost_locks, stats.abandoned, stats.received) == (0, 0, 5)
    assert all(d == [1] for d in seen.deliveries.values())
    assert seen.order == [("s", n) for n in range(5)]
    assert faults.injected == 1


async def test_a_settle_failing_past_the_clients_retries_is_tried_again() -> None:
    # four failures in a row outlast the client's three attempts: before, the
    # message waited out its lock, came back and was handled a second time
    faults = FaultInjector()
    provider = InMemoryProvider(qr.InMemoryConfig(lock_duration=1.0), faults=faults)
    await qr.QueueClient(provider).send_messages(QUEUE, numbered(3))
    faults.fail_next("complete", count=CLIENT_RETRY.max_attempts + 1)
    seen = Seen()
    async with bot_on(provider, seen) as bot:
        await until(lambda: bot.stats().completed == 3)
        stats = bot.stats()

    assert (stats.settle_failures, stats.lost_locks, stats.abandoned) == (0, 0, 0)
    assert set(seen.calls.values()) == {1}
    assert provider.stats(QUEUE).active == provider.stats(QUEUE).in_flight == 0


def slow_settling_bot(provider: InMemoryProvider, seen: Seen, drain_timeout: float) -> Bot:
    """A bot whose settle rounds pause 0.3 s: long enough to stop it during one."""
    client = qr.QueueClient(
        provider,
        qr.QueueConfig(retry=CLIENT_RETRY, circuit_breaker=qr.CircuitBreakerConfig(enabled=False)),
    )
    slow = qr.RetryPolicy(max_attempts=2, initial_delay=0.3, jitter=0.0)
    return Bot(
        client, QUEUE, [recorder(seen)], retry=slow, receive_wait=0.05, drain_timeout=drain_timeout
    )


@pytest.mark.parametrize(("drain_timeout", "completed"), [(5.0, 1), (0.1, 0)])
async def test_a_stop_lets_a_settle_round_run_that_ends_before_the_drain_deadline(
    drain_timeout: float, completed: int
) -> None:
    # before: a stop gave up the rounds at once, so a complete whose earlier answer was
    # lost (it took effect) counted as a settle failure; now a round that fits in the
    # drain deadline still runs, and one that would overrun it is not started
    faults = FaultInjector()
    provider = InMemoryProvider(faults=faults)
    await qr.QueueClient(provider).send_messages(QUEUE, numbered(1))
    faults.delay_next("complete", 0.2)  # the bot is stopping when the first round fails
    faults.fail_next("complete", count=CLIENT_RETRY.max_attempts + 1)  # as above: one round
    seen = Seen()
    bot = slow_settling_bot(provider, seen, drain_timeout)
    async with bot:
        await until(lambda: sum(seen.calls.values()) == 1)
        await bot.stop()
        stats = bot.stats()

    assert stats.completed == completed
    left = provider.stats(QUEUE)
    assert left.active + left.in_flight == 1 - completed  # not settled: it comes back
    assert sum(seen.calls.values()) == 1


async def test_a_lost_lock_in_an_unordered_lane_gives_back_only_that_message() -> None:
    # messages without session id have no order to keep: before, a lost lock on one
    # gave back every later message of its lane's batch
    faults = FaultInjector()
    provider = InMemoryProvider(qr.InMemoryConfig(lock_duration=0.5), faults=faults)
    await qr.QueueClient(provider).send_messages(QUEUE, numbered(6, session=None))
    faults.lose_lock_next("complete")
    seen = Seen()
    async with bot_on(provider, seen, unordered_concurrency=1) as bot:
        await until(lambda: bot.stats().completed == 6)
        stats = bot.stats()

    assert (stats.lost_locks, stats.abandoned) == (1, 0)
    assert sorted(len(d) for d in seen.deliveries.values()) == [1, 1, 1, 1, 1, 2]


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_a_failing_message_is_handled_again_in_place_and_its_followers_keep_their_delivery(
    mode: str,
) -> None:
    faults = FaultInjector()
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode), faults=faults)  # type: ignore[arg-type]
    sent = numbered(4)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    flaky = sent[1].message_id
    seen = Seen()
    # fails on its first three handlings (two attempts each), then succeeds
    fails: Callable[[Event], bool] = lambda e: e.message_id == flaky and seen.calls[flaky] <= 6  # noqa: E731
    async with bot_on(provider, seen, fails=fails, max_delivery_count=5) as bot:
        await until(lambda: bot.stats().completed == 4)
        stats = bot.stats()

    assert seen.calls[flaky] == 7
    assert all(d == [1] * len(d) for d in seen.deliveries.values())  # nothing came back
    assert seen.order == [("s", n) for n in range(4)]
    assert (stats.abandoned, stats.dead_lettered, stats.received) == (0, 0, 4)
    assert provider.dead_letter_messages(QUEUE) == []


async def test_a_message_whose_dead_lettering_failed_is_not_handled_again() -> None:
    # every dead-letter round fails: the message comes back after its lock. Before, its
    # failure count started again, and a poison message got twice its handler attempts
    faults = FaultInjector()
    provider = InMemoryProvider(
        qr.InMemoryConfig(lock_duration=0.3, max_delivery_count=10), faults=faults
    )
    await qr.QueueClient(provider).send_messages(QUEUE, numbered(2))
    faults.fail_next("dead_letter", count=3 * CLIENT_RETRY.max_attempts)
    poison = lambda e: e.json()["n"] == 0  # noqa: E731
    seen = Seen()
    async with bot_on(provider, seen, fails=poison, max_delivery_count=3) as bot:
        await until(lambda: bot.stats().dead_lettered == 1 and bot.stats().completed == 1)
        stats = bot.stats()

    [letter] = provider.dead_letter_messages(QUEUE)
    assert letter.dead_letter_reason == "ValueError"
    assert letter.delivery_count == 2  # dead-lettered on the delivery after the failed one
    assert seen.calls[letter.message_id] == 3 * FAST.max_attempts  # exactly, not 6 * 2
    assert stats.settle_failures == 1
