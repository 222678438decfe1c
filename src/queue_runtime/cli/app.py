"""The ``queue-runtime`` command: its parser, the async entry point and ``main``.

Example:
    >>> parser = build_parser()
    >>> args = parser.parse_args(["dlq", "purge", "orders", "--reason", "ValueError", "--json"])
    >>> args.action, args.queue, args.reason, args.yes, args.json
    ('purge', 'orders', 'ValueError', False, True)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from queue_runtime.client import QueueClient
from queue_runtime.config import DEFAULT_SQLITE_PATH
from queue_runtime.errors import ConfigurationError, QueueError, ValidationError

from . import bots, dead_letters, health, messages
from .context import Context
from .output import PROG, CliError, ExitCode, Output

__all__ = ["build_parser", "execute", "main"]

logger = logging.getLogger("queue_runtime.cli")

DESCRIPTION = f"""\
Run bots and operate queues in a local SQLite file, on AWS SQS, Azure Service
Bus or the in-memory provider.

Configuration comes from a TOML file (--config, or $QUEUE_RUNTIME_CONFIG), the
environment ($QUEUE_PROVIDER, $QUEUE_RUNTIME_<TABLE>_<FIELD>) and the provider
options below, each overriding the one before. Secrets (connection strings,
keys) belong in the environment or the file, never on the command line.

With no provider configured, commands use the sqlite provider on
./{DEFAULT_SQLITE_PATH} (relative to the working directory;
--sqlite-path or $QUEUE_RUNTIME_SQLITE_PATH moves it): every command, and a bot
started with `run`, sees what the others sent, and the queues survive restarts.
The memory provider keeps its queues in the memory of one process: what one
queue-runtime command sends, another command cannot see."""

EPILOG = """\
exit codes:
  0    success (health: Healthy)
  1    the operation failed (provider error, missing queue, timeout; health: Unhealthy)
  2    usage error (bad arguments, invalid queue name, MODULE:BOT not loadable)
  3    configuration error (file, environment or options; a missing extra)
  4    a destructive operation was not confirmed (no terminal and no --yes)
  5    health: Degraded
  130  interrupted (Ctrl-C)

Every command has --help."""

LOG_LEVELS = ("debug", "info", "warning", "error")
SDK_LOGGERS = ("azure", "aiobotocore", "botocore", "urllib3")


def _global_options(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    """The options every command takes, before or after the command name.

    On the command parsers they default to "not given" (SUPPRESS), so a value
    given before the command name is not overwritten by the default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    options = parser.add_argument_group("configuration and output")
    options.add_argument(
        "--config", metavar="FILE", default=default(None), help="TOML configuration file"
    )
    options.add_argument(
        "--provider",
        choices=["sqlite", "memory", "aws", "azure"],
        default=default(None),
        help="the provider (overrides $QUEUE_PROVIDER and the file; default: sqlite)",
    )
    options.add_argument(
        "--sqlite-path",
        metavar="FILE",
        default=default(None),
        help=f"sqlite: the database file (default: ./{DEFAULT_SQLITE_PATH})",
    )
    options.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=default(None),
        help="aws: a local SQS server (moto, LocalStack), e.g. http://127.0.0.1:4566",
    )
    options.add_argument("--region", default=default(None), help="aws: the region")
    options.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print results as one JSON document",
    )
    options.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default(None),
        help="log to stderr from this level (default: warning; run: info)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``queue-runtime`` and all its commands."""
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, nested=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, nested=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bots.add_commands(commands, common)
    messages.add_commands(commands, common)
    dead_letters.add_commands(commands, common)
    health.add_commands(commands, common)
    return parser


async def execute(argv: Sequence[str] | None = None, *, client: QueueClient | None = None) -> int:
    """Run one ``queue-runtime`` command inside a running event loop; returns the exit code.

    ``client``, if given, is used instead of one built from the configuration
    (and the caller keeps owning it): that is how tests and embedding code
    run commands against an in-memory provider they hold.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed usage or help already
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    output = Output(json=args.json)
    _configure_logging(args.log_level or getattr(args, "default_log_level", "warning"))
    context = Context(args, output, client)
    try:
        return int(await args.func(args, context))
    except CliError as exc:
        output.error(exc.message)
        return exc.code
    except ConfigurationError as exc:
        output.error(f"configuration: {exc}")
        return ExitCode.CONFIG
    except ValidationError as exc:
        output.error(str(exc))
        return ExitCode.USAGE
    except QueueError as exc:
        output.error(f"{type(exc).__name__}: {exc}")
        return ExitCode.FAILED
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        _silence_stdout()
        return ExitCode.FAILED
    except Exception as exc:
        # only the type on the console: an unexpected error's text is unvetted
        logger.debug("unexpected error", exc_info=True)
        output.error(f"unexpected {type(exc).__name__} (--log-level debug shows the traceback)")
        return ExitCode.FAILED
    finally:
        try:
            await context.aclose()
        except QueueError as exc:
            output.note(f"{PROG}: closing the client failed: {exc}")


def _configure_logging(level: str) -> None:
    """Log to stderr from ``level`` on, unless logging was configured already.

    The SDKs' own chatter (connection states, credential lookups) stays at
    warnings unless ``debug`` is asked for.
    """
    root = logging.getLogger()
    if root.handlers:  # the embedding application (or a test runner) decides
        return
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level != "debug":
        for name in SDK_LOGGERS:
            logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one command and return its exit code."""
    try:
        return asyncio.run(execute(argv))
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return ExitCode.INTERRUPTED
