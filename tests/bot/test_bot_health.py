"""bot.health() and the probe endpoint, on the in-memory provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, PermanentFailure
from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.health import HealthStatus
from queue_runtime.providers.memory import InMemoryProvider
from tests.bot.test_bot import QUEUE, Journal, bot_for, events, handler, wait_until


@pytest.fixture
async def provider() -> AsyncIterator[InMemoryProvider]:
    provider = InMemoryProvider(qr.InMemoryConfig())
    yield provider
    await provider.aclose()


async def _get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_a_working_bot_is_healthy_and_says_what_it_checked(
    provider: InMemoryProvider,
) -> None:
    sent = events(2, 2)
    await qr.QueueClient(provider).send_messages(QUEUE, sent)
    async with bot_for(provider, [handler(Journal())]) as bot:
        await wait_until(lambda: bot.stats().completed == len(sent))
        report = await bot.health()

    assert report.status is HealthStatus.HEALTHY, report.to_dict()
    names = [check.name for check in report.checks]
    assert names == ["bot", "provider", "circuits", "receive", "handlers", "dead_letters"]
    assert report.check("provider").data["depth"] == 0  # type: ignore[union-attr]


async def test_an_open_handler_circuit_makes_the_bot_degraded_not_unhealthy(
    provider: InMemoryProvider,
) -> None:
    def fail(_: object) -> None:
        raise ConnectionError("downstream down")

    await qr.QueueClient(provider).send_messages(QUEUE, events(4, 1))
    circuit = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=60.0)
    async with bot_for(
        provider, [handler(Journal(), fail)], handler_circuit=circuit, health_port=0
    ) as bot:
        await wait_until(lambda: "open" in bot.stats().circuits.values())
        report = await bot.health()
        assert bot.health_server is not None
        port = bot.health_server.port
        live, ready = await _get(port, "/healthz"), await _get(port, "/readyz")

    assert report.status is HealthStatus.DEGRADED
    assert report.check("circuits").status is HealthStatus.DEGRADED  # type: ignore[union-attr]
    assert report.check("receive").status is HealthStatus.HEALTHY  # type: ignore[union-attr]
    assert (live, ready) == (200, 503)


async def test_the_endpoint_answers_ready_for_a_healthy_bot_and_closes_with_it(
    provider: InMemoryProvider,
) -> None:
    async with bot_for(provider, [handler(Journal())], health_port=0) as bot:
        await asyncio.sleep(0.2)  # a first receive has succeeded
        assert bot.health_server is not None
        port = bot.health_server.port
        assert await _get(port, "/readyz") == 200

    with pytest.raises(ConnectionRefusedError):
        await _get(port, "/healthz")


async def test_new_dead_letters_make_the_bot_degraded(provider: InMemoryProvider) -> None:
    def poison(_: object) -> None:
        raise PermanentFailure("never")

    async with bot_for(provider, [handler(Journal(), poison)]) as bot:
        first = await bot.health()
        await qr.QueueClient(provider).send_messages(QUEUE, events(1, 1))
        await wait_until(lambda: bot.stats().dead_lettered == 1)
        second = await bot.health()

    assert first.check("dead_letters").status is HealthStatus.HEALTHY  # type: ignore[union-attr]
    assert second.check("dead_letters").status is HealthStatus.DEGRADED  # type: ignore[union-attr]


async def test_a_bot_that_is_not_running_is_unhealthy(provider: InMemoryProvider) -> None:
    bot = Bot(qr.QueueClient(provider), QUEUE, [handler(Journal())])
    before = await bot.health()
    async with bot:
        pass
    after = await bot.health()

    assert before.status is HealthStatus.UNHEALTHY
    assert after.status is HealthStatus.UNHEALTHY
    assert after.checks[0].detail == "the bot is stopped"
