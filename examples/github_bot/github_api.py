"""The bot's view of GitHub: the few calls it makes, and a fake that records them.

A real bot would implement :class:`GitHubApi` with its HTTP client of choice
(and a GitHub App token); the handlers only see this protocol, so tests and
local runs use :class:`RecordingGitHub`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class GitHubUnavailable(ConnectionError):
    """GitHub did not answer (5xx, timeout): worth retrying; opens the handler's circuit."""


class GitHubApi(Protocol):
    async def add_label(self, repo: str, number: int, label: str) -> None: ...

    async def comment(self, repo: str, number: int, text: str) -> None: ...


@dataclass
class RecordingGitHub:
    """A GitHub that records what the bot did; ``down`` makes every call fail."""

    calls: list[tuple[str, str, int, str]] = field(default_factory=list)
    down: bool = False

    async def add_label(self, repo: str, number: int, label: str) -> None:
        self._call("label", repo, number, label)

    async def comment(self, repo: str, number: int, text: str) -> None:
        self._call("comment", repo, number, text)

    def _call(self, what: str, repo: str, number: int, detail: str) -> None:
        if self.down:
            raise GitHubUnavailable("GitHub answered 502")
        self.calls.append((what, repo, number, detail))
