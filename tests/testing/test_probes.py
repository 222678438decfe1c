"""Probes: scripted stand-in handlers that record what the bot hands them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, PermanentFailure
from queue_runtime.clock import to_datetime
from queue_runtime.messages import ReceiptHandle
from queue_runtime.providers.memory import InMemoryProvider
from queue_runtime.testing import ANY, BotKit, Journal, Probe, ProbeEvent, ProbeFailure
from queue_runtime.testing.pytest_plugin import VirtualTime
from queue_runtime.testing.virtual import VirtualClock

MakeKit = Callable[..., BotKit]


async def test_a_probe_fails_as_often_as_told_then_succeeds(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").fail(2)
    await bot_kit.start()

    await bot_kit.publish("push", session_id="o/r")
    await bot_kit.drain()

    assert [(e.attempt, e.outcome) for e in probe.events] == [
        (1, "raised"),
        (2, "raised"),
        (3, "returned"),
    ]
    assert all(isinstance(e.error, ProbeFailure) for e in probe.events[:2])
    assert bot_kit.stats().bot.completed == 1


async def test_in_place_retries_follow_the_back_off_in_virtual_time(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").fail(2)  # the kit's retry: 0.5 s doubling, no jitter
    await bot_kit.start()

    await bot_kit.publish("push", session_id="o/r")
    await bot_kit.drain()

    first, second, third = (e.at for e in probe.events)
    assert (second - first, third - second) == pytest.approx((0.5, 1.0))


async def test_a_permanent_failure_from_a_probe_dead_letters_the_message(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push", name="Pushes").fail(error=PermanentFailure("bad payload"))
    await bot_kit.start()

    message_id = await bot_kit.publish("push", session_id="o/r")
    await bot_kit.drain()

    [dead] = bot_kit.dead_letters()
    assert dead.message_id == message_id
    assert dead.dead_letter_reason == "PermanentFailure"
    assert dead.attributes["queue_runtime.failure.handler"] == "Pushes"
    assert len(probe.events) == 1


async def test_a_delayed_call_takes_virtual_seconds(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").delay(45.0)
    await bot_kit.start()

    await bot_kit.publish("push", session_id="o/r")
    await bot_kit.drain()

    [call] = probe.events
    assert call.ended_at is not None
    assert call.ended_at - call.at == pytest.approx(45.0)
    assert bot_kit.stats().bot.lost_locks == 0  # the lock was renewed while it ran


async def test_steps_apply_in_order_and_only_to_the_events_they_match(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push")
    probe.fail(when=lambda e: e.session_id == "a").succeed().delay(5.0)
    await bot_kit.start()

    await bot_kit.publish("push", session_id="b")  # "succeed" (the fail step is for "a")
    await bot_kit.drain()
    await bot_kit.publish("push", session_id="a")  # fails once, then "delay"
    await bot_kit.drain()

    assert [(e.session_id, e.outcome) for e in probe.events] == [
        ("b", "returned"),
        ("a", "raised"),
        ("a", "returned"),
    ]
    assert probe.events[2].ended_at - probe.events[2].at == pytest.approx(5.0)  # type: ignore[operator]


async def test_a_probe_can_run_your_own_behaviour_and_be_reset(bot_kit: BotKit) -> None:
    seen: list[int] = []

    async def remember(event: Event) -> None:
        seen.append(event.json()["n"])

    probe = bot_kit.probe("push").call(remember, times=None)
    await bot_kit.start()
    await bot_kit.publish("push", {"n": 1}, session_id="o/r")
    await bot_kit.drain()
    probe.reset()
    await bot_kit.publish("push", {"n": 2}, session_id="o/r")
    await bot_kit.drain()

    assert seen == [1]
    assert len(probe.events) == 2


async def test_expect_waits_in_virtual_time_and_returns_each_call_once(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push", "issues")
    await bot_kit.start()
    loop = asyncio.get_running_loop()
    await bot_kit.publish("push", session_id="a", delay=120.0)
    await bot_kit.publish("issues", session_id="b")
    await bot_kit.publish("issues", session_id=None)
    started = loop.time()

    late = await probe.expect(event_type="push", timeout=300.0)
    first = await probe.expect(event_type="issues")
    second = await probe.expect(event_type="issues")

    assert late.session_id == "a"
    assert late.at - started >= 120.0
    assert {first.session_id, second.session_id} == {"b", None}
    assert first is not second


async def test_expect_filters_by_session_id_none_meaning_no_session(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push")
    await bot_kit.start()
    await bot_kit.publish("push", session_id="a")
    await bot_kit.publish("push", session_id=None)

    unordered = await probe.expect(session_id=None)
    anything = await probe.expect(session_id=ANY)

    assert unordered.session_id is None
    assert anything.session_id == "a"


async def test_expect_times_out_with_an_assertion_listing_what_was_seen(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push", name="Pushes")
    await bot_kit.start()
    await bot_kit.publish("push", session_id="a")
    await probe.expect(session_id="a")

    with pytest.raises(AssertionError) as caught:
        await probe.expect(session_id="b", timeout=5.0)

    text = str(caught.value)
    assert "Pushes: no call with session_id='b' within 5 s" in text
    assert "session_id='a'" in text


async def test_assert_order_checks_the_order_of_first_handling(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").fail(1)  # the first message is handled twice
    await bot_kit.start()
    ids = [await bot_kit.publish("push", {"n": n}, session_id="o/r") for n in range(3)]
    await bot_kit.drain()

    probe.assert_order(ids)
    probe.assert_order([0, 2], key=lambda e: e.json()["n"])
    with pytest.raises(AssertionError, match="first handled in the order"):
        probe.assert_order([ids[1], ids[0]])
    with pytest.raises(AssertionError, match="never handled"):
        probe.assert_order(["no-such-message"])


def call(session: str | None, message_id: str, incarnation: int = 1) -> ProbeEvent:
    """A recorded call, made up (for journal tests)."""
    at = to_datetime(0.0)
    receipt = ReceiptHandle(provider_id="p", queue=qr.QueueName("q"), token="t", locked_until=at)
    message = qr.ReceivedMessage(
        body=b"{}",
        attributes={},
        session_id=session,
        correlation_id=None,
        message_id=message_id,
        content_type=None,
        time_to_live=None,
        delivery_count=1,
        enqueued_at=at,
        first_delivered_at=at,
        delivered_at=at,
        receipt=receipt,
    )
    return ProbeEvent(Event.from_message(message, "push"), "P", 0.0, incarnation)


def test_the_journal_sees_two_calls_of_one_session_at_once_as_an_overlap() -> None:
    journal = Journal()
    a1, a2, b1, none1, none2 = (
        call("a", "1"),
        call("a", "2"),
        call("b", "3"),
        call(None, "4"),
        call(None, "5"),
    )
    for c in (a1, b1, none1, none2, a2):
        journal.began(c)

    assert journal.overlaps == [(a1, a2)]


def test_calls_of_a_crashed_bot_end_at_the_crash_and_overlap_nothing_after() -> None:
    journal = Journal()
    old, new = call("a", "1", incarnation=1), call("a", "1", incarnation=2)
    journal.began(old)
    journal.crashed(1, at=7.0)
    journal.began(new)

    assert (old.outcome, old.ended_at) == ("crashed", 7.0)
    assert journal.overlaps == []


async def test_a_probe_works_as_the_handler_of_a_bot_of_your_own(
    virtual_time: VirtualTime,
) -> None:
    probe = Probe("push")
    clock = VirtualClock()
    provider = InMemoryProvider(clock=clock)
    client = qr.QueueClient(provider, clock=clock)
    await client.send_message("q", qr.Message(b"{}", attributes={"event_type": "push"}))

    async with Bot(client, "q", [probe.handler]):
        call = await probe.expect("push")

    assert call.incarnation == 0
    assert call.outcome == "returned"
    await client.aclose()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Probe(), "at least one event type"),
        (lambda: Probe(""), "non-empty strings"),
        (lambda: Probe("push", name=""), "name must be"),
        (lambda: Probe("push", concurrency=0), "concurrency must be"),
        (lambda: Probe("push").fail(times=0), "times must be"),
        (lambda: Probe("push").delay(-1.0), "seconds must be"),
    ],
)
def test_bad_probe_settings_are_refused_with_a_message_naming_them(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


async def test_a_probe_added_to_a_kit_records_into_the_kits_journal(
    bot_kit_factory: MakeKit,
) -> None:
    probe = Probe("push")
    kit = bot_kit_factory([probe])
    await kit.start()
    await kit.publish("push", session_id="o/r")
    await kit.drain()

    assert probe.journal is kit.journal
    assert kit.journal.events == probe.events
