"""settle_again: the rounds after a first settle failed (the session actor's slow path)."""

from __future__ import annotations

import pytest

from queue_runtime.bot.settling import settle_again, settle_in_rounds
from queue_runtime.errors import ConnectionFailedError, InvalidReceiptError, QueueError


class Provider:
    """Answers each settle call with the next of ``answers`` (None: it worked)."""

    def __init__(self, *answers: QueueError | None) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.pauses: list[int] = []

    async def settle(self) -> None:
        self.calls += 1
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer

    async def pause(self, round: int) -> None:
        self.pauses.append(round)


async def test_a_failure_that_is_not_transient_is_raised_at_once() -> None:
    provider = Provider()
    failure = QueueError("denied")
    with pytest.raises(QueueError) as raised:
        await settle_again(failure, provider.settle, "complete", pause=provider.pause)
    assert raised.value is failure
    assert (provider.calls, provider.pauses) == (0, [])


async def test_a_lost_lock_on_the_first_call_is_raised_at_once() -> None:
    provider = Provider()
    failure = InvalidReceiptError("gone", settled="complete")
    with pytest.raises(InvalidReceiptError):
        await settle_again(failure, provider.settle, "complete", pause=provider.pause)
    assert provider.calls == 0


async def test_after_a_transient_failure_it_pauses_and_settles_again() -> None:
    provider = Provider(ConnectionFailedError("again"), None)
    await settle_again(
        ConnectionFailedError("first"), provider.settle, "complete", pause=provider.pause
    )
    assert (provider.calls, provider.pauses) == (2, [1, 2])


async def test_a_receipt_settled_by_an_earlier_round_means_done() -> None:
    provider = Provider(InvalidReceiptError("gone", settled="complete"))
    await settle_again(
        ConnectionFailedError("answer lost"), provider.settle, "complete", pause=provider.pause
    )
    assert provider.calls == 1


async def test_a_receipt_settled_another_way_is_raised() -> None:
    provider = Provider(InvalidReceiptError("gone", settled="abandon"))
    with pytest.raises(InvalidReceiptError):
        await settle_again(
            ConnectionFailedError("first"), provider.settle, "complete", pause=provider.pause
        )


async def test_it_stops_after_the_last_round_with_the_last_error() -> None:
    last = ConnectionFailedError("third")
    provider = Provider(ConnectionFailedError("second"), last)
    with pytest.raises(ConnectionFailedError) as raised:
        await settle_again(
            ConnectionFailedError("first"), provider.settle, "complete", pause=provider.pause
        )
    assert raised.value is last
    assert (provider.calls, provider.pauses) == (2, [1, 2])


async def test_a_round_whose_pause_is_too_late_is_not_started() -> None:
    provider = Provider(ConnectionFailedError("second"))
    with pytest.raises(ConnectionFailedError) as raised:
        await settle_again(
            ConnectionFailedError("first"),
            provider.settle,
            "complete",
            pause=provider.pause,
            too_late=lambda round: round >= 2,
        )
    assert str(raised.value) == "second"
    assert (provider.calls, provider.pauses) == (1, [1])


async def test_settle_in_rounds_makes_the_first_call_itself() -> None:
    provider = Provider(ConnectionFailedError("first"), None)
    await settle_in_rounds(provider.settle, "complete", pause=provider.pause)
    assert (provider.calls, provider.pauses) == (2, [1])
