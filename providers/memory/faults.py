"""Fault injection for the in-memory provider: make chosen operations fail.

Faults fire *before* the operation changes anything (the call had no effect,
like a request that never reached the service) unless ``after=True``, which
fails the call *after* its effect (like a response lost on the way back —
the case that tests "send succeeded but we do not know it").

Example:
    >>> from queue_runtime.providers.memory import FaultInjector
    >>> faults = FaultInjector()
    >>> faults.fail_next("complete", count=2)
    >>> faults.check("complete", after=False) is not None
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from queue_runtime.errors import ConnectionFailedError, QueueError

__all__ = ["OPERATIONS", "FaultInjector"]

OPERATIONS = frozenset(
    {
        "send",
        "receive",
        "complete",
        "abandon",
        "dead_letter",
        "renew_lock",
        "accept_session",
        "session_receive",
        "renew_session_lock",
        "get_state",
        "set_state",
        "close_session",
        "create_queue",
        "delete_queue",
        "receive_dead_letters",
        "peek_dead_letters",
        "purge_dead_letters",
    }
)

ErrorFactory = Callable[[str], BaseException]


def _default_error(operation: str) -> BaseException:
    return ConnectionFailedError(f"injected fault in {operation}", operation=operation)


@dataclass(slots=True)
class _Rule:
    operation: str
    after: bool
    error: ErrorFactory
    remaining: int | None = None
    rate: float = 1.0


class FaultInjector:
    """Rules that make provider operations raise. ``"*"`` matches every operation."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[_Rule] = []
        self._random = random.Random(seed)
        self.injected = 0
        """How many faults fired so far."""

    def fail_next(
        self,
        operation: str,
        count: int = 1,
        *,
        error: ErrorFactory | type[QueueError] | None = None,
        after: bool = False,
    ) -> None:
        """Make the next ``count`` calls of ``operation`` fail."""
        self._rules.append(_Rule(self._checked(operation), after, self._factory(error), count))

    def fail_randomly(
        self,
        operation: str,
        rate: float,
        *,
        error: ErrorFactory | type[QueueError] | None = None,
        after: bool = False,
    ) -> None:
        """Make a fraction ``rate`` (0-1) of the calls of ``operation`` fail, until cleared."""
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self._rules.append(_Rule(self._checked(operation), after, self._factory(error), None, rate))

    def clear(self) -> None:
        """Remove every rule."""
        self._rules.clear()

    def check(self, operation: str, *, after: bool) -> BaseException | None:
        """The error to raise for this call, if a rule fires (consumes one count)."""
        for rule in self._rules:
            if rule.after != after or rule.operation not in (operation, "*"):
                continue
            if rule.rate < 1 and self._random.random() >= rule.rate:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
            self.injected += 1
            return rule.error(operation)
        return None

    @staticmethod
    def _checked(operation: str) -> str:
        if operation != "*" and operation not in OPERATIONS:
            raise ValueError(
                f"unknown operation {operation!r}; choose from {', '.join(sorted(OPERATIONS))}"
            )
        return operation

    @staticmethod
    def _factory(error: ErrorFactory | type[QueueError] | None) -> ErrorFactory:
        if error is None:
            return _default_error
        if isinstance(error, type):
            cls = error

            def make(operation: str) -> BaseException:
                error: BaseException = cls(f"injected fault in {operation}", operation=operation)
                return error

            return make
        return error
