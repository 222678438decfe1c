"""Every command end to end on the in-memory provider, in-process."""

from __future__ import annotations

import asyncio

import pytest

import queue_runtime as qr
from queue_runtime.cli import ExitCode
from queue_runtime.providers.memory import InMemoryProvider

from . import bots
from .conftest import Cli, fake_stdin, wait_until


async def _dead_letter(
    client: qr.QueueClient, queue: str, body: bytes, reason: str, handler: str | None = None
) -> None:
    await client.send_message(queue, qr.Message(body))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    properties = {"queue_runtime.failure.handler": handler} if handler else None
    await client.dead_letter_message(message.receipt, reason, f"{reason} failed", properties)


# -- send ------------------------------------------------------------------------


async def test_send_delivers_body_attributes_and_session(cli: Cli, client: qr.QueueClient) -> None:
    result = await cli(
        "send",
        "jobs",
        "--body",
        "héllo",
        "-a",
        "event_type=push",
        "--attribute",
        "source=cli",
        "--session",
        "o/r/pull/1",
        "--correlation-id",
        "c-1",
        "--message-id",
        "m-1",
        "--content-type",
        "text/plain",
        client=client,
    )

    assert result.code == ExitCode.OK, result.err
    assert result.out == "sent m-1 to jobs\n"
    message = await client.receive_message("jobs", timeout=1.0)
    assert message is not None
    assert message.body == "héllo".encode()
    assert dict(message.attributes) == {"event_type": "push", "source": "cli"}
    assert (message.session_id, message.correlation_id) == ("o/r/pull/1", "c-1")
    assert (message.message_id, message.content_type) == ("m-1", "text/plain")


async def test_send_reads_a_binary_body_from_stdin(
    cli: Cli, client: qr.QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_stdin(monkeypatch, b"\x00\xffbinary\n")

    result = await cli("--json", "send", "jobs", client=client)

    assert result.code == ExitCode.OK, result.err
    sent = result.json()
    message = await client.receive_message("jobs", timeout=1.0)
    assert message is not None
    assert message.body == b"\x00\xffbinary\n"
    assert sent == {"queue": "jobs", "message_id": message.message_id}


async def test_send_without_a_body_on_a_terminal_says_how_to_give_one(
    cli: Cli, client: qr.QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_stdin(monkeypatch, tty=True)

    result = await cli("send", "jobs", client=client)

    assert result.code == ExitCode.USAGE
    assert "--body" in result.err
    assert await client.receive_message("jobs", timeout=0.05) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send", "bad name!", "--body", "x"], "queue"),
        (["send", "jobs", "--body", "x", "--session", "\x01"], "session_id"),
        (["send", "jobs", "--body", "x", "-a", "no-equals-sign"], "NAME=VALUE"),
        (["peek", "jobs", "-n", "0"], "positive integer"),
        (["receive", "jobs", "--timeout", "soon"], "seconds"),
    ],
)
async def test_bad_arguments_exit_2_naming_the_problem(
    cli: Cli, client: qr.QueueClient, argv: list[str], expected: str
) -> None:
    result = await cli(*argv, client=client)

    assert result.code == ExitCode.USAGE
    assert expected in result.err
    assert "Traceback" not in result.err


async def test_a_message_too_large_fails_with_exit_1_and_nothing_sent(
    cli: Cli, client: qr.QueueClient
) -> None:
    result = await cli("send", "jobs", "--body", "x" * 300_000, client=client)

    assert result.code == ExitCode.FAILED
    assert "MessageTooLargeError" in result.err
    assert await client.receive_message("jobs", timeout=0.05) is None


# -- peek and receive ----------------------------------------------------------------


async def test_receive_prints_the_messages_then_removes_them(
    cli: Cli, client: qr.QueueClient
) -> None:
    await client.send_messages(
        "jobs", [qr.Message(b'{"n":1}', attributes={"k": "v"}), qr.Message(b"\xff")]
    )

    result = await cli("--json", "receive", "jobs", "-n", "5", "--timeout", "0.5", client=client)

    assert result.code == ExitCode.OK, result.err
    records = result.json()
    assert [r.get("body") for r in records] == ['{"n":1}', None]
    assert records[1]["body_base64"] == "/w=="
    assert records[0]["attributes"] == {"k": "v"}
    assert records[0]["delivery_count"] == 1
    assert await client.receive_message("jobs", timeout=0.05) is None


async def test_peek_gives_the_messages_back_at_once(cli: Cli, client: qr.QueueClient) -> None:
    await client.send_message("jobs", qr.Message(b"look", message_id="m-1"))

    result = await cli("peek", "jobs", "--timeout", "0.5", client=client)

    assert result.code == ExitCode.OK, result.err
    assert "message m-1" in result.out
    assert "body (4 bytes): look" in result.out
    again = await client.receive_message("jobs", timeout=0.05)
    assert again is not None
    assert again.delivery_count == 2  # a peek counts as a delivery, as documented


async def test_receive_on_an_empty_queue_exits_0_with_a_note(
    cli: Cli, client: qr.QueueClient
) -> None:
    result = await cli("receive", "jobs", "--timeout", "0.05", client=client)

    assert result.code == ExitCode.OK
    assert result.out == ""
    assert "no message in jobs" in result.err


async def test_receive_takes_the_next_session_on_a_native_session_queue(cli: Cli) -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode="native"))
    async with qr.QueueClient(provider) as client:
        await client.send_messages(
            "prs", [qr.Message(b"1", session_id="o/r/pull/1"), qr.Message(b"2", session_id="o/r")]
        )

        first = await cli("--json", "receive", "prs", "-n", "10", "--timeout", "0.2", client=client)
        named = await cli("--json", "receive", "prs", "--session", "o/r", client=client)

    assert first.code == named.code == ExitCode.OK
    first_records = first.json()
    named_records = named.json()
    assert [(r["session_id"], r["body"]) for r in first_records] == [("o/r/pull/1", "1")]
    assert [(r["session_id"], r["body"]) for r in named_records] == [("o/r", "2")]


# -- dead letters ------------------------------------------------------------------------


async def test_dlq_list_shows_reasons_and_handlers(cli: Cli, client: qr.QueueClient) -> None:
    await _dead_letter(client, "jobs", b"a", "ValueError", handler="Pushes")

    human = await cli("dlq", "list", "jobs", "--body", client=client)
    machine = await cli("dlq", "list", "jobs", "--json", client=client)

    assert human.code == machine.code == ExitCode.OK
    assert "dead_letter_reason: ValueError" in human.out
    assert "handler: Pushes" in human.out
    assert "body (1 bytes): a" in human.out
    [record] = machine.json()
    assert record["dead_letter_reason"] == "ValueError"
    assert record["dead_letter_description"] == "ValueError failed"


async def test_dlq_stats_counts_by_reason_and_handler(cli: Cli, client: qr.QueueClient) -> None:
    await _dead_letter(client, "jobs", b"a", "ValueError", handler="Pushes")
    await _dead_letter(client, "jobs", b"b", "ValueError", handler="Pushes")
    await _dead_letter(client, "jobs", b"c", "NoHandler")

    result = await cli("--json", "dlq", "stats", "jobs", client=client)
    human = await cli("dlq", "stats", "jobs", client=client)

    assert result.code == ExitCode.OK, result.err
    assert result.json() == {
        "queue": "jobs",
        "counted": 3,
        "dead_letter_depth": 3,
        "by_reason": {"ValueError": 2, "NoHandler": 1},
        "by_handler": {"Pushes": 2, "(none)": 1},
    }
    assert "dead letters of jobs: 3 counted (the provider reports 3)" in human.out
    assert "  ValueError  2" in human.out


async def test_dlq_requeue_moves_only_the_selected_dead_letters_back(
    cli: Cli, client: qr.QueueClient
) -> None:
    await _dead_letter(client, "jobs", b"value", "ValueError", handler="Pushes")
    await _dead_letter(client, "jobs", b"key", "KeyError", handler="Pushes")

    result = await cli(
        "--json", "dlq", "requeue", "jobs", "--reason", "KeyError", "--yes", client=client
    )

    assert result.code == ExitCode.OK, result.err
    assert result.json() == {"queue": "jobs", "requeued": 1}
    back = await client.receive_message("jobs", timeout=0.5)
    assert back is not None
    assert back.body == b"key"
    assert [m.body for m in await client.peek_dead_letters("jobs")] == [b"value"]


async def test_dlq_purge_without_yes_and_without_a_terminal_refuses(
    cli: Cli, client: qr.QueueClient
) -> None:
    await _dead_letter(client, "jobs", b"a", "ValueError")

    result = await cli("dlq", "purge", "jobs", client=client)

    assert result.code == ExitCode.DECLINED
    assert "--yes" in result.err
    assert len(await client.peek_dead_letters("jobs")) == 1


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 0), ("n\n", 4, 1), ("\n", 4, 1)])
async def test_dlq_purge_on_a_terminal_asks_and_obeys_the_answer(
    cli: Cli,
    client: qr.QueueClient,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    left: int,
) -> None:
    await _dead_letter(client, "jobs", b"a", "ValueError")
    fake_stdin(monkeypatch, answer.encode(), tty=True)

    result = await cli("dlq", "purge", "jobs", client=client)

    assert result.code == code
    assert "Purge ALL dead letters of 'jobs'? This cannot be undone. [y/N]" in result.err
    assert len(await client.peek_dead_letters("jobs")) == left


async def test_dlq_purge_by_handler_keeps_the_others(cli: Cli, client: qr.QueueClient) -> None:
    await _dead_letter(client, "jobs", b"pushes", "ValueError", handler="Pushes")
    await _dead_letter(client, "jobs", b"none", "NoHandler")

    result = await cli("dlq", "purge", "jobs", "--handler", "(none)", "-y", client=client)

    assert result.code == ExitCode.OK, result.err
    assert result.out == "purged 1 dead letters of jobs\n"
    assert [m.body for m in await client.peek_dead_letters("jobs")] == [b"pushes"]


async def test_dlq_requeue_shows_a_running_count_on_a_terminal(
    cli: Cli, client: qr.QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for body in (b"1", b"2", b"3"):
        await _dead_letter(client, "jobs", body, "ValueError")
    monkeypatch.setattr("queue_runtime.cli.output._isatty", lambda stream: True)

    result = await cli("dlq", "requeue", "jobs", "--yes", client=client)

    assert result.code == ExitCode.OK, result.err
    assert "\rrequeued 1\rrequeued 2\rrequeued 3\n" in result.err
    assert result.out == "requeued 3 to jobs\n"


# -- health -----------------------------------------------------------------------------


async def test_health_of_a_reachable_queue_is_healthy_and_exits_0(
    cli: Cli, client: qr.QueueClient
) -> None:
    result = await cli("--json", "health", "jobs", client=client)

    assert result.code == ExitCode.OK
    report = result.json()
    assert report["status"] == "healthy"
    assert [c["name"] for c in report["checks"]] == ["provider", "dead_letters"]


async def test_health_is_degraded_when_the_provider_fails_transiently(
    cli: Cli, client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    # the next provider call is the health probe
    provider.faults.fail_next("*", error=lambda operation: qr.ConnectionFailedError("network down"))

    result = await cli("health", "jobs", client=client)

    assert result.code == ExitCode.DEGRADED
    assert result.out.startswith("degraded\n")
    assert "network down" in result.out


async def test_health_is_degraded_when_the_dlq_is_deeper_than_allowed(
    cli: Cli, client: qr.QueueClient
) -> None:
    await _dead_letter(client, "jobs", b"a", "ValueError")
    await _dead_letter(client, "jobs", b"b", "ValueError")

    deep = await cli("health", "jobs", "--max-dead-letters", "1", client=client)
    fine = await cli("health", "jobs", "--max-dead-letters", "2", client=client)

    assert (deep.code, fine.code) == (ExitCode.DEGRADED, ExitCode.OK)
    assert "2 dead letters" in deep.out


async def test_health_of_a_missing_queue_is_unhealthy_and_exits_1(cli: Cli) -> None:
    strict = InMemoryProvider(qr.InMemoryConfig(create_queues=False))
    async with qr.QueueClient(strict) as client:
        result = await cli("health", "jobs", client=client)

    assert result.code == ExitCode.FAILED
    assert "unhealthy" in result.out
    assert "does not exist" in result.out


# -- run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["tests.cli.bots:make_bot", "tests.cli.bots:make_bot_later"])
async def test_run_starts_the_bot_from_a_factory_and_exits_0_when_it_stops(
    cli: Cli, client: qr.QueueClient, target: str
) -> None:
    bots.STARTED.clear()
    bots.HANDLED.clear()
    await client.send_message("cli-run", qr.Message(b"job", message_id="m-run"))

    running = asyncio.ensure_future(cli("run", target, client=client))
    try:
        await wait_until(lambda: bool(bots.HANDLED))
    finally:
        for bot in bots.STARTED:
            await bot.stop()
    result = await running

    assert result.code == ExitCode.OK, result.err
    assert bots.HANDLED == ["m-run"]
    assert "running" in result.err
    assert "stopped gracefully: received 1, completed 1" in result.err
    assert await client.receive_message("cli-run", timeout=0.05) is None


async def test_run_exits_1_when_the_bot_stopped_itself_on_a_crash_loop(
    cli: Cli, client: qr.QueueClient
) -> None:
    await client.send_message("cli-crash", qr.Message(b"job", message_id="m-crash"))

    async with asyncio.timeout(20):
        result = await cli("run", "tests.cli.bots:make_crash_looping_bot", client=client)

    assert result.code == ExitCode.FAILED
    assert "the bot stopped itself: handlers are crash-looping" in result.err
    assert await client.receive_message("cli-crash", timeout=1.0) is not None  # given back


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.cli.bots", "expected MODULE:BOT"),
        ("tests.cli.no_such_module:bot", "cannot import 'tests.cli.no_such_module'"),
        ("tests.cli.bots:missing", "has no attribute 'missing'"),
        ("tests.cli.bots:NOT_A_BOT", "expected a Bot"),
        ("tests.cli.bots:make_nothing", "returned str, not a Bot"),
    ],
)
async def test_run_with_a_target_that_is_no_bot_exits_2_saying_why(
    cli: Cli, client: qr.QueueClient, target: str, expected: str
) -> None:
    result = await cli("run", target, client=client)

    assert result.code == ExitCode.USAGE
    assert expected in result.err


async def test_demo_runs_and_refuses_provider_options(cli: Cli) -> None:
    ran = await cli("demo", "--sessions", "20", "--events-per-session", "3")
    refused = await cli("demo", "--provider", "aws")

    assert ran.code == ExitCode.OK, ran.err
    assert "per-session order verified" in ran.out
    assert refused.code == ExitCode.USAGE
    assert "in-memory" in refused.err
