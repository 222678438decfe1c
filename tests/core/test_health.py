"""Health: the checks, the report, the provider probe and the HTTP endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import pytest

import queue_runtime as qr
from queue_runtime.health import (
    CheckResult,
    DeadLetterWatch,
    HealthReport,
    HealthStatus,
    QueueInfo,
    check_circuits,
    check_dead_letters,
    check_handler_restarts,
    check_provider,
    check_receive_stall,
    probe_queue,
    serve_health,
)
from queue_runtime.providers.memory import InMemoryProvider

HEALTHY = HealthStatus.HEALTHY
DEGRADED = HealthStatus.DEGRADED
UNHEALTHY = HealthStatus.UNHEALTHY


def _result(status: HealthStatus, name: str = "x") -> CheckResult:
    return CheckResult(name, status, status.label)


# -- the report ---------------------------------------------------------------------


def test_statuses_are_ordered_from_healthy_to_unhealthy() -> None:
    assert HEALTHY < DEGRADED < UNHEALTHY
    assert [s.label for s in HealthStatus] == ["healthy", "degraded", "unhealthy"]


@pytest.mark.parametrize(
    ("statuses", "overall", "live", "ready"),
    [
        ((), HEALTHY, True, True),
        ((HEALTHY, HEALTHY), HEALTHY, True, True),
        ((HEALTHY, DEGRADED), DEGRADED, True, False),
        ((DEGRADED, UNHEALTHY, HEALTHY), UNHEALTHY, False, False),
    ],
)
def test_a_report_is_as_bad_as_its_worst_check(
    statuses: tuple[HealthStatus, ...], overall: HealthStatus, live: bool, ready: bool
) -> None:
    report = HealthReport(tuple(_result(s, f"c{i}") for i, s in enumerate(statuses)))

    assert (report.status, report.live, report.ready) == (overall, live, ready)


def test_a_report_serialises_to_json_with_every_check() -> None:
    check = CheckResult("provider", DEGRADED, "slow", {"latency_ms": 900.5, "depth": None})
    report = HealthReport((check,))

    assert orjson.loads(report.to_json()) == {
        "status": "degraded",
        "checks": [
            {
                "name": "provider",
                "status": "degraded",
                "detail": "slow",
                "data": {"latency_ms": 900.5, "depth": None},
            }
        ],
    }
    assert report.check("provider") is check
    assert report.check("nope") is None


# -- circuits, stalls, restarts, dead letters ----------------------------------------------


def test_open_and_half_open_circuits_make_the_bot_degraded_not_unhealthy() -> None:
    clock = qr.ManualClock()
    breaker = qr.CircuitBreaker(qr.CircuitBreakerConfig(failure_threshold=1), clock)
    breaker.record_failure()

    opened = check_circuits({"provider": breaker, "Pushes": "closed"})
    clock.advance(31)
    half_open = check_circuits({"provider": breaker})
    closed = check_circuits({"provider": qr.CircuitState.CLOSED, "Pushes": "closed"})

    assert (opened.status, opened.detail) == (DEGRADED, "open: provider")
    assert opened.data == {"provider": "open", "Pushes": "closed"}
    assert (half_open.status, half_open.detail) == (DEGRADED, "half_open: provider")
    assert (closed.status, closed.detail) == (HEALTHY, "all closed")


def test_an_unknown_circuit_state_is_refused() -> None:
    with pytest.raises(ValueError, match="ajar"):
        check_circuits({"provider": "ajar"})


@pytest.mark.parametrize(
    ("now", "last", "provider_ok", "status"),
    [
        (100.0, 90.0, True, HEALTHY),
        (100.0, 90.0, False, HEALTHY),  # recent receives: the provider answers after all
        (200.0, 50.0, True, UNHEALTHY),  # 150 s > 120 s: stalled while the provider answers
        (200.0, 50.0, False, DEGRADED),  # the failing provider explains the silence
        (60.0, None, True, DEGRADED),  # no receive yet: not ready
        (200.0, None, True, UNHEALTHY),  # never received, long after the start
    ],
)
def test_the_stall_watchdog_tells_a_stuck_loop_from_a_failing_provider(
    now: float, last: float | None, provider_ok: bool, status: HealthStatus
) -> None:
    result = check_receive_stall(
        now=now, last_receive=last, started_at=0.0, threshold=120.0, provider_ok=provider_ok
    )

    assert result.status is status, result.detail
    assert result.data["threshold_s"] == 120.0


def test_the_stall_watchdog_reports_how_long_it_has_been() -> None:
    result = check_receive_stall(now=200.0, last_receive=50.0, started_at=0.0, threshold=120.0)

    assert result.detail == "no successful receive for 150 s: the receive loop is stalled"
    assert result.data["seconds_since_receive"] == 150.0


def test_handler_restarts_are_healthy_until_they_escalate() -> None:
    assert check_handler_restarts(3, escalated=False).status is HEALTHY
    escalated = check_handler_restarts(11, escalated=True)
    assert escalated.status is UNHEALTHY
    assert escalated.data == {"restarts": 11, "escalated": True}


def test_dead_letters_degrade_when_too_deep_or_growing() -> None:
    assert check_dead_letters(5).status is HEALTHY
    assert check_dead_letters(5, max_depth=4).status is DEGRADED
    assert check_dead_letters(5, new=0, window=60.0).status is HEALTHY
    assert check_dead_letters(5, new=1, window=60.0).status is DEGRADED
    assert check_dead_letters(5, new=1, window=60.0, max_new=1).status is HEALTHY
    assert check_dead_letters(None, max_depth=0).status is HEALTHY  # unknown is not deep


def test_the_watch_counts_arrivals_across_a_purge_and_forgets_old_ones() -> None:
    watch = DeadLetterWatch(window=100.0)

    assert watch.observe(4, now=0.0).data["new"] == 0
    assert watch.observe(6, now=10.0).data["new"] == 2
    assert watch.observe(0, now=20.0).data["new"] == 2  # purged: the 2 new ones still count
    after_purge = watch.observe(1, now=30.0)
    assert (after_purge.status, after_purge.data["new"]) == (DEGRADED, 3)
    later = watch.observe(1, now=125.0)  # the samples before t=25 left the window
    assert (later.status, later.data["new"]) == (HEALTHY, 0)


def test_the_watch_ignores_unknown_depths_and_keeps_bounded_history() -> None:
    watch = DeadLetterWatch(window=1e9, max_samples=3)
    for depth in (0, 1, 2, 3, 4):
        watch.observe(depth, now=float(depth))

    assert watch.observe(None, now=10.0).status is HEALTHY
    assert watch.observe(4, now=11.0).data["new"] == 1  # only the last samples are kept


def test_a_watch_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="window"):
        DeadLetterWatch(window=0)


# -- the provider probe -----------------------------------------------------------------------


class _SlowInfo(InMemoryProvider):
    async def queue_info(self, queue: qr.QueueName) -> QueueInfo:
        await asyncio.sleep(10)
        return QueueInfo()


class _BrokenInfo(InMemoryProvider):
    async def queue_info(self, queue: qr.QueueName) -> QueueInfo:
        raise RuntimeError("password=hunter2")


class _NoHook:
    """A memory provider that hides its ``queue_info`` hook."""

    def __init__(self) -> None:
        self._inner = InMemoryProvider()

    def __getattr__(self, name: str) -> Any:
        if name == "queue_info":
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_a_probe_reports_the_queue_counts_and_how_long_it_took() -> None:
    async with qr.QueueClient(InMemoryProvider()) as client:
        await client.send_messages("jobs", [qr.Message(b"1"), qr.Message(b"2")])
        probe = await probe_queue(client, "jobs")

    result = check_provider(probe)
    assert probe.ok
    assert probe.info == QueueInfo(depth=2, in_flight=0, dead_letter_depth=0)
    assert result.status is HEALTHY
    assert result.data["depth"] == 2
    assert isinstance(result.data["latency_ms"], float)


async def test_a_probe_that_times_out_is_a_transient_failure_and_degrades() -> None:
    async with qr.QueueClient(_SlowInfo()) as client:
        probe = await probe_queue(client, "jobs", timeout=0.05)

    assert isinstance(probe.error, qr.OperationTimeoutError)
    assert check_provider(probe).status is DEGRADED


async def test_a_probe_never_raises_and_never_shows_an_unexpected_errors_text() -> None:
    async with qr.QueueClient(_BrokenInfo()) as client:
        probe = await probe_queue(client, "jobs")

    result = check_provider(probe)
    assert result.status is UNHEALTHY  # an unknown error is not transient
    assert "RuntimeError" in result.detail
    assert "hunter2" not in result.detail + str(result.data)


async def test_a_probe_bypasses_the_circuit_breaker_and_leaves_it_alone() -> None:
    provider = InMemoryProvider()
    config = qr.QueueConfig(circuit_breaker=qr.CircuitBreakerConfig(failure_threshold=1))
    async with qr.QueueClient(provider, config) as client:
        for _ in range(3):
            provider.faults.fail_next("*")
            failed = await probe_queue(client, "jobs")
            assert isinstance(failed.error, qr.ConnectionFailedError)
        client.circuit.record_failure()  # now open: client calls fail fast ...
        probe = await probe_queue(client, "jobs")  # ... but the probe still asks

        assert probe.ok
        assert client.circuit.state is qr.CircuitState.OPEN


async def test_a_provider_without_the_hook_is_reported_as_not_probed() -> None:
    async with qr.QueueClient(cast(qr.QueueProvider, _NoHook())) as client:
        probe = await probe_queue(client, "jobs")
    result = check_provider(probe)

    assert not probe.supported
    assert not probe.ok
    assert (result.status, result.data) == (HEALTHY, {"probed": False})


async def test_a_probe_of_an_invalid_queue_name_reports_the_validation_error() -> None:
    async with qr.QueueClient(InMemoryProvider()) as client:
        probe = await probe_queue(client, "bad name!")

    assert isinstance(probe.error, qr.ValidationError)
    assert check_provider(probe).status is UNHEALTHY


# -- the HTTP endpoint ------------------------------------------------------------------------


Report = Callable[[], Awaitable[HealthReport]]


def _fixed(status: HealthStatus) -> Report:
    async def report() -> HealthReport:
        return HealthReport((_result(status, "only"),))

    return report


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("status", "healthz", "readyz"),
    [(HEALTHY, 200, 200), (DEGRADED, 200, 503), (UNHEALTHY, 503, 503)],
)
async def test_liveness_fails_only_when_unhealthy_and_readiness_unless_healthy(
    status: HealthStatus, healthz: int, readyz: int
) -> None:
    async with serve_health(_fixed(status), port=0, host="127.0.0.1") as server:
        live = await _exchange(server.port, _get("/healthz"))
        ready = await _exchange(server.port, _get("/readyz?verbose=1"))

    assert (live[0], ready[0]) == (healthz, readyz)
    for _, headers, body in (live, ready):
        assert headers["Content-Type"] == "application/json"
        assert int(headers["Content-Length"]) == len(body)
        assert orjson.loads(body)["status"] == status.label


async def test_head_answers_without_a_body() -> None:
    async with serve_health(_fixed(HEALTHY), port=0, host="127.0.0.1") as server:
        status, headers, body = await _exchange(server.port, _get("/healthz", "HEAD"))

    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_get("/metrics"), 404),
        (_get("/healthz", "POST"), 405),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests_get_a_clear_status_and_the_report_is_not_built(
    request_bytes: bytes, status: int
) -> None:
    calls: list[int] = []

    async def report() -> HealthReport:
        calls.append(1)
        return HealthReport()

    async with serve_health(report, port=0, host="127.0.0.1") as server:
        answer = await _exchange(server.port, request_bytes)

    assert answer[0] == status
    assert calls == []


async def test_a_failing_report_answers_503_without_its_text() -> None:
    async def report() -> HealthReport:
        raise RuntimeError("token=abc123")

    async with serve_health(report, port=0, host="127.0.0.1") as server:
        status, _, body = await _exchange(server.port, _get("/healthz"))

    assert status == 503
    assert orjson.loads(body) == {
        "status": "unhealthy",
        "error": "the health report failed: RuntimeError",
    }


async def test_a_slow_report_answers_503_after_the_timeout() -> None:
    async def report() -> HealthReport:
        await asyncio.sleep(10)
        return HealthReport()

    async with serve_health(report, port=0, host="127.0.0.1", timeout=0.1) as server:
        status, _, body = await _exchange(server.port, _get("/readyz"))

    assert status == 503
    assert b"timed out" in body


async def test_a_silent_client_is_disconnected_after_the_timeout() -> None:
    async with serve_health(_fixed(HEALTHY), port=0, host="127.0.0.1", timeout=0.1) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /heal")  # and never the rest
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server, no answer
        writer.close()


async def test_leaving_the_block_closes_open_connections_and_stops_listening() -> None:
    entered = asyncio.Event()

    async def report() -> HealthReport:
        entered.set()
        await asyncio.sleep(60)
        return HealthReport()

    async with serve_health(report, port=0, host="127.0.0.1") as server:
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_get("/healthz"))
        async with asyncio.timeout(5):
            await entered.wait()
    # the connection task was cancelled and awaited: the client sees the close
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_many_requests_at_once_are_all_answered() -> None:
    async with serve_health(_fixed(HEALTHY), port=0, host="127.0.0.1") as server:
        answers: list[Any] = await asyncio.gather(
            *(_exchange(server.port, _get("/healthz")) for _ in range(20))
        )

    assert [a[0] for a in answers] == [200] * 20
