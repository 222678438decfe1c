"""GitHub webhooks: signature checks, messages, session ids and test events."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import queue_runtime as qr
from queue_runtime.github import (
    GitHubSessions,
    InvalidWebhookError,
    WebhookSignatureError,
    sign,
    verify_signature,
    webhook_to_message,
)
from queue_runtime.session_keys import CompositeKey, MessageFields, NoOrdering
from queue_runtime.testing import github_events

SECRET = "whsec-Zq8!kP2-do-not-leak"
EVENT = github_events.pull_request("opened", number=42, repo="octo/repo")


def signed(
    event: github_events.WebhookEvent = EVENT, secret: str = SECRET, **changes: str | None
) -> dict[str, str]:
    """Headers GitHub would send, with some replaced (``None`` removes one)."""
    headers = event.headers(secret, delivery_id="delivery-1")
    for name, value in changes.items():
        header = name.replace("_", "-")
        if value is None:
            del headers[header]
        else:
            headers[header] = value
    return headers


def expected_hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rejected(headers: dict[str, str], body: bytes = EVENT.body) -> WebhookSignatureError:
    with pytest.raises(WebhookSignatureError) as caught:
        webhook_to_message(headers, body, SECRET)
    return caught.value


# -- signature ----------------------------------------------------------------


def test_correctly_signed_delivery_becomes_a_message() -> None:
    message = webhook_to_message(signed(), EVENT.body, SECRET)
    assert message.body == EVENT.body


@pytest.mark.parametrize("secret", [SECRET, SECRET.encode(), qr.Secret(SECRET)])
def test_secret_may_be_str_bytes_or_secret(secret: str | bytes | qr.Secret) -> None:
    assert webhook_to_message(signed(), EVENT.body, secret).message_id == "delivery-1"
    assert sign(EVENT.body, secret) == "sha256=" + expected_hex(EVENT.body)


def test_sign_matches_an_independent_hmac_sha256() -> None:
    assert signed()["X-Hub-Signature-256"] == "sha256=" + expected_hex(EVENT.body)


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_tampering_with_a_signed_body_is_rejected(extra: bytes, data: st.DataObject) -> None:
    body = EVENT.body
    position = data.draw(st.integers(0, len(body) - 1))
    tampered = data.draw(
        st.sampled_from(
            [
                body[:position] + bytes([body[position] ^ extra[0] or 1]) + body[position + 1 :],
                body + extra,
                extra + body,
                body[:position],
                body[:position] + extra + body[position:],
            ]
        )
    )
    assume(tampered != body)
    error = rejected(signed(), tampered)
    assert "does not match" in str(error)


@given(st.text(min_size=1, max_size=40))
def test_a_signature_made_with_another_secret_is_rejected(other: str) -> None:
    assume(other != SECRET)
    error = rejected(signed(secret=other))
    assert "wrong secret" in str(error)


def test_missing_signature_header_is_rejected() -> None:
    error = rejected(signed(X_Hub_Signature=None, X_Hub_Signature_256=None))
    assert "no X-Hub-Signature-256" in str(error)


def test_sha1_only_signature_is_rejected_even_when_it_is_correct() -> None:
    headers = signed(X_Hub_Signature_256=None)
    sha1 = hmac.new(SECRET.encode(), EVENT.body, hashlib.sha1).hexdigest()
    assert headers["X-Hub-Signature"] == "sha1=" + sha1
    error = rejected(headers)
    assert "only with SHA-1" in str(error)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sha256",
        "sha256=",
        "sha1=" + "a" * 40,
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha256=" + "g" * 64,
        "SHA256=" + "a" * 64,
        "sha256 = " + "a" * 64,
        "sha256=" + "a" * 32 + " " + "a" * 31,
    ],
)
def test_malformed_signature_header_is_rejected(header: str) -> None:
    error = rejected(signed(X_Hub_Signature_256=header))
    assert "malformed" in str(error)


def test_signature_with_uppercase_hex_is_accepted() -> None:
    header = "sha256=" + expected_hex(EVENT.body).upper()
    assert webhook_to_message(signed(X_Hub_Signature_256=header), EVENT.body, SECRET)


def test_header_names_are_case_insensitive() -> None:
    for transform in (str.lower, str.upper, str.title):
        headers = {transform(name): value for name, value in signed().items()}
        assert webhook_to_message(headers, EVENT.body, SECRET).message_id == "delivery-1"


def test_signature_is_checked_before_the_payload_is_read() -> None:
    body = b"not json"
    error = rejected(signed(X_GitHub_Event=None), body)
    assert "does not match" in str(error)


@pytest.mark.parametrize(
    "headers",
    [
        signed(X_Hub_Signature=None, X_Hub_Signature_256=None),
        signed(X_Hub_Signature_256=None),
        signed(X_Hub_Signature_256="sha256=nope"),
        signed(secret="wrong"),
    ],
)
def test_errors_never_show_the_secret_or_the_expected_signature(headers: dict[str, str]) -> None:
    error = rejected(headers)
    shown = [str(error), repr(error), str(error.args), str(error.context)]
    for text in shown:
        assert SECRET not in text
        assert expected_hex(EVENT.body) not in text
        assert expected_hex(EVENT.body).upper() not in text


def test_signature_error_is_an_authentication_error() -> None:
    error = rejected(signed(secret="wrong"))
    assert isinstance(error, qr.AuthenticationError)
    assert not error.transient


def test_empty_secret_is_a_configuration_error() -> None:
    for empty in ("", b"", qr.Secret("")):
        with pytest.raises(qr.ConfigurationError, match="empty"):
            webhook_to_message(signed(), EVENT.body, empty)


def test_secret_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str, bytes or Secret, not int"):
        webhook_to_message(signed(), EVENT.body, 12345)  # type: ignore[arg-type]


def test_text_body_is_a_type_error_since_the_signature_covers_bytes() -> None:
    with pytest.raises(TypeError, match="raw request bytes"):
        webhook_to_message(signed(), EVENT.body.decode(), SECRET)  # type: ignore[arg-type]


def test_verify_signature_accepts_a_valid_delivery() -> None:
    verify_signature(signed(), EVENT.body, SECRET)  # raises if not


# -- the message ----------------------------------------------------------------


def test_delivery_id_is_the_message_id_so_redeliveries_share_it() -> None:
    first = webhook_to_message(signed(), EVENT.body, SECRET)
    again = webhook_to_message(signed(), EVENT.body, SECRET)
    assert first.message_id == again.message_id == "delivery-1"
    assert first == again


def test_attributes_carry_event_type_delivery_hook_and_action() -> None:
    message = webhook_to_message(signed(X_GitHub_Hook_ID="77"), EVENT.body, SECRET)
    assert dict(message.attributes) == {
        "event_type": "pull_request",
        "github.delivery": "delivery-1",
        "github.hook_id": "77",
        "github.action": "opened",
    }
    assert message.content_type == "application/json"


def test_events_without_action_or_hook_id_get_no_such_attribute() -> None:
    push = github_events.push(repo="octo/repo")
    message = webhook_to_message(signed(push, X_GitHub_Hook_ID=None), push.body, SECRET)
    assert set(message.attributes) == {"event_type", "github.delivery"}


@pytest.mark.parametrize("header", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_event_or_delivery_header_is_invalid(header: str) -> None:
    headers = signed()
    headers[header] = " "
    with pytest.raises(InvalidWebhookError) as caught:
        webhook_to_message(headers, EVENT.body, SECRET)
    assert caught.value.field == header
    del headers[header]
    with pytest.raises(InvalidWebhookError, match=header):
        webhook_to_message(headers, EVENT.body, SECRET)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "not valid JSON"),
        (b'{"action": "opened"', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"text"', "must be a JSON object, not str"),
    ],
)
def test_signed_body_that_is_not_a_json_object_is_invalid(body: bytes, problem: str) -> None:
    headers = signed(X_Hub_Signature_256=sign(body, SECRET))
    with pytest.raises(InvalidWebhookError, match=problem) as caught:
        webhook_to_message(headers, body, SECRET)
    assert isinstance(caught.value, qr.ValidationError)
    assert caught.value.field == "body"


def test_form_encoded_delivery_is_unwrapped_to_its_json_payload() -> None:
    body = urlencode({"payload": EVENT.body.decode()}).encode()
    headers = signed(
        Content_Type="application/x-www-form-urlencoded", X_Hub_Signature_256=sign(body, SECRET)
    )
    message = webhook_to_message(headers, body, SECRET)
    assert message.body == EVENT.body
    assert message.session_id == "octo/repo/pull/42"


@pytest.mark.parametrize(
    "body", [b"payload=%7B%7D&payload=%7B%7D", b"other=1", b"payload=%ff", b"=&="]
)
def test_form_encoded_delivery_without_one_json_payload_is_invalid(body: bytes) -> None:
    headers = signed(
        Content_Type="application/x-www-form-urlencoded", X_Hub_Signature_256=sign(body, SECRET)
    )
    with pytest.raises(InvalidWebhookError):
        webhook_to_message(headers, body, SECRET)


# -- session ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "session_id"),
    [
        (
            github_events.pull_request("synchronize", number=42, repo="octo/repo"),
            "octo/repo/pull/42",
        ),
        (github_events.pull_request_review(number=5, repo="octo/repo"), "octo/repo/pull/5"),
        (github_events.issues("opened", number=7, repo="octo/repo"), "octo/repo/issues/7"),
        (github_events.issue_comment(number=7, repo="octo/repo"), "octo/repo/issues/7"),
        (
            github_events.issue_comment(number=42, repo="octo/repo", on_pull_request=True),
            "octo/repo/pull/42",
        ),
        (github_events.push(repo="octo/repo"), "octo/repo"),
        (github_events.check_run(repo="octo/repo", pull_requests=[9, 10]), "octo/repo/pull/9"),
        (github_events.check_run(repo="octo/repo"), "octo/repo"),
    ],
)
def test_session_id_follows_the_pull_request_or_issue(
    event: github_events.WebhookEvent, session_id: str
) -> None:
    assert event.message().session_id == session_id
    message = webhook_to_message(event.headers(SECRET), event.body, SECRET)
    assert message.session_id == session_id


@pytest.mark.parametrize(
    ("event_type", "payload", "session_id"),
    [
        ("pull_request_review_comment", {"pull_request": {"number": 3}}, "o/r/pull/3"),
        ("pull_request_review_thread", {"pull_request": {"number": 4}}, "o/r/pull/4"),
        ("check_suite", {"check_suite": {"pull_requests": [{"number": 5}]}}, "o/r/pull/5"),
        ("check_suite", {"check_suite": {"pull_requests": []}}, "o/r"),
        ("pull_request", {"action": "opened"}, "o/r"),  # no number: the fallback
        ("release", {"release": {"id": 1}}, "o/r"),
    ],
)
def test_other_github_events_follow_the_documented_rules(
    event_type: str, payload: dict[str, Any], session_id: str
) -> None:
    full = {**payload, "repository": {"full_name": "o/r"}}
    assert (
        github_events.WebhookEvent.from_payload(event_type, full).message().session_id == session_id
    )


def test_events_without_a_repository_have_no_session() -> None:
    installation = github_events.WebhookEvent.from_payload("installation", {"action": "created"})
    assert installation.message().session_id is None


def test_comments_on_a_pull_request_stay_in_order_with_it() -> None:
    sessions = {
        github_events.pull_request("opened", number=8).message().session_id,
        github_events.issue_comment(number=8, on_pull_request=True).message().session_id,
        github_events.pull_request_review(number=8).message().session_id,
        github_events.check_run(pull_requests=[8]).message().session_id,
        github_events.pull_request("closed", number=8, merged=True).message().session_id,
    }
    assert sessions == {"octo-org/hello-world/pull/8"}


async def test_a_pull_requests_events_arrive_in_one_session_in_send_order() -> None:
    sent = [
        github_events.pull_request("opened", number=8).message(delivery_id="d-1"),
        github_events.issue_comment(number=8, on_pull_request=True).message(delivery_id="d-2"),
        github_events.issues("opened", number=8).message(delivery_id="d-3"),  # another session
        github_events.pull_request("closed", number=8).message(delivery_id="d-4"),
    ]
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        await client.send_messages("github-events", sent)
        session = await client.accept_session(
            "github-events", "octo-org/hello-world/pull/8", timeout=1.0
        )
        assert session is not None
        async with session:
            received = await session.receive_messages(10, timeout=0.2)
            ids = [message.message_id for message in received]
            while len(ids) < 3 and received:
                for message in received:
                    await session.complete_message(message.receipt)
                received = await session.receive_messages(10, timeout=0.2)
                ids += [message.message_id for message in received]
    assert ids == ["d-1", "d-2", "d-4"]


def test_overrides_replace_the_rule_of_an_event_type() -> None:
    sessions = GitHubSessions(
        overrides={"push": CompositeKey(("repository.full_name", "ref"), separator="@")}
    )
    push = github_events.push(repo="octo/repo", ref="refs/heads/dev")
    assert push.message(sessions=sessions).session_id == "octo/repo@refs/heads/dev"
    issue = github_events.issues(number=3, repo="octo/repo")
    assert issue.message(sessions=sessions).session_id == "octo/repo/issues/3"


def test_override_with_no_ordering_processes_that_event_concurrently() -> None:
    sessions = GitHubSessions(overrides={"pull_request": NoOrdering()})
    assert github_events.pull_request().message(sessions=sessions).session_id is None


def test_fallback_no_ordering_leaves_only_pull_requests_and_issues_ordered() -> None:
    sessions = GitHubSessions(fallback=NoOrdering())
    assert github_events.push().message(sessions=sessions).session_id is None
    assert github_events.check_run().message(sessions=sessions).session_id is None
    assert github_events.issues(number=2).message(sessions=sessions).session_id == (
        "octo-org/hello-world/issues/2"
    )


def test_any_strategy_can_replace_the_github_one() -> None:
    message = github_events.pull_request().message(
        sessions=lambda fields: fields.get("sender.login")
    )
    assert message.session_id == "octocat"
    assert github_events.pull_request().message(sessions=NoOrdering()).session_id is None


def test_long_repository_names_still_give_distinct_valid_session_ids() -> None:
    repo = "an-owner-with-a-long-name/" + "r" * 100
    first = github_events.pull_request(number=1, repo=repo).message().session_id
    second = github_events.pull_request(number=2, repo=repo).message().session_id
    assert first is not None
    assert second is not None
    assert len(first) == len(second) == 128
    assert first != second


def test_github_strategy_reads_the_event_type_attribute() -> None:
    payload = {"repository": {"full_name": "o/r"}, "issue": {"number": 1}}
    assert GitHubSessions()(MessageFields(payload, {"event_type": "issues"})) == "o/r/issues/1"
    assert GitHubSessions()(MessageFields(payload, {})) == "o/r"


@pytest.mark.parametrize(
    "arguments",
    [
        {"overrides": [("push", NoOrdering())]},
        {"overrides": {"push": "not a strategy"}},
        {"overrides": {1: NoOrdering()}},
        {"fallback": None},
    ],
)
def test_bad_github_strategy_settings_are_rejected(arguments: dict[str, Any]) -> None:
    with pytest.raises(qr.ValidationError):
        GitHubSessions(**arguments)


def test_github_strategy_overrides_cannot_be_changed_afterwards() -> None:
    overrides: dict[str, Any] = {"push": NoOrdering()}
    sessions = GitHubSessions(overrides=overrides)
    overrides["issues"] = NoOrdering()
    assert "issues" not in sessions.overrides
    assert github_events.issues().message(sessions=sessions).session_id is not None


# -- test events --------------------------------------------------------------------


def test_builders_are_deterministic_given_their_arguments() -> None:
    assert github_events.pull_request(number=3).body == github_events.pull_request(number=3).body
    assert github_events.push(commits=["a"]).body == github_events.push(commits=["a"]).body
    first = github_events.issues(number=3).message(delivery_id="d-9")
    assert first == github_events.issues(number=3).message(delivery_id="d-9")


def test_each_message_gets_a_fresh_delivery_id_unless_one_is_given() -> None:
    ids = {github_events.push().message().message_id for _ in range(5)}
    assert len(ids) == 5
    assert github_events.push().headers(SECRET)["X-GitHub-Delivery"] not in ids


def test_headers_are_signed_like_github_signs_them() -> None:
    headers = EVENT.headers(qr.Secret(SECRET), delivery_id="d-1", hook_id=9)
    assert headers["X-Hub-Signature-256"] == "sha256=" + expected_hex(EVENT.body)
    assert headers["X-GitHub-Event"] == "pull_request"
    assert headers["X-GitHub-Hook-ID"] == "9"
    assert headers["Content-Type"] == "application/json"
    verify_signature(headers, EVENT.body, SECRET)


def test_payload_has_the_fields_bots_read() -> None:
    payload = github_events.pull_request(
        "closed",
        number=12,
        repo="octo/repo",
        title="Fix it",
        merged=True,
        head_ref="fix",
        head_sha="a" * 40,
        sender="hubot",
        installation_id=77,
    ).payload
    assert payload["action"] == "closed"
    assert payload["number"] == 12
    assert payload["sender"]["login"] == "hubot"
    assert payload["installation"] == {"id": 77}
    repository = payload["repository"]
    assert (repository["owner"]["login"], repository["name"], repository["full_name"]) == (
        "octo",
        "repo",
        "octo/repo",
    )
    pull = payload["pull_request"]
    assert (pull["number"], pull["title"], pull["state"], pull["merged"]) == (
        12,
        "Fix it",
        "closed",
        True,
    )
    assert (pull["head"]["ref"], pull["head"]["sha"]) == ("fix", "a" * 40)
    assert pull["base"]["ref"] == "main"
    assert len(pull["base"]["sha"]) == 40


def test_issue_comment_payload_marks_pull_request_comments() -> None:
    on_issue = github_events.issue_comment(body="hi", commenter="hubot").payload
    on_pull = github_events.issue_comment(on_pull_request=True).payload
    assert "pull_request" not in on_issue["issue"]
    assert on_issue["comment"]["body"] == "hi"
    assert on_issue["comment"]["user"]["login"] == "hubot"
    assert on_pull["issue"]["pull_request"]["html_url"].endswith("/pull/1")


def test_push_payload_lists_commits_between_before_and_after() -> None:
    payload = github_events.push(
        ref="refs/heads/dev", commits=["one", "two"], before="b" * 40
    ).payload
    assert "action" not in payload
    assert payload["ref"] == "refs/heads/dev"
    assert payload["before"] == "b" * 40
    assert [commit["message"] for commit in payload["commits"]] == ["one", "two"]
    assert payload["after"] == payload["commits"][-1]["id"] == payload["head_commit"]["id"]


def test_check_run_payload_lists_associated_pull_requests() -> None:
    run = github_events.check_run(
        "created", status="queued", pull_requests=[4], head_sha="c" * 40
    ).payload["check_run"]
    assert (run["status"], run["conclusion"], run["head_sha"]) == ("queued", None, "c" * 40)
    assert [pull["number"] for pull in run["pull_requests"]] == [4]


def test_review_payload_carries_the_review_and_its_pull_request() -> None:
    payload = github_events.pull_request_review(
        number=6, state="commented", reviewer="hubot"
    ).payload
    assert payload["review"]["state"] == "commented"
    assert payload["review"]["commit_id"] == payload["pull_request"]["head"]["sha"]
    assert payload["sender"]["login"] == "hubot"


def test_payload_is_a_fresh_copy_each_time() -> None:
    payload = EVENT.payload
    payload["action"] = "changed"
    assert EVENT.payload["action"] == "opened"
    assert orjson.loads(EVENT.body)["action"] == "opened"


def test_repository_without_owner_is_rejected_by_builders() -> None:
    for repo in ("no-owner", "/name", "owner/", "a/b/c"):
        with pytest.raises(qr.ValidationError, match="owner/name"):
            github_events.issues(repo=repo)


def test_installation_can_be_left_out_for_repository_webhooks() -> None:
    assert "installation" not in github_events.push(installation_id=None).payload
