"""Fixtures for the Azure adapter tests: a fake namespace, a provider on it, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

import queue_runtime as qr
from queue_runtime.providers.azure import AzureServiceBusProvider

from .fake_servicebus import FakeServiceBus, VirtualClock

PLANTED = "PLANTED-s3cr3t-7f9c2e-do-not-print"
"""A secret planted in connection strings and credentials; it must never show."""

CONNECTION_STRING = (
    "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={PLANTED}"
)


class World:
    """A manual clock, a fake namespace on it, and a way to build providers and clients."""

    def __init__(self) -> None:
        self.clock = qr.ManualClock()
        self.provider_clock = VirtualClock(self.clock)
        self.bus = FakeServiceBus(self.clock, lock_duration=30.0, max_delivery_count=5)
        self.providers: list[AzureServiceBusProvider] = []

    def provider(self, **config: object) -> AzureServiceBusProvider:
        settings: dict[str, object] = {
            "connection_string": CONNECTION_STRING,
            "max_delivery_count": self.bus.max_delivery_count,  # as the entity says
            **config,
        }
        provider = AzureServiceBusProvider(
            qr.AzureServiceBusConfig(**settings),  # type: ignore[arg-type]
            clock=self.provider_clock,
            client=self.bus,
        )
        self.providers.append(provider)
        return provider

    def client(self, provider: AzureServiceBusProvider | None = None) -> qr.QueueClient:
        return qr.QueueClient(provider or self.provider(), clock=self.clock)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
        self.provider_clock.close()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    chosen = World()
    try:
        yield chosen
    finally:
        await chosen.aclose()


@pytest.fixture
def make_queue(world: World) -> Callable[..., str]:
    names = iter(range(1, 1_000))

    def make(*, sessions: bool = False, **options: int) -> str:
        name = f"q-{next(names)}"
        world.bus.create_queue(name, requires_session=sessions, **options)
        return name

    return make
