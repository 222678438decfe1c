"""How the command line talks: results on stdout, everything else on stderr.

Results are human-readable lines, or one JSON document with ``--json``.
Errors are one line on stderr (``queue-runtime: error: ...``), progress and
prompts go to stderr too, so stdout stays clean for pipes.

Example:
    >>> import io
    >>> out = Output(json=True, stdout=io.StringIO(), stderr=io.StringIO())
    >>> out.result({"queue": "jobs", "sent": 1}, "sent 1 message")
    >>> out.stdout.getvalue()
    '{"queue":"jobs","sent":1}\\n'
"""

from __future__ import annotations

import asyncio
import base64
import enum
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import orjson

from queue_runtime.crypto import UndecryptableMessage
from queue_runtime.messages import ReceivedMessage

__all__ = [
    "CliError",
    "ExitCode",
    "Output",
    "Progress",
    "message_lines",
    "message_record",
    "read_line",
    "read_stdin",
]

PROG = "queue-runtime"


class ExitCode(enum.IntEnum):
    """The exit codes of ``queue-runtime``."""

    OK = 0
    FAILED = 1
    """A queue operation failed (provider error, missing queue, timeout), or Unhealthy."""
    USAGE = 2
    """Bad arguments: unknown option, invalid queue name, MODULE:BOT that cannot be loaded."""
    CONFIG = 3
    """Invalid configuration (file, environment or options) or a missing extra."""
    DECLINED = 4
    """A destructive operation was not confirmed (answered no, or no terminal and no --yes)."""
    DEGRADED = 5
    """``health``: the queue works but not well (Degraded)."""
    INTERRUPTED = 130
    """Interrupted by Ctrl-C."""


class CliError(Exception):
    """An expected failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Output:
    """Where results, notes, errors, progress and questions go."""

    def __init__(
        self, *, json: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.json = json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def result(self, data: Any, text: str | Sequence[str]) -> None:
        """Print a command's result: ``data`` as JSON, or ``text`` for humans."""
        if self.json:
            self.stdout.write(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        else:
            lines = [text] if isinstance(text, str) else list(text)
            for line in lines:
                self.stdout.write(line + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        """A remark for humans (stderr), never part of the result."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def error(self, text: str) -> None:
        self.note(f"{PROG}: error: {text}")

    def progress(self, label: str) -> Progress:
        """A running count on stderr, shown only when stderr is a terminal."""
        return Progress(self.stderr, label)

    async def confirm(self, action: str, *, assume_yes: bool, warning: str = "") -> None:
        """Ask whether to ``action`` (e.g. "purge ALL dead letters of 'jobs'") on the
        terminal; raise :class:`CliError` unless the answer is yes.

        With ``assume_yes`` (``--yes``) nothing is asked. Without a terminal
        on stdin (CI, pipes) nobody can answer, so it refuses.
        """
        if assume_yes:
            return
        if not _isatty(sys.stdin):
            raise CliError(
                f"refusing to {action} without --yes (no terminal to ask on)", ExitCode.DECLINED
            )
        question = f"{action[:1].upper()}{action[1:]}?" + (f" {warning}" if warning else "")
        self.stderr.write(f"{question} [y/N] ")
        self.stderr.flush()
        answer = await read_line()
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not confirmed; nothing was changed", ExitCode.DECLINED)


class Progress:
    """``label N`` rewritten in place on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._shown = False
        self._live = _isatty(stream)

    def __call__(self, count: int) -> None:
        if self._live:
            self._stream.write(f"\r{self._label} {count:,}")
            self._stream.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


async def read_line() -> str:
    """One line from stdin without blocking the event loop (cancellable on Unix)."""
    fd = _stdin_fd()
    if fd is None or not await _readable(fd):
        return await asyncio.to_thread(sys.stdin.readline)
    return sys.stdin.readline()


async def read_stdin() -> bytes:
    """All of stdin as bytes, without blocking the event loop.

    Pipes and terminals are read as data arrives (Ctrl-C interrupts at
    once); regular files, which cannot be waited on, are read in a thread.
    """
    fd = _stdin_fd()
    if fd is None:
        return await asyncio.to_thread(_read_all)
    chunks: list[bytes] = []
    while True:
        if not await _readable(fd):
            return b"".join(chunks) + await asyncio.to_thread(_read_all)
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_all() -> bytes:
    data: bytes = sys.stdin.buffer.read()
    return data


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):  # replaced by an in-memory stream
        return None


async def _readable(fd: int) -> bool:
    """Wait until ``fd`` can be read; False if the loop cannot watch it (regular files)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except (NotImplementedError, OSError, ValueError):
        return False
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return True


# -- messages ----------------------------------------------------------------------


def message_record(message: ReceivedMessage) -> dict[str, Any]:
    """A received message as JSON-ready data (body as text if UTF-8, else base64)."""
    record: dict[str, Any] = {
        "message_id": message.message_id,
        "session_id": message.session_id,
        "correlation_id": message.correlation_id,
        "content_type": message.content_type,
        "delivery_count": message.delivery_count,
        "enqueued_at": message.enqueued_at.isoformat(),
        "attributes": dict(message.attributes),
    }
    if message.dead_letter_reason is not None or message.dead_letter_description is not None:
        record["dead_letter_reason"] = message.dead_letter_reason
        record["dead_letter_description"] = message.dead_letter_description
    if isinstance(message, UndecryptableMessage):
        record["error"] = f"{type(message.error).__name__}: {message.error.message}"
    text = _text(message.body)
    if text is None:
        record["body_base64"] = base64.b64encode(message.body).decode("ascii")
    else:
        record["body"] = text
    return record


def message_lines(message: ReceivedMessage, *, body: bool = True) -> list[str]:
    """A received message for humans: a header line, then details indented."""
    header = [f"message {message.message_id}"]
    if message.session_id is not None:
        header.append(f"session={message.session_id}")
    header.append(f"delivery={message.delivery_count}")
    header.append(f"enqueued={message.enqueued_at.isoformat(timespec='seconds')}")
    lines = ["  ".join(header)]
    details: dict[str, str | None] = {
        "correlation_id": message.correlation_id,
        "content_type": message.content_type,
        "dead_letter_reason": message.dead_letter_reason,
        "dead_letter_description": message.dead_letter_description,
    }
    if isinstance(message, UndecryptableMessage):
        details["error"] = f"{type(message.error).__name__}: {message.error.message}"
    lines.extend(f"  {key}: {value}" for key, value in details.items() if value is not None)
    lines.extend(f"  attribute {key}={value}" for key, value in _sorted(message.attributes))
    if body:
        text = _text(message.body)
        if text is None:
            encoded = base64.b64encode(message.body).decode("ascii")
            lines.append(f"  body ({len(message.body)} bytes, base64): {encoded}")
        else:
            lines.append(f"  body ({len(message.body)} bytes): {text}")
    return lines


def _sorted(attributes: Mapping[str, str]) -> list[tuple[str, str]]:
    return sorted(attributes.items())


def _text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None
