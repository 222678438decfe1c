"""Fixtures of the reliability proofs: a fresh moto server state, the test's own SQS
provider (to publish and inspect), the path of the shared handling log, and the
``backend`` the crash and competing-consumers proofs run on (SQS on moto, and a
sqlite file)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.health import QueueInfo
from queue_runtime.providers.aws import SqsProvider
from queue_runtime.providers.sqlite import SqliteProvider
from tests import sqs_server

from .processes import bot_environment, sqlite_bot_environment
from .workload import queue_depth


@pytest.fixture
def fast_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make three helpers of the moto server cheaper while a proof runs.

    moto recomputes every queue attribute several times per message (each
    time converting ~20 names from CamelCase character by character, and
    asking the time, through datetime arithmetic, once or twice per message
    in the queue), and lists its own package directory on every request:
    together about two thirds of its CPU time. The replacements return the
    same values: the conversion is memoized (a pure function), the directory
    listing is taken once (it does not change during a run), and the current
    Unix time comes from ``time.time()``. Undone after the test: other tests
    see the server unchanged.
    """
    from moto import backends
    from moto.core.utils import camelcase_to_underscores, unix_time, unix_time_millis
    from moto.sqs import models

    modules = tuple(backends.list_of_moto_modules())
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: modules)
    monkeypatch.setattr(
        models, "camelcase_to_underscores", functools.cache(camelcase_to_underscores)
    )

    def now(dt: datetime | None = None) -> float:
        return time.time() if dt is None else float(unix_time(dt))

    def now_millis(dt: datetime | None = None) -> float:
        return time.time() * 1000.0 if dt is None else float(unix_time_millis(dt))

    monkeypatch.setattr(models, "unix_time", now)
    monkeypatch.setattr(models, "unix_time_millis", now_millis)


@pytest.fixture
def moto_fifo_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto 5.2.5 hand out FIFO groups as SQS does while a proof runs.

    moto blocks a message group while any message of it is in the queue's
    ``pending_messages`` set, but takes a message whose visibility timeout has
    passed out of that set only when a receive walks past it, and then
    recomputes the blocked groups mid-walk. So after a consumer dies holding
    messages of a group, a receive can skip the group's first messages and
    hand out a later one; and two receives running at once in the server's
    threads can both take from one group. SQS itself redelivers a group from
    its first unacknowledged message, to one consumer at a time.

    Here each receive runs alone, after taking every message whose visibility
    timeout has passed out of ``pending_messages``; moto's own logic does the
    rest. Undone after the test. All receives of the proofs are short polls
    (``wait_time=0``), so running them one at a time costs nothing.
    (``test_emulator.py`` shows the difference.)
    """
    from moto.sqs import models

    original = models.SQSBackend.receive_message
    one_at_a_time = threading.Lock()

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with one_at_a_time:
            queue = self.get_queue(queue_name)
            for message in list(queue.pending_messages):
                if message.visible:  # its visibility timeout passed: no longer in flight
                    queue.pending_messages.discard(message)
            return original(self, queue_name, *args, **kwargs)

    monkeypatch.setattr(models.SQSBackend, "receive_message", receive_message)


@pytest.fixture
async def sqs(fast_moto: None, moto_fifo_in_order: None) -> AsyncIterator[SqsProvider]:
    """The test's own provider on a freshly reset moto server (it outlives the bots)."""
    await sqs_server.reset()
    provider = SqsProvider(sqs_server.config(visibility_timeout=30.0, wait_time=0.0))
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def publisher(sqs: SqsProvider) -> AsyncIterator[qr.QueueClient]:
    """A client without faults, to publish and to read the DLQ."""
    client = qr.QueueClient(sqs, qr.QueueConfig(provider=sqs.config))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """The shared handling log of the test's bot processes."""
    return tmp_path / "handling.log"


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a proof's queue lives, as the proof sees it: a client to publish and
    read the DLQ, and the facts the bot processes need."""

    name: str
    publisher: qr.QueueClient
    create_queue: Callable[[str], Awaitable[object]]
    depth: Callable[[str], Awaitable[tuple[int, int]]]
    """(waiting, in flight) messages of a queue, without receiving."""
    environment: Callable[[float], dict[str, str]]
    """The bot processes' environment, given the lock (visibility) duration."""


@pytest.fixture(params=["sqs", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The proof's queue on SQS (moto server), or in a sqlite file: default settings
    (emulated sessions, like SQS FIFO), or (``sqlite-native``, for proofs that ask for
    it with an indirect parametrization) native sessions, where every bot process
    accepts sessions and the session locks in the file keep them apart."""
    name = str(request.param).replace("-", "_")
    chosen: Backend = request.getfixturevalue(f"{name}_backend")
    return chosen


@pytest.fixture
def sqs_backend(sqs: SqsProvider, publisher: qr.QueueClient) -> Backend:
    async def depth(queue: str) -> tuple[int, int]:
        return await queue_depth(sqs, queue)

    return Backend(
        "sqs",
        publisher,
        sqs.create_queue,
        depth,
        lambda lock: bot_environment(visibility_timeout=lock),
    )


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _sqlite_backend(tmp_path, "emulated"):
        yield backend


@pytest.fixture
async def sqlite_native_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    async for backend in _sqlite_backend(tmp_path, "native"):
        yield backend


async def _sqlite_backend(tmp_path: Path, session_mode: str) -> AsyncIterator[Backend]:
    path = tmp_path / "queues.db"
    config = qr.SqliteConfig(path=str(path), session_mode=session_mode)  # type: ignore[arg-type]
    provider = SqliteProvider(config)
    client = qr.QueueClient(provider, qr.QueueConfig(provider=provider.config))

    async def depth(queue: str) -> tuple[int, int]:
        info: QueueInfo = await provider.queue_info(qr.QueueName(queue))
        assert info.depth is not None
        assert info.in_flight is not None
        return info.depth, info.in_flight

    try:
        yield Backend(
            f"sqlite, {session_mode} sessions",
            client,
            provider.create_queue,
            depth,
            lambda lock: sqlite_bot_environment(
                path,
                lock_duration=lock,
                QUEUE_RUNTIME_SQLITE_SESSION_MODE=session_mode,
                # a killed bot's sessions come back as soon as its messages do
                QUEUE_RUNTIME_SQLITE_SESSION_LOCK_DURATION=str(lock),
            ),
        )
    finally:
        await client.aclose()
