"""The bot kit: a bot on the in-memory provider under virtual time, with crashes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Event, Handler
from queue_runtime.providers.memory import QueueStats
from queue_runtime.testing import BotKit

MakeKit = Callable[..., BotKit]


async def test_a_30_second_lock_expiry_after_a_crash_passes_in_well_under_a_second(
    bot_kit: BotKit,
) -> None:
    probe = bot_kit.probe("push").delay(100.0)  # still running when the bot crashes
    await bot_kit.start()
    loop, began = asyncio.get_running_loop(), time.perf_counter()
    message_id = await bot_kit.publish("push", session_id="o/r")
    first = await probe.expect(message_id=message_id)

    await bot_kit.restart()
    crashed_at = loop.time()
    again = await probe.expect(message_id=message_id, timeout=120.0)
    await bot_kit.drain()

    assert first.outcome == "crashed"
    assert (first.incarnation, again.incarnation) == (1, 2)
    assert again.delivery_count == 2
    assert again.at - crashed_at >= 30.0  # the in-memory provider's lock duration
    assert time.perf_counter() - began < 1.0
    bot_kit.assert_invariants()


async def test_a_60_second_session_idle_timeout_passes_in_well_under_a_second(
    bot_kit: BotKit,
) -> None:
    probe = bot_kit.probe("push")
    await bot_kit.start()
    began = time.perf_counter()
    await bot_kit.publish("push", session_id="o/r")
    await probe.expect()
    await bot_kit.drain()

    await bot_kit.advance(50.0)
    still_there = bot_kit.stats().bot.active_sessions
    await bot_kit.advance(20.0)  # past 60 s idle, and the sweep that follows

    assert (still_there, bot_kit.stats().bot.active_sessions) == (1, 0)
    assert time.perf_counter() - began < 1.0


async def test_the_circuit_breaker_opens_and_recovers_after_30_virtual_seconds(
    bot_kit: BotKit,
) -> None:
    probe = bot_kit.probe("push")
    bot_kit.faults.fail_next("receive", count=5)  # 5 consecutive failures open the circuit
    began = time.perf_counter()
    await bot_kit.publish("push", session_id="o/r")
    await bot_kit.start()
    started = asyncio.get_running_loop().time()

    handled = await probe.expect(timeout=120.0)

    assert handled.at - started >= 30.0  # the circuit's recovery timeout
    assert bot_kit.stats().faults_injected == 5
    assert time.perf_counter() - began < 1.0


async def test_a_session_locked_by_a_crashed_native_bot_comes_back_after_its_lock(
    bot_kit_factory: MakeKit,
) -> None:
    kit = bot_kit_factory(
        memory=qr.InMemoryConfig(session_mode="native", session_lock_duration=120)
    )
    probe = kit.probe("push").delay(1000.0)
    await kit.start()
    loop = asyncio.get_running_loop()
    first = await kit.publish("push", {"n": 1}, session_id="o/r")
    second = await kit.publish("push", {"n": 2}, session_id="o/r")
    await probe.expect(message_id=first)

    await kit.restart(downtime=5.0)
    crashed_at = loop.time() - 5.0
    again = await probe.expect(message_id=first, timeout=600.0)
    await kit.drain()

    assert again.at - crashed_at >= 120.0
    probe.assert_order([first, second])
    kit.assert_invariants()
    assert kit.stats().crashes == 1
    assert kit.stats().starts == 2


async def test_no_handler_call_starts_in_a_crashed_bot(bot_kit_factory: MakeKit) -> None:
    kit = bot_kit_factory(mailbox_size=5)
    probe = kit.probe("push").delay(10.0)  # the first call holds up the session
    await kit.start()
    ids = [await kit.publish("push", {"n": n}, session_id="o/r") for n in range(3)]
    await probe.expect(message_id=ids[0])

    await kit.crash()
    await kit.advance(60.0)  # the crashed bot is torn down meanwhile

    assert [e.message_id for e in probe.events] == ids[:1]
    await kit.start()
    await kit.drain()
    probe.assert_order(ids)
    kit.assert_invariants()


async def test_stats_add_up_the_counters_of_every_bot(bot_kit: BotKit) -> None:
    bot_kit.probe("push")
    await bot_kit.start()
    await bot_kit.publish("push", session_id="a")
    await bot_kit.drain()
    await bot_kit.restart()
    await bot_kit.publish("push", session_id="b")
    await bot_kit.drain()

    stats = bot_kit.stats()
    assert (stats.published, stats.bot.received, stats.bot.completed) == (2, 2, 2)
    assert (stats.crashes, stats.starts) == (1, 2)
    assert stats.queue == QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)


class Pushes(Handler):
    event_types: ClassVar[tuple[str, ...]] = ("push",)
    concurrency: ClassVar[int] = 3


class Issues(Handler):
    event_types: ClassVar[tuple[str, ...]] = ("issues",)
    handled: ClassVar[list[str]] = []

    async def handle(self, event: Event) -> None:
        Issues.handled.append(event.message_id)


async def test_replace_puts_a_probe_in_the_place_of_one_handler(bot_kit_factory: MakeKit) -> None:
    Issues.handled = []
    kit = bot_kit_factory([Pushes, Issues])
    probe = kit.replace(Pushes)
    await kit.start()

    push = await kit.publish("push", session_id="o/r")
    issue = await kit.publish("issues", session_id="o/r")
    await kit.drain()

    assert (probe.name, probe.event_types, probe.concurrency) == ("Pushes", ("push",), 3)
    assert [e.message_id for e in probe.events] == [push]
    assert Issues.handled == [issue]


async def test_unrouted_events_are_dead_lettered_as_the_bot_does(bot_kit: BotKit) -> None:
    bot_kit.probe("push")
    await bot_kit.start()

    await bot_kit.publish("pull_request", session_id="o/r")
    await bot_kit.drain()

    [dead] = bot_kit.dead_letters()
    assert dead.dead_letter_reason == "NoHandler"


async def test_invariants_report_what_is_not_finished(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").delay(30.0)
    await bot_kit.start()
    await bot_kit.publish("push", session_id="o/r")
    await probe.expect()

    assert bot_kit.check_invariants() == [
        "not finished: 0 message(s) waiting, 1 locked, 0 scheduled"
    ]
    with pytest.raises(AssertionError, match="broken invariants"):
        bot_kit.assert_invariants()


async def test_drain_gives_up_with_an_assertion_saying_what_is_left(bot_kit: BotKit) -> None:
    bot_kit.probe("push").delay(10_000.0)
    await bot_kit.start()
    await bot_kit.publish("push", session_id="o/r")

    with pytest.raises(AssertionError, match=r"not drained after 100 virtual seconds: queue"):
        await bot_kit.drain(timeout=100.0)


async def test_a_message_can_be_published_with_a_delay(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push")
    await bot_kit.start()
    started = asyncio.get_running_loop().time()

    await bot_kit.publish("push", b"raw", session_id="o/r", delay=90.0)
    call = await probe.expect(timeout=120.0)

    assert call.at - started >= 90.0
    assert call.event.body == b"raw"
    assert bot_kit.published[0].scheduled


async def test_misuse_of_a_kit_gets_errors_that_say_what_to_do(bot_kit: BotKit) -> None:
    with pytest.raises(TypeError, match="unknown Bot setting"):
        BotKit(max_sesions=3)
    with pytest.raises(ValueError, match="is not a handler of this kit"):
        bot_kit.replace(Pushes)
    with pytest.raises(RuntimeError, match="needs a running bot"):
        await bot_kit.drain()
    with pytest.raises(RuntimeError, match="no bot is running"):
        _ = bot_kit.bot
    bot_kit.probe("push")
    await bot_kit.start()
    with pytest.raises(RuntimeError, match="before start"):
        bot_kit.probe("issues")
    with pytest.raises(RuntimeError, match="needs a new or crashed kit"):
        await bot_kit.start()


def test_a_kit_refuses_to_run_on_real_time() -> None:
    async def main() -> None:
        kit = BotKit()
        kit.probe("push")
        try:
            await kit.start()
        finally:
            await kit.close()

    with pytest.raises(RuntimeError, match="BotKit needs virtual time"):
        asyncio.run(main())
