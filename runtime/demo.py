"""The demo: a burst of GitHub webhook events through the in-memory provider.

Publishes events for many pull requests and issues (one session each), lets
a few concurrent consumers receive, "handle" and settle them, and prints what
happened: throughput, per-session order, retries and dead letters.

Run it with ``scripts/demo`` (or ``python -m queue_runtime.demo --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import queue_runtime as qr

QUEUE = "github-events"
POISON = "poison"


@dataclass
class Tally:
    handled: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_type: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    completed: int = 0


def github_events(sessions: int, per_session: int, poison: int, seed: int) -> list[qr.Message]:
    """Webhook-shaped messages: ``pull_request``/``issues`` per session, ``push`` per repo."""
    rng = random.Random(seed)
    repos = [f"octo-org/service-{i}" for i in range(max(1, sessions // 20))]
    targets = []
    for n in range(1, sessions + 1):
        kind = "pull" if n % 3 else "issues"
        targets.append((rng.choice(repos), kind, n))
    poisoned = set(rng.sample(range(sessions * per_session), poison))
    messages = []
    for step in range(per_session):
        for index, (repo, kind, number) in enumerate(targets):
            event = "pull_request" if kind == "pull" else "issues"
            if step % 5 == 4:
                event = "push"
            payload = {
                "action": "synchronize" if event == "pull_request" else "edited",
                "number": number,
                "repository": {"full_name": repo},
                "sequence": step,
            }
            attributes = {"event_type": event}
            if step * sessions + index in poisoned:
                attributes[POISON] = "true"
            messages.append(
                qr.Message.from_json(
                    payload,
                    attributes=attributes,
                    session_id=f"{repo}/{kind}/{number}",
                    correlation_id=f"delivery-{step}-{index}",
                )
            )
    return messages


async def consume(client: qr.QueueClient, tally: Tally, stop: asyncio.Event) -> None:
    """Receive, handle and settle until ``stop`` is set."""
    while not stop.is_set():
        batch = await client.receive_messages(QUEUE, 10, timeout=0.05)
        for message in batch:
            if message.attributes.get(POISON):
                tally.retries += 1
                await client.abandon_message(message.receipt)  # DLQ after max deliveries
                continue
            assert message.session_id is not None
            tally.handled[message.session_id].append(message.json()["sequence"])
            tally.by_type[message.attributes["event_type"]] += 1
            await client.complete_message(message.receipt)
            tally.completed += 1


async def run(sessions: int, per_session: int, poison: int, consumers: int, seed: int) -> bool:
    client = await qr.create_client(qr.InMemoryConfig(max_queue_size=1_000_000))
    async with client:
        events = github_events(sessions, per_session, poison, seed)
        print(
            f"publishing {len(events)} GitHub events for {sessions} pull requests and issues "
            f"({poison} poison) ..."
        )
        started = time.perf_counter()
        await client.send_messages(QUEUE, events)
        tally, stop = Tally(), asyncio.Event()
        workers = [asyncio.create_task(consume(client, tally, stop)) for _ in range(consumers)]
        expected = len(events) - poison
        try:
            ticks = 0
            while tally.completed < expected or len(await client.peek_dead_letters(QUEUE)) < poison:
                await asyncio.sleep(0.02)
                ticks += 1
                if ticks % 25 == 0:
                    print(f"  handled {tally.completed}/{expected}, retries {tally.retries}")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
        dead = await client.peek_dead_letters(QUEUE, max_messages=poison + 10)

    in_order = all(seq == sorted(seq) for seq in tally.handled.values())
    print()
    print(
        f"handled      {tally.completed} events in {elapsed:.2f} s "
        f"({tally.completed / elapsed:,.0f} events/s, {consumers} consumers)"
    )
    print(f"by type      {dict(tally.by_type)}")
    print(
        f"sessions     {len(tally.handled)}, per-session order "
        f"{'verified' if in_order else 'VIOLATED'}"
    )
    print(f"retries      {tally.retries} (abandoned poison deliveries)")
    print(f"dead-letters {len(dead)}")
    for letter in dead:
        print(
            f"  {letter.session_id}: {letter.dead_letter_reason} "
            f"after {letter.delivery_count} deliveries ({letter.dead_letter_description})"
        )
    return in_order and tally.completed == expected and len(dead) == poison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=300, help="pull requests and issues")
    parser.add_argument("--events-per-session", type=int, default=10)
    parser.add_argument("--poison", type=int, default=3, help="events that always fail")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    ok = asyncio.run(
        run(args.sessions, args.events_per_session, args.poison, args.consumers, args.seed)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
