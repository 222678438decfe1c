"""The triage bot: handlers per GitHub event type, and the function that builds the Bot.

* A pull request that is opened gets the label ``needs-review``; one that is
  approved gets ``approved``.
* An issue that is opened with "bug" in its title gets the label ``bug``.
* A comment ``/hello`` on an issue or pull request is answered.
* Every other event type (``ping``, ``star``, ...) is completed without a handler.

Events of one pull request or issue are handled in order (the session id is
``owner/repo/pull/N`` or ``owner/repo/issues/N``, see docs/github.md), and
different pull requests at the same time.

Run it with the command line, on any provider the configuration names::

    queue-runtime --config examples/github_bot/memory.toml run github_bot.app:make_bot \\
        --app-dir examples
"""

from __future__ import annotations

from queue_runtime import ProviderType, QueueClient
from queue_runtime.bot import Bot, Event, Handler, PermanentFailure

from github_bot.github_api import GitHubApi, RecordingGitHub

QUEUE = "github-events"
"""The queue's name; on SQS the FIFO queue ``github-events.fifo`` (see :func:`queue_for`)."""


def queue_for(client: QueueClient) -> str:
    """The bot's queue on ``client``'s provider: SQS needs a FIFO queue for sessions.

    Example:
        >>> from queue_runtime.providers.memory import InMemoryProvider
        >>> queue_for(QueueClient(InMemoryProvider()))
        'github-events'
    """
    return f"{QUEUE}.fifo" if client.provider_type is ProviderType.AWS_SQS else QUEUE


def handlers(github: GitHubApi) -> list[type[Handler]]:
    """The bot's handler classes, talking to ``github``."""

    class PullRequests(Handler):
        event_types = ("pull_request", "pull_request_review")

        async def handle(self, event: Event) -> None:
            payload = event.json()
            repo = payload["repository"]["full_name"]
            number = payload["pull_request"]["number"]
            if event.type == "pull_request" and payload["action"] == "opened":
                await github.add_label(repo, number, "needs-review")
            elif event.type == "pull_request_review" and payload["review"]["state"] == "approved":
                await github.add_label(repo, number, "approved")

    class Issues(Handler):
        event_types = ("issues",)

        async def handle(self, event: Event) -> None:
            payload = event.json()
            issue = payload.get("issue")
            if issue is None:
                raise PermanentFailure("an issues event without an issue")  # to the DLQ now
            if payload["action"] == "opened" and "bug" in issue["title"].lower():
                await github.add_label(payload["repository"]["full_name"], issue["number"], "bug")

    class Comments(Handler):
        event_types = ("issue_comment",)

        async def handle(self, event: Event) -> None:
            payload = event.json()
            if payload["action"] != "created" or payload["comment"]["body"].strip() != "/hello":
                return
            repo = payload["repository"]["full_name"]
            author = payload["comment"]["user"]["login"]
            await github.comment(repo, payload["issue"]["number"], f"Hello @{author}!")

    return [PullRequests, Issues, Comments]


def make_bot(client: QueueClient, github: GitHubApi | None = None) -> Bot:
    """The bot on ``client``'s provider (``queue-runtime run`` passes the client)."""
    return Bot(
        client,
        queue_for(client),
        handlers(github or RecordingGitHub()),
        unrouted="complete",  # GitHub sends many event types this bot does not care about
    )
