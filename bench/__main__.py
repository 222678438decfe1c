"""Run every benchmark: ``.venv/bin/python -m bench`` (results in bench/results/*.json).

One suite: ``.venv/bin/python -m bench overhead``; several: ``... -m bench bot latency``.
After the suites, every row with a target is summed up in one table. ``profile`` is
not a suite (it compares nothing) but runs the same way, with a scenario:
``.venv/bin/python -m bench profile overhead``.
"""

from __future__ import annotations

import importlib
import sys

from bench.harness import Row, report, save

SUITES = [
    "bench.actors",
    "bench.bot",
    "bench.overhead",
    "bench.latency",
    "bench.sqs_raw",
    "bench.sqs_bot",
    "bench.crypto",
    "bench.telemetry",
    "bench.sqlite",
    "bench.peers",
]


def main(argv: list[str]) -> int:
    if argv[:1] == ["profile"]:
        from bench import profile

        profile.main(*argv[1:2])
        return 0
    rows: list[Row] = []
    for name in argv or SUITES:
        module = importlib.import_module(name if "." in name else f"bench.{name}")
        rows.extend(module.main())
    judged = [row for row in rows if row.met is not None]
    if len(argv) != 1 and judged:
        report("summary: every row with a target", judged)
        print(f"\nwrote {save('summary', judged)}")
    missed = [row.name for row in judged if not row.met]
    print(
        f"\n{len(judged) - len(missed)} of {len(judged)} targets met"
        + (f"; missed: {'; '.join(missed)}" if missed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
