"""Bots for the ``queue-runtime run`` tests, loaded by ``MODULE:BOT``.

In-process tests read :data:`STARTED` to stop the bot they started; the
subprocess tests read the handled message ids from the file named by
``QR_TEST_HANDLED_FILE`` (and those whose handling started from
``QR_TEST_STARTED_FILE``). ``QR_TEST_QUEUE``, ``QR_TEST_HANDLER_DELAY``
(seconds per message) and ``QR_TEST_CONCURRENCY`` (unordered messages
handled at once) shape the bot.
"""

from __future__ import annotations

import asyncio
import os

import queue_runtime as qr
from queue_runtime.bot import WILDCARD, Bot, Event, Handler

STARTED: list[Bot] = []
HANDLED: list[str] = []


class Recorder(Handler):
    event_types = (WILDCARD,)

    async def handle(self, event: Event) -> None:
        started = os.environ.get("QR_TEST_STARTED_FILE")
        if started:
            await asyncio.to_thread(_record, started, event.message_id)
        await asyncio.sleep(float(os.environ.get("QR_TEST_HANDLER_DELAY", "0")))
        HANDLED.append(event.message_id)
        path = os.environ.get("QR_TEST_HANDLED_FILE")
        if path:
            await asyncio.to_thread(_record, path, event.message_id)


def _record(path: str, message_id: str) -> None:
    with open(path, "a") as file:  # a line per message, flushed on close
        file.write(message_id + "\n")


def make_bot(client: qr.QueueClient) -> Bot:
    bot = Bot(
        client,
        os.environ.get("QR_TEST_QUEUE", "cli-run"),
        [Recorder],
        router=lambda message: "job",
        receive_wait=0.2,
        drain_timeout=10.0,
        unordered_concurrency=int(os.environ.get("QR_TEST_CONCURRENCY", "32")),
    )
    STARTED.append(bot)
    return bot


async def make_bot_later(client: qr.QueueClient) -> Bot:
    await asyncio.sleep(0)
    return make_bot(client)


def make_nothing(client: qr.QueueClient) -> str:
    return "not a bot"


NOT_A_BOT = 42


class Crashes(Handler):
    """Cannot start, so that the bot's crash-loop policy stops the bot."""

    event_types = (WILDCARD,)

    async def on_start(self) -> None:
        raise RuntimeError("misconfigured")


def make_crash_looping_bot(client: qr.QueueClient) -> Bot:
    from queue_runtime.bot import RestartPolicy

    return Bot(
        client,
        "cli-crash",
        [Crashes],
        router=lambda message: "job",
        receive_wait=0.05,
        drain_timeout=5.0,
        restart_policy=RestartPolicy(max_restarts=1, initial_backoff=0.01, on_escalation="stop"),
    )
