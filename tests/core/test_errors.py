"""The error tree of docs/design.md#errors: names, transient flags, context and payloads."""

from __future__ import annotations

import pytest

import queue_runtime as qr
from queue_runtime import errors

TRANSIENT = {
    "ConnectionFailedError",
    "OperationTimeoutError",
    "ThrottledError",
    "SessionLockedError",
    "CircuitOpenError",
}
PERMANENT = {
    "ConfigurationError",
    "ValidationError",
    "QueueNotFoundError",
    "AuthenticationError",
    "AuthorizationError",
    "MessageTooLargeError",
    "BatchTooLargeError",
    "SessionsNotSupportedError",
    "UnencryptedMessageError",
}
LOCK_AND_SESSION = {"InvalidReceiptError", "SessionLockLostError", "SessionNotFoundError"}
CRYPTO = {
    "DecryptionFailedError",
    "KeyNotFoundError",
    "MessageExpiredError",
    "NonceReusedError",
    "UnsupportedVersionError",
    "InvalidEnvelopeError",
}
SPEC_NAMES = {"QueueError", "CryptoError"} | TRANSIENT | PERMANENT | LOCK_AND_SESSION | CRYPTO


def error_class(name: str) -> type[qr.QueueError]:
    cls = getattr(qr, name)
    assert isinstance(cls, type)
    assert issubclass(cls, qr.QueueError)
    return cls


def make(name: str) -> qr.QueueError:
    """An instance of the named error, built with its own constructor."""
    cls = error_class(name)
    if cls is qr.QueueNotFoundError:
        return qr.QueueNotFoundError("orders")
    if cls is qr.MessageTooLargeError:
        return qr.MessageTooLargeError(300_000, 262_144)
    if cls is qr.KeyNotFoundError:
        return qr.KeyNotFoundError("key-2024")
    return cls("boom")


def test_spec_error_tree_has_25_names() -> None:
    assert len(SPEC_NAMES) == 25


def test_errors_module_exports_exactly_the_spec_names() -> None:
    assert set(errors.__all__) == SPEC_NAMES


def test_package_exports_every_spec_error() -> None:
    for name in SPEC_NAMES:
        assert name in qr.__all__, name
        assert getattr(qr, name) is getattr(errors, name)


def test_package_exports_no_error_classes_beyond_the_spec() -> None:
    exported = {
        name
        for name in qr.__all__
        if isinstance(getattr(qr, name), type) and issubclass(getattr(qr, name), BaseException)
    }
    assert exported == SPEC_NAMES


@pytest.mark.parametrize("name", sorted(SPEC_NAMES))
def test_every_error_subclasses_queue_error(name: str) -> None:
    assert issubclass(error_class(name), qr.QueueError)
    assert isinstance(make(name), Exception)


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_errors_are_marked_transient(name: str) -> None:
    assert error_class(name).transient is True
    assert make(name).transient is True


@pytest.mark.parametrize("name", sorted(SPEC_NAMES - TRANSIENT))
def test_other_errors_are_not_transient(name: str) -> None:
    assert error_class(name).transient is False
    assert make(name).transient is False


def test_root_error_is_not_transient_by_default() -> None:
    # spec decision: unknown provider errors are not transient
    assert qr.QueueError("unknown").transient is False


def test_instance_may_override_transient_flag() -> None:
    assert qr.QueueError("maybe", transient=True).transient is True
    assert qr.ThrottledError("nope", transient=False).transient is False
    # the class default is untouched
    assert qr.ThrottledError("again").transient is True


@pytest.mark.parametrize("name", sorted(CRYPTO))
def test_crypto_errors_subclass_crypto_error(name: str) -> None:
    assert issubclass(error_class(name), qr.CryptoError)


@pytest.mark.parametrize("name", sorted(SPEC_NAMES - CRYPTO - {"CryptoError"}))
def test_non_crypto_errors_do_not_subclass_crypto_error(name: str) -> None:
    assert not issubclass(error_class(name), qr.CryptoError)


def test_context_appears_in_str() -> None:
    error = qr.ConnectionFailedError(
        "connection reset", operation="send", queue="orders", message_id="m-17"
    )
    text = str(error)
    assert text.startswith("connection reset")
    assert "operation=send" in text
    assert "queue=orders" in text
    assert "message_id=m-17" in text
    assert error.context == {"operation": "send", "queue": "orders", "message_id": "m-17"}


def test_str_without_context_is_just_the_message() -> None:
    assert str(qr.QueueError("plain")) == "plain"
    assert qr.QueueError("plain").context == {}


def test_retry_after_is_carried_and_appears_in_str() -> None:
    error = qr.ThrottledError("slow down", operation="send", queue="orders", retry_after=2.5)
    assert error.retry_after == 2.5
    assert "2.5" in str(error)


def test_retry_after_defaults_to_none() -> None:
    assert qr.ThrottledError("slow down").retry_after is None


def test_with_context_fills_only_missing_fields() -> None:
    error = qr.ThrottledError("slow", queue="orders")
    returned = error.with_context(operation="receive", queue="other", message_id="m-1")
    assert returned is error
    assert error.operation == "receive"
    assert error.queue == "orders"
    assert error.message_id == "m-1"


def test_message_too_large_carries_size_and_max_size() -> None:
    error = qr.MessageTooLargeError(300_000, 262_144, queue="orders", message_id="m-1")
    assert error.size == 300_000
    assert error.max_size == 262_144
    text = str(error)
    assert "300000" in text
    assert "262144" in text
    assert "queue=orders" in text
    assert error.transient is False


def test_key_not_found_carries_key_id() -> None:
    error = qr.KeyNotFoundError("key-2024-07")
    assert error.key_id == "key-2024-07"
    assert "key-2024-07" in str(error)
    assert isinstance(error, qr.CryptoError)


def test_queue_not_found_names_the_queue() -> None:
    error = qr.QueueNotFoundError("missing-queue", operation="send")
    assert error.queue == "missing-queue"
    assert "missing-queue" in str(error)
    assert error.operation == "send"


def test_validation_error_names_its_field() -> None:
    error = qr.ValidationError("must not be empty", field="reason")
    assert error.field == "reason"
    assert str(error).startswith("reason:")
    assert isinstance(error, ValueError)


def test_configuration_error_names_its_field() -> None:
    error = qr.ConfigurationError("must be at least 1", field="retry.max_attempts")
    assert error.field == "retry.max_attempts"
    assert "retry.max_attempts" in str(error)


def reconnect(original: OSError) -> None:
    try:
        raise original
    except OSError as exc:
        raise qr.ConnectionFailedError("lost", operation="receive") from exc


def test_errors_chain_their_cause() -> None:
    original = OSError("socket closed")
    with pytest.raises(qr.ConnectionFailedError) as info:
        reconnect(original)
    assert info.value.__cause__ is original
