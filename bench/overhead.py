"""Processing overhead: the bot running a 10 ms handler against the handler alone.

The handler awaits ``asyncio.sleep(0.010)``, standing in for a call to GitHub or
a database. The bot processes ``sessions`` x ``PER_SESSION`` messages from the
memory provider (the queue is filled before the clock starts); the bot is
started inside the timed section, so its start-up counts as overhead too.

The baseline ("the handler alone") makes the same handler calls with the same
concurrency and nothing else: one task per session, each awaiting
``handler.handle(event)`` ``PER_SESSION`` times in a row, with the same events
(received from a provider beforehand, so the calls get identical arguments).
That is the fastest any consumer can be: messages of one session must be
handled one after the other, sessions may run side by side, so the wall time
is ``PER_SESSION`` x 10 ms plus timer slack. Whatever the bot takes beyond that
is its overhead, reported as a share of the bot's wall time,
``(bot - baseline) / bot``. To give the bot the same concurrency, its
``max_in_flight`` holds every message and its handler's ``concurrency`` every
session (defaults 1,000 and 64 would otherwise cap it, which is a setting,
not overhead).

How many sessions: the quality target is read at 32 — a busy bot's worth of
pull requests in flight, about 3,000 msg/s offered, a small fraction of what the
bot can process (bench/bot.py), so the bot is not the bottleneck. The other
rows show how the overhead grows with the number of sessions: the sessions'
10 ms timers fall due together (the loop wakes at millisecond granularity), so
their handler replies, settles and next asks queue on the one event loop, and
each message waits for the bot's per-message CPU time of the others woken with
it. One session shows the bare per-message cost; 128 shows the pile-up.

Run: ``.venv/bin/python -m bench.overhead`` (part of ``python -m bench``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import queue_runtime as qr
from bench.harness import Row, interleaved_runs, report, save
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import InMemoryProvider

HANDLER_SECONDS = 0.010
PER_SESSION = 25
SESSION_COUNTS = (1, 8, 32, 128)
QUEUE = "bench"
TARGET = 0.10
"""Overhead at most this share of the bot's wall time."""


@dataclass(frozen=True, slots=True)
class Timing:
    wall: float
    cpu: float


def _handler_class(sessions: int, last_call: asyncio.Event | None = None) -> type[Handler]:
    """The 10 ms handler; it sets ``last_call`` when it returns for the last message."""
    calls = 0

    class TenMilliseconds(Handler):
        event_types = ("bench",)
        concurrency = max(Handler.concurrency, sessions)

        async def handle(self, event: Event) -> None:
            nonlocal calls
            await asyncio.sleep(HANDLER_SECONDS)
            calls += 1
            if last_call is not None and calls == sessions * PER_SESSION:
                last_call.set()

    return TenMilliseconds


def _messages(sessions: int) -> list[qr.Message]:
    return [
        qr.Message(b"{}", attributes={"event_type": "bench"}, session_id=f"o/r/pull/{s}")
        for _ in range(PER_SESSION)
        for s in range(sessions)
    ]


async def filled_client(sessions: int) -> qr.QueueClient:
    client = qr.QueueClient(InMemoryProvider(qr.InMemoryConfig()))
    await client.send_messages(QUEUE, _messages(sessions))
    return client


async def _bot_run(sessions: int) -> Timing:
    return await process(await filled_client(sessions), sessions)


async def process(client: qr.QueueClient, sessions: int) -> Timing:
    """Start a bot on ``client``'s filled queue and time it until every message is
    completed (also profiled by ``bench.profile overhead``)."""
    total = sessions * PER_SESSION
    last_call = asyncio.Event()
    handler = _handler_class(sessions, last_call)
    started, cpu = time.perf_counter(), time.process_time()
    async with Bot(client, QUEUE, [handler], max_in_flight=total, receive_wait=0.05) as bot:
        await last_call.wait()  # then poll briefly for the last settle: no polling before
        while bot.stats().completed < total:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.0005)
        timing = Timing(time.perf_counter() - started, time.process_time() - cpu)
    await client.aclose()
    return timing


async def _events(sessions: int) -> dict[str, list[Event]]:
    """The same messages the bot gets, received once and grouped by session, as events."""
    client = await filled_client(sessions)
    by_session: dict[str, list[Event]] = {}
    while batch := await client.receive_messages(QUEUE, 100, timeout=0):
        for message in batch:
            event = Event.from_message(message, "bench")
            by_session.setdefault(message.session_id or "", []).append(event)
    await client.aclose()
    assert sum(map(len, by_session.values())) == sessions * PER_SESSION
    return by_session


async def _handler_alone(sessions: int) -> Timing:
    """The baseline: each session's handler calls in order, the sessions side by side."""
    by_session = await _events(sessions)
    handler = _handler_class(sessions)()

    async def lane(events: list[Event]) -> None:
        for event in events:
            await handler.handle(event)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as lanes:
        for events in by_session.values():
            lanes.create_task(lane(events))
    return Timing(time.perf_counter() - started, time.process_time() - cpu)


def overhead(sessions: int) -> Row:
    with asyncio.Runner() as runner:
        runs = interleaved_runs(
            {
                "alone": lambda: runner.run(_handler_alone(sessions)),
                "bot": lambda: runner.run(_bot_run(sessions)),
            }
        )
    bot = _median(runs["bot"])
    alone = _median(runs["alone"])
    share = (bot.wall - alone.wall) / bot.wall
    return Row(
        f"10 ms handler, {sessions} session{'s' * (sessions > 1)} x {PER_SESSION}, "
        "bot vs handler alone",
        bot.wall * 1e3,
        "ms",
        baseline=alone.wall * 1e3,
        ratio=bot.wall / alone.wall,
        target=f"overhead < {TARGET:.0%} of wall",
        met=share < TARGET,
        detail={
            "overhead_share_of_wall": round(share, 4),
            "bot_cpu_ms": round(bot.cpu * 1e3, 1),
            "alone_cpu_ms": round(alone.cpu * 1e3, 1),
            "messages": sessions * PER_SESSION,
            "ideal_ms": PER_SESSION * HANDLER_SECONDS * 1e3,
        },
    )


def _median(timings: list[Timing]) -> Timing:
    """The run with the median wall time (its CPU time goes with it)."""
    ordered = sorted(timings, key=lambda timing: timing.wall)
    return ordered[len(ordered) // 2]


def main() -> list[Row]:
    rows = [overhead(sessions) for sessions in SESSION_COUNTS]
    report("processing overhead (wall ms, median of 5 interleaved runs)", rows)
    print(f"\nwrote {save('overhead', rows)}")
    return rows


if __name__ == "__main__":
    main()
