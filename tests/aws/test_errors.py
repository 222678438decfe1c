"""botocore failures map onto the error tree, chained, and never carry secrets."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

import queue_runtime as qr
from queue_runtime.providers.aws.errors import map_error, scrub


def client_error(
    code: str,
    message: str = "details",
    *,
    status: int = 400,
    query_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> ClientError:
    error: dict[str, Any] = {"Code": code, "Message": message}
    if query_code is not None:
        error["QueryErrorCode"] = query_code
    response: dict[str, Any] = {
        "Error": error,
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "SendMessage")


CASES: list[tuple[str, BaseException, type[qr.QueueError], bool]] = [
    (
        "json-protocol-missing-queue",
        client_error("AWS.SimpleQueueService.NonExistentQueue", query_code="QueueDoesNotExist"),
        qr.QueueNotFoundError,
        False,
    ),
    ("query-code-missing-queue", client_error("QueueDoesNotExist"), qr.QueueNotFoundError, False),
    ("bad-receipt", client_error("ReceiptHandleIsInvalid"), qr.InvalidReceiptError, False),
    ("not-inflight", client_error("MessageNotInflight"), qr.InvalidReceiptError, False),
    ("request-throttled", client_error("RequestThrottled"), qr.ThrottledError, True),
    ("throttling-exception", client_error("ThrottlingException"), qr.ThrottledError, True),
    ("http-429", client_error("429", "", status=429), qr.ThrottledError, True),
    ("http-503", client_error("503", "Service Unavailable", status=503), qr.ThrottledError, True),
    ("over-limit", client_error("OverLimit"), qr.ThrottledError, True),
    ("internal-error", client_error("InternalError", status=500), qr.QueueError, True),
    ("access-denied", client_error("AccessDenied", status=403), qr.AuthorizationError, False),
    ("kms-denied", client_error("KmsAccessDenied"), qr.AuthorizationError, False),
    ("bad-token", client_error("InvalidClientTokenId", status=403), qr.AuthenticationError, False),
    (
        "bad-signature",
        client_error("SignatureDoesNotMatch", status=403),
        qr.AuthenticationError,
        False,
    ),
    (
        "unrecognized-client",
        client_error("UnrecognizedClientException", status=403),
        qr.AuthenticationError,
        False,
    ),
    ("invalid-parameter", client_error("InvalidParameterValue"), qr.ValidationError, False),
    ("batch-too-long", client_error("BatchRequestTooLong"), qr.BatchTooLargeError, False),
    ("unknown-code", client_error("SomethingNew"), qr.QueueError, False),
    ("no-credentials", NoCredentialsError(), qr.AuthenticationError, False),
    (
        "partial-credentials",
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        qr.AuthenticationError,
        False,
    ),
    (
        "connection-refused",
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        qr.ConnectionFailedError,
        True,
    ),
    (
        "connect-timeout",
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        qr.ConnectionFailedError,
        True,
    ),
    (
        "read-timeout",
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        qr.OperationTimeoutError,
        True,
    ),
    ("unknown-exception", RuntimeError("surprise"), qr.QueueError, False),
]


@pytest.mark.parametrize(
    ("exc", "expected", "transient"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_botocore_errors_map_onto_the_error_tree(
    exc: BaseException, expected: type[qr.QueueError], transient: bool
) -> None:
    error = map_error(exc, operation="send", queue="orders")

    assert type(error) is expected
    assert error.transient is transient
    assert error.operation == "send"


def test_a_missing_queue_is_named() -> None:
    error = map_error(client_error("QueueDoesNotExist"), operation="send", queue="orders")

    assert isinstance(error, qr.QueueNotFoundError)
    assert error.queue == "orders"
    assert "orders" in str(error)


def test_invalid_parameter_on_a_receipt_call_means_a_bad_receipt() -> None:
    exc = client_error("InvalidParameterValue", "Value x for parameter ReceiptHandle is invalid")

    error = map_error(exc, operation="complete", queue="orders", receipt=True)

    assert isinstance(error, qr.InvalidReceiptError)


def test_retry_after_is_taken_from_the_response_and_purges_wait_a_minute() -> None:
    throttled = client_error("RequestThrottled", headers={"retry-after": "3"})
    purge = client_error("AWS.SimpleQueueService.PurgeQueueInProgress")

    assert map_error(throttled, operation="send", queue="q").retry_after == 3.0
    assert map_error(purge, operation="purge", queue="q").retry_after == 60.0


def test_a_missing_region_is_a_configuration_error_naming_the_field() -> None:
    error = map_error(NoRegionError(), operation="connect", queue=None)

    assert isinstance(error, qr.ConfigurationError)
    assert error.field == "aws.region"


def test_authentication_failures_do_not_echo_the_service_message() -> None:
    token = "FQoGZXIvYXdzEXAMPLE-session-token"
    exc = client_error(
        "SignatureDoesNotMatch",
        f"The canonical string ... x-amz-security-token:{token} ...",
        status=403,
    )

    error = map_error(exc, operation="send", queue="orders", secrets=(token,))

    assert token not in str(error)
    assert token not in str(exc), "the chained original is scrubbed too"
    assert token not in repr(exc.response)


def test_secrets_are_scrubbed_from_any_error_text() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    exc = client_error("SomethingNew", f"echo {secret}")

    error = map_error(exc, operation="send", queue="orders", secrets=(secret,))

    assert secret not in str(error)
    assert secret not in str(exc)
    assert scrub(f"a{secret}b", (secret,)) == "a***b"


def test_connection_errors_do_not_echo_the_endpoint() -> None:
    exc = EndpointConnectionError(endpoint_url="http://user:pa55word@sqs.internal:9324/")

    error = map_error(exc, operation="send", queue="orders", secrets=("pa55word",))

    assert "pa55word" not in str(error)
    assert "sqs.internal" not in str(error)
    assert "pa55word" not in str(exc)
