"""Stateful property test of the in-memory provider against an exact model.

The machine drives an :class:`InMemoryProvider` (over a :class:`ManualClock`)
with random sends, receives, settlements, clock moves and session work, and
keeps a model of where every message must be. After every step it checks
that the provider agrees with the model (stats, pending list, DLQ), and on
every hand-out it checks the rules of docs/design.md#delivery-contract directly: per-session
send order, group blocking, delivery counts that only go up, receipts that
stop working once their lock is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from queue_runtime.clock import ManualClock, to_datetime
from queue_runtime.config import InMemoryConfig
from queue_runtime.errors import (
    InvalidReceiptError,
    QueueError,
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
)
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId
from queue_runtime.provider import SessionProvider, SessionReceiver
from queue_runtime.providers.memory import InMemoryProvider, QueueStats

T = TypeVar("T")

QUEUE = QueueName("state-machine")
LOCK = 30.0
SESSION_LOCK = 60.0
MAX_DELIVERIES = 3
SESSIONS: list[str | None] = [None, "a", "b", "c"]

Status = Literal["pending", "in_flight", "completed", "dead"]


@dataclass
class ModelMessage:
    """Where the model says one sent message is."""

    message_id: str
    seq: int
    session: str | None
    status: Status = "pending"
    delivery_count: int = 0
    visible_at: float = 0.0
    locked_until: float = 0.0
    holder: int | None = None
    """Index of the session receiver holding it, ``None`` for a plain receive."""
    receipt: ReceiptHandle | None = None
    """The receipt of the current delivery (the only one that may settle it)."""


@dataclass
class ModelReceiver:
    receiver: SessionReceiver
    session: str
    locked_until: float
    state: Literal["active", "lost", "closed"] = "active"
    closed: bool = False
    """``close()`` was called (possibly after the lock was already lost)."""


@dataclass
class Issued:
    """A receipt handed out at some point, valid or not any more."""

    receipt: ReceiptHandle
    message_id: str
    holder: int | None
    completed_by_it: bool = False


class MemoryProviderMachine(RuleBasedStateMachine):
    session_mode: ClassVar[Literal["emulated", "native"]] = "emulated"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.provider = self.make_provider()
        provider: Any = self.provider
        self.run(provider.create_queue(QUEUE))  # every provider here can create queues
        self.messages: dict[str, ModelMessage] = {}
        self.issued: list[Issued] = []
        self.receivers: list[ModelReceiver] = []
        self.session_state: dict[str, bytes | None] = {}
        self.max_seen_delivery: dict[str, int] = {}
        self.sent = 0

    def teardown(self) -> None:
        try:
            self.run(self.provider.aclose())
        finally:
            self.loop.close()

    # -- the provider under test (other providers' machines override these) -----

    def make_provider(self) -> SessionProvider:
        return InMemoryProvider(
            InMemoryConfig(
                session_mode=self.session_mode,
                lock_duration=LOCK,
                session_lock_duration=SESSION_LOCK,
                max_delivery_count=MAX_DELIVERIES,
            ),
            clock=self.clock,
        )

    def queue_stats(self) -> QueueStats:
        assert isinstance(self.provider, InMemoryProvider)
        return self.provider.stats(QUEUE)

    def pending_ids(self) -> list[str]:
        """The ids of the messages waiting, oldest first."""
        assert isinstance(self.provider, InMemoryProvider)
        return [m.message_id for m in self.provider.pending_messages(QUEUE)]

    def dead_letters(self) -> list[ReceivedMessage]:
        assert isinstance(self.provider, InMemoryProvider)
        return self.provider.dead_letter_messages(QUEUE)

    # -- helpers ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def now(self) -> float:
        return self.clock.now()

    def with_status(self, status: Status) -> list[ModelMessage]:
        return sorted(
            (m for m in self.messages.values() if m.status == status), key=lambda m: m.seq
        )

    def live(self, issued: Issued) -> bool:
        model = self.messages[issued.message_id]
        return model.status == "in_flight" and model.receipt is issued.receipt

    def live_receipts(self) -> list[Issued]:
        return [i for i in self.issued if self.live(i)]

    def dead_receipts(self) -> list[Issued]:
        return [i for i in self.issued if not self.live(i)]

    def group_free(self, session: str) -> bool:
        """No message of ``session`` in flight and no active receiver holds it."""
        if any(m.session == session for m in self.with_status("in_flight")):
            return False
        return not any(r.session == session and r.state == "active" for r in self.receivers)

    def pending_of(self, session: str) -> list[ModelMessage]:
        return [m for m in self.with_status("pending") if m.session == session]

    def release(self, model: ModelMessage, delay: float | None) -> None:
        """The model of abandon / lock expiry / session release."""
        model.holder = None
        model.receipt = None
        if model.delivery_count >= MAX_DELIVERIES:
            model.status = "dead"
            return
        model.status = "pending"
        model.visible_at = self.now + delay if delay else 0.0

    def expire_locks(self) -> None:
        """Apply every lock expiry due at the current clock time."""
        now = self.now
        for model in self.with_status("in_flight"):
            if model.holder is None and model.locked_until <= now:
                self.release(model, None)
        for index, receiver in enumerate(self.receivers):
            if receiver.state == "active" and receiver.locked_until <= now:
                receiver.state = "lost"
                self.release_held_by(index)

    def release_held_by(self, index: int) -> None:
        for model in reversed(self.with_status("in_flight")):
            if model.holder == index:
                self.release(model, None)

    def expected_error(self, issued: Issued) -> type[QueueError]:
        if issued.holder is not None and self.receivers[issued.holder].state == "lost":
            return SessionLockLostError
        return InvalidReceiptError

    def predict_plain_batch(self, limit: int) -> list[str]:
        """Which messages a plain receive must hand out, in order."""
        now = self.now
        taken: list[ModelMessage] = []
        chosen: set[str] = set()
        grouping = self.session_mode == "emulated"

        def free(session: str) -> bool:
            return self.group_free(session) and not any(m.session == session for m in taken)

        while len(taken) < limit:
            candidates: list[tuple[int, ModelMessage]] = []
            for model in self.with_status("pending"):
                if model.message_id in chosen:
                    continue
                if model.session is None:
                    if model.visible_at <= now:
                        candidates.append((model.seq, model))
                elif grouping and free(model.session):
                    head = self.pending_of(model.session)[0]
                    if head is model and model.visible_at <= now:
                        candidates.append((model.seq, model))
            if not candidates:
                break
            _, first = min(candidates, key=lambda c: c[0])
            taken.append(first)
            chosen.add(first.message_id)
            if first.session is not None:
                for follower in self.pending_of(first.session)[1:]:
                    if len(taken) >= limit or follower.visible_at > now:
                        break
                    taken.append(follower)
                    chosen.add(follower.message_id)
        return [m.message_id for m in taken]

    def predict_session_batch(self, session: str, limit: int) -> list[str]:
        batch: list[str] = []
        for model in self.pending_of(session):
            if len(batch) >= limit or model.visible_at > self.now:
                break
            batch.append(model.message_id)
        return batch

    def predict_next_session(self) -> str | None:
        best: tuple[int, str] | None = None
        for session in {m.session for m in self.with_status("pending") if m.session}:
            head = self.pending_of(session)[0]
            visible = self.group_free(session) and head.visible_at <= self.now
            if visible and (best is None or head.seq < best[0]):
                best = (head.seq, session)
        return None if best is None else best[1]

    def check_hand_out(self, batch: list[ReceivedMessage], holder: int | None) -> None:
        """The delivery contract's rules on a batch, independent of the model's prediction."""
        ids = [m.message_id for m in batch]
        for position, received in enumerate(batch):
            model = self.messages[received.message_id]
            session = model.session
            # delivery count: 1 on first delivery, then +1 on each redelivery
            previous = self.max_seen_delivery.get(model.message_id, 0)
            assert received.delivery_count == previous + 1, (model, received)
            assert received.session_id == session
            if session is None:
                continue
            # no earlier message of the session is in flight elsewhere
            for other in self.with_status("in_flight"):
                if other.session == session and other.message_id not in ids:
                    elsewhere = holder is None or other.holder != holder
                    assert not elsewhere, (
                        f"{received.message_id} handed out while {other.message_id} "
                        "of the same session is in flight elsewhere"
                    )
            # first hand-outs follow send order within the session
            if model.delivery_count == 0:
                earlier = [
                    m for m in self.messages.values() if m.session == session and m.seq < model.seq
                ]
                for other in earlier:
                    assert other.delivery_count > 0 or other.message_id in ids[:position], (
                        f"{received.message_id} handed out before earlier {other.message_id}"
                    )
            # within one batch, a session's messages come in send order
            same = [self.messages[i].seq for i in ids if self.messages[i].session == session]
            assert same == sorted(same)

    def record_hand_out(self, batch: list[ReceivedMessage], holder: int | None) -> None:
        for received in batch:
            model = self.messages[received.message_id]
            model.status = "in_flight"
            model.delivery_count += 1
            model.holder = holder
            model.receipt = received.receipt
            if holder is None:
                model.locked_until = self.now + LOCK
            else:
                model.locked_until = self.receivers[holder].locked_until
            assert received.locked_until == to_datetime(model.locked_until)
            self.max_seen_delivery[model.message_id] = model.delivery_count
            self.issued.append(Issued(received.receipt, model.message_id, holder))

    # -- rules: sending and plain receiving -------------------------------------

    @rule(sessions=st.lists(st.sampled_from(SESSIONS), min_size=1, max_size=3))
    def send(self, sessions: list[str | None]) -> None:
        """Send one call's worth of messages, each with a random session id or none."""
        batch = [
            Message(f"m{self.sent + n}".encode(), session_id=session)
            for n, session in enumerate(sessions, start=1)
        ]
        self.run(self.provider.send(QUEUE, batch))
        for message in batch:
            self.sent += 1
            self.messages[message.message_id] = ModelMessage(
                message.message_id, self.sent, message.session_id
            )

    @rule(limit=st.integers(min_value=1, max_value=4))
    def receive(self, limit: int) -> None:
        expected = self.predict_plain_batch(limit)
        batch = self.run(self.provider.receive(QUEUE, limit, timeout=0))
        assert [m.message_id for m in batch] == expected
        self.check_hand_out(batch, None)
        self.record_hand_out(batch, None)

    @rule(limit=st.integers(min_value=1, max_value=4))
    def receive_again(self, limit: int) -> None:
        """Receiving is the heart of the machine: give it twice the weight."""
        self.receive(limit)

    # -- rules: settling with a live receipt -----------------------------------

    @precondition(lambda self: bool(self.live_receipts()))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        issued = data.draw(st.sampled_from(self.live_receipts()))
        self.run(self.provider.complete(issued.receipt))
        model = self.messages[issued.message_id]
        model.status = "completed"
        model.receipt = None
        issued.completed_by_it = True

    @precondition(lambda self: bool(self.live_receipts()))
    @rule(data=st.data(), delay=st.sampled_from([None, 0.0, 10.0]))
    def abandon(self, data: st.DataObject, delay: float | None) -> None:
        issued = data.draw(st.sampled_from(self.live_receipts()))
        self.run(self.provider.abandon(issued.receipt, delay))
        self.release(self.messages[issued.message_id], delay)

    @precondition(lambda self: bool(self.live_receipts()))
    @rule(data=st.data())
    def abandon_at_once(self, data: st.DataObject) -> None:
        """Abandon again (no delay): drives messages to ``max_delivery_count``."""
        self.abandon(data, None)

    @precondition(lambda self: bool(self.live_receipts()))
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        issued = data.draw(st.sampled_from(self.live_receipts()))
        self.run(self.provider.dead_letter(issued.receipt, "Poison", "from the state machine"))
        model = self.messages[issued.message_id]
        model.status = "dead"
        model.receipt = None

    @precondition(lambda self: bool(self.live_receipts()))
    @rule(data=st.data())
    def renew_lock(self, data: st.DataObject) -> None:
        issued = data.draw(st.sampled_from(self.live_receipts()))
        until = self.run(self.provider.renew_lock(issued.receipt))
        if issued.holder is None:
            self.messages[issued.message_id].locked_until = self.now + LOCK
        else:  # renewing a session message renews the whole session
            self.receivers[issued.holder].locked_until = self.now + SESSION_LOCK
            for model in self.with_status("in_flight"):
                if model.holder == issued.holder:
                    model.locked_until = self.now + SESSION_LOCK
        assert until == to_datetime(self.messages[issued.message_id].locked_until)

    # -- rules: settling with a receipt that must not work ---------------------

    def assert_rejected_without_change(self, issued: Issued, operation: str) -> None:
        before = self.queue_stats()
        pending_before = self.pending_ids()
        expected = self.expected_error(issued)
        calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "complete": lambda: self.provider.complete(issued.receipt),
            "abandon": lambda: self.provider.abandon(issued.receipt),
            "dead_letter": lambda: self.provider.dead_letter(issued.receipt, "Stale"),
            "renew_lock": lambda: self.provider.renew_lock(issued.receipt),
        }
        with pytest.raises(expected):
            self.run(calls[operation]())
        assert self.queue_stats() == before
        assert self.pending_ids() == pending_before

    @precondition(lambda self: bool(self.dead_receipts()))
    @rule(
        data=st.data(),
        operation=st.sampled_from(["complete", "abandon", "dead_letter", "renew_lock"]),
    )
    def settle_with_stale_receipt(self, data: st.DataObject, operation: str) -> None:
        issued = data.draw(st.sampled_from(self.dead_receipts()))
        self.assert_rejected_without_change(issued, operation)

    @precondition(lambda self: any(i.completed_by_it for i in self.issued))
    @rule(data=st.data())
    def complete_twice(self, data: st.DataObject) -> None:
        issued = data.draw(st.sampled_from([i for i in self.issued if i.completed_by_it]))
        self.assert_rejected_without_change(issued, "complete")

    # -- rules: time ------------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 10.0, LOCK + 1, SESSION_LOCK + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.expire_locks()

    # -- rules: sessions --------------------------------------------------------

    @rule(session=st.sampled_from(SESSIONS))
    def accept_session(self, session: str | None) -> None:
        wanted = None if session is None else SessionId(session)
        if session is not None and not self.group_free(session):
            with pytest.raises(SessionLockedError):
                self.run(self.provider.accept_session(QUEUE, wanted, 0))
            return
        expected = session if session is not None else self.predict_next_session()
        receiver = self.run(self.provider.accept_session(QUEUE, wanted, 0))
        if expected is None:
            assert receiver is None
            return
        assert receiver is not None
        assert receiver.session_id == expected
        locked_until = self.now + SESSION_LOCK
        assert receiver.locked_until == to_datetime(locked_until)
        self.receivers.append(ModelReceiver(receiver, expected, locked_until))

    def pick_receiver(self, data: st.DataObject) -> int:
        return data.draw(st.integers(min_value=0, max_value=len(self.receivers) - 1))

    def assert_receiver_unusable(
        self, receiver: ModelReceiver, call: Coroutine[Any, Any, Any]
    ) -> None:
        expected = SessionNotFoundError if receiver.closed else SessionLockLostError
        with pytest.raises(expected):
            self.run(call)

    @precondition(lambda self: bool(self.receivers))
    @rule(data=st.data(), limit=st.integers(min_value=1, max_value=3))
    def session_receive(self, data: st.DataObject, limit: int) -> None:
        index = self.pick_receiver(data)
        receiver = self.receivers[index]
        if receiver.state != "active":
            self.assert_receiver_unusable(receiver, receiver.receiver.receive(limit, 0))
            return
        expected = self.predict_session_batch(receiver.session, limit)
        batch = self.run(receiver.receiver.receive(limit, 0))
        assert [m.message_id for m in batch] == expected
        self.check_hand_out(batch, index)
        self.record_hand_out(batch, index)

    @precondition(lambda self: any(r.state == "active" for r in self.receivers))
    @rule(data=st.data(), limit=st.integers(min_value=1, max_value=3))
    def session_receive_active(self, data: st.DataObject, limit: int) -> None:
        """Receive on a receiver that still holds its lock (the common case)."""
        active = [i for i, r in enumerate(self.receivers) if r.state == "active"]
        index = data.draw(st.sampled_from(active))
        receiver = self.receivers[index]
        expected = self.predict_session_batch(receiver.session, limit)
        batch = self.run(receiver.receiver.receive(limit, 0))
        assert [m.message_id for m in batch] == expected
        self.check_hand_out(batch, index)
        self.record_hand_out(batch, index)

    @precondition(lambda self: bool(self.receivers))
    @rule(data=st.data())
    def session_renew(self, data: st.DataObject) -> None:
        index = self.pick_receiver(data)
        receiver = self.receivers[index]
        if receiver.state != "active":
            self.assert_receiver_unusable(receiver, receiver.receiver.renew_lock())
            return
        until = self.run(receiver.receiver.renew_lock())
        receiver.locked_until = self.now + SESSION_LOCK
        assert until == to_datetime(receiver.locked_until)
        for model in self.with_status("in_flight"):
            if model.holder == index:
                model.locked_until = receiver.locked_until

    @precondition(lambda self: bool(self.receivers))
    @rule(data=st.data(), state=st.sampled_from([None, b"", b"s1", b"s2"]))
    def session_state_roundtrip(self, data: st.DataObject, state: bytes | None) -> None:
        index = self.pick_receiver(data)
        receiver = self.receivers[index]
        if receiver.state != "active":
            self.assert_receiver_unusable(receiver, receiver.receiver.get_state())
            return
        got = self.run(receiver.receiver.get_state())
        assert got == self.session_state.get(receiver.session)
        self.run(receiver.receiver.set_state(state))
        self.session_state[receiver.session] = state

    @precondition(lambda self: bool(self.receivers))
    @rule(data=st.data())
    def session_close(self, data: st.DataObject) -> None:
        index = self.pick_receiver(data)
        receiver = self.receivers[index]
        self.run(receiver.receiver.close())  # closing twice, or after loss, is harmless
        receiver.closed = True
        if receiver.state == "active":
            receiver.state = "closed"
            self.release_held_by(index)

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def counts_add_up(self) -> None:
        stats = self.queue_stats()
        pending = self.with_status("pending")
        in_flight = self.with_status("in_flight")
        completed = self.with_status("completed")
        dead = self.with_status("dead")
        assert stats.active == len(pending)
        assert stats.in_flight == len(in_flight)
        assert stats.scheduled == 0
        assert stats.dead_lettered == len(dead)
        assert stats.active + stats.in_flight + stats.dead_lettered + len(completed) == self.sent

    @invariant()
    def pending_messages_match_in_send_order(self) -> None:
        got = self.pending_ids()
        assert got == [m.message_id for m in self.with_status("pending")]

    @invariant()
    def dead_letters_match_with_counts(self) -> None:
        got = {m.message_id: m for m in self.dead_letters()}
        dead = {m.message_id: m for m in self.with_status("dead")}
        assert got.keys() == dead.keys()
        for message_id, received in got.items():
            model = dead[message_id]
            assert received.delivery_count == model.delivery_count
            assert received.session_id == model.session
            assert received.dead_letter_reason in ("Poison", "MaxDeliveryCountExceeded")
            if received.dead_letter_reason == "MaxDeliveryCountExceeded":
                assert model.delivery_count >= MAX_DELIVERIES

    @invariant()
    def delivery_counts_never_decrease(self) -> None:
        for model in self.messages.values():
            assert model.delivery_count == self.max_seen_delivery.get(model.message_id, 0)
            assert model.delivery_count <= MAX_DELIVERIES


class NativeSessionsMachine(MemoryProviderMachine):
    """The same rules with Azure-like sessions: plain receives never see session messages."""

    session_mode = "native"


_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestInMemoryProviderMatchesModelEmulatedSessions = MemoryProviderMachine.TestCase
TestInMemoryProviderMatchesModelEmulatedSessions.settings = _SETTINGS
TestInMemoryProviderMatchesModelNativeSessions = NativeSessionsMachine.TestCase
TestInMemoryProviderMatchesModelNativeSessions.settings = _SETTINGS
