"""Fault soak: with 30 % of provider calls failing transiently, over 10,000 messages,
every message is completed or dead-lettered, and the bot's counters add up exactly.

A third of the faults strike *after* the real call (the service acted, the answer
was lost): sends that happened twice, completes that took effect but raised,
receives whose messages never reached the bot and come back only when their
lock expires. The rest strike before the call.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, BotStats, Event, Handler
from queue_runtime.providers.aws import SqsProvider
from queue_runtime.providers.memory import InMemoryProvider

from .handling_log import LogFollower
from .processes import BotProcesses, bot_environment
from .transient_faults import CountingFaultInjector, fail_transiently
from .workload import messages, queue_depth

MESSAGES = 10_000
FAULT_RATE = 0.3


def assert_counters_add_up(stats: BotStats) -> None:
    assert stats.in_flight == 0
    assert stats.received == (
        stats.completed
        + stats.abandoned
        + stats.dead_lettered
        + stats.lost_locks
        + stats.settle_failures
    ), stats


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_under_30_percent_memory_provider_faults_every_message_completes_or_dead_letters(
    mode: str,
) -> None:
    handled: set[str] = set()

    class Record(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            handled.add(event.message_id)

    faults = CountingFaultInjector(seed=7)
    config = qr.InMemoryConfig(
        session_mode=mode,  # type: ignore[arg-type]
        lock_duration=1.0,
        session_lock_duration=1.0,
    )
    provider = InMemoryProvider(config, faults=faults)
    sent = messages(MESSAGES // 20, 20)
    await qr.QueueClient(provider).send_messages("q", sent)
    client = qr.QueueClient(
        provider,
        qr.QueueConfig(
            retry=qr.RetryPolicy(initial_delay=0.01, max_delay=0.05),
            circuit_breaker=qr.CircuitBreakerConfig(enabled=False),
        ),
    )
    fail_transiently(faults, FAULT_RATE)
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
    bot = Bot(client, "q", [Record], retry=retry, receive_wait=0.05)

    began = time.monotonic()
    await bot.start()
    try:
        while provider.stats("q").active or provider.stats("q").in_flight:
            assert time.monotonic() - began < 150, f"stalled: {provider.stats('q')} {bot.stats()}"
            await asyncio.sleep(0.05)
    finally:
        await bot.stop()
        faults.clear()

    dead = {m.message_id for m in provider.dead_letter_messages("q")}
    ids = {m.message_id for m in sent}
    assert handled | dead == ids  # each one completed or dead-lettered, nothing unknown
    stats = bot.stats()
    assert_counters_add_up(stats)
    assert stats.received >= len(handled)
    assert 0.27 < faults.injected / faults.calls < 0.33, (faults.injected, faults.calls)
    print(
        f"memory/{mode}: {len(ids)} messages in {time.monotonic() - began:.1f} s, "
        f"{faults.injected} faults in {faults.calls} calls, {len(dead)} dead-lettered "
        f"({len(dead - handled)} never handled), {stats}"
    )


SQS_QUEUE = "soak.fifo"
BACKLOG = 200
"""Messages published ahead of the bot. moto scans the whole queue several times per
message, so a short queue keeps it fast; but the bot must always have work waiting,
also while the messages of lost receives wait out their visibility timeout."""


@pytest.mark.timeout(400)
async def test_under_30_percent_sqs_provider_faults_every_message_completes_or_dead_letters(
    sqs: SqsProvider, publisher: qr.QueueClient, tmp_path: Path, log_path: Path
) -> None:
    await sqs.create_queue(SQS_QUEUE)
    sent = messages(MESSAGES // 20, 20)
    ids = {m.message_id for m in sent}
    stats_path = tmp_path / "stats.json"
    env = bot_environment(
        visibility_timeout=3.0,
        QUEUE_RUNTIME_CIRCUIT_BREAKER_ENABLED="false",
        QUEUE_RUNTIME_RETRY_INITIAL_DELAY="0.01",
        QUEUE_RUNTIME_RETRY_MAX_DELAY="0.05",
    )
    options = ["--log", str(log_path), "--receive-wait", "0.2", "--stats", str(stats_path)]
    options += ["--faults", str(FAULT_RATE), "--fault-seed", "7"]
    follower = LogFollower(log_path)
    ended: set[str] = set()
    began = time.monotonic()
    async with BotProcesses(tmp_path, env) as bots:
        bot = await bots.start(SQS_QUEUE, *options)
        published = 0
        while published < len(sent):
            ended.update(e.message_id for e in follower.new_entries() if e.kind == "end")
            if published - len(ended) < BACKLOG:
                await publisher.send_messages(SQS_QUEUE, sent[published : published + 10])
                published += 10
            else:
                assert bot.returncode is None, bots.output()
                assert time.monotonic() - began < 330, f"stalled at {len(ended)} of {published}"
                await asyncio.sleep(0.01)
        while await queue_depth(sqs, SQS_QUEUE) != (0, 0):
            assert time.monotonic() - began < 360, f"stalled: {await queue_depth(sqs, SQS_QUEUE)}"
            await asyncio.sleep(0.2)
        await bots.stop(bot, timeout=30)
        assert bot.returncode == 0, bots.output()
    ended.update(e.message_id for e in follower.new_entries() if e.kind == "end")
    elapsed = time.monotonic() - began

    letters = await publisher.peek_dead_letters(SQS_QUEUE, len(sent))
    dead = {m.message_id for m in letters}
    # (a message may be in the DLQ twice: see test_dead_letter_once.py)
    assert ended | dead == ids  # each one completed or dead-lettered, nothing unknown
    report = json.loads(stats_path.read_text())
    calls, injected = report.pop("provider_calls"), report.pop("faults_injected")
    stats = BotStats(**{k: v for k, v in report.items() if k in BotStats.__dataclass_fields__})
    assert_counters_add_up(stats)
    assert stats.received >= len(ended)
    assert 0.27 < injected / calls < 0.33, (injected, calls)
    print(
        f"sqs: {len(ids)} messages in {elapsed:.1f} s, {injected} faults in {calls} calls, "
        f"{len(dead)} dead-lettered ({len(dead - ended)} never handled), {stats}"
    )
