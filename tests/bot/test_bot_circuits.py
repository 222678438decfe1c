"""Per-handler circuit breakers: an outage downstream burns no delivery counts.

Also: failure records carry the attempt history across deliveries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.bot.handlers import Admitted, NotAdmitted
from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.dlq import FailureRecord
from queue_runtime.providers.memory import InMemoryProvider
from tests.bot.test_bot import QUEUE, events, wait_until

MODES = ["emulated", "native"]
FAST_RETRY = qr.RetryPolicy(max_attempts=3, initial_delay=0.02, jitter=0.0)


class Downstream:
    """A dependency that is up or down, and what the handler saw of it."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0
        self.calls_while_open = 0
        self.delivery_counts: dict[str, int] = {}
        self.bot: Bot | None = None

    def handler(self, types: tuple[str, ...] = ("pull_request",)) -> type[Handler]:
        downstream = self

        class CallsDownstream(Handler):
            event_types: ClassVar[tuple[str, ...]] = types

            async def handle(self, event: Event) -> None:
                downstream.calls += 1
                bot = downstream.bot
                if bot is not None and bot.stats().circuits.get(type(self).__name__) == "open":
                    downstream.calls_while_open += 1
                count = downstream.delivery_counts.get(event.message_id, 0)
                downstream.delivery_counts[event.message_id] = max(count, event.delivery_count)
                if not downstream.up:
                    raise ConnectionError("downstream unavailable")

        return CallsDownstream


@pytest.fixture
async def provider_for() -> AsyncIterator[Callable[..., InMemoryProvider]]:
    made: list[InMemoryProvider] = []

    def make(mode: str = "emulated") -> InMemoryProvider:
        provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def bot_for(provider: InMemoryProvider, handlers: list[type[Handler]], **settings: Any) -> Bot:
    settings.setdefault("retry", FAST_RETRY)
    settings.setdefault("receive_wait", 0.05)
    return Bot(qr.QueueClient(provider), QUEUE, handlers, **settings)


@pytest.mark.parametrize("mode", MODES)
async def test_an_outage_downstream_opens_the_circuit_and_burns_no_delivery_counts(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode)
    downstream = Downstream()
    downstream.up = False
    sent = events(8, 3)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    circuit = CircuitBreakerConfig(failure_threshold=3, recovery_timeout=1.0, success_threshold=2)

    async with bot_for(provider, [downstream.handler()], handler_circuit=circuit) as bot:
        downstream.bot = bot
        await wait_until(lambda: bot.stats().circuits["CallsDownstream"] == "open")
        await wait_until(lambda: bot.stats().held > 0)
        calls_when_opened = downstream.calls
        await asyncio.sleep(
            0.5
        )  # still open: nothing is called, nothing pulled, nothing given back
        assert downstream.calls == calls_when_opened
        assert bot.stats().abandoned == 0
        downstream.up = True  # recovers before the half-open probe
        await wait_until(lambda: bot.stats().completed == len(sent))
        stats = bot.stats()

    assert downstream.calls_while_open == 0
    assert set(downstream.delivery_counts.values()) == {1}  # no message was delivered twice
    assert (stats.abandoned, stats.dead_lettered) == (0, 0)
    assert stats.circuits == {"CallsDownstream": "closed"}
    assert provider.dead_letter_messages(QUEUE) == []


async def test_a_long_outage_only_charges_the_half_open_probes(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    downstream = Downstream()
    downstream.up = False
    sent = events(6, 2)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    circuit = CircuitBreakerConfig(failure_threshold=3, recovery_timeout=0.3, success_threshold=1)

    async with bot_for(provider, [downstream.handler()], handler_circuit=circuit) as bot:
        downstream.bot = bot
        await wait_until(lambda: bot.stats().circuits["CallsDownstream"] == "open")
        calls_when_opened = downstream.calls
        await asyncio.sleep(1.0)  # about three recovery timeouts: one probe each
        probes = downstream.calls - calls_when_opened
        downstream.up = True
        await wait_until(lambda: bot.stats().completed == len(sent))
        stats = bot.stats()

    assert 1 <= probes <= 5
    assert downstream.calls_while_open == 0
    assert stats.dead_lettered == 0
    assert provider.dead_letter_messages(QUEUE) == []


async def test_one_poison_message_does_not_open_the_circuit(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    downstream = Downstream()
    poison = qr.Message.from_json(
        {"n": 0, "poison": True}, attributes={"event_type": "pull_request"}, session_id="o/r/1"
    )
    good = events(3, 2)
    await qr.QueueClient(provider).send_messages(QUEUE, [poison, *good])
    handler = downstream.handler()

    class Poisoned(handler):  # type: ignore[valid-type,misc]
        async def handle(self, event: Event) -> None:
            if event.json().get("poison"):
                raise ValueError("cannot parse this one")
            await super().handle(event)

    circuit = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=60.0)
    async with bot_for(provider, [Poisoned], handler_circuit=circuit, max_delivery_count=3) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1 and bot.stats().completed == 6)
        stats = bot.stats()

    assert stats.circuits == {"Poisoned": "closed"}
    [dead] = provider.dead_letter_messages(QUEUE)
    record = FailureRecord.from_attributes(dead.attributes)
    # the record spans all three failed handlings (in place, on the first delivery)
    assert [a.delivery for a in record.attempts] == [1] * 9
    assert {a.error for a in record.attempts} == {"ValueError"}


async def test_poison_messages_that_open_the_circuit_still_reach_the_dead_letter_queue(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    downstream = Downstream()
    downstream.up = False  # every message fails: to the breaker they look like an outage
    sent = events(4, 1)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    circuit = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=0.05, success_threshold=1)
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)

    async with bot_for(
        provider,
        [downstream.handler()],
        handler_circuit=circuit,
        retry=retry,
        max_delivery_count=2,
    ) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == len(sent), timeout=30.0)

    assert len(provider.dead_letter_messages(QUEUE)) == len(sent)


@pytest.mark.parametrize("mode", MODES)
async def test_stopping_gives_back_held_messages_at_once(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode)
    downstream = Downstream()
    downstream.up = False
    sent = events(5, 2)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    circuit = CircuitBreakerConfig(failure_threshold=3, recovery_timeout=60.0)
    bot = bot_for(provider, [downstream.handler()], handler_circuit=circuit, drain_timeout=10.0)
    await bot.start()
    try:
        await wait_until(lambda: bot.stats().held > 0)
    finally:
        started = time.monotonic()
        await bot.stop()
    stats = bot.stats()

    assert time.monotonic() - started < 2.0  # not the drain timeout, not the recovery timeout
    assert stats.in_flight == 0
    assert provider.stats(QUEUE).active == len(sent)  # every message can be received again
    assert provider.dead_letter_messages(QUEUE) == []


async def test_circuits_can_be_turned_off(provider_for: Callable[..., InMemoryProvider]) -> None:
    provider = provider_for()
    downstream = Downstream()
    downstream.up = False
    sent = events(6, 1)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    off = CircuitBreakerConfig(enabled=False)

    async with bot_for(provider, [downstream.handler()], handler_circuit=off) as bot:
        # every failure is charged to its message: dead-lettered after its failed handlings
        await wait_until(lambda: bot.stats().dead_lettered == len(sent))
        stats = bot.stats()

    assert stats.circuits == {"CallsDownstream": "closed"}
    assert stats.held == 0


async def test_a_call_admitted_before_its_circuit_opened_is_not_made_once_it_is_open(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    client = qr.QueueClient(provider_for())
    await client.send_message(QUEUE, qr.Message(b"{}", attributes={"event_type": "pull_request"}))
    message = await client.receive_message(QUEUE, timeout=1.0)
    assert message is not None
    event = Event.from_message(message, "pull_request")
    downstream = Downstream()
    ref = downstream.handler().start()
    circuit_open = True
    try:
        with pytest.raises(NotAdmitted):
            await ref.ask(Admitted(event, lambda: not circuit_open))
        assert downstream.calls == 0
        circuit_open = False
        await ref.ask(Admitted(event, lambda: not circuit_open))
        assert downstream.calls == 1
    finally:
        await ref.stop()
