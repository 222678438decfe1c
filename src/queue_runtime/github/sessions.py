"""The GitHub session strategy: all events of one pull request (or issue) in order.

:class:`GitHubSessions` reads the event type from the ``event_type`` attribute
(set by :func:`~queue_runtime.github.webhook_to_message`) and the payload:

* ``pull_request``, ``pull_request_review``, ``pull_request_review_comment``,
  ``pull_request_review_thread``: ``owner/repo/pull/N``
* ``issues``: ``owner/repo/issues/N``
* ``issue_comment``: ``owner/repo/pull/N`` on a pull request (the payload has
  ``issue.pull_request``), else ``owner/repo/issues/N``
* ``check_run``, ``check_suite``: ``owner/repo/pull/N`` of the first associated pull
  request, when there is one
* anything else, or a payload without the number: ``fallback`` (``owner/repo``)

A comment on a pull request arrives as ``issue_comment`` and joins the pull
request's session, so a bot sees it in order with the pull request's own events.
``overrides`` replace the rule of an event type by any strategy, and ``fallback``
(by default the repository's ``full_name``; ``None`` for events without a repository)
decides for the rest: :class:`~queue_runtime.session_keys.NoOrdering` there handles
unmatched events concurrently.

Example:
    >>> from queue_runtime.github import GitHubSessions
    >>> from queue_runtime.session_keys import MessageFields
    >>> payload = {"repository": {"full_name": "octo/repo"},
    ...            "issue": {"number": 7, "pull_request": {"url": "..."}}}
    >>> GitHubSessions()(MessageFields(payload, {"event_type": "issue_comment"}))
    'octo/repo/pull/7'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from queue_runtime.errors import ValidationError
from queue_runtime.messages import SessionId
from queue_runtime.session_keys import (
    MessageFields,
    SessionKeyStrategy,
    SingleField,
    derive_session_id,
    to_session_id,
)

__all__ = ["EVENT_TYPE_ATTRIBUTE", "GITHUB_SESSIONS", "REPOSITORY", "GitHubSessions"]

EVENT_TYPE_ATTRIBUTE = "event_type"
"""The attribute holding ``X-GitHub-Event``: the one the actor ``Bot`` routes on by default."""

REPOSITORY = SingleField("repository.full_name")
"""``owner/repo``: the default fallback of :class:`GitHubSessions`."""

_PULL_REQUEST_EVENTS = frozenset(
    {
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_review_thread",
    }
)


def _thread(event: str | None, fields: MessageFields) -> tuple[str, str] | None:
    """(kind, path of the number) of the pull request or issue the event belongs to."""
    if event in _PULL_REQUEST_EVENTS:
        return "pull", "pull_request.number"
    if event == "issues":
        return "issues", "issue.number"
    if event == "issue_comment":
        return ("pull" if fields.has("issue.pull_request") else "issues"), "issue.number"
    if event in ("check_run", "check_suite"):
        return "pull", f"{event}.pull_requests.0.number"
    return None


@dataclass(frozen=True, slots=True)
class GitHubSessions:
    """Session ids for GitHub webhook events: ``owner/repo/pull/42``, ``owner/repo/issues/7``.

    ``overrides`` maps an event type to the strategy used for it instead of the
    built-in rule; ``fallback`` serves every event no rule matched.

    Example:
        >>> from queue_runtime.session_keys import CompositeKey, MessageFields, NoOrdering
        >>> sessions = GitHubSessions(
        ...     overrides={"push": CompositeKey(("repository.full_name", "ref"))},
        ...     fallback=NoOrdering(),
        ... )
        >>> push = {"repository": {"full_name": "o/r"}, "ref": "refs/heads/main"}
        >>> sessions(MessageFields(push, {"event_type": "push"}))
        'o/r/refs/heads/main'
        >>> sessions(MessageFields(push, {"event_type": "star"})) is None
        True
    """

    overrides: Mapping[str, SessionKeyStrategy] = field(default_factory=dict)
    fallback: SessionKeyStrategy = REPOSITORY

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, Mapping):
            raise ValidationError("must map event types to strategies", field="overrides")
        for event, strategy in self.overrides.items():
            if not isinstance(event, str) or not callable(strategy):
                raise ValidationError(
                    f"must map event types to strategies, got {event!r}", field="overrides"
                )
        if not callable(self.fallback):
            raise ValidationError("must be a strategy (a callable)", field="fallback")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def __call__(self, fields: MessageFields) -> SessionId | None:
        event = fields.attributes.get(EVENT_TYPE_ATTRIBUTE)
        if event is not None and event in self.overrides:
            return derive_session_id(self.overrides[event], fields)
        thread = _thread(event, fields)
        if thread is not None:
            kind, number_path = thread
            repository = fields.get("repository.full_name")
            number = fields.get(number_path)
            if repository is not None and number is not None:
                return to_session_id(f"{repository}/{kind}/{number}")
        return derive_session_id(self.fallback, fields)


GITHUB_SESSIONS = GitHubSessions()
"""The default GitHub strategy: the rules above, falling back to ``owner/repo``."""
