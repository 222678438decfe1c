"""A second OS process on the test's database file: ``python -m tests.sqlite.child``.

``hold PATH READY``: lock session ``s`` of queue ``jobs`` (native sessions, a
2 s session lock), receive its message, create READY, then wait to be killed.

``send PATH``: send batches of 10 to ``jobs`` until killed, printing the ids
of each batch once its send has returned.

``open PATH``: open the file and print ``ok``, or the error's type and text.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import queue_runtime as qr
from queue_runtime.providers.sqlite import SqliteProvider

Q = qr.QueueName("jobs")


async def hold(path: str, ready: Path) -> None:
    config = qr.SqliteConfig(path=path, session_mode="native", session_lock_duration=2.0)
    provider = SqliteProvider(config)
    session = await provider.accept_session(Q, qr.SessionId("s"), timeout=5.0)
    assert session is not None
    [message] = await session.receive(1, timeout=5.0)
    await asyncio.to_thread(ready.write_text, message.message_id)
    await asyncio.sleep(3600)


async def send(path: str) -> None:
    provider = SqliteProvider(qr.SqliteConfig(path=path))
    batch = 0
    while True:
        messages = [qr.Message(f"{batch}:{i}".encode()) for i in range(10)]
        await provider.send(Q, messages)
        print(" ".join(m.message_id for m in messages), flush=True)
        batch += 1


async def open_file(path: str) -> None:
    provider = SqliteProvider(qr.SqliteConfig(path=path))
    try:
        await provider.open()
        await provider.send(Q, [qr.Message(b"x")])
    except qr.QueueError as error:
        print(f"{type(error).__name__}: {error}")
    else:
        print("ok")
    finally:
        await provider.aclose()


def main() -> None:
    command, path, *rest = sys.argv[1:]
    if command == "hold":
        asyncio.run(hold(path, Path(rest[0])))
    elif command == "send":
        asyncio.run(send(path))
    else:
        asyncio.run(open_file(path))


if __name__ == "__main__":
    main()
