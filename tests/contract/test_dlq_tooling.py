"""DLQ tooling (``queue_runtime.dlq``) on every provider: listing with reasons and
failure records, stats by error type and handler, requeue and purge by predicate
with progress, and requeue's promise to duplicate rather than lose."""

from __future__ import annotations

import pytest

import queue_runtime as qr
from queue_runtime import dlq
from queue_runtime.client import REQUEUE_COUNT_ATTRIBUTE
from queue_runtime.errors import QueueError
from queue_runtime.provider import SessionProvider
from queue_runtime.testing import FaultyProvider

from .harness import Harness, close_sessions, drain, receive_one


async def dead_letter(
    harness: Harness, queue: str, name: str, reason: str, handler: str | None = None
) -> None:
    """Send ``name`` (session ``s-<name>``) and dead-letter it as the bot would."""
    message = qr.Message(name.encode(), session_id=f"s-{name}", attributes={"name": name})
    await harness.client.send_message(queue, message)
    received = await receive_one(harness, queue)
    assert received is not None
    properties = {dlq.REASON: reason}
    if handler is not None:
        properties[dlq.HANDLER] = handler
    await harness.client.dead_letter_message(received.receipt, reason, f"{name} failed", properties)


async def dead_letters_of(harness: Harness, queue: str, count: int) -> list[dlq.DeadLetter]:
    """The queue's dead letters, once ``count`` of them are readable."""
    for _ in range(50):
        letters = await dlq.list_dead_letters(harness.client, queue)
        if len(letters) >= count:
            return letters
        await harness.pass_time(0.2)
    raise AssertionError(f"expected {count} dead letters in {queue}")


async def queue_with_dead_letters(
    harness: Harness, letters: list[tuple[str, str, str | None]]
) -> str:
    """A session queue whose DLQ holds ``(name, reason, handler)`` letters."""
    queue = await harness.queue()
    for name, reason, handler in letters:
        await dead_letter(harness, queue, name, reason, handler)
    await close_sessions(harness)
    await dead_letters_of(harness, queue, len(letters))
    return queue


async def test_listing_shows_reasons_descriptions_and_failure_records_without_locking(
    harness: Harness,
) -> None:
    queue = await queue_with_dead_letters(harness, [("a", "ValueError", "Pushes")])

    [letter] = await dlq.list_dead_letters(harness.client, queue)

    assert (letter.reason, letter.description) == ("ValueError", "a failed")
    assert (letter.failure.reason, letter.failure.handler) == ("ValueError", "Pushes")
    assert letter.message.body == b"a"
    assert letter.message.session_id == "s-a"
    # listing locked nothing: the letter can be received at once
    [locked] = await harness.client.receive_dead_letters(queue, 1, timeout=5.0)
    assert locked.message_id == letter.message.message_id
    await harness.client.abandon_message(locked.receipt)


async def test_stats_count_dead_letters_by_error_type_and_by_handler(harness: Harness) -> None:
    queue = await queue_with_dead_letters(
        harness,
        [
            ("a", "ValueError", "Pushes"),
            ("b", "ValueError", "Issues"),
            ("c", "KeyError", "Pushes"),
            ("d", "NoHandler", None),
        ],
    )

    stats = await dlq.dead_letter_stats(harness.client, queue)

    assert stats.total == 4
    assert stats.by_reason == {"ValueError": 2, "KeyError": 1, "NoHandler": 1}
    assert stats.by_handler == {"Pushes": 2, "Issues": 1, dlq.NO_HANDLER: 1}


async def test_requeue_by_predicate_sends_matching_letters_back_with_their_sessions(
    harness: Harness,
) -> None:
    queue = await queue_with_dead_letters(
        harness, [("a", "ValueError", None), ("b", "KeyError", None), ("c", "ValueError", None)]
    )
    counts: list[int] = []

    requeued = await dlq.requeue(
        harness.client, queue, lambda m: m.dead_letter_reason == "ValueError", counts.append
    )

    assert requeued == 2
    assert counts == [1, 2]
    back = await drain(harness, queue, 2)
    assert sorted((m.body, m.session_id) for m in back) == [(b"a", "s-a"), (b"c", "s-c")]
    assert {m.attributes["name"] for m in back} == {"a", "c"}
    assert {m.attributes[REQUEUE_COUNT_ATTRIBUTE] for m in back} == {"1"}
    assert [letter.message.body for letter in await dead_letters_of(harness, queue, 1)] == [b"b"]


async def test_a_filtered_purge_removes_only_matching_letters_and_gives_the_rest_back(
    harness: Harness,
) -> None:
    queue = await queue_with_dead_letters(
        harness, [("a", "ValueError", None), ("b", "KeyError", None), ("c", "ValueError", None)]
    )
    counts: list[int] = []

    purged = await dlq.purge(
        harness.client, queue, lambda m: m.dead_letter_reason == "KeyError", counts.append
    )

    assert (purged, counts) == (1, [1])
    kept = await dead_letters_of(harness, queue, 2)
    assert sorted(letter.message.body for letter in kept) == [b"a", b"c"]
    # the kept ones were given back at once, not left locked
    again = await harness.client.receive_dead_letters(queue, 10, timeout=5.0)
    assert sorted(m.body for m in again) == [b"a", b"c"]
    for message in again:
        await harness.client.abandon_message(message.receipt)
    assert await receive_one(harness, queue, timeout=0.2) is None  # nothing was requeued


async def test_an_unfiltered_purge_empties_the_dlq_and_reports_the_count(
    harness: Harness,
) -> None:
    queue = await queue_with_dead_letters(
        harness, [("a", "ValueError", None), ("b", "KeyError", None)]
    )
    counts: list[int] = []

    assert await dlq.purge(harness.client, queue, progress=counts.append) == 2

    assert counts == [2]
    assert await dlq.list_dead_letters(harness.client, queue) == []


async def test_a_requeue_that_fails_after_the_send_duplicates_and_never_loses(
    harness: Harness,
) -> None:
    queue = await queue_with_dead_letters(harness, [("a", "ValueError", None)])
    provider = harness.client.provider
    assert isinstance(provider, SessionProvider)  # every harness's provider has sessions
    connection = FaultyProvider(provider, clock=harness.client.clock)
    no_retries = qr.QueueConfig(retry=qr.RetryPolicy(max_attempts=1))
    faulty = qr.QueueClient(connection, no_retries, clock=harness.client.clock)
    connection.faults.fail_next("complete")  # removing it from the DLQ fails

    with pytest.raises(QueueError):
        await dlq.requeue(faulty, queue)

    # sent first: it is in the queue ...
    sent = await receive_one(harness, queue)
    assert sent is not None
    assert sent.body == b"a"
    await close_sessions(harness)
    # ... and still in the DLQ, given back at once: a second requeue finishes the job
    [letter] = await dead_letters_of(harness, queue, 1)
    assert letter.message.message_id == sent.message_id
    assert await dlq.requeue(harness.client, queue) == 1
    assert await dlq.list_dead_letters(harness.client, queue) == []
    await faulty.aclose()
