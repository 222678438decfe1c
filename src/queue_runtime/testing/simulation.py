"""Deterministic simulation: seeded runs of a bot under publishing, handler
latency and failures, provider faults and process crashes — then the invariants.

A :class:`Scenario` is a seed plus a few sizes and rates; :meth:`Scenario.from_seed`
draws them from the seed, so a range of seeds covers many shapes of run. One
run (:func:`run_scenario`) happens on a fresh virtual-time loop through a
:class:`~queue_runtime.testing.BotKit`:

* ``messages`` events over ``sessions`` session ids (a share without one),
  published at random times within ``window`` virtual seconds;
* a probe handles them with random latency (up to ``max_latency``) and fails
  a share ``failure_rate`` of its calls; a share ``poison_share`` of the
  messages always fails (they must end in the dead-letter queue);
* a share ``fault_rate`` of the bot's provider calls misbehaves during the
  window — failed, answer lost, lock lost or slow, a quarter each (the
  operations whose answers get lost are :data:`DROPPED`);
* the bot's process crashes ``crashes`` times at random moments and comes
  back after a random downtime;
* after the window the faults stop; the kit drains and the invariants of
  :mod:`~queue_runtime.testing.invariants` are checked, plus: every poison
  message is dead-lettered.

Everything random comes from the seed, and the loop's clock and the
provider's clock start at fixed values, so a scenario replays exactly.
:func:`simulate` runs many; on the first failure it shrinks the scenario
(fewer messages, sessions, crashes, lower rates) while it still fails, and
raises :class:`SimulationFailure` naming the seed, the smallest failing
scenario and the call that reproduces it.

Example:
    >>> from queue_runtime.testing.simulation import Scenario, run_scenario
    >>> result = run_scenario(Scenario(seed=7, messages=6, sessions=2, crashes=1))
    >>> result.ok, result.stats.published, result.stats.crashes
    (True, 6, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import queue_runtime as qr
from queue_runtime.bot import Event, PermanentFailure
from queue_runtime.testing.kit import BotKit, KitStats
from queue_runtime.testing.probes import Probe
from queue_runtime.testing.virtual import run

__all__ = [
    "Scenario",
    "ScenarioResult",
    "SimulationFailure",
    "SimulationReport",
    "run_scenario",
    "shrink",
    "simulate",
]

EVENT_TYPES = ("opened", "edited", "closed")
DRAIN_TIMEOUT = 3600.0
"""Virtual seconds a run may take to drain after its window before it counts as stuck."""
MAX_SHRINK_RUNS = 150
LOCK_DURATION = 10.0
SESSION_LOCK_DURATION = 20.0
"""Short locks (the provider's defaults are 30 s and 300 s): a crashed bot's messages
come back sooner, so a run covers fewer virtual seconds and costs less real time."""
DROPPED = (
    "send",
    "receive",
    "complete",
    "abandon",
    "dead_letter",
    "renew_lock",
    "accept_session",
    "session_receive",
    "renew_session_lock",
    "close_session",
)
"""Operations whose answers get lost."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One simulated run; its ``repr`` is the code that builds it again."""

    seed: int
    session_mode: Literal["emulated", "native"] = "emulated"
    messages: int = 20
    sessions: int = 4
    unordered_share: float = 0.0
    failure_rate: float = 0.1
    poison_share: float = 0.05
    fault_rate: float = 0.1
    max_latency: float = 2.0
    crashes: int = 1
    window: float = 30.0

    def __post_init__(self) -> None:
        if self.session_mode not in ("emulated", "native"):
            raise ValueError(
                f"session_mode must be 'emulated' or 'native', got {self.session_mode!r}"
            )
        for name in ("messages", "sessions", "crashes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.sessions < 1:
            raise ValueError("sessions must be at least 1")
        if self.session_mode == "native" and self.unordered_share:
            raise ValueError(
                "unordered_share must be 0 with native sessions: a session-enabled queue "
                "(Azure Service Bus) takes only messages with a session id"
            )
        for name in ("unordered_share", "failure_rate", "poison_share", "fault_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("max_latency", "window"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(
                    f"{name} must be a non-negative number, got {getattr(self, name)!r}"
                )

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        """A scenario whose shape is drawn from ``seed`` (the run's events too)."""
        rng = random.Random(f"scenario/{seed}")
        mode: Literal["emulated", "native"] = rng.choice(("emulated", "native"))
        unordered = rng.choice((0.0, 0.0, 0.2))
        return cls(
            seed=seed,
            session_mode=mode,
            messages=rng.randint(1, 30),
            sessions=rng.randint(1, 6),
            unordered_share=unordered if mode == "emulated" else 0.0,
            failure_rate=rng.choice((0.0, 0.1, 0.3)),
            poison_share=rng.choice((0.0, 0.0, 0.1)),
            fault_rate=rng.choice((0.0, 0.05, 0.15, 0.3)),
            max_latency=rng.choice((0.0, 0.5, 3.0)),
            crashes=rng.choice((0, 1, 1, 2)),
            window=rng.choice((10.0, 30.0, 60.0)),
        )

    def smaller(self) -> Iterator[Scenario]:
        """Scenarios one step simpler than this one, the boldest steps first."""
        replace = dataclasses.replace
        if self.crashes:
            yield replace(self, crashes=0)
            yield replace(self, crashes=self.crashes - 1)
        for name in ("fault_rate", "failure_rate", "poison_share", "unordered_share"):
            if getattr(self, name):
                yield replace(self, **{name: 0.0})
                yield replace(self, **{name: round(getattr(self, name) / 2, 4)})
        if self.max_latency:
            yield replace(self, max_latency=0.0)
        for name, least in (("messages", 1), ("sessions", 1)):
            value = getattr(self, name)
            for smaller in sorted({least, value // 2, value - 1}):
                if least <= smaller < value:
                    yield replace(self, **{name: smaller})
        if self.window > 1:
            yield replace(self, window=round(self.window / 2, 3))


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What one run did, and which invariants it broke."""

    scenario: Scenario
    violations: tuple[str, ...]
    stats: KitStats
    virtual_seconds: float
    trace: str
    """A digest of every handler call (what, when, how it ended): equal for equal runs."""

    @property
    def ok(self) -> bool:
        return not self.violations

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` listing the broken invariants, if any."""
        if self.violations:
            raise AssertionError(
                f"{self.scenario!r} broke:\n" + "\n".join(f"- {v}" for v in self.violations)
            )


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Totals over the scenarios :func:`simulate` ran (all passed)."""

    scenarios: int
    messages: int
    crashes: int
    faults_injected: int
    dead_lettered: int
    virtual_seconds: float
    real_seconds: float


class SimulationFailure(AssertionError):
    """A scenario broke an invariant; the message says how to reproduce it."""

    def __init__(self, failed: ScenarioResult, minimal: ScenarioResult, shrink_runs: int) -> None:
        self.failed = failed
        self.minimal = minimal
        lines = [
            f"simulation seed {failed.scenario.seed} broke {len(failed.violations)} invariant(s):",
            *(f"  - {v}" for v in failed.violations),
            f"in {failed.scenario!r}",
            f"smallest scenario that still fails (found in {shrink_runs} shrinking runs):",
            f"  {minimal.scenario!r}",
            *(f"  - {v}" for v in minimal.violations),
            "reproduce with:",
            "  from queue_runtime.testing.simulation import Scenario, run_scenario",
            f"  run_scenario({minimal.scenario!r}).assert_ok()",
        ]
        super().__init__("\n".join(lines))


def run_scenario(scenario: Scenario) -> ScenarioResult:
    """Run ``scenario`` on a fresh virtual-time loop and check the invariants.

    Must be called outside a running event loop (it runs its own).
    """
    return run(_run(scenario))


def simulate(
    seeds: Iterable[int],
    *,
    scenario_for: Callable[[int], Scenario] = Scenario.from_seed,
) -> SimulationReport:
    """Run the scenario of every seed; on the first that fails, shrink it and raise
    :class:`SimulationFailure`. The runtime's logging is quieted while it runs
    (thousands of runs under faults would log a great deal)."""
    started = time.perf_counter()
    totals = dict.fromkeys(("scenarios", "messages", "crashes", "faults", "dead"), 0)
    virtual = 0.0
    with _quiet():
        for seed in seeds:
            result = run_scenario(scenario_for(seed))
            if not result.ok:
                minimal, runs = shrink(result)
                raise SimulationFailure(result, minimal, runs)
            totals["scenarios"] += 1
            totals["messages"] += result.stats.published
            totals["crashes"] += result.stats.crashes
            totals["faults"] += result.stats.faults_injected
            totals["dead"] += result.stats.queue.dead_lettered
            virtual += result.virtual_seconds
    return SimulationReport(
        scenarios=totals["scenarios"],
        messages=totals["messages"],
        crashes=totals["crashes"],
        faults_injected=totals["faults"],
        dead_lettered=totals["dead"],
        virtual_seconds=virtual,
        real_seconds=time.perf_counter() - started,
    )


def shrink(
    failed: ScenarioResult, *, max_runs: int = MAX_SHRINK_RUNS
) -> tuple[ScenarioResult, int]:
    """The smallest scenario (same seed) found that still breaks an invariant, and
    how many runs the search took: greedily take the first simpler scenario that
    still fails, until none does or ``max_runs`` is spent."""
    current, runs = failed, 0
    progress = True
    while progress and runs < max_runs:
        progress = False
        for candidate in current.scenario.smaller():
            if runs >= max_runs:
                break
            runs += 1
            result = run_scenario(candidate)
            if not result.ok:
                current, progress = result, True
                break
    return current, runs


# -- one run ----------------------------------------------------------------------


async def _run(scenario: Scenario) -> ScenarioResult:
    rng = random.Random(f"run/{scenario.seed}")
    loop = asyncio.get_running_loop()
    poison = {
        f"m{i}"
        for i in range(scenario.messages)
        if _chance(scenario.seed, f"poison/{i}") < scenario.poison_share
    }
    probe = Probe(*EVENT_TYPES, name="Simulated")
    probe.call(_behaviour(scenario, poison), times=None)
    kit = BotKit(
        [probe],
        memory=qr.InMemoryConfig(
            session_mode=scenario.session_mode,
            lock_duration=LOCK_DURATION,
            session_lock_duration=SESSION_LOCK_DURATION,
        ),
        seed=scenario.seed,
        retry=qr.RetryPolicy(max_attempts=3, initial_delay=0.5, jitter=0.0),
    )
    plan = _plan(scenario, rng)
    _inject_faults(kit, scenario.fault_rate)
    violations: list[str] = []
    async with kit:
        started = loop.time()
        for at, action in plan:
            await asyncio.sleep(max(0.0, started + at - loop.time()))
            await action(kit)
        await asyncio.sleep(max(0.0, started + scenario.window - loop.time()))
        kit.faults.clear()
        try:
            await kit.drain(timeout=DRAIN_TIMEOUT, poll=1.0)
        except AssertionError as stuck:
            violations.append(f"stuck: {stuck}")
    violations.extend(kit.check_invariants())
    dead = {m.message_id for m in kit.dead_letters()}
    violations.extend(
        f"poison message {message_id!r} was not dead-lettered"
        for message_id in sorted(poison - dead)
    )
    return ScenarioResult(
        scenario=scenario,
        violations=tuple(violations),
        stats=kit.stats(),
        virtual_seconds=loop.time(),
        trace=_trace(kit),
    )


Step = Callable[[BotKit], Awaitable[None]]


def _plan(scenario: Scenario, rng: random.Random) -> list[tuple[float, Step]]:
    """When to publish each message and when to crash, in time order."""
    plan: list[tuple[float, int, Step]] = []
    times = sorted(rng.uniform(0, scenario.window) for _ in range(scenario.messages))
    for index, at in enumerate(times):
        unordered = rng.random() < scenario.unordered_share
        session = None if unordered else f"s{rng.randrange(scenario.sessions)}"
        event_type = rng.choice(EVENT_TYPES)
        plan.append((at, len(plan), _publish(index, event_type, session)))
    for _ in range(scenario.crashes):
        at = rng.uniform(0, scenario.window)
        downtime = rng.choice((0.0, rng.uniform(0, 10)))
        plan.append((at, len(plan), _restart(downtime)))
    plan.sort(key=lambda entry: entry[:2])
    return [(at, action) for at, _, action in plan]


def _publish(index: int, event_type: str, session: str | None) -> Step:
    async def publish(kit: BotKit) -> None:
        await kit.publish(event_type, {"n": index}, session_id=session, message_id=f"m{index}")

    return publish


def _restart(downtime: float) -> Step:
    async def restart(kit: BotKit) -> None:
        await kit.restart(downtime)

    return restart


def _behaviour(scenario: Scenario, poison: set[str]) -> Callable[[Event], Awaitable[None]]:
    """The probe's handling: seeded by message, delivery and attempt (not by call
    order), so that a call does the same whatever ran before it."""

    async def handle(event: Event) -> None:
        key = f"{event.message_id}/{event.delivery_count}/{event.attempt}"
        await asyncio.sleep(_chance(scenario.seed, f"latency/{key}") * scenario.max_latency)
        if event.message_id in poison:
            if _chance(scenario.seed, f"poison-kind/{event.message_id}") < 0.5:
                raise PermanentFailure(f"poison {event.message_id}")
            raise ValueError(f"poison {event.message_id} fails every time")
        if _chance(scenario.seed, f"failure/{key}") < scenario.failure_rate:
            raise ConnectionError(f"flaky downstream for {event.message_id}")

    return handle


def _inject_faults(kit: BotKit, rate: float) -> None:
    if not rate:
        return
    share = rate / 4
    kit.faults.fail_randomly("*", share)
    for operation in DROPPED:
        kit.faults.drop_randomly(operation, share)
    kit.faults.lose_lock_randomly(share)
    kit.faults.delay_randomly("*", share, 0.1, max_seconds=3.0)


def _chance(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key``."""
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _trace(kit: BotKit) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for call in kit.journal.events:
        digest.update(
            f"{call.message_id}|{call.delivery_count}|{call.attempt}|{call.incarnation}|"
            f"{call.at:.6f}|{call.outcome}|{call.ended_at}\n".encode()
        )
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("queue_runtime")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
