"""What a provider must do: the small interface every adapter implements.

Providers only translate between this interface and their service; retry,
circuit breaking, validation of user input, encryption and telemetry live in
:class:`~queue_runtime.client.QueueClient`. Each provider call maps to (at
most) one service request, so ``send`` never receives more than
``capabilities.max_batch_size`` messages — the client splits.

A provider may also define ``check_messages(queue, messages)``, raising for
any message it would refuse; the client calls it before sending the first
batch, so that a send fails with nothing sent. And ``complete_many(receipts)``
(see :class:`SupportsCompleteMany`), which completes several messages in as
few requests as the service allows; without it the client completes them one
by one.

Providers are found through a registry keyed by the config's ``kind``; the
built-in adapters are imported lazily so that ``import queue_runtime`` works
without the cloud SDKs installed.

Example:
    >>> from queue_runtime.provider import SessionSupport
    >>> SessionSupport.EMULATED.value
    'emulated'
"""

from __future__ import annotations

import enum
import importlib
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from queue_runtime.clock import Clock
from queue_runtime.errors import ConfigurationError, QueueError
from queue_runtime.lifecycle import Closing
from queue_runtime.messages import Message, QueueName, ReceiptHandle, ReceivedMessage, SessionId

__all__ = [
    "MAX_DELIVERY_REASON",
    "TTL_EXPIRED_REASON",
    "Capabilities",
    "ProviderBase",
    "ProviderType",
    "QueueInfo",
    "QueueProvider",
    "SessionProvider",
    "SessionReceiver",
    "SessionSupport",
    "SettledReceipts",
    "SupportsCompleteMany",
    "SupportsMessageCheck",
    "SupportsQueueInfo",
    "create_provider",
    "register_provider",
]


MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"
"""The dead-letter reason a provider gives a message delivered too often without success."""
TTL_EXPIRED_REASON = "TTLExpired"
"""The dead-letter reason a provider gives a message whose time to live passed."""


KEEP_SETTLED = 10_000
"""Receipts a provider remembers having settled (the most recent ones)."""


class SettledReceipts:
    """The receipt tokens a provider settled itself, and how (bounded, newest kept).

    A settle whose answer was lost took effect; its retry finds the receipt
    gone. With this record the provider can say so: it raises
    :class:`~queue_runtime.errors.InvalidReceiptError` with ``settled`` set,
    and the client counts the retried settle as done instead of as a lost
    lock. Tokens are random and never reused, so an entry cannot vouch for
    another delivery.

    Example:
        >>> settled = SettledReceipts(limit=2)
        >>> settled.add("t1", "complete"); settled.add("t2", "abandon")
        >>> settled.add("t3", "complete")
        >>> settled.how("t1"), settled.how("t3")
        (None, 'complete')
    """

    def __init__(self, limit: int = KEEP_SETTLED) -> None:
        self._limit = limit
        self._how: OrderedDict[str, str] = OrderedDict()

    def add(self, token: str, how: str) -> None:
        """Remember that ``token`` was settled by ``how`` (an operation name)."""
        self._how[token] = how
        if len(self._how) > self._limit:
            self._how.popitem(last=False)

    def how(self, token: str) -> str | None:
        """How ``token`` was settled, or None if this provider does not know."""
        return self._how.get(token)


class ProviderType(enum.StrEnum):
    """Which service is behind the client; values are OTel ``messaging.system`` names."""

    MEMORY = "memory"
    SQLITE = "sqlite"
    AWS_SQS = "aws_sqs"
    AZURE_SERVICE_BUS = "servicebus"


class SessionSupport(enum.StrEnum):
    """How a queue orders messages by session."""

    NATIVE = "native"
    """Sessions are a service feature with their own locks (Azure Service Bus)."""
    EMULATED = "emulated"
    """Ordered groups the runtime turns into sessions (SQS FIFO, in-memory default)."""
    NONE = "none"
    """No ordering by session (standard SQS queues)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Fixed facts about a provider."""

    provider_type: ProviderType
    max_batch_size: int
    max_message_size: int
    max_delivery_count: int
    """Deliveries after which the provider (or the service behind it) dead-letters a
    message. The bot dead-letters after this many failed handlings, or fewer if told."""


class ProviderBase(Closing):
    """What every provider writes alike: a unique id, its fixed capabilities, and
    ``async with`` closing it (a provider writes only :meth:`aclose`).

    Example:
        >>> from queue_runtime.provider import Capabilities, ProviderBase, ProviderType
        >>> import asyncio
        >>> capabilities = Capabilities(ProviderType.MEMORY, 100, 262_144, 5)
        >>> async def main() -> tuple[bool, int]:
        ...     async with ProviderBase("memory", capabilities) as base:  # aclose() on exit
        ...         return base.provider_id.startswith("memory-"), base.capabilities.max_batch_size
        >>> asyncio.run(main())
        (True, 100)
    """

    def __init__(self, id_prefix: str, capabilities: Capabilities) -> None:
        self._id = f"{id_prefix}-{uuid.uuid4().hex[:12]}"
        self._capabilities = capabilities

    @property
    def provider_id(self) -> str:
        return self._id

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities


class SessionReceiver(Protocol):
    """A locked session: only its holder receives the session's messages."""

    @property
    def session_id(self) -> SessionId: ...

    @property
    def locked_until(self) -> datetime: ...

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]: ...

    async def renew_lock(self) -> datetime: ...

    async def get_state(self) -> bytes | None: ...

    async def set_state(self, state: bytes | None) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class QueueProvider(Protocol):
    """Peek-lock queue operations. Receipts are settled through the provider that issued them."""

    @property
    def provider_id(self) -> str:
        """Unique per provider instance; stamped into every receipt it issues."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def session_support(self, queue: QueueName) -> SessionSupport: ...

    async def send(self, queue: QueueName, messages: Sequence[Message]) -> None:
        """Send up to ``max_batch_size`` messages in one request."""
        ...

    async def receive(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        """Wait up to ``timeout`` seconds for messages; an empty list when none came."""
        ...

    async def complete(self, receipt: ReceiptHandle) -> None: ...

    async def abandon(self, receipt: ReceiptHandle, delay: float | None = None) -> None: ...

    async def dead_letter(
        self,
        receipt: ReceiptHandle,
        reason: str,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Move the message to the DLQ with ``reason`` and ``description``.

        ``properties`` are extra string attributes for the dead-lettered copy
        (the bot's failure record): every provider makes them readable in the
        ``attributes`` of messages received or peeked from the DLQ. A provider
        may drop some if the copy would not fit its size limits.
        """
        ...

    async def renew_lock(self, receipt: ReceiptHandle) -> datetime:
        """Extend the lock; returns the new expiry (and updates the receipt)."""
        ...

    async def receive_dead_letters(
        self, queue: QueueName, max_messages: int, timeout: float
    ) -> list[ReceivedMessage]:
        """Peek-lock messages from ``queue``'s DLQ; complete removes them from it."""
        ...

    async def peek_dead_letters(self, queue: QueueName, max_messages: int) -> list[ReceivedMessage]:
        """Read DLQ messages without locking them."""
        ...

    async def purge_dead_letters(self, queue: QueueName) -> int:
        """Delete everything in ``queue``'s DLQ; returns how many were removed (if known)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SessionProvider(QueueProvider, Protocol):
    """A provider that can lock sessions."""

    async def accept_session(
        self, queue: QueueName, session_id: SessionId | None, timeout: float
    ) -> SessionReceiver | None:
        """Lock a named session, or the next available one; ``None`` if none in time."""
        ...


ProviderFactory = Callable[[Any, Clock], QueueProvider]

_FACTORIES: dict[str, ProviderFactory | str] = {
    "memory": "queue_runtime.providers.memory:create_provider",
    "sqlite": "queue_runtime.providers.sqlite:create_provider",
    "aws": "queue_runtime.providers.aws:create_provider",
    "azure": "queue_runtime.providers.azure:create_provider",
}


def register_provider(kind: str, factory: ProviderFactory) -> None:
    """Make ``factory(config, clock)`` build the provider for configs whose ``kind`` is ``kind``."""
    _FACTORIES[kind] = factory


def create_provider(config: Any, clock: Clock) -> QueueProvider:
    """Build the provider for ``config`` (an ``InMemoryConfig``, ``SqliteConfig``, ...)."""
    kind = str(getattr(config, "kind", ""))
    factory = _FACTORIES.get(kind)
    if factory is None:
        raise ConfigurationError(
            f"no provider for {type(config).__name__}; known kinds: {', '.join(_FACTORIES)}",
            field="provider",
        )
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"the {kind!r} provider needs an optional extra: "
                f"pip install 'queue-runtime[{kind}]' ({exc})",
                field="provider",
            ) from exc
        factory = getattr(module, attribute)
        assert callable(factory)
        _FACTORIES[kind] = factory
    return factory(config, clock)


@runtime_checkable
class SupportsCompleteMany(Protocol):
    """The optional batch-complete hook (SQS: ``DeleteMessageBatch``).

    Returns one entry per receipt, in order: ``None`` if completed, else the
    error that kept it. Raises only if nothing was tried.
    """

    async def complete_many(
        self, receipts: Sequence[ReceiptHandle]
    ) -> Sequence[QueueError | None]: ...


@runtime_checkable
class SupportsMessageCheck(Protocol):
    """An optional hook: a provider's own, exact limits on what may be sent, checked by
    the client before a send (after its own checks), raising ``ValidationError`` or
    ``MessageTooLargeError``."""

    def check_messages(self, queue: QueueName, messages: Sequence[Message]) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What a provider can tell about a queue without receiving from it.

    Each count is ``None`` when the provider cannot tell. Cloud counts are
    approximate (SQS says so itself).
    """

    depth: int | None = None
    """Messages waiting to be received."""
    in_flight: int | None = None
    """Messages received and not yet settled (locked, invisible)."""
    dead_letter_depth: int | None = None
    """Messages in the queue's dead-letter queue."""


@runtime_checkable
class SupportsQueueInfo(Protocol):
    """The optional provider hook behind :func:`probe_queue`.

    ``queue_info`` must not receive, lock or otherwise consume a message, and
    raises the usual errors: :class:`~queue_runtime.errors.QueueNotFoundError`
    for a missing queue, authentication and connection errors as for any call.
    """

    async def queue_info(self, queue: QueueName) -> QueueInfo: ...
