"""The demo: a GitHub bot on the in-memory provider, under a burst of webhook events.

Publishes events for hundreds of pull requests and issues (one session each,
plus push events per repository), some of which fail transiently and a few of
which are poison, runs a :class:`~queue_runtime.bot.Bot` with one handler
per event type, shows progress, and prints what happened: throughput,
per-session order, retries, and dead letters with their reasons.

Run it with ``scripts/demo`` (or ``python -m queue_runtime.cli.demo --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections import defaultdict
from typing import ClassVar

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler, PermanentFailure

QUEUE = "github-events"


class Ledger:
    """What the demo handlers did, to check the bot's promises afterwards."""

    def __init__(self) -> None:
        self.handled: dict[str, list[int]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)
        self.concurrent_in_session = 0
        self._busy: set[str] = set()

    def begin(self, event: Event) -> None:
        self.attempts[event.message_id] += 1
        key = event.session_id or event.message_id
        if key in self._busy:
            self.concurrent_in_session += 1
        self._busy.add(key)

    def end(self, event: Event, ok: bool) -> None:
        self._busy.discard(event.session_id or event.message_id)
        if ok and event.session_id is not None:
            self.handled[event.session_id].append(event.json()["sequence"])


def handlers(ledger: Ledger) -> list[type[Handler]]:
    """The demo's handler classes, recording into ``ledger`` (one per run)."""

    class GitHubHandler(Handler):
        """Shared demo behaviour: a little latency, flaky and poison events."""

        async def handle(self, event: Event) -> None:
            ledger.begin(event)
            ok = False
            try:
                payload = event.json()
                await asyncio.sleep(0.001)  # a call to the GitHub API, say
                if payload.get("poison"):
                    raise ValueError(f"cannot process {event.type} #{payload['number']}")
                if payload.get("flaky") and event.attempt == 1:
                    raise ConnectionError("GitHub API timed out")
                if payload.get("malformed"):
                    raise PermanentFailure("payload is missing 'repository'")
                ok = True
            finally:
                ledger.end(event, ok)

    class PullRequests(GitHubHandler):
        event_types: ClassVar[tuple[str, ...]] = ("pull_request",)

    class Issues(GitHubHandler):
        event_types: ClassVar[tuple[str, ...]] = ("issues",)

    class Pushes(GitHubHandler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

    return [PullRequests, Issues, Pushes]


def github_events(sessions: int, per_session: int, seed: int) -> list[qr.Message]:
    """Webhook-shaped messages; about 2 % flaky, 3 poison, 1 malformed."""
    rng = random.Random(seed)
    repos = [f"octo-org/service-{i}" for i in range(max(1, sessions // 20))]
    targets = [
        (rng.choice(repos), "pull" if n % 3 else "issues", n) for n in range(1, sessions + 1)
    ]
    total = sessions * per_session
    poison = set(rng.sample(range(total), 3))
    malformed = rng.randrange(total)
    messages = []
    for step in range(per_session):
        for index, (repo, kind, number) in enumerate(targets):
            serial = step * sessions + index
            event = "pull_request" if kind == "pull" else "issues"
            if step % 5 == 4:
                event = "push"
            payload = {
                "action": "synchronize" if event == "pull_request" else "edited",
                "number": number,
                "repository": {"full_name": repo},
                "sequence": step,
                "flaky": rng.random() < 0.02,
                "poison": serial in poison,
                "malformed": serial == malformed,
            }
            messages.append(
                qr.Message.from_json(
                    payload,
                    attributes={"event_type": event},
                    session_id=f"{repo}/{kind}/{number}",
                    correlation_id=f"delivery-{serial}",
                )
            )
    return messages


async def run(sessions: int, per_session: int, seed: int, mode: str) -> bool:
    config = qr.InMemoryConfig(session_mode=mode, max_queue_size=1_000_000)  # type: ignore[arg-type]
    client = await qr.create_client(config)
    events = github_events(sessions, per_session, seed)
    print(
        f"publishing {len(events):,} GitHub events for {sessions} pull requests and issues "
        f"({mode} sessions) ..."
    )
    await client.send_messages(QUEUE, events)
    retry = qr.RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)
    ledger = Ledger()
    bot = Bot(client, QUEUE, handlers(ledger), retry=retry, receive_wait=0.05)
    started = time.perf_counter()
    async with bot:
        last = 0.0
        while True:
            stats = bot.stats()
            if stats.completed + stats.dead_lettered >= len(events):
                break
            now = time.perf_counter()
            if now - last >= 0.25:
                print(
                    f"  {now - started:5.2f} s  completed {stats.completed:,}  "
                    f"retried {stats.retried}  dead-lettered {stats.dead_lettered}  "
                    f"sessions {stats.active_sessions}"
                )
                last = now
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stats = bot.stats()
    dead = await client.peek_dead_letters(QUEUE, max_messages=100)
    await client.aclose()

    in_order = all(seq == sorted(seq) for seq in ledger.handled.values())
    print()
    print(
        f"handled       {stats.completed:,} events in {elapsed:.2f} s "
        f"({stats.completed / elapsed:,.0f} events/s)"
    )
    print(
        f"order         {len(ledger.handled)} sessions, per-session order "
        f"{'verified' if in_order else 'VIOLATED'}, "
        f"{ledger.concurrent_in_session} overlaps within a session"
    )
    print(f"retries       {stats.retried} in place, {stats.abandoned} given back")
    print(f"dead-letters  {len(dead)}")
    for letter in dead:
        print(
            f"  {letter.session_id}: {letter.dead_letter_reason} - {letter.dead_letter_description}"
        )
    return in_order and ledger.concurrent_in_session == 0 and len(dead) == 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=400, help="pull requests and issues")
    parser.add_argument("--events-per-session", type=int, default=10)
    parser.add_argument("--mode", choices=["emulated", "native"], default="emulated")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="  [%(levelname)s] %(message)s")
    ok = asyncio.run(run(args.sessions, args.events_per_session, args.seed, args.mode))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
