"""The SQS adapter against a local moto server: what the contract suite does not reach."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider
from queue_runtime.providers.aws import keeper as sqs_keeper_module
from queue_runtime.providers.aws.wire import MAX_MESSAGE_SIZE
from tests import sqs_server

from .conftest import VISIBILITY, fake_response, inject, make_client, make_provider, record_calls


async def _raw_receive(provider: SqsProvider, queue: str, **params: Any) -> list[dict[str, Any]]:
    sqs = await provider.client()
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    response = await sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], **params
    )
    return list(response.get("Messages") or [])


# -- batching -----------------------------------------------------------------------


async def test_large_sends_are_split_into_batches_of_ten(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    calls = await record_calls(provider)

    await client.send_messages("jobs", [qr.Message(f"{i}".encode()) for i in range(25)])

    assert calls.count("SendMessageBatch") == 3
    assert client.max_batch_size == 10
    received: list[qr.ReceivedMessage] = []
    while batch := await client.receive_messages("jobs", 10, timeout=0.5):
        received.extend(batch)
        await provider.complete_many([m.receipt for m in batch])
    assert sorted(int(m.body) for m in received) == list(range(25))
    assert calls.count("DeleteMessageBatch") == 3


async def test_a_partially_failed_batch_names_the_failed_messages(
    provider: SqsProvider,
) -> None:
    await provider.create_queue("jobs")
    messages = [qr.Message(f"{i}".encode(), message_id=f"m-{i}") for i in range(3)]
    answer = {
        "Successful": [{"Id": "0", "MessageId": "x", "MD5OfMessageBody": "-"}],
        "Failed": [
            {"Id": "1", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "bad"},
            {"Id": "2", "SenderFault": False, "Code": "InternalError", "Message": "oops"},
        ],
    }
    await inject(provider, "SendMessageBatch", fake_response(200, json.dumps(answer).encode()))

    with pytest.raises(qr.QueueError) as caught:
        await provider.send(qr.QueueName("jobs"), messages)

    assert isinstance(caught.value, qr.ValidationError)
    assert not caught.value.transient
    assert "m-1" in str(caught.value)
    assert "m-2" in str(caught.value)
    assert "m-0" not in str(caught.value)


async def test_a_batch_failing_only_on_the_service_side_is_transient(
    provider: SqsProvider,
) -> None:
    await provider.create_queue("jobs")
    answer = {
        "Successful": [],
        "Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError", "Message": "x"}],
    }
    await inject(provider, "SendMessageBatch", fake_response(200, json.dumps(answer).encode()))

    with pytest.raises(qr.QueueError) as caught:
        await provider.send(qr.QueueName("jobs"), [qr.Message(b"x", message_id="only")])

    assert caught.value.transient
    assert "only" in str(caught.value)


# -- errors -------------------------------------------------------------------------


async def test_throttling_is_transient_and_the_client_retries_it(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    body = b'{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}'
    await inject(
        provider,
        "SendMessageBatch",
        fake_response(400, body, {"x-amzn-query-error": "RequestThrottled;Sender"}),
    )

    with pytest.raises(qr.ThrottledError) as caught:
        await provider.send(qr.QueueName("jobs"), [qr.Message(b"x")])
    assert caught.value.transient
    assert caught.value.queue == "jobs"

    await inject(provider, "SendMessageBatch", fake_response(429), times=2)
    await client.send_message("jobs", qr.Message(b"after retries"))
    received = await client.receive_message("jobs", timeout=2.0)
    assert received is not None
    assert received.body == b"after retries"


async def test_missing_queues_are_named_and_nothing_is_created(provider: SqsProvider) -> None:
    with pytest.raises(qr.QueueNotFoundError) as sending:
        await provider.send(qr.QueueName("ghost"), [qr.Message(b"x")])
    with pytest.raises(qr.QueueNotFoundError):
        await provider.receive(qr.QueueName("ghost"), 1, 0)

    assert sending.value.queue == "ghost"
    sqs = await provider.client()
    assert "QueueUrls" not in await sqs.list_queues()


async def test_a_missing_dead_letter_queue_is_named(provider: SqsProvider) -> None:
    await provider.create_queue("lonely", dead_letter_queue=False)

    with pytest.raises(qr.QueueNotFoundError) as caught:
        await provider.peek_dead_letters(qr.QueueName("lonely"), 10)

    assert caught.value.queue == "lonely-dlq"


async def test_queue_names_longer_than_sqs_allows_are_refused(provider: SqsProvider) -> None:
    with pytest.raises(qr.ValidationError) as caught:
        await provider.send(qr.QueueName("q" * 81), [qr.Message(b"x")])

    assert caught.value.field == "queue"


async def test_wrong_credentials_are_an_authentication_error_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await sqs_server.reset()
    planted_key = "PLANTED-secret-key-0123456789"
    planted_token = "PLANTED-session-token-abcdef"
    provider = make_provider(
        access_key_id="AKIDPLANTED", secret_access_key=planted_key, session_token=planted_token
    )
    await provider.create_queue("jobs")
    body = json.dumps(
        {
            "__type": "com.amazon.coral.service#SignatureDoesNotMatch",
            "message": f"canonical request: x-amz-security-token:{planted_token} key {planted_key}",
        }
    ).encode()
    await inject(provider, "SendMessageBatch", fake_response(403, body))
    client = make_client(provider)
    caplog.set_level(logging.DEBUG, logger="queue_runtime")

    try:
        with pytest.raises(qr.AuthenticationError) as caught:
            await client.send_message("jobs", qr.Message(b"x"))
    finally:
        await client.aclose()

    texts = [
        str(caught.value),
        repr(caught.value),
        str(caught.value.__cause__),
        repr(provider),
        repr(provider.config),
        caplog.text,
    ]
    for text in texts:
        assert planted_key not in text
        assert planted_token not in text


async def test_a_visibility_timeout_below_one_second_is_refused() -> None:
    with pytest.raises(qr.ConfigurationError) as caught:
        SqsProvider(sqs_server.config(visibility_timeout=0))

    assert caught.value.field == "aws.visibility_timeout"


async def test_the_registry_builds_the_sqs_provider_from_config() -> None:
    async with await qr.create_client(sqs_server.config()) as client:
        assert isinstance(client.provider, SqsProvider)
        assert client.provider_type is qr.ProviderType.AWS_SQS
        assert client.session_support("a.fifo") is qr.SessionSupport.EMULATED
        assert client.session_support("a") is qr.SessionSupport.NONE


# -- size -----------------------------------------------------------------------


async def test_oversize_is_counted_the_sqs_way_and_nothing_is_sent(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    body = b"y" * (client.max_message_size - 100)
    big_metadata = qr.Message(body, correlation_id="c" * 3000)  # fits the client's count
    calls = await record_calls(provider)

    with pytest.raises(qr.MessageTooLargeError) as caught:
        await client.send_messages("jobs", [qr.Message(b"small"), big_metadata])

    assert caught.value.size > caught.value.max_size == MAX_MESSAGE_SIZE
    assert "SendMessageBatch" not in calls
    assert await client.receive_message("jobs", timeout=0.2) is None


async def test_a_message_sqs_would_refuse_in_a_later_batch_means_nothing_is_sent(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    messages = [qr.Message(f"{n}".encode()) for n in range(24)]
    messages.append(qr.Message(b"bad", attributes={"qr.reserved": "x"}))  # 3rd batch of 10
    calls = await record_calls(provider)

    with pytest.raises(qr.ValidationError):
        await client.send_messages("jobs", messages)

    assert "SendMessageBatch" not in calls
    assert await client.receive_message("jobs", timeout=0.2) is None


async def test_a_binary_body_near_the_limit_round_trips(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    body = bytes(range(256)) * ((client.max_message_size - 100) // 256)

    await client.send_message("jobs", qr.Message(body))
    received = await client.receive_message("jobs", timeout=2.0)

    assert received is not None
    assert received.body == body


async def test_awkward_attributes_round_trip(provider: SqsProvider, client: qr.QueueClient) -> None:
    await provider.create_queue("jobs")
    attributes = {"empty": "", "has space": "x", "ctl": "\x01", **{f"a{i}": "v" for i in range(10)}}

    await client.send_message("jobs", qr.Message(b"", attributes=attributes))
    received = await client.receive_message("jobs", timeout=2.0)

    assert received is not None
    assert (received.body, dict(received.attributes)) == (b"", attributes)


# -- receipts -------------------------------------------------------------------


async def test_stale_repeated_and_foreign_receipts_are_refused_without_calling_sqs(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    await client.send_messages("jobs", [qr.Message(b"a"), qr.Message(b"b")])
    first = await client.receive_message("jobs", timeout=2.0)
    assert first is not None
    await client.abandon_message(first.receipt)
    again = await client.receive_message("jobs", timeout=2.0)
    assert again is not None
    assert (again.message_id, again.delivery_count) == (first.message_id, 2)
    other = make_provider()
    calls = await record_calls(provider)

    try:
        with pytest.raises(qr.InvalidReceiptError):
            await provider.complete(first.receipt)  # superseded by the abandon
        await provider.complete(again.receipt)
        with pytest.raises(qr.InvalidReceiptError):
            await provider.complete(again.receipt)  # a second complete
        with pytest.raises(qr.InvalidReceiptError):
            await provider.abandon(again.receipt)
        with pytest.raises(qr.InvalidReceiptError):
            await other.complete(again.receipt)  # another provider's receipt
    finally:
        await other.aclose()

    assert calls == ["DeleteMessage"]


async def test_a_receipt_settled_here_is_refused_with_proof_of_how(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    # a retried settle whose first answer was lost must learn that it took effect
    await provider.create_queue("jobs.fifo")
    await client.send_messages("jobs.fifo", [qr.Message(b"a", session_id="s") for _ in range(4)])
    batch = await client.receive_messages("jobs.fifo", 10, timeout=2.0)
    assert len(batch) == 4
    await provider.complete(batch[0].receipt)
    [result] = await provider.complete_many([batch[1].receipt])
    assert result is None
    await provider.dead_letter(batch[2].receipt, "Poison")
    await provider.abandon(batch[3].receipt)  # kept in the group's buffer, without SQS

    proofs = []
    for message in batch:
        with pytest.raises(qr.InvalidReceiptError) as refused:
            await provider.complete(message.receipt)
        proofs.append(refused.value.settled)
    assert proofs == ["complete", "complete", "dead_letter", "abandon"]
    again = await client.receive_message("jobs.fifo", timeout=2.0)
    assert again is not None
    await client.complete_message(again.receipt)
    with pytest.raises(qr.InvalidReceiptError) as refused:
        await provider.abandon(batch[3].receipt)  # superseded, and settled only by its abandon
    assert refused.value.settled == "abandon"


async def test_a_receipt_from_before_a_redelivery_is_refused(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    await client.send_message("jobs", qr.Message(b"x"))
    first = await client.receive_message("jobs", timeout=2.0)
    assert first is not None
    await asyncio.sleep(VISIBILITY + 0.5)
    second = await client.receive_message("jobs", timeout=2.0)
    assert second is not None

    with pytest.raises(qr.InvalidReceiptError):
        await client.renew_message_lock(first.receipt)
    with pytest.raises(qr.InvalidReceiptError):
        await client.dead_letter_message(first.receipt, "Late")
    await client.complete_message(second.receipt)
    assert second.delivery_count == 2


async def test_complete_many_reports_each_receipt_and_settles_the_rest(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2")])
    batch = await client.receive_messages("jobs", 10, timeout=2.0)
    assert len(batch) == 2
    await client.complete_message(batch[0].receipt)

    results = await provider.complete_many([m.receipt for m in batch])

    assert isinstance(results[0], qr.InvalidReceiptError)
    assert results[1] is None
    await asyncio.sleep(VISIBILITY + 0.5)
    assert await client.receive_message("jobs", timeout=0.2) is None


# -- dead letters ---------------------------------------------------------------


async def test_dead_lettering_copies_before_it_deletes(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    await client.send_message("jobs", qr.Message(b"poison"))
    message = await client.receive_message("jobs", timeout=2.0)
    assert message is not None
    calls = await record_calls(provider)

    await client.dead_letter_message(message.receipt, "Boom")

    assert calls.index("SendMessageBatch") < calls.index("DeleteMessage")


async def test_a_failed_delete_after_the_copy_leaves_the_message_in_both_places(
    provider: SqsProvider,
) -> None:
    await provider.create_queue("jobs")
    await provider.send(qr.QueueName("jobs"), [qr.Message(b"keep me")])
    [message] = await provider.receive(qr.QueueName("jobs"), 1, 2.0)
    await inject(provider, "DeleteMessage", fake_response(500, b'{"__type":"InternalError"}'))

    with pytest.raises(qr.QueueError) as caught:
        await provider.dead_letter(message.receipt, "Boom")

    assert caught.value.transient
    [letter] = await provider.peek_dead_letters(qr.QueueName("jobs"), 10)
    assert letter.body == b"keep me"
    await asyncio.sleep(VISIBILITY + 0.5)
    [again] = await provider.receive(qr.QueueName("jobs"), 1, 2.0)
    assert again.body == b"keep me"


async def test_a_message_dead_lettered_again_is_in_a_fifo_dlq_once(
    provider: SqsProvider,
) -> None:
    # the first dead-lettering copied it and could not delete it (as when the delete's
    # answer is lost): it comes back and is dead-lettered again, and SQS drops the
    # second copy as a duplicate of the first
    queue = qr.QueueName("jobs.fifo")
    await provider.create_queue(queue)
    await provider.send(queue, [qr.Message(b"poison", session_id="s")])
    [message] = await provider.receive(queue, 1, 2.0)
    await inject(provider, "DeleteMessage", fake_response(500, b'{"__type":"InternalError"}'))
    with pytest.raises(qr.QueueError):
        await provider.dead_letter(message.receipt, "Boom")
    await asyncio.sleep(VISIBILITY + 0.5)
    [again] = await provider.receive(queue, 1, 2.0)
    assert again.message_id == message.message_id

    await provider.dead_letter(again.receipt, "Boom")

    letters = await provider.peek_dead_letters(queue, 10)
    assert [letter.body for letter in letters] == [b"poison"]
    assert await provider.receive(queue, 1, 0.5) == []


async def test_a_failed_copy_deletes_nothing(provider: SqsProvider) -> None:
    await provider.create_queue("jobs")
    await provider.send(qr.QueueName("jobs"), [qr.Message(b"keep me")])
    [message] = await provider.receive(qr.QueueName("jobs"), 1, 2.0)
    await inject(provider, "SendMessageBatch", fake_response(503))
    calls = await record_calls(provider)

    with pytest.raises(qr.ThrottledError):
        await provider.dead_letter(message.receipt, "Boom")

    assert "DeleteMessage" not in calls
    await provider.dead_letter(message.receipt, "Boom")  # the receipt is still good
    [letter] = await provider.peek_dead_letters(qr.QueueName("jobs"), 10)
    assert letter.dead_letter_reason == "Boom"


async def test_sqs_redrive_moves_a_message_after_max_receive_count(
    provider: SqsProvider,
) -> None:
    generous = make_provider(max_delivery_count=10)  # leave it to SQS
    await provider.create_queue("jobs", max_receive_count=2)
    jobs = qr.QueueName("jobs")
    try:
        await generous.send(jobs, [qr.Message(b"flaky")])
        for expected in (1, 2):
            [message] = await generous.receive(jobs, 1, 2.0)
            assert message.delivery_count == expected
            await generous.abandon(message.receipt)

        assert await generous.receive(jobs, 1, 0.3) == []  # SQS moved it instead
        [letter] = await generous.peek_dead_letters(jobs, 10)
    finally:
        await generous.aclose()

    assert letter.body == b"flaky"
    assert letter.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert letter.dead_letter_description is not None
    assert "redrive" in letter.dead_letter_description


async def test_the_runtime_dead_letters_over_delivered_messages_when_sqs_would_not(
    provider: SqsProvider,
) -> None:
    await provider.create_queue("jobs", dead_letter_queue=False)
    await provider.create_queue("jobs-dlq", dead_letter_queue=False)
    jobs = qr.QueueName("jobs")
    await provider.send(jobs, [qr.Message(b"poison")])
    for _ in range(3):  # three deliveries elsewhere, never settled
        assert len(await _raw_receive(provider, "jobs", VisibilityTimeout=0)) == 1

    assert await provider.receive(jobs, 1, 0.3) == []
    [letter] = await provider.peek_dead_letters(jobs, 10)

    assert letter.body == b"poison"
    assert letter.dead_letter_reason == "MaxDeliveryCountExceeded"


async def test_expired_messages_go_to_the_dlq_with_the_reason(provider: SqsProvider) -> None:
    await provider.create_queue("jobs")
    jobs = qr.QueueName("jobs")
    await provider.send(jobs, [qr.Message(b"stale", time_to_live=0.5)])
    await asyncio.sleep(1.0)

    assert await provider.receive(jobs, 1, 0.2) == []
    [letter] = await provider.peek_dead_letters(jobs, 10)

    assert letter.dead_letter_reason == "TTLExpired"
    assert letter.time_to_live == 0.5


async def test_requeued_dead_letters_are_not_dropped_as_fifo_duplicates(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs.fifo")
    sent = qr.Message(b"again", session_id="s-1")
    await client.send_message("jobs.fifo", sent)
    first = await client.receive_message("jobs.fifo", timeout=2.0)
    assert first is not None
    await client.dead_letter_message(first.receipt, "Boom")

    assert await client.requeue_dead_letters("jobs.fifo") == 1
    back = await client.receive_message("jobs.fifo", timeout=2.0)

    assert back is not None
    assert (back.message_id, back.session_id, back.body) == (sent.message_id, "s-1", b"again")
    assert await client.peek_dead_letters("jobs.fifo") == []


async def test_purge_counts_and_empties_the_dlq(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs")
    await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2"), qr.Message(b"3")])
    for message in await client.receive_messages("jobs", 10, timeout=2.0):
        await client.dead_letter_message(message.receipt, "Boom")

    assert await client.purge_dead_letters("jobs") == 3
    assert await client.peek_dead_letters("jobs") == []


# -- FIFO -----------------------------------------------------------------------


async def test_a_retried_fifo_send_is_deduplicated_but_equal_bodies_are_not(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs.fifo")
    message = qr.Message(b"same", session_id="s")

    await client.send_message("jobs.fifo", message)
    await client.send_message("jobs.fifo", message)  # a retry after a lost answer
    await client.send_message("jobs.fifo", qr.Message(b"same", session_id="s"))
    received = await client.receive_messages("jobs.fifo", 10, timeout=1.0)

    assert len(received) == 2
    assert received[0].message_id == message.message_id


async def test_fifo_groups_block_across_providers(provider: SqsProvider) -> None:
    other = make_provider()
    jobs = qr.QueueName("jobs.fifo")
    await provider.create_queue(jobs)
    await provider.send(
        jobs,
        [
            qr.Message(b"g:0", session_id="g"),
            qr.Message(b"g:1", session_id="g"),
            qr.Message(b"h:0", session_id="h"),
        ],
    )
    try:
        [head] = await provider.receive(jobs, 1, 2.0)
        elsewhere = await other.receive(jobs, 10, 2.0)  # the first call also connects
        assert head.body == b"g:0"
        assert [m.body for m in elsewhere] == [b"h:0"]  # g is blocked while g:0 is out
        await other.complete(elsewhere[0].receipt)

        await provider.complete(head.receipt)
        [nxt] = await other.receive(jobs, 10, 2.0)
        assert nxt.body == b"g:1"
        await other.complete(nxt.receipt)
    finally:
        await other.aclose()


async def test_fifo_queues_refuse_per_message_delays(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs.fifo")
    at = qr.SystemClock().now() + 30

    with pytest.raises(qr.ValidationError) as caught:
        await client.schedule_message(
            "jobs.fifo",
            qr.Message(b"x", session_id="s"),
            qr.clock.to_datetime(at),
        )

    assert caught.value.field == "scheduled_enqueue_time"


async def test_sessions_are_refused_on_standard_queues(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("plain")

    with pytest.raises(qr.SessionsNotSupportedError):
        await client.send_message("plain", qr.Message(b"x", session_id="s"))
    with pytest.raises(qr.SessionsNotSupportedError):
        await client.accept_session("plain", timeout=0.1)


# -- sessions -------------------------------------------------------------------


async def test_buffered_groups_stay_invisible_while_they_wait_and_return_on_close(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    other = make_provider()
    jobs = qr.QueueName("jobs.fifo")
    await provider.create_queue(jobs)
    await client.send_messages(
        jobs, [qr.Message(f"{s}".encode(), session_id=s) for s in ("a", "b", "c")]
    )
    try:
        session = await client.accept_session(jobs, timeout=2.0)
        assert session is not None
        assert session.session_id == "a"
        for _ in range(3):  # past the visibility timeout: the keeper extends b and c
            await asyncio.sleep(VISIBILITY * 0.6)
            await session.renew_session_lock()  # and the session keeps a

        assert await other.receive(jobs, 10, 0.2) == []
        message = await session.receive_message(timeout=1.0)
        assert message is not None
        await session.complete_message(message.receipt)
        await session.close()
        later = await client.accept_session(jobs, timeout=1.0)  # from the buffer
        assert later is not None
        assert later.session_id == "b"
        await later.close()

        await client.aclose()  # releases what is still buffered (c)
        released = await other.receive(jobs, 10, 1.0)
        assert sorted(m.body for m in released) == [b"b", b"c"]
        assert all(m.delivery_count == 2 for m in released)
    finally:
        await other.aclose()


async def test_session_state_is_kept_in_this_process_only(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    other = make_client(make_provider())
    await provider.create_queue("jobs.fifo")
    try:
        session = await client.accept_session("jobs.fifo", "s", timeout=1.0)
        assert session is not None
        await session.set_state(b"step-2")
        await session.close()

        elsewhere = await other.accept_session("jobs.fifo", "s", timeout=1.0)
        assert elsewhere is not None
        assert await elsewhere.get_state() is None
        await elsewhere.close()
        again = await client.accept_session("jobs.fifo", "s", timeout=1.0)
        assert again is not None
        assert await again.get_state() == b"step-2"
        await again.close()
    finally:
        await other.aclose()


async def test_a_closed_session_refuses_further_calls(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("jobs.fifo")
    session = await client.accept_session("jobs.fifo", "s", timeout=1.0)
    assert session is not None
    await session.close()

    with pytest.raises(qr.SessionNotFoundError):
        await session.receive_message(timeout=0.1)
    with pytest.raises(qr.SessionNotFoundError):
        await session.get_state()


# -- lifecycle ------------------------------------------------------------------


async def test_closing_stops_the_keeper_and_the_client(provider: SqsProvider) -> None:
    jobs = qr.QueueName("jobs.fifo")
    await provider.create_queue(jobs)
    await provider.send(jobs, [qr.Message(b"x", session_id="s")])
    receiver = await provider.accept_session(jobs, None, 2.0)
    assert receiver is not None
    keeper = provider._keeper.task
    assert keeper is not None

    await provider.aclose()

    assert keeper.done()
    with pytest.raises(qr.QueueError):
        await provider.receive(jobs, 1, 0)
    await provider.aclose()  # idempotent


async def test_unclaimed_buffered_messages_go_back_to_sqs_after_the_hold_time(
    provider: SqsProvider, client: qr.QueueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs_keeper_module, "BUFFER_HOLD", 0.5)
    # short polls: moto's long poll looks again only once a second, by which time the
    # lock on "a" (not renewed here) might have expired too
    other = make_provider(wait_time=0)
    jobs = qr.QueueName("jobs.fifo")
    await provider.create_queue(jobs)
    await client.send_messages(
        jobs, [qr.Message(b"a", session_id="a"), qr.Message(b"b", session_id="b")]
    )
    try:
        session = await client.accept_session(jobs, "a", timeout=1.0)
        assert session is not None
        assert [m.body for m in await session.receive_messages(10, timeout=1.0)] == [b"a"]

        released = await other.receive(jobs, 10, VISIBILITY)  # b, once the keeper let it go

        assert [m.body for m in released] == [b"b"]
        await session.close()
    finally:
        await other.aclose()


async def test_without_url_caching_every_call_looks_the_queue_up() -> None:
    await sqs_server.reset()
    provider = make_provider(cache_queue_urls=False)
    jobs = qr.QueueName("jobs")
    try:
        await provider.create_queue(jobs)
        calls = await record_calls(provider)
        await provider.send(jobs, [qr.Message(b"x")])
        [message] = await provider.receive(jobs, 1, 1.0)
        await provider.complete(message.receipt)
    finally:
        await provider.aclose()

    assert calls.count("GetQueueUrl") >= 3
    assert calls[-1] == "DeleteMessage"
