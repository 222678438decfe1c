"""Retry policies: how long to wait before the next attempt, and whether to try at all.

Delay before retry *n* (1-based) for the default exponential back-off is
``min(initial_delay * multiplier ** (n - 1), max_delay)``, then jittered by
±``jitter`` (20 % by default). A ``retry_after`` hint carried by the error
wins over the formula. Only transient errors are retried, and at most
``max_attempts`` attempts are made in total (the first one included).

Example:
    >>> from queue_runtime.retry import RetryPolicy
    >>> policy = RetryPolicy(jitter=0.0)
    >>> [policy.delay(n) for n in (1, 2, 3, 10)]
    [1.0, 2.0, 4.0, 30.0]
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.errors import ConfigurationError, QueueError

__all__ = ["Backoff", "RetryPolicy", "is_transient"]

T = TypeVar("T")


class Backoff(enum.StrEnum):
    """How the delay grows from one retry to the next."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"
    NONE = "none"


def is_transient(error: BaseException) -> bool:
    """True when ``error`` is a :class:`QueueError` marked transient."""
    return isinstance(error, QueueError) and error.transient


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often to retry a failed operation.

    ``Backoff.NONE`` means "never retry", whatever ``max_attempts`` says.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    backoff: Backoff = Backoff.EXPONENTIAL

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            raise ConfigurationError("must be an integer", field="retry.max_attempts")
        if self.max_attempts < 1:
            raise ConfigurationError("must be at least 1", field="retry.max_attempts")
        for name in ("initial_delay", "max_delay", "multiplier", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError("must be a finite number", field=f"retry.{name}")
        if self.initial_delay < 0:
            raise ConfigurationError("must not be negative", field="retry.initial_delay")
        if self.max_delay < self.initial_delay:
            raise ConfigurationError(
                "must be at least retry.initial_delay", field="retry.max_delay"
            )
        if self.multiplier < 1:
            raise ConfigurationError("must be at least 1", field="retry.multiplier")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("must be in [0, 1)", field="retry.jitter")
        try:
            object.__setattr__(self, "backoff", Backoff(self.backoff))
        except ValueError:
            choices = ", ".join(b.value for b in Backoff)
            raise ConfigurationError(
                f"{self.backoff!r} is not one of {choices}", field="retry.backoff"
            ) from None

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1, backoff=Backoff.NONE)

    @property
    def attempts(self) -> int:
        """Total attempts this policy allows (1 for ``Backoff.NONE``)."""
        return 1 if self.backoff is Backoff.NONE else self.max_attempts

    def delay(
        self,
        retry: int,
        error: BaseException | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if isinstance(error, QueueError) and error.retry_after is not None:
            return max(0.0, error.retry_after)
        if self.backoff is Backoff.EXPONENTIAL:
            base = self.initial_delay * self.multiplier ** (retry - 1)
        elif self.backoff is Backoff.LINEAR:
            base = self.initial_delay * retry
        else:
            base = self.initial_delay
        base = min(base, self.max_delay)
        if self.jitter:
            base *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return base

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True if attempt number ``attempt`` (1-based) failed with ``error`` and may be retried."""
        return attempt < self.attempts and is_transient(error)

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        clock: Clock | None = None,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> T:
        """Run ``operation``, retrying transient failures with back-off.

        ``on_retry(attempt, error, delay)`` is called before each wait.
        """
        clock = clock or SystemClock()
        attempt = 1
        while True:
            try:
                return await operation()
            except QueueError as error:
                if not self.should_retry(error, attempt):
                    raise
                wait = self.delay(attempt, error)
                if on_retry is not None:
                    on_retry(attempt, error, wait)
                await clock.sleep(wait)
                attempt += 1
