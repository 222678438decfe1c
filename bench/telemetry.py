"""The cost of telemetry: the bot's throughput with no OpenTelemetry SDK, and with one.

Same scenario as :mod:`bench.bot` (memory provider, sessions x messages, a
no-op handler), four ways in one run:

* **uninstrumented** — the client's telemetry replaced by :class:`Bare`, whose
  spans, metrics and propagation do nothing at all: what the bot would cost
  without instrumentation (the baseline of the no-SDK row);
* **no SDK** — the default: the API's no-op tracer and meter (the baseline of
  the SDK rows);
* **SDK, traces and metrics** — a ``TracerProvider`` with a simple span
  processor into an in-memory exporter, and a ``MeterProvider`` with an
  in-memory reader: every message gets a ``receive`` (per batch), ``process``
  and ``complete`` span and its metrics;
* **SDK, metrics only** — what many deployments run.

The providers are handed to the client (``tracer_provider=``/``meter_provider=``),
so the global OpenTelemetry state is not touched. An in-memory exporter is the
cheapest SDK set-up there is: a batch processor exporting over the network
costs more CPU per span, but off the event loop.

Run: ``.venv/bin/python -m bench telemetry``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN

import queue_runtime as qr
from bench.bot import _bot_run, _filled_client
from bench.harness import Row, interleaved, report, save
from queue_runtime.messages import Message, ReceivedMessage
from queue_runtime.telemetry import _UNTRACED, Processing, Receiving, SpanScope, Telemetry

SESSIONS = 200
PER_SESSION = 20


def _messages() -> list[qr.Message]:
    return [
        qr.Message(b"{}", attributes={"event_type": "bench"}, session_id=f"o/r/pull/{s}")
        for _ in range(PER_SESSION)
        for s in range(SESSIONS)
    ]


def _tracing() -> dict[str, Any]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return {"tracer_provider": tracer_provider, **_metrics()}


def _metrics() -> dict[str, Any]:
    return {"meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()])}


class Bare(Telemetry):
    """Telemetry that does nothing: no spans, no metrics, no propagation."""

    def send(self, queue: str, messages: Sequence[Message]) -> SpanScope:
        return _UNTRACED

    def inject(self, messages: list[Message]) -> list[Message]:
        return messages

    def receive(self, queue: str, session_id: str | None = None) -> Receiving:
        return _UNTRACED

    def settle(self, operation: str, queue: str, *, dead_letter: bool = False) -> SpanScope:
        return _UNTRACED

    def process(self, message: ReceivedMessage) -> Processing:
        return Processing(INVALID_SPAN, self, message.receipt.queue)

    def record_processing(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_operation(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_sent(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_received(self, *args: Any, **kwargs: Any) -> None:
        return None

    def count_settled(self, *args: Any, **kwargs: Any) -> None:
        return None


async def _run(telemetry: dict[str, Any], *, bare: bool = False) -> float:
    messages = _messages()
    client = await _filled_client(messages, **telemetry)
    if bare:
        client.telemetry = Bare(client.telemetry.system)
    gc.collect()  # the previous run's spans are garbage: not this run's to collect
    return await _bot_run(client, len(messages))


def cost() -> list[Row]:
    loop = asyncio.new_event_loop()
    try:
        medians = interleaved(
            {
                "bare": lambda: loop.run_until_complete(_run({}, bare=True)),
                "none": lambda: loop.run_until_complete(_run({})),
                "metrics": lambda: loop.run_until_complete(_run(_metrics())),
                "traces": lambda: loop.run_until_complete(_run(_tracing())),
            }
        )
    finally:
        loop.close()
    base = medians["none"]
    bare = medians["bare"]
    return [
        Row(
            f"bot throughput, no OpenTelemetry SDK vs uninstrumented ({SESSIONS} x {PER_SESSION})",
            base,
            "m/s",
            baseline=bare,
            ratio=base / bare,
            target="our own: >= 0.9",
            met=base / bare >= 0.9,
            detail={"cost_us_per_message": round((1 / base - 1 / bare) * 1e6, 2)},
        ),
        Row(
            "bot throughput, SDK: metrics (in-memory reader)",
            medians["metrics"],
            "m/s",
            baseline=base,
            ratio=medians["metrics"] / base,
            target="our own: >= 0.8",
            met=medians["metrics"] / base >= 0.8,
        ),
        Row(
            "bot throughput, SDK: traces + metrics (in-memory exporter)",
            medians["traces"],
            "m/s",
            baseline=base,
            ratio=medians["traces"] / base,
        ),
    ]


def main() -> list[Row]:
    rows = cost()
    report("telemetry", rows)
    print(f"\nwrote {save('telemetry', rows)}")
    return rows


if __name__ == "__main__":
    main()
