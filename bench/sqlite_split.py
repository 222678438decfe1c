"""Where the sqlite bot's time goes: the bot row of ``bench/sqlite.py`` taken apart.

Each round runs, one after the other on fresh files (20,000 messages, 1,000
sessions x 20):

* **loop**: the hand-written asyncio claim-and-delete loop of ``bench/sqlite.py``;
* **provider alone**: the same loop written against :class:`SqliteProvider`
  (``receive`` 100, read each message's ``event_type``, ``complete_many`` in
  batches of 40), no bot: what the provider costs without the actors;
* **bot on memory**: the bot of ``bench/bot.py`` on the in-memory provider: what
  the actors cost without SQLite;
* **bot on sqlite**: the bot row of ``bench/sqlite.py``.

Each prints its wall time and the process's CPU time (both threads). If the
actors and the provider's thread overlapped, the bot on sqlite would take about
the longer of the two parts; it takes about their sum.

Run: ``.venv/bin/python -m bench.sqlite_split [rounds]`` (not part of
``python -m bench``: it takes apart a row rather than measuring one).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import queue_runtime as qr
from bench import bot as memory_bot
from bench import sqlite
from queue_runtime.providers.sqlite import SqliteProvider

Timed = tuple[float, float]
"""Wall seconds and process CPU seconds."""


async def provider_alone(path: Path) -> int:
    """``bench.sqlite.hand_written``'s loop, through the provider; the messages handled."""
    provider = SqliteProvider(sqlite.config(path))
    queue = qr.QueueName(sqlite.QUEUE)
    done = 0
    try:
        while batch := await provider.receive(queue, sqlite.CLAIM, timeout=0):
            for message in batch:
                _ = message.attributes.get("event_type")
            for start in range(0, len(batch), sqlite.COMPLETE):
                chunk = batch[start : start + sqlite.COMPLETE]
                results = await provider.complete_many([m.receipt for m in chunk])
                if any(results):
                    raise RuntimeError("a lock was lost")
            done += len(batch)
    finally:
        await provider.aclose()
    return done


def _timed(runner: asyncio.Runner, work: Callable[[], Coroutine[Any, Any, Any]]) -> Timed:
    cpu, wall = time.process_time(), time.perf_counter()
    runner.run(work())
    return time.perf_counter() - wall, time.process_time() - cpu


def one_round(runner: asyncio.Runner, fresh: Callable[[], Path]) -> dict[str, Timed]:
    times: dict[str, Timed] = {}
    path = fresh()
    sqlite._raw_fill(path)
    times["loop"] = _timed(runner, lambda: sqlite.hand_written(path))
    path = fresh()
    runner.run(sqlite._filled(path))
    times["provider alone"] = _timed(runner, lambda: provider_alone(path))
    client = runner.run(memory_bot._filled_client())
    times["bot on memory"] = _timed(runner, lambda: memory_bot._bot_run(client))
    path = fresh()
    runner.run(sqlite._filled(path))
    times["bot on sqlite"] = _timed(runner, lambda: sqlite._bot_consume(path))
    return times


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average at start {os.getloadavg()} (2 cores, shared)")
    results: list[dict[str, Timed]] = []
    with sqlite._files() as fresh, asyncio.Runner() as runner:
        for _ in range(rounds):
            results.append(one_round(runner, fresh))
            line = ", ".join(
                f"{name} {sqlite.TOTAL / wall:,.0f} msg/s ({wall:.2f} s, cpu {cpu:.2f} s)"
                for name, (wall, cpu) in results[-1].items()
            )
            print(line, flush=True)
    print("medians:")
    for name in results[0]:
        wall = statistics.median(r[name][0] for r in results)
        cpu = statistics.median(r[name][1] for r in results)
        print(f"  {name:15s} {sqlite.TOTAL / wall:8,.0f} msg/s  wall {wall:.2f} s  cpu {cpu:.2f} s")
    parts = statistics.median(r["provider alone"][0] + r["bot on memory"][0] for r in results)
    whole = statistics.median(r["bot on sqlite"][0] for r in results)
    print(f"  provider alone + bot on memory: {parts:.2f} s; bot on sqlite: {whole:.2f} s")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
