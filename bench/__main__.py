"""Run every benchmark: ``.venv/bin/python -m bench`` (results in bench/results/*.json)."""

from __future__ import annotations

import importlib
import sys

SUITES = ["bench.actors", "bench.bot", "bench.sqs_raw", "bench.crypto"]


def main() -> int:
    chosen = sys.argv[1:] or SUITES
    for name in chosen:
        module = importlib.import_module(name if "." in name else f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
