"""Realistic GitHub webhook deliveries for tests: payloads, signed headers, messages.

Each builder returns a :class:`WebhookEvent` holding the event type and the JSON
body, shaped like GitHub's (the fields bots read: ``action``, ``number``,
``sender``, ``repository`` with ``owner``/``name``/``full_name``,
``installation.id``, the pull request or issue with title, state, head and base
refs and shas...). From it a test gets the ``payload`` dict, the ``body`` bytes,
signed ``headers(secret)`` to post to an endpoint, or a ``message()`` made by
:func:`~queue_runtime.github.webhook_to_message` itself, so session ids and
attributes follow the production rules.

Everything is deterministic: ids and shas are derived from the arguments, and
only the delivery id is random, unless given.

Example:
    >>> from queue_runtime.testing import github_events
    >>> opened = github_events.pull_request("opened", number=42, repo="octo/repo")
    >>> opened.payload["pull_request"]["head"]["ref"], opened.payload["installation"]["id"]
    ('feature', 1)
    >>> message = opened.message(delivery_id="d-42")
    >>> message.session_id, message.attributes["event_type"], message.message_id
    ('octo/repo/pull/42', 'pull_request', 'd-42')
    >>> comment = github_events.issue_comment(number=42, repo="octo/repo", on_pull_request=True)
    >>> comment.message().session_id
    'octo/repo/pull/42'
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from queue_runtime.errors import ValidationError
from queue_runtime.github.sessions import GITHUB_SESSIONS
from queue_runtime.github.webhooks import WebhookSecret, _key, sign, webhook_to_message
from queue_runtime.messages import Message
from queue_runtime.session_keys import SessionKeyStrategy

__all__ = [
    "WebhookEvent",
    "check_run",
    "issue_comment",
    "issues",
    "pull_request",
    "pull_request_review",
    "push",
]

REPO = "octo-org/hello-world"
SENDER = "octocat"
INSTALLATION_ID = 1
TIMESTAMP = "2024-05-01T12:00:00Z"
ZERO_SHA = "0" * 40
_MESSAGE_SECRET = "queue-runtime-test-events"  # signs message(): not a real secret


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One webhook delivery's event type and JSON body, ready to sign or enqueue.

    Example:
        >>> event = WebhookEvent.from_payload("star", {"action": "created"})
        >>> event.body, sorted(event.headers("k", delivery_id="d-1"))[:3]
        (b'{"action":"created"}', ['Content-Type', 'User-Agent', 'X-GitHub-Delivery'])
    """

    event: str
    body: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise ValidationError("must be a non-empty string", field="event")
        if not isinstance(self.body, bytes):
            raise ValidationError("must be the JSON body as bytes", field="body")

    @classmethod
    def from_payload(cls, event: str, payload: Mapping[str, Any]) -> WebhookEvent:
        """Any event type with any payload (``ping``, ``installation``, ...)."""
        return cls(event, orjson.dumps(payload))

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a new dict (changing it changes nothing here)."""
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload

    def headers(
        self, secret: WebhookSecret, *, delivery_id: str | None = None, hook_id: int = 1
    ) -> dict[str, str]:
        """The headers GitHub sends with this body, signed with ``secret``.

        Both signatures are there, as GitHub sends them; a fresh UUID delivery id
        unless ``delivery_id`` is given.
        """
        sha1 = hmac.new(_key(secret), self.body, hashlib.sha1)
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/queue-runtime",
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-GitHub-Event": self.event,
            "X-GitHub-Hook-ID": str(hook_id),
            "X-Hub-Signature": "sha1=" + sha1.hexdigest(),
            "X-Hub-Signature-256": sign(self.body, secret),
        }

    def message(
        self, *, delivery_id: str | None = None, sessions: SessionKeyStrategy = GITHUB_SESSIONS
    ) -> Message:
        """The queue message :func:`~queue_runtime.github.webhook_to_message` makes of it."""
        headers = self.headers(_MESSAGE_SECRET, delivery_id=delivery_id)
        return webhook_to_message(headers, self.body, _MESSAGE_SECRET, sessions=sessions)


# -- payload parts ----------------------------------------------------------


def _id(*parts: object) -> int:
    """A stable positive id derived from ``parts`` (GitHub ids are integers)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:5], "big") + 1


def _sha(*parts: object) -> str:
    """A stable 40-hex commit sha derived from ``parts``."""
    return hashlib.sha1(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise ValidationError(f"must be 'owner/name', got {repo!r}", field="repo")
    return owner, name


def _user(login: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": _id("user", login),
        "type": "Bot" if login.endswith("[bot]") else "User",
        "html_url": f"https://github.com/{login}",
    }


def _repository(repo: str) -> dict[str, Any]:
    owner, name = _split(repo)
    return {
        "id": _id("repo", repo),
        "name": name,
        "full_name": repo,
        "private": False,
        "owner": _user(owner),
        "html_url": f"https://github.com/{repo}",
        "url": f"https://api.github.com/repos/{repo}",
        "default_branch": "main",
    }


def _envelope(repo: str, sender: str, installation_id: int | None, **fields: Any) -> dict[str, Any]:
    """The fields every repository event has, around the event's own ``fields``."""
    payload = {**fields, "repository": _repository(repo), "sender": _user(sender)}
    if installation_id is not None:
        payload["installation"] = {"id": installation_id}
    return payload


def _branch(repo: str, ref: str, sha: str) -> dict[str, Any]:
    owner, _ = _split(repo)
    return {
        "label": f"{owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": _user(owner),
        "repo": _repository(repo),
    }


def _pull_request(
    repo: str,
    number: int,
    *,
    title: str,
    author: str,
    state: str,
    draft: bool,
    merged: bool,
    head_ref: str,
    base_ref: str,
    head_sha: str | None,
    base_sha: str | None,
    body: str,
) -> dict[str, Any]:
    closed = state == "closed"
    return {
        "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
        "id": _id("pull", repo, number),
        "html_url": f"https://github.com/{repo}/pull/{number}",
        "number": number,
        "state": state,
        "locked": False,
        "title": title,
        "user": _user(author),
        "body": body,
        "labels": [],
        "draft": draft,
        "merged": merged,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "closed_at": TIMESTAMP if closed else None,
        "merged_at": TIMESTAMP if merged else None,
        "head": _branch(repo, head_ref, head_sha or _sha(repo, head_ref, number)),
        "base": _branch(repo, base_ref, base_sha or _sha(repo, base_ref)),
    }


def _issue(
    repo: str,
    number: int,
    *,
    title: str,
    author: str,
    state: str,
    labels: Sequence[str],
    body: str,
    on_pull_request: bool,
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{repo}/issues/{number}",
        "id": _id("issue", repo, number),
        "html_url": f"https://github.com/{repo}/issues/{number}",
        "number": number,
        "state": state,
        "locked": False,
        "title": title,
        "user": _user(author),
        "body": body,
        "labels": [{"id": _id("label", repo, name), "name": name} for name in labels],
        "comments": 0,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "closed_at": TIMESTAMP if state == "closed" else None,
    }
    if on_pull_request:
        issue["html_url"] = f"https://github.com/{repo}/pull/{number}"
        issue["pull_request"] = {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "html_url": f"https://github.com/{repo}/pull/{number}",
        }
    return issue


# -- builders -----------------------------------------------------------------


def pull_request(
    action: str = "opened",
    *,
    number: int = 1,
    repo: str = REPO,
    title: str = "Add a feature",
    author: str = SENDER,
    sender: str | None = None,
    state: str | None = None,
    draft: bool = False,
    merged: bool = False,
    head_ref: str = "feature",
    base_ref: str = "main",
    head_sha: str | None = None,
    base_sha: str | None = None,
    body: str = "",
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """A ``pull_request`` event; ``state`` is ``closed`` for ``action="closed"``, else ``open``.

    Example:
        >>> pull_request("closed", merged=True).payload["pull_request"]["state"]
        'closed'
    """
    pull = _pull_request(
        repo,
        number,
        title=title,
        author=author,
        state=state or ("closed" if action == "closed" else "open"),
        draft=draft,
        merged=merged,
        head_ref=head_ref,
        base_ref=base_ref,
        head_sha=head_sha,
        base_sha=base_sha,
        body=body,
    )
    payload = _envelope(
        repo, sender or author, installation_id, action=action, number=number, pull_request=pull
    )
    return WebhookEvent.from_payload("pull_request", payload)


def pull_request_review(
    action: str = "submitted",
    *,
    number: int = 1,
    repo: str = REPO,
    state: str = "approved",
    reviewer: str = "hubot",
    body: str = "",
    review_id: int | None = None,
    title: str = "Add a feature",
    author: str = SENDER,
    head_ref: str = "feature",
    base_ref: str = "main",
    head_sha: str | None = None,
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """A ``pull_request_review`` event: ``reviewer`` reviewed pull request ``number``.

    Example:
        >>> pull_request_review(state="changes_requested").payload["review"]["state"]
        'changes_requested'
    """
    pull = _pull_request(
        repo,
        number,
        title=title,
        author=author,
        state="open",
        draft=False,
        merged=False,
        head_ref=head_ref,
        base_ref=base_ref,
        head_sha=head_sha,
        base_sha=None,
        body="",
    )
    review = {
        "id": review_id if review_id is not None else _id("review", repo, number, reviewer),
        "user": _user(reviewer),
        "body": body,
        "state": state,
        "commit_id": pull["head"]["sha"],
        "submitted_at": TIMESTAMP,
        "html_url": f"https://github.com/{repo}/pull/{number}#pullrequestreview",
    }
    payload = _envelope(
        repo, reviewer, installation_id, action=action, review=review, pull_request=pull
    )
    return WebhookEvent.from_payload("pull_request_review", payload)


def issues(
    action: str = "opened",
    *,
    number: int = 1,
    repo: str = REPO,
    title: str = "Something is broken",
    author: str = SENDER,
    sender: str | None = None,
    state: str | None = None,
    labels: Sequence[str] = (),
    body: str = "",
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """An ``issues`` event; ``state`` is ``closed`` for ``action="closed"``, else ``open``.

    Example:
        >>> issues("labeled", labels=["bug"]).payload["issue"]["labels"][0]["name"]
        'bug'
    """
    issue = _issue(
        repo,
        number,
        title=title,
        author=author,
        state=state or ("closed" if action == "closed" else "open"),
        labels=labels,
        body=body,
        on_pull_request=False,
    )
    payload = _envelope(repo, sender or author, installation_id, action=action, issue=issue)
    return WebhookEvent.from_payload("issues", payload)


def issue_comment(
    action: str = "created",
    *,
    number: int = 1,
    repo: str = REPO,
    body: str = "Looks good to me",
    on_pull_request: bool = False,
    commenter: str = SENDER,
    comment_id: int | None = None,
    title: str = "Something is broken",
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """An ``issue_comment`` event, on an issue or (``on_pull_request=True``) a pull request.

    GitHub sends comments on a pull request's conversation as ``issue_comment``,
    with ``issue.pull_request`` set.

    Example:
        >>> "pull_request" in issue_comment(on_pull_request=True).payload["issue"]
        True
    """
    issue = _issue(
        repo,
        number,
        title=title,
        author=SENDER,
        state="open",
        labels=(),
        body="",
        on_pull_request=on_pull_request,
    )
    ident = comment_id if comment_id is not None else _id("comment", repo, number, body)
    comment = {
        "id": ident,
        "html_url": f"{issue['html_url']}#issuecomment-{ident}",
        "user": _user(commenter),
        "body": body,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    }
    payload = _envelope(
        repo, commenter, installation_id, action=action, issue=issue, comment=comment
    )
    return WebhookEvent.from_payload("issue_comment", payload)


def push(
    *,
    repo: str = REPO,
    ref: str = "refs/heads/main",
    before: str | None = None,
    after: str | None = None,
    commits: Sequence[str] = ("Update README",),
    pusher: str = SENDER,
    forced: bool = False,
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """A ``push`` event of ``commits`` (their messages) to ``ref``; it has no ``action``.

    Example:
        >>> event = push(commits=["one", "two"])
        >>> [c["message"] for c in event.payload["commits"]], event.payload["after"][:7]
        (['one', 'two'], ...)
    """
    start = before or _sha(repo, ref, "before")
    shas = [_sha(repo, ref, start, index, text) for index, text in enumerate(commits)]
    end = after or (shas[-1] if shas else start)
    author = {"name": pusher, "email": f"{pusher}@users.noreply.github.com", "username": pusher}
    entries = [
        {
            "id": sha,
            "message": text,
            "timestamp": TIMESTAMP,
            "url": f"https://github.com/{repo}/commit/{sha}",
            "author": author,
            "committer": author,
            "added": [],
            "removed": [],
            "modified": ["README.md"],
        }
        for sha, text in zip(shas, commits, strict=True)
    ]
    payload = _envelope(
        repo,
        pusher,
        installation_id,
        ref=ref,
        before=start,
        after=end,
        created=start == ZERO_SHA,
        deleted=end == ZERO_SHA,
        forced=forced,
        compare=f"https://github.com/{repo}/compare/{start[:12]}...{end[:12]}",
        commits=entries,
        head_commit=entries[-1] if entries else None,
        pusher={"name": pusher, "email": author["email"]},
    )
    return WebhookEvent.from_payload("push", payload)


def check_run(
    action: str = "completed",
    *,
    name: str = "ci",
    repo: str = REPO,
    status: str = "completed",
    conclusion: str | None = "success",
    head_sha: str | None = None,
    head_branch: str = "feature",
    pull_requests: Sequence[int] = (),
    check_run_id: int | None = None,
    app_slug: str = "ci-app",
    sender: str = SENDER,
    installation_id: int | None = INSTALLATION_ID,
) -> WebhookEvent:
    """A ``check_run`` event for ``head_sha``, associated with the given pull request numbers.

    Example:
        >>> check_run(pull_requests=[3]).message().session_id
        'octo-org/hello-world/pull/3'
    """
    sha = head_sha or _sha(repo, head_branch)
    repository = _repository(repo)
    short_repo = {key: repository[key] for key in ("id", "url", "name")}
    pulls = [
        {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "id": _id("pull", repo, number),
            "number": number,
            "head": {"ref": head_branch, "sha": sha, "repo": short_repo},
            "base": {"ref": "main", "sha": _sha(repo, "main"), "repo": short_repo},
        }
        for number in pull_requests
    ]
    ident = check_run_id if check_run_id is not None else _id("check_run", repo, name, sha)
    run = {
        "id": ident,
        "name": name,
        "head_sha": sha,
        "status": status,
        "conclusion": conclusion if status == "completed" else None,
        "started_at": TIMESTAMP,
        "completed_at": TIMESTAMP if status == "completed" else None,
        "html_url": f"https://github.com/{repo}/runs/{ident}",
        "check_suite": {"id": _id("check_suite", repo, sha), "head_branch": head_branch},
        "app": {"id": _id("app", app_slug), "slug": app_slug},
        "pull_requests": pulls,
    }
    payload = _envelope(repo, sender, installation_id, action=action, check_run=run)
    return WebhookEvent.from_payload("check_run", payload)
