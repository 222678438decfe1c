"""Domain types: identifiers, outgoing and received messages.

The rules: docs/design.md#identifiers-and-messages.
"""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import queue_runtime as qr
from queue_runtime.messages import ReceiptHandle

QUEUE_CHARS = string.ascii_letters + string.digits + "_-"
WORD_CHARS = string.ascii_letters + string.digits + "_"
SECRET_BODY = b"TOP-SECRET-BODY-9f3k"


def follows_queue_grammar(text: str) -> bool:
    """The documented grammar, written independently of the implementation."""
    if not 1 <= len(text) <= 260:
        return False
    stem = text[: -len(".fifo")] if text.endswith(".fifo") else text
    return (
        bool(stem)
        and all(char in QUEUE_CHARS for char in stem)
        and not stem.startswith("-")
        and not stem.endswith("-")
        and "--" not in stem
    )


def is_valid_session_id(text: str) -> bool:
    return 1 <= len(text) <= 128 and all(0x20 <= ord(char) <= 0x7E for char in text)


def received(**changes: Any) -> qr.ReceivedMessage:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict[str, Any] = {
        "body": SECRET_BODY,
        "attributes": {"kind": "push", "trace": "t-1"},
        "session_id": qr.SessionId("octo/repo/pull/7"),
        "correlation_id": "corr-42",
        "message_id": qr.MessageId("msg-1"),
        "content_type": "application/json",
        "time_to_live": 60.0,
        "delivery_count": 3,
        "enqueued_at": when,
        "first_delivered_at": when,
        "delivered_at": when + timedelta(seconds=5),
        "receipt": ReceiptHandle(
            provider_id="memory-test",
            queue=qr.QueueName("orders"),
            token="rcpt-token-zz9",
            locked_until=when + timedelta(seconds=35),
        ),
    }
    fields.update(changes)
    return qr.ReceivedMessage(**fields)


# -- QueueName ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "orders",
        "Orders_2024",
        "my-queue",
        "a-b-c_d",
        "_leading_underscore",
        "trailing_",
        "orders.fifo",
        "x" * 260,
        "x" * 255 + ".fifo",
    ],
)
def test_queue_name_accepts_documented_names(name: str) -> None:
    queue = qr.QueueName(name)
    assert queue == name
    assert isinstance(queue, str)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 261,
        "x" * 256 + ".fifo",
        "-orders",
        "orders-",
        "orders-.fifo",
        "or--ders",
        "has space",
        "dot.ted",
        "orders.FIFO",
        ".fifo",
        "orders.fifo.fifo",
        "slash/queue",
        "ünïcode",
        "orders\n",
        "tab\tqueue",
    ],
)
def test_queue_name_rejects_names_outside_the_grammar(name: str) -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.QueueName(name)
    assert info.value.field == "queue"


def test_queue_name_rejects_non_strings_with_validation_error() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.QueueName(42)  # type: ignore[arg-type]
    assert info.value.field == "queue"


@pytest.mark.parametrize(
    ("name", "fifo"), [("orders.fifo", True), ("orders", False), ("fifo", False)]
)
def test_queue_name_is_fifo_only_with_fifo_suffix(name: str, fifo: bool) -> None:
    assert qr.QueueName(name).is_fifo is fifo


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="ab9Z_-.fio ", max_size=14),
        st.text(alphabet="a-", min_size=1, max_size=6).map(lambda s: s + ".fifo"),
        st.text(alphabet="ab_", min_size=255, max_size=266),
    )
)
def test_queue_name_accepts_exactly_the_documented_grammar(text: str) -> None:
    queue: qr.QueueName | None = None
    field: str | None = None
    try:
        queue = qr.QueueName(text)
    except qr.ValidationError as error:
        field = error.field
    if queue is None:
        assert field == "queue"
        assert not follows_queue_grammar(text), f"{text!r} is valid but was rejected"
    else:
        assert follows_queue_grammar(text), f"{text!r} is invalid but was accepted"
        assert queue == text


valid_queue_names = st.builds(
    lambda words, fifo: "-".join(words) + (".fifo" if fifo else ""),
    st.lists(st.text(alphabet=WORD_CHARS, min_size=1, max_size=40), min_size=1, max_size=8),
    st.booleans(),
)


@given(valid_queue_names)
def test_generated_valid_queue_names_always_construct(name: str) -> None:
    assume(len(name) <= 260)
    queue = qr.QueueName(name)
    assert queue == name
    assert queue.is_fifo is name.endswith(".fifo")


# -- SessionId ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "octo/repo/pull/42", "with space", "~!@#$%^&*()", " ", "x" * 128]
)
def test_session_id_accepts_printable_ascii(value: str) -> None:
    assert qr.SessionId(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "tab\there", "new\nline", "del\x7f", "é", "日本"])
def test_session_id_rejects_invalid_values(value: str) -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.SessionId(value)
    assert info.value.field == "session_id"


@given(st.one_of(st.text(), st.text(alphabet=" ~az\x1f\x7f", max_size=130)))
def test_session_id_accepts_exactly_printable_ascii_up_to_128(text: str) -> None:
    session: qr.SessionId | None = None
    field: str | None = None
    try:
        session = qr.SessionId(text)
    except qr.ValidationError as error:
        field = error.field
    if session is None:
        assert field == "session_id"
        assert not is_valid_session_id(text), f"{text!r} is valid but was rejected"
    else:
        assert is_valid_session_id(text), f"{text!r} is invalid but was accepted"
        assert session == text


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128
    )
)
def test_generated_valid_session_ids_always_construct(text: str) -> None:
    assert qr.SessionId(text) == text


# -- MessageId ------------------------------------------------------------------


def test_message_id_rejects_empty_string() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.MessageId("")
    assert info.value.field == "message_id"


def test_message_id_accepts_any_non_empty_string() -> None:
    assert qr.MessageId("order 17 / retry") == "order 17 / retry"


def test_message_id_new_is_a_uuid4_string() -> None:
    value = qr.MessageId.new()
    parsed = uuid.UUID(value)
    assert parsed.version == 4
    assert str(parsed) == value


def test_message_id_new_is_unique() -> None:
    ids = {qr.MessageId.new() for _ in range(2000)}
    assert len(ids) == 2000


# -- Message --------------------------------------------------------------------


def test_message_defaults() -> None:
    message = qr.Message(b"hello")
    assert message.body == b"hello"
    assert dict(message.attributes) == {}
    assert message.session_id is None
    assert message.correlation_id is None
    assert message.content_type is None
    assert message.time_to_live is None
    assert message.scheduled_enqueue_time is None
    assert uuid.UUID(message.message_id).version == 4


def test_messages_get_distinct_generated_ids() -> None:
    assert qr.Message(b"a").message_id != qr.Message(b"a").message_id


@pytest.mark.parametrize("body", ["text", 17, None, ["b"]])
def test_message_body_must_be_bytes(body: Any) -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(body)
    assert info.value.field == "body"


@pytest.mark.parametrize("body", [bytearray(b"abc"), memoryview(b"abc")])
def test_message_body_bytearray_and_memoryview_become_bytes(body: Any) -> None:
    message = qr.Message(body)
    assert type(message.body) is bytes
    assert message.body == b"abc"


def test_message_body_bytearray_is_copied() -> None:
    raw = bytearray(b"abc")
    message = qr.Message(raw)  # type: ignore[arg-type]
    raw[0] = ord("z")
    assert message.body == b"abc"


@pytest.mark.parametrize(
    "attributes",
    [{"n": 1}, {"n": None}, {"n": b"bytes"}, {1: "x"}, {"": "x"}, {"k" * 257: "x"}, ["k", "v"]],
)
def test_message_attributes_must_map_str_to_str(attributes: Any) -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", attributes=attributes)
    assert info.value.field == "attributes"


def test_message_attributes_are_copied_from_the_caller() -> None:
    source = {"kind": "push"}
    message = qr.Message(b"x", attributes=source)
    source["kind"] = "changed"
    assert dict(message.attributes) == {"kind": "push"}


def test_message_session_id_is_validated() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", session_id="bad\tid")
    assert info.value.field == "session_id"
    message = qr.Message(b"x", session_id="octo/repo")
    assert isinstance(message.session_id, qr.SessionId)


def test_message_id_is_validated_in_message() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", message_id="")
    assert info.value.field == "message_id"


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
def test_message_time_to_live_must_be_positive(ttl: float) -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", time_to_live=ttl)
    assert info.value.field == "time_to_live"


def test_message_time_to_live_of_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", time_to_live="60")  # type: ignore[arg-type]
    assert info.value.field == "time_to_live"


def test_message_positive_time_to_live_is_kept() -> None:
    assert qr.Message(b"x", time_to_live=0.5).time_to_live == 0.5


def test_message_scheduled_time_must_be_timezone_aware() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", scheduled_enqueue_time=datetime(2030, 1, 1))
    assert info.value.field == "scheduled_enqueue_time"
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    assert qr.Message(b"x", scheduled_enqueue_time=aware).scheduled_enqueue_time == aware


def test_message_correlation_id_must_be_a_string() -> None:
    with pytest.raises(qr.ValidationError) as info:
        qr.Message(b"x", correlation_id=7)  # type: ignore[arg-type]
    assert info.value.field == "correlation_id"


def test_message_from_json_serialises_with_orjson_and_sets_content_type() -> None:
    payload = {"action": "opened", "number": 7, "labels": ["bug"]}
    message = qr.Message.from_json(payload, session_id="octo/repo/pull/7")
    assert message.body == orjson.dumps(payload)
    assert orjson.loads(message.body) == payload
    assert message.content_type == "application/json"
    assert message.session_id == "octo/repo/pull/7"


def test_message_from_json_keeps_an_explicit_content_type() -> None:
    message = qr.Message.from_json([1, 2], content_type="application/vnd.test+json")
    assert message.content_type == "application/vnd.test+json"
    assert message.body == b"[1,2]"


def test_message_size_counts_body_and_utf8_attribute_names_and_values() -> None:
    message = qr.Message(b"abcd", attributes={"k": "é", "ключ": "v"})
    # body 4 + "k" 1 + "é" 2 + "ключ" 8 + "v" 1
    assert message.size == 16


def test_message_size_of_plain_body() -> None:
    assert qr.Message(b"x" * 1000).size == 1000


def test_message_repr_does_not_contain_the_body() -> None:
    message = qr.Message(SECRET_BODY, session_id="s-1")
    text = repr(message)
    assert "TOP-SECRET" not in text
    assert "TOP-SECRET" not in str(message)
    assert message.message_id in text
    assert f"<{len(SECRET_BODY)} bytes>" in text


# -- ReceivedMessage ------------------------------------------------------------


def test_received_message_to_message_keeps_identity_and_routing() -> None:
    original = received()
    copy = original.to_message()
    assert isinstance(copy, qr.Message)
    assert copy.message_id == "msg-1"
    assert copy.body == SECRET_BODY
    assert dict(copy.attributes) == {"kind": "push", "trace": "t-1"}
    assert copy.session_id == "octo/repo/pull/7"
    assert copy.correlation_id == "corr-42"
    assert copy.content_type == "application/json"
    assert copy.time_to_live == 60.0


def test_received_message_to_message_applies_changes() -> None:
    copy = received().to_message(attributes={"requeued": "1"}, session_id="other")
    assert dict(copy.attributes) == {"requeued": "1"}
    assert copy.session_id == "other"
    assert copy.message_id == "msg-1"


def test_received_message_to_message_attributes_are_independent() -> None:
    attributes = {"kind": "push"}
    original = received(attributes=attributes)
    copy = original.to_message()
    attributes["kind"] = "changed"
    assert dict(copy.attributes) == {"kind": "push"}


def test_received_message_repr_does_not_contain_the_body() -> None:
    message = received()
    text = repr(message)
    assert "TOP-SECRET" not in text
    assert "TOP-SECRET" not in str(message)
    assert "msg-1" in text
    assert "delivery_count=3" in text


def test_received_message_locked_until_follows_receipt_renewal() -> None:
    message = received()
    later = datetime(2030, 1, 1, tzinfo=UTC)
    message.receipt.extend(later)
    assert message.locked_until == later


def test_received_message_json_parses_the_body() -> None:
    assert received(body=b'{"a": [1, 2]}').json() == {"a": [1, 2]}


def test_receipt_handle_repr_hides_token() -> None:
    receipt = received().receipt
    assert "rcpt-token-zz9" not in repr(receipt)
    assert "orders" in repr(receipt)
