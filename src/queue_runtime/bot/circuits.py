"""Per-handler circuit breakers: when a handler's downstream is down, wait instead of failing.

Each handler class has a :class:`HandlerCircuit` (with the thresholds of
docs/design.md#retry-and-poison-messages by default: open after 5 consecutive failures,
half-open after 30 s, closed after 3 successes). Every exception a handler raises counts
as a failure, except permanent ones (they are about the message, not the dependency) and
repeated failures of one message: "consecutive failures" means failures of that many
*different* messages with no success in between, so that one
poison message retrying cannot open the circuit on its own.

While a handler's circuit is open:

* session actors whose next message needs that handler **hold** it — its
  lock (and session lock) kept alive by the lock renewer — instead of
  failing, abandoning or dead-lettering it, so no delivery count is burned;
* the receiver stops pulling new messages;
* after ``recovery_timeout`` the circuit is half-open and admits at most
  ``success_threshold`` probe calls at a time; enough successes close it and
  every held message proceeds, a failure opens it again. The receiver pulls
  again while it is half-open, so that a probe has a message to try even when
  none was held (native sessions give theirs back while the circuit is open);
  what it pulls waits at admission with its lock kept alive;
* a call admitted while the circuit was closed is checked again as it starts
  on the handler's worker: if the circuit opened in between, it is not made
  and the message is held like the others.

A failure is charged to the message (counted against its in-place retries,
and so eventually its delivery) when it happened while the circuit was
closed and left it closed, or when it was a half-open probe. Charging probes
keeps a message that fails on its own (poison messages that tripped the
breaker together) moving towards the dead-letter queue — one attempt per
recovery timeout — instead of holding the bot forever.

Example:
    >>> import asyncio
    >>> from queue_runtime.circuit import CircuitBreakerConfig
    >>> async def main() -> str:
    ...     circuit = HandlerCircuit("Checks", CircuitBreakerConfig(failure_threshold=1))
    ...     probe = await circuit.admit()
    ...     charged = circuit.failed(probe, "message-1")
    ...     return f"{circuit.state.value}, charged={charged}"
    >>> asyncio.run(main())
    'open, charged=False'
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from queue_runtime.circuit import CircuitBreaker, CircuitBreakerConfig, CircuitState
from queue_runtime.clock import LoopClock, wait_for_event

__all__ = ["HandlerCircuit", "HandlerCircuits"]

RECHECK = 1.0
"""A waiting caller looks again at least this often (a probe may have been cancelled)."""


class HandlerCircuit:
    """The breaker of one handler class, with admission for the callers that wait on it."""

    def __init__(self, name: str, config: CircuitBreakerConfig) -> None:
        self.name = name
        self.breaker = CircuitBreaker(config, LoopClock())
        self._failing: set[str] = set()
        """Messages that failed since the last success (each counts once)."""
        self._changed = asyncio.Event()
        self.held = 0
        """Callers waiting for the circuit right now."""

    @property
    def state(self) -> CircuitState:
        return self.breaker.state

    def admits_now(self) -> bool:
        """True when a call may be made at once, not as a probe (the usual case: closed)."""
        return not self.breaker.config.enabled or self.breaker.state is CircuitState.CLOSED

    async def admit(self, give_up: Callable[[], bool] = lambda: False) -> bool | None:
        """Wait until a call may be made: True if the call is a half-open probe, False
        if the circuit is closed, None if ``give_up()`` turned true while waiting
        (the bot is stopping; see :meth:`HandlerCircuits.wake`)."""
        breaker = self.breaker
        if not breaker.config.enabled:
            return False
        self.held += 1
        try:
            while True:
                if give_up():
                    return None
                admitted = breaker.try_admit()  # half-open: at most success_threshold probes
                if admitted is not None:
                    return admitted
                if breaker.state is CircuitState.HALF_OPEN:
                    wait = RECHECK
                else:
                    wait = min(RECHECK, max(breaker.open_for(), 0.001))
                self._changed.clear()
                await wait_for_event(self._changed, wait)
        finally:
            self.held -= 1

    def succeeded(self, probe: bool) -> None:
        """Record a successful call (``probe`` as returned by :meth:`admit`)."""
        if not (probe or self._failing) and self.breaker.state is CircuitState.CLOSED:
            return  # closed and nothing failed since the last success: nothing to record
        self.breaker.release(probe)
        self._failing.clear()
        self.breaker.record_success()
        self._changed.set()

    def failed(self, probe: bool, message_id: str) -> bool:
        """Record a failed call for ``message_id``; True if it is charged to the message."""
        breaker = self.breaker
        if probe:
            breaker.release(probe)
            breaker.record_failure()  # a failed probe opens the circuit again
            self._changed.set()
            return True
        if message_id not in self._failing:  # the same message again says nothing new
            self._failing.add(message_id)
            breaker.record_failure()
            if breaker.state is not CircuitState.CLOSED:
                self._failing.clear()
                self._changed.set()
                return False
        return breaker.state is CircuitState.CLOSED

    def wake(self) -> None:
        """Make every waiting caller look again now."""
        self._changed.set()

    def released(self, probe: bool) -> None:
        """A probe ended without a verdict (cancelled, handler died): free its slot."""
        if probe:
            self.breaker.release(probe)
            self._changed.set()


class HandlerCircuits:
    """The circuits of one bot's handlers, by handler class name.

    Example:
        >>> circuits = HandlerCircuits(["Issues", "Checks"], CircuitBreakerConfig())
        >>> circuits.states()
        {'Issues': 'closed', 'Checks': 'closed'}
        >>> circuits.any_open()
        False
    """

    def __init__(self, names: Iterable[str], config: CircuitBreakerConfig) -> None:
        self._circuits = {name: HandlerCircuit(name, config) for name in names}

    def __getitem__(self, name: str) -> HandlerCircuit:
        return self._circuits[name]

    def wake(self) -> None:
        """Make every caller waiting on a circuit look again (the bot is stopping)."""
        for circuit in self._circuits.values():
            circuit.wake()

    def held(self) -> int:
        """Callers waiting for a circuit right now."""
        return sum(circuit.held for circuit in self._circuits.values())

    def states(self) -> dict[str, str]:
        """Handler name -> ``"closed"`` / ``"open"`` / ``"half_open"``."""
        return {name: circuit.state.value for name, circuit in self._circuits.items()}

    def any_open(self) -> bool:
        """True while some handler's circuit is open (the receiver does not pull then)."""
        return any(c.state is CircuitState.OPEN for c in self._circuits.values())
