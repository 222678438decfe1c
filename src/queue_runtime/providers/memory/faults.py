"""Fault injection: make chosen provider operations fail, lose their answer, lose
their lock, or take longer — deterministically, from a seed.

A :class:`FaultInjector` holds the rules; two things apply them:

* the :class:`~queue_runtime.providers.memory.InMemoryProvider` itself, for the
  faults that need no waiting (fail, drop, lose lock);
* a :class:`FaultyProvider`, which wraps a provider like an unreliable network
  connection and applies every kind, including delays, a lock that is really
  gone, and :meth:`FaultyProvider.disconnect` (the process lost the provider for
  good: how the test kit models a crash).

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

import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.errors import (
    ConnectionFailedError,
    InvalidReceiptError,
    QueueError,
    SessionLockLostError,
)
from queue_runtime.health import QueueInfo, SupportsQueueInfo
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import Capabilities, SessionProvider, SessionReceiver, SessionSupport

__all__ = ["LOCK_OPERATIONS", "OPERATIONS", "Fault", "FaultInjector", "FaultyProvider"]

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
T = TypeVar("T")


def _default_error(operation: str) -> BaseException:
    return ConnectionFailedError(f"injected fault in {operation}", operation=operation)


def _lost_answer(operation: str) -> BaseException:
    return ConnectionFailedError(
        f"injected fault: the answer to {operation} was lost", operation=operation
    )


def _lost_lock(operation: str) -> BaseException:
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
        self._add(_Rule("lose_lock", self._lock_operation(operation), False, _lost_lock), count)

    def lose_lock_randomly(self, rate: float, operation: str = "*") -> None:
        """Make a fraction ``rate`` of the calls of ``operation`` find their lock gone."""
        rule = _Rule("lose_lock", self._lock_operation(operation), False, _lost_lock)
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


class FaultyProvider:
    """A provider seen through an unreliable connection: every call goes through the
    rules of ``faults`` (all kinds, delays included), and :meth:`disconnect` cuts the
    connection for good.

    Receipts and sessions are the wrapped provider's own, so several
    ``FaultyProvider`` s (several bot processes) can share one provider. Closing
    this closes the connection, not the provider behind it. Give it its own
    injector, not the wrapped provider's (whose rules the provider applies itself).

    Example:
        >>> import asyncio
        >>> import queue_runtime as qr
        >>> from queue_runtime.providers.memory import InMemoryProvider
        >>> from queue_runtime.providers.memory.faults import FaultyProvider
        >>> async def main() -> int:
        ...     shared = InMemoryProvider(clock=qr.ManualClock())  # retry back-off costs no time
        ...     connection = FaultyProvider(shared)
        ...     connection.faults.drop_next("send")
        ...     client = qr.QueueClient(connection)  # retries the lost answer: sent twice
        ...     await client.send_message("jobs", qr.Message(b"hi"))
        ...     return shared.stats("jobs").active
        >>> asyncio.run(main())
        2
    """

    def __init__(
        self,
        provider: SessionProvider,
        faults: FaultInjector | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if faults is not None and faults is getattr(provider, "faults", None):
            raise ValueError(
                "give FaultyProvider its own FaultInjector: the provider already applies "
                "the rules of its own one, so each would fire twice"
            )
        self.inner = provider
        self.faults = faults if faults is not None else FaultInjector()
        self._clock: Clock = clock or getattr(provider, "clock", None) or SystemClock()
        self._connected = True
        self._sessions: dict[object, _FaultySession] = {}
        """Native session locks (``receipt.native``) -> the session that holds them."""

    @property
    def connected(self) -> bool:
        """False once :meth:`disconnect` (or :meth:`aclose`) was called."""
        return self._connected

    def disconnect(self) -> None:
        """Cut the connection for good: every later call fails with a transient
        ``ConnectionFailedError``, and the answers of calls in progress are lost
        (what they received stays locked until the locks expire)."""
        self._connected = False

    # -- the provider interface, through the faults --------------------------------

    @property
    def provider_id(self) -> str:
        return self.inner.provider_id

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def clock(self) -> Clock:
        return self._clock

    def session_support(self, queue: QueueName) -> SessionSupport:
        return self.inner.session_support(queue)

    def check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None:
        check = getattr(self.inner, "check_messages", None)
        if check is not None:
            check(queue, messages)

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        await self._call("send", lambda: self.inner.send(queue, messages))

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        return await self._call("receive", lambda: self.inner.receive(queue, max_messages, timeout))

    async def complete(self, receipt: ReceiptHandle) -> None:
        await self._call("complete", lambda: self.inner.complete(receipt), receipt)

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None:
        await self._call("abandon", lambda: self.inner.abandon(receipt, delay), receipt)

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        await self._call(
            "dead_letter",
            lambda: self.inner.dead_letter(receipt, reason, description, properties),
            receipt,
        )

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        return await self._call("renew_lock", lambda: self.inner.renew_lock(receipt), receipt)

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> SessionReceiver | None:
        receiver = await self._call(
            "accept_session", lambda: self.inner.accept_session(queue, session_id, timeout)
        )
        return None if receiver is None else _FaultySession(self, receiver)

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        return await self._call(
            "receive_dead_letters",
            lambda: self.inner.receive_dead_letters(queue, max_messages, timeout),
        )

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        return await self._call(
            "peek_dead_letters", lambda: self.inner.peek_dead_letters(queue, max_messages)
        )

    async def purge_dead_letters(self, queue: QueueName) -> int:
        return await self._call("purge_dead_letters", lambda: self.inner.purge_dead_letters(queue))

    async def queue_info(self, queue: QueueName) -> QueueInfo:
        """The health hook, through the same faults (a probe sees an outage too)."""
        inner = self.inner
        if not isinstance(inner, SupportsQueueInfo):
            raise QueueError("the wrapped provider cannot tell", operation="queue_info")
        return await self._call("queue_info", lambda: inner.queue_info(queue))

    async def aclose(self) -> None:
        """Close the connection (the wrapped provider stays open)."""
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"FaultyProvider({self.inner!r}, {state})"

    # -- internals ---------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        receipt: ReceiptHandle | None = None,
        session: _FaultySession | None = None,
    ) -> T:
        self._check_connected(operation)
        delay = self.faults.delay_for(operation)
        if delay > 0:
            await self._clock.sleep(delay)
            self._check_connected(operation)
        fault = self.faults.fault_for(operation, after=False)
        if fault is not None:
            if fault.kind != "lose_lock":
                raise fault.error
            # the lock really goes, as on expiry; then the call finds it gone
            if session is None and receipt is not None:
                session = self._sessions.get(receipt.native)
            if session is not None:
                await session.release()
                raise _lost_lock(operation)
            if receipt is not None:
                await self._release(receipt)
        result = await call()
        self._check_connected(operation)  # a disconnect while waiting loses the answer
        fault = self.faults.fault_for(operation, after=True)
        if fault is not None:
            raise fault.error
        return result

    def _check_connected(self, operation: str) -> None:
        if not self._connected:
            raise ConnectionFailedError("disconnected from the provider", operation=operation)

    async def _release(self, receipt: ReceiptHandle) -> None:
        """Give a message lock back to the provider as its expiry would (quietly: if it
        is gone already, the call that follows says so)."""
        with contextlib.suppress(QueueError):
            await self.inner.abandon(receipt)


class _FaultySession:
    """A session receiver through a :class:`FaultyProvider`."""

    def __init__(self, connection: FaultyProvider, receiver: SessionReceiver) -> None:
        self._connection = connection
        self._receiver = receiver
        self._natives: set[object] = set()

    @property
    def session_id(self) -> SessionId:
        return self._receiver.session_id

    @property
    def locked_until(self) -> datetime:
        return self._receiver.locked_until

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        batch = await self._connection._call(
            "session_receive", lambda: self._receiver.receive(max_messages, timeout), session=self
        )
        for message in batch:
            native = message.receipt.native
            if native is not None:
                self._natives.add(native)
                self._connection._sessions[native] = self
        return batch

    async def renew_lock(self) -> datetime:
        return await self._connection._call(
            "renew_session_lock", self._receiver.renew_lock, session=self
        )

    async def get_state(self) -> bytes | None:
        return await self._connection._call("get_state", self._receiver.get_state, session=self)

    async def set_state(self, state: bytes | None) -> None:
        await self._connection._call(
            "set_state", lambda: self._receiver.set_state(state), session=self
        )

    async def close(self) -> None:
        await self._connection._call("close_session", self.release, session=self)

    async def release(self) -> None:
        """Release the session in the provider (its unsettled messages go back)."""
        for native in self._natives:
            self._connection._sessions.pop(native, None)
        self._natives.clear()
        await self._receiver.close()

    def __repr__(self) -> str:
        return f"_FaultySession(session_id={self.session_id!r})"
