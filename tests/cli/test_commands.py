"""The command line itself: help, options, configuration, exit codes, secrets."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from queue_runtime.cli import ExitCode, build_parser, main

from .conftest import Cli

PLANTED = "PLANTED-s3cr3t-do-not-print"

COMMANDS = [
    [],
    ["run"],
    ["demo"],
    ["send"],
    ["peek"],
    ["receive"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "stats"],
    ["dlq", "requeue"],
    ["dlq", "purge"],
    ["health"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "queue-runtime")
async def test_every_command_has_help(cli: Cli, command: list[str]) -> None:
    result = await cli(*command, "--help")

    assert result.code == ExitCode.OK
    assert result.out.startswith(f"usage: queue-runtime {' '.join(command)}".rstrip())
    assert "--config" in result.out


async def test_the_top_level_help_lists_exit_codes_and_warns_about_memory(cli: Cli) -> None:
    result = await cli("--help")

    assert "exit codes:" in result.out
    assert "130  interrupted" in result.out
    assert "memory of one process" in result.out


def test_every_command_of_the_parser_is_in_the_help_test() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    assert {c[0] for c in COMMANDS if c} == set(commands.choices)


async def test_options_work_before_and_after_the_command(cli: Cli) -> None:
    before = await cli("--provider", "memory", "--json", "send", "q", "--body", "x")
    after = await cli("send", "q", "--body", "x", "--json", "--provider", "memory")

    assert before.code == after.code == ExitCode.OK
    assert before.out.startswith('{"queue":"q"')
    assert after.out.startswith('{"queue":"q"')


async def test_a_memory_client_built_from_config_says_it_is_process_local(cli: Cli) -> None:
    result = await cli("send", "q", "--body", "x", "--provider", "memory")

    assert result.code == ExitCode.OK
    assert "this process only" in result.err


async def test_an_unknown_command_is_a_usage_error(cli: Cli) -> None:
    result = await cli("launch")

    assert result.code == ExitCode.USAGE
    assert "invalid choice: 'launch'" in result.err


async def test_a_missing_config_file_is_a_configuration_error(cli: Cli, tmp_path: Path) -> None:
    result = await cli("--config", str(tmp_path / "nope.toml"), "health", "q")

    assert result.code == ExitCode.CONFIG
    assert "cannot read config file" in result.err


async def test_the_config_file_and_environment_choose_the_provider(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "queue.toml"
    config.write_text('provider = "memory"\n[memory]\nmax_message_size = 10\n')
    monkeypatch.setenv("QUEUE_RUNTIME_CONFIG", str(config))

    too_big = await cli("send", "q", "--body", "x" * 11)
    small = await cli("send", "q", "--body", "x" * 10)

    assert too_big.code == ExitCode.FAILED
    assert "the limit is 10 bytes" in too_big.err
    assert small.code == ExitCode.OK


async def test_aws_options_with_another_provider_are_refused(cli: Cli) -> None:
    result = await cli("send", "q", "--body", "x", "--endpoint-url", "http://127.0.0.1:1")

    assert result.code == ExitCode.USAGE
    assert "apply to the aws provider" in result.err


async def test_azure_without_credentials_names_the_missing_setting(cli: Cli) -> None:
    result = await cli("--provider", "azure", "health", "q")

    assert result.code == ExitCode.CONFIG
    assert "azure.connection_string" in result.err


async def test_secrets_never_appear_in_errors(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY", PLANTED)  # no access key id: invalid
    monkeypatch.setenv("QUEUE_RUNTIME_AZURE_CONNECTION_STRING", f"Endpoint=nope;Key={PLANTED}")

    aws = await cli("--provider", "aws", "--region", "us-east-1", "health", "q")
    azure = await cli("--provider", "azure", "health", "q")
    url = await cli(
        "--provider", "aws", "--endpoint-url", f"http://user:{PLANTED}@/", "health", "q"
    )

    for result in (aws, azure, url):
        assert result.code == ExitCode.CONFIG
        assert PLANTED not in result.out + result.err


def test_main_runs_a_command_in_its_own_event_loop(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "q", "--body", "x", "--message-id", "m-9", "--provider", "memory"])

    assert code == ExitCode.OK
    assert capsys.readouterr().out == "sent m-9 to q\n"


def test_the_console_script_is_queue_runtime() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    [entry] = [e for e in scripts if e.name == "queue-runtime"]

    assert entry.value == "queue_runtime.cli:main"
    assert entry.load() is main
