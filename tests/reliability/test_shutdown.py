"""Shutdown: SIGTERM under load stops a bot process within its ``drain_timeout``, with
exit code 0, and every message it had not completed is visible again at once.

The queue's visibility timeout is 60 s, so a message that is visible right
after the process exited was given back by the bot, not by lock expiry. Two
cases: handlers that finish within the drain timeout (they complete), and
handlers that do not (they are interrupted, and their messages given back too).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider

from .handling_log import read_log
from .processes import BotProcesses, bot_environment
from .workload import messages, queue_depth, wait_until

QUEUE = "shutdown.fifo"
SESSIONS = 5
PER_SESSION = 20
VISIBILITY = 60.0
EXIT_SLACK = 3.0
"""Seconds beyond ``drain_timeout`` for the process itself to stop and exit."""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("handle_delay", "drain_timeout"),
    [(0.5, 5.0), (30.0, 2.0)],
    ids=["handlers-finish", "handlers-interrupted"],
)
async def test_sigterm_under_load_exits_within_the_drain_timeout_and_gives_messages_back(
    sqs: SqsProvider,
    publisher: qr.QueueClient,
    tmp_path: Path,
    log_path: Path,
    handle_delay: float,
    drain_timeout: float,
) -> None:
    await sqs.create_queue(QUEUE)
    # in blocks: one receive takes ten messages of a session, so the bot prefetches
    sent = messages(SESSIONS, PER_SESSION, blocks=True)
    await publisher.send_messages(QUEUE, sent)
    ids = {m.message_id for m in sent}
    stats_path = tmp_path / "stats.json"
    options = ["--log", str(log_path), "--handle-delay", str(handle_delay)]
    options += ["--drain-timeout", str(drain_timeout), "--stats", str(stats_path)]

    async with BotProcesses(tmp_path, bot_environment(visibility_timeout=VISIBILITY)) as bots:
        bot = await bots.start(QUEUE, *options, "--receive-wait", "0.5")

        async def every_session_busy() -> bool:
            return len({e.session for e in read_log(log_path)}) == SESSIONS

        await wait_until(every_session_busy, 60, bots.output)
        took = await bots.stop(bot, timeout=drain_timeout + 30)
        depth = await queue_depth(sqs, QUEUE)  # at once: long before any lock could expire
        assert bot.returncode == 0, bots.output()
    assert took <= drain_timeout + EXIT_SLACK, f"exit took {took:.1f} s"

    entries = read_log(log_path)
    started = {e.message_id for e in entries if e.kind == "start"}
    completed = {e.message_id for e in entries if e.kind == "end"}
    assert depth == (len(ids) - len(completed), 0)  # everything else visible, nothing locked
    began = time.monotonic()
    back = await drain(publisher, len(ids) - len(completed))
    assert {m.message_id for m in back} == ids - completed
    prefetched = [m for m in back if m.delivery_count > 1 and m.message_id not in started]
    assert prefetched, "the bot had prefetched nothing: the proof proved nothing"
    if handle_delay > drain_timeout:
        assert started - completed, "no handler was interrupted"
    stats = json.loads(stats_path.read_text())
    assert stats["in_flight"] == 0
    print(
        f"shutdown ({handle_delay:g} s handlers, drain_timeout {drain_timeout:g} s): exit in "
        f"{took:.2f} s; {len(completed)} completed, {len(started - completed)} interrupted, "
        f"{len(prefetched)} prefetched given back; all {len(back)} received again in "
        f"{time.monotonic() - began:.2f} s"
    )


async def drain(client: qr.QueueClient, count: int) -> list[qr.ReceivedMessage]:
    """Receive and complete ``count`` messages (failing after 20 s without one)."""
    received: list[qr.ReceivedMessage] = []
    while len(received) < count:
        batch = await client.receive_messages(QUEUE, 10, timeout=20.0)
        assert batch, f"only {len(received)} of {count} messages came back"
        for message in batch:
            await client.complete_message(message.receipt)
        received.extend(batch)
    return received
