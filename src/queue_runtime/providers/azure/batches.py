"""Sending in as few SDK batches as the messages' encoded size allows."""

from __future__ import annotations

from collections.abc import Sequence

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.exceptions import MessageSizeExceededError

from queue_runtime.errors import MessageTooLargeError
from queue_runtime.messages import Message, QueueName

from .sdk import SenderSeam

__all__ = ["encoded_size", "pack"]


async def pack(
    sender: SenderSeam,
    queue: QueueName,
    messages: Sequence[Message],
    outgoing: list[ServiceBusMessage],
    limit: int,
) -> list[ServiceBusMessageBatch | ServiceBusMessage]:
    """Fill SDK batches in order; a message too big for any batch goes alone.

    Raises MessageTooLargeError if a message's encoded size exceeds ``limit``
    (the entity's). Nothing is sent here.
    """
    parts: list[ServiceBusMessageBatch | ServiceBusMessage] = []
    batch = await sender.create_message_batch()
    for message, sb in zip(messages, outgoing, strict=True):
        if _try_add(batch, sb):
            continue
        if len(batch):
            parts.append(batch)
            batch = await sender.create_message_batch()
            if _try_add(batch, sb):
                continue
        size = encoded_size(sb)
        if size > limit:
            raise MessageTooLargeError(
                size, limit, operation="send", queue=queue, message_id=message.message_id
            )
        parts.append(sb)  # bigger than a batch may be (premium tier), not than a message
    if len(batch):
        parts.append(batch)
    return parts


def _try_add(batch: ServiceBusMessageBatch, message: ServiceBusMessage) -> bool:
    try:
        batch.add_message(message)
    except MessageSizeExceededError:
        return False
    return True


def encoded_size(message: ServiceBusMessage) -> int:
    """Bytes ``message`` takes in a batch (what the size limit is checked against)."""
    probe = ServiceBusMessageBatch(max_size_in_bytes=2**62)
    probe.add_message(message)
    return probe.size_in_bytes
