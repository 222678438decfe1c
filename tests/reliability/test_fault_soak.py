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
from collections import Counter
from pathlib import Path

import pytest

import queue_runtime as qr
from queue_runtime.bot import BotStats
from queue_runtime.providers.aws import SqsProvider

from .handling_log import LogFollower
from .memory_soak import (
    ATTEMPTS,
    FAULT_RATE,
    MAX_DELIVERY_COUNT,
    MESSAGES,
    POISON_EVERY,
    PROVIDER_MAX_DELIVERY_COUNT,
    run_memory_soak,
)
from .processes import BotProcesses, bot_environment
from .workload import messages, poisoned, queue_depth


def assert_counters_add_up(stats: BotStats) -> None:
    assert stats.in_flight == 0
    assert stats.received == (
        stats.completed
        + stats.abandoned
        + stats.dead_lettered
        + stats.lost_locks
        + stats.settle_failures
    ), stats


def assert_spent_only_on_handlers(
    *,
    sent: int,
    valid: set[str],
    poison: set[str],
    handled: set[str],
    dead: Counter[str],
    poison_calls: Counter[str],
    successes: int,
    stats: BotStats,
) -> None:
    """Valid messages are handled, never dead-lettered; poison messages are dead-lettered
    once each, after exactly their handler attempts; the counters say the same."""
    assert valid <= handled, f"{len(valid - handled)} valid messages never handled"
    dead_valid = valid & set(dead)
    assert not dead_valid, f"{len(dead_valid)} valid messages dead-lettered without a failure"
    assert set(dead) == poison, f"{len(poison - set(dead))} poison messages not dead-lettered"
    twice = {m: n for m, n in dead.items() if n > 1}
    assert not twice, f"dead-lettered more than once: {twice}"
    # each time a poison message reached the bot, exactly its handler attempts were
    # made, then it was dead-lettered (on SQS a copy can arrive again after that,
    # see docs/reliability.md; the DLQ keeps one copy)
    per_chain = MAX_DELIVERY_COUNT * ATTEMPTS
    calls = {poison_calls[m] for m in poison}
    assert all(c > 0 and c % per_chain == 0 for c in calls), calls
    assert len(handled) + len(dead) == sent
    assert_counters_add_up(stats)
    assert stats.dead_lettered == sum(poison_calls[m] for m in poison) // per_chain, stats
    # each valid message completed once, or more often if it was delivered again after
    # all (SQS: a publish retried by the test's client); never without a handling
    assert len(valid) <= stats.completed <= successes, (successes, stats)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_under_30_percent_memory_provider_faults_only_handlers_spend_deliveries(
    mode: str,
) -> None:
    result = await run_memory_soak(mode, seed=7)
    print(result.line())  # before the assertions: a failing run shows its numbers too

    assert_spent_only_on_handlers(
        sent=result.sent,
        valid=result.valid,
        poison=result.poison,
        handled=result.handled,
        dead=result.dead,
        poison_calls=result.calls,
        successes=sum(result.calls[m] for m in result.valid),
        stats=result.stats,
    )
    assert {result.reasons[m] for m in result.poison} == {"Poison"}
    assert {result.calls[m] for m in result.poison} == {MAX_DELIVERY_COUNT * ATTEMPTS}
    assert result.stats.dead_lettered == len(result.poison)
    assert result.stats.received >= len(result.handled)
    assert 0.27 < result.faults / result.provider_calls < 0.33, result.line()


SQS_QUEUE = "soak.fifo"
BACKLOG = 200
"""Messages published ahead of the bot. moto scans the whole queue several times per
message, so a short queue keeps it fast; but the bot must always have work waiting,
also while the messages of lost receives wait out their visibility timeout."""


async def drain_dead_letters(client: qr.QueueClient, queue: str) -> list[qr.ReceivedMessage]:
    """Everything in ``queue``'s DLQ, removed: a FIFO DLQ hands out a group's next copy
    only once the one before is settled, so a peek would miss duplicates."""
    letters: list[qr.ReceivedMessage] = []
    while batch := await client.receive_dead_letters(queue, 10, timeout=1.0):
        letters.extend(batch)
        await client.complete_messages([m.receipt for m in batch])
    return letters


@pytest.mark.timeout(400)
async def test_under_30_percent_sqs_provider_faults_only_handlers_spend_deliveries(
    sqs: SqsProvider, publisher: qr.QueueClient, tmp_path: Path, log_path: Path
) -> None:
    # the native limit (maxReceiveCount, and the provider's own checks) above the bot's
    await sqs.create_queue(SQS_QUEUE, max_receive_count=PROVIDER_MAX_DELIVERY_COUNT)
    sent = poisoned(messages(MESSAGES // 20, 20), POISON_EVERY)
    ids = {m.message_id for m in sent}
    poison = {m.message_id for m in sent if m.attributes.get("poison")}
    stats_path = tmp_path / "stats.json"
    env = bot_environment(
        visibility_timeout=3.0,
        QUEUE_RUNTIME_CIRCUIT_BREAKER_ENABLED="false",
        QUEUE_RUNTIME_RETRY_INITIAL_DELAY="0.01",
        QUEUE_RUNTIME_RETRY_MAX_DELAY="0.05",
        QUEUE_RUNTIME_AWS_MAX_DELIVERY_COUNT=str(PROVIDER_MAX_DELIVERY_COUNT),
    )
    options = ["--log", str(log_path), "--receive-wait", "0.2", "--stats", str(stats_path)]
    options += ["--faults", str(FAULT_RATE), "--fault-seed", "7", "--no-handler-circuit"]
    options += ["--max-delivery-count", str(MAX_DELIVERY_COUNT)]
    follower = LogFollower(log_path)
    ended: set[str] = set()
    ends: Counter[str] = Counter()
    starts: Counter[str] = Counter()

    def follow() -> int:
        """Messages finished so far: handled, or poison with all its attempts made."""
        for entry in follower.new_entries():
            if entry.kind == "end":
                ended.add(entry.message_id)
                ends[entry.message_id] += 1
            else:
                starts[entry.message_id] += 1
        spent = sum(1 for m in poison if starts[m] >= MAX_DELIVERY_COUNT * ATTEMPTS)
        return len(ended) + spent

    began = time.monotonic()
    async with BotProcesses(tmp_path, env) as bots:
        bot = await bots.start(SQS_QUEUE, *options)
        published = 0
        while published < len(sent):
            if published - follow() < BACKLOG:
                await publisher.send_messages(SQS_QUEUE, sent[published : published + 10])
                published += 10
            else:
                assert bot.returncode is None, bots.output()
                assert time.monotonic() - began < 330, f"stalled at {follow()} of {published}"
                await asyncio.sleep(0.01)
        while await queue_depth(sqs, SQS_QUEUE) != (0, 0):
            assert time.monotonic() - began < 360, f"stalled: {await queue_depth(sqs, SQS_QUEUE)}"
            await asyncio.sleep(0.2)
        await bots.stop(bot, timeout=30)
        assert bot.returncode == 0, bots.output()
    follow()
    elapsed = time.monotonic() - began

    letters = await drain_dead_letters(publisher, SQS_QUEUE)
    dead = Counter(m.message_id for m in letters)
    report = json.loads(stats_path.read_text())
    calls, injected = report.pop("provider_calls"), report.pop("faults_injected")
    stats = BotStats(**{k: v for k, v in report.items() if k in BotStats.__dataclass_fields__})
    print(
        f"sqs: {len(ids)} messages ({len(poison)} poison) in {elapsed:.1f} s, {injected} "
        f"faults in {calls} calls; DLQ {sum(dead.values())}: "
        f"{len(dead.keys() & poison)} poison, {len(dead.keys() - poison)} valid; poison handler "
        f"calls {sorted({starts[m] for m in poison})}; {stats}"
    )
    assert_spent_only_on_handlers(
        sent=len(sent),
        valid=ids - poison,
        poison=poison,
        handled=ended,
        dead=dead,
        poison_calls=starts,
        successes=sum(ends.values()),
        stats=stats,
    )
    assert {m.dead_letter_reason for m in letters} == {"Poison"}
    assert stats.received >= len(ended)
    assert 0.27 < injected / calls < 0.33, (injected, calls)
