"""Competing consumers: three bot processes on one FIFO queue (SQS on moto, or a
queue in a sqlite file) never work on one session at the same time, and together
they complete every message.

Each handling is an interval [start, end] on the machine's monotonic clock,
written by the handling process to the shared log. Per session, the
intervals of all processes must be disjoint.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Backend
from .handling_log import Entry, read_log
from .processes import BotProcesses
from .workload import messages, wait_until

QUEUE = "competing.fifo"
BOTS = 3
SESSIONS = 30
PER_SESSION = 10
PREFETCH = 8
"""Messages one bot holds at most: BOTS x PREFETCH < SESSIONS, so the bots that poll
first cannot hold every session between them and leave none to the last."""


@dataclass(frozen=True, slots=True)
class Handling:
    pid: int
    session: str
    seq: int
    start_ns: int
    end_ns: int


def handlings(entries: list[Entry]) -> list[Handling]:
    """Pair each end with the start of the same message in the same process."""
    open_starts: dict[tuple[int, str], Entry] = {}
    paired = []
    for entry in entries:
        key = (entry.pid, entry.message_id)
        if entry.kind == "start":
            assert key not in open_starts, f"one process started {entry} twice at once"
            open_starts[key] = entry
        else:
            start = open_starts.pop(key)
            paired.append(Handling(entry.pid, entry.session, entry.seq, start.at_ns, entry.at_ns))
    assert not open_starts, f"handlings that never ended: {list(open_starts.values())[:5]}"
    return paired


def overlaps(intervals: list[Handling]) -> list[tuple[Handling, Handling]]:
    """Pairs of one session's handlings that overlap in time."""
    found = []
    ordered = sorted(intervals, key=lambda h: h.start_ns)
    latest = ordered[0]
    for handling in ordered[1:]:
        if handling.start_ns < latest.end_ns:
            found.append((latest, handling))
        if handling.end_ns > latest.end_ns:
            latest = handling
    return found


@pytest.mark.timeout(150)
async def test_three_bot_processes_never_handle_one_session_at_the_same_time(
    backend: Backend, tmp_path: Path, log_path: Path
) -> None:
    publisher = backend.publisher
    await backend.create_queue(QUEUE)
    sent = messages(SESSIONS, PER_SESSION)
    ids = {m.message_id for m in sent}
    # A cap on each bot's prefetch: with none, the bots that poll first (and again as
    # soon as they settle) can hold every session and leave the last one nothing.
    options = (
        *("--log", str(log_path), "--handle-delay", "0.2", "--receive-wait", "0.5"),
        *("--max-in-flight", str(PREFETCH)),
    )
    ready = [tmp_path / f"ready-{n}" for n in range(BOTS)]

    async with BotProcesses(tmp_path, backend.environment(5.0)) as bots:
        processes = [await bots.start(QUEUE, *options, "--ready", str(r)) for r in ready]

        async def all_started() -> bool:
            return all(r.exists() for r in ready)

        await wait_until(all_started, 60, bots.output)  # then they compete from the start
        await publisher.send_messages(QUEUE, sent)

        async def all_done() -> bool:
            ended = {e.message_id for e in read_log(log_path) if e.kind == "end"}
            return ended >= ids and await backend.depth(QUEUE) == (0, 0)

        await wait_until(all_done, 100, bots.output)
        for process in processes:
            await bots.stop(process, timeout=30)
            assert process.returncode == 0, bots.output()

    done = handlings(read_log(log_path))
    by_session: dict[str, list[Handling]] = defaultdict(list)
    for handling in done:
        by_session[handling.session].append(handling)
    clashes = {s: overlaps(h) for s, h in by_session.items() if overlaps(h)}
    assert clashes == {}
    assert {h.pid for h in done} == {p.pid for p in processes}  # all three took part
    moved = [s for s, h in by_session.items() if len({x.pid for x in h}) > 1]
    assert moved, "no session moved between processes: exclusivity was never put to the test"
    assert await publisher.peek_dead_letters(QUEUE) == []
    print(
        f"competing ({backend.name}): {len(ids)} messages, "
        f"{len(done)} handlings by {BOTS} processes "
        f"({', '.join(str(sum(h.pid == p.pid for h in done)) for p in processes)}), "
        f"{len(moved)} of {SESSIONS} sessions handled by more than one process"
    )
