"""The fault mix of the soak: a share of all provider calls fail transiently.

Two thirds of the faults strike *before* the call (the request never reached
the service), one third *after* it (the service acted, the answer was lost:
a send stored twice, a complete that took effect but raised, a receive whose
messages stay locked until their locks expire). Both raise a transient
:class:`~queue_runtime.errors.ConnectionFailedError`, which the client retries.
"""

from __future__ import annotations

from collections.abc import Sequence

from queue_runtime.errors import QueueError
from queue_runtime.messages import ReceiptHandle
from queue_runtime.provider import SupportsCompleteMany
from queue_runtime.providers.memory.faults import Fault, FaultInjector
from queue_runtime.testing import FaultyProvider

AFTER_SHARE = 1 / 3
"""Of the injected faults, this share strikes after the real call."""


class CountingFaultInjector(FaultInjector):
    """A :class:`FaultInjector` that also counts the calls it was asked about."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self.calls = 0

    def fault_for(self, operation: str, *, after: bool) -> Fault | None:
        if not after:
            self.calls += 1  # every call is looked at once before it runs
        return super().fault_for(operation, after=after)


def fail_transiently(faults: FaultInjector, rate: float) -> None:
    """Make a share ``rate`` of all calls fail: two thirds before, one third after the call."""
    before = rate * (1 - AFTER_SHARE)
    faults.fail_randomly("*", before)
    faults.drop_randomly("*", rate * AFTER_SHARE / (1 - before))


class FaultyBatchingConnection(FaultyProvider):
    """A :class:`FaultyProvider` over a provider that completes in batches (SQS).

    ``FaultyProvider`` offers no ``complete_many``, so a bot behind it would
    complete one message per request and the soak would miss the bot's batched
    completions, the path it takes on SQS. Here a batch completion is one
    ``complete`` call for the faults: it fails before, or takes effect and
    loses its answer, as a whole.
    """

    async def complete_many(self, receipts: Sequence[ReceiptHandle]) -> Sequence[QueueError | None]:
        inner = self.inner
        assert isinstance(inner, SupportsCompleteMany)
        return await self._call("complete", lambda: inner.complete_many(receipts))
