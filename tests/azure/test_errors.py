"""Error mapping, with the SDK's real exception classes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from azure.servicebus._common.constants import (
    ERROR_CODE_MESSAGE_LOCK_LOST,
    ERROR_CODE_SERVER_BUSY,
    ERROR_CODE_SESSION_CANNOT_BE_LOCKED,
    ERROR_CODE_SESSION_LOCK_LOST,
    ERROR_CODE_TIMEOUT,
)
from azure.servicebus._pyamqp.error import ErrorCondition
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    MessageSizeExceededError,
    MessagingEntityDisabledError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusQuotaExceededError,
    ServiceBusServerBusyError,
    SessionCannotBeLockedError,
    SessionLockLostError,
)

import queue_runtime as qr
from queue_runtime.providers.azure.errors import (
    refuses_plain_receivers,
    refuses_session_receivers,
    translate,
)

from .conftest import PLANTED, World
from .fake_servicebus import NEEDS_PLAIN_RECEIVER, NEEDS_SESSION_RECEIVER, service_error


def _status(code: int) -> HttpResponseError:
    error = HttpResponseError(message=f"HTTP {code}")
    error.status_code = code
    return error


CASES: list[tuple[str, Callable[[], BaseException], type[qr.QueueError], bool]] = [
    ("lock lost", lambda: MessageLockLostError(), qr.InvalidReceiptError, False),
    ("settled", lambda: MessageAlreadySettled(action="complete"), qr.InvalidReceiptError, False),
    ("not found", lambda: MessageNotFoundError(), qr.InvalidReceiptError, False),
    ("session lost", lambda: SessionLockLostError(), qr.SessionLockLostError, False),
    ("session locked", lambda: SessionCannotBeLockedError(), qr.SessionLockedError, True),
    ("no entity", lambda: MessagingEntityNotFoundError(), qr.QueueNotFoundError, False),
    ("no resource", lambda: ResourceNotFoundError("gone"), qr.QueueNotFoundError, False),
    ("size", lambda: MessageSizeExceededError(), qr.MessageTooLargeError, False),
    ("busy", lambda: ServiceBusServerBusyError(), qr.ThrottledError, True),
    ("quota", lambda: ServiceBusQuotaExceededError(), qr.ThrottledError, True),
    ("authn", lambda: ServiceBusAuthenticationError(), qr.AuthenticationError, False),
    ("authz", lambda: ServiceBusAuthorizationError(), qr.AuthorizationError, False),
    ("credential", lambda: ClientAuthenticationError("no token"), qr.AuthenticationError, False),
    ("no identity", lambda: CredentialUnavailableError("none"), qr.AuthenticationError, False),
    ("connection", lambda: ServiceBusConnectionError(), qr.ConnectionFailedError, True),
    ("communication", lambda: ServiceBusCommunicationError(), qr.ConnectionFailedError, True),
    ("request", lambda: ServiceRequestError("dns"), qr.ConnectionFailedError, True),
    ("response", lambda: ServiceResponseError("reset"), qr.ConnectionFailedError, True),
    ("socket", lambda: ConnectionResetError("reset"), qr.ConnectionFailedError, True),
    ("timeout", lambda: OperationTimeoutError(), qr.OperationTimeoutError, True),
    ("request timeout", lambda: ServiceRequestTimeoutError("slow"), qr.OperationTimeoutError, True),
    ("builtin timeout", lambda: TimeoutError(), qr.OperationTimeoutError, True),
    ("http 401", lambda: _status(401), qr.AuthenticationError, False),
    ("http 403", lambda: _status(403), qr.AuthorizationError, False),
    ("http 429", lambda: _status(429), qr.ThrottledError, True),
    ("http 503", lambda: _status(503), qr.ThrottledError, True),
    ("http 500", lambda: _status(500), qr.ConnectionFailedError, True),
    ("disabled", lambda: MessagingEntityDisabledError(), qr.QueueError, False),
    ("generic", lambda: ServiceBusError("odd"), qr.QueueError, False),
    ("azure", lambda: AzureError("odd"), qr.QueueError, False),
]


@pytest.mark.parametrize(
    ("exc", "expected", "transient"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_sdk_exceptions_map_onto_the_error_tree(
    exc: Callable[[], BaseException], expected: type[qr.QueueError], transient: bool
) -> None:
    error = translate(exc(), operation="send", queue="jobs", message_id="m-1")

    assert type(error) is expected
    assert error.transient is transient
    assert error.operation == "send"
    assert error.queue == "jobs"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (ErrorCondition.NotFound, qr.QueueNotFoundError),
        (ERROR_CODE_SESSION_CANNOT_BE_LOCKED, qr.SessionLockedError),
        (ERROR_CODE_SESSION_LOCK_LOST, qr.SessionLockLostError),
        (ERROR_CODE_MESSAGE_LOCK_LOST, qr.InvalidReceiptError),
        (ERROR_CODE_SERVER_BUSY, qr.ThrottledError),
        (ERROR_CODE_TIMEOUT, qr.OperationTimeoutError),
        (ErrorCondition.LinkMessageSizeExceeded, qr.MessageTooLargeError),
        (ErrorCondition.UnauthorizedAccess, qr.AuthorizationError),
        (ErrorCondition.ResourceLimitExceeded, qr.ThrottledError),
        (ErrorCondition.NotAllowed, qr.QueueError),
    ],
)
def test_service_error_conditions_map_through_the_sdks_own_exceptions(
    condition: bytes, expected: type[qr.QueueError]
) -> None:
    error = translate(service_error(condition, "from the service"), operation="x", queue="q")

    assert type(error) is expected


def test_server_busy_carries_the_services_back_off() -> None:
    error = translate(ServiceBusServerBusyError(), operation="send", queue="q")

    assert error.retry_after == 10.0


def test_a_size_refusal_reports_the_sizes_it_was_given() -> None:
    error = translate(
        MessageSizeExceededError(), operation="send", queue="q", size=300_000, max_size=262_144
    )

    assert isinstance(error, qr.MessageTooLargeError)
    assert (error.size, error.max_size) == (300_000, 262_144)


def test_a_value_error_is_a_lost_receipt_when_settling_and_invalid_input_otherwise() -> None:
    shutdown = ValueError("The handler has already been shutdown.")

    assert type(translate(shutdown, operation="complete", queue="q")) is qr.InvalidReceiptError
    assert type(translate(shutdown, operation="renew_lock", queue="q")) is qr.InvalidReceiptError
    assert type(translate(shutdown, operation="send", queue="q")) is qr.ValidationError


def test_sdk_text_in_errors_is_scrubbed_of_secrets() -> None:
    leaky = ServiceBusError(f"could not use key {PLANTED} for the link")
    error = translate(leaky, operation="send", queue="q", secrets=[qr.Secret(PLANTED)])

    assert PLANTED not in str(error)
    assert PLANTED not in repr(error)
    assert "***" in str(error)


def test_refusals_of_the_wrong_receiver_kind_are_recognised() -> None:
    plain = service_error(ErrorCondition.NotAllowed, NEEDS_SESSION_RECEIVER)
    session = service_error(ErrorCondition.NotAllowed, NEEDS_PLAIN_RECEIVER)

    assert refuses_plain_receivers(plain)
    assert not refuses_session_receivers(plain)
    assert refuses_session_receivers(session)
    assert not refuses_plain_receivers(session)
    assert not refuses_plain_receivers(ServiceBusError("other"))


async def test_the_provider_raises_mapped_errors_chained_from_the_sdks(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    provider = world.provider()
    busy = service_error(ERROR_CODE_SERVER_BUSY, "busy")
    world.bus.fail_next("send", busy)

    with pytest.raises(qr.ThrottledError) as caught:
        await provider.send(qr.QueueName(queue), [qr.Message(b"x")])

    assert caught.value.__cause__ is busy
    assert caught.value.operation == "send"
    assert caught.value.queue == queue


async def test_the_client_retries_a_transient_sdk_failure_and_succeeds(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    world.bus.fail_next("send", service_error(ERROR_CODE_SERVER_BUSY, "busy"))
    world.bus.fail_next("complete", ServiceBusConnectionError(message="link detached"))

    await client.send_message(queue, qr.Message(b"once"))
    message = await client.receive_message(queue, timeout=1.0)
    assert message is not None
    await client.complete_message(message.receipt)

    assert world.bus.active_count(queue) == 0


async def test_permanent_sdk_failures_are_not_retried(
    world: World, make_queue: Callable[..., str]
) -> None:
    queue = make_queue()
    client = world.client()
    world.bus.fail_next("send", ServiceBusAuthorizationError(message="'Send' claim required"))

    with pytest.raises(qr.AuthorizationError):
        await client.send_message(queue, qr.Message(b"x"))
    await client.send_message(queue, qr.Message(b"y"))  # the fault was used up by one attempt

    assert world.bus.active_count(queue) == 1


async def test_a_missing_queue_names_the_queue_for_every_kind_of_call(world: World) -> None:
    client = world.client()

    for call in (
        lambda: client.send_message("missing", qr.Message(b"x")),
        lambda: client.receive_message("missing", timeout=0.1),
        lambda: client.peek_dead_letters("missing"),
        lambda: client.receive_dead_letters("missing", timeout=0.1),
        lambda: client.purge_dead_letters("missing"),
        lambda: client.accept_session("missing", "s", timeout=0.1),
    ):
        with pytest.raises(qr.QueueNotFoundError) as caught:
            await call()
        assert caught.value.queue == "missing"
    assert world.bus.open_handlers == []  # handlers of a missing queue are not kept
