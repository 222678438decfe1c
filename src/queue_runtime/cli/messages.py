"""``send``, ``peek`` and ``receive``: messages in and out of a queue by hand.

``peek`` receives and gives the messages back at once (abandon). No provider
can read a live queue without locking, so a peek **counts as a delivery**:
a message peeked on its ``max_delivery_count``-th delivery goes to the DLQ.
``receive`` prints the messages and then completes (removes) them. On queues
with native sessions (Azure, memory ``native``) both take the next available
session unless ``--session`` names one.

Example:
    >>> parse_attribute("event_type=push")
    ('event_type', 'push')
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from queue_runtime.client import QueueClient
from queue_runtime.errors import SessionsNotSupportedError
from queue_runtime.messages import Message, ReceivedMessage
from queue_runtime.provider import SessionSupport

from .context import Context
from .output import CliError, ExitCode, message_lines, message_record, read_stdin

__all__ = [
    "add_commands",
    "non_negative_count",
    "parse_attribute",
    "positive_count",
    "seconds",
]

TAKE_DESCRIPTION = """\
peek shows messages and gives them back at once (abandon); receive shows them and
then completes (removes) them. SQS cannot read a live queue without locking it, and
peek works the same way on every provider, so a peek COUNTS AS A DELIVERY: a
message peeked on its max_delivery_count-th delivery goes to the dead-letter queue.
On queues with native sessions (Azure, memory session_mode=native) the next
available session is taken unless --session names one."""

FOLLOW_UP_WAIT = 1.0
"""Seconds later receives wait once the first batch came (``--count`` above one batch)."""


def parse_attribute(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` → ``(NAME, VALUE)``; argparse shows the error."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def positive_count(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _integer(text, 1)


def non_negative_count(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _integer(text, 0)


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    send = commands.add_parser(
        "send",
        parents=[common],
        help="send one message",
        description="Send one message. The body is --body, or stdin when --body is not given.",
    )
    send.add_argument("queue", help="queue name")
    send.add_argument("--body", help="the body as text (UTF-8); default: read stdin")
    send.add_argument(
        "-a",
        "--attribute",
        type=parse_attribute,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a message attribute (repeatable)",
    )
    send.add_argument("--session", metavar="ID", help="session id (ordering key)")
    send.add_argument("--correlation-id", metavar="ID")
    send.add_argument("--message-id", metavar="ID", help="default: a new UUID")
    send.add_argument("--content-type", metavar="TYPE", help="e.g. application/json")
    send.set_defaults(func=send_message)

    for name, func, summary in (
        (
            "peek",
            peek_messages,
            "show messages and give them back at once (counts as a delivery)",
        ),
        ("receive", receive_messages, "show messages and complete (remove) them"),
    ):
        command = commands.add_parser(
            name, parents=[common], help=summary, description=TAKE_DESCRIPTION
        )
        command.add_argument("queue", help="queue name")
        command.add_argument(
            "-n", "--count", type=positive_count, default=1, help="how many messages (default 1)"
        )
        command.add_argument(
            "--timeout",
            type=seconds,
            default=5.0,
            help="seconds to wait for the first message (default 5)",
        )
        command.add_argument("--session", metavar="ID", help="take messages of this session")
        command.set_defaults(func=func)


async def send_message(args: argparse.Namespace, context: Context) -> int:
    if args.body is not None:
        body = args.body.encode("utf-8")
    elif sys.stdin.isatty():
        raise CliError("no body: pass --body TEXT or pipe the body on stdin")
    else:
        body = await read_stdin()
    fields: dict[str, Any] = {
        "attributes": dict(args.attribute),
        "session_id": args.session,
        "correlation_id": args.correlation_id,
        "content_type": args.content_type,
    }
    if args.message_id is not None:
        fields["message_id"] = args.message_id
    message = Message(body, **fields)
    client = await context.client()
    message_id = await client.send_message(args.queue, message)
    context.output.result(
        {"queue": args.queue, "message_id": message_id}, f"sent {message_id} to {args.queue}"
    )
    return ExitCode.OK


async def peek_messages(args: argparse.Namespace, context: Context) -> int:
    client = await context.client()
    return await _take(args, context, lambda m: client.abandon_message(m.receipt))


async def receive_messages(args: argparse.Namespace, context: Context) -> int:
    client = await context.client()
    return await _take(args, context, lambda m: client.complete_message(m.receipt))


Settle = Callable[[ReceivedMessage], Awaitable[None]]
Receive = Callable[[int, float], Awaitable[list[ReceivedMessage]]]


async def _take(args: argparse.Namespace, context: Context, settle: Settle) -> int:
    """Receive up to ``--count`` messages, print them, then settle each."""
    client: QueueClient = await context.client()
    queue = args.queue
    if args.session is not None or client.session_support(queue) is SessionSupport.NATIVE:
        try:
            session = await client.accept_session(queue, args.session, timeout=args.timeout)
        except SessionsNotSupportedError:
            if args.session is not None:
                raise
            # Azure without session_queues takes every queue for a session queue until
            # the queue refuses a session receiver: then receive plainly
        else:
            if session is None:
                return await _show(args, context, [], settle)
            async with session:
                messages = await _collect(session.receive_messages, args.count, args.timeout)
                return await _show(args, context, messages, settle)
    messages = await _collect(
        lambda n, wait: client.receive_messages(queue, n, wait), args.count, args.timeout
    )
    return await _show(args, context, messages, settle)


async def _collect(receive: Receive, count: int, timeout: float) -> list[ReceivedMessage]:
    messages: list[ReceivedMessage] = []
    wait = timeout
    while len(messages) < count:
        batch = await receive(count - len(messages), wait)
        if not batch:
            break
        messages.extend(batch)
        wait = min(timeout, FOLLOW_UP_WAIT)
    return messages


async def _show(
    args: argparse.Namespace, context: Context, messages: list[ReceivedMessage], settle: Settle
) -> int:
    output = context.output
    lines: list[str] = []
    for message in messages:
        lines.extend(message_lines(message))
    output.result([message_record(m) for m in messages], lines)
    if not messages and not output.json:
        output.note(f"no message in {args.queue} within {args.timeout:g} s")
    for message in messages:  # after printing: a failure here loses nothing
        await settle(message)
    return ExitCode.OK
