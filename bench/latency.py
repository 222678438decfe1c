"""Latency at a fixed offered rate (open loop): from enqueue to handler start.

A producer sends at a fixed rate — 500 and 2,000 msg/s — on a schedule set by
the clock: message ``i`` is due at ``start + i / rate`` whatever the consumer
is doing (open loop; a producer that falls behind sends its backlog at once
rather than slowing down). Each message carries its enqueue time
(``time.perf_counter()`` just before ``send_message``) in an attribute; the
handler records ``now - enqueued`` as its first act, and does nothing else.
Messages go round-robin over ``SESSIONS`` session ids, so a session has at most
one message waiting at these rates and ordering never holds one back.

Candidates, on the same memory provider and producer, interleaved:

* the bot, with its default settings (``receive_wait`` 1 s, 1,000 in flight);
* the baseline, a hand-written asyncio consumer: one receive loop, one
  ``asyncio.Queue`` and task per session, complete after the (recording) no-op —
  what ``bench/bot.py`` uses as its throughput baseline. The ratio says what the
  actor hops (receiver → session supervisor → session actor → handler actor)
  cost in latency.

``receive_wait`` is not a lower bound: a receive waiting in the memory provider
is woken by every send (``Entity.notify``), so a message sent to an idle bot is
picked up within a few event-loop iterations.

Each run lasts ``SECONDS``; a warm-up run, then 5 interleaved runs per
candidate. p50, p99 and p99.9 are the medians of the 5 runs' percentiles; max is
the largest latency seen in any of them. Producer lag (how late sends were
against their schedule) is reported too: when it grows, the event loop is
saturated and the offered rate was not really offered.

Run: ``.venv/bin/python -m bench.latency`` (part of ``python -m bench``).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import queue_runtime as qr
from bench.bot import hand_written
from bench.harness import Row, interleaved_runs, percentile, report, save
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import InMemoryProvider

RATES = (500, 2_000)
SECONDS = 2.0
SESSIONS = 100
QUEUE = "bench"
STAMP = "enqueued_at"
P50_TARGET_US = 2_000
P99_TARGET_US = 20_000
PERCENTILES = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999}

Consumer = Callable[[qr.QueueClient, list[float], int], Coroutine[Any, Any, None]]
"""Consumes ``count`` messages from the client's queue, appending each latency (s)."""


@dataclass(frozen=True, slots=True)
class Run:
    latencies: list[float]
    """Seconds from enqueue to handler start, one per message."""
    lags: list[float]
    """Seconds each send was late against its schedule."""
    gc_pauses: list[float] = field(default_factory=list)
    """Seconds of each full (generation 2) garbage collection during the run."""

    def at(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)


def _latency(message: qr.ReceivedMessage) -> float:
    return time.perf_counter() - float(message.attributes[STAMP])


async def _produce(client: qr.QueueClient, rate: int, count: int) -> list[float]:
    """Send ``count`` messages at ``rate`` per second by the clock; return each send's lag."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    lags: list[float] = []
    for i in range(count):
        due = start + i / rate
        if (ahead := due - loop.time()) > 0:
            await asyncio.sleep(ahead)
        lags.append(loop.time() - due)
        message = qr.Message(
            b"{}",
            attributes={"event_type": "bench", STAMP: repr(time.perf_counter())},
            session_id=f"o/r/pull/{i % SESSIONS}",
        )
        await client.send_message(QUEUE, message)
    return lags


async def _bot(client: qr.QueueClient, latencies: list[float], count: int) -> None:
    last = asyncio.Event()

    class Recorder(Handler):
        event_types = ("bench",)

        async def handle(self, event: Event) -> None:
            latencies.append(_latency(event.message))
            if len(latencies) == count:
                last.set()

    async with Bot(client, QUEUE, [Recorder]) as bot:
        await last.wait()  # no polling while measuring: it would keep the loop busy
        while bot.stats().completed < count:  # noqa: ASYNC110 - only the last settles
            await asyncio.sleep(0.001)


async def _hand_written(client: qr.QueueClient, latencies: list[float], count: int) -> None:
    """A receive loop and one queue + task per session; complete after the no-op."""
    await hand_written(
        client, count, on_message=lambda m: latencies.append(_latency(m)), receive_wait=1.0
    )


@contextmanager
def _full_collections() -> Iterator[list[float]]:
    """Collect garbage first (every run starts from a clean heap), then time each full
    collection until the block ends: a full collection stops the event loop."""
    gc.collect()
    pauses: list[float] = []
    started = 0.0

    def timing(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if info["generation"] != 2:
            return
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started)

    gc.callbacks.append(timing)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timing)


async def _run(consume: Consumer, rate: int) -> Run:
    with _full_collections() as pauses:
        run = await _measure(consume, rate)
    return Run(run.latencies, run.lags, pauses)


async def _measure(consume: Consumer, rate: int) -> Run:
    count = int(rate * SECONDS)
    latencies: list[float] = []
    client = qr.QueueClient(InMemoryProvider(qr.InMemoryConfig()))
    async with client, asyncio.timeout(SECONDS + 30), asyncio.TaskGroup() as tasks:
        tasks.create_task(consume(client, latencies, count))
        await asyncio.sleep(0.05)  # the consumer is up and waiting in a receive
        lags = await _produce(client, rate, count)
    assert len(latencies) == count, f"{len(latencies)} of {count} handled"
    return Run(latencies, lags)


def rows_at(rate: int) -> list[Row]:
    with asyncio.Runner() as runner:
        runs = interleaved_runs(
            {
                "baseline": lambda: runner.run(_run(_hand_written, rate)),
                "bot": lambda: runner.run(_run(_bot, rate)),
            }
        )
    rows: list[Row] = []
    for label, fraction in PERCENTILES.items():
        bot = statistics.median(run.at(fraction) for run in runs["bot"]) * 1e6
        base = statistics.median(run.at(fraction) for run in runs["baseline"]) * 1e6
        target = {"p50": P50_TARGET_US, "p99": P99_TARGET_US}.get(label)
        rows.append(
            Row(
                f"latency {label} at {rate:,} msg/s, enqueue -> handler start",
                bot,
                "us",
                baseline=base,
                ratio=bot / base,
                target=f"< {target:,} us" if target else "",
                met=bot < target if target else None,
            )
        )
    worst = max(max(run.latencies) for run in runs["bot"]) * 1e6
    worst_base = max(max(run.latencies) for run in runs["baseline"]) * 1e6
    rows.append(
        Row(
            f"latency max at {rate:,} msg/s (worst of 5 runs)",
            worst,
            "us",
            baseline=worst_base,
            ratio=worst / worst_base,
        )
    )
    rows[0].detail = {
        "messages_per_run": int(rate * SECONDS),
        "full_gc_pauses_ms_bot": _pauses(runs["bot"]),
        "full_gc_pauses_ms_baseline": _pauses(runs["baseline"]),
        "producer_lag_p99_us_bot": round(
            statistics.median(percentile(run.lags, 0.99) for run in runs["bot"]) * 1e6
        ),
        "producer_lag_p99_us_baseline": round(
            statistics.median(percentile(run.lags, 0.99) for run in runs["baseline"]) * 1e6
        ),
    }
    return rows


def _pauses(runs: list[Run]) -> list[float]:
    return [round(pause * 1e3, 1) for run in runs for pause in run.gc_pauses]


def main() -> list[Row]:
    rows = [row for rate in RATES for row in rows_at(rate)]
    report("open-loop latency, memory provider (us, median of 5 interleaved runs)", rows)
    print(f"\nwrote {save('latency', rows)}")
    return rows


if __name__ == "__main__":
    main()
