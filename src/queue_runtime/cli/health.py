"""``health QUEUE``: can this configuration reach the queue, and how is its DLQ?

Probes the provider without consuming a message (``queue_info``) and checks
the DLQ depth where the provider can tell (``--max-dead-letters`` makes a
deeper DLQ Degraded). This checks the queue from the outside; a running bot's
own report (stall watchdog, circuits, handler restarts) comes from its
``/healthz`` and ``/readyz`` endpoint. Exit code 0 Healthy, 5 Degraded,
1 Unhealthy.

Example:
    >>> from queue_runtime.health import HealthStatus
    >>> EXIT_CODES[HealthStatus.DEGRADED]
    <ExitCode.DEGRADED: 5>
"""

from __future__ import annotations

import argparse
from typing import Any

from queue_runtime.health import (
    HealthReport,
    HealthStatus,
    check_dead_letters,
    check_provider,
    probe_queue,
)

from .context import Context
from .messages import non_negative_count, seconds
from .output import ExitCode

__all__ = ["EXIT_CODES", "add_commands"]

EXIT_CODES = {
    HealthStatus.HEALTHY: ExitCode.OK,
    HealthStatus.DEGRADED: ExitCode.DEGRADED,
    HealthStatus.UNHEALTHY: ExitCode.FAILED,
}


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser(
        "health",
        parents=[common],
        help="check that the provider answers for a queue, and its DLQ depth",
        description=(__doc__ or "").split("\n\n")[1].replace("``", ""),
    )
    command.add_argument("queue", help="queue name")
    command.add_argument(
        "--timeout", type=seconds, default=5.0, help="seconds to wait for the provider (5)"
    )
    command.add_argument(
        "--max-dead-letters",
        type=non_negative_count,
        metavar="N",
        help="Degraded when the DLQ holds more than N (where the provider can tell)",
    )
    command.set_defaults(func=check_health)


async def check_health(args: argparse.Namespace, context: Context) -> int:
    client = await context.client()
    probe = await probe_queue(client, args.queue, timeout=args.timeout)
    checks = [check_provider(probe)]
    if probe.info is not None:
        checks.append(
            check_dead_letters(probe.info.dead_letter_depth, max_depth=args.max_dead_letters)
        )
    report = HealthReport(tuple(checks))
    width = max(len(check.name) for check in report.checks)
    lines = [report.status.label]
    lines.extend(
        f"  {check.name:<{width}}  {check.status.label:<9}  {check.detail}"
        for check in report.checks
    )
    context.output.result(report.to_dict(), lines)
    return EXIT_CODES[report.status]
