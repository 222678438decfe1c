"""Run every benchmark: ``.venv/bin/python -m bench`` (results in bench/results/*.json).

One suite: ``.venv/bin/python -m bench overhead``. ``bench.profile`` is not a suite (it
compares nothing) but runs the same way: ``.venv/bin/python -m bench profile``.
"""

from __future__ import annotations

import importlib
import sys

SUITES = [
    "bench.actors",
    "bench.bot",
    "bench.overhead",
    "bench.latency",
    "bench.sqs_raw",
    "bench.sqs_bot",
    "bench.crypto",
    "bench.telemetry",
]


def main() -> int:
    chosen = sys.argv[1:] or SUITES
    for name in chosen:
        module = importlib.import_module(name if "." in name else f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
