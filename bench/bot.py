"""Bot throughput on the memory provider against a hand-written asyncio pipeline.

1,000 sessions x 20 messages, a no-op handler. The baseline uses the same
provider and client with one ``asyncio.Queue`` and one task per session and
no actors: the least a correct per-session-ordered consumer must do.

Run: ``.venv/bin/python -m bench.bot`` (part of ``python -m bench``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import queue_runtime as qr
from bench.harness import Row, interleaved, report, save
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import InMemoryProvider

SESSIONS = 1_000
PER_SESSION = 20
QUEUE = "bench"


class NoOp(Handler):
    event_types = ("bench",)

    async def handle(self, event: Event) -> None:
        return None


def _messages() -> list[qr.Message]:
    return [
        qr.Message(b"{}", attributes={"event_type": "bench"}, session_id=f"o/r/pull/{s}")
        for _ in range(PER_SESSION)
        for s in range(SESSIONS)
    ]


async def _filled_client(
    messages: list[qr.Message] | None = None, **options: Any
) -> qr.QueueClient:
    """A client on a fresh memory provider holding ``messages`` (default: this benchmark's);
    ``options`` go to the client (e.g. ``tracer_provider=``)."""
    provider = InMemoryProvider(qr.InMemoryConfig(max_queue_size=1_000_000))
    client = qr.QueueClient(provider, **options)
    await client.send_messages(QUEUE, _messages() if messages is None else messages)
    return client


async def _bot_run(
    client: qr.QueueClient | None = None,
    total: int = SESSIONS * PER_SESSION,
    *,
    finish: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Messages per second for the bot to handle ``total`` messages of ``client``'s queue
    (default: a fresh queue with this benchmark's messages); ``finish``, if given, is
    awaited before the clock stops (work the run left behind, such as exporting spans)."""
    client = client or await _filled_client()
    started = time.perf_counter()
    async with Bot(client, QUEUE, [NoOp], max_in_flight=2_000, receive_wait=0.05) as bot:
        while bot.stats().completed < total:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.001)
        if finish is not None:
            await finish()
        elapsed = time.perf_counter() - started
    await client.aclose()
    return total / elapsed


async def hand_written(
    client: qr.QueueClient,
    total: int,
    *,
    on_message: Callable[[qr.ReceivedMessage], object] = lambda message: None,
    receive_wait: float = 0.05,
) -> None:
    """The baseline consumer: a receive loop, one ``asyncio.Queue`` and task per session,
    ``on_message`` then complete; returns once ``total`` messages were completed."""
    done = 0
    finished = asyncio.Event()
    queues: dict[str, asyncio.Queue[qr.ReceivedMessage]] = {}
    workers: list[asyncio.Task[None]] = []

    async def worker(queue: asyncio.Queue[qr.ReceivedMessage]) -> None:
        nonlocal done
        while True:
            message = await queue.get()
            on_message(message)
            await client.complete_message(message.receipt)
            done += 1
            if done == total:
                finished.set()

    async def pull() -> None:
        while True:
            for message in await client.receive_messages(QUEUE, 100, timeout=receive_wait):
                key = message.session_id or ""
                queue = queues.get(key)
                if queue is None:
                    queue = queues[key] = asyncio.Queue()
                    workers.append(asyncio.create_task(worker(queue)))
                queue.put_nowait(message)

    puller = asyncio.create_task(pull())
    try:
        await finished.wait()
    finally:
        for task in [puller, *workers]:
            task.cancel()
        await asyncio.gather(puller, *workers, return_exceptions=True)


async def _baseline_run() -> float:
    """The hand-written pipeline; the no-op reads the event type, as the bot's router does."""
    client = await _filled_client()
    total = SESSIONS * PER_SESSION
    started = time.perf_counter()
    await hand_written(client, total, on_message=lambda m: m.attributes.get("event_type"))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return total / elapsed


def throughput() -> Row:
    loop = asyncio.new_event_loop()
    try:
        medians = interleaved(
            {
                "baseline": lambda: loop.run_until_complete(_baseline_run()),
                "bot": lambda: loop.run_until_complete(_bot_run()),
            }
        )
    finally:
        loop.close()
    ratio = medians["bot"] / medians["baseline"]
    return Row(
        f"bot throughput, memory, {SESSIONS:,} sessions x {PER_SESSION}, no-op handler",
        medians["bot"],
        "m/s",
        baseline=medians["baseline"],
        ratio=ratio,
        target=">= 0.5 x baseline and >= 20,000 msg/s",
        met=ratio >= 0.5 and medians["bot"] >= 20_000,
    )


def main() -> list[Row]:
    rows = [throughput()]
    report("bot", rows)
    print(f"\nwrote {save('bot', rows)}")
    return rows


if __name__ == "__main__":
    main()
