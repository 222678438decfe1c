"""The SQS queues one provider uses: their state, provisioning and attributes.

:class:`SqsQueues` keeps one :class:`~.inflight.QueueState` per queue name the
provider was asked about (created on first use, never a queue in SQS), knows
whether the provider is still open, creates and deletes queues with their DLQ
and redrive policy, and reads SQS's approximate counts.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.aws.transport import SqsTransport
    >>> config = qr.AwsSqsConfig(region="eu-west-1")
    >>> queues = SqsQueues(SqsTransport(config), config)
    >>> queues.state(qr.QueueName("orders.fifo"), "send").fifo
    True
    >>> queues.close()
    >>> queues.check_open("send")
    Traceback (most recent call last):
    queue_runtime.errors.QueueError: the SQS provider is closed (operation=send)
"""

from __future__ import annotations

from collections.abc import Mapping

from queue_runtime.config import AwsSqsConfig
from queue_runtime.errors import ConfigurationError, QueueError, QueueNotFoundError
from queue_runtime.messages import QueueName
from queue_runtime.provider import QueueInfo

from .inflight import QueueState
from .transport import SqsTransport, check_queue_name, dead_letter_queue_name

__all__ = ["SqsQueues"]


class SqsQueues:
    """The state of every queue a provider uses, and whether the provider is open."""

    def __init__(self, transport: SqsTransport, config: AwsSqsConfig) -> None:
        self._transport = transport
        self._config = config
        self._states: dict[str, QueueState] = {}
        self.closed = False

    def check_open(self, operation: str) -> None:
        """Raise :class:`~queue_runtime.errors.QueueError` once the provider is closed."""
        if self.closed:
            raise QueueError("the SQS provider is closed", operation=operation)

    def close(self) -> None:
        """From now on :meth:`check_open` raises and waiting loops end."""
        self.closed = True

    def state(self, queue: str, operation: str) -> QueueState:
        """The state of ``queue``, created on first use (after checking its name)."""
        name = QueueName(queue)
        state = self._states.get(name)
        if state is None:
            check_queue_name(name, operation)
            state = self._states[name] = QueueState(name, name, dead_letter=False)
        return state

    async def dead_letter_state(self, queue: str, operation: str) -> QueueState:
        """The state of the DLQ of ``queue`` (see :meth:`.SqsTransport.dead_letter_state`)."""
        return await self._transport.dead_letter_state(self.state(queue, operation))

    def states(self) -> list[QueueState]:
        """Every queue's state, as a list (safe to iterate while states are added)."""
        return list(self._states.values())

    # -- provisioning -----------------------------------------------------------------

    async def create(
        self,
        queue: str,
        *,
        dead_letter_queue: bool,
        max_receive_count: int | None,
        attributes: Mapping[str, str] | None,
    ) -> str:
        """Create ``queue`` (and, with ``dead_letter_queue``, its DLQ and redrive policy)."""
        name = QueueName(queue)
        check_queue_name(name, "create_queue")
        receive_count = max_receive_count or self._config.max_delivery_count
        url = await self._transport.create_queue(
            name,
            max_receive_count=receive_count if dead_letter_queue else None,
            attributes=attributes or {},
        )
        if self._config.cache_queue_urls:
            self.state(name, "create_queue").url = url
        return url

    async def delete(self, queue: str) -> None:
        """Delete ``queue`` and its conventional DLQ, if they exist, and forget its state."""
        name = QueueName(queue)
        for sqs_name in (name, dead_letter_queue_name(name)):
            await self._transport.delete_queue(sqs_name)
        self._states.pop(name, None)

    # -- attributes -------------------------------------------------------------------

    async def info(self, queue: str) -> QueueInfo:
        """SQS's approximate counts of ``queue`` and its DLQ (``GetQueueAttributes``)."""
        state = self.state(queue, "queue_info")
        attributes = await self._counts(state)
        try:
            dlq = await self._transport.dead_letter_state(state)
        except (QueueNotFoundError, ConfigurationError):
            dead_letters = None
        else:
            dead_letters = (await self._counts(dlq)).get("ApproximateNumberOfMessages")
        return QueueInfo(
            depth=attributes.get("ApproximateNumberOfMessages"),
            in_flight=attributes.get("ApproximateNumberOfMessagesNotVisible"),
            dead_letter_depth=dead_letters,
        )

    async def _counts(self, state: QueueState) -> dict[str, int]:
        response = await self._transport.call(
            state,
            "get_queue_attributes",
            "queue_info",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response.get("Attributes") or {}
        return {key: int(value) for key, value in attributes.items() if str(value).isdigit()}
