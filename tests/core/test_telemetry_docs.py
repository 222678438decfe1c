"""docs/telemetry.md names the instruments the code makes, with their Prometheus names."""

from __future__ import annotations

import re
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import queue_runtime as qr
from queue_runtime import telemetry
from queue_runtime.providers.memory import InMemoryProvider

DOC = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
ROW = re.compile(r"^\| `([a-z_.]+)` \| ([^|]+) \|[^|]*\| `([a-z_]+)`", re.MULTILINE)


def documented() -> dict[str, tuple[str, str]]:
    """Instrument -> (type and unit, Prometheus name), from the metrics table."""
    table = DOC[DOC.index("| instrument |") :].split("\n\n", 1)[0]
    return {name: (kind.strip(), prometheus) for name, kind, prometheus in ROW.findall(table)}


def prometheus_name(name: str, kind: str) -> str:
    """The OpenTelemetry -> Prometheus translation for our instruments."""
    base = name.replace(".", "_")
    if kind.endswith("`s`"):
        base += "_seconds"
    if kind.startswith("counter"):
        base += "_total"
    return base


async def test_the_metrics_table_lists_every_instrument_the_code_makes() -> None:
    reader = InMemoryMetricReader()
    client = qr.QueueClient(InMemoryProvider(), meter_provider=MeterProvider([reader]))
    observed = client.telemetry.observe(
        "jobs",
        active_sessions=lambda: 1,
        in_flight=lambda: 1,
        circuits=lambda: {"provider": "closed"},
    )
    await client.send_message("jobs", qr.Message(b"x"))
    message = await client.receive_message("jobs", timeout=0)
    assert message is not None
    await client.complete_message(message.receipt)
    data = reader.get_metrics_data()
    made = {
        metric.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    observed.close()
    await client.aclose()

    names = {
        value
        for key, value in vars(telemetry).items()
        if key.isupper() and isinstance(value, str) and value in documented()
    }
    assert made <= set(documented())  # nothing made goes undocumented ...
    assert names == set(documented())  # ... and every documented one is a name in the code


def test_the_prometheus_names_follow_the_translation() -> None:
    rows = documented()
    assert len(rows) >= 11
    for name, (kind, prometheus) in rows.items():
        assert prometheus == prometheus_name(name, kind), name
