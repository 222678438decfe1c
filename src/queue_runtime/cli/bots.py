"""``run MODULE:BOT`` and ``demo``: run a bot until it is told to stop.

``BOT`` names, in ``MODULE`` (imported with ``--app-dir``, default the
current directory, first on the import path), either

* a callable taking the :class:`~queue_runtime.QueueClient` the command
  built from the configuration and returning a
  :class:`~queue_runtime.bot.Bot` (or an awaitable of one) — the command
  owns and closes the client; or
* a ``Bot`` instance, which brings its own configuration (the provider
  options of the command do not apply to it).

The bot runs until SIGTERM or SIGINT (Ctrl-C), then stops gracefully: it stops
pulling, lets running handlers finish within its ``drain_timeout``, gives
back prefetched messages at once, and the command exits 0.

Example:
    >>> load_target("queue_runtime.cli.demo:handlers", None).__name__
    'handlers'
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import sys
from typing import Any

from .context import Context
from .messages import positive_count
from .output import CliError, ExitCode

__all__ = ["add_commands", "load_target"]

logger = logging.getLogger("queue_runtime.cli")

RUN_DESCRIPTION = """\
Run a bot until SIGTERM or SIGINT (Ctrl-C), then stop it gracefully: it stops
pulling, lets running handlers finish within its drain_timeout, gives back
prefetched messages at once, and the command exits 0.

BOT, an attribute of MODULE, is either a callable taking the QueueClient built
from the configuration and returning a Bot (or an awaitable of one) -- the
command owns and closes that client -- or a Bot instance, which brings its own
configuration (the provider options do not apply to it)."""

RUN_EPILOG = """\
example (myapp/bots.py):

    def bot(client):
        return Bot(client, "github-events", [PullRequests, Issues])

    $ QUEUE_PROVIDER=aws QUEUE_RUNTIME_AWS_REGION=eu-west-1 queue-runtime run myapp.bots:bot
"""


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a bot until SIGTERM/SIGINT, then stop gracefully",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", metavar="MODULE:BOT", help="e.g. myapp.bots:bot")
    run.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="put DIR first on the import path (default: the current directory)",
    )
    run.set_defaults(func=run_bot, default_log_level="info")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run the demo GitHub bot on its own in-memory provider",
        description="Run the demo: a GitHub bot on its own in-memory provider under a burst "
        "of webhook events, then print what happened. Provider options do not apply.",
    )
    demo.add_argument("--sessions", type=positive_count, default=400, help="pull requests, issues")
    demo.add_argument("--events-per-session", type=positive_count, default=10)
    demo.add_argument("--mode", choices=["emulated", "native"], default="emulated")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=run_demo)


def load_target(target: str, app_dir: str | None) -> Any:
    """Import ``MODULE`` and return its ``BOT`` attribute (dotted paths allowed)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"expected MODULE:BOT (e.g. myapp.bots:bot), got {target!r}")
    if app_dir:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise CliError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc} "
            "(--log-level debug shows the traceback)"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attribute!r}") from None
    return found


async def run_bot(args: argparse.Namespace, context: Context) -> int:
    from queue_runtime.bot import Bot  # the actor runtime only when a bot runs

    # importing runs the module's code (and reads files): not on the event loop
    target = await asyncio.to_thread(load_target, args.target, args.app_dir)
    if isinstance(target, Bot):
        bot = target
    elif callable(target):
        made = target(await context.client())
        if inspect.isawaitable(made):
            made = await made
        if not isinstance(made, Bot):
            raise CliError(f"{args.target} returned {type(made).__name__}, not a Bot")
        bot = made
    else:
        raise CliError(
            f"{args.target} is a {type(target).__name__}: expected a Bot, or a callable "
            "taking a QueueClient and returning a Bot"
        )
    output = context.output
    output.note(
        f"running {args.target} on queue {bot.queue!r}{context.location()}; "
        "SIGTERM or Ctrl-C stops it gracefully"
    )
    await bot.run()
    stats = bot.stats()
    counts = (
        f"received {stats.received}, completed {stats.completed}, "
        f"abandoned {stats.abandoned}, dead-lettered {stats.dead_lettered}"
    )
    if bot.stop_reason is not None:  # it stopped itself: a supervisor would restart it
        output.error(f"the bot stopped itself: {bot.stop_reason} ({counts})")
        return ExitCode.FAILED
    output.note(f"stopped gracefully: {counts}")
    return ExitCode.OK


async def run_demo(args: argparse.Namespace, context: Context) -> int:
    if (
        args.provider not in (None, "memory")
        or args.endpoint_url
        or args.region
        or args.sqlite_path
    ):
        raise CliError("the demo runs on its own in-memory provider: drop the provider options")
    from queue_runtime.cli import demo

    ok = await demo.run(args.sessions, args.events_per_session, args.seed, args.mode)
    return ExitCode.OK if ok else ExitCode.FAILED
