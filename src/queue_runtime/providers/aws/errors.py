"""Map botocore failures onto the queue-runtime error tree.

Every SQS call of the adapter goes through :func:`map_error`, which turns a
``botocore`` exception into a :class:`~queue_runtime.errors.QueueError` with
the operation and queue filled in; the adapter raises it ``from`` the original.

SQS speaks the JSON protocol in current botocore, where an error carries two
codes: the query-compatible ``Code`` (``AWS.SimpleQueueService.NonExistentQueue``)
and ``QueryErrorCode`` (``QueueDoesNotExist``). Both are looked up.

Credentials never reach an error: messages of authentication failures are not
echoed (AWS may include the canonical request, which holds the session token),
and :func:`scrub` replaces the configured secret values wherever they appear,
including in the chained botocore exception.

Example:
    >>> from botocore.exceptions import ClientError
    >>> exc = ClientError({"Error": {"Code": "RequestThrottled", "Message": "slow"},
    ...                    "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendMessage")
    >>> error = map_error(exc, operation="send", queue="orders")
    >>> type(error).__name__, error.transient
    ('ThrottledError', True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    TokenRetrievalError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from queue_runtime.errors import (
    AuthenticationError,
    AuthorizationError,
    BatchTooLargeError,
    ConfigurationError,
    ConnectionFailedError,
    InvalidReceiptError,
    OperationTimeoutError,
    QueueError,
    QueueNotFoundError,
    ThrottledError,
    ValidationError,
)

__all__ = ["error_code", "map_code", "map_error", "scrub"]

_PREFIXES: Final = ("AWS.SimpleQueueService.", "com.amazonaws.sqs#", "com.amazon.coral.service#")

NOT_FOUND: Final = frozenset({"QueueDoesNotExist", "NonExistentQueue"})
INVALID_RECEIPT: Final = frozenset(
    {"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle"}
)
THROTTLING: Final = frozenset(
    {
        "RequestThrottled",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "OverLimit",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "PurgeQueueInProgress",
    }
)
SERVER_FAULTS: Final = frozenset({"InternalError", "InternalFailure", "InternalServerError"})
AUTHENTICATION: Final = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClient",
        "UnrecognizedClientException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "AuthFailure",
        "InvalidSecurity",
    }
)
AUTHORIZATION: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "KmsAccessDenied",
        "KMS.AccessDeniedException",
        "AuthorizationError",
        "UnauthorizedOperation",
    }
)
VALIDATION: Final = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "InvalidMessageContents",
        "InvalidBatchEntryId",
        "BatchEntryIdsNotDistinct",
        "EmptyBatchRequest",
        "TooManyEntriesInBatchRequest",
        "UnsupportedOperation",
        "InvalidAddress",
        "InvalidIdFormat",
        "ValidationError",
        "ValidationException",
        "InvalidAction",
        "SerializationException",
    }
)
BATCH_TOO_LARGE: Final = frozenset({"BatchRequestTooLong"})
_PURGE_INTERVAL: Final = 60.0


def _strip(code: str) -> str:
    for prefix in _PREFIXES:
        if code.startswith(prefix):
            return code[len(prefix) :]
    return code


def error_code(exc: ClientError) -> tuple[set[str], int | None, str]:
    """The codes (both spellings, prefixes stripped), HTTP status and message of ``exc``."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    codes = {_strip(str(error[key])) for key in ("Code", "QueryErrorCode") if error.get(key)}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return codes, status if isinstance(status, int) else None, str(error.get("Message") or "")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub_exception(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Remove secret values from ``exc`` in place, so the chained original is clean too."""
    if not secrets:
        return
    exc.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in exc.args)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict) and isinstance(error.get("Message"), str):
            error["Message"] = scrub(error["Message"], secrets)
    kwargs = getattr(exc, "kwargs", None)
    if isinstance(kwargs, dict):
        for key, value in list(kwargs.items()):
            if isinstance(value, str):
                kwargs[key] = scrub(value, secrets)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def map_code(
    codes: set[str],
    status: int | None,
    detail: str,
    *,
    operation: str,
    queue: str | None,
    message_id: str | None = None,
    receipt: bool = False,
    retry_after: float | None = None,
    secrets: tuple[str, ...] = (),
) -> QueueError:
    """The queue-runtime error for an SQS error code (request or batch entry).

    ``receipt`` says the request carried a receipt handle, so that
    ``InvalidParameterValue`` means a bad or expired receipt.
    """
    shown = sorted(codes)[0] if codes else (str(status) if status else "unknown")
    detail = _first_line(scrub(detail, secrets))
    text = f"SQS {operation} failed: {shown}" + (f": {detail}" if detail else "")
    context: dict[str, Any] = {"operation": operation, "queue": queue, "message_id": message_id}
    if codes & NOT_FOUND:
        error: QueueError = QueueNotFoundError(queue or "?", operation=operation)
        error.message_id = message_id
        return error
    if codes & INVALID_RECEIPT or (receipt and "InvalidParameterValue" in codes):
        return InvalidReceiptError(
            f"SQS rejected the receipt: {shown} (the lock expired or the message was settled)",
            **context,
        )
    if codes & AUTHENTICATION:
        # Not echoed: AWS may include the canonical request (with the session token).
        return AuthenticationError(f"SQS rejected the credentials: {shown}", **context)
    if codes & AUTHORIZATION:
        return AuthorizationError(
            f"the credentials may not call {operation} on this queue: {shown}", **context
        )
    if "PurgeQueueInProgress" in codes:
        return ThrottledError(
            "SQS allows one purge per queue every 60 seconds",
            retry_after=retry_after or _PURGE_INTERVAL,
            **context,
        )
    if codes & THROTTLING or status in (429, 503):
        return ThrottledError(text, retry_after=retry_after, **context)
    if codes & BATCH_TOO_LARGE:
        return BatchTooLargeError(text, **context)
    if codes & VALIDATION:
        return ValidationError(text, **context)
    if codes & SERVER_FAULTS or (status is not None and status in (500, 502, 504)):
        return QueueError(text, transient=True, retry_after=retry_after, **context)
    return QueueError(text, transient=False, **context)


def _retry_after(exc: ClientError) -> float | None:
    headers = ((getattr(exc, "response", None) or {}).get("ResponseMetadata") or {}).get(
        "HTTPHeaders"
    ) or {}
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def map_error(
    exc: BaseException,
    *,
    operation: str,
    queue: str | None,
    message_id: str | None = None,
    receipt: bool = False,
    secrets: tuple[str, ...] = (),
) -> QueueError:
    """Translate a botocore (or aiohttp-level) exception; unknown errors are not transient.

    Secret values in ``secrets`` are removed from ``exc`` itself as well, because the
    caller chains it (``raise map_error(exc, ...) from exc``).
    """
    _scrub_exception(exc, secrets)
    context: dict[str, Any] = {"operation": operation, "queue": queue, "message_id": message_id}
    if isinstance(exc, QueueError):
        return exc.with_context(operation=operation, queue=queue, message_id=message_id)
    if isinstance(exc, ClientError):
        codes, status, detail = error_code(exc)
        return map_code(
            codes,
            status,
            detail,
            operation=operation,
            queue=queue,
            message_id=message_id,
            receipt=receipt,
            retry_after=_retry_after(exc),
            secrets=secrets,
        )
    name = type(exc).__name__
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthenticationError(
            f"no usable AWS credentials ({name}): set aws.access_key_id and "
            "aws.secret_access_key, or configure the default credential chain",
            **context,
        )
    if isinstance(exc, CredentialRetrievalError | TokenRetrievalError):
        return AuthenticationError(f"could not obtain AWS credentials ({name})", **context)
    if isinstance(exc, NoRegionError):
        return ConfigurationError(
            "no AWS region: set aws.region (QUEUE_RUNTIME_AWS_REGION), or AWS_DEFAULT_REGION "
            "or a profile region for the default chain",
            field="aws.region",
        )
    if isinstance(exc, ReadTimeoutError):
        return OperationTimeoutError(f"SQS did not answer in time ({name})", **context)
    if isinstance(exc, ConnectTimeoutError):
        return ConnectionFailedError(f"timed out connecting to SQS ({name})", **context)
    if isinstance(
        exc, EndpointConnectionError | BotoConnectionError | ConnectionClosedError | HTTPClientError
    ):
        # The endpoint URL is not echoed: it may carry user:password.
        return ConnectionFailedError(f"cannot reach SQS ({name})", **context)
    if isinstance(exc, ParamValidationError):
        return ValidationError(
            f"invalid request parameters: {_first_line(scrub(str(exc), secrets))}", **context
        )
    if isinstance(exc, BotoCoreError):
        return QueueError(f"SQS {operation} failed ({name})", transient=False, **context)
    if isinstance(exc, OSError):
        return ConnectionFailedError(f"cannot reach SQS ({name})", **context)
    return QueueError(f"SQS {operation} failed ({name})", transient=False, **context)
