"""Circuit breaker: stop calling a dependency that keeps failing.

Closed → (``failure_threshold`` consecutive failures) → open → (after
``recovery_timeout``) → half-open → (``success_threshold`` successes) → closed.
Any failure while half-open opens the circuit again. While open, calls fail
fast with :class:`~queue_runtime.errors.CircuitOpenError` carrying
``retry_after`` (seconds until the next probe is allowed). While half-open, at
most ``success_threshold`` trial calls run at once; a call beyond them fails
fast too (``retry_after`` unset: a slot frees when a trial ends), so a
recovering dependency is probed, not flooded.

A caller asks :meth:`CircuitBreaker.admit` before each call and hands what
it returned to :meth:`CircuitBreaker.release` when the call is over, whatever
its outcome.

Only failures that say something about the dependency's health count:
transient errors. A permanent error (bad input, missing queue) is the
caller's problem and leaves the breaker alone.

Example:
    >>> from queue_runtime.circuit import CircuitBreaker, CircuitBreakerConfig
    >>> from queue_runtime.clock import ManualClock
    >>> clock = ManualClock()
    >>> breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2), clock)
    >>> breaker.record_failure(), breaker.record_failure()  # the second one opens it
    (False, True)
    >>> breaker.state
    <CircuitState.OPEN: 'open'>
    >>> clock.advance(30.0)
    >>> [breaker.admit(), breaker.admit(), breaker.admit()]  # half-open: 3 trials at once
    [True, True, True]
    >>> breaker.try_admit() is None  # a fourth must wait (admit() raises CircuitOpenError)
    True
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.errors import CircuitOpenError, ConfigurationError

__all__ = ["CircuitBreaker", "CircuitBreakerConfig", "CircuitState"]


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """Thresholds of a circuit breaker (spec defaults: 5 failures, 30 s, 3 successes)."""

    enabled: bool = True
    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 3

    def __post_init__(self) -> None:
        if not math.isfinite(self.recovery_timeout):
            raise ConfigurationError(
                "must be a finite number", field="circuit_breaker.recovery_timeout"
            )
        if self.failure_threshold < 1:
            raise ConfigurationError(
                "must be at least 1", field="circuit_breaker.failure_threshold"
            )
        if self.recovery_timeout < 0:
            raise ConfigurationError(
                "must not be negative", field="circuit_breaker.recovery_timeout"
            )
        if self.success_threshold < 1:
            raise ConfigurationError(
                "must be at least 1", field="circuit_breaker.success_threshold"
            )


class CircuitBreaker:
    """The state machine. Single event loop, no awaits inside: safe under concurrency."""

    def __init__(
        self, config: CircuitBreakerConfig | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config or CircuitBreakerConfig()
        self._clock = clock or SystemClock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._trials = 0
        """Half-open trial calls admitted and not yet released."""

    @property
    def state(self) -> CircuitState:
        """Current state; an open circuit whose timeout passed reads as half-open."""
        if (
            self._state is CircuitState.OPEN
            and self._clock.now() - self._opened_at >= self.config.recovery_timeout
        ):
            self._state = CircuitState.HALF_OPEN
            self._successes = 0
        return self._state

    def open_for(self) -> float:
        """Seconds until an open circuit turns half-open; 0 when it is not open."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.config.recovery_timeout - (self._clock.now() - self._opened_at))

    def try_admit(self) -> bool | None:
        """Admit one call if the state allows it now: False for a plain call (closed),
        True for a half-open trial, None when it must not be made (open, or half-open
        with ``success_threshold`` trials in flight). Pass a bool to :meth:`release`."""
        if not self.config.enabled:
            return False
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and self._trials < self.config.success_threshold:
            self._trials += 1
            return True
        return None

    def admit(self, *, operation: str | None = None, queue: str | None = None) -> bool:
        """:meth:`try_admit`, raising :class:`CircuitOpenError` for a call that must not
        be made; True if the call is a half-open trial."""
        admitted = self.try_admit()
        if admitted is not None:
            return admitted
        if self.state is CircuitState.HALF_OPEN:
            raise CircuitOpenError(
                f"circuit breaker is half-open and its {self.config.success_threshold} "
                "trial calls are in flight",
                operation=operation,
                queue=queue,
            )
        raise CircuitOpenError(
            "circuit breaker is open after repeated failures",
            operation=operation,
            queue=queue,
            retry_after=self.open_for(),
        )

    def release(self, trial: bool) -> None:
        """A call :meth:`admit` let through is over (after its outcome was recorded)."""
        if trial:
            self._trials -= 1

    @property
    def trials(self) -> int:
        """Half-open trial calls in flight now."""
        return self._trials

    def record_success(self) -> bool:
        """Count a success; True if it closed the circuit (the last half-open probe)."""
        if not self.config.enabled:
            return False
        state = self.state
        if state is CircuitState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._state = CircuitState.CLOSED
                self._failures = 0
                return True
        else:
            self._failures = 0
        return False

    def record_failure(self) -> bool:
        """Count a failure; True if it opened the circuit (or opened it again)."""
        if not self.config.enabled:
            return False
        state = self.state
        if state is CircuitState.HALF_OPEN or (
            state is CircuitState.CLOSED and self._failures + 1 >= self.config.failure_threshold
        ):
            self._open()
            return True
        if state is CircuitState.CLOSED:
            self._failures += 1
        return False

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock.now()
        self._failures = 0
        self._successes = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value})"
