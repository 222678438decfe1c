"""The shared handling log: one line per handling start and end, from any process.

Every bot process of a proof appends to the same file. A line is written with
one ``write(2)`` on a descriptor opened with ``O_APPEND``, so lines of
concurrent processes never interleave, and nothing is buffered in the process
(a SIGKILL loses no line already written). Times are ``time.monotonic_ns()``:
CLOCK_MONOTONIC is one clock for the whole machine on Linux, so intervals of
different processes can be compared.

Line format (space separated; session ids and message ids have no spaces)::

    start|end <pid> <session> <seq> <message id> <monotonic ns>
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["start", "end"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the log: a process started or ended handling one message."""

    kind: Kind
    pid: int
    session: str
    seq: int
    message_id: str
    at_ns: int


class HandlingLog:
    """The writing end, one per process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def write(self, kind: Kind, session: str, seq: int, message_id: str) -> None:
        line = f"{kind} {self._pid} {session} {seq} {message_id} {time.monotonic_ns()}\n"
        os.write(self._fd, line.encode())  # one small write to a local file: whole line, no buffer

    def close(self) -> None:
        os.close(self._fd)


def parse(line: str) -> Entry:
    """One line (without its newline); a malformed one fails loudly."""
    fields = line.split(" ")
    if len(fields) != 6 or fields[0] not in ("start", "end"):
        raise AssertionError(f"malformed log line: {line!r}")
    kind: Kind = "start" if fields[0] == "start" else "end"
    return Entry(kind, int(fields[1]), fields[2], int(fields[3]), fields[4], int(fields[5]))


def read_log(path: str | os.PathLike[str]) -> list[Entry]:
    """Every entry, in file order. An unfinished last line fails loudly: writers
    write whole lines, so one would mean a line was torn."""
    text = Path(path).read_text() if Path(path).exists() else ""
    if text and not text.endswith("\n"):
        raise AssertionError(f"the log ends in an unfinished line: {text[-80:]!r}")
    return [parse(line) for line in text.splitlines()]


class LogFollower:
    """Reads a growing log incrementally (for long runs where re-reading is too slow).

    A line is taken only once its newline is there, so a line being written is
    read on the next call.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._offset = 0
        self._partial = b""

    def new_entries(self) -> list[Entry]:
        if not self._path.exists():
            return []
        with self._path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [parse(line.decode()) for line in lines]
