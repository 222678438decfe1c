"""The stall watchdog restarts a receiver whose pull loop died or hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.actors import Bot
from queue_runtime.providers.memory import InMemoryProvider
from tests.actors.test_bot import QUEUE, Journal, bot_for, events, handler, wait_until


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
