"""The cached attribute sets of ``messaging.process.duration``: one mapping per distinct
set, never shared between different values, and a bounded number of them."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from queue_runtime import telemetry
from queue_runtime.telemetry import Telemetry
from queue_runtime.telemetry.instrumentation import _MAX_PROCESSING_SETS


def _series(reader: InMemoryMetricReader) -> dict[frozenset[tuple[str, Any]], int]:
    """The processing histogram's series: attribute set -> number of recordings."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[frozenset[tuple[str, Any]], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == telemetry.PROCESS_DURATION:
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        found[frozenset((point.attributes or {}).items())] = point.count
    return found


def _labels(queue: str, **extra: str) -> frozenset[tuple[str, Any]]:
    return frozenset(
        {
            "queue": queue,
            "messaging.system": "memory",
            "messaging.destination.name": queue,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            **extra,
        }.items()
    )


def test_distinct_values_never_share_a_mapping() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    measured = Telemetry("memory", meter_provider=provider)
    recordings = [
        ("orders", None, "completed"),
        ("billing", None, "completed"),
        ("orders", "ValueError", "abandoned"),
        ("orders", "KeyError", "abandoned"),
        ("orders", None, "completed"),  # the first set again
        ("orders", "ValueError", "abandoned"),
    ]
    for queue, error, outcome in recordings:
        measured.record_processing(queue, 0.001, error, outcome)

    assert _series(reader) == {
        _labels("orders", **{"queue_runtime.outcome": "completed"}): 2,
        _labels("billing", **{"queue_runtime.outcome": "completed"}): 1,
        _labels("orders", **{"error.type": "ValueError", "queue_runtime.outcome": "abandoned"}): 2,
        _labels("orders", **{"error.type": "KeyError", "queue_runtime.outcome": "abandoned"}): 1,
    }
    sets = measured._processing_attributes.values()
    assert len({id(mapping) for mapping in sets}) == len(sets) == 4  # one mapping per set
    provider.shutdown()


def test_a_repeated_set_reuses_its_mapping_unchanged() -> None:
    measured = Telemetry("memory", meter_provider=MeterProvider())
    first = measured._processing("orders", None, "completed")
    measured.record_processing("orders", 0.001, None, "completed")
    measured.record_processing("orders", 0.002, "ValueError", "abandoned")

    assert measured._processing_attributes[("orders", None, "completed")] is first
    assert first == dict(_labels("orders", **{"queue_runtime.outcome": "completed"}))


def test_the_cache_is_bounded_and_free_text_is_one_series() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    measured = Telemetry("memory", meter_provider=provider)
    for n in range(2_000):
        measured.record_processing("orders", 0.001, f"timed out after {n} s", "abandoned")
    beyond = _MAX_PROCESSING_SETS + 100  # (and below the SDK's cardinality limit)
    for n in range(beyond):  # distinct identifiers: each a set of its own
        measured.record_processing("orders", 0.001, f"Error{n}", "abandoned")

    assert len(measured._processing_attributes) <= _MAX_PROCESSING_SETS
    series = _series(reader)
    other = _labels("orders", **{"error.type": "_OTHER", "queue_runtime.outcome": "abandoned"})
    assert series[other] == 2_000  # free text never makes a series (nor a cache entry) per value
    outcome = {"queue_runtime.outcome": "abandoned"}
    last = _labels("orders", **{"error.type": f"Error{beyond - 1}", **outcome})
    assert series[last] == 1  # a set beyond the bound is still recorded, with its own values
    assert sum(series.values()) == 2_000 + beyond
    provider.shutdown()
