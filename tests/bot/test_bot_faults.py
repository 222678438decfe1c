"""The bot under faults outside the happy path: each test is a bug a review found."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pykka
import pytest

import queue_runtime as qr
from queue_runtime.actors import AsyncioActor, kill
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.providers.memory import InMemoryProvider

QUEUE = "events"
FAST = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)


def numbered(session: str, count: int) -> list[qr.Message]:
    return [
        qr.Message.from_json({"n": n}, attributes={"event_type": "e"}, session_id=session)
        for n in range(count)
    ]


def handler(behaviour: Callable[[Event], Any], seen: list[int]) -> type[Handler]:
    class H(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            result = behaviour(event)
            if asyncio.iscoroutine(result):
                await result
            seen.append(event.json()["n"])

    return H


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_raising_router_fails_the_message_not_the_session_actor() -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(max_delivery_count=2))
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 4))
    seen: list[int] = []

    def router(message: qr.ReceivedMessage) -> str:
        if message.json()["n"] == 1:
            raise KeyError("no event type header")
        return "e"

    bot = Bot(client, QUEUE, [handler(lambda e: None, seen)], router=router, retry=FAST,
              max_delivery_count=2, receive_wait=0.05)  # fmt: skip
    async with bot:
        await until(lambda: bot.stats().completed == 3 and bot.stats().dead_lettered == 1)

    assert seen == [0, 2, 3]
    assert provider.dead_letter_messages(QUEUE)[0].dead_letter_reason == "KeyError"
    assert bot.stats().in_flight == 0


async def test_a_handler_raising_actor_dead_error_is_an_ordinary_failure() -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(max_delivery_count=1))
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 1))
    calls: list[int] = []

    def dependency_gone(event: Event) -> None:
        calls.append(1)
        raise pykka.ActorDeadError("an actor the handler talks to is gone")

    bot = Bot(client, QUEUE, [handler(dependency_gone, [])], retry=FAST, max_delivery_count=1,
              receive_wait=0.05)  # fmt: skip
    async with bot:
        await until(lambda: bot.stats().dead_lettered == 1)

    assert len(calls) == FAST.max_attempts  # not a hot loop


async def test_a_handler_raising_a_stray_cancelled_error_is_retried_not_stuck() -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(lock_duration=0.3))
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 3))
    seen: list[int] = []

    async def cancelled_dependency(event: Event) -> None:
        if event.json()["n"] == 0 and event.attempt == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future

    bot = Bot(client, QUEUE, [handler(cancelled_dependency, seen)], retry=FAST,
              receive_wait=0.05)  # fmt: skip
    async with bot:
        await until(lambda: bot.stats().completed == 3)

    assert seen == [0, 1, 2]


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_a_failed_abandon_does_not_let_later_messages_overtake(mode: str) -> None:
    config = qr.InMemoryConfig(session_mode=mode, lock_duration=1.0)  # type: ignore[arg-type]
    provider = InMemoryProvider(config)
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()))
    await client.send_messages(QUEUE, numbered("s", 4))
    seen: list[int] = []
    failures = {"left": 2}

    def flaky(event: Event) -> None:
        if event.json()["n"] == 1 and failures["left"]:
            failures["left"] -= 1
            if failures["left"] == 0:
                provider.faults.fail_next("abandon")  # the abandon after the retries fails
            raise ConnectionError("downstream")

    bot = Bot(client, QUEUE, [handler(flaky, seen)], retry=FAST, receive_wait=0.05,
              mailbox_size=4)  # fmt: skip
    async with bot:
        await until(lambda: bot.stats().completed == 4)

    first_handling = [n for i, n in enumerate(seen) if n not in seen[:i]]
    assert first_handling == [0, 1, 2, 3]


async def test_a_native_session_taken_again_after_its_lock_lapsed_is_not_stopped_under_it() -> None:
    clock = qr.ManualClock()
    config = qr.InMemoryConfig(session_mode="native", session_lock_duration=10)
    provider = InMemoryProvider(config, clock=clock)
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 5))
    gate, started = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def slow_first(event: Event) -> None:
        if event.json()["n"] == 0 and not gate.is_set():
            started.set()
            await gate.wait()

    bot = Bot(client, QUEUE, [handler(slow_first, seen)], retry=FAST, receive_wait=0.05,
              drain_timeout=0.5, mailbox_size=1)  # fmt: skip
    await bot.start()
    await started.wait()
    clock.advance(11)  # the session lock lapses; the session is accepted again
    await asyncio.sleep(0.3)
    gate.set()
    await until(lambda: bot.stats().completed >= 5 - 1 and provider.stats(QUEUE).active == 0)
    began = time.monotonic()
    await bot.stop()

    assert time.monotonic() - began < 2.0
    assert bot.stats().in_flight == 0
    assert provider.stats(QUEUE).in_flight == 0


async def test_the_pull_loop_survives_an_unexpected_provider_error() -> None:
    provider = InMemoryProvider()
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 3))
    provider.faults.fail_next("receive", error=lambda op: RuntimeError("provider bug"))
    seen: list[int] = []

    async with Bot(client, QUEUE, [handler(lambda e: None, seen)], receive_wait=0.05) as bot:
        await until(lambda: bot.stats().completed == 3)

    assert seen == [0, 1, 2]


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_a_drain_timeout_during_slow_abandons_still_gives_everything_back(
    mode: str,
) -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
    real_abandon = provider.abandon

    async def slow_abandon(receipt: qr.ReceiptHandle, delay: float | None = None) -> None:
        await asyncio.sleep(0.3)
        await real_abandon(receipt, delay)

    provider.abandon = slow_abandon  # type: ignore[method-assign]
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 5))
    started = asyncio.Event()

    async def busy(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.1)

    bot = Bot(client, QUEUE, [handler(busy, [])], receive_wait=0.05, drain_timeout=0.2,
              mailbox_size=5)  # fmt: skip
    await bot.start()
    await started.wait()
    await bot.stop()

    assert bot.stats().in_flight == 0
    assert provider.stats(QUEUE).in_flight == 0
    assert provider.stats(QUEUE).active + bot.stats().completed == 5


async def test_no_new_attempt_starts_once_stopping() -> None:
    provider = InMemoryProvider()
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, numbered("s", 1))
    attempts: list[int] = []
    first = asyncio.Event()

    def failing(event: Event) -> None:
        attempts.append(event.attempt)
        first.set()
        raise ConnectionError("down")

    slow_retry = qr.RetryPolicy(max_attempts=3, initial_delay=0.3, jitter=0.0)
    bot = Bot(client, QUEUE, [handler(failing, [])], retry=slow_retry, receive_wait=0.05)
    await bot.start()
    await first.wait()
    await bot.stop()

    assert attempts == [1]
    assert provider.stats(QUEUE).active == 1


async def test_locks_are_renewed_side_by_side_so_a_slow_provider_does_not_lose_them() -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(lock_duration=0.6))
    real_renew = provider.renew_lock

    async def slow_renew(receipt: qr.ReceiptHandle) -> Any:
        await asyncio.sleep(0.02)
        return await real_renew(receipt)

    provider.renew_lock = slow_renew  # type: ignore[method-assign]
    client = qr.QueueClient(provider)
    await client.send_messages(QUEUE, [m for s in range(60) for m in numbered(f"s{s}", 1)])

    async def slow(event: Event) -> None:
        await asyncio.sleep(1.5)

    async with Bot(client, QUEUE, [handler(slow, [])], receive_wait=0.05) as bot:
        await until(lambda: bot.stats().completed == 60)

    assert bot.stats().lost_locks == 0
    assert bot.stats().received == 60


def test_two_handlers_for_one_event_type_fail_at_construction() -> None:
    first, second = handler(lambda e: None, []), handler(lambda e: None, [])

    with pytest.raises(ValueError, match="two handlers"):
        Bot(qr.QueueClient(InMemoryProvider()), QUEUE, [first, second])


async def test_killing_an_actor_fails_its_pending_asks_instead_of_hanging() -> None:
    class Slow(AsyncioActor):
        async def work(self) -> None:
            await asyncio.sleep(10)

    ref = Slow.start()
    running = ref.proxy().work()
    queued = ref.proxy().work()
    await asyncio.sleep(0.01)

    kill(ref)

    with pytest.raises(pykka.ActorDeadError):
        await asyncio.wait_for(running, 1.0)
    with pytest.raises(pykka.ActorDeadError):
        await asyncio.wait_for(queued, 1.0)
    assert not ref.is_alive()


async def test_an_actor_killed_before_it_ever_ran_is_dead_and_unregistered() -> None:
    class Idle(AsyncioActor):
        pass

    ref = Idle.start()
    kill(ref)
    await asyncio.sleep(0)

    with pytest.raises(pykka.ActorDeadError):
        await ref.ask("anything")
    assert ref not in pykka.ActorRegistry.get_all()


async def test_a_concurrent_actor_that_dies_of_a_tell_ends_its_loop() -> None:
    class Fragile(AsyncioActor):
        concurrency = 4

        async def on_receive(self, message: Any) -> None:
            raise RuntimeError("crash")

    ref = Fragile.start()
    actor = ref._actor_weakref()
    assert actor is not None
    ref.tell("x")

    assert actor.actor_task is not None
    await asyncio.wait_for(actor.actor_task, 1.0)
    assert not ref.is_alive()


async def test_future_filter_and_reduce_can_be_awaited() -> None:
    class Numbers(AsyncioActor):
        def nums(self) -> list[int]:
            return [1, 2, 3, 4]

    ref = Numbers.start()

    assert await ref.proxy().nums().filter(lambda n: n % 2 == 0) == [2, 4]
    assert await ref.proxy().nums().reduce(lambda a, b: a + b) == 10
    await ref.stop()
