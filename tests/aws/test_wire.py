"""Messages in SQS terms: metadata, sizes counted the SQS way, attribute fallbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.providers.aws.wire import (
    BODY_ATTRIBUTE,
    MAX_MESSAGE_SIZE,
    META_ATTRIBUTE,
    Outgoing,
    dead_letter_copy,
    decode,
    encode,
)

NOW = 1_700_000_000.0


def as_received(out: Outgoing, *, count: int = 1, group: str | None = None) -> dict[str, Any]:
    """What ReceiveMessage would return for ``out``."""
    system = {"ApproximateReceiveCount": str(count), "SentTimestamp": str(int(NOW * 1000))}
    if group is not None:
        system["MessageGroupId"] = group
    return {
        "MessageId": "sqs-id-1",
        "ReceiptHandle": "handle-1",
        "Body": out.body,
        "MessageAttributes": out.attributes,
        "Attributes": system,
    }


def sqs_size(out: Outgoing) -> int:
    size = len(out.body.encode())
    for name, attribute in out.attributes.items():
        value = attribute.get("StringValue")
        data = value.encode() if value is not None else attribute["BinaryValue"]
        size += len(name.encode()) + len(attribute["DataType"].encode()) + len(data)
    return size


def test_everything_round_trips_through_the_sqs_shape() -> None:
    message = qr.Message(
        b'{"a":1}',
        attributes={"event_type": "push", "X-GitHub-Event": "pull_request"},
        session_id="octo/repo/pull/1",
        correlation_id="corr",
        content_type="application/json",
        time_to_live=60.0,
    )

    out = encode(message, fifo=True, now=NOW)
    back = decode(as_received(out, group=out.group_id))

    assert out.body == '{"a":1}'  # readable in the console
    assert out.group_id == "octo/repo/pull/1"
    assert set(out.attributes) == {"event_type", "X-GitHub-Event", META_ATTRIBUTE}
    assert back.body == message.body
    assert back.attributes == dict(message.attributes)
    assert (back.session_id, back.correlation_id, back.content_type, back.message_id) == (
        "octo/repo/pull/1",
        "corr",
        "application/json",
        message.message_id,
    )
    assert back.time_to_live == 60.0
    assert back.expires_at == NOW + 60.0


@pytest.mark.parametrize("body", [b"\x00\xff binary", "\ufffe".encode(), b"\x01", b""])
def test_bodies_sqs_cannot_carry_as_text_still_round_trip(body: bytes) -> None:
    out = encode(qr.Message(body), fifo=False, now=NOW)

    assert out.body  # SQS needs at least one character
    assert decode(as_received(out)).body == body
    if body:
        assert out.attributes[BODY_ATTRIBUTE]["DataType"] == "Binary"


def test_attributes_sqs_refuses_travel_in_the_metadata() -> None:
    attributes = {
        "empty": "",
        "nul": "a\x00b",
        "has space": "v",
        "AWS.reserved": "v",
        ".dot": "v",
        **{f"k{i}": str(i) for i in range(12)},
    }

    out = encode(qr.Message(b"x", attributes=attributes), fifo=False, now=NOW)

    assert len(out.attributes) == 10  # the SQS maximum, ours included
    assert decode(as_received(out)).attributes == attributes


def test_names_with_the_reserved_prefix_are_rejected() -> None:
    with pytest.raises(qr.ValidationError) as caught:
        encode(qr.Message(b"x", attributes={"qr.meta": "mine"}), fifo=False, now=NOW)

    assert caught.value.field == "attributes"
    with pytest.raises(qr.ValidationError):
        encode(qr.Message(b"x", attributes={"QR.anything": "v"}), fifo=False, now=NOW)


def test_size_is_counted_the_sqs_way() -> None:
    message = qr.Message(b"body", attributes={"k": "v"}, message_id="id-1")

    out = encode(message, fifo=False, now=NOW)

    # body + per attribute: name + data type ("String") + value
    meta = out.attributes[META_ATTRIBUTE]["StringValue"]
    assert out.size == sqs_size(out) == 4 + (1 + 6 + 1) + (7 + 6 + len(meta))


def test_a_message_too_large_for_sqs_is_rejected_with_the_sqs_count() -> None:
    body = b"y" * (MAX_MESSAGE_SIZE - 1000)
    message = qr.Message(body, correlation_id="c" * 2000)  # fits the client's count

    with pytest.raises(qr.MessageTooLargeError) as caught:
        encode(message, fifo=False, now=NOW)

    assert caught.value.max_size == MAX_MESSAGE_SIZE
    assert caught.value.size > MAX_MESSAGE_SIZE
    assert caught.value.message_id == message.message_id


def test_a_binary_body_costs_its_raw_size_not_base64() -> None:
    body = b"\xff" * (MAX_MESSAGE_SIZE - 200)

    out = encode(qr.Message(body), fifo=False, now=NOW)

    assert out.size < MAX_MESSAGE_SIZE


def test_fifo_deduplication_ids_follow_the_whole_message() -> None:
    message = qr.Message(b"same", session_id="s")
    requeued = qr.Message(
        b"same", session_id="s", message_id=message.message_id, attributes={"n": "1"}
    )
    other = qr.Message(b"same", session_id="s")

    first = encode(message, fifo=True, now=NOW).entry("0")
    retry = encode(message, fifo=True, now=NOW).entry("0")

    assert first["MessageDeduplicationId"] == retry["MessageDeduplicationId"]
    for different in (requeued, other):
        entry = encode(different, fifo=True, now=NOW).entry("0")
        assert entry["MessageDeduplicationId"] != first["MessageDeduplicationId"]


def test_fifo_deduplication_ignores_trace_context_so_a_resend_from_another_trace_is_dropped() -> (
    None
):
    traced = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "tracestate": "a=1"}
    first = qr.Message(b"same", session_id="s", message_id="delivery-1", attributes=traced)
    resent = qr.Message(
        b"same",
        session_id="s",
        message_id="delivery-1",
        attributes={"traceparent": "00-" + "3" * 32 + "-" + "4" * 16 + "-01"},
    )

    a = encode(first, fifo=True, now=NOW).entry("0")
    b = encode(resent, fifo=True, now=NOW).entry("0")

    assert a["MessageDeduplicationId"] == b["MessageDeduplicationId"]
    assert a["MessageAttributes"]["traceparent"] != b["MessageAttributes"]["traceparent"]


def test_messages_without_session_get_their_own_group_on_fifo_queues() -> None:
    a = encode(qr.Message(b"a"), fifo=True, now=NOW)
    b = encode(qr.Message(b"b"), fifo=True, now=NOW)

    assert a.group_id is not None
    assert a.group_id != b.group_id
    assert decode(as_received(a, group=a.group_id)).session_id is None


def test_session_ids_with_spaces_are_refused_for_fifo_groups() -> None:
    with pytest.raises(qr.ValidationError) as caught:
        encode(qr.Message(b"x", session_id="has space"), fifo=True, now=NOW)

    assert caught.value.field == "session_id"


def test_a_session_on_a_standard_queue_is_refused() -> None:
    with pytest.raises(qr.SessionsNotSupportedError):
        encode(qr.Message(b"x", session_id="s"), fifo=False, now=NOW)


def test_scheduling_uses_delay_seconds_within_sqs_limits() -> None:
    soon = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=2.2)
    late = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=901)

    assert encode(qr.Message(b"x", scheduled_enqueue_time=soon), fifo=False, now=NOW).delay == 3
    with pytest.raises(qr.ValidationError) as beyond:
        encode(qr.Message(b"x", scheduled_enqueue_time=late), fifo=False, now=NOW)
    with pytest.raises(qr.ValidationError) as fifo:
        encode(qr.Message(b"x", scheduled_enqueue_time=soon, session_id="s"), fifo=True, now=NOW)

    assert beyond.value.field == fifo.value.field == "scheduled_enqueue_time"


def test_a_dead_letter_copy_keeps_everything_and_adds_the_record() -> None:
    sent = qr.Message(b"\x00bin", attributes={"k": "v"}, session_id="s", correlation_id="c")
    original = decode(as_received(encode(sent, fifo=True, now=NOW), count=4, group="s"))

    copy = dead_letter_copy(
        original, reason="Boom", description="why", delivery_count=4, source="q.fifo", fifo=True
    )
    letter = decode(as_received(copy, group=copy.group_id))

    assert copy.group_id == "s"
    assert (letter.body, letter.attributes, letter.session_id) == (b"\x00bin", {"k": "v"}, "s")
    assert letter.message_id == sent.message_id
    assert letter.dead_letter is not None
    assert (letter.dead_letter.reason, letter.dead_letter.description) == ("Boom", "why")
    assert letter.dead_letter.delivery_count == 4
    assert letter.dead_letter.source == "q.fifo"


def test_a_dead_letter_copy_shortens_the_description_not_the_message() -> None:
    body = b"z" * (MAX_MESSAGE_SIZE - 2000)
    original = decode(as_received(encode(qr.Message(body), fifo=False, now=NOW)))

    copy = dead_letter_copy(
        original, reason="R", description="d" * 5000, delivery_count=1, source="q", fifo=False
    )

    assert copy.size <= MAX_MESSAGE_SIZE
    assert decode(as_received(copy)).body == body


def test_dead_letter_properties_decode_as_attributes_and_the_largest_go_first() -> None:
    body = b"z" * (MAX_MESSAGE_SIZE - 3000)
    sent = qr.Message(body, attributes={"k": "v", "bad name!": "overflow"})
    original = decode(as_received(encode(sent, fifo=False, now=NOW)))
    properties = {"small": "s", "huge": "h" * 5000}

    copy = dead_letter_copy(
        original,
        reason="R",
        description="d" * 5000,
        delivery_count=1,
        source="q",
        fifo=False,
        properties=properties,
    )
    letter = decode(as_received(copy))

    assert copy.size <= MAX_MESSAGE_SIZE
    assert letter.body == body
    assert letter.attributes == {"k": "v", "bad name!": "overflow", "small": "s"}


def test_messages_of_other_producers_decode_sensibly() -> None:
    raw = {
        "MessageId": "m-1",
        "ReceiptHandle": "h",
        "Body": "plain text",
        "MessageAttributes": {
            "n": {"DataType": "Number", "StringValue": "42"},
            "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
        },
        "Attributes": {"ApproximateReceiveCount": "2", "MessageGroupId": "grp"},
    }

    message = decode(raw)

    assert (message.message_id, message.body, message.session_id) == ("m-1", b"plain text", "grp")
    assert message.attributes == {"n": "42", "b": "AQI="}
    assert message.receive_count == 2
