"""The Azure Service Bus provider in the contract suite.

``azure-fake`` (always): the adapter runs unchanged; only the SDK client under
it is the fake of :mod:`tests.azure.fake_servicebus`, which hands out real SDK
message objects and raises real SDK exceptions over the in-memory engine.
Service time is a ManualClock (``pass_time`` moves it, as in the memory
harness); the provider gets a clock that waits on it, so a delayed abandon
waits for ``pass_time``. Session queues are session-enabled queues (native
sessions).

``azure-live`` (opt-in): the same suite against a real namespace, when
``QUEUE_RUNTIME_AZURE_CONNECTION_STRING`` is set (with Manage rights) and
``QUEUE_RUNTIME_TEST_AZURE_CONTRACT=1``. Every test creates its own queues
(lock duration 5 s, max delivery count 5, deleted afterwards) and time passes
for real, so it takes minutes; the ±100 ms receive-timeout rule can miss on a
slow network (the first receive also opens the link).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.providers.azure import AzureServiceBusProvider
from tests.azure.fake_servicebus import FakeServiceBus, VirtualClock

from .harness import HarnessBase, opened

_names = itertools.count(1)

FAKE_CONNECTION_STRING = (
    "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=ZmFrZS1rZXktbm90LWEtc2VjcmV0"
)


class AzureFakeHarness(HarnessBase):
    lock_duration = 30.0
    max_delivery_count = 5

    def __init__(self) -> None:
        self.clock = qr.ManualClock()
        self.provider_clock = VirtualClock(self.clock)
        self.bus = FakeServiceBus(
            self.clock, lock_duration=self.lock_duration, max_delivery_count=self.max_delivery_count
        )
        self.config = qr.AzureServiceBusConfig(
            connection_string=FAKE_CONNECTION_STRING,  # type: ignore[arg-type]
            max_delivery_count=self.max_delivery_count,
        )
        self.provider = self._provider()
        super().__init__(qr.QueueClient(self.provider, clock=self.clock))

    async def queue(self, *, sessions: bool = True) -> str:
        name = f"contract-{next(_names)}"
        self.bus.create_queue(name, requires_session=sessions)
        if sessions:
            self.session_queues.add(name)
        return name

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def now(self) -> datetime:
        return to_datetime(self.clock.now())

    def strict_client(self) -> qr.QueueClient:
        # the fake namespace never creates queues on its own: every client is strict
        return self.keep(qr.QueueClient(self._provider(), clock=self.clock))

    async def aclose(self) -> None:
        await super().aclose()
        self.provider_clock.close()

    def _provider(self) -> AzureServiceBusProvider:
        return AzureServiceBusProvider(self.config, clock=self.provider_clock, client=self.bus)


def azure_fake_harness() -> AbstractAsyncContextManager[AzureFakeHarness]:
    return opened(AzureFakeHarness())


class AzureLiveHarness(HarnessBase):
    lock_duration = 5.0
    max_delivery_count = 5

    def __init__(self, connection_string: str) -> None:
        from azure.servicebus.aio.management import ServiceBusAdministrationClient

        self.config = qr.AzureServiceBusConfig(
            connection_string=connection_string,  # type: ignore[arg-type]
            max_delivery_count=self.max_delivery_count,
        )
        self.admin = ServiceBusAdministrationClient.from_connection_string(connection_string)
        super().__init__(qr.QueueClient(AzureServiceBusProvider(self.config)))
        self._created: list[str] = []

    async def queue(self, *, sessions: bool = True) -> str:
        name = f"qr-contract-{uuid.uuid4().hex[:12]}"
        await self.admin.create_queue(
            name,
            requires_session=sessions,
            lock_duration=timedelta(seconds=self.lock_duration),
            max_delivery_count=self.max_delivery_count,
            auto_delete_on_idle=timedelta(minutes=10),  # in case the delete below fails
        )
        self._created.append(name)
        if sessions:
            self.session_queues.add(name)
        return name

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def strict_client(self) -> qr.QueueClient:
        return self.keep(qr.QueueClient(AzureServiceBusProvider(self.config)))

    async def aclose(self) -> None:
        try:
            await super().aclose()
            for name in self._created:
                with contextlib.suppress(Exception):
                    await self.admin.delete_queue(name)
        finally:
            await self.admin.close()


def azure_live_harness() -> AbstractAsyncContextManager[AzureLiveHarness]:
    return opened(AzureLiveHarness(os.environ["QUEUE_RUNTIME_AZURE_CONNECTION_STRING"]))


HARNESSES: dict[str, Callable[[], AbstractAsyncContextManager[object]]] = {
    "azure-fake": azure_fake_harness
}
if os.environ.get("QUEUE_RUNTIME_AZURE_CONNECTION_STRING") and (
    os.environ.get("QUEUE_RUNTIME_TEST_AZURE_CONTRACT") == "1"
):
    HARNESSES["azure-live"] = azure_live_harness
