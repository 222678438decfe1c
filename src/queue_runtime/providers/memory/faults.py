"""Fault injection: make chosen provider operations fail, lose their answer, lose
their lock, or take longer — deterministically, from a seed.

A :class:`FaultInjector` holds the rules; two things apply them:

* the :class:`~queue_runtime.providers.memory.InMemoryProvider` itself, for the
  faults that need no waiting (fail, drop, lose lock);
* a :class:`~queue_runtime.testing.FaultyProvider`, which wraps a provider like
  an unreliable network connection and applies every kind, including delays, a
  lock that is really gone, and ``disconnect()`` (the process lost the provider
  for good: how the test kit models a crash).

What each kind of fault means, exactly:

* **fail** (``fail_next``, ``fail_randomly``): the call raises *before* it has
  any effect, as if the request never reached the service. The default error is
  a transient :class:`~queue_runtime.errors.ConnectionFailedError`, so the client
  retries it. With ``after=True`` it raises *after* the effect instead.
* **drop** (``drop_next``, ``drop_randomly``): the call takes effect and its
  answer is lost — the caller gets a transient ``ConnectionFailedError``. A
  dropped ``send`` stored the message (a retry sends it twice); a dropped
  ``receive`` locked messages nobody will see (they come back when their locks
  expire, with ``delivery_count + 1``); a dropped ``complete`` removed the
  message although the caller thinks it failed. Nothing is ever lost by a drop:
  a "send that reports success but stores nothing" is not a fault a reliable
  queue service has, so it is not offered.
* **lose lock** (``lose_lock_next``, ``lose_lock_randomly``): for ``complete``,
  ``abandon``, ``dead_letter``, ``renew_lock`` and ``renew_session_lock``. The
  call finds the lock gone and raises
  :class:`~queue_runtime.errors.InvalidReceiptError` (``SessionLockLostError``
  for a session). Through a ``FaultyProvider`` the lock is really released
  first, as if it had expired: the message is visible again at once (or
  dead-lettered as ``MaxDeliveryCountExceeded`` if that was its last allowed
  delivery), and a native session is released with all its messages. On a bare
  provider only the error is raised; the message then comes back when its lock
  expires.
* **delay** (``delay_next``, ``delay_randomly``): the call takes ``seconds``
  longer, waited on the provider's clock before the call is made (virtual time
  under the test kit). Only a ``FaultyProvider`` can make a call wait.

Random rules draw from one ``random.Random(seed)``, in call order, so a run
with the same seed and the same calls injects the same faults.

Example:
    >>> from queue_runtime.providers.memory import FaultInjector
    >>> faults = FaultInjector(seed=1)
    >>> faults.fail_next("complete", count=2)
    >>> faults.delay_next("receive", 5.0)
    >>> faults.check("complete", after=False) is not None
    True
    >>> faults.delay_for("receive"), faults.delay_for("receive")
    (5.0, 0.0)
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from queue_runtime.errors import (
    ConnectionFailedError,
    InvalidReceiptError,
    QueueError,
    SessionLockLostError,
)

__all__ = ["LOCK_OPERATIONS", "OPERATIONS", "Fault", "FaultInjector", "lost_lock_error"]

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
        "queue_info",
    }
)

LOCK_OPERATIONS = frozenset(
    {"complete", "abandon", "dead_letter", "renew_lock", "renew_session_lock"}
)
"""The operations that hold a lock, and so can find it lost."""

ErrorFactory = Callable[[str], BaseException]


def _default_error(operation: str) -> BaseException:
    return ConnectionFailedError(f"injected fault in {operation}", operation=operation)


def _lost_answer(operation: str) -> BaseException:
    return ConnectionFailedError(
        f"injected fault: the answer to {operation} was lost", operation=operation
    )


def lost_lock_error(operation: str) -> BaseException:
    if operation == "renew_session_lock":
        return SessionLockLostError(
            "injected fault: the session lock was lost", operation=operation
        )
    return InvalidReceiptError("injected fault: the lock was lost", operation=operation)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault that fired: its kind and the error the call raises."""

    kind: Literal["fail", "lose_lock"]
    error: BaseException


@dataclass(slots=True)
class _Rule:
    kind: Literal["fail", "lose_lock", "delay"]
    operation: str
    after: bool
    error: ErrorFactory
    remaining: int | None = None
    rate: float = 1.0
    seconds: tuple[float, float] = (0.0, 0.0)


class FaultInjector:
    """Rules that make provider operations misbehave. ``"*"`` matches every operation
    (for lose-lock rules: every operation that holds a lock)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[_Rule] = []
        self._random = random.Random(seed)
        self.injected = 0
        """How many faults fired so far (delays included)."""

    # -- fail -------------------------------------------------------------------

    def fail_next(
        self,
        operation: str,
        count: int = 1,
        *,
        error: ErrorFactory | type[QueueError] | None = None,
        after: bool = False,
    ) -> None:
        """Make the next ``count`` calls of ``operation`` fail."""
        self._add(_Rule("fail", self._checked(operation), after, self._factory(error)), count)

    def fail_randomly(
        self,
        operation: str,
        rate: float,
        *,
        error: ErrorFactory | type[QueueError] | None = None,
        after: bool = False,
    ) -> None:
        """Make a fraction ``rate`` (0-1) of the calls of ``operation`` fail, until cleared."""
        rule = _Rule("fail", self._checked(operation), after, self._factory(error))
        self._add(rule, None, rate)

    # -- drop (the effect happens, the answer is lost) ----------------------------

    def drop_next(self, operation: str, count: int = 1) -> None:
        """Let the next ``count`` calls of ``operation`` take effect, then lose their answer."""
        self._add(_Rule("fail", self._checked(operation), True, _lost_answer), count)

    def drop_randomly(self, operation: str, rate: float) -> None:
        """Lose the answer of a fraction ``rate`` of the calls of ``operation``, until cleared."""
        self._add(_Rule("fail", self._checked(operation), True, _lost_answer), None, rate)

    # -- lose lock ------------------------------------------------------------------

    def lose_lock_next(self, operation: str = "*", count: int = 1) -> None:
        """Make the next ``count`` calls of ``operation`` (one of :data:`LOCK_OPERATIONS`,
        or ``"*"`` for any of them) find their lock gone."""
        self._add(
            _Rule("lose_lock", self._lock_operation(operation), False, lost_lock_error), count
        )

    def lose_lock_randomly(self, rate: float, operation: str = "*") -> None:
        """Make a fraction ``rate`` of the calls of ``operation`` find their lock gone."""
        rule = _Rule("lose_lock", self._lock_operation(operation), False, lost_lock_error)
        self._add(rule, None, rate)

    # -- delay ------------------------------------------------------------------------

    def delay_next(self, operation: str, seconds: float, count: int = 1) -> None:
        """Make the next ``count`` calls of ``operation`` take ``seconds`` longer."""
        self._add(self._delay_rule(operation, seconds, seconds), count)

    def delay_randomly(
        self, operation: str, rate: float, seconds: float, *, max_seconds: float | None = None
    ) -> None:
        """Make a fraction ``rate`` of the calls of ``operation`` take longer: ``seconds``,
        or a seeded random time between ``seconds`` and ``max_seconds``."""
        self._add(self._delay_rule(operation, seconds, max_seconds), None, rate)

    # -- applying the rules ----------------------------------------------------------

    def clear(self) -> None:
        """Remove every rule."""
        self._rules.clear()

    def check(self, operation: str, *, after: bool) -> BaseException | None:
        """The error to raise for this call, if a fail or lose-lock rule fires
        (consumes one count). Delay rules are not looked at: see :meth:`delay_for`."""
        fault = self.fault_for(operation, after=after)
        return None if fault is None else fault.error

    def fault_for(self, operation: str, *, after: bool) -> Fault | None:
        """Like :meth:`check`, saying also which kind of rule fired."""
        for rule in self._rules:
            if rule.kind == "delay" or rule.after != after or not self._matches(rule, operation):
                continue
            if self._fires(rule):
                return Fault(rule.kind, rule.error(operation))
        return None

    def delay_for(self, operation: str) -> float:
        """Seconds this call of ``operation`` should take longer (0.0 if no rule fires)."""
        for rule in self._rules:
            if rule.kind == "delay" and self._matches(rule, operation) and self._fires(rule):
                low, high = rule.seconds
                return low if low == high else self._random.uniform(low, high)
        return 0.0

    # -- internals ---------------------------------------------------------------------

    def _add(self, rule: _Rule, count: int | None, rate: float = 1.0) -> None:
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if count is not None and count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        rule.remaining = count
        rule.rate = rate
        self._rules.append(rule)

    @staticmethod
    def _matches(rule: _Rule, operation: str) -> bool:
        if rule.operation == operation:
            return True
        return rule.operation == "*" and (rule.kind != "lose_lock" or operation in LOCK_OPERATIONS)

    def _fires(self, rule: _Rule) -> bool:
        if rule.rate < 1 and self._random.random() >= rule.rate:
            return False
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules.remove(rule)
        self.injected += 1
        return True

    def _delay_rule(self, operation: str, seconds: float, max_seconds: float | None) -> _Rule:
        high = seconds if max_seconds is None else max_seconds
        if not 0 <= seconds <= high < float("inf"):
            raise ValueError(
                f"need 0 <= seconds <= max_seconds < inf, got {seconds!r} and {max_seconds!r}"
            )
        rule = _Rule("delay", self._checked(operation), False, _default_error)
        rule.seconds = (float(seconds), float(high))
        return rule

    @staticmethod
    def _checked(operation: str) -> str:
        if operation != "*" and operation not in OPERATIONS:
            raise ValueError(
                f"unknown operation {operation!r}; choose from {', '.join(sorted(OPERATIONS))}"
            )
        return operation

    @staticmethod
    def _lock_operation(operation: str) -> str:
        if operation != "*" and operation not in LOCK_OPERATIONS:
            raise ValueError(
                f"operation {operation!r} holds no lock; choose from "
                f"{', '.join(sorted(LOCK_OPERATIONS))} or '*'"
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


def __getattr__(name: str) -> object:
    """``FaultyProvider`` moved to :mod:`queue_runtime.testing.faults`; forward for one release."""
    if name == "FaultyProvider":
        warnings.warn(
            f"{__name__}.FaultyProvider moved to queue_runtime.testing.FaultyProvider; "
            "the old name goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        from queue_runtime.testing.faults import FaultyProvider

        return FaultyProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
