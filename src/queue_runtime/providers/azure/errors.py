"""Service Bus and azure-core exceptions, translated into the runtime's error tree.

:func:`translate` maps one exception to a :class:`~queue_runtime.errors.QueueError`;
callers raise the result ``from`` the original so the SDK's exception stays
chained. Text taken from the SDK is scrubbed of the provider's secrets first.

=============================================  ==================================
SDK exception                                  runtime error
=============================================  ==================================
``MessageLockLostError``, ``MessageAlreadySettled``,
``MessageNotFoundError``                       ``InvalidReceiptError``
``SessionLockLostError``                       ``SessionLockLostError``
``SessionCannotBeLockedError``                 ``SessionLockedError`` (transient)
``MessagingEntityNotFoundError``,
``ResourceNotFoundError``                      ``QueueNotFoundError``
``MessageSizeExceededError``                   ``MessageTooLargeError``
``ServiceBusServerBusyError``                  ``ThrottledError`` (retry after 10 s)
``ServiceBusQuotaExceededError``, HTTP 429     ``ThrottledError``
``ServiceBusAuthenticationError``,
``ClientAuthenticationError``, HTTP 401        ``AuthenticationError``
``ServiceBusAuthorizationError``, HTTP 403     ``AuthorizationError``
``ServiceBusConnectionError``,
``ServiceBusCommunicationError``,
``ServiceRequestError``, ``ServiceResponseError``,
``OSError``                                    ``ConnectionFailedError``
``OperationTimeoutError``, ``TimeoutError``,
``ServiceRequestTimeoutError``                 ``OperationTimeoutError``
anything else                                  ``QueueError`` (not transient)
=============================================  ==================================

Example:
    >>> from azure.servicebus.exceptions import ServiceBusServerBusyError
    >>> from queue_runtime.providers.azure.errors import translate
    >>> error = translate(ServiceBusServerBusyError(), operation="send", queue="jobs")
    >>> type(error).__name__, error.transient, error.retry_after
    ('ThrottledError', True, 10.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypedDict

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusQuotaExceededError,
    ServiceBusServerBusyError,
    SessionCannotBeLockedError,
)
from azure.servicebus.exceptions import (
    OperationTimeoutError as SdkOperationTimeoutError,
)
from azure.servicebus.exceptions import (
    SessionLockLostError as SdkSessionLockLostError,
)

from queue_runtime.config import Secret
from queue_runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    ConnectionFailedError,
    InvalidReceiptError,
    MessageTooLargeError,
    OperationTimeoutError,
    QueueError,
    QueueNotFoundError,
    SessionLockedError,
    SessionLockLostError,
    ThrottledError,
    ValidationError,
)

__all__ = [
    "SDK_ERRORS",
    "SERVER_BUSY_RETRY_AFTER",
    "refuses_plain_receivers",
    "refuses_session_receivers",
    "scrub",
    "translate",
]

SDK_ERRORS: Final = (AzureError, ValueError, OSError)
"""What SDK calls raise (``MessageAlreadySettled`` is a ``ValueError``; ``TimeoutError``
is an ``OSError``)."""

SERVER_BUSY_RETRY_AFTER: Final = 10.0
"""Seconds to wait after "server busy": the service's documented back-off."""

_MAX_DETAIL: Final = 500

# What the service says when a receiver of the wrong kind attaches to a queue.
_NEEDS_SESSIONS: Final = "requires sessions"
_NO_SESSIONS: Final = "does not require sessions"


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every secret value replaced by ``***`` (and cut to a sane length)."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, "***")
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def refuses_plain_receivers(exc: BaseException) -> bool:
    """True if the service refused a plain receiver because the queue requires sessions."""
    return (
        isinstance(exc, ServiceBusError)
        and _NEEDS_SESSIONS in str(exc).lower()
        and _NO_SESSIONS not in str(exc).lower()
    )


def refuses_session_receivers(exc: BaseException) -> bool:
    """True if the service refused a session receiver because the queue has no sessions."""
    return isinstance(exc, ServiceBusError) and _NO_SESSIONS in str(exc).lower()


def translate(
    exc: BaseException,
    *,
    operation: str,
    queue: str,
    message_id: str | None = None,
    secrets: Iterable[Secret] = (),
    size: int | None = None,
    max_size: int | None = None,
) -> QueueError:
    """The runtime error for ``exc``; raise it ``from exc``.

    ``size``/``max_size`` fill :class:`MessageTooLargeError` when the service
    refused a message for its size. ``ValueError`` is the SDK's way of saying a
    handler was shut down or a message was peeked, settled or malformed: it maps
    to :class:`InvalidReceiptError` for settlement operations and to
    :class:`ValidationError` otherwise.
    """
    detail = scrub(str(exc) or type(exc).__name__, secrets)
    context: _Context = {"operation": operation, "queue": queue, "message_id": message_id}

    if isinstance(exc, MessageAlreadySettled | MessageLockLostError | MessageNotFoundError):
        return InvalidReceiptError(f"the lock was lost or the message settled: {detail}", **context)
    if isinstance(exc, SdkSessionLockLostError):
        return SessionLockLostError(f"the session lock was lost: {detail}", **context)
    if isinstance(exc, SessionCannotBeLockedError):
        return SessionLockedError(f"the session is locked by another consumer: {detail}", **context)
    if isinstance(exc, MessagingEntityNotFoundError | ResourceNotFoundError):
        return QueueNotFoundError(queue, operation=operation)
    if isinstance(exc, MessageSizeExceededError):
        return MessageTooLargeError(
            size if size is not None else -1,
            max_size if max_size is not None else -1,
            operation=operation,
            queue=queue,
            message_id=message_id,
        )
    if isinstance(exc, ServiceBusServerBusyError):
        return ThrottledError(
            f"Service Bus is busy: {detail}", retry_after=SERVER_BUSY_RETRY_AFTER, **context
        )
    if isinstance(exc, ServiceBusQuotaExceededError):
        return ThrottledError(f"a Service Bus quota is exhausted: {detail}", **context)
    if isinstance(exc, ServiceBusAuthenticationError | ClientAuthenticationError):
        return AuthenticationError(f"authentication failed: {detail}", **context)
    if isinstance(exc, ServiceBusAuthorizationError):
        return AuthorizationError(f"not authorized: {detail}", **context)
    if isinstance(
        exc,
        SdkOperationTimeoutError
        | TimeoutError
        | ServiceRequestTimeoutError
        | ServiceResponseTimeoutError,
    ):
        return OperationTimeoutError(f"Service Bus timed out: {detail}", **context)
    if isinstance(
        exc,
        ServiceBusConnectionError
        | ServiceBusCommunicationError
        | ServiceRequestError
        | ServiceResponseError
        | OSError,
    ):
        return ConnectionFailedError(f"cannot reach Service Bus: {detail}", **context)
    if isinstance(exc, HttpResponseError):
        return _from_status(exc.status_code, detail, queue, context)
    if isinstance(exc, ValueError):
        if operation in _SETTLING:
            return InvalidReceiptError(f"the message cannot be settled: {detail}", **context)
        return ValidationError(detail, **context)
    if isinstance(exc, AzureError):
        return QueueError(f"Service Bus error: {detail}", **context)
    return QueueError(f"unexpected {type(exc).__name__}: {detail}", **context)


_SETTLING: Final = frozenset({"complete", "abandon", "dead_letter", "renew_lock"})


class _Context(TypedDict):
    operation: str
    queue: str
    message_id: str | None


def _from_status(status: int | None, detail: str, queue: str, context: _Context) -> QueueError:
    if status == 401:
        return AuthenticationError(f"authentication failed: {detail}", **context)
    if status == 403:
        return AuthorizationError(f"not authorized: {detail}", **context)
    if status == 404:
        return QueueNotFoundError(queue, operation=context["operation"])
    if status == 408:
        return OperationTimeoutError(f"Service Bus timed out: {detail}", **context)
    if status in (429, 503):
        return ThrottledError(f"Service Bus is throttling: {detail}", **context)
    if status is not None and status >= 500:
        return ConnectionFailedError(f"Service Bus failed: {detail}", **context)
    return QueueError(f"Service Bus error: {detail}", **context)
