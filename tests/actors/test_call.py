"""ref.call(): an ask handled in the caller's task when a worker is idle, with an ask's
guarantees (concurrency limit, stop, kill, errors)."""

from __future__ import annotations

import asyncio
from typing import Any

import pykka
import pytest

from queue_runtime.actors import AsyncioActor, AsyncioActorRef, StrayCancellation, kill


class Worker(AsyncioActor):
    concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.release = asyncio.Event()

    async def on_receive(self, message: Any) -> Any:
        self.tasks.append(asyncio.current_task())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if message == "boom":
                raise ValueError("boom")
            if message == "stray":
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                future.cancel()
                await future
            if message == "wait":
                await self.release.wait()
            return ("done", message)
        finally:
            self.running -= 1


def _actor(ref: AsyncioActorRef[Any]) -> Worker:
    actor = ref._actor_weakref()
    assert isinstance(actor, Worker)
    return actor


async def _with_idle_worker() -> tuple[AsyncioActorRef[Any], Worker]:
    ref = Worker.start()
    assert await ref.ask("warm up") == ("done", "warm up")  # makes a worker, idle afterwards
    await asyncio.sleep(0)
    return ref, _actor(ref)


async def test_with_an_idle_worker_the_caller_handles_the_message_itself() -> None:
    ref, actor = await _with_idle_worker()

    assert await ref.call("hi") == ("done", "hi")

    assert actor.tasks[-1] is asyncio.current_task()
    await ref.stop()


async def test_without_an_idle_worker_call_is_an_ask() -> None:
    ref = Worker.start()  # no worker yet

    assert await ref.call("hi") == ("done", "hi")

    assert _actor(ref).tasks[-1] is not asyncio.current_task()
    await ref.stop()


async def test_errors_reach_the_caller_as_from_an_ask() -> None:
    ref, _ = await _with_idle_worker()

    with pytest.raises(ValueError, match="boom"):
        await ref.call("boom")
    with pytest.raises(StrayCancellation):
        await ref.call("stray")
    assert await ref.call("still alive") == ("done", "still alive")
    await ref.stop()


async def test_calls_in_the_caller_count_against_the_concurrency_limit() -> None:
    ref, actor = await _with_idle_worker()

    calls = [asyncio.ensure_future(ref.call("wait")) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert actor.running == 2  # concurrency = 2, however the calls were handled
    actor.release.set()

    assert [await c for c in calls] == [("done", "wait")] * 5
    assert actor.most == 2
    await ref.stop()


async def test_stop_waits_for_a_call_handled_by_the_caller() -> None:
    ref, actor = await _with_idle_worker()
    call = asyncio.ensure_future(ref.call("wait"))
    await asyncio.sleep(0.01)
    assert actor.tasks[-1] is call  # handled in the calling task

    stopping = asyncio.ensure_future(ref.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    actor.release.set()

    assert await call == ("done", "wait")
    assert await stopping is True
    assert not ref.is_alive()


async def test_kill_interrupts_a_call_handled_by_the_caller_who_hears_the_actor_died() -> None:
    ref, actor = await _with_idle_worker()
    call = asyncio.ensure_future(ref.call("wait"))
    await asyncio.sleep(0.01)
    assert actor.tasks[-1] is call

    kill(ref)

    with pytest.raises(pykka.ActorDeadError):
        await call
    assert actor.running == 0
    assert call.cancelling() == 0  # the kill's cancellation does not stay on the caller
    await asyncio.sleep(0.01)
    assert not ref.is_alive()


async def test_a_caller_cancelled_itself_is_cancelled_even_when_the_actor_is_killed() -> None:
    ref, _ = await _with_idle_worker()
    call = asyncio.ensure_future(ref.call("wait"))
    await asyncio.sleep(0.01)

    call.cancel()
    kill(ref)

    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_call_to_a_dead_actor_fails() -> None:
    ref, _ = await _with_idle_worker()
    await ref.stop()

    with pytest.raises(pykka.ActorDeadError):
        await ref.call("hi")


async def test_a_call_does_not_start_before_an_ask_sent_earlier() -> None:
    ref = Worker.start()
    assert await ref.ask("warm up 1") == ("done", "warm up 1")
    warm = [ref.ask("wait"), ref.ask("wait")]  # two workers, both idle once released
    await asyncio.sleep(0.01)
    actor = _actor(ref)
    actor.release.set()
    await asyncio.gather(*warm)
    await asyncio.sleep(0)
    actor.tasks.clear()
    started: list[str] = []
    handle = actor.on_receive

    async def recording(message: Any) -> Any:
        started.append(message)
        return await handle(message)

    actor.on_receive = recording  # type: ignore[method-assign]

    first = ref.ask("first")  # handed to an idle worker, which has not run yet
    second = await ref.call("second")

    assert second == ("done", "second")
    assert await first == ("done", "first")
    assert started == ["first", "second"]
    await ref.stop()
