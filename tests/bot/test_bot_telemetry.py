"""A handler runs inside the producer's trace: send -> bot -> handler, and the bot's metrics."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from opentelemetry import baggage, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import queue_runtime as qr
from queue_runtime import telemetry
from queue_runtime.bot import Bot, Event, Handler, PermanentFailure
from queue_runtime.providers.memory import InMemoryProvider
from tests.bot.test_bot import QUEUE, wait_until


def _metric(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    return [
        (dict(point.attributes or {}), point)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for item in scope.metrics
        if item.name == name
        for point in item.data.data_points
    ]


def _id(span: ReadableSpan) -> int:
    context: trace.SpanContext | None = span.context
    assert context is not None
    return context.span_id


def _trace(span: ReadableSpan) -> int:
    context: trace.SpanContext | None = span.context
    assert context is not None
    return context.trace_id


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_a_handler_runs_in_a_process_span_that_continues_the_producers_trace(
    mode: str,
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    seen: list[trace.SpanContext] = []
    observed_in_flight: list[int] = []

    class Pushes(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push", "broken")

        async def handle(self, event: Event) -> None:
            seen.append(trace.get_current_span().get_span_context())
            observed_in_flight.extend(p.value for _, p in _metric(reader, telemetry.IN_FLIGHT))
            if event.type == "broken":
                raise PermanentFailure("cannot be handled")

    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
    client = qr.QueueClient(
        provider, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    with tracer_provider.get_tracer("webhook").start_as_current_span("webhook"):
        await client.send_message(
            QUEUE, qr.Message(b"{}", attributes={"event_type": "push"}, session_id="o/r/pull/1")
        )
    await client.send_message(
        QUEUE, qr.Message(b"{}", attributes={"event_type": "broken"}, session_id="o/r/pull/2")
    )

    async with Bot(client, QUEUE, [Pushes], receive_wait=0.05) as bot:
        await wait_until(lambda: bot.stats().completed + bot.stats().dead_lettered == 2)

    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.name == f"send {QUEUE}" and s.parent is not None]
    traced, broken = sorted(
        (s for s in spans if s.name == f"process {QUEUE}"),
        key=lambda s: str((s.attributes or {})["messaging.message.conversation_id"]),
    )
    [complete] = [s for s in spans if s.name == f"complete {QUEUE}"]
    [dead_letter] = [s for s in spans if s.name == f"dead_letter {QUEUE}"]
    assert traced.kind is SpanKind.CONSUMER
    assert _parent(traced) == _id(send)  # a child of the producer ...
    assert [link.context.span_id for link in traced.links] == [_id(send)]  # ... linked too
    assert _id(traced) in {context.span_id for context in seen}  # current in the handler
    assert _parent(complete) == _id(traced)
    assert broken.status.status_code is StatusCode.ERROR
    assert (broken.attributes or {})["error.type"] == "PermanentFailure"
    assert _parent(dead_letter) == _id(broken)

    outcomes = {
        (labels["queue_runtime.outcome"], labels.get("error.type")): point.count
        for labels, point in _metric(reader, telemetry.PROCESS_DURATION)
    }
    assert outcomes == {("completed", None): 1, ("dead_lettered", "PermanentFailure"): 1}
    assert max(observed_in_flight) >= 1  # the bot's gauges were registered while it ran
    assert _metric(reader, telemetry.IN_FLIGHT) == []  # and unregistered when it stopped


async def test_a_running_bot_reports_handler_retries_sessions_and_circuits() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    during: dict[str, list[tuple[dict[str, Any], Any]]] = {}

    class Flaky(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            if event.attempt == 1:
                raise ConnectionError("downstream hiccup")  # retried in place
            for name in (telemetry.ACTIVE_SESSIONS, telemetry.CIRCUIT_STATE):
                during[name] = _metric(reader, name)

    client = qr.QueueClient(InMemoryProvider(), meter_provider=meter_provider)
    await client.send_messages(
        QUEUE,
        [
            qr.Message(b"{}", attributes={"event_type": "push"}, session_id=f"o/r/pull/{n}")
            for n in range(3)
        ],
    )
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
    async with Bot(client, QUEUE, [Flaky], retry=retry, receive_wait=0.05) as bot:
        await wait_until(lambda: bot.stats().completed == 3)

    retries = {
        (labels[telemetry.OPERATION_NAME], labels[telemetry.ERROR_TYPE]): point.value
        for labels, point in _metric(reader, telemetry.RETRIES)
    }
    assert retries == {("process", "ConnectionError"): 3}
    assert max(point.value for _, point in during[telemetry.ACTIVE_SESSIONS]) >= 1
    circuits = {
        labels[telemetry.CIRCUIT]: point.value for labels, point in during[telemetry.CIRCUIT_STATE]
    }
    assert circuits == {"provider": 0, "Flaky": 0}  # closed


@pytest.mark.parametrize("mode", ["emulated", "native"])
@pytest.mark.parametrize("how", ["sdk", "no sdk"])
async def test_a_handler_sees_the_messages_baggage_and_hands_it_on(mode: str, how: str) -> None:
    upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    options: dict[str, Any] = {}
    if how == "sdk":
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        options["tracer_provider"] = tracer_provider
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
    client = qr.QueueClient(provider, **options)
    assert client.telemetry.tracing is (how == "sdk")  # no test sets a global provider
    tenants: list[object] = []

    class Forwards(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            tenants.append(baggage.get_baggage("tenant"))
            await client.send_message("onward", qr.Message(b"{}"))

    incoming = {"event_type": "push", "traceparent": upstream, "baggage": "tenant=acme"}
    await provider.send(  # from an upstream service: straight to the queue
        qr.QueueName(QUEUE), [qr.Message(b"{}", attributes=incoming, session_id="o/r/pull/1")]
    )
    async with Bot(client, QUEUE, [Forwards], receive_wait=0.05) as bot:
        await wait_until(lambda: bot.stats().completed == 1)
    [onward] = await client.receive_messages("onward", 1, timeout=0)
    await client.aclose()

    assert tenants == ["acme"]
    assert onward.attributes["baggage"] == "tenant=acme"
    assert onward.attributes["traceparent"].split("-")[1] == upstream.split("-")[1]


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_every_message_is_settled_in_a_span_under_its_own_process_span(mode: str) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    class Pushes(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            return None

    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
    client = qr.QueueClient(
        provider, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    sessions = 8
    await client.send_messages(
        QUEUE,
        [
            qr.Message(b"{}", attributes={"event_type": "push"}, session_id=f"o/r/pull/{n}")
            for n in range(sessions)
        ],
    )
    async with Bot(client, QUEUE, [Pushes], receive_wait=0.05) as bot:
        await wait_until(lambda: bot.stats().completed == sessions)

    spans = exporter.get_finished_spans()
    processes = {_id(s): s for s in spans if s.name == f"process {QUEUE}"}
    completes = [s for s in spans if s.name == f"complete {QUEUE}"]
    assert len(processes) == sessions
    assert sorted(_parent(s) or 0 for s in completes) == sorted(processes)  # one under each
    for complete in completes:
        assert _trace(complete) == _trace(processes[_parent(complete) or 0])
    calls = sum(
        point.count
        for labels, point in _metric(reader, telemetry.OPERATION_DURATION)
        if labels[telemetry.OPERATION_NAME] == "complete"
    )
    if mode == "emulated":  # the completions really were batched into fewer calls
        assert calls < sessions
