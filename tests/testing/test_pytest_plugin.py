"""The pytest plugin as a user's suite meets it: strict mode, looptime's --looptime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TESTS = """
import asyncio
import time

import pytest

from queue_runtime.testing import BotKit, is_virtual


@pytest.mark.asyncio
async def test_a_kit_runs_on_virtual_time(bot_kit: BotKit) -> None:
    probe = bot_kit.probe("push").delay(100.0)
    await bot_kit.start()
    began = time.perf_counter()
    await bot_kit.publish("push", session_id="a")
    await bot_kit.drain()
    assert is_virtual()
    assert probe.events[0].outcome == "returned"
    assert time.perf_counter() - began < 1.0


@pytest.mark.asyncio
async def test_a_test_without_the_kit_keeps_real_time_unless_looptime_says() -> None:
    began = time.perf_counter()
    await asyncio.sleep(0.2)
    assert is_virtual() or time.perf_counter() - began >= 0.2
"""


def run_user_suite(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_fixtures_work_in_strict_mode_with_and_without_looptimes_flag(tmp_path: Path) -> None:
    for args in ((), ("--looptime",)):
        result = run_user_suite(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout
