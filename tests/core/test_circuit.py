"""Circuit breaker state machine, driven by a manual clock.

The numbers: docs/design.md#retry-and-poison-messages.
"""

from __future__ import annotations

import asyncio

import pytest

import queue_runtime as qr
from queue_runtime.bot.circuits import HandlerCircuit
from queue_runtime.circuit import CircuitBreaker, CircuitBreakerConfig, CircuitState


@pytest.fixture
def clock() -> qr.ManualClock:
    return qr.ManualClock(start=5_000.0)


@pytest.fixture
def breaker(clock: qr.ManualClock) -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig(), clock)


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """The state, read through a call so that mypy does not narrow it between reads."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def open_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, 5)
    assert state_of(breaker) is CircuitState.OPEN


def test_default_config_matches_spec() -> None:
    config = CircuitBreakerConfig()
    assert config.enabled is True
    assert config.failure_threshold == 5
    assert config.recovery_timeout == 30.0
    assert config.success_threshold == 3


def test_starts_closed_and_allows_calls(breaker: CircuitBreaker) -> None:
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.admit()


def test_four_consecutive_failures_keep_it_closed(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.admit()


def test_fifth_consecutive_failure_opens_it(breaker: CircuitBreaker) -> None:
    fail(breaker, 5)
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(qr.CircuitOpenError):
        breaker.admit()


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.record_success()
    fail(breaker, 4)
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN


def test_open_check_raises_with_remaining_seconds(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    with pytest.raises(qr.CircuitOpenError) as info:
        breaker.admit(operation="send", queue="orders")
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.operation == "send"
    assert info.value.queue == "orders"
    assert info.value.transient is True

    clock.advance(12.5)
    with pytest.raises(qr.CircuitOpenError) as info:
        breaker.admit()
    assert info.value.retry_after == pytest.approx(17.5)


def test_stays_open_until_recovery_timeout(breaker: CircuitBreaker, clock: qr.ManualClock) -> None:
    open_circuit(breaker)
    clock.advance(29.9)
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(qr.CircuitOpenError) as info:
        breaker.admit()
    assert info.value.retry_after == pytest.approx(0.1)


def test_becomes_half_open_after_thirty_seconds(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    assert state_of(breaker) is CircuitState.HALF_OPEN
    breaker.admit()  # probes are let through


def test_half_open_closes_after_three_successes(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    breaker.record_success()
    breaker.record_success()
    assert state_of(breaker) is CircuitState.HALF_OPEN
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED


def test_closed_after_recovery_needs_five_new_failures(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    for _ in range(3):
        breaker.record_success()
    fail(breaker, 4)
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN


@pytest.mark.parametrize("successes_first", [0, 1, 2])
def test_any_half_open_failure_reopens(
    breaker: CircuitBreaker, clock: qr.ManualClock, successes_first: int
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    for _ in range(successes_first):
        breaker.record_success()
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(qr.CircuitOpenError) as info:
        breaker.admit()
    # a full new recovery period starts at the reopening
    assert info.value.retry_after == pytest.approx(30.0)


def test_reopened_circuit_half_opens_again_after_another_timeout(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    breaker.record_failure()
    clock.advance(29.0)
    assert state_of(breaker) is CircuitState.OPEN
    clock.advance(1.0)
    assert state_of(breaker) is CircuitState.HALF_OPEN


def test_half_open_success_count_starts_fresh_each_time(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()  # reopen with two successes recorded before
    clock.advance(30.0)
    breaker.record_success()
    assert state_of(breaker) is CircuitState.HALF_OPEN


def test_half_open_admits_at_most_success_threshold_trials_at_once(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    trials = [breaker.admit(), breaker.admit(), breaker.admit()]
    assert trials == [True, True, True]
    assert breaker.trials == 3
    with pytest.raises(qr.CircuitOpenError) as info:
        breaker.admit(operation="receive", queue="orders")  # a fourth one fails fast
    assert "half-open" in str(info.value)
    assert (info.value.operation, info.value.queue) == ("receive", "orders")
    assert breaker.try_admit() is None

    breaker.record_success()  # one trial succeeded: its slot is free again
    breaker.release(True)
    assert breaker.admit() is True
    with pytest.raises(qr.CircuitOpenError):
        breaker.admit()


def test_a_trial_ending_without_a_verdict_frees_its_slot(
    breaker: CircuitBreaker, clock: qr.ManualClock
) -> None:
    open_circuit(breaker)
    clock.advance(30.0)
    for _ in range(3):
        breaker.admit()
    for _ in range(3):
        breaker.release(True)  # e.g. cancelled, or a permanent error: neither success nor failure
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert [breaker.admit() for _ in range(3)] == [True, True, True]


def test_closed_and_disabled_breakers_admit_plain_calls_without_limit(
    clock: qr.ManualClock,
) -> None:
    closed = CircuitBreaker(CircuitBreakerConfig(), clock)
    disabled = CircuitBreaker(CircuitBreakerConfig(enabled=False), clock)
    fail(disabled, 50)
    assert [closed.admit() for _ in range(10)] == [False] * 10
    assert [disabled.admit() for _ in range(10)] == [False] * 10
    assert closed.trials == disabled.trials == 0


def test_custom_thresholds(clock: qr.ManualClock) -> None:
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, recovery_timeout=5.0, success_threshold=1),
        clock,
    )
    fail(breaker, 2)
    assert state_of(breaker) is CircuitState.OPEN
    clock.advance(5.0)
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED


def test_disabled_breaker_never_fails_fast(clock: qr.ManualClock) -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(enabled=False), clock)
    fail(breaker, 50)
    breaker.admit()  # no CircuitOpenError


def test_disabled_breaker_never_reports_open(clock: qr.ManualClock) -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(enabled=False), clock)
    fail(breaker, 50)
    assert state_of(breaker) is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"failure_threshold": 0}, "circuit_breaker.failure_threshold"),
        ({"recovery_timeout": -1.0}, "circuit_breaker.recovery_timeout"),
        ({"success_threshold": 0}, "circuit_breaker.success_threshold"),
    ],
)
def test_invalid_config_raises_configuration_error(changes: dict[str, float], field: str) -> None:
    with pytest.raises(qr.ConfigurationError) as info:
        CircuitBreakerConfig(**changes)  # type: ignore[arg-type]
    assert info.value.field == field


def test_repr_shows_state(breaker: CircuitBreaker) -> None:
    assert repr(breaker) == "CircuitBreaker(state=closed)"
    open_circuit(breaker)
    assert repr(breaker) == "CircuitBreaker(state=open)"


async def test_a_half_open_handler_circuit_admits_at_most_success_threshold_probes_at_once() -> (
    None
):
    config = CircuitBreakerConfig(failure_threshold=1, recovery_timeout=0.05, success_threshold=2)
    circuit = HandlerCircuit("Checks", config)
    assert await circuit.admit() is False  # closed: a plain call
    circuit.failed(False, "message-1")  # opens it
    callers = [asyncio.ensure_future(circuit.admit()) for _ in range(6)]
    await asyncio.sleep(0.1)  # past the recovery timeout: half-open

    admitted = [caller.result() for caller in callers if caller.done()]
    assert admitted == [True, True]  # two probes; four callers still wait
    assert circuit.held == 4

    circuit.failed(True, "message-2")  # a probe fails: open again, the waiting stay held
    circuit.released(True)  # the other probe ends without a verdict
    await asyncio.sleep(0)
    assert sum(caller.done() for caller in callers) == 2
    assert state_of(circuit.breaker) is CircuitState.OPEN

    await asyncio.sleep(0.1)  # half-open again: two more probes, then success closes it
    probes = [caller for caller in callers if caller.done()]
    assert len(probes) == 4
    assert all(caller.result() is True for caller in probes)
    circuit.succeeded(True)
    circuit.succeeded(True)
    await asyncio.sleep(0)
    assert state_of(circuit.breaker) is CircuitState.CLOSED
    rest = [caller for caller in callers if caller not in probes]
    assert [await caller for caller in rest] == [False, False]  # plain calls once closed
