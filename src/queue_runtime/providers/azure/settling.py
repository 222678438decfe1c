"""What a receipt knows (:class:`Delivery`) and the delayed abandon Service Bus lacks.

Service Bus abandons at once; :func:`abandon_later` keeps the message locked for
the delay (renewing the lock of a non-session message as needed), then abandons
it, so the message keeps its place, its session order and its delivery count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from azure.servicebus import ServiceBusReceivedMessage

from queue_runtime.clock import Clock
from queue_runtime.config import Secret
from queue_runtime.messages import QueueName
from queue_runtime.telemetry import log_fields

from .errors import SDK_ERRORS, scrub
from .sdk import ReceiverSeam

if TYPE_CHECKING:
    from .sessions import AzureSessionReceiver

__all__ = ["Delivery", "abandon_later"]

_log = logging.getLogger("queue_runtime.providers.azure")

_MAX_RENEW_MARGIN: Final = 10.0


@dataclass(eq=False, slots=True)
class Delivery:
    """What a receipt knows: where the message came from and the receiver holding it."""

    queue: QueueName
    dead_letter: bool
    token: str
    receiver: ReceiverSeam
    message: ServiceBusReceivedMessage
    session: AzureSessionReceiver | None
    lock_span: float
    settled: bool = False
    uncertain: str | None = None
    """A settle that failed transiently (it may have taken effect): its operation."""


async def abandon_later(
    delivery: Delivery, deadline: float, until: float, clock: Clock, secrets: Iterable[Secret]
) -> None:
    """Hold the lock until ``deadline`` (``clock`` time), then abandon.

    A non-session message's lock is renewed when it would run out first; a
    session message is covered by its session lock (its holder renews that).
    Cancelled (the provider or the session is closing), it abandons at once; if
    its session was closed meanwhile, closing released it already. A failure is
    logged (with ``secrets`` scrubbed), never raised: the message comes back
    when its lock expires.
    """
    margin = min(_MAX_RENEW_MARGIN, delivery.lock_span / 3)
    renews = delivery.session is None
    try:
        while (now := clock.now()) < deadline:
            step = deadline - now
            if renews and until - margin < deadline:
                step = min(step, max(0.0, until - margin - now))
            await clock.sleep(step)
            now = clock.now()
            if renews and now < deadline and now >= until - margin:
                renewed = await delivery.receiver.renew_message_lock(delivery.message)
                until = renewed.timestamp()
    except asyncio.CancelledError:
        pass  # the provider or the session is closing: abandon now, not after the delay
    except SDK_ERRORS as exc:  # the lock could not be renewed: it is lost anyway
        _log_failure(delivery, exc, secrets)
        return
    if delivery.session is not None and delivery.session.closed:
        return
    try:
        await delivery.receiver.abandon_message(delivery.message)
    except SDK_ERRORS as exc:
        _log_failure(delivery, exc, secrets)


def _log_failure(delivery: Delivery, exc: BaseException, secrets: Iterable[Secret]) -> None:
    # the message is not lost: its lock runs out (or its session closed) and it comes back
    _log.warning(
        "delayed abandon of message %r in queue %r failed (%s: %s); "
        "it becomes visible when its lock expires",
        delivery.message.message_id,
        delivery.queue,
        type(exc).__name__,
        scrub(str(exc), secrets),
        extra=log_fields("abandon", delivery.queue),
    )
