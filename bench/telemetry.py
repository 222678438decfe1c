"""The cost of telemetry: the bot's throughput with no OpenTelemetry SDK, and with one.

Same scenario as :mod:`bench.bot` (memory provider, sessions x messages, a
no-op handler), three ways in one run:

* **no SDK** — the default: the API's no-op tracer and meter (the baseline);
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
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import queue_runtime as qr
from bench.bot import _bot_run, _filled_client
from bench.harness import Row, interleaved, report, save

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


async def _run(telemetry: dict[str, Any]) -> float:
    messages = _messages()
    return await _bot_run(await _filled_client(messages, **telemetry), len(messages))


def cost() -> list[Row]:
    loop = asyncio.new_event_loop()
    try:
        medians = interleaved(
            {
                "none": lambda: loop.run_until_complete(_run({})),
                "metrics": lambda: loop.run_until_complete(_run(_metrics())),
                "traces": lambda: loop.run_until_complete(_run(_tracing())),
            }
        )
    finally:
        loop.close()
    base = medians["none"]
    return [
        Row(
            f"bot throughput, no OpenTelemetry SDK ({SESSIONS} x {PER_SESSION})",
            base,
            "m/s",
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
