"""Measuring: warm-up, interleaved repeats, medians, percentiles, a table and a JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

RESULTS = Path(__file__).parent / "results"

T = TypeVar("T")


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def interleaved(
    candidates: dict[str, Callable[[], float]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Run each candidate ``warmup`` times, then ``repeats`` rounds in turn; return medians."""
    runs = interleaved_runs(candidates, repeats=repeats, warmup=warmup)
    return {name: statistics.median(values) for name, values in runs.items()}


def interleaved_runs(
    candidates: dict[str, Callable[[], T]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, list[T]]:
    """Like :func:`interleaved`, but every measured run's result, for results that are
    more than one number (a latency distribution, request counts)."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[T]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            samples[name].append(run())
    return samples


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with ``fraction`` of all at or below it.

    Example:
        >>> percentile([5.0, 1.0, 4.0, 2.0, 3.0], 0.5), percentile(range(1, 1001), 0.999)
        (3.0, 999)
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def report(title: str, rows: list[Row]) -> None:
    """Print the table, then each row's details."""
    print(f"\n{title}")
    print(f"{'benchmark':58} {'value':>14} {'baseline':>12} {'ratio':>8}  target")
    for row in rows:
        baseline = f"{row.baseline:,.1f}" if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        verdict = "" if row.met is None else ("  ok" if row.met else "  MISSED")
        print(
            f"{row.name:58} {row.value:>11,.1f} {row.unit:<3}"
            f"{baseline:>12} {ratio:>8}  {row.target}{verdict}"
        )
    for row in rows:
        for key, value in row.detail.items():
            shown = f"{value:,.4g}" if isinstance(value, float) else value
            print(f"  {row.name}: {key} = {shown}")


def save(name: str, rows: list[Row]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),  # others share these machines: how busy it was
        },
        "rows": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
