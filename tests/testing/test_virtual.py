"""Virtual time: waits cost no real time, and the clock stays exact."""

from __future__ import annotations

import asyncio
import time

import pytest

from queue_runtime.testing import VirtualClock, is_virtual, run, virtual_time
from queue_runtime.testing.pytest_plugin import VirtualTime
from queue_runtime.testing.virtual import EPOCH


def test_an_hour_of_sleep_on_a_virtual_loop_takes_well_under_a_second() -> None:
    async def an_hour() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    began = time.perf_counter()
    assert run(an_hour()) == 3600.0
    assert time.perf_counter() - began < 1.0


def test_a_virtual_clock_reads_the_epoch_plus_the_loop_time() -> None:
    async def read() -> tuple[float, float]:
        clock = VirtualClock()
        first = clock.now()
        await clock.sleep(30.0)
        return first, clock.now()

    assert run(read()) == (EPOCH, EPOCH + 30.0)


def test_virtual_time_can_be_switched_on_for_a_running_loop_and_off_again() -> None:
    async def main() -> tuple[bool, bool, bool, float]:
        before = is_virtual()
        with virtual_time():
            during = is_virtual()
            began = time.perf_counter()
            await asyncio.sleep(600)
            real = time.perf_counter() - began
        return before, during, is_virtual(), real

    before, during, after, real = asyncio.run(main())

    assert (before, during, after) == (False, True, False)
    assert real < 1.0


def test_a_deadline_a_rounding_error_ahead_does_not_stall_virtual_time() -> None:
    # The lock renewer's loop: sleep `deadline - now` while it is positive. With a
    # deadline one float rounding error past a tick of the clock, asyncio would run
    # the timer before the clock reached the deadline, forever.
    async def renewer_loop() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(30.58264)
        deadline = loop.time() + 0.05
        assert deadline != round(deadline, 6)  # the rounding error this test is about
        wake = asyncio.Event()
        began = time.perf_counter()
        while (wait := deadline - loop.time()) > 0:
            assert time.perf_counter() - began < 2.0, "virtual time stalled"
            try:
                async with asyncio.timeout(wait):
                    await wake.wait()
            except TimeoutError:
                pass
        return loop.time()

    assert run(renewer_loop()) >= 30.63264


async def test_the_fixture_puts_the_test_on_virtual_time(virtual_time: VirtualTime) -> None:
    began = time.perf_counter()
    await asyncio.sleep(24 * 3600)

    assert is_virtual()
    assert virtual_time.held
    assert time.perf_counter() - began < 1.0


@pytest.mark.looptime
async def test_the_fixture_and_looptimes_own_marker_work_together(
    virtual_time: VirtualTime,
) -> None:
    began = time.perf_counter()
    await asyncio.sleep(3600)

    assert is_virtual()
    assert time.perf_counter() - began < 1.0
