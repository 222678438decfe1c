"""Where the bot's time goes: the bot throughput scenario of bench/bot.py, profiled.

Runs the bot over 1,000 sessions x 20 messages with a no-op handler (the same
client, queue and settings as ``bench.bot``) ``RUNS`` times under pyinstrument,
sampling the event loop's thread every millisecond; filling the queue is not
profiled. ``python -m bench.profile overhead`` profiles the 32-session scenario
of ``bench.overhead`` (10 ms handler) instead; ``telemetry`` and ``metrics`` the
bot of ``bench.telemetry`` with an OpenTelemetry SDK (traces with a batch span
processor and metrics, or metrics only); ``sqs`` the bot of ``bench.sqs_bot`` on
a moto server (much of its wall time is waiting for moto). Prints the top
functions by own time (samples where the function itself was running) and by
cumulative time (samples where it was anywhere on the stack), and own time per
module. The full call tree goes to
``queue-runtime-profile-<scenario>.html`` in the temporary directory (it is
large, and bench/results/ keeps only JSON).

pyinstrument's hook runs on every Python call, so the profiled bot runs about
4x slower than unprofiled: read the shares, not the seconds.

pyinstrument is not a project dependency: ``.venv/bin/pip install pyinstrument``.
Without it the same scenario runs under cProfile (which costs far more per call,
so its proportions lean towards small, often-called functions).

Run: ``.venv/bin/python -m bench.profile [bot|overhead|telemetry|metrics|sqs]`` (not
part of ``python -m bench``: it measures nothing against a baseline).
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import queue_runtime as qr
from bench import bot, overhead, sqs_bot, sqs_raw, telemetry
from queue_runtime.bot import Bot

RUNS = 3
INTERVAL = 0.001
TOP = 15
LOOP_CALLBACK = "asyncio/events.py:"
"""Where the event loop runs a callback (``Handle._run``): the root of cumulative time."""

Stacks = list[tuple[list[str], float]]
"""pyinstrument's frame records: the call stack (outermost first) and the time it got."""


async def _bot_throughput(client: qr.QueueClient) -> float:
    """The measured part of bench.bot: start the bot on a filled queue, wait until done."""
    total = bot.SESSIONS * bot.PER_SESSION
    started = time.perf_counter()
    async with Bot(
        client, bot.QUEUE, [bot.NoOp], max_in_flight=2_000, receive_wait=0.05
    ) as running:
        while running.stats().completed < total:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


def _telemetry(setup: Callable[[], telemetry.Sdk]) -> Scenario:
    """The bot over bench.telemetry's queue, with that SDK set-up (a new one per run)."""
    sdks: list[telemetry.Sdk] = []

    async def fill() -> qr.QueueClient:
        sdks.append(setup())
        return await bot._filled_client(telemetry._messages(), **sdks[-1].options)

    async def process(client: qr.QueueClient) -> float:
        sdk = sdks.pop()
        started = time.perf_counter()
        total = telemetry.SESSIONS * telemetry.PER_SESSION
        await bot._bot_run(client, total, finish=lambda: _flush(sdk))
        elapsed = time.perf_counter() - started
        sdk.close()
        return elapsed

    what = "traces (batch processor) + metrics" if setup is telemetry._tracing else "metrics"
    return Scenario(
        f"bot throughput with an SDK: {what} "
        f"({telemetry.SESSIONS} sessions x {telemetry.PER_SESSION}, no-op handler)",
        telemetry.SESSIONS * telemetry.PER_SESSION,
        fill,
        process,
    )


async def _flush(sdk: telemetry.Sdk) -> None:
    await asyncio.to_thread(sdk.flush)


async def _overhead(client: qr.QueueClient) -> float:
    return (await overhead.process(client, OVERHEAD_SESSIONS)).wall


async def _overhead_queue() -> qr.QueueClient:
    return await overhead.filled_client(OVERHEAD_SESSIONS)


class _Sqs:
    """The bot of ``bench/sqs_bot.py`` (FIFO queue on a moto server, 200 messages in 100
    groups, ``receive_wait`` 1 s); the moto server runs in its own process, unprofiled."""

    def __init__(self) -> None:
        self.bench: sqs_bot.Bench | None = None
        self.queue = ("", "")

    @contextmanager
    def serving(self, runner: asyncio.Runner) -> Iterator[None]:
        with sqs_raw.moto_server() as endpoint:
            self.bench = sqs_bot.Bench(endpoint, runner)
            runner.run(self.bench.start())
            try:
                yield
            finally:
                runner.run(self.bench.stop())

    async def fill(self) -> qr.QueueClient:
        assert self.bench is not None, "fill outside serving()"
        self.queue = await self.bench.filled_queue()
        return self.bench.client

    async def process(self, client: qr.QueueClient) -> float:
        assert self.bench is not None, "process outside serving()"
        started = time.perf_counter()
        return await self.bench.bot(*self.queue) - started


@contextmanager
def _nothing(runner: asyncio.Runner) -> Iterator[None]:
    yield


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    messages: int
    fill: Callable[[], Coroutine[Any, Any, qr.QueueClient]]
    process: Callable[[qr.QueueClient], Coroutine[Any, Any, float]]
    """Runs the bot on the filled client's queue; returns the wall time in seconds."""
    serving: Callable[[asyncio.Runner], AbstractContextManager[None]] = _nothing
    """What must run around every run (a server)."""


OVERHEAD_SESSIONS = 32
_SQS = _Sqs()
SCENARIOS = {
    "bot": Scenario(
        f"bot throughput ({bot.SESSIONS:,} sessions x {bot.PER_SESSION}, no-op handler)",
        bot.SESSIONS * bot.PER_SESSION,
        bot._filled_client,
        _bot_throughput,
    ),
    "overhead": Scenario(
        f"10 ms handler ({OVERHEAD_SESSIONS} sessions x {overhead.PER_SESSION})",
        OVERHEAD_SESSIONS * overhead.PER_SESSION,
        _overhead_queue,
        _overhead,
    ),
    "telemetry": _telemetry(telemetry._tracing),
    "metrics": _telemetry(telemetry._metrics),
    "sqs": Scenario(
        f"SQS bot on moto (FIFO, {sqs_bot.GROUPS} groups x {sqs_bot.MESSAGES // sqs_bot.GROUPS})",
        sqs_bot.MESSAGES,
        _SQS.fill,
        _SQS.process,
        _SQS.serving,
    ),
}


def place(identifier: str) -> tuple[str, str]:
    """(function, short file:line) of a pyinstrument frame identifier.

    Example:
        >>> place("_run_once\\x00/x/lib/python3.11/asyncio/base_events.py\\x001845")
        ('_run_once', 'asyncio/base_events.py:1845')
    """
    function, _, rest = identifier.partition("\x00")
    path, _, line = rest.partition("\x00")
    path = re.sub(r"^.*/(site-packages|python3\.\d+|__editable__[^/]*)/", "", path)
    return function, f"{path}:{line}" if line else path


Seconds = collections.defaultdict[str, float]


def own_and_cumulative(stacks: Stacks) -> tuple[Seconds, Seconds]:
    """Seconds per frame identifier: as the innermost frame, and anywhere in the running
    callback (once per sample, however deep the recursion).

    Cumulative time starts below the event loop's ``Handle._run``: the frames above
    it (the runner, the loop) are on every sample and say nothing, and samples
    outside any callback (the loop's own work, waiting in ``epoll``) count only
    as own time.
    """
    own: Seconds = collections.defaultdict(float)
    cumulative: Seconds = collections.defaultdict(float)
    for stack, seconds in stacks:
        identifiers = [frame.partition("\x01")[0] for frame in stack]
        if not identifiers:
            continue
        own[identifiers[-1]] += seconds
        for index in range(len(identifiers) - 1, -1, -1):
            if place(identifiers[index])[1].startswith(LOOP_CALLBACK):
                for identifier in set(identifiers[index + 1 :]):
                    cumulative[identifier] += seconds
                break
    return own, cumulative


def _module(identifier: str) -> str:
    return place(identifier)[1].rpartition(":")[0] or place(identifier)[0]


def _top(seconds: Seconds) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda item: item[1], reverse=True)[:TOP]


def _table(title: str, rows: Iterable[tuple[str, float]], total: float) -> None:
    print(f"\n{title}")
    print(f"{'share':>6} {'seconds':>8}  where")
    for name, seconds in rows:
        print(f"{seconds / total:>6.1%} {seconds:>8.3f}  {name}")


def _report(scenario: Scenario, stacks: Stacks, wall: float) -> None:
    total = sum(seconds for _, seconds in stacks)
    own, cumulative = own_and_cumulative(stacks)
    by_module: Seconds = collections.defaultdict(float)
    for identifier, seconds in own.items():
        by_module[_module(identifier)] += seconds
    print(
        f"{scenario.title}: {RUNS} runs, {scenario.messages * RUNS / wall:,.0f} msg/s "
        f"while profiled; {total:.2f} s sampled"
    )

    def label(identifier: str) -> str:
        function, where = place(identifier)
        return f"{function}  ({where})"

    _table(
        "own time (the function itself was running)",
        ((label(i), s) for i, s in _top(own)),
        total,
    )
    _table(
        "cumulative time (the function was on the stack)",
        ((label(i), s) for i, s in _top(cumulative)),
        total,
    )
    _table("own time by module", _top(by_module), total)


def _with_pyinstrument(runner: asyncio.Runner, name: str, scenario: Scenario) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=INTERVAL, async_mode="disabled")
    wall = 0.0
    for _ in range(RUNS):
        client = runner.run(scenario.fill())
        profiler.start()
        wall += runner.run(scenario.process(client))
        profiler.stop()
    session = profiler.last_session
    assert session is not None
    _report(scenario, session.frame_records, wall)
    html = Path(tempfile.gettempdir()) / f"queue-runtime-profile-{name}.html"
    html.write_text(profiler.output_html())
    print(f"\ncall tree: {html}")


def _with_cprofile(runner: asyncio.Runner, scenario: Scenario) -> None:
    profile = cProfile.Profile()
    for _ in range(RUNS):
        client = runner.run(scenario.fill())
        profile.enable()
        runner.run(scenario.process(client))
        profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(TOP)
    stats.sort_stats("cumulative").print_stats(TOP)


def main(name: str = "bot") -> None:
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise SystemExit(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    with asyncio.Runner() as runner, scenario.serving(runner):
        runner.run(scenario.process(runner.run(scenario.fill())))  # warm-up, unprofiled
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            print("pyinstrument is not installed: profiling with cProfile instead")
            _with_cprofile(runner, scenario)
        else:
            _with_pyinstrument(runner, name, scenario)


if __name__ == "__main__":
    main(*sys.argv[1:2])
