"""``dlq list | stats | requeue | purge``: the dead-letter queue of a queue.

``requeue`` and ``purge`` change the DLQ, so they ask first (``--yes`` skips
the question; without a terminal and without ``--yes`` they refuse). Both can
be narrowed to the dead letters of one error type (``--reason``) or handler
(``--handler``; ``(none)`` for dead letters no handler saw), and show a
running count on a terminal. Requeue sends each dead letter back first and
removes it from the DLQ only after that (a failure in between duplicates,
never loses).

Example:
    >>> import argparse
    >>> select = selector(argparse.Namespace(reason="ValueError", handler=None))
    >>> select is not None
    True
"""

from __future__ import annotations

import argparse
from typing import Any

from queue_runtime import dlq
from queue_runtime.dlq import NO_HANDLER
from queue_runtime.health import probe_queue
from queue_runtime.messages import ReceivedMessage

from .context import Context
from .messages import positive_count
from .output import ExitCode, message_lines, message_record

__all__ = ["add_commands", "selector"]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "dlq",
        parents=[common],
        help="list, count, requeue or purge dead letters",
        description="Work with a queue's dead-letter queue.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        parents=[common],
        help="show dead letters with their reasons (without removing them)",
        description="Show dead letters with reasons and failure records, without removing them.",
    )
    listing.add_argument("queue", help="queue name (its DLQ is read)")
    listing.add_argument(
        "--limit", type=positive_count, default=100, help="at most this many (100)"
    )
    listing.add_argument("--body", action="store_true", help="show bodies too")
    listing.set_defaults(func=list_letters)

    stats = actions.add_parser(
        "stats",
        parents=[common],
        help="count dead letters by error type and by handler",
        description="Count dead letters by error type (reason) and by handler.",
    )
    stats.add_argument("queue", help="queue name (its DLQ is read)")
    stats.add_argument(
        "--limit", type=positive_count, default=10_000, help="count at most this many (10000)"
    )
    stats.set_defaults(func=letter_stats)

    for name, func, summary in (
        ("requeue", requeue_letters, "send dead letters back to their queue"),
        ("purge", purge_letters, "delete dead letters for good"),
    ):
        command = actions.add_parser(
            name,
            parents=[common],
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. Asks first unless --yes.",
        )
        command.add_argument("queue", help="queue name (its DLQ is changed)")
        command.add_argument("--reason", help="only dead letters with this reason (error type)")
        command.add_argument(
            "--handler", help=f"only dead letters of this handler ({NO_HANDLER}: none)"
        )
        if name == "requeue":
            command.add_argument("--limit", type=positive_count, help="at most this many")
        command.add_argument("-y", "--yes", action="store_true", help="do not ask")
        command.set_defaults(func=func)


def selector(args: argparse.Namespace) -> dlq.Predicate | None:
    """The dead letters ``--reason`` and ``--handler`` select (``None``: all of them)."""
    reason: str | None = args.reason
    handler: str | None = args.handler
    if reason is None and handler is None:
        return None

    def selected(message: ReceivedMessage) -> bool:
        attributes = message.attributes  # two fields of the failure record: no need to parse it
        if reason is not None and reason not in (
            message.dead_letter_reason,
            attributes.get(dlq.REASON),
        ):
            return False
        return handler is None or (attributes.get(dlq.HANDLER) or NO_HANDLER) == handler

    return selected


def _scope(args: argparse.Namespace) -> str:
    filters = [
        f"{name} {value!r}"
        for name, value in (("reason", args.reason), ("handler", args.handler))
        if value is not None
    ]
    return f"the dead letters with {' and '.join(filters)}" if filters else "ALL dead letters"


async def list_letters(args: argparse.Namespace, context: Context) -> int:
    client = await context.client()
    letters = await dlq.list_dead_letters(client, args.queue, args.limit)
    lines: list[str] = []
    for letter in letters:
        lines.extend(message_lines(letter.message, body=args.body))
        failure = letter.failure
        if failure.handler is not None:
            lines.append(f"  handler: {failure.handler}")
        if failure.dead_lettered_at is not None:
            lines.append(f"  dead-lettered at: {failure.dead_lettered_at}")
        if failure.attempts:
            errors = ", ".join(attempt.error for attempt in failure.attempts)
            lines.append(f"  attempts: {len(failure.attempts)} ({errors})")
    context.output.result([message_record(letter.message) for letter in letters], lines)
    if not letters and not context.output.json:
        context.output.note(f"no dead letters in {args.queue}")
    return ExitCode.OK


async def letter_stats(args: argparse.Namespace, context: Context) -> int:
    client = await context.client()
    stats = await dlq.dead_letter_stats(client, args.queue, args.limit)
    probe = await probe_queue(client, args.queue)
    depth = probe.info.dead_letter_depth if probe.info is not None else None
    data = {
        "queue": args.queue,
        "counted": stats.total,
        "dead_letter_depth": depth,
        "by_reason": stats.by_reason,
        "by_handler": stats.by_handler,
    }
    lines = [f"dead letters of {args.queue}: {stats.total} counted"]
    if depth is not None:
        lines[0] += f" (the provider reports {depth})"
    if stats.total >= args.limit:
        lines.append(f"  (stopped at --limit {args.limit})")
    for title, counts in (("by reason", stats.by_reason), ("by handler", stats.by_handler)):
        if counts:
            lines.append(f"{title}:")
            width = max(len(key) for key in counts)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.extend(f"  {key:<{width}}  {count}" for key, count in ranked)
    context.output.result(data, lines)
    return ExitCode.OK


async def requeue_letters(args: argparse.Namespace, context: Context) -> int:
    output = context.output
    await output.confirm(
        f"requeue {_scope(args)} of {args.queue!r} back to {args.queue!r}", assume_yes=args.yes
    )
    client = await context.client()
    progress = output.progress("requeued")
    try:
        count = await dlq.requeue(
            client, args.queue, selector(args), progress, max_messages=args.limit
        )
    finally:
        progress.done()
    output.result({"queue": args.queue, "requeued": count}, f"requeued {count} to {args.queue}")
    return ExitCode.OK


async def purge_letters(args: argparse.Namespace, context: Context) -> int:
    output = context.output
    await output.confirm(
        f"purge {_scope(args)} of {args.queue!r}",
        assume_yes=args.yes,
        warning="This cannot be undone.",
    )
    client = await context.client()
    progress = output.progress("purged")
    try:
        count = await dlq.purge(client, args.queue, selector(args), progress)
    finally:
        progress.done()
    output.result(
        {"queue": args.queue, "purged": count}, f"purged {count} dead letters of {args.queue}"
    )
    return ExitCode.OK
