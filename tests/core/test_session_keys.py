"""Session-key strategies derive valid session ids from message fields (design.md#session-keys)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import queue_runtime as qr
from queue_runtime.session_keys import (
    CompositeKey,
    Fallback,
    MessageFields,
    NoOrdering,
    SingleField,
    derive_session_id,
    to_session_id,
)

PAYLOAD: dict[str, Any] = {
    "repository": {"full_name": "octo/repo", "private": False, "stars": 1.5},
    "number": 42,
    "title": "",
    "labels": ["bug", "help"],
    "check_run": {"pull_requests": [{"number": 3}, {"number": 4}]},
    "nothing": None,
}
FIELDS = MessageFields(PAYLOAD, {"tenant": "acme", "number": "from-attribute"})


def is_valid_session_id(text: str) -> bool:
    """The rule of design.md#identifiers-and-messages, written apart from the implementation."""
    return 1 <= len(text) <= 128 and all(0x20 <= ord(char) <= 0x7E for char in text)


valid_session_ids = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


# -- MessageFields ----------------------------------------------------------


def test_dotted_path_reads_nested_payload_fields() -> None:
    assert FIELDS.get("repository.full_name") == "octo/repo"


def test_number_in_path_picks_a_list_item() -> None:
    assert FIELDS.get("check_run.pull_requests.1.number") == "4"
    assert FIELDS.get("labels.0") == "bug"


def test_attribute_of_the_exact_name_wins_over_the_payload() -> None:
    assert FIELDS.get("number") == "from-attribute"
    assert MessageFields(PAYLOAD).get("number") == "42"


@pytest.mark.parametrize(
    "path",
    [
        "missing",
        "repository.missing",
        "repository.full_name.deeper",  # through a string
        "labels.7",  # past the end
        "labels.first",  # not an index
        "labels.-1",  # negative indexes are not supported
        "labels.\u0661",  # a non-ASCII digit (ARABIC-INDIC ONE)
        "title",  # empty string
        "repository.private",  # boolean
        "repository.stars",  # float
        "nothing",  # null
        "repository",  # object
        "labels",  # list
    ],
)
def test_missing_or_unusable_values_read_as_none(path: str) -> None:
    assert FIELDS.get(path) is None


def test_has_tells_present_values_from_absent_and_null_ones() -> None:
    assert FIELDS.has("repository")
    assert FIELDS.has("tenant")
    assert FIELDS.has("title")
    assert not FIELDS.has("nothing")
    assert not FIELDS.has("repository.owner")


def test_find_returns_the_raw_payload_value() -> None:
    assert FIELDS.find("check_run.pull_requests.0") == {"number": 3}


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4), st.text(max_size=12))
def test_reading_any_path_of_any_payload_never_raises(payload: dict[str, Any], path: str) -> None:
    value = MessageFields(payload).get(path)
    assert value is None or (isinstance(value, str) and value != "")


# -- to_session_id ------------------------------------------------------------


@given(valid_session_ids)
def test_valid_values_are_kept_as_they_are(value: str) -> None:
    assert to_session_id(value) == value


@given(st.text(min_size=1, max_size=400))
def test_any_text_becomes_a_valid_session_id(value: str) -> None:
    session_id = to_session_id(value)
    assert isinstance(session_id, qr.SessionId)
    assert is_valid_session_id(session_id)
    assert to_session_id(value) == session_id  # deterministic


def test_non_ascii_characters_are_percent_encoded() -> None:
    assert to_session_id("refs/heads/fünf") == "refs/heads/f%C3%BCnf"
    assert to_session_id("tab\there") == "tab%09here"


def test_long_values_keep_a_readable_prefix_and_a_hash_of_the_whole() -> None:
    first = to_session_id("o/" + "r" * 200 + "/pull/1")
    second = to_session_id("o/" + "r" * 200 + "/pull/2")
    assert first is not None
    assert second is not None
    assert len(first) == len(second) == 128
    assert first.startswith("o/rrrr")
    assert first[111] == "~"
    assert first != second


def test_empty_value_means_no_session() -> None:
    assert to_session_id("") is None


def test_non_string_results_are_rejected_with_a_clear_error() -> None:
    with pytest.raises(qr.ValidationError, match="must return str or None, not int"):
        derive_session_id(lambda fields: 7, FIELDS)  # type: ignore[arg-type,return-value]


# -- strategies ---------------------------------------------------------------


def test_single_field_adds_its_prefix() -> None:
    assert SingleField("tenant", prefix="tenant-")(FIELDS) == "tenant-acme"


def test_single_field_gives_no_session_when_the_field_is_missing() -> None:
    assert SingleField("installation.id", prefix="installation-")(FIELDS) is None


def test_single_field_result_is_a_session_id() -> None:
    assert isinstance(SingleField("repository.full_name")(FIELDS), qr.SessionId)


def test_composite_key_joins_fields_with_the_separator() -> None:
    key = CompositeKey(["repository.full_name", "check_run.pull_requests.0.number"], separator="#")
    assert key(FIELDS) == "octo/repo#3"
    assert key.paths == ("repository.full_name", "check_run.pull_requests.0.number")


def test_composite_key_gives_no_session_when_any_field_is_missing() -> None:
    assert CompositeKey(("repository.full_name", "missing"))(FIELDS) is None
    assert CompositeKey(("missing", "repository.full_name"))(FIELDS) is None


def test_fallback_takes_the_first_strategy_that_yields_an_id() -> None:
    chain = Fallback((SingleField("missing"), SingleField("tenant"), SingleField("number")))
    assert chain(FIELDS) == "acme"


def test_fallback_skips_custom_strategies_that_return_empty_text() -> None:
    chain = Fallback((lambda fields: "", lambda fields: None, lambda fields: "ok"))
    assert chain(FIELDS) == "ok"


def test_fallback_gives_no_session_when_no_strategy_does() -> None:
    assert Fallback((SingleField("missing"), NoOrdering()))(FIELDS) is None


def test_fallback_normalises_custom_results() -> None:
    assert Fallback((lambda fields: "ü",))(FIELDS) == "%C3%BC"


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4))
def test_no_ordering_never_gives_a_session(payload: dict[str, Any]) -> None:
    assert NoOrdering()(MessageFields(payload, {"tenant": "acme"})) is None


def test_custom_callables_are_strategies() -> None:
    def by_sender(fields: MessageFields) -> str | None:
        login = fields.get("sender.login")
        return None if login is None else f"user {login}"

    assert derive_session_id(by_sender, MessageFields({"sender": {"login": "octocat"}})) == (
        "user octocat"
    )
    assert derive_session_id(by_sender, MessageFields({})) is None


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SingleField(""), "path"),
        (lambda: SingleField(7), "path"),  # type: ignore[arg-type]
        (lambda: SingleField("a", prefix=None), "prefix"),  # type: ignore[arg-type]
        (lambda: CompositeKey(()), "paths"),
        (lambda: CompositeKey("repository.full_name"), "paths"),
        (lambda: CompositeKey(("a", "")), "paths"),
        (lambda: CompositeKey(("a",), separator=1), "separator"),  # type: ignore[arg-type]
        (lambda: Fallback(()), "strategies"),
        (lambda: Fallback(("not callable",)), "strategies"),  # type: ignore[arg-type]
    ],
)
def test_bad_strategy_arguments_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(qr.ValidationError) as caught:
        build()
    assert caught.value.field == field


def test_strategies_are_frozen_values() -> None:
    key = SingleField("tenant")
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.path = "other"  # type: ignore[misc]
    assert key == SingleField("tenant")
