"""The receiver under trouble: the stall watchdog, and stopping in the middle of a receive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot
from queue_runtime.health import HealthStatus
from queue_runtime.providers.memory import InMemoryProvider
from tests.bot.test_bot import QUEUE, Journal, bot_for, events, handler, wait_until


class Fatal(BaseException):
    """Not an Exception: escapes the pull loop's error handling and kills it."""


@pytest.fixture
async def provider() -> AsyncIterator[InMemoryProvider]:
    provider = InMemoryProvider(qr.InMemoryConfig())
    yield provider
    await provider.aclose()


async def test_a_receiver_whose_pull_loop_died_is_restarted(provider: InMemoryProvider) -> None:
    client = qr.QueueClient(provider)
    original = client.receive_messages
    calls = 0

    async def dies_once(*args: Any, **kwargs: Any) -> list[qr.ReceivedMessage]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Fatal("the pull loop dies")
        return await original(*args, **kwargs)

    client.receive_messages = dies_once  # type: ignore[method-assign]
    journal = Journal()
    sent = events(3, 2)
    await client.send_messages(QUEUE, sent)
    bot = Bot(client, QUEUE, [handler(journal)], receive_wait=0.05, stall_timeout=0.2)

    async with bot:
        await wait_until(lambda: bot.stats().completed == len(sent), timeout=10.0)
        stats = bot.stats()

    assert stats.receiver_restarts == 1
    assert calls > 1


async def test_a_busy_or_idle_receiver_is_not_restarted(provider: InMemoryProvider) -> None:
    journal = Journal()
    sent = events(5, 4)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(provider, [handler(journal)], stall_timeout=0.3) as bot:
        await wait_until(lambda: bot.stats().completed == len(sent))
        await asyncio.sleep(1.0)  # idle: empty receives keep the loop going round
        stats = bot.stats()

    assert stats.receiver_restarts == 0


class SlowAnswers(InMemoryProvider):
    """The provider has taken the messages, but the answer is still on its way."""

    answering = asyncio.Event()

    async def receive(self, *args: Any, **kwargs: Any) -> list[qr.ReceivedMessage]:
        batch = await super().receive(*args, **kwargs)
        if batch:
            self.answering.set()
            await asyncio.sleep(0.3)
        return batch


async def test_stopping_gives_back_what_an_interrupted_receive_had_taken() -> None:
    provider = SlowAnswers(qr.InMemoryConfig(lock_duration=60.0))
    try:
        sent = events(4, 2)
        await qr.QueueClient(provider).send_messages(QUEUE, sent)
        bot = bot_for(provider, [handler(Journal())])
        await bot.start()
        await provider.answering.wait()
        await bot.stop()  # while the receive that took the messages is still answering

        assert provider.stats(QUEUE).active == len(sent)  # receivable now, not in 60 s
        assert bot.stats().received == 0
    finally:
        await provider.aclose()


class HangingReceives(InMemoryProvider):
    """A provider whose first receive (or every one: ``every=True``) hangs, as on a
    black-holed connection, until ``released``; later receives work."""

    def __init__(
        self, config: qr.InMemoryConfig, *, cancellable: bool = True, every: bool = False
    ) -> None:
        super().__init__(config)
        self.hanging = asyncio.Event()
        self.released = asyncio.Event()
        self.cancellable = cancellable
        self.every = every

    async def receive(self, *args: Any, **kwargs: Any) -> list[qr.ReceivedMessage]:
        if self.every or not self.hanging.is_set():
            self.hanging.set()
            while not self.released.is_set():
                try:
                    await self.released.wait()
                except asyncio.CancelledError:
                    if self.cancellable:
                        raise
                    # a badly behaved SDK: swallows the cancellation and keeps waiting
            return []
        return await super().receive(*args, **kwargs)


@pytest.mark.parametrize("cancellable", [True, False], ids=["cancellable", "ignores-cancel"])
async def test_a_hanging_receive_is_reported_by_the_watchdog_which_does_not_hang(
    cancellable: bool,
) -> None:
    provider = HangingReceives(qr.InMemoryConfig(), cancellable=cancellable)
    sent = events(3, 2)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    # the client's own timeout (10 s + the wait) is far beyond the stall timeout
    bot = bot_for(provider, [handler(Journal())], stall_timeout=0.5)
    try:
        async with asyncio.timeout(20):
            await bot.start()
            await provider.hanging.wait()
            await asyncio.sleep(0.4)  # most of the stall timeout, no receive has come back
            async with asyncio.timeout(2.0):  # health answers although the receive hangs
                report = await bot.health()
            receive = report.check("receive")
            assert receive is not None
            assert receive.status is not HealthStatus.HEALTHY, report.to_dict()

            # the watchdog restarts the receiver; the new one receives (the old one may hang on)
            await wait_until(lambda: bot.stats().completed == len(sent), timeout=10.0)
            assert bot.stats().receiver_restarts >= 1
            async with asyncio.timeout(2.0):
                healthy = await bot.health()
            assert healthy.check("receive").status is HealthStatus.HEALTHY  # type: ignore[union-attr]
    finally:
        provider.released.set()
        await bot.stop()
        await provider.aclose()


async def test_a_receive_hanging_past_the_stall_timeout_makes_the_bot_unhealthy() -> None:
    provider = HangingReceives(qr.InMemoryConfig(), every=True)
    bot = bot_for(provider, [handler(Journal())], stall_timeout=0.5)
    try:
        async with asyncio.timeout(20):
            await bot.start()
            await provider.hanging.wait()
            seen: list[str] = []
            while not bot.stats().receiver_restarts:
                async with asyncio.timeout(2.0):
                    receive = (await bot.health()).check("receive")
                assert receive is not None
                seen.append(receive.status.label)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(2.0):
                receive = (await bot.health()).check("receive")
    finally:
        provider.released.set()
        await bot.stop()
        await provider.aclose()

    assert seen[0] == "degraded"  # no receive yet since the start: not ready
    assert receive is not None
    assert receive.status is HealthStatus.UNHEALTHY  # stalled past the stall timeout
    assert "stalled" in receive.detail


async def test_stop_returns_within_the_drain_timeout_while_a_receive_hangs() -> None:
    provider = HangingReceives(qr.InMemoryConfig(), every=True)
    bot = bot_for(provider, [handler(Journal())], drain_timeout=1.0)
    loop = asyncio.get_running_loop()
    try:
        await bot.start()
        await provider.hanging.wait()
        started = loop.time()
        async with asyncio.timeout(10):
            await bot.stop()  # the hung receive alone would hold it 3 x 10 s (client retries)
        took = loop.time() - started
    finally:
        provider.released.set()
        await bot.stop()
        await provider.aclose()

    assert took < 1.0 + 0.5, f"stop took {took:.1f} s for a 1 s drain timeout"
