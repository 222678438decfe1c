"""Retry policy: delays, jitter, which errors retry, and the retry loop.

The numbers: docs/design.md#retry-and-poison-messages.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

import queue_runtime as qr
from queue_runtime.retry import Backoff, RetryPolicy, is_transient

START = 1_000.0


def test_default_policy_matches_spec() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_delay == 1.0
    assert policy.max_delay == 30.0
    assert policy.multiplier == 2.0
    assert policy.jitter == 0.2
    assert policy.backoff is Backoff.EXPONENTIAL
    assert policy.attempts == 3


def test_exponential_delays_without_jitter() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_exponential_delays_with_custom_multiplier_and_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=3.0, max_delay=10.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10.0]


def test_linear_delays_without_jitter() -> None:
    policy = RetryPolicy(backoff=Backoff.LINEAR, initial_delay=2.0, max_delay=7.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 6.0, 7.0]


def test_fixed_delays_without_jitter() -> None:
    policy = RetryPolicy(backoff=Backoff.FIXED, initial_delay=1.5, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 5, 20)] == [1.5, 1.5, 1.5, 1.5]


def test_backoff_accepts_its_string_value() -> None:
    policy = RetryPolicy(backoff="linear", jitter=0.0)  # type: ignore[arg-type]
    assert policy.backoff is Backoff.LINEAR
    assert policy.delay(3) == 3.0


def test_none_backoff_never_retries_whatever_max_attempts_says() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Backoff.NONE)
    assert policy.attempts == 1
    assert not policy.should_retry(qr.ThrottledError("busy"), 1)


def test_never_makes_exactly_one_attempt() -> None:
    policy = RetryPolicy.never()
    assert policy.attempts == 1
    assert not policy.should_retry(qr.ConnectionFailedError("down"), 1)


@pytest.mark.parametrize("retry", [1, 2, 3, 4, 5, 6, 7])
def test_jitter_stays_within_twenty_percent(retry: int) -> None:
    policy = RetryPolicy()
    base = min(1.0 * 2.0 ** (retry - 1), 30.0)
    rng = random.Random(retry)
    samples = [policy.delay(retry, rng=rng) for _ in range(2000)]
    assert all(base * 0.8 <= sample <= base * 1.2 for sample in samples)
    # it really varies, and uses both sides of the range
    assert len(set(samples)) > 1900
    assert min(samples) < base * 0.85
    assert max(samples) > base * 1.15


def test_jitter_uses_the_global_random_without_rng() -> None:
    policy = RetryPolicy()
    samples = {policy.delay(2) for _ in range(200)}
    assert len(samples) > 150
    assert all(1.6 <= sample <= 2.4 for sample in samples)


def test_retry_after_hint_wins_over_the_formula() -> None:
    policy = RetryPolicy()
    error = qr.ThrottledError("slow down", retry_after=7.5)
    assert [policy.delay(n, error) for n in (1, 2, 3)] == [7.5, 7.5, 7.5]


def test_retry_after_hint_above_max_delay_is_honoured() -> None:
    policy = RetryPolicy(max_delay=5.0)
    assert policy.delay(1, qr.ThrottledError("busy", retry_after=60.0)) == 60.0


def test_error_without_retry_after_uses_the_formula() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(3, qr.ThrottledError("busy")) == 4.0


@pytest.mark.parametrize(
    "error",
    [
        qr.ConnectionFailedError("down"),
        qr.OperationTimeoutError("slow"),
        qr.ThrottledError("busy"),
        qr.SessionLockedError("locked"),
        qr.CircuitOpenError("open"),
        qr.QueueError("marked", transient=True),
    ],
)
def test_transient_errors_are_retried(error: qr.QueueError) -> None:
    assert is_transient(error)
    assert RetryPolicy().should_retry(error, 1)


@pytest.mark.parametrize(
    "error",
    [
        qr.ValidationError("bad"),
        qr.QueueNotFoundError("orders"),
        qr.AuthenticationError("who"),
        qr.AuthorizationError("no"),
        qr.MessageTooLargeError(10, 5),
        qr.InvalidReceiptError("gone"),
        qr.SessionLockLostError("lost"),
        qr.DecryptionFailedError("tag"),
        qr.QueueError("unknown"),
        ValueError("not a queue error"),
        TimeoutError("builtin"),
    ],
)
def test_permanent_and_foreign_errors_are_not_retried(error: BaseException) -> None:
    assert not is_transient(error)
    assert not RetryPolicy().should_retry(error, 1)


def test_attempts_count_includes_the_first() -> None:
    policy = RetryPolicy(max_attempts=3)
    error = qr.ThrottledError("busy")
    assert policy.should_retry(error, 1)
    assert policy.should_retry(error, 2)
    assert not policy.should_retry(error, 3)


class Flaky:
    """Fails with the given errors, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_call_retries_and_clock_advances_by_sum_of_delays() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(qr.ConnectionFailedError("a"), qr.ThrottledError("b"))
    seen: list[tuple[int, str, float]] = []
    result = await RetryPolicy(jitter=0.0).call(
        flaky, clock=clock, on_retry=lambda n, e, d: seen.append((n, str(e), d))
    )
    assert result == "ok"
    assert flaky.calls == 3
    assert clock.now() == START + 1.0 + 2.0
    assert seen == [(1, "a", 1.0), (2, "b", 2.0)]


async def test_call_uses_retry_after_for_the_wait() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(qr.ThrottledError("busy", retry_after=9.0))
    assert await RetryPolicy().call(flaky, clock=clock) == "ok"
    assert clock.now() == START + 9.0


async def test_call_reraises_the_last_error_when_attempts_run_out() -> None:
    clock = qr.ManualClock(start=START)
    last = qr.ConnectionFailedError("third")
    flaky = Flaky(qr.ConnectionFailedError("first"), qr.ConnectionFailedError("second"), last)
    with pytest.raises(qr.ConnectionFailedError) as info:
        await RetryPolicy(jitter=0.0).call(flaky, clock=clock)
    assert info.value is last
    assert flaky.calls == 3
    assert clock.now() == START + 3.0


async def test_call_does_not_retry_permanent_errors() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(qr.AuthorizationError("denied"))
    with pytest.raises(qr.AuthorizationError):
        await RetryPolicy().call(flaky, clock=clock)
    assert flaky.calls == 1
    assert clock.now() == START


async def test_call_does_not_retry_foreign_exceptions() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await RetryPolicy().call(flaky, clock=clock)
    assert flaky.calls == 1


async def test_call_honours_max_attempts() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(*(qr.ThrottledError(str(n)) for n in range(10)))
    with pytest.raises(qr.ThrottledError) as info:
        await RetryPolicy(max_attempts=5, jitter=0.0).call(flaky, clock=clock)
    assert flaky.calls == 5
    assert str(info.value) == "4"
    assert clock.now() == START + 1.0 + 2.0 + 4.0 + 8.0


async def test_call_with_never_policy_makes_one_attempt() -> None:
    clock = qr.ManualClock(start=START)
    flaky = Flaky(qr.ThrottledError("busy"))
    with pytest.raises(qr.ThrottledError):
        await RetryPolicy.never().call(flaky, clock=clock)
    assert flaky.calls == 1
    assert clock.now() == START


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": -3}, "retry.max_attempts"),
        ({"initial_delay": -0.1}, "retry.initial_delay"),
        ({"initial_delay": 5.0, "max_delay": 1.0}, "retry.max_delay"),
        ({"multiplier": 0.5}, "retry.multiplier"),
        ({"jitter": 1.0}, "retry.jitter"),
        ({"jitter": -0.1}, "retry.jitter"),
        ({"jitter": math.nan}, "retry.jitter"),
    ],
)
def test_invalid_policy_raises_configuration_error_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(qr.ConfigurationError) as info:
        RetryPolicy(**changes)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"initial_delay": math.nan}, "retry.initial_delay", id="nan-initial"),
        pytest.param({"max_delay": math.nan}, "retry.max_delay", id="nan-max-delay"),
        pytest.param({"multiplier": math.nan}, "retry.multiplier", id="nan-multiplier"),
        pytest.param({"max_attempts": 2.5}, "retry.max_attempts", id="float-attempts"),
        pytest.param({"max_attempts": "3"}, "retry.max_attempts", id="str-attempts"),
        pytest.param({"backoff": "sometimes"}, "retry.backoff", id="unknown-backoff"),
    ],
)
def test_nonsense_policy_values_raise_configuration_error(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(qr.ConfigurationError) as info:
        RetryPolicy(**changes)
    assert info.value.field == field
