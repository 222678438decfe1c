"""Spans, trace context propagation and metrics, checked with the OTel SDK in memory.

Each test gives its client its own tracer and meter providers (never the global
ones, which can be set only once per process); what depends on the global
providers runs in a child process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import queue_runtime as qr
from queue_runtime import telemetry
from queue_runtime.crypto import EncryptionKey
from queue_runtime.providers.memory import InMemoryProvider
from queue_runtime.telemetry import Telemetry, activate, log_fields


@dataclass
class Otel:
    """An SDK tracer and meter provider of the test's own, with in-memory export."""

    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        [found] = self.spans(name)
        return found

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every series of ``metric``."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend((dict(p.attributes or {}), p) for p in item.data.data_points)
        return found

    def total(self, metric: str, **attributes: str) -> int:
        """Sum of a counter's series whose attributes include ``attributes``."""
        return sum(
            point.value
            for labels, point in self.points(metric)
            if all(labels.get(k) == v for k, v in attributes.items())
        )

    def client(self, provider: Any = None, **options: Any) -> qr.QueueClient:
        return qr.QueueClient(
            provider or InMemoryProvider(clock=qr.ManualClock()),
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, exporter, meter_provider, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _context(span: ReadableSpan) -> trace.SpanContext:
    context: trace.SpanContext | None = span.context
    assert context is not None
    return context


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


# -- spans ----------------------------------------------------------------------------


async def test_send_is_a_producer_span_with_the_messaging_attributes(otel: Otel) -> None:
    async with otel.client() as client:
        await client.send_message(
            "orders", qr.Message(b"{}", message_id="m-1", session_id="octo/repo/pull/1")
        )

    span = otel.span("send orders")
    assert span.kind is SpanKind.PRODUCER
    assert dict(span.attributes or {}) == {
        "messaging.system": "memory",
        "messaging.destination.name": "orders",
        "queue": "orders",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": "m-1",
        "messaging.message.conversation_id": "octo/repo/pull/1",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_a_batch_send_is_one_span_and_every_message_carries_its_context(
    otel: Otel,
) -> None:
    async with otel.client() as client:
        await client.send_messages("orders", [qr.Message(b"x") for _ in range(3)])
        received = await client.receive_messages("orders", 10, timeout=0)

    span = otel.span("send orders")
    attributes = span.attributes or {}
    assert attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in attributes
    context = _context(span)
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert [m.attributes["traceparent"] for m in received] == [expected] * 3


@asynccontextmanager
async def _client_on(kind: str, otel: Otel) -> AsyncIterator[tuple[qr.QueueClient, str]]:
    """A client of ``kind`` (memory, SQS on the moto server, Azure on the fake) and a queue."""
    if kind == "memory":
        async with otel.client() as client:
            yield client, "traced"
    elif kind == "sqs":
        from queue_runtime.providers.aws import SqsProvider
        from tests import sqs_server

        await sqs_server.reset()
        provider = SqsProvider(sqs_server.config(visibility_timeout=5.0))
        await provider.create_queue("traced")
        async with otel.client(provider) as client:
            yield client, "traced"
    else:
        from tests.azure.fake_servicebus import FakeServiceBus, VirtualClock

        clock = qr.ManualClock()
        provider_clock = VirtualClock(clock)
        bus = FakeServiceBus(clock, lock_duration=30.0, max_delivery_count=5)
        bus.create_queue("traced")
        connection = (
            "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s"
        )
        from queue_runtime.providers.azure.provider import AzureServiceBusProvider

        azure = AzureServiceBusProvider(
            qr.AzureServiceBusConfig(connection_string=qr.Secret(connection)),
            clock=provider_clock,
            client=bus,
        )
        try:
            async with otel.client(azure, clock=clock) as client:
                yield client, "traced"
        finally:
            provider_clock.close()


@pytest.mark.parametrize("kind", ["memory", "sqs", "azure"])
async def test_processing_continues_the_producers_trace_through_the_provider(
    otel: Otel, kind: str
) -> None:
    tracer = otel.tracer_provider.get_tracer("webhook")
    async with _client_on(kind, otel) as (client, queue):
        with tracer.start_as_current_span("webhook"):
            await client.send_message(queue, qr.Message(b"{}", attributes={"event_type": "push"}))
        [message] = await client.receive_messages(queue, 1, timeout=1.0)
        assert message.attributes["event_type"] == "push"  # user attributes untouched
        with client.telemetry.process(message) as processing:
            processing.outcome = "completed"
            await client.complete_message(message.receipt)

    webhook, send = otel.span("webhook"), otel.span(f"send {queue}")
    receive, process = otel.span(f"receive {queue}"), otel.span(f"process {queue}")
    complete = otel.span(f"complete {queue}")
    trace_id = _context(webhook).trace_id
    assert _parent_id(send) == _context(webhook).span_id
    assert _context(process).trace_id == trace_id
    assert _parent_id(process) == _context(send).span_id  # child of the producer ...
    assert [link.context.span_id for link in process.links] == [
        _context(send).span_id
    ]  # ... linked
    assert process.kind is SpanKind.CONSUMER
    assert _parent_id(complete) == _context(process).span_id  # settled while processing
    assert (complete.attributes or {})["messaging.operation.type"] == "settle"
    assert [link.context.span_id for link in receive.links] == [_context(send).span_id]
    assert receive.kind is SpanKind.CLIENT
    assert (process.attributes or {})["messaging.system"] == client.telemetry.system
    assert (process.attributes or {})["queue_runtime.outcome"] == "completed"


async def test_the_handler_task_runs_in_the_processing_span_once_activated(otel: Otel) -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def handler() -> tuple[bool, int]:  # a worker task, started outside any span
        context = await inbox.get()
        outside = trace.get_current_span().get_span_context().is_valid
        with activate(context):
            return outside, trace.get_current_span().get_span_context().span_id

    worker = asyncio.create_task(handler())
    async with otel.client() as client:
        await client.send_message("orders", qr.Message(b"{}"))
        [message] = await client.receive_messages("orders", 1, timeout=0)
        with client.telemetry.process(message) as processing:
            inbox.put_nowait(processing.trace_context)
            outside, inside = await worker
            processing.outcome = "completed"

    assert outside is False
    assert inside == _context(otel.span("process orders")).span_id


async def test_a_failed_settle_is_an_error_span_with_its_type_and_no_stack_trace(
    otel: Otel,
) -> None:
    async with otel.client() as client:
        await client.send_message("orders", qr.Message(b"{}"))
        [message] = await client.receive_messages("orders", 1, timeout=0)
        await client.complete_message(message.receipt)
        with pytest.raises(qr.InvalidReceiptError):
            await client.complete_message(message.receipt)

    ok, failed = otel.spans("complete orders")
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "InvalidReceiptError"
    [event] = failed.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "InvalidReceiptError"
    assert "exception.stacktrace" not in (event.attributes or {})


async def test_a_batch_completion_is_one_settle_span_per_message_in_its_own_context(
    otel: Otel,
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    provider = InMemoryProvider(clock=qr.ManualClock())
    async with otel.client(provider) as client:
        await client.send_messages("orders", [qr.Message(b"%d" % n) for n in range(3)])
        first, second, third = await client.receive_messages("orders", 3, timeout=0)
        await client.complete_message(second.receipt)  # the batch's second entry will fail
        otel.exporter.clear()
        parents = [tracer.start_span(f"process {n}") for n in range(3)]  # one per caller
        provider.faults.fail_next("complete")  # the first entry fails transiently: retried
        results = await client.complete_messages(
            [first.receipt, second.receipt, third.receipt],
            contexts=[trace.set_span_in_context(parent) for parent in parents],
        )
        for parent in parents:
            parent.end()

    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], qr.InvalidReceiptError)
    spans = {_parent_id(span): span for span in otel.spans("complete orders")}
    assert len(spans) == 3  # one per message, each under its own caller's span
    ordered = [spans[parent.get_span_context().span_id] for parent in parents]
    assert [span.status.status_code for span in ordered] == [
        StatusCode.UNSET,  # its retry worked, inside the same span
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert (ordered[1].attributes or {})["error.type"] == "InvalidReceiptError"
    assert all(span.kind is SpanKind.CLIENT for span in ordered)
    assert otel.total(telemetry.COMPLETED, queue="orders") == 1 + 2


async def test_a_batch_completion_settles_in_the_current_context_by_default(
    otel: Otel,
) -> None:
    async with otel.client() as client:
        await client.send_messages("orders", [qr.Message(b"a"), qr.Message(b"b")])
        batch = await client.receive_messages("orders", 2, timeout=0)
        tracer = otel.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer:
            await client.complete_messages([m.receipt for m in batch])
        with pytest.raises(qr.ValidationError, match="contexts"):
            await client.complete_messages([m.receipt for m in batch], contexts=[None])

    spans = otel.spans("complete orders")
    assert [_parent_id(span) for span in spans] == [outer.get_span_context().span_id] * 2


@pytest.mark.parametrize("kind", ["memory", "sqs", "azure"])  # batch requests; one by one
async def test_each_message_of_a_batch_completion_is_settled_in_its_context(
    otel: Otel, kind: str
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    async with _client_on(kind, otel) as (client, queue):
        await client.send_messages(queue, [qr.Message(b"a"), qr.Message(b"b")])
        batch = await client.receive_messages(queue, 2, timeout=1.0)
        parents = [tracer.start_span(f"process {n}") for n in range(2)]
        await client.complete_messages(
            [m.receipt for m in batch], contexts=[trace.set_span_in_context(p) for p in parents]
        )

    spans = otel.spans(f"complete {queue}")
    assert sorted(_parent_id(span) or 0 for span in spans) == sorted(
        parent.get_span_context().span_id for parent in parents
    )


async def test_processing_that_succeeds_on_a_retry_is_not_an_error(otel: Otel) -> None:
    async with otel.client() as client:
        await client.send_messages("orders", [qr.Message(b"a"), qr.Message(b"b")])
        first, second = await client.receive_messages("orders", 2, timeout=0)
        with client.telemetry.process(first) as processing:
            processing.fail(TimeoutError("downstream slow"))
            processing.outcome = "completed"
        with client.telemetry.process(second) as processing:
            processing.fail(ValueError("bad payload"))
            processing.outcome = "dead_lettered"

    retried, failed = otel.spans("process orders")
    assert retried.status.status_code is StatusCode.UNSET
    assert "error.type" not in (retried.attributes or {})
    assert [e.name for e in retried.events] == ["exception"]  # the attempt is still visible
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "ValueError"
    durations = {
        (labels.get("queue_runtime.outcome"), labels.get("error.type")): point.count
        for labels, point in otel.points(telemetry.PROCESS_DURATION)
    }
    assert durations == {("completed", None): 1, ("dead_lettered", "ValueError"): 1}


async def test_an_exception_leaving_processing_marks_it_failed(otel: Otel) -> None:
    async with otel.client() as client:
        await client.send_message("orders", qr.Message(b"{}"))
        [message] = await client.receive_messages("orders", 1, timeout=0)
        with pytest.raises(KeyError), client.telemetry.process(message):
            raise KeyError("route")

    span = otel.span("process orders")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "KeyError"


# -- an incoming trace context and its baggage, handed on ----------------------------

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
"""A traceparent from an upstream service (not made by any tracer of this test)."""


def _client_traced(how: str, otel: Otel) -> qr.QueueClient:
    """A client with an SDK, with the API's no-op tracer provider, or with no SDK at all."""
    provider = InMemoryProvider(clock=qr.ManualClock())
    if how == "sdk":
        return otel.client(provider)
    if how == "noop tracer":  # tracing is on, but every span is the API's non-recording one
        return qr.QueueClient(provider, tracer_provider=trace.NoOpTracerProvider())
    client = qr.QueueClient(provider)  # the global providers: none set in this process
    assert not client.telemetry.tracing, "a test set a global tracer provider"
    return client


async def _hand_on(
    client: qr.QueueClient, attributes: dict[str, str]
) -> tuple[object, dict[str, str]]:
    """Process a message an upstream service sent with ``attributes`` (straight to the
    provider: no tracer of ours saw it) and send onward from the handler's context, as
    the bot's handler actor does; the baggage the handler saw and what the onward
    message carries."""
    await client.provider.send(qr.QueueName("in"), [qr.Message(b"x", attributes=attributes)])
    [message] = await client.receive_messages("in", 1, timeout=0)
    with client.telemetry.process(message) as processing:
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def handler() -> object:  # another task, as the handler actor's is
            with activate(await inbox.get()):
                await client.send_message("out", qr.Message(b"y"))
                return baggage.get_baggage("tenant")

        task = asyncio.create_task(handler())
        inbox.put_nowait(processing.trace_context)
        tenant = await task
        processing.outcome = "completed"
    [forwarded] = await client.receive_messages("out", 1, timeout=0)
    return tenant, dict(forwarded.attributes)


@pytest.mark.parametrize("how", ["sdk", "noop tracer", "no sdk"])
async def test_incoming_baggage_reaches_the_handler_and_its_onward_sends(
    otel: Otel, how: str
) -> None:
    async with _client_traced(how, otel) as client:
        tenant, onward = await _hand_on(
            client, {"traceparent": INCOMING, "baggage": "tenant=acme,plan=gold"}
        )

    assert tenant == "acme"
    assert onward["baggage"] == "tenant=acme,plan=gold"
    trace_id = INCOMING.split("-")[1]
    assert onward["traceparent"].split("-")[1] == trace_id  # the same trace, continued
    if how == "sdk":  # the onward send's own span, a descendant of the process span
        send = otel.span("send out")
        assert onward["traceparent"].split("-")[2] == f"{_context(send).span_id:016x}"
        assert _parent_id(send) == _context(otel.span("process in")).span_id
    else:  # nothing recorded here: the incoming context is handed on as it came
        assert onward["traceparent"] == INCOMING


@pytest.mark.parametrize("how", ["sdk", "noop tracer", "no sdk"])
async def test_baggage_without_a_trace_is_handed_on_too(otel: Otel, how: str) -> None:
    async with _client_traced(how, otel) as client:
        tenant, onward = await _hand_on(client, {"baggage": "tenant=acme"})

    assert tenant == "acme"
    assert onward["baggage"] == "tenant=acme"
    assert ("traceparent" in onward) is (how == "sdk")  # only an SDK starts a trace


@pytest.mark.parametrize("how", ["sdk", "no sdk"])
async def test_the_handler_gets_the_messages_baggage_not_the_consumers(
    otel: Otel, how: str
) -> None:
    async with _client_traced(how, otel) as client:
        token = context.attach(baggage.set_baggage("consumer", "mine"))
        try:  # the consumer's own baggage, current where the message is received
            await client.provider.send(
                qr.QueueName("in"), [qr.Message(b"x", attributes={"baggage": "tenant=acme"})]
            )
            [message] = await client.receive_messages("in", 1, timeout=0)
            with client.telemetry.process(message) as processing:
                seen = dict(baggage.get_all(processing.trace_context))
                processing.outcome = "completed"
        finally:
            context.detach(token)

    assert seen == {"tenant": "acme"}


async def test_a_message_without_baggage_leaves_none_in_the_handler(otel: Otel) -> None:
    async with _client_traced("no sdk", otel) as client:
        tenant, onward = await _hand_on(client, {"traceparent": INCOMING})

    assert tenant is None
    assert "baggage" not in onward
    assert onward["traceparent"] == INCOMING


# -- trace context and the size limit and encryption ----------------------------------


async def test_the_trace_context_counts_against_the_size_limit(otel: Otel) -> None:
    traceparent = len("traceparent") + len("00-" + "0" * 32 + "-" + "0" * 16 + "-01")
    provider = InMemoryProvider(qr.InMemoryConfig(max_message_size=100), clock=qr.ManualClock())
    async with otel.client(provider) as client:
        await client.send_message("orders", qr.Message(b"x" * (100 - traceparent)))  # just fits
        with pytest.raises(qr.MessageTooLargeError) as raised:
            await client.send_message("orders", qr.Message(b"x" * (101 - traceparent)))
        received = await client.receive_messages("orders", 10, timeout=0)

    assert "101 bytes" in str(raised.value)  # the size that would have travelled
    assert [len(m.body) for m in received] == [100 - traceparent]  # the other was not sent


async def test_the_trace_context_stays_readable_on_an_encrypted_message(otel: Otel) -> None:
    keys = qr.StaticKeyProvider(EncryptionKey("k1", bytes(range(32))))
    config = qr.QueueConfig(crypto=qr.CryptoConfig(enabled=True))
    provider = InMemoryProvider(clock=qr.ManualClock())
    async with otel.client(provider, config=config, keys=keys) as client:
        await client.send_message("orders", qr.Message(b"secret body"))
        [stored] = await provider.receive(qr.QueueName("orders"), 1, 0)  # what travelled
        await provider.abandon(stored.receipt, None)
        [message] = await client.receive_messages("orders", 1, timeout=0)

    assert qr.is_encrypted(stored.body)
    assert stored.attributes["traceparent"].startswith("00-")
    assert message.body == b"secret body"
    assert message.attributes["traceparent"] == stored.attributes["traceparent"]


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_add_up_after_a_known_workload(otel: Otel) -> None:
    async with otel.client() as client:
        await client.send_messages("orders", [qr.Message(b"x") for _ in range(3)])
        await client.send_message("orders", qr.Message(b"y"))
        await client.send_message("audit", qr.Message(b"z"))
        batch = await client.receive_messages("orders", 10, timeout=0)
        await client.complete_message(batch[0].receipt)
        await client.complete_message(batch[1].receipt)
        await client.abandon_message(batch[2].receipt)
        await client.dead_letter_message(batch[3].receipt, "ValueError", "bad")
        [again] = await client.receive_messages("orders", 10, timeout=0)
        await client.dead_letter_message(again.receipt, "something went wrong")
        [dead] = await client.receive_dead_letters("orders", 1, timeout=0)
        await client.complete_message(dead.receipt)  # DLQ upkeep: not a queue outcome
        await client.receive_messages("audit", 10, timeout=0)

    assert otel.total(telemetry.SENT, queue="orders") == 4
    assert otel.total(telemetry.SENT, queue="audit") == 1
    assert otel.total(telemetry.CONSUMED, queue="orders") == 5
    assert otel.total(telemetry.CONSUMED, queue="audit") == 1
    assert otel.total(telemetry.COMPLETED, queue="orders") == 2
    assert otel.total(telemetry.ABANDONED, queue="orders") == 1
    dead_lettered = {
        labels["error.type"]: point.value for labels, point in otel.points(telemetry.DEAD_LETTERED)
    }
    assert dead_lettered == {"ValueError": 1, "_OTHER": 1}  # free text never becomes a label
    durations = {
        (labels["messaging.operation.name"], labels["queue"]): point.count
        for labels, point in otel.points(telemetry.OPERATION_DURATION)
    }
    assert durations == {
        ("send", "orders"): 2,
        ("send", "audit"): 1,
        ("receive", "orders"): 2,
        ("receive", "audit"): 1,
        ("complete", "orders"): 3,
        ("abandon", "orders"): 1,
        ("dead_letter", "orders"): 2,
        ("receive_dead_letters", "orders"): 1,
    }


async def test_metric_attributes_are_low_cardinality(otel: Otel) -> None:
    async with otel.client() as client:
        for n in range(5):
            await client.send_message(
                "orders", qr.Message(b"x", message_id=f"m-{n}", session_id=f"s-{n}")
            )
        for message in await client.receive_messages("orders", 10, timeout=0):
            await client.complete_message(message.receipt)

    allowed = {
        "queue",
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.name",
        "messaging.operation.type",
        "error.type",
    }
    for metric in (telemetry.SENT, telemetry.CONSUMED, telemetry.COMPLETED):
        [(labels, _)] = otel.points(metric)  # one series for five messages and sessions
        assert set(labels) <= allowed
        assert labels["messaging.system"] == "memory"
        assert labels["messaging.destination.name"] == labels["queue"] == "orders"


async def test_retries_are_counted_with_the_error_type(otel: Otel) -> None:
    provider = InMemoryProvider(clock=qr.ManualClock())  # back-off costs no time
    provider.faults.fail_next("send", count=2)
    async with otel.client(provider) as client:
        await client.send_message("orders", qr.Message(b"x"))

    [(labels, point)] = otel.points(telemetry.RETRIES)
    assert point.value == 2
    assert labels["error.type"] == "ConnectionFailedError"
    assert labels["messaging.operation.name"] == "send"
    assert otel.total(telemetry.SENT, queue="orders") == 1
    attempts = {
        labels.get("error.type"): point.count
        for labels, point in otel.points(telemetry.OPERATION_DURATION)
    }
    assert attempts == {"ConnectionFailedError": 2, None: 1}  # every attempt timed


class _Misbehaving(InMemoryProvider):
    """Sends fail as ``mode`` says: a provider bug, an answer that never comes."""

    mode = ""

    async def send(self, queue: qr.QueueName, messages: Any) -> None:
        if self.mode == "bug":
            raise RuntimeError("a provider bug")
        if self.mode == "hang":
            await asyncio.Event().wait()
        await super().send(queue, messages)


async def test_each_attempt_is_measured_with_how_it_ended(otel: Otel) -> None:
    provider = _Misbehaving()
    config = qr.QueueConfig(retry=qr.RetryPolicy.never(), timeouts=qr.TimeoutConfig(send=0.05))
    async with otel.client(provider, config=config) as client:
        await client.send_message("orders", qr.Message(b"ok"))
        provider.mode = "bug"
        with pytest.raises(RuntimeError):
            await client.send_message("orders", qr.Message(b"x"))
        provider.mode = "hang"
        with pytest.raises(qr.OperationTimeoutError):
            await client.send_message("orders", qr.Message(b"x"))
        sending = asyncio.create_task(client.send_message("orders", qr.Message(b"x")))
        await asyncio.sleep(0.01)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

    attempts = {
        labels.get("error.type"): point.count
        for labels, point in otel.points(telemetry.OPERATION_DURATION)
    }
    # a provider bug by its class, a timeout as the client's error, a cancelled call not at all
    assert attempts == {None: 1, "RuntimeError": 1, "OperationTimeoutError": 1}


async def test_a_failed_send_is_counted_with_its_error_type(otel: Otel) -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(create_queues=False))
    async with otel.client(provider) as client:
        with pytest.raises(qr.QueueNotFoundError):
            await client.send_message("missing", qr.Message(b"x"))

    [(labels, point)] = otel.points(telemetry.SENT)
    assert (labels["error.type"], point.value) == ("QueueNotFoundError", 1)
    assert otel.span("send missing").status.status_code is StatusCode.ERROR


async def test_observed_values_are_reported_until_closed(otel: Otel) -> None:
    stats = {"sessions": 7, "in_flight": 12}
    client = otel.client()
    observed = client.telemetry.observe(
        "orders",
        active_sessions=lambda: stats["sessions"],
        in_flight=lambda: stats["in_flight"],
        circuits=lambda: {"provider": client.circuit.state, "Pushes": "open"},
    )
    stats["sessions"] = 8

    assert otel.total(telemetry.ACTIVE_SESSIONS, queue="orders") == 8
    assert otel.total(telemetry.IN_FLIGHT, queue="orders") == 12
    circuits = {
        labels["queue_runtime.circuit"]: point.value
        for labels, point in otel.points(telemetry.CIRCUIT_STATE)
    }
    assert circuits == {"provider": 0, "Pushes": 2}

    observed.close()
    assert otel.points(telemetry.IN_FLIGHT) == []
    assert otel.points(telemetry.CIRCUIT_STATE) == []
    await client.aclose()


async def test_a_failing_callback_does_not_hide_the_others(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise RuntimeError("stats gone")

    client = otel.client()
    client.telemetry.observe("a", in_flight=broken)
    client.telemetry.observe("b", in_flight=lambda: 4)
    with caplog.at_level("ERROR", logger="queue_runtime.telemetry"):
        assert otel.total(telemetry.IN_FLIGHT, queue="b") == 4
    assert "a telemetry callback failed" in caplog.text
    await client.aclose()


# -- logs --------------------------------------------------------------------------


def test_log_fields_carry_identifiers_and_the_current_trace_id(otel: Otel) -> None:
    received_fields = log_fields("send", "orders", qr.Message(b"body", correlation_id="c-1"))
    assert set(received_fields) == set(telemetry.LOG_FIELDS)
    assert received_fields["correlation_id"] == "c-1"
    assert received_fields["trace_id"] is None
    with otel.tracer_provider.get_tracer("t").start_as_current_span("outer") as span:
        fields = log_fields("complete", "orders")
    assert fields["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_error_type_keeps_class_names_and_hides_free_text() -> None:
    assert telemetry.error_type(qr.ThrottledError("slow")) == "ThrottledError"
    assert telemetry.error_type("MaxDeliveryCountExceeded") == "MaxDeliveryCountExceeded"
    assert telemetry.error_type("order 42 failed") == "_OTHER"
    assert telemetry.error_type("X" * 65) == "_OTHER"


def test_the_apis_no_op_tracer_provider_starts_no_spans_at_all() -> None:
    assert Telemetry("memory", tracer_provider=trace.NoOpTracerProvider()).tracing is False
    assert Telemetry("memory", tracer_provider=TracerProvider()).tracing is True


def test_telemetry_repr_names_the_system() -> None:
    assert repr(Telemetry("servicebus")) == "Telemetry(system='servicebus')"


# -- the global providers (a child process each: they can be set only once) ---------


def _run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_sdk_configured_after_the_client_was_created_still_traces_and_measures() -> None:
    output = _run(
        """
        import asyncio
        import queue_runtime as qr
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        async def main():
            client = await qr.create_client(qr.InMemoryConfig())   # before any SDK
            await client.send_message("q", qr.Message(b"untraced"))
            [before] = await client.receive_messages("q", 1, timeout=0)
            await client.complete_message(before.receipt)

            exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

            await client.send_message("q", qr.Message(b"traced"))
            [after] = await client.receive_messages("q", 1, timeout=0)
            await client.aclose()
            sent = [
                p.value
                for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics if m.name == "messaging.client.sent.messages"
                for p in m.data.data_points
            ]
            names = sorted(s.name for s in exporter.get_finished_spans())
            print("traceparent" in before.attributes, "traceparent" in after.attributes,
                  names, sent)

        asyncio.run(main())
        """
    )
    assert output == "False True ['receive q', 'send q'] [1]"


def test_without_an_sdk_an_incoming_trace_context_is_handed_on_unchanged() -> None:
    output = _run(
        """
        import asyncio
        import queue_runtime as qr
        from opentelemetry import baggage
        from queue_runtime.telemetry import activate

        PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

        async def main():
            async with await qr.create_client(qr.InMemoryConfig()) as client:
                incoming = {"traceparent": PARENT, "baggage": "tenant=acme"}
                await client.send_message("in", qr.Message(b"x", attributes=incoming))
                [message] = await client.receive_messages("in", 1, timeout=0)
                with client.telemetry.process(message) as processing:
                    with activate(processing.trace_context):   # as the handler would
                        tenant = baggage.get_baggage("tenant")
                        await client.send_message("out", qr.Message(b"y"))
                    processing.outcome = "completed"
                [forwarded] = await client.receive_messages("out", 1, timeout=0)
                print(client.telemetry.tracing, forwarded.attributes.get("traceparent") == PARENT,
                      tenant, forwarded.attributes.get("baggage"))

        asyncio.run(main())
        """
    )
    assert output == "False True acme tenant=acme"
