"""The asyncio runtime for pykka: asks, proxies, hooks, failures, stopping, ownership."""

from __future__ import annotations

import asyncio
import gc
import time
from types import TracebackType
from typing import Any

import pykka
import pytest

from queue_runtime.actors import AsyncioActor, AsyncioFuture


class Echo(AsyncioActor):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.count = 0

    async def on_start(self) -> None:
        await asyncio.sleep(0)
        self.events.append("start")

    async def on_stop(self) -> None:
        self.events.append("stop")

    async def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom")
        await asyncio.sleep(0)
        return ("echo", message)

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    def add(self, n: int) -> int:
        self.count += n
        return self.count


async def test_ask_returns_the_actors_answer() -> None:
    ref = Echo.start()

    answer = await ref.ask("hi")

    assert answer == ("echo", "hi")
    await ref.stop()


async def test_proxy_calls_sync_and_async_methods_and_reads_attributes() -> None:
    ref = Echo.start()
    proxy = ref.proxy()

    assert await proxy.add(2) == 2
    assert await proxy.add(3) == 5
    assert await proxy.slow(0.01) == "slept"
    assert await proxy.count == 5
    await ref.stop()


async def test_an_exception_in_ask_reaches_the_asker_and_the_actor_survives() -> None:
    ref = Echo.start()

    with pytest.raises(ValueError, match="boom"):
        await ref.ask("boom")

    assert ref.is_alive()
    assert await ref.ask("still here") == ("echo", "still here")
    await ref.stop()


async def test_tell_processes_messages_in_order() -> None:
    class Recorder(AsyncioActor):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[int] = []

        async def on_receive(self, message: Any) -> None:
            await asyncio.sleep(0)
            self.seen.append(message)

    ref = Recorder.start()
    for i in range(100):
        ref.tell(i)

    assert await ref.proxy().seen == list(range(100))
    await ref.stop()


async def test_hooks_run_and_stop_waits_for_on_stop() -> None:
    ref = Echo.start()
    actor = ref._actor_weakref()
    assert actor is not None

    stopped = await ref.stop()

    assert stopped is True
    assert actor.events == ["start", "stop"]
    assert not ref.is_alive()
    assert await ref.stop() is False  # already dead


async def test_the_event_loop_keeps_ticking_while_an_actor_awaits_slow_work() -> None:
    ref = Echo.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    await ref.proxy().slow(0.3)
    ticking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ticking

    assert time.monotonic() - started < 1.0
    assert ticks >= 15  # about 30 if nothing blocked the loop
    await ref.stop()


async def test_blocking_get_on_the_loop_raises_instead_of_deadlocking() -> None:
    ref = Echo.start()
    future = ref.proxy().slow(0.05)

    with pytest.raises(RuntimeError, match="await"):
        future.get()

    assert await future == "slept"
    assert future.get() == "slept"  # once done, get() is fine
    await ref.stop()


async def test_pending_asks_of_a_stopped_actor_fail_with_actor_dead_error() -> None:
    ref = Echo.start()
    proxy = ref.proxy()
    busy = proxy.slow(0.05)
    stopping = ref.stop()
    late = ref.ask("after stop was queued")

    assert await busy == "slept"
    assert await stopping is True
    with pytest.raises(pykka.ActorDeadError):
        await late
    with pytest.raises(pykka.ActorDeadError):
        await ref.ask("after stop")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after stop")


async def test_a_failing_tell_stops_the_actor_and_calls_on_failure() -> None:
    failures: list[str] = []

    class Fragile(AsyncioActor):
        async def on_receive(self, message: Any) -> None:
            raise RuntimeError("crash")

        async def on_failure(
            self,
            exception_type: type[BaseException] | None,
            exception_value: BaseException | None,
            traceback: TracebackType | None,
        ) -> None:
            failures.append(repr(exception_value))

    ref = Fragile.start()
    ref.tell("x")
    actor = ref._actor_weakref()
    assert actor is not None
    assert actor.actor_task is not None
    await actor.actor_task

    assert failures == ["RuntimeError('crash')"]
    assert not ref.is_alive()
    assert ref not in pykka.ActorRegistry.get_all()


async def test_a_failing_on_start_stops_the_actor_and_reports_the_failure() -> None:
    failures: list[str] = []

    class BadStart(AsyncioActor):
        async def on_start(self) -> None:
            raise RuntimeError("no dependency")

        def on_failure(self, *exc_info: Any) -> None:
            failures.append(str(exc_info[1]))

    ref = BadStart.start()
    with pytest.raises(pykka.ActorDeadError):
        await ref.ask("anything")

    assert failures == ["no dependency"]


async def test_ask_with_a_timeout_raises_pykka_timeout() -> None:
    ref = Echo.start()

    with pytest.raises(pykka.Timeout):
        await ref.ask(pykka.messages.ProxyCall(("slow",), (1.0,), {}), timeout=0.05)
    await ref.stop()


async def test_concurrent_actor_handles_several_messages_at_once() -> None:
    class Parallel(AsyncioActor):
        concurrency = 10

        async def work(self) -> float:
            await asyncio.sleep(0.1)
            return time.monotonic()

    ref = Parallel.start()
    started = time.monotonic()

    await asyncio.gather(*(ref.proxy().work() for _ in range(10)))

    assert time.monotonic() - started < 0.5  # 10 x 0.1 s would take 1 s one at a time
    await ref.stop()


async def test_stopping_a_concurrent_actor_waits_for_its_running_messages() -> None:
    class Parallel(AsyncioActor):
        concurrency = 4

        async def work(self) -> str:
            await asyncio.sleep(0.05)
            return "finished"

    ref = Parallel.start()
    running = [ref.proxy().work() for _ in range(4)]
    await asyncio.sleep(0.01)

    await ref.stop()

    assert [await f for f in running] == ["finished"] * 4


async def test_future_map_and_join() -> None:
    ref = Echo.start()
    proxy = ref.proxy()

    doubled = proxy.add(21).map(lambda n: n * 2)
    joined = proxy.add(0).join(proxy.add(1))

    assert await doubled == 42
    assert await joined == [21, 22]
    await ref.stop()


async def test_start_outside_a_running_loop_is_a_clear_error() -> None:
    def start_in_thread() -> None:
        Echo.start()

    with pytest.raises(RuntimeError, match="running event loop"):
        await asyncio.to_thread(start_in_thread)


async def test_actor_tasks_are_owned_and_finish_when_actors_stop() -> None:
    refs = [Echo.start() for _ in range(50)]
    actors = [r._actor_weakref() for r in refs]
    tasks = [a.actor_task for a in actors if a is not None]

    await asyncio.gather(*(r.stop() for r in refs))
    gc.collect()

    assert len(tasks) == 50
    assert all(task is not None and task.done() for task in tasks)
    assert not any(t in AsyncioActor._live_tasks for t in tasks)


def test_a_future_can_be_awaited_by_several_waiters() -> None:
    async def scenario() -> list[int]:
        future: AsyncioFuture[int] = AsyncioFuture()
        waiters = [asyncio.ensure_future(_await(future)) for _ in range(3)]
        await asyncio.sleep(0)
        future.set(7)
        return await asyncio.gather(*waiters)

    assert asyncio.run(scenario()) == [7, 7, 7]


async def _await(future: AsyncioFuture[int]) -> int:
    return await future


class Recorder(AsyncioActor):
    """A concurrent actor that records the order in which its calls start."""

    concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []

    async def work(self, n: int, seconds: float) -> int:
        self.started.append(n)
        await asyncio.sleep(seconds)
        return n


async def test_a_concurrent_actor_starts_its_messages_in_the_order_they_were_sent() -> None:
    ref = Recorder.start()
    proxy = ref.proxy()
    actor = ref._actor_weakref()
    assert isinstance(actor, Recorder)
    first = proxy.work(1, 0.05)
    second = proxy.work(2, 0.01)
    held = proxy.work(3, 0)  # both workers busy: the actor's loop holds this one

    async def send_the_next_as_soon_as_a_worker_is_free() -> int:
        await second  # woken before the loop hands the held message to the freed worker
        return int(await proxy.work(4, 0))

    assert await send_the_next_as_soon_as_a_worker_is_free() == 4
    assert [await first, await held] == [1, 3]
    assert actor.started == [1, 2, 3, 4]  # the late one did not overtake the held one
    await ref.stop()


async def test_stopping_right_after_a_message_to_an_idle_worker_waits_for_that_message() -> None:
    ref = Recorder.start()
    proxy = ref.proxy()
    await asyncio.gather(proxy.work(0, 0), proxy.work(1, 0))  # two idle workers

    answer = proxy.work(2, 0.02)  # handed straight to an idle worker, not started yet
    stopped = ref.stop()

    async with asyncio.timeout(2):  # a stop that lost track of it would hang
        assert await answer == 2
        assert await stopped is True
