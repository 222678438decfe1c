"""The triage bot's tests, written with queue-runtime's test kit (virtual time: instant)."""

from __future__ import annotations

from collections.abc import Callable

import queue_runtime as qr
from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.providers.aws import SqsProvider
from queue_runtime.providers.memory import InMemoryProvider
from queue_runtime.testing import BotKit, github_events

from github_bot.app import QUEUE, handlers, queue_for
from github_bot.github_api import RecordingGitHub

MakeKit = Callable[..., BotKit]


async def start(make_kit: MakeKit, github: RecordingGitHub, **settings: object) -> BotKit:
    kit = make_kit(handlers(github), queue=QUEUE, unrouted="complete", **settings)
    await kit.start()
    return kit


async def test_an_opened_pull_request_is_labelled_for_review(bot_kit_factory: MakeKit) -> None:
    github = RecordingGitHub()
    kit = await start(bot_kit_factory, github)

    await kit.publish_message(
        github_events.pull_request("opened", number=7, repo="octo/app").message()
    )
    await kit.drain()

    assert github.calls == [("label", "octo/app", 7, "needs-review")]


async def test_events_of_one_pull_request_are_handled_in_the_order_github_sent_them(
    bot_kit_factory: MakeKit,
) -> None:
    github = RecordingGitHub()
    kit = await start(bot_kit_factory, github)

    for event in (
        github_events.pull_request("opened", number=7, repo="octo/app"),
        github_events.issue_comment(number=7, repo="octo/app", on_pull_request=True, body="/hello"),
        github_events.pull_request_review("submitted", number=7, repo="octo/app", state="approved"),
    ):
        await kit.publish_message(event.message())
    await kit.drain()

    assert [call[0] + ":" + call[3] for call in github.calls] == [
        "label:needs-review",
        "comment:Hello @octocat!",
        "label:approved",
    ]


async def test_bugs_are_labelled_and_other_issues_are_left_alone(bot_kit_factory: MakeKit) -> None:
    github = RecordingGitHub()
    kit = await start(bot_kit_factory, github)

    await kit.publish_message(
        github_events.issues("opened", number=1, title="Bug: crash").message()
    )
    await kit.publish_message(
        github_events.issues("opened", number=2, title="Add a feature").message()
    )
    await kit.drain()

    assert github.calls == [("label", "octo-org/hello-world", 1, "bug")]


async def test_event_types_without_a_handler_are_completed_not_dead_lettered(
    bot_kit_factory: MakeKit,
) -> None:
    github = RecordingGitHub()
    kit = await start(bot_kit_factory, github)

    await kit.publish_message(github_events.push(repo="octo/app").message())
    await kit.drain()

    assert kit.dead_letters() == []
    assert kit.stats().bot.completed == 1


async def test_a_malformed_issues_event_goes_to_the_dead_letter_queue_at_once(
    bot_kit_factory: MakeKit,
) -> None:
    kit = await start(bot_kit_factory, RecordingGitHub())

    await kit.publish("issues", {"action": "opened"}, session_id="octo/app/issues/3")
    await kit.drain()

    [dead] = kit.dead_letters()
    assert dead.dead_letter_reason == "PermanentFailure"
    assert dead.delivery_count == 1


async def test_a_github_outage_holds_events_and_loses_none(bot_kit_factory: MakeKit) -> None:
    github = RecordingGitHub(down=True)
    circuit = CircuitBreakerConfig(failure_threshold=3, recovery_timeout=30.0)
    kit = await start(bot_kit_factory, github, handler_circuit=circuit)

    for number in range(1, 6):
        await kit.publish_message(
            github_events.pull_request("opened", number=number, repo="octo/app").message()
        )
    await kit.advance(10.0)  # virtual seconds: the circuit is open, events are held
    assert "open" in kit.bot.stats().circuits.values()
    github.down = False  # GitHub is back before the circuit's half-open probe
    await kit.drain()

    assert sorted(call[2] for call in github.calls) == [1, 2, 3, 4, 5]
    assert kit.dead_letters() == []
    assert kit.stats().bot.abandoned == 0  # no delivery was spent on the outage


def test_on_sqs_the_bot_reads_the_fifo_queue_so_that_sessions_keep_their_order() -> None:
    sqs = qr.QueueClient(SqsProvider(qr.AwsSqsConfig(region="eu-west-1")))  # no request made
    memory = qr.QueueClient(InMemoryProvider())

    assert queue_for(sqs) == "github-events.fifo"
    assert sqs.session_support(queue_for(sqs)) is qr.SessionSupport.EMULATED
    assert queue_for(memory) == QUEUE
