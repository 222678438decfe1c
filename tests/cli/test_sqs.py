"""The command line against SQS (a moto server on 127.0.0.1), in-process and across processes.

In-process runs build the client from the configuration exactly as the
console script does (``--provider aws --endpoint-url ... --region ...`` plus
credentials in the environment). The cross-process tests run
``python -m queue_runtime.cli`` in subprocesses: what one command sends,
another receives, and ``run`` stops gracefully on SIGTERM and SIGINT without
losing a message.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import queue_runtime as qr
from queue_runtime.cli import ExitCode
from queue_runtime.providers.aws import SqsProvider
from tests import sqs_server

from .conftest import Cli, wait_until

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "cli-jobs"


def _aws_options() -> list[str]:
    return ["--provider", "aws", "--endpoint-url", sqs_server.endpoint(), "--region", "us-east-1"]


@pytest.fixture
async def sqs(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[qr.QueueClient]:
    """A fresh moto server with ``cli-jobs`` (and its DLQ); dummy credentials in the env."""
    monkeypatch.setenv("QUEUE_RUNTIME_AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY", "testing")
    await sqs_server.reset()
    provider = SqsProvider(sqs_server.config())
    await provider.create_queue(QUEUE)
    async with qr.QueueClient(provider, qr.QueueConfig(provider=provider.config)) as client:
        yield client


async def _cli_process(
    *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m queue_runtime.cli ARGV`` in a subprocess (stdin a pipe, never a terminal)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_runtime.cli",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(env),
        cwd=ROOT,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin or b"")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("QUEUE_")}
    env["QUEUE_RUNTIME_AWS_ACCESS_KEY_ID"] = "testing"
    env["QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY"] = "testing"
    env.update(extra or {})
    return env


async def _drain(client: qr.QueueClient, queue: str) -> list[qr.ReceivedMessage]:
    taken: list[qr.ReceivedMessage] = []
    while batch := await client.receive_messages(queue, 10, timeout=1.0):
        for message in batch:
            await client.complete_message(message.receipt)
        taken.extend(batch)
    return taken


# -- in-process, configured like the console script ---------------------------------------


async def test_send_and_receive_through_sqs(cli: Cli, sqs: qr.QueueClient) -> None:
    sent = await cli(
        "send", QUEUE, "--body", '{"n":1}', "-a", "event_type=push", "--json", *_aws_options()
    )
    received = await cli("receive", QUEUE, "--json", "--timeout", "5", *_aws_options())

    assert sent.code == received.code == ExitCode.OK, sent.err + received.err
    [record] = received.json()
    assert record["message_id"] == sent.json()["message_id"]
    assert (record["body"], record["attributes"]) == ('{"n":1}', {"event_type": "push"})
    assert await sqs.receive_message(QUEUE, timeout=0.5) is None  # receive completed it


async def test_peek_through_sqs_gives_the_message_back_at_once(
    cli: Cli, sqs: qr.QueueClient
) -> None:
    await sqs.send_message(QUEUE, qr.Message(b"look", message_id="m-1"))

    result = await cli("peek", QUEUE, "--timeout", "5", "--json", *_aws_options())

    assert result.code == ExitCode.OK, result.err
    [record] = result.json()
    assert (record["message_id"], record["body"]) == ("m-1", "look")
    again = await sqs.receive_message(QUEUE, timeout=1.0)  # visible again: no lock to wait out
    assert again is not None
    assert again.delivery_count == 2  # the peek was a receive
    await sqs.complete_message(again.receipt)


async def test_dlq_list_through_sqs_shows_reasons_and_keeps_the_dead_letters(
    cli: Cli, sqs: qr.QueueClient
) -> None:
    await sqs.send_message(QUEUE, qr.Message(b"bad", message_id="m-2"))
    message = await sqs.receive_message(QUEUE, timeout=5.0)
    assert message is not None
    await sqs.dead_letter_message(message.receipt, "ValueError", "cannot parse")

    listed = await cli("dlq", "list", QUEUE, "--json", *_aws_options())

    assert listed.code == ExitCode.OK, listed.err
    [record] = listed.json()
    assert (record["message_id"], record["dead_letter_reason"]) == ("m-2", "ValueError")
    assert [m.message_id for m in await sqs.peek_dead_letters(QUEUE)] == ["m-2"]


async def test_dlq_stats_requeue_and_purge_through_sqs(cli: Cli, sqs: qr.QueueClient) -> None:
    await sqs.send_messages(QUEUE, [qr.Message(b"a"), qr.Message(b"b")])
    for reason in ("ValueError", "KeyError"):
        message = await sqs.receive_message(QUEUE, timeout=5.0)
        assert message is not None
        await sqs.dead_letter_message(message.receipt, reason)

    stats = await cli("dlq", "stats", QUEUE, "--json", *_aws_options())
    requeued = await cli("dlq", "requeue", QUEUE, "--reason", "KeyError", "-y", *_aws_options())
    purged = await cli("dlq", "purge", QUEUE, "--yes", "--json", *_aws_options())

    assert stats.code == requeued.code == purged.code == ExitCode.OK, stats.err + purged.err
    assert stats.json()["by_reason"] == {"ValueError": 1, "KeyError": 1}
    assert stats.json()["dead_letter_depth"] == 2
    assert requeued.out == f"requeued 1 to {QUEUE}\n"
    assert purged.json() == {"queue": QUEUE, "purged": 1}
    assert [m.dead_letter_reason for m in await sqs.peek_dead_letters(QUEUE)] == []
    [back] = await _drain(sqs, QUEUE)
    assert back.attributes.get("queue_runtime.requeue_count") == "1"


async def test_health_through_sqs_reports_depths_and_missing_queues(
    cli: Cli, sqs: qr.QueueClient
) -> None:
    await sqs.send_message(QUEUE, qr.Message(b"waiting"))

    healthy = await cli("health", QUEUE, "--json", *_aws_options())
    missing = await cli("health", "no-such-queue", *_aws_options())

    assert healthy.code == ExitCode.OK, healthy.err
    provider = healthy.json()["checks"][0]
    assert provider["data"]["depth"] == 1
    assert provider["data"]["dead_letter_depth"] == 0
    assert missing.code == ExitCode.FAILED
    assert "no-such-queue" in missing.out


async def test_an_unreachable_endpoint_fails_with_one_line_and_exit_1(cli: Cli) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    result = await cli(
        "send", QUEUE, "--body", "x", "--provider", "aws", "--endpoint-url", dead, "--region", "x"
    )

    assert result.code == ExitCode.FAILED
    assert result.err.startswith("queue-runtime: error: ")
    assert "Traceback" not in result.err


# -- across processes ------------------------------------------------------------------------


async def test_what_one_process_sends_another_receives(sqs: qr.QueueClient) -> None:
    code, out, err = await _cli_process(
        "send", QUEUE, "--session-less", *_aws_options(), stdin=b"from stdin"
    )
    assert code == ExitCode.USAGE  # an unknown option is refused before anything is sent
    assert "unrecognized arguments: --session-less" in err

    code, out, err = await _cli_process(
        "send", QUEUE, "--json", *_aws_options(), stdin=b"\xfffrom stdin"
    )
    assert code == ExitCode.OK, err
    message_id = orjson.loads(out)["message_id"]

    code, out, err = await _cli_process("receive", QUEUE, "--json", *_aws_options())
    assert code == ExitCode.OK, err
    [record] = orjson.loads(out)
    assert record["message_id"] == message_id
    assert record["body_base64"] == "/2Zyb20gc3RkaW4="  # b"\xfffrom stdin"


async def test_purge_in_a_pipeline_without_yes_refuses_and_keeps_the_dead_letters(
    sqs: qr.QueueClient,
) -> None:
    await sqs.send_message(QUEUE, qr.Message(b"poison"))
    message = await sqs.receive_message(QUEUE, timeout=5.0)
    assert message is not None
    await sqs.dead_letter_message(message.receipt, "ValueError")

    code, _, err = await _cli_process("dlq", "purge", QUEUE, *_aws_options())

    assert code == ExitCode.DECLINED
    assert "refusing to purge ALL dead letters of 'cli-jobs' without --yes" in err
    assert len(await sqs.peek_dead_letters(QUEUE)) == 1


async def test_run_stops_gracefully_on_sigterm_and_loses_no_message(
    sqs: qr.QueueClient, tmp_path: Path
) -> None:
    ids = [f"m-{i:03d}" for i in range(150)]
    await sqs.send_messages(QUEUE, [qr.Message(b"job", message_id=i) for i in ids])
    handled_file = tmp_path / "handled.txt"
    env = _child_env(
        {
            # short, so that a message the stop failed to give back shows up soon
            "QUEUE_RUNTIME_AWS_VISIBILITY_TIMEOUT": "2",
            "QR_TEST_QUEUE": QUEUE,
            "QR_TEST_HANDLER_DELAY": "0.2",
            "QR_TEST_HANDLED_FILE": str(handled_file),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_runtime.cli",
        "run",
        "tests.cli.bots:make_bot",
        *_aws_options(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        await wait_until(lambda: handled_file.exists() and bool(handled_file.read_text().strip()))
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == ExitCode.OK, err.decode()
    assert "stopped gracefully" in err.decode()
    handled = set(handled_file.read_text().split())
    remaining: set[str] = set()
    try:
        async with asyncio.timeout(30):  # a few visibility timeouts at most
            while handled | remaining != set(ids):
                remaining |= {m.message_id for m in await _drain(sqs, QUEUE)}
    except TimeoutError:
        pytest.fail(f"lost messages: {sorted(set(ids) - handled - remaining)}")
    assert remaining, "the bot was stopped mid-stream, so some messages must be left"


async def test_run_stops_gracefully_on_sigint_finishing_handlers_and_giving_back_the_rest(
    sqs: qr.QueueClient, tmp_path: Path
) -> None:
    ids = [f"m-{i:03d}" for i in range(120)]
    await sqs.send_messages(QUEUE, [qr.Message(b"job", message_id=i) for i in ids])
    started_file, handled_file = tmp_path / "started.txt", tmp_path / "handled.txt"
    env = _child_env(
        {
            # long: a message visible right after the exit was given back, not expired
            "QUEUE_RUNTIME_AWS_VISIBILITY_TIMEOUT": "60",
            "QR_TEST_QUEUE": QUEUE,
            "QR_TEST_HANDLER_DELAY": "1.0",
            "QR_TEST_CONCURRENCY": "4",  # four at a time: the rest of each batch waits
            "QR_TEST_STARTED_FILE": str(started_file),
            "QR_TEST_HANDLED_FILE": str(handled_file),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_runtime.cli",
        "run",
        "tests.cli.bots:make_bot",
        *_aws_options(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        await wait_until(lambda: started_file.exists() and bool(started_file.read_text().strip()))
        process.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(60):
            _, raw_err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    visible, in_flight = await queue_depth(sqs, QUEUE)  # at once: long before a lock expires

    err = raw_err.decode()
    assert process.returncode == ExitCode.OK, err  # docs/operations.md: exits 0
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    started = set(started_file.read_text().split())
    handled = set(handled_file.read_text().split())
    assert started
    assert started == handled  # every handler running at the signal finished
    counts = re.search(r"stopped gracefully: received (\d+), completed (\d+)", err)
    assert counts is not None, err
    received, completed = int(counts[1]), int(counts[2])
    assert completed == len(handled)
    assert received > completed, "nothing was prefetched: the proof proves nothing"
    assert (visible, in_flight) == (len(ids) - len(handled), 0)  # the prefetched are back
    left = {m.message_id for m in await _drain(sqs, QUEUE)}
    assert left == set(ids) - handled  # none handled twice, none lost


async def queue_depth(client: qr.QueueClient, queue: str) -> tuple[int, int]:
    """(visible, in flight) messages of ``queue`` as SQS counts them, without receiving."""
    provider = client.provider
    assert isinstance(provider, SqsProvider)
    sqs = await provider.client()
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])
