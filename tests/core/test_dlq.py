"""DLQ tooling (queue_runtime.dlq) on the in-memory provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import queue_runtime as qr
from queue_runtime import dlq
from queue_runtime.errors import QueueError
from queue_runtime.providers.memory import InMemoryProvider

QUEUE = "jobs"


@pytest.fixture
async def provider() -> AsyncIterator[InMemoryProvider]:
    chosen = InMemoryProvider(qr.InMemoryConfig(max_delivery_count=10))
    try:
        yield chosen
    finally:
        await chosen.aclose()


@pytest.fixture
def client(provider: InMemoryProvider) -> qr.QueueClient:
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0.0)
    return qr.QueueClient(provider, qr.QueueConfig(provider=provider.config, retry=retry))


async def _dead_letter(
    client: qr.QueueClient, name: str, reason: str, handler: str | None = None
) -> None:
    await client.send_message(QUEUE, qr.Message(name.encode(), session_id=f"s-{name}"))
    [message] = await client.receive_messages(QUEUE, 1, timeout=0.1)
    properties = {dlq.REASON: reason}
    if handler is not None:
        properties[dlq.HANDLER] = handler
    await client.dead_letter_message(message.receipt, reason, f"{name} failed", properties)


async def test_a_fault_between_send_and_dlq_removal_duplicates_and_never_loses(
    provider: InMemoryProvider, client: qr.QueueClient
) -> None:
    await _dead_letter(client, "a", "ValueError")
    provider.faults.fail_next("complete", count=10)  # removing from the DLQ keeps failing

    with pytest.raises(QueueError):
        await dlq.requeue(client, QUEUE)

    assert provider.pending_messages(QUEUE)[0].body == b"a"  # sent
    [still_dead] = provider.dead_letter_messages(QUEUE)  # and not removed: a duplicate
    assert still_dead.body == b"a"
    assert provider.stats(QUEUE).dead_lettered == 1
    # given back at once (not left locked): a second requeue finishes the job
    provider.faults.clear()
    assert await dlq.requeue(client, QUEUE) == 1
    assert [m.body for m in provider.pending_messages(QUEUE)] == [b"a", b"a"]
    assert provider.stats(QUEUE).dead_lettered == 0


async def test_requeue_by_predicate_reports_progress_and_leaves_the_rest(
    provider: InMemoryProvider, client: qr.QueueClient
) -> None:
    for name, reason in (("a", "ValueError"), ("b", "KeyError"), ("c", "ValueError")):
        await _dead_letter(client, name, reason)
    counts: list[int] = []

    requeued = await dlq.requeue(
        client, QUEUE, lambda m: m.dead_letter_reason == "ValueError", counts.append
    )

    assert requeued == 2
    assert counts == [1, 2]
    assert sorted(m.body for m in provider.pending_messages(QUEUE)) == [b"a", b"c"]
    assert {m.session_id for m in provider.pending_messages(QUEUE)} == {"s-a", "s-c"}
    assert [m.body for m in provider.dead_letter_messages(QUEUE)] == [b"b"]


async def test_a_filtered_purge_removes_only_the_matching_dead_letters(
    provider: InMemoryProvider, client: qr.QueueClient
) -> None:
    for name, reason in (("a", "ValueError"), ("b", "KeyError"), ("c", "ValueError")):
        await _dead_letter(client, name, reason)
    counts: list[int] = []

    purged = await dlq.purge(
        client, QUEUE, lambda m: m.dead_letter_reason == "KeyError", counts.append
    )

    assert (purged, counts) == (1, [1])
    assert sorted(m.body for m in provider.dead_letter_messages(QUEUE)) == [b"a", b"c"]
    # the ones kept are visible again at once, not left locked
    assert len(await client.receive_dead_letters(QUEUE, 10, timeout=0.1)) == 2
    assert provider.pending_messages(QUEUE) == []


async def test_an_unfiltered_purge_empties_the_dlq(
    provider: InMemoryProvider, client: qr.QueueClient
) -> None:
    for name in ("a", "b"):
        await _dead_letter(client, name, "ValueError")
    counts: list[int] = []

    assert await dlq.purge(client, QUEUE, progress=counts.append) == 2
    assert counts == [2]
    assert provider.stats(QUEUE).dead_lettered == 0


async def test_stats_count_dead_letters_by_error_type_and_by_handler(
    client: qr.QueueClient,
) -> None:
    await _dead_letter(client, "a", "ValueError", handler="Pushes")
    await _dead_letter(client, "b", "ValueError", handler="Issues")
    await _dead_letter(client, "c", "KeyError", handler="Pushes")
    await _dead_letter(client, "d", "NoHandler")

    stats = await dlq.dead_letter_stats(client, QUEUE)

    assert stats.total == 4
    assert stats.by_reason == {"ValueError": 2, "KeyError": 1, "NoHandler": 1}
    assert stats.by_handler == {"Pushes": 2, "Issues": 1, dlq.NO_HANDLER: 1}


async def test_listing_shows_reasons_descriptions_and_failure_records(
    client: qr.QueueClient,
) -> None:
    await _dead_letter(client, "a", "ValueError", handler="Pushes")

    [letter] = await dlq.list_dead_letters(client, QUEUE)

    assert (letter.reason, letter.description) == ("ValueError", "a failed")
    assert letter.failure.handler == "Pushes"
    assert letter.message.body == b"a"
    assert await client.receive_dead_letters(QUEUE, 1, timeout=0.1)  # not locked by listing
