"""Measuring: warm-up, interleaved repeats, medians, a table and a JSON file."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


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
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, rows: list[Row]) -> None:
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


def save(name: str, rows: list[Row]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "rows": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
