"""The demo keeps nothing between runs: each run checks only its own events."""

from __future__ import annotations

from queue_runtime.cli import demo


async def test_the_demo_can_run_twice_in_one_process() -> None:
    first = await demo.run(20, 3, seed=7, mode="emulated")
    second = await demo.run(20, 3, seed=7, mode="emulated")

    assert (first, second) == (True, True)
