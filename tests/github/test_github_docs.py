"""The code in docs/github.md works as the doc says: its blocks run here, verbatim."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.github import sign
from queue_runtime.testing import github_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "github.md"
ASGI_ENDPOINT = "<!-- asgi-endpoint -->"
SECRET = "whsec-docs-Yk3-do-not-echo"
QUEUE = "github-events"

App = Callable[..., Awaitable[None]]


def snippet(marker: str = ASGI_ENDPOINT) -> str:
    """The python block right after ``marker`` in docs/github.md."""
    text = DOC.read_text()
    assert marker in text, f"docs/github.md lost its marker {marker}"
    block = re.match(r"\s*```python\n(.*?)\n```", text.split(marker, 1)[1], re.DOTALL)
    assert block is not None, f"no python block after {marker}"
    return block.group(1)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def scope(headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/github",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }


async def call(
    app: App, headers: dict[str, str], chunks: list[bytes], method: str = "POST"
) -> Response:
    """Drive ``app`` with fake ASGI ``receive``/``send``; the body arrives in ``chunks``."""
    incoming: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    response = Response()

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "http.response.start":
            assert response.status == 0, "response started twice"
            response.status = event["status"]
            response.headers = list(event.get("headers", []))
        else:
            assert event["type"] == "http.response.body"
            assert response.status, "body before the response started"
            response.body += event.get("body", b"")

    await app(scope(headers, method), receive, send)
    return response


@pytest.fixture
async def client() -> AsyncIterator[qr.QueueClient]:
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        yield client


def run_snippet() -> dict[str, Any]:
    """The module namespace the doc's code block defines."""
    names: dict[str, Any] = {"__name__": "docs_github_snippet"}
    exec(compile(snippet(), str(DOC), "exec"), names)
    return names


def make_app(names: dict[str, Any], client: qr.QueueClient) -> App:
    made: App = names["github_webhook_app"](client, QUEUE, qr.Secret(SECRET))
    return made


@pytest.fixture
def namespace() -> dict[str, Any]:
    return run_snippet()


@pytest.fixture
def app(namespace: dict[str, Any], client: qr.QueueClient) -> App:
    return make_app(namespace, client)


async def queued(client: qr.QueueClient) -> list[qr.ReceivedMessage]:
    return await client.receive_messages(QUEUE, 10, timeout=0.05)


async def test_signed_delivery_is_queued_and_answered_202(app: App, client: qr.QueueClient) -> None:
    event = github_events.issue_comment(number=5, repo="octo/repo", on_pull_request=True)
    response = await call(app, event.headers(SECRET, delivery_id="d-1"), [event.body])
    assert (response.status, response.body) == (202, b"queued")
    [message] = await queued(client)
    assert message.message_id == "d-1"
    assert message.session_id == "octo/repo/pull/5"
    assert message.attributes["event_type"] == "issue_comment"
    assert message.body == event.body


async def test_body_sent_in_chunks_is_reassembled(app: App, client: qr.QueueClient) -> None:
    event = github_events.push(commits=["one", "two", "three"])
    body = event.body
    chunks = [body[:10], b"", body[10:200], body[200:]]
    response = await call(app, event.headers(SECRET, delivery_id="d-2"), chunks)
    assert response.status == 202
    [message] = await queued(client)
    assert message.body == body


@pytest.mark.parametrize(
    "change",
    [
        {"X-Hub-Signature-256": None},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": "sha256=short"},
        {"X-Hub-Signature-256": None, "X-Hub-Signature": "sha1=" + "0" * 40},
    ],
)
async def test_bad_signature_is_answered_401_and_nothing_is_queued(
    app: App, client: qr.QueueClient, change: dict[str, str | None]
) -> None:
    event = github_events.pull_request()
    headers = event.headers(SECRET)
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    response = await call(app, headers, [event.body])
    assert response.status == 401
    assert SECRET.encode() not in response.body
    assert sign(event.body, SECRET).encode() not in response.body
    assert await queued(client) == []


async def test_delivery_signed_with_another_secret_is_answered_401(
    app: App, client: qr.QueueClient
) -> None:
    event = github_events.issues()
    response = await call(app, event.headers("some-other-secret"), [event.body])
    assert response.status == 401
    assert await queued(client) == []


async def test_signed_but_invalid_payload_is_answered_400_with_the_reason(
    app: App, client: qr.QueueClient
) -> None:
    body = b'{"action": '
    headers = github_events.pull_request().headers(SECRET)
    headers["X-Hub-Signature-256"] = sign(body, SECRET)
    response = await call(app, headers, [body])
    assert response.status == 400
    assert b"not valid JSON" in response.body
    assert SECRET.encode() not in response.body
    assert await queued(client) == []


async def test_missing_event_header_is_answered_400(app: App, client: qr.QueueClient) -> None:
    event = github_events.pull_request()
    headers = event.headers(SECRET)
    del headers["X-GitHub-Event"]
    response = await call(app, headers, [event.body])
    assert (response.status, response.body) == (400, b"X-GitHub-Event: header is missing or empty")
    assert await queued(client) == []


async def test_ping_is_answered_without_being_queued(app: App, client: qr.QueueClient) -> None:
    ping = github_events.WebhookEvent.from_payload("ping", {"zen": "Keep it logically awesome."})
    response = await call(app, ping.headers(SECRET), [ping.body])
    assert response.status == 200
    assert await queued(client) == []


async def test_other_methods_are_answered_405(app: App, client: qr.QueueClient) -> None:
    response = await call(app, {}, [b""], method="GET")
    assert response.status == 405
    assert await queued(client) == []


async def test_oversize_body_is_answered_413_before_it_is_read_whole(
    namespace: dict[str, Any], app: App, client: qr.QueueClient
) -> None:
    namespace["MAX_BODY"] = 100
    event = github_events.push()
    chunks = [event.body[:60], event.body[60:120], event.body[120:]]
    response = await call(app, event.headers(SECRET), chunks)
    assert response.status == 413
    assert await queued(client) == []


async def test_message_over_the_queue_limit_is_answered_413() -> None:
    event = github_events.pull_request(body="x" * 2000)
    async with await qr.create_client(qr.InMemoryConfig(max_message_size=1024)) as small:
        app = make_app(run_snippet(), small)
        response = await call(app, event.headers(SECRET), [event.body])
        assert response.status == 413
        assert await queued(small) == []


async def test_queue_failure_is_answered_503() -> None:
    event = github_events.issues()
    config = qr.QueueConfig(
        provider=qr.InMemoryConfig(create_queues=False),
        retry=qr.RetryPolicy(max_attempts=1),
    )
    async with await qr.create_client(config) as client:
        app = make_app(run_snippet(), client)
        response = await call(app, event.headers(SECRET), [event.body])
        assert response.status == 503


async def test_client_disconnecting_mid_body_queues_nothing(
    app: App, client: qr.QueueClient
) -> None:
    event = github_events.issues()
    headers = event.headers(SECRET)
    incoming = [{"type": "http.request", "body": event.body[:10], "more_body": True}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope(headers), receive, send)
    assert sent == []
    assert await queued(client) == []


async def test_lifespan_scope_is_left_alone(app: App) -> None:
    async def receive() -> MutableMapping[str, Any]:
        raise AssertionError("the app must not read lifespan events")

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError("the app must not answer lifespan events")

    await app({"type": "lifespan"}, receive, send)


def test_github_sessions_example_orders_pushes_per_branch() -> None:
    push = github_events.push(repo="octo/repo", ref="refs/heads/dev")
    names: dict[str, Any] = {"headers": push.headers(SECRET), "body": push.body, "secret": SECRET}
    exec(compile(snippet("<!-- github-sessions -->"), str(DOC), "exec"), names)
    assert names["message"].session_id == "octo/repo/refs/heads/dev"
    sessions = names["sessions"]
    assert github_events.check_run(pull_requests=[1]).message(sessions=sessions).session_id is None
    star = github_events.WebhookEvent.from_payload("star", {"repository": {"full_name": "o/r"}})
    assert star.message(sessions=sessions).session_id is None
    assert star.message().session_id == "o/r"  # the default would have ordered it
    assert github_events.issues(number=4).message(sessions=sessions).session_id is not None


def test_test_events_example_runs() -> None:
    names: dict[str, Any] = {"secret": SECRET}
    exec(compile(snippet("<!-- test-events -->"), str(DOC), "exec"), names)
    assert names["headers"]["X-GitHub-Delivery"] == "d-1"
    assert names["message"].message_id == "d-1"
