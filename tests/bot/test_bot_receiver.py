"""The receiver under trouble: the stall watchdog, and stopping in the middle of a receive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot
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
