"""Each invariant check finds what it is about, and only that."""

from __future__ import annotations

from dataclasses import replace

from queue_runtime.bot import BotStats, Event
from queue_runtime.clock import to_datetime
from queue_runtime.messages import QueueName, ReceiptHandle, ReceivedMessage
from queue_runtime.providers.memory import QueueStats
from queue_runtime.testing import Journal, ProbeEvent
from queue_runtime.testing.invariants import Published, Record, violations

EMPTY = QueueStats(active=0, in_flight=0, scheduled=0, dead_lettered=0)


def published(message_id: str, session: str | None = "s", **fields: object) -> Published:
    return Published(message_id, session, {"event_type": "push"}, **fields)  # type: ignore[arg-type]


def call(
    message_id: str,
    session: str | None = "s",
    *,
    outcome: str = "returned",
    delivery: int = 1,
    incarnation: int = 1,
) -> ProbeEvent:
    at = to_datetime(0.0)
    message = ReceivedMessage(
        body=b"{}",
        attributes={"event_type": "push"},
        session_id=session,
        correlation_id=None,
        message_id=message_id,
        content_type=None,
        time_to_live=None,
        delivery_count=delivery,
        enqueued_at=at,
        first_delivered_at=at,
        delivered_at=at,
        receipt=ReceiptHandle(provider_id="p", queue=QueueName("q"), token="t", locked_until=at),
    )
    event = ProbeEvent(Event.from_message(message, "push"), "P", 0.0, incarnation)
    event.outcome = outcome  # type: ignore[assignment]
    return event


def record(
    messages: list[Published],
    calls: list[ProbeEvent],
    *,
    ended: bool = True,
    **fields: object,
) -> Record:
    journal = Journal()
    for c in calls:
        journal.began(c)
        if ended:
            journal.ended(c)
    base = Record(
        published=messages,
        journal=journal,
        probe_event_types=frozenset({"push"}),
        event_type_attribute="event_type",
        dead_lettered=frozenset(),
        queue=EMPTY,
        bots=[BotStats(received=len(messages), completed=len(messages))],
        max_delivery_count=5,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_run_where_every_promise_held_has_no_violations() -> None:
    messages = [published("m1"), published("m2"), published("m3", None)]
    calls = [call("m1", outcome="raised"), call("m1"), call("m3", None), call("m2")]

    assert violations(record(messages, calls)) == []


def test_messages_still_in_the_queue_are_reported_as_not_finished() -> None:
    broken = violations(
        record(
            [published("m1")],
            [],
            queue=QueueStats(active=1, in_flight=2, scheduled=3, dead_lettered=0),
        )
    )

    assert broken == ["not finished: 1 message(s) waiting, 2 locked, 3 scheduled"]


def test_a_message_gone_without_a_returned_call_is_lost_unless_dead_lettered() -> None:
    messages = [published("m1"), published("m2"), published("m3")]
    calls = [call("m1", outcome="raised"), call("m3")]

    lost = violations(record(messages, calls, dead_lettered=frozenset({"m2"})))

    assert len(lost) == 1
    assert lost[0].startswith("lost: 'm1'")


def test_messages_for_handlers_that_are_not_probes_are_not_judged_lost() -> None:
    other = Published("m1", "s", {"event_type": "issues"})

    assert violations(record([other], [])) == []


def test_two_calls_of_one_session_at_once_are_reported() -> None:
    broken = violations(
        record([published("m1"), published("m2")], [call("m1"), call("m2")], ended=False)
    )

    assert len(broken) == 1
    assert broken[0].startswith("concurrent: ")


def test_a_later_message_first_handled_before_an_earlier_one_is_out_of_order() -> None:
    messages = [published("m1"), published("m2"), published("m3", "other")]
    calls = [call("m2"), call("m3", "other"), call("m1")]

    broken = violations(record(messages, calls))

    assert broken == [
        "out of order: in session 's', 'm1' (published #1) was first handled after 'm2' "
        "(published #2)"
    ]


def test_scheduled_messages_and_redeliveries_do_not_count_for_order() -> None:
    messages = [published("m1", scheduled=True), published("m2"), published("m3")]
    calls = [call("m2"), call("m1"), call("m3"), call("m2", delivery=2)]

    assert violations(record(messages, calls)) == []


def test_a_call_past_the_max_delivery_count_is_reported() -> None:
    broken = violations(record([published("m1")], [call("m1", delivery=6)]))

    assert len(broken) == 1
    assert broken[0].startswith("delivered too often: ")


def test_counters_that_do_not_add_up_are_reported_per_bot() -> None:
    bots = [BotStats(received=2, completed=2), BotStats(received=3, completed=1, abandoned=1)]

    broken = violations(record([published("m1")], [call("m1")], bots=bots))

    assert len(broken) == 1
    assert broken[0].startswith("counters: bot #2 received 3")


def test_long_lists_are_cut_to_a_few_examples() -> None:
    messages = [published(f"m{n}", f"s{n}") for n in range(8)]

    broken = violations(record(messages, []))

    assert len(broken) == 6
    assert broken[-1] == "... and 3 more lost message(s)"
