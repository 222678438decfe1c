"""Under 30 % transient provider failures, every message is completed or dead-lettered,
only poison messages reach the DLQ (after exactly their handler attempts), and the
bot's counters add up exactly."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import FaultInjector, InMemoryProvider

MESSAGES = 600
POISON_EVERY = 50
MAX_DELIVERY_COUNT = 5


class Poison(Exception):
    pass


@pytest.mark.parametrize("mode", ["emulated", "native"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_nothing_is_lost_and_counters_add_up_under_provider_faults(
    mode: str, seed: int
) -> None:
    handled: set[str] = set()
    calls: Counter[str] = Counter()

    class Record(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            calls[event.message_id] += 1
            if event.attributes.get("poison"):
                raise Poison("always fails")
            handled.add(event.message_id)

    faults = FaultInjector(seed=seed)
    config = qr.InMemoryConfig(session_mode=mode, lock_duration=1.0, session_lock_duration=1.0)  # type: ignore[arg-type]
    provider = InMemoryProvider(config, faults=faults)
    sent = [
        qr.Message(
            b"{}",
            attributes={"event_type": "e", **({"poison": "1"} if n % POISON_EVERY == 7 else {})},
            session_id=f"s{n % 40}",
        )
        for n in range(MESSAGES)
    ]
    poison = {m.message_id for m in sent if m.attributes.get("poison")}
    await qr.QueueClient(provider).send_messages("q", sent)
    client = qr.QueueClient(
        provider,
        qr.QueueConfig(
            retry=qr.RetryPolicy(initial_delay=0.01, max_delay=0.05),
            circuit_breaker=qr.CircuitBreakerConfig(enabled=False),
        ),
    )
    faults.fail_randomly("*", 0.3)
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
    off = qr.CircuitBreakerConfig(enabled=False)  # every poison failure is charged
    bot = Bot(client, "q", [Record], retry=retry, receive_wait=0.05, handler_circuit=off)

    await bot.start()
    deadline = time.monotonic() + 60
    while provider.stats("q").active or provider.stats("q").in_flight:
        assert time.monotonic() < deadline, f"stalled: {provider.stats('q')} {bot.stats()}"
        await asyncio.sleep(0.05)
    await bot.stop()
    faults.clear()

    dead = Counter(m.message_id for m in provider.dead_letter_messages("q"))
    assert all(m.message_id in handled or m.message_id in dead for m in sent)
    assert set(dead) == poison  # no valid message was dead-lettered (the provider's limit: 5)
    assert set(dead.values()) == {1}
    assert {calls[m] for m in poison} == {MAX_DELIVERY_COUNT * retry.max_attempts}
    assert faults.injected > 100
    stats = bot.stats()
    assert stats.in_flight == 0
    assert stats.dead_lettered == len(poison)
    assert stats.received == (
        stats.completed
        + stats.abandoned
        + stats.dead_lettered
        + stats.lost_locks
        + stats.settle_failures
    )
