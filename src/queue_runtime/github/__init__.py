"""First-class GitHub webhooks: verified deliveries become ordered queue messages.

* :func:`webhook_to_message` checks ``X-Hub-Signature-256`` and builds the
  :class:`~queue_runtime.Message` (delivery id as message id, event type in the
  ``event_type`` attribute, session id per pull request or issue).
* :class:`GitHubSessions` is the session-key strategy behind it (docs/design.md#session-keys).
* Realistic deliveries for tests are built by :mod:`queue_runtime.testing.github_events`.

See ``docs/github.md`` for an ASGI endpoint.

Example:
    >>> from queue_runtime.github import sign, webhook_to_message
    >>> body = b'{"repository": {"full_name": "octo/repo"}, "issue": {"number": 7}}'
    >>> headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-7",
    ...            "X-Hub-Signature-256": sign(body, "s3cret")}
    >>> webhook_to_message(headers, body, secret="s3cret").session_id
    'octo/repo/issues/7'
"""

from queue_runtime.github.sessions import (
    EVENT_TYPE_ATTRIBUTE,
    GITHUB_SESSIONS,
    REPOSITORY,
    GitHubSessions,
)
from queue_runtime.github.webhooks import (
    ACTION_ATTRIBUTE,
    DELIVERY_ATTRIBUTE,
    HOOK_ID_ATTRIBUTE,
    InvalidWebhookError,
    WebhookSecret,
    WebhookSignatureError,
    sign,
    verify_signature,
    webhook_to_message,
)

__all__ = [
    "ACTION_ATTRIBUTE",
    "DELIVERY_ATTRIBUTE",
    "EVENT_TYPE_ATTRIBUTE",
    "GITHUB_SESSIONS",
    "HOOK_ID_ATTRIBUTE",
    "REPOSITORY",
    "GitHubSessions",
    "InvalidWebhookError",
    "WebhookSecret",
    "WebhookSignatureError",
    "sign",
    "verify_signature",
    "webhook_to_message",
]
