"""Deterministic simulation: many seeded runs keep the invariants; a broken bot is
caught, shrunk to a small scenario and reported with the call that reproduces it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from queue_runtime.bot.sessions import SessionSupervisor
from queue_runtime.messages import ReceivedMessage
from queue_runtime.testing.simulation import (
    Scenario,
    SimulationFailure,
    run_scenario,
    simulate,
)

SEEDS = 1000


def test_a_thousand_seeded_scenarios_keep_every_invariant() -> None:
    report = simulate(range(SEEDS))

    assert report.scenarios == SEEDS
    # the runs did exercise what they are about
    assert report.messages > 10 * SEEDS
    assert report.crashes > SEEDS / 2
    assert report.faults_injected > 5 * SEEDS
    assert report.dead_lettered > SEEDS / 10
    assert report.virtual_seconds > 30 * SEEDS


def test_a_scenario_replays_exactly() -> None:
    scenario = Scenario(seed=5, messages=30, sessions=5, fault_rate=0.3, crashes=2)

    first, again = run_scenario(scenario), run_scenario(scenario)

    assert first.ok
    assert first.trace == again.trace
    assert first.stats == again.stats
    assert first.virtual_seconds == again.virtual_seconds


def test_scenarios_drawn_from_seeds_vary_in_every_dimension() -> None:
    scenarios = [Scenario.from_seed(seed) for seed in range(60)]

    assert {s.session_mode for s in scenarios} == {"emulated", "native"}
    assert len({s.messages for s in scenarios}) > 10
    assert {s.crashes for s in scenarios} == {0, 1, 2}
    assert {s.fault_rate for s in scenarios} >= {0.0, 0.3}
    assert all(s.unordered_share == 0 for s in scenarios if s.session_mode == "native")


def test_a_bot_that_breaks_session_order_is_caught_shrunk_and_reproducible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = SessionSupervisor._route

    def reversed_route(self: SessionSupervisor, messages: Sequence[ReceivedMessage]) -> None:
        route(self, list(reversed(messages)))  # the bug: a batch is handled back to front

    monkeypatch.setattr(SessionSupervisor, "_route", reversed_route)

    def scenario_for(seed: int) -> Scenario:
        return Scenario(seed=seed, messages=12, sessions=2, fault_rate=0.1, crashes=1)

    with pytest.raises(SimulationFailure) as caught:
        simulate(range(20), scenario_for=scenario_for)

    failure = caught.value
    minimal = failure.minimal.scenario
    text = str(failure)
    assert f"simulation seed {failure.failed.scenario.seed} broke" in text
    assert "out of order" in text
    assert f"run_scenario({minimal!r}).assert_ok()" in text
    assert minimal.seed == failure.failed.scenario.seed
    assert minimal.messages <= 4
    assert minimal.sessions == 1
    assert (minimal.crashes, minimal.fault_rate, minimal.failure_rate) == (0, 0.0, 0.0)
    assert not run_scenario(minimal).ok  # the reproduction reproduces
    monkeypatch.undo()
    assert run_scenario(minimal).ok  # and it was the bug


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"session_mode": "azure"}, "session_mode must be"),
        ({"messages": -1}, "messages must be a non-negative integer"),
        ({"sessions": 0}, "sessions must be at least 1"),
        ({"fault_rate": 1.5}, r"fault_rate must be in \[0, 1\]"),
        ({"window": float("inf")}, "window must be a non-negative number"),
        ({"session_mode": "native", "unordered_share": 0.2}, "need a session id|takes only"),
    ],
)
def test_bad_scenarios_are_refused_with_a_message_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario(seed=1, **fields)  # type: ignore[arg-type]
