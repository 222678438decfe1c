"""One bot process of ``bench/sqlite.py``'s shared-file row.

``python -m bench.sqlite_bot PATH QUEUE``: opens the sqlite file, prints
``ready``, waits for a line on standard input, then runs a bot with a no-op
handler on ``QUEUE`` (the settings of the bot row) until it is terminated.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import queue_runtime as qr
from bench.sqlite import NoOp, config
from queue_runtime.bot import Bot
from queue_runtime.providers.sqlite import SqliteProvider


async def run(path: Path, queue: str) -> None:
    provider = SqliteProvider(config(path))
    await provider.open()
    async with qr.QueueClient(provider) as client:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        async with Bot(client, queue, [NoOp], max_in_flight=2_000, receive_wait=0.05):
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1]), sys.argv[2]))
