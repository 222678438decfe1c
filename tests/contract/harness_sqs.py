"""Amazon SQS (through aiobotocore) in the contract suite, against a local moto server.

Queues with sessions are FIFO queues, the others standard queues; each gets a
DLQ (``-dlq`` / ``-dlq.fifo``) wired by a RedrivePolicy whose maxReceiveCount is
``max_delivery_count``. The visibility timeout is short so that lock expiry
really happens: ``pass_time`` sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider
from tests import sqs_server

from .harness import HarnessBase, opened

_names = itertools.count(1)


class SqsHarness(HarnessBase):
    lock_duration = 2.0
    max_delivery_count = 3

    def __init__(self) -> None:
        self.config = sqs_server.config(
            visibility_timeout=self.lock_duration, max_delivery_count=self.max_delivery_count
        )
        # Retries wait for real here: keep them short, well inside the 2 s locks.
        self.queue_config = qr.QueueConfig(
            provider=self.config, retry=qr.RetryPolicy(initial_delay=0.05, max_delay=0.2)
        )
        self.provider = SqsProvider(self.config)
        super().__init__(qr.QueueClient(self.provider, self.queue_config))

    async def queue(self, *, sessions: bool = True) -> str:
        name = f"contract-{next(_names)}" + (".fifo" if sessions else "")
        await self.provider.create_queue(name)
        if sessions:
            self.session_queues.add(name)
        return name

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def strict_client(self) -> qr.QueueClient:
        # SQS never creates queues implicitly: every client is strict.
        return self.keep(qr.QueueClient(SqsProvider(self.config), self.queue_config))


@asynccontextmanager
async def sqs_harness() -> AsyncIterator[SqsHarness]:
    await sqs_server.reset()
    async with opened(SqsHarness()) as harness:
        yield harness


HARNESSES = {"sqs": sqs_harness}
