"""Crash: a bot process killed with SIGKILL mid-stream loses nothing.

A bot process works through a FIFO queue on the moto server (which runs in
this test process and outlives it), or through a queue in a sqlite file; it
is killed with SIGKILL while messages are in its hands, a second bot process
takes over, and the shared handling log must show every message handled at
least once and, per session, the first handlings in publish order.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import Backend
from .handling_log import Entry, read_log
from .processes import BotProcesses
from .workload import messages, wait_until

QUEUE = "crash.fifo"
SESSIONS = 20
PER_SESSION = 12
VISIBILITY = 3.0
"""Short, so that what the killed bot held comes back quickly."""


def first_handling_order(entries: list[Entry]) -> dict[str, list[int]]:
    """Per session, the sequence numbers in the order they were first started."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        if entry.kind == "start" and entry.message_id not in seen:
            seen.add(entry.message_id)
            order[entry.session].append(entry.seq)
    return dict(order)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend", ["sqs", "sqlite", "sqlite-native"], indirect=True)
async def test_a_bot_killed_mid_stream_loses_nothing_and_keeps_first_handling_order(
    backend: Backend, tmp_path: Path, log_path: Path
) -> None:
    publisher = backend.publisher
    await backend.create_queue(QUEUE)
    sent = messages(SESSIONS, PER_SESSION)
    await publisher.send_messages(QUEUE, sent)
    ids = {m.message_id for m in sent}
    total = len(sent)
    options = ("--log", str(log_path), "--handle-delay", "0.5", "--receive-wait", "0.5")

    def logged(kind: str) -> set[str]:
        return {e.message_id for e in read_log(log_path) if e.kind == kind}

    async with BotProcesses(tmp_path, backend.environment(VISIBILITY)) as bots:
        first = await bots.start(QUEUE, *options)

        async def a_third_started_and_some_in_hand() -> bool:
            started, ended = logged("start"), logged("end")
            return len(started) >= total // 3 and bool(started - ended)

        await wait_until(a_third_started_and_some_in_hand, 60, bots.output)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        before_kill = read_log(log_path)
        handled_before = {e.message_id for e in before_kill if e.kind == "end"}
        in_hand = {e.message_id for e in before_kill if e.kind == "start"} - handled_before
        assert in_hand, "the kill did not land while messages were being handled"
        assert len(handled_before) < total, "the bot finished before it was killed"

        second = await bots.start(QUEUE, *options)

        async def all_done() -> bool:
            return logged("end") >= ids and await backend.depth(QUEUE) == (0, 0)

        await wait_until(all_done, 90, bots.output)
        await bots.stop(second, timeout=30)
        assert second.returncode == 0, bots.output()

    entries = read_log(log_path)
    handled = {e.message_id for e in entries if e.kind == "end"}
    assert handled == ids  # at least once each, nothing unknown
    assert first_handling_order(entries) == {
        f"s{s}": list(range(PER_SESSION)) for s in range(SESSIONS)
    }
    assert await publisher.peek_dead_letters(QUEUE) == []
    starts: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        if entry.kind == "start":
            starts[entry.message_id].append(entry.pid)
    again = {m for m, pids in starts.items() if len(pids) > 1}
    assert in_hand <= again  # what the killed bot was handling was handled again
    print(
        f"crash ({backend.name}): {total} messages, {len(handled_before)} handled before SIGKILL, "
        f"{len(in_hand)} in hand, {len(again)} handled twice"
    )
