"""queue-runtime: reliable queue message processing for bots and services.

Azure Service Bus, AWS SQS, a durable SQLite file and an in-memory provider behind
one API, with per-session ordering, retries, circuit breaking and a dead-letter queue.

Example:
    >>> import asyncio
    >>> import queue_runtime as qr
    >>> async def main() -> bytes:
    ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
    ...         await client.send_message("orders", qr.Message(b"hello"))
    ...         msg = await client.receive_message("orders", timeout=1.0)
    ...         assert msg is not None
    ...         await client.complete_message(msg.receipt)
    ...         return msg.body
    >>> asyncio.run(main())
    b'hello'
"""

from queue_runtime.circuit import CircuitBreaker, CircuitBreakerConfig, CircuitState
from queue_runtime.client import QueueClient, SessionClient, create_client
from queue_runtime.clock import Clock, LoopClock, ManualClock, SystemClock
from queue_runtime.config import (
    AwsSqsConfig,
    AzureServiceBusConfig,
    InMemoryConfig,
    ProviderConfig,
    QueueConfig,
    Secret,
    SqliteConfig,
    TimeoutConfig,
    load_config,
)
from queue_runtime.crypto import (
    CryptoConfig,
    CryptoStats,
    EncryptionKey,
    EnvKeyProvider,
    KeyProvider,
    MessageCrypto,
    MultiKeyProvider,
    PlaintextPolicy,
    StaticKeyProvider,
    UndecryptableMessage,
    is_encrypted,
)
from queue_runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    BatchTooLargeError,
    CircuitOpenError,
    ConfigurationError,
    ConnectionFailedError,
    CryptoError,
    DecryptionFailedError,
    InvalidEnvelopeError,
    InvalidReceiptError,
    KeyNotFoundError,
    MessageExpiredError,
    MessageTooLargeError,
    NonceReusedError,
    OperationTimeoutError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
    SessionNotFoundError,
    SessionsNotSupportedError,
    ThrottledError,
    UnencryptedMessageError,
    UnsupportedVersionError,
    ValidationError,
)
from queue_runtime.messages import (
    Message,
    MessageId,
    QueueName,
    ReceiptHandle,
    ReceivedMessage,
    SessionId,
)
from queue_runtime.provider import (
    Capabilities,
    ProviderType,
    QueueProvider,
    SessionProvider,
    SessionReceiver,
    SessionSupport,
    register_provider,
)
from queue_runtime.retry import Backoff, RetryPolicy

__version__ = "0.1.0"

from queue_runtime.health import HealthReport, HealthStatus
from queue_runtime.session_keys import (
    CompositeKey,
    Fallback,
    MessageFields,
    NoOrdering,
    SessionKeyStrategy,
    SingleField,
)
from queue_runtime.telemetry import Telemetry

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "AwsSqsConfig",
    "AzureServiceBusConfig",
    "Backoff",
    "BatchTooLargeError",
    "Capabilities",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CompositeKey",
    "ConfigurationError",
    "ConnectionFailedError",
    "CryptoConfig",
    "CryptoError",
    "CryptoStats",
    "DecryptionFailedError",
    "EncryptionKey",
    "EnvKeyProvider",
    "Fallback",
    "HealthReport",
    "HealthStatus",
    "InMemoryConfig",
    "InvalidEnvelopeError",
    "InvalidReceiptError",
    "KeyNotFoundError",
    "KeyProvider",
    "LoopClock",
    "ManualClock",
    "Message",
    "MessageCrypto",
    "MessageExpiredError",
    "MessageFields",
    "MessageId",
    "MessageTooLargeError",
    "MultiKeyProvider",
    "NoOrdering",
    "NonceReusedError",
    "OperationTimeoutError",
    "PlaintextPolicy",
    "ProviderConfig",
    "ProviderType",
    "QueueClient",
    "QueueConfig",
    "QueueError",
    "QueueName",
    "QueueNotFoundError",
    "QueueProvider",
    "ReceiptHandle",
    "ReceivedMessage",
    "RetryPolicy",
    "Secret",
    "SessionClient",
    "SessionId",
    "SessionKeyStrategy",
    "SessionLockLostError",
    "SessionLockedError",
    "SessionNotFoundError",
    "SessionProvider",
    "SessionReceiver",
    "SessionSupport",
    "SessionsNotSupportedError",
    "SingleField",
    "SqliteConfig",
    "StaticKeyProvider",
    "SystemClock",
    "Telemetry",
    "ThrottledError",
    "TimeoutConfig",
    "UndecryptableMessage",
    "UnencryptedMessageError",
    "UnsupportedVersionError",
    "ValidationError",
    "create_client",
    "is_encrypted",
    "load_config",
    "register_provider",
]
