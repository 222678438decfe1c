"""Fixtures for the command-line tests: a clean environment and a way to run commands.

Commands run in-process through :func:`queue_runtime.cli.execute` (the memory
provider lives in one process, so a test hands the CLI the client it holds);
cross-process behaviour is tested with subprocesses against the moto server.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import queue_runtime as qr
from queue_runtime.cli import execute
from queue_runtime.providers.memory import InMemoryProvider


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider or config from the machine running the tests; and a command that
    falls back to the sqlite provider keeps its file in the test's directory, not in
    the working directory."""
    for name in list(os.environ):
        if name.startswith("QUEUE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QUEUE_RUNTIME_SQLITE_PATH", str(tmp_path / "cli-default" / "queues.db"))


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``await cli("send", "q", ..., client=...)`` → exit code, stdout, stderr."""

    async def run(*argv: str, client: qr.QueueClient | None = None) -> Result:
        capsys.readouterr()
        code = await execute(list(argv), client=client)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def provider() -> InMemoryProvider:
    return InMemoryProvider(qr.InMemoryConfig())


@pytest.fixture
async def client(provider: InMemoryProvider) -> AsyncIterator[qr.QueueClient]:
    chosen = qr.QueueClient(provider)
    try:
        yield chosen
    finally:
        await chosen.aclose()


class FakeStdin(io.TextIOWrapper):
    """stdin with given bytes, claiming (or not) to be a terminal."""

    def __init__(self, data: bytes, *, tty: bool = False) -> None:
        super().__init__(io.BytesIO(data))
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes = b"", *, tty: bool = False) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(data, tty=tty))
