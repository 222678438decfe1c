"""The command line on the sqlite provider, across separate processes, as a new user
runs it: no configuration at all, so every command falls back to the file
``./.queue-runtime/queues.db`` in its working directory. What one command sends,
the next one peeks, receives, dead-letters and requeues; a bot started with
``run`` handles what ``send`` put there, even while it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import queue_runtime as qr
from queue_runtime.cli import ExitCode
from queue_runtime.providers.sqlite import SqliteProvider

from .conftest import Cli, wait_until

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "jobs"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The machine's environment without any queue-runtime setting (a fresh clone)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("QUEUE_")}
    env.update(extra or {})
    return env


async def _run(cwd: Path, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """``python -m queue_runtime.cli ARGV`` in a process of its own, in ``cwd``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_runtime.cli",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd=cwd,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with no configuration in it."""
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
async def same_file(project: Path) -> AsyncIterator[qr.QueueClient]:
    """A client of this test process on the file the commands use by default."""
    provider = SqliteProvider(qr.SqliteConfig(path=str(project / ".queue-runtime" / "queues.db")))
    async with qr.QueueClient(provider) as client:
        yield client


async def test_commands_in_separate_processes_share_the_default_file(project: Path) -> None:
    began = time.monotonic()
    code, out, err = await _run(project, "send", QUEUE, "--body", "one", "-a", "event_type=push")
    sent_in = time.monotonic() - began
    assert code == ExitCode.OK, err
    assert (project / ".queue-runtime" / "queues.db").is_file()
    code, out, err = await _run(project, "send", QUEUE, "--json", stdin=b"two")
    assert code == ExitCode.OK, err
    second = orjson.loads(out)["message_id"]

    code, out, err = await _run(project, "peek", QUEUE, "-n", "2", "--json", "--timeout", "1")
    assert code == ExitCode.OK, err
    peeked = orjson.loads(out)
    began = time.monotonic()
    code, out, err = await _run(project, "receive", QUEUE, "-n", "2", "--json", "--timeout", "1")
    received_in = time.monotonic() - began
    assert code == ExitCode.OK, err
    received = orjson.loads(out)
    code, out, err = await _run(project, "receive", QUEUE, "--json", "--timeout", "0.2")

    assert [m["body"] for m in peeked] == ["one", "two"]
    assert [m["body"] for m in received] == ["one", "two"]
    assert received[0]["attributes"] == {"event_type": "push"}
    assert received[1]["message_id"] == second
    assert [m["delivery_count"] for m in received] == [2, 2]  # the peek was a delivery
    assert orjson.loads(out) == []  # receive completed them: gone for the next command
    print(f"cli round trip: send {sent_in:.2f} s, receive {received_in:.2f} s (one process each)")


async def test_the_dead_letter_commands_work_on_what_another_process_dead_lettered(
    project: Path, same_file: qr.QueueClient
) -> None:
    for body in ("a", "b", "c"):
        code, _, err = await _run(project, "send", QUEUE, "--body", body)
        assert code == ExitCode.OK, err
    for reason in ("ValueError", "KeyError", "ValueError"):
        message = await same_file.receive_message(QUEUE, timeout=1.0)
        assert message is not None
        await same_file.dead_letter_message(message.receipt, reason, f"{reason} in a handler")

    listed = await _run(project, "dlq", "list", QUEUE, "--json")
    stats = await _run(project, "dlq", "stats", QUEUE, "--json")
    requeued = await _run(project, "dlq", "requeue", QUEUE, "--reason", "KeyError", "--yes")
    refused = await _run(project, "dlq", "purge", QUEUE)  # no terminal and no --yes
    purged = await _run(project, "dlq", "purge", QUEUE, "--yes", "--json")

    assert listed[0] == stats[0] == requeued[0] == purged[0] == ExitCode.OK, listed[2] + stats[2]
    assert [(m["body"], m["dead_letter_reason"]) for m in orjson.loads(listed[1])] == [
        ("a", "ValueError"),
        ("b", "KeyError"),
        ("c", "ValueError"),
    ]
    assert orjson.loads(stats[1])["by_reason"] == {"ValueError": 2, "KeyError": 1}
    assert requeued[1] == f"requeued 1 to {QUEUE}\n"
    assert refused[0] == ExitCode.DECLINED
    assert orjson.loads(purged[1]) == {"queue": QUEUE, "purged": 2}
    back = await same_file.receive_message(QUEUE, timeout=1.0)
    assert back is not None
    assert (back.body, back.attributes["queue_runtime.requeue_count"]) == (b"b", "1")
    assert await same_file.peek_dead_letters(QUEUE) == []


async def test_health_reads_the_depths_from_the_file(
    project: Path, same_file: qr.QueueClient
) -> None:
    await same_file.send_messages(QUEUE, [qr.Message(b"1"), qr.Message(b"2")])

    code, out, err = await _run(project, "health", QUEUE, "--json")

    assert code == ExitCode.OK, out + err
    [provider] = [c for c in orjson.loads(out)["checks"] if c["name"] == "provider"]
    assert (provider["data"]["depth"], provider["data"]["dead_letter_depth"]) == (2, 0)


async def test_run_handles_what_send_put_there_and_what_is_sent_while_it_runs(
    project: Path, tmp_path: Path
) -> None:
    code, out, err = await _run(project, "send", QUEUE, "--body", "before", "--json")
    assert code == ExitCode.OK, err
    ids = [orjson.loads(out)["message_id"]]
    handled = tmp_path / "handled.txt"

    def handled_ids() -> list[str]:
        return handled.read_text().split() if handled.exists() else []

    env = _env({"QR_TEST_QUEUE": QUEUE, "QR_TEST_HANDLED_FILE": str(handled)})
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_runtime.cli",
        "run",
        "tests.cli.bots:make_bot",
        "--app-dir",
        str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=project,
    )
    try:
        await wait_until(lambda: handled_ids() == ids)
        code, out, err = await _run(project, "send", QUEUE, "--body", "during", "--json")
        assert code == ExitCode.OK, err
        ids.append(orjson.loads(out)["message_id"])
        await wait_until(lambda: handled_ids() == ids, timeout=10)
        bot.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, bot_err = await bot.communicate()
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()

    assert bot.returncode == ExitCode.OK, bot_err.decode()
    note = bot_err.decode()
    assert f"on queue {QUEUE!r} in {project / '.queue-runtime' / 'queues.db'}" in note
    assert "stopped gracefully: received 2, completed 2" in note
    code, out, _ = await _run(project, "receive", QUEUE, "--json", "--timeout", "0.2")
    assert orjson.loads(out) == []  # the bot completed both, in the file


async def test_the_help_names_the_default_file(cli: Cli) -> None:
    result = await cli("--help")

    assert "./.queue-runtime/queues.db" in result.out
    assert "--sqlite-path" in result.out


async def test_sqlite_path_moves_the_file_and_is_refused_for_other_providers(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "elsewhere.db"

    sent = await cli("send", QUEUE, "--body", "x", "--sqlite-path", str(path))
    refused = await cli("send", QUEUE, "--body", "x", "--provider", "memory", "--sqlite-path", "a")

    assert sent.code == ExitCode.OK, sent.err
    assert path.is_file()
    assert refused.code == ExitCode.USAGE
    assert "--sqlite-path applies to the sqlite provider" in refused.err
