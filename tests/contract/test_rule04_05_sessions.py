"""Rules 4 and 5: per-session FIFO with group blocking, and exclusive session locks."""

from __future__ import annotations

import pytest

import queue_runtime as qr

from .harness import Harness, drain


def _interleaved(sessions: list[str], per_session: int) -> list[qr.Message]:
    return [
        qr.Message(f"{session}:{i}".encode(), session_id=session)
        for i in range(per_session)
        for session in sessions
    ]


def _require_emulated(harness: Harness, queue: str) -> None:
    if harness.client.session_support(queue) is not qr.SessionSupport.EMULATED:
        pytest.skip("plain receive hands out session messages only with emulated sessions")


async def test_each_session_is_delivered_in_send_order(harness: Harness) -> None:
    queue = await harness.queue()
    sessions = ["o/r/pull/1", "o/r/pull/2", "o/r/issues/3"]
    await harness.client.send_messages(queue, _interleaved(sessions, 6))

    seen: dict[str, list[int]] = {s: [] for s in sessions}
    for _ in sessions:
        session = await harness.client.accept_session(queue, timeout=5.0)
        assert session is not None
        async with session:
            while message := await session.receive_message(timeout=0.2):
                seen[session.session_id].append(int(message.body.split(b":")[1]))
                await session.complete_message(message.receipt)

    assert seen == {s: list(range(6)) for s in sessions}


async def test_plain_receive_never_hands_out_a_session_message_while_an_earlier_is_in_flight(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    _require_emulated(harness, queue)
    await harness.client.send_messages(queue, _interleaved(["a", "b"], 3))

    first = await harness.client.receive_message(queue, timeout=5.0)
    second = await harness.client.receive_message(queue, timeout=5.0)
    third = await harness.client.receive_message(queue, timeout=0.2)

    assert first is not None
    assert second is not None
    assert {first.body, second.body} == {b"a:0", b"b:0"}
    assert third is None  # both sessions are blocked by their in-flight heads
    await harness.client.complete_message(first.receipt)
    nxt = await harness.client.receive_message(queue, timeout=5.0)
    assert nxt is not None
    assert nxt.body == first.body.replace(b":0", b":1")


async def test_plain_receive_keeps_order_within_each_session_across_many_batches(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    _require_emulated(harness, queue)
    sessions = [f"s{i}" for i in range(8)]
    await harness.client.send_messages(queue, _interleaved(sessions, 5))

    seen: dict[str, list[int]] = {s: [] for s in sessions}
    for message in await drain(harness, queue, 40):
        assert message.session_id is not None
        seen[message.session_id].append(int(message.body.split(b":")[1]))

    assert seen == {s: list(range(5)) for s in sessions}


async def test_an_abandoned_session_message_is_redelivered_before_later_ones(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    await harness.client.send_messages(queue, _interleaved(["only"], 3))
    session = await harness.client.accept_session(queue, "only", timeout=5.0)
    assert session is not None
    async with session:
        first = await session.receive_message(timeout=5.0)
        assert first is not None
        await session.abandon_message(first.receipt)
        again = await session.receive_message(timeout=5.0)

    assert again is not None
    assert again.body == b"only:0"
    assert again.delivery_count == 2


async def test_a_locked_session_cannot_be_accepted_by_a_second_consumer(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    await harness.client.send_message(queue, qr.Message(b"x", session_id="busy"))
    holder = await harness.client.accept_session(queue, "busy", timeout=5.0)
    assert holder is not None

    with pytest.raises(qr.SessionLockedError):
        await harness.client.accept_session(queue, "busy", timeout=1.0)
    assert await harness.client.accept_session(queue, timeout=0.3) is None
    await holder.close()


async def test_contention_for_a_held_session_leaves_the_client_usable(harness: Harness) -> None:
    queue = await harness.queue()
    client = harness.client
    await client.send_message(queue, qr.Message(b"held", session_id="busy"))
    holder = await client.accept_session(queue, "busy", timeout=5.0)
    assert holder is not None
    await client.send_message(queue, qr.Message(b"free", session_id="other"))

    # more contended accepts than the breaker's failure threshold
    for _ in range(client.config.circuit_breaker.failure_threshold + 1):
        started = harness.now()
        with pytest.raises(qr.SessionLockedError):
            await client.accept_session(queue, "busy", timeout=0.2)
        spent = (harness.now() - started).total_seconds()
        assert spent <= 0.2 + 0.5, f"a contended accept took {spent:.2f} s for a 0.2 s timeout"

    assert client.circuit.state is qr.CircuitState.CLOSED
    other = await client.accept_session(queue, timeout=5.0)  # the client still works
    assert other is not None
    assert other.session_id == "other"
    message = await other.receive_message(timeout=5.0)
    assert message is not None
    assert message.body == b"free"
    await other.complete_message(message.receipt)
    await other.close()

    await holder.close()
    again = await client.accept_session(queue, "busy", timeout=5.0)
    assert again is not None  # released: the contended session is taken at once
    await again.close()


async def test_next_available_session_picks_one_with_messages(harness: Harness) -> None:
    queue = await harness.queue()
    await harness.client.send_message(queue, qr.Message(b"waiting", session_id="ready"))

    session = await harness.client.accept_session(queue, timeout=5.0)

    assert session is not None
    assert session.session_id == "ready"
    await session.close()


async def test_no_session_available_returns_none_after_the_timeout(harness: Harness) -> None:
    queue = await harness.queue()

    assert await harness.client.accept_session(queue, timeout=0.3) is None


async def test_an_expired_session_lock_passes_the_session_on_and_the_old_holder_learns_it(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    await harness.client.send_messages(queue, _interleaved(["lapsed"], 2))
    old = await harness.client.accept_session(queue, "lapsed", timeout=5.0)
    assert old is not None
    held = await old.receive_message(timeout=5.0)
    assert held is not None

    await harness.pass_time((old.locked_until - held.delivered_at).total_seconds() + 1)
    new = await harness.client.accept_session(queue, "lapsed", timeout=5.0)

    assert new is not None
    with pytest.raises(qr.SessionLockLostError):
        await old.receive_message(timeout=0.1)
    redelivered = await new.receive_message(timeout=5.0)
    assert redelivered is not None
    assert redelivered.body == b"lapsed:0"
    assert redelivered.delivery_count == 2
    await new.close()


async def test_closing_a_session_releases_its_unsettled_messages_at_once(
    harness: Harness,
) -> None:
    queue = await harness.queue()
    await harness.client.send_messages(queue, _interleaved(["handoff"], 2))
    first = await harness.client.accept_session(queue, "handoff", timeout=5.0)
    assert first is not None
    assert await first.receive_message(timeout=5.0) is not None

    await first.close()
    second = await harness.client.accept_session(queue, "handoff", timeout=5.0)

    assert second is not None
    message = await second.receive_message(timeout=5.0)
    assert message is not None
    assert message.body == b"handoff:0"
    await second.close()


async def test_renewing_the_session_lock_extends_it(harness: Harness) -> None:
    queue = await harness.queue()
    await harness.client.send_message(queue, qr.Message(b"x", session_id="renew"))
    session = await harness.client.accept_session(queue, "renew", timeout=5.0)
    assert session is not None
    before = session.locked_until

    await harness.pass_time(1.0)
    after = await session.renew_session_lock()

    assert after > before
    assert session.locked_until == after
    await session.close()


async def test_session_state_is_kept_between_holders(harness: Harness) -> None:
    queue = await harness.queue()
    await harness.client.send_message(queue, qr.Message(b"x", session_id="stateful"))
    first = await harness.client.accept_session(queue, "stateful", timeout=5.0)
    assert first is not None
    assert await first.get_state() is None
    await first.set_state(b'{"step":2}')
    await first.close()

    second = await harness.client.accept_session(queue, "stateful", timeout=5.0)

    assert second is not None
    assert await second.get_state() == b'{"step":2}'
    await second.close()
