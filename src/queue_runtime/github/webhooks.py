"""GitHub webhook deliveries to queue messages, after checking their signature.

:func:`webhook_to_message` is the whole ingestion step of a bot's web endpoint:
verify ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the webhook
secret, compared in constant time), then build a :class:`~queue_runtime.Message`:

* ``message_id`` = ``X-GitHub-Delivery``: a redelivery carries the same id and
  body, so it can be recognised as a repeat (SQS FIFO queues drop an identical
  message sent again within five minutes);
* ``body`` = the JSON payload exactly as received (``content_type``
  ``application/json``; a form-encoded delivery's ``payload`` field is unwrapped);
* ``session_id`` from a session-key strategy, :class:`GitHubSessions` by default;
* attributes: ``event_type`` (``X-GitHub-Event``, what the actor ``Bot`` routes on
  by default), ``github.delivery`` (``X-GitHub-Delivery``), ``github.hook_id``
  (``X-GitHub-Hook-ID``, when sent) and ``github.action`` (the payload's
  ``action``, when it has one).

A bad or missing signature raises :class:`WebhookSignatureError` (an
:class:`~queue_runtime.errors.AuthenticationError`: answer 401); a signed but
unusable request raises :class:`InvalidWebhookError` (a
:class:`~queue_runtime.errors.ValidationError`: answer 400). Neither ever contains
the secret or the expected signature.

Example:
    >>> from queue_runtime.github import sign, webhook_to_message
    >>> body = b'{"action":"opened","number":1,"pull_request":{"number":1},'
    >>> body += b'"repository":{"full_name":"octo/repo"}}'
    >>> headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-1",
    ...            "X-Hub-Signature-256": sign(body, "s3cr3t")}
    >>> message = webhook_to_message(headers, body, "s3cr3t")
    >>> message.message_id, message.session_id, message.attributes["github.action"]
    ('d-1', 'octo/repo/pull/1', 'opened')
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import parse_qs

import orjson

from queue_runtime.config import Secret
from queue_runtime.errors import AuthenticationError, ConfigurationError, ValidationError
from queue_runtime.github.sessions import EVENT_TYPE_ATTRIBUTE, GITHUB_SESSIONS
from queue_runtime.messages import Message
from queue_runtime.session_keys import MessageFields, SessionKeyStrategy, derive_session_id

__all__ = [
    "ACTION_ATTRIBUTE",
    "DELIVERY_ATTRIBUTE",
    "EVENT_TYPE_ATTRIBUTE",
    "HOOK_ID_ATTRIBUTE",
    "InvalidWebhookError",
    "WebhookSecret",
    "WebhookSignatureError",
    "sign",
    "verify_signature",
    "webhook_to_message",
]

DELIVERY_ATTRIBUTE = "github.delivery"
"""The attribute holding ``X-GitHub-Delivery`` (also the message id)."""
HOOK_ID_ATTRIBUTE = "github.hook_id"
"""The attribute holding ``X-GitHub-Hook-ID``, when GitHub sent one."""
ACTION_ATTRIBUTE = "github.action"
"""The attribute holding the payload's ``action`` (``opened``, ``created``...), when present."""

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_FORM = "application/x-www-form-urlencoded"

WebhookSecret: TypeAlias = str | bytes | Secret
"""The webhook secret as text, bytes or a :class:`~queue_runtime.Secret` (text is UTF-8)."""


class WebhookSignatureError(AuthenticationError):
    """The delivery's signature is missing, malformed, SHA-1 only, or does not match.

    Answer 401. The message names the problem, never the secret or the expected value.
    """


class InvalidWebhookError(ValidationError):
    """A correctly signed delivery that cannot become a message (headers, JSON). Answer 400."""


def _key(secret: WebhookSecret) -> bytes:
    if isinstance(secret, Secret):
        key = secret.reveal().encode("utf-8", "surrogatepass")
    elif isinstance(secret, str):
        key = secret.encode("utf-8", "surrogatepass")
    elif isinstance(secret, bytes | bytearray):
        key = bytes(secret)
    else:
        raise TypeError(
            f"the webhook secret must be str, bytes or Secret, not {type(secret).__name__}"
        )
    if not key:
        raise ConfigurationError("the webhook secret is empty: anyone could sign deliveries")
    return key


def _raw(body: bytes) -> bytes:
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if not isinstance(body, bytes):
        raise TypeError(
            f"the body must be the raw request bytes, not {type(body).__name__}: "
            "the signature covers the exact bytes GitHub sent"
        )
    return body


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("headers must be a mapping of str to str (decode ASGI bytes first)")
        lowered[name.lower()] = value
    return lowered


def sign(body: bytes, secret: WebhookSecret) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``: ``sha256=<hex>``.

    For tests and for relaying deliveries; :func:`verify_signature` checks it.

    Example:
        >>> signature = sign(b"{}", "s3cr3t")
        >>> signature[:7], len(signature)
        ('sha256=', 71)
    """
    return "sha256=" + hmac.new(_key(secret), _raw(body), hashlib.sha256).hexdigest()


def verify_signature(headers: Mapping[str, str], body: bytes, secret: WebhookSecret) -> None:
    """Check ``X-Hub-Signature-256`` of a delivery; raise :class:`WebhookSignatureError` if bad.

    Header names are case-insensitive. The SHA-1 ``X-Hub-Signature`` is not
    accepted on its own: SHA-1 HMACs are deprecated by GitHub.

    Example:
        >>> verify_signature({"x-hub-signature-256": sign(b"{}", "k")}, b"{}", "k")
        >>> verify_signature({"x-hub-signature-256": sign(b"{}", "k")}, b"{ }", "k")
        Traceback (most recent call last):
        ...
        queue_runtime.github.webhooks.WebhookSignatureError: X-Hub-Signature-256 does not match...
    """
    _verify(_lowered(headers), _raw(body), _key(secret))


def _verify(lowered: Mapping[str, str], raw: bytes, key: bytes) -> None:
    """:func:`verify_signature` on headers, body and key already checked and normalised."""
    header = lowered.get("x-hub-signature-256")
    if header is None:
        if "x-hub-signature" in lowered:
            raise WebhookSignatureError(
                "the delivery is signed only with SHA-1 (X-Hub-Signature); "
                "X-Hub-Signature-256 is required"
            )
        raise WebhookSignatureError(
            "the delivery has no X-Hub-Signature-256 header: is a secret set on the GitHub webhook?"
        )
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise WebhookSignatureError(
            "X-Hub-Signature-256 is malformed: expected 'sha256=' followed by 64 hex digits"
        )
    expected = hmac.new(key, raw, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(match.group(1))):
        raise WebhookSignatureError(
            "X-Hub-Signature-256 does not match the body: wrong secret, or the body was altered"
        )


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower(), "").strip()
    if not value:
        raise InvalidWebhookError("header is missing or empty", field=name)
    return value


def _json_body(headers: Mapping[str, str], raw: bytes) -> bytes:
    """The JSON document of the delivery: the body, or a form delivery's ``payload``."""
    if headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
        return raw
    try:
        form = parse_qs(
            raw.decode("ascii"), strict_parsing=True, errors="strict", max_num_fields=10
        )
    except ValueError as exc:
        raise InvalidWebhookError("is not a valid form-encoded body", field="body") from exc
    payload = form.get("payload")
    if payload is None or len(payload) != 1:
        raise InvalidWebhookError("a form-encoded delivery needs one 'payload' field", field="body")
    return payload[0].encode()


def _payload(document: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise InvalidWebhookError(f"is not valid JSON: {exc}", field="body") from exc
    if not isinstance(payload, dict):
        raise InvalidWebhookError(
            f"must be a JSON object, not {type(payload).__name__}", field="body"
        )
    return payload


def webhook_to_message(
    headers: Mapping[str, str],
    body: bytes,
    secret: WebhookSecret,
    *,
    sessions: SessionKeyStrategy = GITHUB_SESSIONS,
) -> Message:
    """Verify a GitHub webhook delivery and turn it into a queue message.

    ``headers`` are the request headers (any case), ``body`` the raw request bytes
    and ``secret`` the webhook secret. ``sessions`` derives the session id
    (default :class:`GitHubSessions`; :class:`~queue_runtime.session_keys.NoOrdering`
    for none). Raises :class:`WebhookSignatureError` (401) before looking at
    anything else, then :class:`InvalidWebhookError` (400) for a missing
    ``X-GitHub-Event`` or ``X-GitHub-Delivery`` or a body that is not a JSON object.

    Example:
        >>> from queue_runtime.github import sign
        >>> body = b'{"repository": {"full_name": "octo/repo"}}'
        >>> headers = {"x-github-event": "star", "x-github-delivery": "d-2",
        ...            "x-hub-signature-256": sign(body, "k")}
        >>> webhook_to_message(headers, body, "k")
        Message(message_id='d-2', session_id='octo/repo', body=<42 bytes>)
    """
    key = _key(secret)  # checked in verify_signature's order: secret, body, headers
    raw = _raw(body)
    lowered = _lowered(headers)
    _verify(lowered, raw, key)
    attributes = {
        EVENT_TYPE_ATTRIBUTE: _required(lowered, "X-GitHub-Event"),
        DELIVERY_ATTRIBUTE: _required(lowered, "X-GitHub-Delivery"),
    }
    hook_id = lowered.get("x-github-hook-id", "").strip()
    if hook_id:
        attributes[HOOK_ID_ATTRIBUTE] = hook_id
    document = _json_body(lowered, raw)
    payload = _payload(document)
    action = payload.get("action")
    if isinstance(action, str) and action:
        attributes[ACTION_ATTRIBUTE] = action
    return Message(
        document,
        attributes=attributes,
        session_id=derive_session_id(sessions, MessageFields(payload, attributes)),
        message_id=attributes[DELIVERY_ATTRIBUTE],
        content_type="application/json",
    )
