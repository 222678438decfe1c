"""The error tree: every failure the runtime reports is a :class:`QueueError`.

Each error says whether it is worth retrying (``transient``), may carry a
``retry_after`` hint in seconds, and carries context (operation, queue,
message id) for logs. Context never holds secrets or message bodies.

Provider adapters map SDK exceptions onto this tree and chain the original
(``raise ... from exc``). Unknown provider errors are *not* transient.

Example:
    >>> import queue_runtime as qr
    >>> err = qr.ThrottledError("slow down", operation="send", queue="orders", retry_after=2.0)
    >>> err.transient, err.retry_after
    (True, 2.0)
    >>> str(err)
    'slow down (operation=send, queue=orders, retry_after=2)'
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BatchTooLargeError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConnectionFailedError",
    "CryptoError",
    "DecryptionFailedError",
    "InvalidEnvelopeError",
    "InvalidReceiptError",
    "KeyNotFoundError",
    "MessageExpiredError",
    "MessageTooLargeError",
    "NonceReusedError",
    "OperationTimeoutError",
    "QueueError",
    "QueueNotFoundError",
    "SessionLockLostError",
    "SessionLockedError",
    "SessionNotFoundError",
    "SessionsNotSupportedError",
    "ThrottledError",
    "UnencryptedMessageError",
    "UnsupportedVersionError",
    "ValidationError",
]


class QueueError(Exception):
    """Root of every error raised by queue-runtime.

    ``transient`` is a class default that an instance may override (an adapter
    that knows better can say so). ``retry_after`` is the provider's hint, in
    seconds, and wins over the retry policy's own delay.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        queue: str | None = None,
        message_id: str | None = None,
        retry_after: float | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.queue = queue
        self.message_id = message_id
        self.retry_after = retry_after
        if transient is not None:
            self.transient = transient

    @property
    def context(self) -> dict[str, str]:
        """The non-empty context fields (and ``retry_after``), for structured logs."""
        fields = {
            "operation": self.operation,
            "queue": self.queue,
            "message_id": self.message_id,
            "retry_after": None if self.retry_after is None else f"{self.retry_after:g}",
        }
        return {key: value for key, value in fields.items() if value is not None}

    def with_context(
        self,
        *,
        operation: str | None = None,
        queue: str | None = None,
        message_id: str | None = None,
    ) -> QueueError:
        """Fill in context fields that are still empty; returns ``self``."""
        self.operation = self.operation or operation
        self.queue = self.queue or queue
        self.message_id = self.message_id or message_id
        return self

    def __str__(self) -> str:
        context = ", ".join(f"{key}={value}" for key, value in self.context.items())
        return f"{self.message} ({context})" if context else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# -- transient --------------------------------------------------------------


class ConnectionFailedError(QueueError):
    """The provider could not be reached (network, DNS, TLS, connection reset)."""

    transient = True


class OperationTimeoutError(QueueError):
    """An operation did not finish within its timeout."""

    transient = True


class ThrottledError(QueueError):
    """The provider asked us to slow down (HTTP 429, throttling, server busy, quota)."""

    transient = True


class SessionLockedError(QueueError):
    """The session is locked by another consumer; try again later or another session."""

    transient = True


class CircuitOpenError(QueueError):
    """The circuit breaker is open: calls fail fast until ``retry_after`` has passed."""

    transient = True


# -- permanent --------------------------------------------------------------


class ConfigurationError(QueueError, ValueError):
    """The configuration is invalid; ``field`` names the offending setting."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class ValidationError(QueueError, ValueError):
    """An identifier or argument is invalid; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None, **context: str | None) -> None:
        super().__init__(f"{field}: {message}" if field else message, **context)  # type: ignore[arg-type]
        self.field = field


class QueueNotFoundError(QueueError):
    """The queue does not exist. Nothing was sent."""

    def __init__(self, queue: str, *, operation: str | None = None) -> None:
        super().__init__(f"queue {queue!r} does not exist", operation=operation, queue=queue)


class AuthenticationError(QueueError):
    """The credentials were rejected or are missing."""


class AuthorizationError(QueueError):
    """The credentials are valid but lack permission for the operation."""


class MessageTooLargeError(QueueError):
    """A message exceeds the provider's size limit. Nothing was sent or truncated."""

    def __init__(
        self,
        size: int,
        max_size: int,
        *,
        operation: str | None = None,
        queue: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(
            f"message is {size} bytes, the limit is {max_size} bytes",
            operation=operation,
            queue=queue,
            message_id=message_id,
        )
        self.size = size
        self.max_size = max_size


class BatchTooLargeError(QueueError):
    """A batch has more messages (or bytes) than one provider call accepts."""


class SessionsNotSupportedError(QueueError):
    """The queue (or provider) has no sessions, but a session operation was asked for."""


class UnencryptedMessageError(QueueError):
    """A plaintext message arrived while the plaintext policy is ``REJECT``."""


# -- locks and sessions -----------------------------------------------------


class InvalidReceiptError(QueueError):
    """The receipt is no longer valid: lock lost or expired, already settled, or foreign.

    ``settled`` is how the message was already settled through this very receipt
    (``"complete"``, ``"abandon"`` or ``"dead_letter"``), when the provider can
    prove it; ``None`` when the lock was lost or the provider cannot tell. The
    client uses it to recognise a retried settle whose first attempt took effect
    although its answer was lost.

    Example:
        >>> error = InvalidReceiptError("already completed", settled="complete")
        >>> error.settled, InvalidReceiptError("lock expired").settled
        ('complete', None)
    """

    def __init__(
        self,
        message: str,
        *,
        settled: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.settled = settled


class SessionLockLostError(QueueError):
    """The session lock expired or was taken by another consumer."""


class SessionNotFoundError(QueueError):
    """The session does not exist (or is closed)."""


# -- crypto -----------------------------------------------------------------


class CryptoError(QueueError):
    """Base of every encryption error. Never retried: the same bytes fail again."""


class DecryptionFailedError(CryptoError):
    """The tag did not verify: wrong key, tampered bytes or mismatched associated data."""


class KeyNotFoundError(CryptoError):
    """No key with this id is known to the key provider."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"encryption key {key_id!r} is not available")
        self.key_id = key_id


class MessageExpiredError(CryptoError):
    """The envelope is older than the allowed age, or too far in the future."""


class NonceReusedError(CryptoError):
    """The nonce was seen before: a replayed message."""


class UnsupportedVersionError(CryptoError):
    """The envelope's format version is not one this runtime reads."""


class InvalidEnvelopeError(CryptoError):
    """The envelope's structure is malformed (truncated, bad lengths, bad key id)."""
