"""Actor runtime benchmarks: ask vs a raw queue, idle actor memory, vs pykka's threads.

Run: ``.venv/bin/python -m bench.actors`` (part of ``python -m bench``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

import pykka

from bench.harness import Row, interleaved, interleaved_runs, report, save
from queue_runtime.actors import AsyncioActor, stop_all

ROUND_TRIPS = 20_000


class Echo(AsyncioActor):
    def on_receive(self, message: Any) -> Any:
        return message


class ThreadEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


async def _raw_round_trips(n: int) -> float:
    """Baseline: a task answering requests from an asyncio.Queue through futures."""
    requests: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

    async def server() -> None:
        while True:
            value, reply = await requests.get()
            reply.set_result(value)

    serving = asyncio.create_task(server())
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for i in range(n):
        reply: asyncio.Future[int] = loop.create_future()
        requests.put_nowait((i, reply))
        await reply
    elapsed = time.perf_counter() - started
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    return elapsed / n * 1e6


async def _ask_round_trips(n: int) -> float:
    ref = Echo.start()
    started = time.perf_counter()
    for i in range(n):
        await ref.ask(i)
    elapsed = time.perf_counter() - started
    await ref.stop()
    return elapsed / n * 1e6


def ask_vs_queue() -> Row:
    loop = asyncio.new_event_loop()
    try:
        medians = interleaved(
            {
                "raw": lambda: loop.run_until_complete(_raw_round_trips(ROUND_TRIPS)),
                "ask": lambda: loop.run_until_complete(_ask_round_trips(ROUND_TRIPS)),
            }
        )
    finally:
        loop.close()
    ratio = medians["ask"] / medians["raw"]
    return Row(
        "ask round trip vs raw asyncio.Queue round trip",
        medians["ask"],
        "us",
        baseline=medians["raw"],
        ratio=ratio,
        target="ratio <= 5",
        met=ratio <= 5,
    )


# -- memory and start/stop, measured in fresh processes ---------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _idle_session_actors(count: int) -> dict[str, float]:
    import queue_runtime as qr
    from queue_runtime.bot.context import BotContext, BotSettings
    from queue_runtime.bot.locks import LockRenewer
    from queue_runtime.bot.sessions import SessionActor, _Parts
    from queue_runtime.providers.memory import InMemoryProvider

    client = qr.QueueClient(InMemoryProvider())
    context = BotContext(client, qr.QueueName("bench"), BotSettings())
    parts = _Parts(context, Echo.start(), Echo.start(), LockRenewer(context))
    await asyncio.sleep(0)
    gc.collect()
    before = _rss_bytes()
    started = time.perf_counter()
    refs = [SessionActor.start(f"o/r/pull/{i}", parts) for i in range(count)]
    await asyncio.sleep(0)  # let every actor reach its idle wait
    created = time.perf_counter() - started
    gc.collect()
    after = _rss_bytes()
    started = time.perf_counter()
    await stop_all(refs)
    stopped = time.perf_counter() - started
    return {
        "bytes_per_actor": (after - before) / count,
        "create_s": created,
        "stop_s": stopped,
    }


async def _asyncio_actors(count: int) -> dict[str, float]:
    gc.collect()
    before = _rss_bytes()
    started = time.perf_counter()
    refs = [Echo.start() for _ in range(count)]
    for ref in refs:
        await ref.ask("ping")
    rss = _rss_bytes() - before
    await stop_all(refs)
    return {"seconds": time.perf_counter() - started, "bytes": rss}


def _threading_actors(count: int) -> dict[str, float]:
    gc.collect()
    before = _rss_bytes()
    started = time.perf_counter()
    refs = [ThreadEcho.start() for _ in range(count)]
    for ref in refs:
        ref.ask("ping")
    rss = _rss_bytes() - before
    for ref in refs:
        ref.stop()
    return {"seconds": time.perf_counter() - started, "bytes": rss}


def _in_subprocess(kind: str, count: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.actors", "--child", kind, str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def idle_actors(count: int) -> list[Row]:
    runs = interleaved_runs({"idle": lambda: _in_subprocess("idle", count)})["idle"]
    per_actor = sorted(r["bytes_per_actor"] for r in runs)[2]
    lifecycle = sorted(r["create_s"] + r["stop_s"] for r in runs)[2]
    rows = [
        Row(
            f"{count:,} idle session actors: RSS per actor",
            per_actor,
            "B",
            target="<= 4096 B",
            met=per_actor <= 4096,
        )
    ]
    if count <= 10_000:
        rows.append(
            Row(
                f"{count:,} session actors created and stopped",
                lifecycle * 1000,
                "ms",
                target="< 1000 ms",
                met=lifecycle < 1.0,
            )
        )
    return rows


def versus_threads(count: int = 1000) -> list[Row]:
    runs = interleaved_runs(
        {
            "asyncio": lambda: _in_subprocess("asyncio", count),
            "threading": lambda: _in_subprocess("threading", count),
        }
    )
    ours, theirs = runs["asyncio"], runs["threading"]
    ours_s = sorted(r["seconds"] for r in ours)[2]
    theirs_s = sorted(r["seconds"] for r in theirs)[2]
    ours_b = sorted(r["bytes"] for r in ours)[2]
    theirs_b = sorted(r["bytes"] for r in theirs)[2]
    speed = theirs_s / ours_s
    memory = theirs_b / max(ours_b, 1)
    return [
        Row(
            f"{count:,} actors start+ask+stop: asyncio vs ThreadingActor (time)",
            ours_s * 1000,
            "ms",
            baseline=theirs_s * 1000,
            ratio=speed,
            target="threads/asyncio >= 5",
            met=speed >= 5,
        ),
        Row(
            f"{count:,} actors: asyncio vs ThreadingActor (RSS)",
            ours_b / 1024,
            "KiB",
            baseline=theirs_b / 1024,
            ratio=memory,
            target="threads/asyncio >= 5",
            met=memory >= 5,
        ),
    ]


def main() -> list[Row]:
    rows = [ask_vs_queue(), *idle_actors(10_000), *idle_actors(100_000), *versus_threads()]
    report("actor runtime", rows)
    print(f"\nwrote {save('actors', rows)}")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        kind, count = sys.argv[2], int(sys.argv[3])
        if kind == "threading":
            print(json.dumps(_threading_actors(count)))
        else:
            runner = _idle_session_actors if kind == "idle" else _asyncio_actors
            print(json.dumps(asyncio.run(runner(count))))
    else:
        main()
