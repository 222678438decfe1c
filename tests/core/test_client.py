"""QueueClient over the in-memory provider: retries, circuit, batching, validation, lifecycle."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence

import pytest

import queue_runtime as qr
from queue_runtime.circuit import CircuitState
from queue_runtime.providers.memory import FaultInjector, InMemoryProvider

START = 10_000.0
QUEUE = "orders"


class SendSpy:
    """Wraps a provider's ``send`` and records every batch it is given."""

    def __init__(self, provider: InMemoryProvider) -> None:
        self._inner = provider.send
        self.batches: list[list[qr.Message]] = []

    async def __call__(self, queue: qr.QueueName, messages: Sequence[qr.Message]) -> None:
        self.batches.append(list(messages))
        await self._inner(queue, messages)


class ReceiveSpy:
    """Wraps a provider's ``receive`` and records the requested batch sizes."""

    def __init__(self, provider: InMemoryProvider) -> None:
        self._inner = provider.receive
        self.requested: list[int] = []

    async def __call__(
        self, queue: qr.QueueName, max_messages: int, wait: float
    ) -> list[qr.ReceivedMessage]:
        self.requested.append(max_messages)
        return await self._inner(queue, max_messages, wait)


@pytest.fixture
def clock() -> qr.ManualClock:
    return qr.ManualClock(start=START)


@pytest.fixture
def provider(clock: qr.ManualClock) -> InMemoryProvider:
    return InMemoryProvider(qr.InMemoryConfig(), clock=clock, faults=FaultInjector(seed=7))


@pytest.fixture
async def client(
    provider: InMemoryProvider, clock: qr.ManualClock
) -> AsyncIterator[qr.QueueClient]:
    queue_client = qr.QueueClient(provider, qr.QueueConfig(), clock=clock)
    yield queue_client
    await queue_client.aclose()


@pytest.fixture
def send_spy(provider: InMemoryProvider, monkeypatch: pytest.MonkeyPatch) -> SendSpy:
    spy = SendSpy(provider)
    monkeypatch.setattr(provider, "send", spy)
    return spy


@pytest.fixture
def receive_spy(provider: InMemoryProvider, monkeypatch: pytest.MonkeyPatch) -> ReceiveSpy:
    spy = ReceiveSpy(provider)
    monkeypatch.setattr(provider, "receive", spy)
    return spy


def state_of(client: qr.QueueClient) -> CircuitState:
    """The circuit state, read through a call so that mypy does not narrow it."""
    return client.circuit.state


def pending_ids(provider: InMemoryProvider, queue: str = QUEUE) -> list[str]:
    return [message.message_id for message in provider.pending_messages(queue)]


def numbered(count: int, body_size: int = 8) -> list[qr.Message]:
    return [
        qr.Message(f"{n:0{body_size}d}".encode(), message_id=qr.MessageId(f"m-{n:04d}"))
        for n in range(count)
    ]


# -- retries --------------------------------------------------------------------


async def test_transient_send_faults_are_retried_and_message_arrives_once(
    client: qr.QueueClient, provider: InMemoryProvider, clock: qr.ManualClock, send_spy: SendSpy
) -> None:
    provider.faults.fail_next("send", count=2)
    message = qr.Message(b"payload")

    message_id = await client.send_message(QUEUE, message)

    assert message_id == message.message_id
    assert provider.faults.injected == 2
    assert len(send_spy.batches) == 3
    assert pending_ids(provider) == [message.message_id]
    # waited before retry 1 (1 s) and retry 2 (2 s), each jittered by at most 20 %
    waited = clock.now() - START
    assert 0.8 + 1.6 <= waited <= 1.2 + 2.4


async def test_transient_receive_fault_is_retried(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await client.send_message(QUEUE, qr.Message(b"x"))
    provider.faults.fail_next("receive")

    received = await client.receive_message(QUEUE, timeout=0)

    assert received is not None
    assert received.body == b"x"
    assert received.delivery_count == 1
    assert provider.faults.injected == 1


async def test_retry_waits_for_the_providers_retry_after_hint(
    client: qr.QueueClient, provider: InMemoryProvider, clock: qr.ManualClock
) -> None:
    provider.faults.fail_next(
        "send", error=lambda op: qr.ThrottledError("busy", operation=op, retry_after=4.0)
    )
    await client.send_message(QUEUE, qr.Message(b"x"))
    assert clock.now() == START + 4.0
    assert len(pending_ids(provider)) == 1


async def test_lost_send_response_is_resent_with_the_same_message_id(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    # the first send took effect but its answer was lost: at-least-once means a duplicate
    provider.faults.fail_next("send", after=True)
    message = qr.Message(b"x")
    await client.send_message(QUEUE, message)
    assert pending_ids(provider) == [message.message_id, message.message_id]


async def test_permanent_fault_is_not_retried(
    client: qr.QueueClient, provider: InMemoryProvider, clock: qr.ManualClock, send_spy: SendSpy
) -> None:
    provider.faults.fail_next("send", count=5, error=qr.AuthorizationError)

    with pytest.raises(qr.AuthorizationError) as info:
        await client.send_message(QUEUE, qr.Message(b"x"))

    assert provider.faults.injected == 1
    assert len(send_spy.batches) == 1
    assert pending_ids(provider) == []
    assert clock.now() == START
    assert info.value.operation == "send"
    assert info.value.queue == QUEUE


@pytest.mark.parametrize("operation", ["complete", "abandon", "dead_letter"])
async def test_a_settle_whose_answer_was_lost_is_done_when_retried(
    client: qr.QueueClient, provider: InMemoryProvider, operation: str
) -> None:
    # the first attempt takes effect and its answer is lost; the retry finds the
    # receipt settled, and the provider proves it was by this very operation
    await client.send_message(QUEUE, qr.Message(b"x"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    provider.faults.drop_next(operation)

    async def settle() -> None:
        if operation == "complete":
            await client.complete_message(received.receipt)
        elif operation == "abandon":
            await client.abandon_message(received.receipt)
        else:
            await client.dead_letter_message(received.receipt, "Poison")

    await settle()  # no InvalidReceiptError

    assert provider.faults.injected == 1
    stats = provider.stats(QUEUE)
    assert (stats.active, stats.in_flight, stats.dead_lettered) == (
        int(operation == "abandon"),
        0,
        int(operation == "dead_letter"),
    )
    with pytest.raises(qr.InvalidReceiptError) as refused:  # the caller's own second try
        await settle()
    assert refused.value.settled == operation


async def test_a_batch_complete_whose_answer_was_lost_is_done_when_retried(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await client.send_messages(QUEUE, [qr.Message(b"1"), qr.Message(b"2")])
    batch = await client.receive_messages(QUEUE, 10, timeout=0)
    provider.faults.drop_next("complete")  # the first receipt's entry: done, answer lost

    assert await client.complete_messages([m.receipt for m in batch]) == [None, None]
    assert provider.stats(QUEUE).in_flight == 0


async def test_an_abandon_is_not_taken_for_a_complete(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await client.send_message(QUEUE, qr.Message(b"x"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    await client.abandon_message(received.receipt)
    provider.faults.fail_next("complete")  # a transient failure, then the retry

    with pytest.raises(qr.InvalidReceiptError) as refused:
        await client.complete_message(received.receipt)
    assert refused.value.settled == "abandon"


async def test_retries_exhausted_reraise_the_last_error(
    client: qr.QueueClient, provider: InMemoryProvider, send_spy: SendSpy
) -> None:
    made: list[qr.QueueError] = []

    def numbered_fault(operation: str) -> qr.QueueError:
        error = qr.ConnectionFailedError(f"fault {len(made) + 1}", operation=operation)
        made.append(error)
        return error

    provider.faults.fail_next("send", count=3, error=numbered_fault)

    with pytest.raises(qr.ConnectionFailedError) as info:
        await client.send_message(QUEUE, qr.Message(b"x"))

    assert len(made) == 3
    assert info.value is made[-1]
    assert info.value.message == "fault 3"
    assert info.value.queue == QUEUE
    assert len(send_spy.batches) == 3
    assert pending_ids(provider) == []
    # the rule is used up: the next send goes through
    await client.send_message(QUEUE, qr.Message(b"y"))
    assert len(pending_ids(provider)) == 1


# -- circuit breaker ------------------------------------------------------------


async def test_circuit_opens_after_repeated_transient_failures_and_fails_fast(
    provider: InMemoryProvider, clock: qr.ManualClock, send_spy: SendSpy
) -> None:
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()), clock=clock)
    provider.faults.fail_randomly("send", 1.0)

    for _ in range(5):
        with pytest.raises(qr.ConnectionFailedError):
            await client.send_message(QUEUE, qr.Message(b"x"))
    assert client.circuit.state is CircuitState.OPEN
    assert len(send_spy.batches) == 5

    with pytest.raises(qr.CircuitOpenError) as info:
        await client.send_message(QUEUE, qr.Message(b"x"))
    assert len(send_spy.batches) == 5  # the provider was not called
    assert provider.faults.injected == 5
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.operation == "send"
    assert info.value.queue == QUEUE

    # after the recovery timeout, probes go through and successes close it again
    provider.faults.clear()
    clock.advance(30.0)
    for _ in range(3):
        await client.send_message(QUEUE, qr.Message(b"probe"))
    assert state_of(client) is CircuitState.CLOSED
    assert len(pending_ids(provider)) == 3


async def test_open_circuit_also_blocks_other_operations(
    provider: InMemoryProvider, clock: qr.ManualClock, receive_spy: ReceiveSpy
) -> None:
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()), clock=clock)
    provider.faults.fail_randomly("send", 1.0)
    for _ in range(5):
        with pytest.raises(qr.ConnectionFailedError):
            await client.send_message(QUEUE, qr.Message(b"x"))

    with pytest.raises(qr.CircuitOpenError):
        await client.receive_messages(QUEUE, timeout=0)
    assert receive_spy.requested == []


async def test_a_half_open_circuit_lets_only_success_threshold_calls_try_at_once(
    provider: InMemoryProvider, clock: qr.ManualClock, receive_spy: ReceiveSpy
) -> None:
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()), clock=clock)
    for _ in range(5):
        client.circuit.record_failure()
    clock.advance(30.0)  # half-open: three trials allowed

    # six receives at once on an empty queue: each trial waits out its 0.2 s
    results = await asyncio.gather(
        *(client.receive_messages(QUEUE, timeout=0.2) for _ in range(6)), return_exceptions=True
    )

    assert results.count([]) == 3
    rejected = [r for r in results if isinstance(r, qr.CircuitOpenError)]
    assert len(rejected) == 3
    assert len(receive_spy.requested) == 3  # the rest never reached the provider
    assert state_of(client) is CircuitState.CLOSED  # three trial successes closed it
    assert await client.receive_messages(QUEUE, timeout=0) == []
    assert client.circuit.trials == 0


async def test_a_cancelled_trial_gives_its_slot_back(
    provider: InMemoryProvider, clock: qr.ManualClock
) -> None:
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()), clock=clock)
    for _ in range(5):
        client.circuit.record_failure()
    clock.advance(30.0)
    trials = [asyncio.ensure_future(client.receive_messages(QUEUE, timeout=5.0)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert client.circuit.trials == 3
    for trial in trials:
        trial.cancel()
    await asyncio.gather(*trials, return_exceptions=True)

    assert client.circuit.trials == 0
    assert state_of(client) is CircuitState.HALF_OPEN
    assert await client.receive_messages(QUEUE, timeout=0) == []  # a slot is free again


async def test_a_named_session_released_within_the_timeout_is_accepted() -> None:
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        holder = await client.accept_session(QUEUE, "o/r/pull/1", timeout=0)
        assert holder is not None
        waiting = asyncio.ensure_future(client.accept_session(QUEUE, "o/r/pull/1", timeout=5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # held: it waits, rather than failing at once
        started = time.monotonic()
        await holder.close()
        taken = await waiting
        assert taken is not None
        assert time.monotonic() - started < 1.0
        await taken.close()


async def test_a_contended_named_session_is_not_retried_past_its_timeout() -> None:
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        holder = await client.accept_session(QUEUE, "o/r/pull/1", timeout=0)
        assert holder is not None
        started = time.monotonic()
        with pytest.raises(qr.SessionLockedError):
            await client.accept_session(QUEUE, "o/r/pull/1", timeout=0)  # asks once
        with pytest.raises(qr.SessionLockedError):
            await client.accept_session(QUEUE, "o/r/pull/1", timeout=0.3)
        assert time.monotonic() - started < 0.3 + 0.3
        assert state_of(client) is CircuitState.CLOSED
        await holder.close()


async def test_permanent_failures_do_not_open_the_circuit(
    provider: InMemoryProvider, clock: qr.ManualClock
) -> None:
    client = qr.QueueClient(provider, qr.QueueConfig(retry=qr.RetryPolicy.never()), clock=clock)
    provider.faults.fail_randomly("send", 1.0, error=qr.AuthorizationError)
    for _ in range(10):
        with pytest.raises(qr.AuthorizationError):
            await client.send_message(QUEUE, qr.Message(b"x"))
    assert client.circuit.state is CircuitState.CLOSED
    assert provider.faults.injected == 10


# -- batching -------------------------------------------------------------------


async def test_send_messages_splits_250_into_three_provider_calls_in_order(
    client: qr.QueueClient, provider: InMemoryProvider, send_spy: SendSpy
) -> None:
    messages = numbered(250)

    ids = await client.send_messages(QUEUE, messages)

    assert [len(batch) for batch in send_spy.batches] == [100, 100, 50]
    sent_order = [m.message_id for batch in send_spy.batches for m in batch]
    expected = [m.message_id for m in messages]
    assert sent_order == expected
    assert ids == expected
    assert pending_ids(provider) == expected


async def test_send_messages_accepts_any_iterable(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    messages = numbered(3)
    await client.send_messages(QUEUE, iter(messages))
    assert pending_ids(provider) == [m.message_id for m in messages]


async def test_send_messages_with_nothing_makes_no_provider_call(
    client: qr.QueueClient, send_spy: SendSpy
) -> None:
    assert await client.send_messages(QUEUE, []) == []
    assert send_spy.batches == []


async def test_batches_are_also_split_by_bytes(
    clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(max_message_size=1000), clock=clock)
    spy = SendSpy(provider)
    monkeypatch.setattr(provider, "send", spy)
    client = qr.QueueClient(provider, qr.QueueConfig(), clock=clock)
    messages = numbered(5, body_size=500)

    await client.send_messages(QUEUE, messages)

    assert [len(batch) for batch in spy.batches] == [2, 2, 1]
    assert all(sum(m.size for m in batch) <= 1000 for batch in spy.batches)
    assert pending_ids(provider) == [m.message_id for m in messages]


async def test_oversize_message_in_a_batch_fails_before_anything_is_sent(
    client: qr.QueueClient, provider: InMemoryProvider, send_spy: SendSpy
) -> None:
    big = qr.Message(b"x" * 262_145)
    batch = [*numbered(150), big]

    with pytest.raises(qr.MessageTooLargeError) as info:
        await client.send_messages(QUEUE, batch)

    assert info.value.size == 262_145
    assert info.value.max_size == 262_144
    assert info.value.message_id == big.message_id
    assert info.value.queue == QUEUE
    assert send_spy.batches == []
    assert provider.stats(QUEUE).active == 0


async def test_attributes_count_towards_the_size_limit(
    client: qr.QueueClient, provider: InMemoryProvider, send_spy: SendSpy
) -> None:
    message = qr.Message(b"x" * 262_143, attributes={"k": "v"})
    with pytest.raises(qr.MessageTooLargeError) as info:
        await client.send_message(QUEUE, message)
    assert info.value.size == 262_145
    assert send_spy.batches == []


async def test_message_exactly_at_the_limit_is_sent(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await client.send_message(QUEUE, qr.Message(b"x" * 262_144))
    assert len(pending_ids(provider)) == 1


async def test_non_message_in_batch_is_rejected_before_sending(
    client: qr.QueueClient, send_spy: SendSpy
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.send_messages(QUEUE, [qr.Message(b"ok"), b"raw"])  # type: ignore[list-item]
    assert info.value.field == "messages"
    assert send_spy.batches == []


# -- validation -----------------------------------------------------------------

BAD_NAMES = ["", "bad--name", "-leading", "trailing-", "has space", "q" * 261, "dot.ted"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_queue_name_on_send_fails_before_any_provider_call(
    client: qr.QueueClient, send_spy: SendSpy, name: str
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.send_message(name, qr.Message(b"x"))
    assert info.value.field == "queue"
    assert send_spy.batches == []


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_queue_name_on_receive_fails_before_any_provider_call(
    client: qr.QueueClient, receive_spy: ReceiveSpy, name: str
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.receive_messages(name, timeout=0)
    assert info.value.field == "queue"
    assert receive_spy.requested == []


async def test_receive_batch_is_capped_at_the_provider_batch_size(
    client: qr.QueueClient, receive_spy: ReceiveSpy
) -> None:
    await client.send_messages(QUEUE, numbered(150))

    received = await client.receive_messages(QUEUE, max_messages=500, timeout=0)

    assert receive_spy.requested == [100]
    assert len(received) == 100
    assert [m.message_id for m in received] == [f"m-{n:04d}" for n in range(100)]


@pytest.mark.parametrize("count", [0, -1])
async def test_non_positive_max_messages_is_a_validation_error(
    client: qr.QueueClient, receive_spy: ReceiveSpy, count: int
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.receive_messages(QUEUE, max_messages=count, timeout=0)
    assert info.value.field == "max_messages"
    assert receive_spy.requested == []


async def test_negative_timeout_is_a_validation_error(
    client: qr.QueueClient, receive_spy: ReceiveSpy
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.receive_messages(QUEUE, timeout=-0.5)
    assert info.value.field == "timeout"
    with pytest.raises(qr.ValidationError):
        await client.receive_message(QUEUE, timeout=-1)
    with pytest.raises(qr.ValidationError):
        await client.accept_session(QUEUE, timeout=-1)
    assert receive_spy.requested == []


async def test_nan_timeout_is_a_validation_error(
    client: qr.QueueClient, receive_spy: ReceiveSpy
) -> None:
    with pytest.raises(qr.ValidationError) as info:
        await client.receive_messages(QUEUE, timeout=float("nan"))
    assert info.value.field == "timeout"
    assert receive_spy.requested == []


async def test_receive_on_empty_queue_returns_nothing_at_timeout(
    client: qr.QueueClient,
) -> None:
    started = time.monotonic()
    assert await client.receive_messages(QUEUE, timeout=0.1) == []
    assert await client.receive_message(QUEUE, timeout=0) is None
    assert 0.05 <= time.monotonic() - started < 1.0


async def test_abandon_with_negative_delay_is_a_validation_error(client: qr.QueueClient) -> None:
    await client.send_message(QUEUE, qr.Message(b"x"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    with pytest.raises(qr.ValidationError) as info:
        await client.abandon_message(received.receipt, delay=-1.0)
    assert info.value.field == "delay"


async def test_dead_letter_needs_a_reason(client: qr.QueueClient) -> None:
    await client.send_message(QUEUE, qr.Message(b"x"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    with pytest.raises(qr.ValidationError) as info:
        await client.dead_letter_message(received.receipt, "")
    assert info.value.field == "reason"


# -- round trip -----------------------------------------------------------------


async def test_send_receive_complete_round_trip(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    message = qr.Message(
        b"body", attributes={"a": "1"}, session_id=qr.SessionId("s/1"), correlation_id="c-1"
    )
    await client.send_message(QUEUE, message)
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert (received.body, dict(received.attributes)) == (b"body", {"a": "1"})
    assert (received.session_id, received.correlation_id) == ("s/1", "c-1")
    assert received.message_id == message.message_id
    await client.complete_message(received.receipt)
    stats = provider.stats(QUEUE)
    assert (stats.active, stats.in_flight) == (0, 0)
    with pytest.raises(qr.InvalidReceiptError):
        await client.complete_message(received.receipt)


# -- construction and capabilities ------------------------------------------------


async def test_create_client_with_memory_config_reports_memory_capabilities() -> None:
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        assert client.provider_type is qr.ProviderType.MEMORY
        assert client.max_batch_size == 100
        assert client.max_message_size == 262_144
        assert client.session_support(QUEUE) is qr.SessionSupport.EMULATED
        assert isinstance(client.provider, InMemoryProvider)
        await client.send_message(QUEUE, qr.Message(b"hi"))
        received = await client.receive_message(QUEUE, timeout=0.5)
        assert received is not None
        assert received.body == b"hi"


async def test_create_client_reports_native_sessions_when_configured() -> None:
    config = qr.InMemoryConfig(session_mode="native", max_batch_size=20, max_message_size=4096)
    async with await qr.create_client(config) as client:
        assert client.session_support(QUEUE) is qr.SessionSupport.NATIVE
        assert client.max_batch_size == 20
        assert client.max_message_size == 4096


async def test_create_client_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QUEUE_RUNTIME_") or name == "QUEUE_PROVIDER":
            monkeypatch.delenv(name)
    monkeypatch.setenv("QUEUE_PROVIDER", "memory")
    monkeypatch.setenv("QUEUE_RUNTIME_MEMORY_MAX_BATCH_SIZE", "7")

    async with await qr.create_client() as client:
        assert client.provider_type is qr.ProviderType.MEMORY
        assert client.max_batch_size == 7
        assert client.max_message_size == 262_144


async def test_session_support_validates_the_queue_name(client: qr.QueueClient) -> None:
    with pytest.raises(qr.ValidationError):
        client.session_support("bad--name")


# -- timeouts -------------------------------------------------------------------


async def test_hanging_provider_call_raises_operation_timeout(
    provider: InMemoryProvider, clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def hang(queue: qr.QueueName, messages: Sequence[qr.Message]) -> None:
        calls.append(len(messages))
        await asyncio.sleep(30)

    monkeypatch.setattr(provider, "send", hang)
    config = qr.QueueConfig(retry=qr.RetryPolicy.never(), timeouts=qr.TimeoutConfig(send=0.05))
    client = qr.QueueClient(provider, config, clock=clock)

    started = time.monotonic()
    with pytest.raises(qr.OperationTimeoutError) as info:
        await client.send_message(QUEUE, qr.Message(b"x"))

    assert time.monotonic() - started < 2.0
    assert calls == [1]
    assert info.value.operation == "send"
    assert info.value.queue == QUEUE
    assert info.value.transient is True
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_timed_out_calls_are_retried_as_transient(
    provider: InMemoryProvider, clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def hang(queue: qr.QueueName, messages: Sequence[qr.Message]) -> None:
        calls.append(len(messages))
        await asyncio.sleep(30)

    monkeypatch.setattr(provider, "send", hang)
    config = qr.QueueConfig(timeouts=qr.TimeoutConfig(send=0.05))
    client = qr.QueueClient(provider, config, clock=clock)

    with pytest.raises(qr.OperationTimeoutError):
        await client.send_message(QUEUE, qr.Message(b"x"))
    assert calls == [1, 1, 1]


# -- lifecycle ------------------------------------------------------------------


class CloseCounter:
    def __init__(self, provider: InMemoryProvider) -> None:
        self._inner = provider.aclose
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        await self._inner()


async def test_aclose_is_idempotent(
    provider: InMemoryProvider, clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CloseCounter(provider)
    monkeypatch.setattr(provider, "aclose", counter)
    client = qr.QueueClient(provider, clock=clock)
    await client.aclose()
    await client.aclose()
    assert counter.calls == 1


async def test_async_with_closes_the_client(
    provider: InMemoryProvider, clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CloseCounter(provider)
    monkeypatch.setattr(provider, "aclose", counter)
    async with qr.QueueClient(provider, clock=clock) as client:
        await client.send_message(QUEUE, qr.Message(b"x"))
        assert counter.calls == 0
    assert counter.calls == 1
    with pytest.raises(qr.QueueError):
        await client.send_message(QUEUE, qr.Message(b"after close"))


async def test_async_with_closes_even_when_the_body_raises(
    provider: InMemoryProvider, clock: qr.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CloseCounter(provider)
    monkeypatch.setattr(provider, "aclose", counter)
    with pytest.raises(RuntimeError, match="boom"):
        async with qr.QueueClient(provider, clock=clock):
            raise RuntimeError("boom")
    assert counter.calls == 1


def test_a_config_given_where_a_provider_belongs_gets_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"takes a provider, not InMemoryConfig.*create_client"):
        qr.QueueClient(qr.InMemoryConfig())  # type: ignore[arg-type]


def test_a_provider_missing_part_of_the_interface_is_told_what_it_lacks() -> None:
    class Incomplete:
        pass

    provider = InMemoryProvider()
    incomplete = Incomplete()
    for name in ("send", "receive", "complete", "abandon", "dead_letter", "renew_lock"):
        setattr(incomplete, name, getattr(provider, name))
    for name in ("receive_dead_letters", "peek_dead_letters", "aclose", "session_support"):
        setattr(incomplete, name, getattr(provider, name))
    incomplete.capabilities = provider.capabilities  # type: ignore[attr-defined]
    incomplete.provider_id = provider.provider_id  # type: ignore[attr-defined]

    with pytest.raises(TypeError, match=r"not Incomplete \(it lacks purge_dead_letters\)"):
        qr.QueueClient(incomplete)  # type: ignore[arg-type]
