"""The memory fault soak, as a function and a command: one bot on the in-memory
provider, a share of all provider calls failing transiently (see
:mod:`.transient_faults`), valid messages mixed with poison ones.

The handler records every call by message id: a valid message always
succeeds, a poison message (``poison`` attribute) always raises
:class:`Poison`. So a valid message in the DLQ was dead-lettered without a
handler failure — the number this soak exists to keep at zero.

Measure several seeds from the repository root::

    .venv/bin/python -m tests.reliability.memory_soak --seeds 1 2 3 4 5 --mode emulated native
    .venv/bin/python -m tests.reliability.memory_soak --seeds 1 2 3 4 5 --poison-every 0

(``--poison-every 0``: no poison, the mix of the first measurement in issue #16.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import queue_runtime as qr
from queue_runtime.bot import Bot, BotStats, Event, Handler
from queue_runtime.providers.memory import InMemoryProvider

from .transient_faults import CountingFaultInjector, fail_transiently
from .workload import messages, poisoned

MESSAGES = 10_000
SESSIONS = 500
FAULT_RATE = 0.3
POISON_EVERY = 50
"""Every 50th message, counted session by session, is poison: its handler always raises."""
MAX_DELIVERY_COUNT = 5
"""The bot's: a message is dead-lettered after this many failed handlings."""
ATTEMPTS = 2
"""Handler calls per handling (the bot's retry policy: one retry in place)."""
PROVIDER_MAX_DELIVERY_COUNT = 10
"""The provider's native limit: deliveries without completion before it dead-letters
on its own. Headroom above the bot's limit, as docs/reliability.md recommends."""


class Poison(Exception):
    """What the handler raises for a poison message."""


@dataclass
class SoakResult:
    mode: str
    seed: int
    sent: int
    poison: set[str]
    valid: set[str]
    calls: Counter[str]
    """Handler calls by message id."""
    failures: Counter[str]
    """Handler calls that raised, by message id."""
    handled: set[str]
    """Message ids whose handler succeeded at least once."""
    dead: Counter[str]
    """Message ids in the DLQ, with how often each is there."""
    reasons: dict[str, str]
    stats: BotStats
    faults: int
    provider_calls: int
    seconds: float
    dead_without_failure: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.dead_without_failure = {m for m in self.dead if self.failures[m] == 0}

    def line(self) -> str:
        poison_dead = sum(1 for m in self.poison if m in self.dead)
        return (
            f"memory/{self.mode} seed {self.seed}: {self.sent} messages "
            f"({len(self.poison)} poison) in {self.seconds:.1f} s, {self.faults} faults in "
            f"{self.provider_calls} calls ({self.faults / max(1, self.provider_calls):.0%}); "
            f"DLQ {sum(self.dead.values())}: {poison_dead} poison, "
            f"{len(self.dead_without_failure)} without a handler failure; "
            f"poison handler calls {sorted({self.calls[m] for m in self.poison})}; "
            f"received {self.stats.received} = completed {self.stats.completed} + abandoned "
            f"{self.stats.abandoned} + dead-lettered {self.stats.dead_lettered} + lost locks "
            f"{self.stats.lost_locks} + settle failures {self.stats.settle_failures}"
        )


async def run_memory_soak(
    mode: str,
    seed: int,
    *,
    count: int = MESSAGES,
    sessions: int = SESSIONS,
    poison_every: int = POISON_EVERY,
    provider_max_delivery_count: int = PROVIDER_MAX_DELIVERY_COUNT,
    fault_rate: float = FAULT_RATE,
    deadline: float = 150.0,
) -> SoakResult:
    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    handled: set[str] = set()

    class Record(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("e",)

        async def handle(self, event: Event) -> None:
            calls[event.message_id] += 1
            if event.attributes.get("poison"):
                failures[event.message_id] += 1
                raise Poison("always fails")
            handled.add(event.message_id)

    sent = messages(sessions, count // sessions)
    if poison_every:
        sent = poisoned(sent, poison_every)
    poison = {m.message_id for m in sent if m.attributes.get("poison")}
    faults = CountingFaultInjector(seed=seed)
    config = qr.InMemoryConfig(
        session_mode=mode,  # type: ignore[arg-type]
        lock_duration=1.0,
        session_lock_duration=1.0,
        max_delivery_count=provider_max_delivery_count,
    )
    provider = InMemoryProvider(config, faults=faults)
    await qr.QueueClient(provider).send_messages("q", sent)
    client = qr.QueueClient(
        provider,
        qr.QueueConfig(
            retry=qr.RetryPolicy(initial_delay=0.01, max_delay=0.05),
            circuit_breaker=qr.CircuitBreakerConfig(enabled=False),
        ),
    )
    fail_transiently(faults, fault_rate)
    retry = qr.RetryPolicy(max_attempts=ATTEMPTS, initial_delay=0.01, jitter=0.0)
    bot = Bot(
        client,
        "q",
        [Record],
        retry=retry,
        receive_wait=0.05,
        max_delivery_count=MAX_DELIVERY_COUNT,
        # the poison messages must not open the handler's circuit: every failure counts
        handler_circuit=qr.CircuitBreakerConfig(enabled=False),
    )
    began = time.monotonic()
    await bot.start()
    try:
        while provider.stats("q").active or provider.stats("q").in_flight:
            if time.monotonic() - began > deadline:
                raise AssertionError(f"stalled: {provider.stats('q')} {bot.stats()}")
            await asyncio.sleep(0.05)
    finally:
        await bot.stop()
        faults.clear()
    letters = provider.dead_letter_messages("q")
    return SoakResult(
        mode=mode,
        seed=seed,
        sent=len(sent),
        poison=poison,
        valid={m.message_id for m in sent} - poison,
        calls=calls,
        failures=failures,
        handled=handled,
        dead=Counter(m.message_id for m in letters),
        reasons={m.message_id: m.dead_letter_reason or "" for m in letters},
        stats=bot.stats(),
        faults=faults.injected,
        provider_calls=faults.calls,
        seconds=time.monotonic() - began,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--mode", nargs="+", default=["emulated", "native"])
    parser.add_argument("--poison-every", type=int, default=POISON_EVERY)
    parser.add_argument(
        "--provider-max-delivery-count", type=int, default=PROVIDER_MAX_DELIVERY_COUNT
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the faults log thousands of warnings
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for mode in args.mode:
        for seed in args.seeds:
            result = asyncio.run(
                run_memory_soak(
                    mode,
                    seed,
                    poison_every=args.poison_every,
                    provider_max_delivery_count=args.provider_max_delivery_count,
                )
            )
            print(result.line(), f"(load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
