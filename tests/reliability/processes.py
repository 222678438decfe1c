"""Bot processes for the proofs: started with ``python -m tests.reliability.bot_process``,
always killed and reaped when the test ends, whatever happened."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests import sqs_server

ROOT = Path(__file__).resolve().parents[2]


def _own_environment() -> dict[str, str]:
    """This process's environment without queue or AWS settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QUEUE_RUNTIME_", "QUEUE_PROVIDER", "AWS_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "QUEUE_RUNTIME_RETRY_INITIAL_DELAY": "0.05",
            "QUEUE_RUNTIME_RETRY_MAX_DELAY": "0.2",
        }
    )
    return env


def bot_environment(*, visibility_timeout: float, **settings: str) -> dict[str, str]:
    """This process's environment without queue or AWS settings, plus the moto server's.

    Credentials are dummies through the default AWS chain (environment variables);
    no AWS file or instance metadata of the machine is read. ``settings`` are
    extra ``QUEUE_RUNTIME_*`` variables.
    """
    env = _own_environment()
    env.update(
        {
            "QUEUE_PROVIDER": "aws",
            "QUEUE_RUNTIME_AWS_ENDPOINT_URL": sqs_server.endpoint(),
            "QUEUE_RUNTIME_AWS_REGION": sqs_server.REGION,
            "QUEUE_RUNTIME_AWS_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "QUEUE_RUNTIME_AWS_WAIT_TIME": "0",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    env.update(settings)
    return env


def sqlite_bot_environment(path: Path, *, lock_duration: float, **settings: str) -> dict[str, str]:
    """This process's environment without queue settings, plus the sqlite file's.

    The file is fully synchronous (the default): what the proofs show is what a
    deployed bot gets.
    """
    env = _own_environment()
    env.update(
        {
            "QUEUE_PROVIDER": "sqlite",
            "QUEUE_RUNTIME_SQLITE_PATH": str(path),
            "QUEUE_RUNTIME_SQLITE_LOCK_DURATION": str(lock_duration),
        }
    )
    env.update(settings)
    return env


class BotProcesses:
    """Starts bot processes and owns them: :meth:`aclose` kills and reaps every one."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self._started: list[asyncio.subprocess.Process] = []

    async def start(self, queue: str, *options: str) -> asyncio.subprocess.Process:
        """Start a bot on ``queue``; its output goes to ``bot-<n>.out`` in the directory."""
        output = self.directory / f"bot-{len(self._started) + 1}.out"
        with output.open("wb") as sink:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.reliability.bot_process",
                queue,
                *options,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        self._started.append(process)
        return process

    def output(self) -> str:
        """What every bot printed (for failure messages)."""
        parts = []
        for path in sorted(self.directory.glob("bot-*.out")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    async def stop(self, process: asyncio.subprocess.Process, timeout: float) -> float:
        """SIGTERM ``process`` and wait for its exit; returns the seconds it took."""
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            await process.wait()
        return time.monotonic() - began

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGKILL ``process`` and reap it."""
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def aclose(self) -> None:
        for process in self._started:
            await self.kill(process)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
