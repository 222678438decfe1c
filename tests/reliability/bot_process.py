"""A bot in a process of its own, for the reliability proofs.

Configured like a deployed bot: the queue configuration comes from the
environment (``QUEUE_PROVIDER=aws`` with ``QUEUE_RUNTIME_AWS_*`` and AWS credentials
through the default chain, or ``QUEUE_PROVIDER=sqlite`` with
``QUEUE_RUNTIME_SQLITE_PATH``), the rest from the command line::

    python -m tests.reliability.bot_process QUEUE --log PATH [--handle-delay S]
        [--drain-timeout S] [--receive-wait S] [--max-in-flight N]
        [--faults RATE --fault-seed N] [--stats PATH] [--ready PATH] [--no-handler-circuit]

Its handler takes event type ``e`` with a JSON body ``{"seq": n}`` and
appends a ``start`` and an ``end`` line per handling (a message with a
``poison`` attribute only a ``start``: it raises) to the shared
:mod:`~tests.reliability.handling_log`, sleeping ``--handle-delay`` seconds in
between. ``bot.run()`` runs until SIGTERM/SIGINT; then the bot's counters (and
the fault counts) are written as JSON to ``--stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.clock import SystemClock
from queue_runtime.health import probe_queue
from queue_runtime.provider import (
    QueueProvider,
    SessionProvider,
    SupportsCompleteMany,
    create_provider,
)

from .handling_log import HandlingLog
from .transient_faults import CountingFaultInjector, FaultyBatchingConnection, fail_transiently

EVENT_TYPE = "e"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bot_process", description=__doc__.splitlines()[0])
    parser.add_argument("queue")
    parser.add_argument("--log", required=True, type=Path, help="the shared handling log")
    parser.add_argument("--handle-delay", type=float, default=0.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--receive-wait", type=float, default=1.0)
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument(
        "--max-delivery-count", type=int, default=None, help="default: the provider's limit"
    )
    parser.add_argument("--faults", type=float, default=0.0, help="share of failing calls")
    parser.add_argument("--fault-seed", type=int, default=None)
    parser.add_argument("--stats", type=Path, default=None, help="write the counters here")
    parser.add_argument(
        "--no-handler-circuit", action="store_true", help="every handler failure is charged"
    )
    parser.add_argument(
        "--ready", type=Path, default=None, help="created once connected, as the bot starts"
    )
    return parser.parse_args(argv)


class Poison(Exception):
    """What the handler raises for a message with a ``poison`` attribute."""


def recorder(log: HandlingLog, delay: float) -> type[Handler]:
    """The handler class: log the start, take ``delay`` seconds, log the end (a message
    with a ``poison`` attribute raises :class:`Poison` after its start instead)."""

    class Recorder(Handler):
        event_types: ClassVar[tuple[str, ...]] = (EVENT_TYPE,)

        async def handle(self, event: Event) -> None:
            seq = int(event.json()["seq"])
            session = event.session_id or "-"
            log.write("start", session, seq, event.message_id)
            if event.attributes.get("poison"):
                raise Poison("always fails")
            if delay > 0:
                await asyncio.sleep(delay)
            log.write("end", session, seq, event.message_id)

    return Recorder


async def run(args: argparse.Namespace, config: qr.QueueConfig) -> None:
    inner: QueueProvider | None = None
    faults: CountingFaultInjector | None = None
    if args.faults > 0:
        inner = create_provider(config.provider, SystemClock())
        assert isinstance(inner, SessionProvider)
        assert isinstance(inner, SupportsCompleteMany)
        faults = CountingFaultInjector(seed=args.fault_seed)
        fail_transiently(faults, args.faults)
        connection = FaultyBatchingConnection(inner, faults)  # an unreliable connection
        source = qr.QueueClient(connection, config)
    else:
        source = await qr.create_client(config)
    log = HandlingLog(args.log)
    bot = Bot(
        source,
        args.queue,
        [recorder(log, args.handle_delay)],
        drain_timeout=args.drain_timeout,
        receive_wait=args.receive_wait,
        max_in_flight=args.max_in_flight,
        max_delivery_count=args.max_delivery_count,
        retry=qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0),
        handler_circuit=qr.CircuitBreakerConfig(enabled=not args.no_handler_circuit),
    )
    try:
        if args.ready is not None:
            await probe_queue(source, args.queue)  # connected and answering, then ready
            args.ready.touch()  # what remains of start-up is the bot's own start
        await bot.run()  # until SIGTERM or SIGINT
    finally:
        await source.aclose()  # with faults, this only disconnects the faulty connection ...
        if inner is not None:
            await inner.aclose()  # ... so the provider behind it is closed here
        log.close()
    if args.stats is not None:
        report: dict[str, Any] = dataclasses.asdict(bot.stats())
        if faults is not None:
            report["provider_calls"] = faults.calls
            report["faults_injected"] = faults.injected
        args.stats.write_text(json.dumps(report, default=str))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")
    args = parse(argv)
    config = qr.load_config()  # blocking file/env reads: before the event loop starts
    asyncio.run(run(args, config))


if __name__ == "__main__":
    main()
