"""The cost of telemetry: the bot's throughput with no OpenTelemetry SDK, and with one.

Same scenario as :mod:`bench.bot` (memory provider, sessions x messages, a
no-op handler), four ways in one run:

* **uninstrumented** — the client's telemetry replaced by :class:`Bare`, whose
  spans, metrics and propagation do nothing at all: what the bot would cost
  without instrumentation (the baseline of the no-SDK row);
* **no SDK** — the default: the API's no-op tracer and meter (the baseline of
  the SDK rows);
* **SDK, traces and metrics** — a ``TracerProvider`` with a ``BatchSpanProcessor``
  (the SDK's defaults, as a production set-up has it; the row measured a
  ``SimpleSpanProcessor`` before 2026-12-03) into :class:`CountingExporter`, and
  a ``MeterProvider`` with an in-memory reader: every message gets a ``process``
  and a ``complete`` span, every receive call a ``receive`` span, and their
  metrics. The processor's queue is flushed before the clock stops, so the
  export thread's work (it takes the GIL from the event loop) is in the time,
  and the row reports how many spans were exported per message: a dropped span
  (a full queue) would show there;
* **SDK, traces sampled** — the same, with ``ParentBased(TraceIdRatioBased(0.1))``
  and each message sent in a call of its own (a trace of its own): what a
  production set-up with sampling pays (no target);
* **SDK, metrics only** — what many deployments run.

The providers are handed to the client (``tracer_provider=``/``meter_provider=``),
so the global OpenTelemetry state is not touched. Each row also reports the
CPU time per message (every thread of the process), which other work on the
machine disturbs less than throughput.

Run: ``.venv/bin/python -m bench telemetry``.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN

import queue_runtime as qr
from bench.bot import QUEUE, _bot_run, _filled_client
from bench.harness import Row, interleaved, report, save
from queue_runtime.messages import Message, ReceiptHandle, ReceivedMessage
from queue_runtime.providers.memory import InMemoryProvider
from queue_runtime.telemetry import Processing, Receiving, Settling, SpanScope, Telemetry
from queue_runtime.telemetry.spans import UNTRACED, UNTRACED_SETTLING

T = TypeVar("T")

SESSIONS = 200
PER_SESSION = 20
REPEATS = 9
SAMPLED = 0.1
"""The share of traces sampled in the sampled row."""
"""Rounds (a run is short, and the rows are ratios of a few per cent: more rounds, steadier
medians on a shared machine)."""


def _messages() -> list[qr.Message]:
    return [
        qr.Message(b"{}", attributes={"event_type": "bench"}, session_id=f"o/r/pull/{s}")
        for _ in range(PER_SESSION)
        for s in range(SESSIONS)
    ]


class CountingExporter(SpanExporter):
    """Counts the spans and drops them, as an exporter does once it has sent them.

    (The SDK's ``InMemorySpanExporter`` keeps every span: the cyclic GC then walks
    them all on each full collection, a cost no production exporter has.) It
    serializes nothing: a real exporter (OTLP) spends CPU on top, on the batch
    processor's thread.
    """

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@dataclass
class Sdk:
    """The OpenTelemetry SDK set-up of one run (empty: none), and what it exported."""

    options: dict[str, Any] = field(default_factory=dict)
    """``tracer_provider=`` and ``meter_provider=`` for the client."""
    exporter: CountingExporter | None = None
    trace_per_message: bool = False
    """Send each message in its own call, so that each is a trace of its own (what a
    sampler decides on: one ``send`` span per call)."""

    def flush(self) -> None:
        tracer_provider = self.options.get("tracer_provider")
        if isinstance(tracer_provider, TracerProvider):
            tracer_provider.force_flush()

    def close(self) -> None:
        for provider in self.options.values():
            provider.shutdown()  # the batch processor's thread ends here


def _tracing() -> Sdk:
    exporter = CountingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    return Sdk({"tracer_provider": tracer_provider, **_metrics().options}, exporter)


def _sampled() -> Sdk:
    """Traces as :func:`_tracing`, one trace in ten sampled, as production often has it
    (the producer's decision, which the bot follows)."""
    exporter = CountingExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(SAMPLED)))
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    options = {"tracer_provider": tracer_provider, **_metrics().options}
    return Sdk(options, exporter, trace_per_message=True)


def _inline() -> Sdk:
    """Traces exported inline (no processor thread, whose GIL hand-offs a loaded
    machine stretches): what the spans themselves cost, for :func:`pieces`."""
    exporter = CountingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Sdk({"tracer_provider": tracer_provider, **_metrics().options}, exporter)


def _metrics() -> Sdk:
    return Sdk({"meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()])})


class Bare(Telemetry):
    """Telemetry that does nothing: no spans, no metrics, no propagation."""

    def send(self, queue: str, messages: Sequence[Message]) -> SpanScope:
        return UNTRACED

    def inject(self, messages: list[Message]) -> list[Message]:
        return messages

    def receive(self, queue: str, session_id: str | None = None) -> Receiving:
        return UNTRACED

    def settle(
        self,
        operation: str,
        queue: str,
        *,
        dead_letter: bool = False,
        context: Context | None = None,
    ) -> SpanScope:
        return UNTRACED

    def settle_each(
        self,
        operation: str,
        queue: str,
        receipts: Sequence[ReceiptHandle],
        contexts: Sequence[Context | None] | None = None,
    ) -> Settling:
        return UNTRACED_SETTLING

    def process(self, message: ReceivedMessage) -> Processing:
        return Processing(INVALID_SPAN, self, message.receipt.queue)

    def record_processing(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def measure(self, operation: str, queue: str, call: Awaitable[T]) -> T:
        return await call

    def record_operation(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_sent(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_received(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_settled(self, *args: Any, **kwargs: Any) -> None:
        return None


SPANS: dict[str, list[float]] = {}
"""Spans exported per message, per candidate, over the runs."""
CPU: dict[str, list[float]] = {}
"""CPU time per message (µs, every thread of the process), per candidate, over the runs:
less disturbed than throughput by other work on the machine."""


async def _run(name: str, sdk: Sdk, *, bare: bool = False) -> float:
    messages = _messages()
    if sdk.trace_per_message:
        client = await _filled_client([], **sdk.options)
        for message in messages:
            await client.send_message(QUEUE, message)
    else:
        client = await _filled_client(messages, **sdk.options)
    if bare:
        client.telemetry = Bare(client.telemetry.system)
    if sdk.exporter is not None:
        sdk.flush()
        sdk.exporter.spans = 0  # the spans of filling the queue are not this run's
    gc.collect()  # the previous run's spans are garbage: not this run's to collect

    async def flushed() -> None:  # the export of the run's last spans is the run's work
        await asyncio.to_thread(sdk.flush)

    cpu = time.process_time()
    try:
        rate = await _bot_run(client, len(messages), finish=flushed)
        CPU.setdefault(name, []).append((time.process_time() - cpu) / len(messages) * 1e6)
    finally:
        if sdk.exporter is not None:
            SPANS.setdefault(name, []).append(sdk.exporter.spans / len(messages))
        sdk.close()
    return rate


def cost() -> list[Row]:
    SPANS.clear()
    CPU.clear()
    loop = asyncio.new_event_loop()
    try:
        medians = interleaved(
            {
                "bare": lambda: loop.run_until_complete(_run("bare", Sdk(), bare=True)),
                "none": lambda: loop.run_until_complete(_run("none", Sdk())),
                "metrics": lambda: loop.run_until_complete(_run("metrics", _metrics())),
                "traces": lambda: loop.run_until_complete(_run("traces", _tracing())),
                "sampled": lambda: loop.run_until_complete(_run("sampled", _sampled())),
            },
            repeats=REPEATS,
        )
    finally:
        loop.close()
    base = medians["none"]
    bare = medians["bare"]
    spans = SPANS.get("traces", [0.0])
    sampled = SPANS.get("sampled", [0.0])
    cpu = {name: statistics.median(values[1:]) for name, values in CPU.items()}  # not the warm-up
    return [
        Row(
            f"bot throughput, no OpenTelemetry SDK vs uninstrumented ({SESSIONS} x {PER_SESSION})",
            base,
            "m/s",
            baseline=bare,
            ratio=base / bare,
            target="our own: >= 0.9",
            met=base / bare >= 0.9,
            detail={
                "cost_us_per_message": round((1 / base - 1 / bare) * 1e6, 2),
                "cpu_us_per_message": f"{cpu['none']:.1f} vs {cpu['bare']:.1f}",
                "cpu_ratio": round(cpu["bare"] / cpu["none"], 3),
            },
        ),
        Row(
            "bot throughput, SDK: metrics (in-memory reader)",
            medians["metrics"],
            "m/s",
            baseline=base,
            ratio=medians["metrics"] / base,
            target="our own: >= 0.85",
            met=medians["metrics"] / base >= 0.85,
            detail={
                "cost_us_per_message": round((1 / medians["metrics"] - 1 / base) * 1e6, 2),
                "budget_us_per_message": _budget(base, 0.85),
                "cpu_us_per_message": f"{cpu['metrics']:.1f} vs {cpu['none']:.1f}",
                "cpu_ratio": round(cpu["none"] / cpu["metrics"], 3),
            },
        ),
        Row(
            "bot throughput, SDK: traces (batch processor) + metrics",
            medians["traces"],
            "m/s",
            baseline=base,
            ratio=medians["traces"] / base,
            target="our own: >= 0.4",
            met=medians["traces"] / base >= 0.4,
            detail={
                "cost_us_per_message": round((1 / medians["traces"] - 1 / base) * 1e6, 2),
                "budget_us_per_message": _budget(base, 0.4),
                "cpu_us_per_message": f"{cpu['traces']:.1f} vs {cpu['none']:.1f}",
                "cpu_ratio": round(cpu["none"] / cpu["traces"], 3),
                "spans_per_message": f"{min(spans):.3f}-{max(spans):.3f}",
            },
        ),
        Row(
            f"bot throughput, SDK: traces sampled at {SAMPLED:.0%} + metrics",
            medians["sampled"],
            "m/s",
            baseline=base,
            ratio=medians["sampled"] / base,
            detail={
                "cpu_us_per_message": f"{cpu['sampled']:.1f} vs {cpu['none']:.1f}",
                "cpu_ratio": round(cpu["none"] / cpu["sampled"], 3),
                "spans_per_message": f"{min(sampled):.3f}-{max(sampled):.3f}",
            },
        ),
    ]


def _budget(base: float, target: float) -> float:
    """µs per message an SDK may cost a bot running at ``base`` messages per second
    for its throughput to stay at ``target`` of it."""
    return round((1 / target - 1) / base * 1e6, 2)


PIECES = 2_000
"""Messages per measurement of :func:`pieces`."""


async def _pieces(sdk: Sdk) -> dict[str, float]:
    """µs per message of each part of the bot's telemetry, through :class:`Telemetry`:
    the least of five rounds (the round least disturbed by other work), the cyclic GC
    off while timing (its share is in the throughput rows, not here), spans exported
    inline (:func:`_inline`)."""
    client = qr.QueueClient(
        InMemoryProvider(qr.InMemoryConfig(max_queue_size=PIECES)), **sdk.options
    )
    telemetry = client.telemetry
    await client.send_messages("q", [qr.Message(b"{}", session_id=f"s{n}") for n in range(PIECES)])
    messages: list[ReceivedMessage] = []
    while len(messages) < PIECES:
        messages += await client.receive_messages("q", 100, timeout=0)

    def forget() -> None:  # as received, before the telemetry memoised anything on them
        for message in messages:
            object.__setattr__(message, "_trace", None)

    def receive() -> None:  # a receive span per 100 messages, linked to their producers
        for start in range(0, PIECES, 100):
            with telemetry.receive("q") as receiving:
                receiving.received(messages[start : start + 100])

    def process() -> None:  # the process span, its context and the duration histogram
        for message in messages:
            with telemetry.process(message) as processing:
                processing.outcome = "completed"

    def settle() -> None:  # a complete span of a batch call, as Completions makes them
        for start in range(0, PIECES, 10):
            batch = [m.receipt for m in messages[start : start + 10]]
            with telemetry.settle_each("complete", "q", batch, [None] * 10) as settling:
                settling.ended([None] * 10)

    costs: dict[str, float] = {}
    for name, piece in (("receive_us", receive), ("process_us", process), ("settle_us", settle)):
        rounds = []
        for _ in range(5):
            forget()
            gc.collect()
            gc.disable()
            started = time.perf_counter()
            piece()
            rounds.append((time.perf_counter() - started) / PIECES * 1e6)
            gc.enable()
            sdk.flush()  # an empty span queue for the next round
        costs[name] = round(min(rounds), 1)
    await client.aclose()
    sdk.close()
    return costs


def pieces() -> Row:
    """Where the time goes, per message (no target: an explanation of the rows above)."""
    loop = asyncio.new_event_loop()
    try:
        found = {
            name: loop.run_until_complete(_pieces(setup()))
            for name, setup in (("no SDK", Sdk), ("metrics", _metrics), ("traces", _inline))
        }
    finally:
        loop.close()
    total = sum(found["traces"].values())
    return Row(
        "telemetry per message by part, SDK traces (inline) + metrics (least of 5)",
        total,
        "µs",
        detail={
            f"{name}: {part}": cost for name, parts in found.items() for part, cost in parts.items()
        },
    )


def main() -> list[Row]:
    rows = [*cost(), pieces()]
    report("telemetry", rows)
    print(f"\nwrote {save('telemetry', rows)}")
    return rows


if __name__ == "__main__":
    main()
