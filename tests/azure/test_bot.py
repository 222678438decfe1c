"""The actor Bot end to end on the Azure adapter (fake namespace)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler

from .conftest import World


def recorder(seen: dict[str, list[int]]) -> type[Handler]:
    class Record(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            seen[event.session_id or "-"].append(event.json()["n"])

    return Record


async def _run_until(bot: Bot, done: Callable[[], bool]) -> None:
    async with bot:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, f"bot stalled: {bot.stats()}"
            await asyncio.sleep(0.01)


async def test_a_bot_processes_native_sessions_in_order(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=True)
    client = world.client()
    await client.send_messages(
        queue,
        [
            qr.Message.from_json({"n": n}, attributes={"event_type": "e"}, session_id=f"pr/{s}")
            for n in range(5)
            for s in range(4)
        ],
    )
    seen: dict[str, list[int]] = defaultdict(list)
    bot = Bot(client, queue, [recorder(seen)], receive_wait=0.05)

    await _run_until(bot, lambda: bot.stats().completed == 20)

    assert dict(seen) == {f"pr/{s}": [0, 1, 2, 3, 4] for s in range(4)}


async def test_a_bot_falls_back_to_plain_receive_on_a_queue_without_sessions(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue(sessions=False)  # session_queues unset: the provider must learn it
    client = world.client()
    await client.send_messages(
        queue, [qr.Message.from_json({"n": n}, attributes={"event_type": "e"}) for n in range(6)]
    )
    seen: dict[str, list[int]] = defaultdict(list)
    bot = Bot(client, queue, [recorder(seen)], receive_wait=0.05)

    await _run_until(bot, lambda: bot.stats().completed == 6)

    assert sorted(seen["-"]) == list(range(6))
