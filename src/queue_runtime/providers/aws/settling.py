"""Settling what the SQS provider holds: receipt requests, dead-lettering, letting go.

:class:`Settler` makes the SQS requests that end or extend a held message's
time with the provider (:class:`~.inflight.Held`) and keeps the
:class:`~.inflight.Ledger` true to them:

* **Receipt requests** (``DeleteMessage``, ``ChangeMessageVisibility``): a
  receipt SQS refuses is forgotten.
* **Dead-lettering**: copy to the DLQ with a dead-letter record, *then* delete
  the original — never the other way round.
* **Letting go**: release (visibility 0, or what is left of an abandon delay),
  give up failed deliveries (dead-lettering those at ``max_delivery_count``),
  and sweep plain deliveries whose lock ran out.

Example:
    >>> # settler = Settler(transport, ledger, clock, visibility=30, max_delivery_count=5)
    >>> # held = settler.lookup(receipt, "complete")
    >>> # await settler.call(held, "delete_message", "complete", ReceiptHandle=held.handle)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from queue_runtime.clock import Clock
from queue_runtime.errors import InvalidReceiptError, QueueError
from queue_runtime.messages import ReceiptHandle
from queue_runtime.provider import MAX_DELIVERY_REASON
from queue_runtime.telemetry import log_fields

from .inflight import Held, Ledger, QueueState
from .transport import SqsTransport
from .wire import dead_letter_copy

__all__ = ["Settler"]

logger = logging.getLogger(__name__)


class Settler:
    """The SQS requests that settle, dead-letter, release or extend held messages."""

    def __init__(
        self,
        transport: SqsTransport,
        ledger: Ledger,
        clock: Clock,
        *,
        visibility: int,
        max_delivery_count: int,
    ) -> None:
        self._transport = transport
        self._ledger = ledger
        self._clock = clock
        self._visibility = visibility
        self._limit = max_delivery_count

    def lookup(self, receipt: ReceiptHandle, operation: str) -> Held:
        """The live delivery behind ``receipt`` (see :meth:`.Ledger.lookup`)."""
        return self._ledger.lookup(receipt, operation, self._clock.now())

    def forget(self, held: Held, settled: str | None = None) -> None:
        """Drop ``held`` from the ledger and wake whoever waits on its queue."""
        self._ledger.forget(held, settled)
        held.state.notify()

    async def call(self, held: Held, method: str, operation: str, **params: Any) -> None:
        """One receipt request for ``held``; a receipt SQS refuses is forgotten."""
        held.settling = True
        try:
            await self._transport.call(
                held.state,
                method,
                operation,
                receipt=True,
                message_id=held.message.message_id,
                **params,
            )
        except InvalidReceiptError:
            self.forget(held)
            raise
        finally:
            held.settling = False

    async def dead_letter(
        self,
        held: Held,
        reason: str,
        description: str | None,
        operation: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Dead-letter a delivery being settled: no other settle may run meanwhile."""
        held.settling = True
        try:
            await self.move_to_dead_letters(held, reason, description, operation, properties)
        finally:
            held.settling = False

    async def move_to_dead_letters(
        self,
        held: Held,
        reason: str,
        description: str | None,
        operation: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Copy to the DLQ, then delete the original — never the other way round."""
        state = held.state
        dlq = await self._transport.dead_letter_state(state)
        copy = dead_letter_copy(
            held.message,
            reason=reason,
            description=description,
            delivery_count=held.delivery_count,
            source=state.sqs_name,
            fifo=dlq.fifo,
            properties=properties,
        )
        await self._transport.send(dlq, [copy], operation)
        await self.call(held, "delete_message", operation, ReceiptHandle=held.handle)
        self.forget(held, operation)

    async def extend(
        self, state: QueueState, helds: Sequence[Held], before: float, operation: str
    ) -> list[Held]:
        """Extend visibility by ``visibility_timeout``; forget (and return) those SQS refused."""
        changes = [(held.handle, self._visibility) for held in helds]
        failed = await self._transport.set_visibility(state, changes, operation)
        lost: list[Held] = []
        for index, held in enumerate(helds):
            if index in failed:
                self.forget(held)
                lost.append(held)
            else:
                held.visible_at = before + self._visibility
        return lost

    # -- letting go -------------------------------------------------------------------

    async def release(self, helds: Sequence[Held], operation: str) -> None:
        """Let SQS deliver these again (keeping an abandon delay); best effort, never raises."""
        now = self._clock.now()
        by_state: dict[int, tuple[QueueState, list[tuple[str, int]]]] = {}
        for held in helds:
            self.forget(held)
            seconds = math.ceil(max(0.0, held.not_before - now))
            by_state.setdefault(id(held.state), (held.state, []))[1].append((held.handle, seconds))
        for state, changes in by_state.values():
            try:
                await self._transport.set_visibility(state, changes, operation)
            except QueueError as exc:
                logger.warning(
                    "SQS: could not release %d messages of %s: %s (they reappear when their "
                    "visibility timeout ends)",
                    len(changes),
                    state.sqs_name,
                    exc,
                    extra=log_fields(operation, state.name),
                )

    async def give_up(self, helds: Sequence[Held], operation: str, what: str) -> None:
        """Release failed deliveries; dead-letter those at the delivery limit."""
        limit = self._limit
        release: list[Held] = []
        for held in helds:
            if not held.state.dead_letter and held.token and held.delivery_count >= limit:
                try:
                    description = f"{what} on delivery {held.delivery_count} of {limit}"
                    await self.move_to_dead_letters(
                        held, MAX_DELIVERY_REASON, description, operation
                    )
                    continue
                except QueueError as exc:
                    logger.warning(
                        "SQS: could not dead-letter message %s: %s",
                        held.message.message_id,
                        exc,
                        extra=log_fields(operation, held.state.name),
                    )
            release.append(held)
        await self.release(release, operation)

    async def sweep(self) -> None:
        """Plain deliveries whose lock ran out: forget them, dead-letter those at the limit."""
        for held in self._ledger.expired(self._clock.now()):
            if held.gone:
                continue
            group = held.group
            limit = self._limit
            if (
                not held.state.dead_letter
                and held.delivery_count >= limit
                and await self._hide_again(held)
            ):
                description = f"lock expired on delivery {held.delivery_count} of {limit}"
                try:
                    await self.move_to_dead_letters(
                        held, MAX_DELIVERY_REASON, description, "lock_expiry"
                    )
                    continue
                except QueueError as exc:
                    logger.warning(
                        "SQS: could not dead-letter message %s after its last delivery: %s",
                        held.message.message_id,
                        exc,
                        extra=log_fields("lock_expiry", held.state.name),
                    )
            self.forget(held)
            if group is not None and group.buffered and group.lock is None:
                # it is visible in SQS again: let SQS have the rest of its group too
                await self.release(list(group.buffered), "lock_expiry")

    async def _hide_again(self, held: Held) -> bool:
        """Make a message whose lock ran out invisible again before dead-lettering it.

        By now SQS may hand it out again — or its redrive policy may move it to the
        DLQ on the next receive, anyone's. Copying it to the DLQ ourselves would
        then leave it there twice. So first take it back: if that fails (SQS says
        it is no longer in flight, or it is gone), someone else has it, and the
        redrive policy or the next receive's over-delivery check dead-letters it,
        once.
        """
        try:
            await self._transport.call(
                held.state,
                "change_message_visibility",
                "lock_expiry",
                receipt=True,
                message_id=held.message.message_id,
                ReceiptHandle=held.handle,
                VisibilityTimeout=math.ceil(max(self._visibility, 30.0)),
            )
        except QueueError:
            return False
        return True
