"""Real second OS processes on one file: a session lock holds against another
process and passes on when that process is SIGKILLed, and a send that returned
in a process killed right after is in the file."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

import queue_runtime as qr

from .conftest import OpenProvider

ROOT = Path(__file__).resolve().parents[2]
Q = qr.QueueName("jobs")


async def start_child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sqlite.child",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


async def wait_for_file(path: Path, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        if process.returncode is not None or time.monotonic() > deadline:
            output = await process.stdout.read() if process.stdout else b""
            raise AssertionError(f"the child did not get ready: {output.decode()}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_session_locked_by_another_process_passes_on_when_that_process_is_killed(
    open_provider: OpenProvider, db_path: Path, tmp_path: Path
) -> None:
    provider = open_provider(session_mode="native")
    await provider.send(Q, [qr.Message(b"held", session_id="s")])
    ready = tmp_path / "ready"
    child = await start_child("hold", str(db_path), str(ready))
    try:
        await wait_for_file(ready, child, 30)

        with pytest.raises(qr.SessionLockedError):
            await provider.accept_session(Q, qr.SessionId("s"), timeout=0.1)
        assert await provider.accept_session(Q, None, timeout=0.1) is None
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        session = await provider.accept_session(Q, None, timeout=10.0)  # its 2 s lock runs out
    finally:
        await kill(child)

    assert session is not None
    [message] = await session.receive(1, timeout=1.0)
    assert (message.body, message.message_id, message.delivery_count) == (
        b"held",
        await asyncio.to_thread(ready.read_text),
        2,
    )
    await session.close()


@pytest.mark.timeout(60)
async def test_every_send_that_returned_in_a_killed_process_is_in_the_file(
    open_provider: OpenProvider, db_path: Path
) -> None:
    child = await start_child("send", str(db_path))
    returned: list[str] = []
    try:
        assert child.stdout is not None
        while len(returned) < 50:
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line, "the sender stopped early"
            returned.extend(line.decode().split())
        child.send_signal(signal.SIGKILL)  # mid-stream: more sends are on their way
        await child.wait()
        rest = await child.stdout.read()
        returned.extend(rest.decode().split())
    finally:
        await kill(child)

    provider = open_provider()
    stored: list[str] = []
    while batch := await provider.receive(Q, 100, timeout=0.1):
        stored.extend(m.message_id for m in batch)

    assert set(returned) <= set(stored)
    assert len(stored) == len(set(stored))
    assert len(stored) - len(returned) in (0, 10)  # at most the batch whose print was cut off
