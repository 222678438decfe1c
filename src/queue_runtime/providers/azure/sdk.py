"""The slice of the azure-servicebus ``aio`` API the adapter talks to.

These Protocols are the seam between :mod:`queue_runtime.providers.azure` and
the SDK: a client that hands out senders and receivers, a sender, a receiver
(plain, dead-letter or session) and the session object of a session receiver.
:class:`azure.servicebus.aio.ServiceBusClient` satisfies :class:`ServiceBusSeam`
structurally (mypy checks it where the real client is built), and so does the
fake the test suite runs the adapter against. Messages crossing the seam are
the SDK's own types: :class:`~azure.servicebus.ServiceBusMessageBatch` going
out, :class:`~azure.servicebus.ServiceBusReceivedMessage` coming in.

Example:
    >>> from queue_runtime.providers.azure.sdk import ServiceBusSeam
    >>> from azure.servicebus.aio import ServiceBusClient
    >>> hasattr(ServiceBusClient, "get_queue_receiver") and hasattr(ServiceBusSeam, "close")
    True
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSessionFilter,
    ServiceBusSubQueue,
)

__all__ = ["ReceiverSeam", "SenderSeam", "ServiceBusSeam", "SessionSeam"]


class SessionSeam(Protocol):
    """``ServiceBusSession``: the lock and state of an accepted session."""

    @property
    def session_id(self) -> str: ...

    @property
    def locked_until_utc(self) -> datetime | None: ...

    async def get_state(self, *, timeout: float | None = None) -> bytes: ...

    async def set_state(
        self, state: str | bytes | bytearray | None, *, timeout: float | None = None
    ) -> Any: ...

    async def renew_lock(self, *, timeout: float | None = None) -> datetime: ...


class ReceiverSeam(Protocol):
    """``ServiceBusReceiver``: receives in peek-lock and settles what it received."""

    @property
    def session(self) -> SessionSeam: ...

    async def __aenter__(self) -> Any: ...

    async def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]: ...

    async def peek_messages(
        self, max_message_count: int = 1, *, sequence_number: int = 0, timeout: float | None = None
    ) -> list[ServiceBusReceivedMessage]: ...

    async def complete_message(self, message: ServiceBusReceivedMessage) -> None: ...

    async def abandon_message(self, message: ServiceBusReceivedMessage) -> None: ...

    async def dead_letter_message(
        self,
        message: ServiceBusReceivedMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None: ...

    async def renew_message_lock(
        self, message: ServiceBusReceivedMessage, *, timeout: float | None = None
    ) -> datetime: ...

    async def close(self) -> None: ...


class SenderSeam(Protocol):
    """``ServiceBusSender``: size-bounded batches, scheduling and cancelling."""

    async def create_message_batch(
        self, max_size_in_bytes: int | None = None
    ) -> ServiceBusMessageBatch: ...

    async def send_messages(
        self,
        message: ServiceBusMessage | ServiceBusMessageBatch,
        *,
        timeout: float | None = None,
    ) -> None: ...

    async def schedule_messages(
        self,
        messages: list[ServiceBusMessage],
        schedule_time_utc: datetime,
        *,
        timeout: float | None = None,
    ) -> list[int]: ...

    async def cancel_scheduled_messages(
        self, sequence_numbers: list[int], *, timeout: float | None = None
    ) -> None: ...

    async def close(self) -> None: ...


class ServiceBusSeam(Protocol):
    """``ServiceBusClient``: one connection, handing out senders and receivers per queue."""

    def get_queue_sender(self, queue_name: str) -> SenderSeam: ...

    def get_queue_receiver(
        self,
        queue_name: str,
        *,
        session_id: str | ServiceBusSessionFilter | None = None,
        sub_queue: ServiceBusSubQueue | str | None = None,
        receive_mode: ServiceBusReceiveMode | str = ServiceBusReceiveMode.PEEK_LOCK,
        max_wait_time: float | None = None,
        prefetch_count: int = 0,
    ) -> ReceiverSeam: ...

    async def close(self) -> None: ...
