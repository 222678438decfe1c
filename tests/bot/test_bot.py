"""The bot end to end on the in-memory provider, in both session modes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler, PermanentFailure, RestartPolicy
from queue_runtime.dlq import FailureRecord
from queue_runtime.health import HealthStatus
from queue_runtime.providers.memory import InMemoryProvider

QUEUE = "events"
FAST_RETRY = qr.RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0)
MODES = ["emulated", "native"]


@dataclass
class Journal:
    """What handlers saw, shared by the handler actors of one test."""

    handled: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    overlapping_same_session: int = 0


def handler(
    journal: Journal,
    behaviour: Callable[[Event], Any] | None = None,
    latency: Callable[[], float] = lambda: 0.0,
    types: tuple[str, ...] = ("pull_request",),
) -> type[Handler]:
    class Recording(Handler):
        event_types: ClassVar[tuple[str, ...]] = types

        async def handle(self, event: Event) -> None:
            key = event.message_id
            journal.calls[key] += 1
            session = event.session_id or "-"
            journal.active[session] += 1
            if journal.active[session] > 1:
                journal.overlapping_same_session += 1
            started = time.monotonic()
            try:
                await asyncio.sleep(latency())
                if behaviour is not None:
                    result = behaviour(event)
                    if asyncio.iscoroutine(result):
                        await result
                journal.handled[session].append(event.json()["n"])
            finally:
                journal.active[session] -= 1
                journal.spans.append((session, started, time.monotonic()))

    return Recording


def events(sessions: int, per_session: int, event_type: str = "pull_request") -> list[qr.Message]:
    return [
        qr.Message.from_json(
            {"n": n}, attributes={"event_type": event_type}, session_id=f"o/r/pull/{s}"
        )
        for n in range(per_session)
        for s in range(sessions)
    ]


@pytest.fixture
async def provider_for() -> AsyncIterator[Callable[..., InMemoryProvider]]:
    made: list[InMemoryProvider] = []

    def make(mode: str = "emulated", **config: Any) -> InMemoryProvider:
        provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode, **config))  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def bot_for(provider: InMemoryProvider, handlers: list[type[Handler]], **settings: Any) -> Bot:
    settings.setdefault("retry", FAST_RETRY)
    settings.setdefault("receive_wait", 0.05)
    return Bot(qr.QueueClient(provider), QUEUE, handlers, **settings)


@pytest.mark.parametrize("mode", MODES)
async def test_many_sessions_are_handled_exactly_once_in_order_and_concurrently(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode)
    journal = Journal()
    rng = random.Random(42)
    recording = handler(journal, latency=lambda: rng.uniform(0, 0.004))
    sent = events(200, 20)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(provider, [recording], max_sessions=200) as bot:
        await wait_until(lambda: bot.stats().completed == len(sent))
        stats = bot.stats()

    assert all(count == 1 for count in journal.calls.values())
    assert len(journal.calls) == len(sent)
    assert dict(journal.handled) == {f"o/r/pull/{s}": list(range(20)) for s in range(200)}
    assert journal.overlapping_same_session == 0
    assert _max_sessions_at_once(journal.spans) > 1
    assert (stats.received, stats.completed, stats.in_flight) == (len(sent), len(sent), 0)
    assert provider.stats(QUEUE).active == 0


def _max_sessions_at_once(spans: list[tuple[str, float, float]]) -> int:
    points = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


@pytest.mark.parametrize("mode", MODES)
async def test_a_transient_failure_is_retried_in_place_and_later_messages_wait(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode)
    journal = Journal()
    failures = {"left": 2}

    def flaky(event: Event) -> None:
        if event.json()["n"] == 1 and failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("downstream hiccup")

    sent = events(1, 5)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(provider, [handler(journal, flaky)]) as bot:
        await wait_until(lambda: bot.stats().completed == 5)
        stats = bot.stats()

    assert journal.handled["o/r/pull/0"] == [0, 1, 2, 3, 4]
    assert journal.calls[sent[1].message_id] == 3
    assert stats.retried == 2
    assert stats.abandoned == 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_poison_message_is_handled_in_place_until_dead_lettered_and_others_go_on(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode)
    journal = Journal()

    def poison(event: Event) -> None:
        if event.session_id == "o/r/pull/0" and event.json()["n"] == 1:
            raise ValueError("cannot parse this payload")

    sent = events(3, 3)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(provider, [handler(journal, poison)], max_delivery_count=4) as bot:
        await wait_until(lambda: bot.stats().completed == 8 and bot.stats().dead_lettered == 1)
        stats = bot.stats()

    [letter] = provider.dead_letter_messages(QUEUE)
    assert letter.message_id == sent[3].message_id  # session 0, n == 1
    # four failed handlings, each of the retry policy's attempts, all on its first
    # delivery: the message never went back, so its follower (n == 2), which must
    # not overtake it, was never given back either
    assert letter.delivery_count == 1
    assert letter.dead_letter_reason == "ValueError"
    assert letter.dead_letter_description is not None
    assert "cannot parse this payload" in letter.dead_letter_description
    assert journal.calls[sent[3].message_id] == 4 * FAST_RETRY.max_attempts
    record = FailureRecord.from_attributes(letter.attributes)
    assert len(record.attempts) == min(10, 4 * FAST_RETRY.max_attempts)
    assert journal.handled["o/r/pull/0"] == [0, 2]
    assert journal.handled["o/r/pull/1"] == [0, 1, 2]
    assert journal.handled["o/r/pull/2"] == [0, 1, 2]
    assert stats.abandoned == 0
    assert journal.calls[sent[6].message_id] == 1
    assert provider.stats(QUEUE).dead_lettered == 1


async def test_a_permanent_failure_is_dead_lettered_on_first_delivery(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()

    class Unprocessable(Exception):
        pass

    def reject(event: Event) -> None:
        if event.json()["n"] == 0:
            raise PermanentFailure("schema mismatch")
        if event.json()["n"] == 1:
            raise Unprocessable("listed as permanent by the bot")

    sent = events(1, 3)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(
        provider, [handler(journal, reject)], permanent_errors=[Unprocessable]
    ) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 2 and bot.stats().completed == 1)

    letters = provider.dead_letter_messages(QUEUE)
    assert [(m.dead_letter_reason, m.delivery_count) for m in letters] == [
        ("PermanentFailure", 1),
        ("Unprocessable", 1),
    ]
    assert journal.calls[sent[0].message_id] == 1
    assert journal.handled["o/r/pull/0"] == [2]


async def test_an_error_about_the_content_is_permanent_one_about_the_deployment_is_not(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()

    def reject(event: Event) -> None:
        if event.json()["n"] == 0:  # e.g. the handler's own send of a derived message
            raise qr.MessageTooLargeError(300_000, 262_144)
        if event.json()["n"] == 1 and journal.calls[event.message_id] == 1:
            raise qr.AuthenticationError("token expired")  # fixed by the next attempt

    sent = events(1, 3)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)

    async with bot_for(provider, [handler(journal, reject)]) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1 and bot.stats().completed == 2)

    [letter] = provider.dead_letter_messages(QUEUE)
    assert (letter.dead_letter_reason, letter.delivery_count) == ("MessageTooLargeError", 1)
    assert journal.calls[sent[0].message_id] == 1  # not retried
    assert journal.calls[sent[1].message_id] == 2  # retried in place, then completed
    assert journal.handled["o/r/pull/0"] == [1, 2]


async def test_an_event_without_a_handler_is_dead_lettered_as_no_handler(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1, event_type="star"))

    async with bot_for(provider, [handler(Journal())]) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1)

    [letter] = provider.dead_letter_messages(QUEUE)
    assert letter.dead_letter_reason == "NoHandler"


async def test_a_handler_crashing_in_on_start_is_restarted_and_the_bot_goes_on(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    starts = {"count": 0}
    journal = Journal()

    class CrashesOnFirstStart(handler(journal)):  # type: ignore[misc]
        async def on_start(self) -> None:
            starts["count"] += 1
            if starts["count"] == 1:
                raise RuntimeError("dependency not ready")

    await qr.QueueClient(provider).send_messages(QUEUE, events(2, 3))

    async with bot_for(provider, [CrashesOnFirstStart]) as bot:
        await wait_until(lambda: bot.stats().completed == 6)
        stats = bot.stats()

    assert starts["count"] == 2
    assert stats.handler_restarts == 1
    assert journal.handled["o/r/pull/0"] == [0, 1, 2]


async def test_a_handler_actor_that_dies_is_restarted_with_fresh_state(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()
    instances: list[int] = []

    class DiesOnce(handler(journal)):  # type: ignore[misc]
        def on_start(self) -> None:
            instances.append(id(self))

        async def handle(self, event: Event) -> None:
            if event.json()["n"] == 1 and len(instances) == 1:
                self.actor_ref.tell("crash")  # an actor-level failure, not a handled one
                await asyncio.sleep(0.01)
                raise ConnectionError("lost mid-call")
            await super().handle(event)

        async def on_receive(self, message: Any) -> Any:
            if message == "crash":
                raise RuntimeError("actor crashed")
            return await super().on_receive(message)

    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 3))

    async with bot_for(provider, [DiesOnce]) as bot:
        await wait_until(lambda: bot.stats().completed == 3)

    assert len(instances) == 2
    assert journal.handled["o/r/pull/0"] == [0, 1, 2]


@pytest.mark.parametrize("mode", MODES)
async def test_lock_renewal_keeps_a_slow_message_from_being_redelivered(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    provider = provider_for(mode, lock_duration=0.3, session_lock_duration=0.3)
    journal = Journal()
    await qr.QueueClient(provider).send_messages(QUEUE, events(2, 2))

    async with bot_for(provider, [handler(journal, latency=lambda: 0.5)]) as bot:
        await wait_until(lambda: bot.stats().completed == 4)
        stats = bot.stats()

    assert all(count == 1 for count in journal.calls.values())
    assert stats.lock_renewals > 0
    assert stats.lost_locks == 0
    assert journal.handled["o/r/pull/0"] == [0, 1]


@pytest.mark.parametrize("mode", MODES)
async def test_stop_finishes_running_handlers_and_gives_back_prefetched_messages_at_once(
    mode: str, provider_for: Callable[..., InMemoryProvider]
) -> None:
    clock = qr.ManualClock()
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode), clock=clock)  # type: ignore[arg-type]
    journal = Journal()
    started = asyncio.Event()

    async def slow(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.2)

    sent = events(3, 5)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    bot = bot_for(provider, [handler(journal, slow)], mailbox_size=5, drain_timeout=5.0)
    await bot.start()
    await started.wait()

    began = time.monotonic()
    await bot.stop()
    took = time.monotonic() - began
    stats = bot.stats()
    queue_stats = provider.stats(QUEUE)

    assert took < 1.0
    assert stats.in_flight == 0
    assert stats.completed >= 1
    assert queue_stats.in_flight == 0  # nothing waits for a lock to expire (the clock never moved)
    assert queue_stats.active == len(sent) - stats.completed
    assert stats.completed + stats.abandoned >= stats.received - stats.completed
    await provider.aclose()


async def test_stop_interrupts_handlers_that_outlive_the_drain_timeout(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    started = asyncio.Event()

    async def hangs(event: Event) -> None:
        started.set()
        await asyncio.sleep(60)

    await qr.QueueClient(provider).send_messages(QUEUE, events(2, 2))
    bot = bot_for(provider, [handler(Journal(), hangs)], drain_timeout=0.2)
    await bot.start()
    await started.wait()

    began = time.monotonic()
    await bot.stop()

    assert time.monotonic() - began < 2.0
    assert bot.stats().in_flight == 0
    assert provider.stats(QUEUE).in_flight == 0
    assert provider.stats(QUEUE).active == 4


async def test_messages_without_a_session_are_processed_concurrently(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()
    unordered = [
        qr.Message.from_json({"n": n}, attributes={"event_type": "pull_request"}) for n in range(40)
    ]
    await qr.QueueClient(provider).send_messages(QUEUE, unordered)

    began = time.monotonic()
    async with bot_for(provider, [handler(journal, latency=lambda: 0.1)]) as bot:
        await wait_until(lambda: bot.stats().completed == 40)

    assert time.monotonic() - began < 2.0  # 40 x 0.1 s one at a time would take 4 s
    assert sorted(journal.handled["-"]) == list(range(40))


async def test_as_many_messages_without_a_session_as_lanes_all_run_at_once(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    # One receive's batch must spread over distinct lanes: a message sharing a lane
    # waits for the other's handler *and* settle (on SQS, a delete round trip).
    lanes = 10
    provider = provider_for()
    running = 0
    all_running = asyncio.Event()

    async def meets_the_others(event: Event) -> None:
        nonlocal running
        running += 1
        if running == lanes:
            all_running.set()
        await all_running.wait()

    unordered = [
        qr.Message.from_json({"n": n}, attributes={"event_type": "pull_request"})
        for n in range(lanes)
    ]
    await qr.QueueClient(provider).send_messages(QUEUE, unordered)

    bot = bot_for(
        provider,
        [handler(Journal(), meets_the_others)],
        unordered_concurrency=lanes,
        drain_timeout=0.2,
    )
    async with bot:
        try:
            await asyncio.wait_for(all_running.wait(), timeout=3.0)
        except TimeoutError:
            pytest.fail(f"only {running} of {lanes} messages ran at once")
        await wait_until(lambda: bot.stats().completed == lanes)


async def test_the_receiver_stops_pulling_while_max_in_flight_messages_are_held(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    release = asyncio.Event()
    peak = {"in_flight": 0}

    async def blocked(event: Event) -> None:
        await release.wait()

    await qr.QueueClient(provider).send_messages(QUEUE, events(30, 1))

    async with bot_for(provider, [handler(Journal(), blocked)], max_in_flight=8) as bot:
        for _ in range(20):
            peak["in_flight"] = max(peak["in_flight"], provider.stats(QUEUE).in_flight)
            await asyncio.sleep(0.01)
        release.set()
        await wait_until(lambda: bot.stats().completed == 30)

    assert peak["in_flight"] <= 8


async def test_a_router_picks_the_event_type(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()
    message = qr.Message.from_json({"n": 0}, attributes={"X-GitHub-Event": "pull_request"})
    await qr.QueueClient(provider).send_message(QUEUE, message)

    def router(msg: qr.ReceivedMessage) -> str | None:
        return msg.attributes.get("X-GitHub-Event")

    async with bot_for(provider, [handler(journal)], router=router) as bot:
        await wait_until(lambda: bot.stats().completed == 1)

    assert journal.handled["-"] == [0]


async def test_run_stops_on_sigterm(provider_for: Callable[..., InMemoryProvider]) -> None:
    import os
    import signal

    provider = provider_for()
    bot = bot_for(provider, [handler(Journal())])
    running = asyncio.create_task(bot.run())
    await asyncio.sleep(0.1)

    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 5.0)

    assert running.done()
    assert bot.stats().in_flight == 0


def test_bad_settings_fail_at_construction() -> None:
    client = qr.QueueClient(InMemoryProvider())
    with pytest.raises(ValueError, match="max_in_flight"):
        Bot(client, QUEUE, [handler(Journal())], max_in_flight=0)
    with pytest.raises(ValueError, match="at least one handler"):
        Bot(client, QUEUE, [])
    with pytest.raises(qr.ValidationError):
        Bot(client, "bad queue name", [handler(Journal())])


def test_the_bot_takes_its_delivery_limit_from_the_provider_and_refuses_a_higher_one() -> None:
    client = qr.QueueClient(InMemoryProvider(qr.InMemoryConfig(max_delivery_count=7)))
    assert client.max_delivery_count == 7

    with pytest.raises(qr.ConfigurationError, match="above the provider's delivery limit 7"):
        Bot(client, QUEUE, [handler(Journal())], max_delivery_count=8)
    Bot(client, QUEUE, [handler(Journal())], max_delivery_count=3)  # lower: dead-letter sooner


async def test_a_poison_message_is_dead_lettered_after_the_providers_limit_of_handlings(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for(max_delivery_count=3)
    journal = Journal()

    def poison(event: Event) -> None:
        raise RuntimeError("poison")

    client = qr.QueueClient(provider)
    retry = qr.RetryPolicy(max_attempts=1, initial_delay=0.01, jitter=0.0)
    async with Bot(client, QUEUE, [handler(journal, poison)], retry=retry):
        await client.send_message(QUEUE, events(1, 1)[0])
        await wait_until(lambda: provider.stats(QUEUE).dead_lettered == 1)

    assert list(journal.calls.values()) == [3]


SessionMode = Literal["emulated", "native"]


async def test_a_dead_letter_carries_a_failure_record_without_a_traceback_by_default(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()

    def poison(event: Event) -> None:
        raise ValueError("cannot parse this payload")

    recording = handler(journal, poison)
    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1))
    retry = qr.RetryPolicy(max_attempts=12, initial_delay=0.001, jitter=0.0)

    async with bot_for(provider, [recording], max_delivery_count=1, retry=retry) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1)

    [letter] = provider.dead_letter_messages(QUEUE)
    record = FailureRecord.from_attributes(letter.attributes)
    assert letter.dead_letter_reason == record.reason == "ValueError"
    assert record.handler == recording.__name__
    assert record.queue == QUEUE
    assert record.delivery_count == 1
    assert len(record.attempts) == 10  # bounded: the last 10 of 12 attempts
    assert {a.error for a in record.attempts} == {"ValueError"}
    assert record.first_failed_at is not None
    assert record.dead_lettered_at is not None
    assert record.first_failed_at <= record.attempts[0].at <= record.dead_lettered_at
    assert record.traceback is None
    assert not any("Traceback" in value for value in letter.attributes.values())
    assert letter.attributes["event_type"] == "pull_request"


async def test_failure_tracebacks_adds_a_truncated_traceback_to_the_record(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()

    def poison(event: Event) -> None:
        raise PermanentFailure("x" * 10_000)

    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1))

    async with bot_for(provider, [handler(Journal(), poison)], failure_tracebacks=True) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1)

    [letter] = provider.dead_letter_messages(QUEUE)
    traceback = FailureRecord.from_attributes(letter.attributes).traceback
    assert traceback is not None
    assert "PermanentFailure: xxx" in traceback
    assert len(traceback) <= 2048


async def test_an_event_without_a_handler_is_recorded_without_a_handler(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1, event_type="star"))

    async with bot_for(provider, [handler(Journal())]) as bot:
        await wait_until(lambda: bot.stats().dead_lettered == 1)

    [letter] = provider.dead_letter_messages(QUEUE)
    record = FailureRecord.from_attributes(letter.attributes)
    assert (record.reason, record.handler, record.attempts) == ("NoHandler", None, ())
    assert record.queue == QUEUE


async def test_a_crash_loop_pauses_pulling_until_the_restart_window_has_passed(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    journal = Journal()
    broken = {"on": True}

    class CrashLooping(handler(journal)):  # type: ignore[misc]
        async def on_start(self) -> None:
            if broken["on"]:
                raise RuntimeError("dependency not ready")

    policy = RestartPolicy(max_restarts=2, window=1.0, initial_backoff=0.01, max_backoff=0.05)
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, events(1, 1))

    async with bot_for(provider, [CrashLooping], restart_policy=policy) as bot:
        await wait_until(lambda: bot.stats().handler_restarts > policy.max_restarts)
        broken["on"] = False  # the next restart succeeds; the window still has to pass
        await client.send_messages(QUEUE, events(1, 1))
        await asyncio.sleep(0.5)
        received_while_escalated = bot.stats().received
        health_while_escalated = await bot.health()
        await wait_until(lambda: bot.stats().completed == 2)
        health_after = await bot.health()

    assert received_while_escalated == 1
    handlers_check = health_while_escalated.check("handlers")
    assert handlers_check is not None
    assert handlers_check.status is HealthStatus.UNHEALTHY
    assert not health_while_escalated.live
    after = health_after.check("handlers")
    assert after is not None
    assert after.status is HealthStatus.HEALTHY
    assert journal.handled["o/r/pull/0"] == [0, 0]


async def test_a_crash_loop_with_on_escalation_stop_stops_the_bot_by_itself(
    provider_for: Callable[..., InMemoryProvider],
) -> None:
    provider = provider_for()
    starts = {"count": 0}

    class AlwaysCrashes(handler(Journal())):  # type: ignore[misc]
        async def on_start(self) -> None:
            starts["count"] += 1
            raise RuntimeError("misconfigured")

    policy = RestartPolicy(
        max_restarts=2, window=30.0, initial_backoff=0.01, max_backoff=0.05, on_escalation="stop"
    )
    await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1))
    bot = bot_for(provider, [AlwaysCrashes], restart_policy=policy, drain_timeout=5.0)

    async with asyncio.timeout(20):
        await bot.run()  # returns without anyone calling stop()

    assert starts["count"] > policy.max_restarts
    assert bot.stats().in_flight == 0
    assert provider.stats(QUEUE).active == 1  # given back, not lost
    assert provider.stats(QUEUE).dead_lettered == 0
    await bot.stop()  # idempotent after stopping itself


def test_a_restart_policy_doubles_its_backoff_up_to_the_limit_and_checks_its_values() -> None:
    policy = RestartPolicy(initial_backoff=0.5, max_backoff=3.0)

    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="on_escalation"):
        RestartPolicy(on_escalation="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        RestartPolicy(window=0)
