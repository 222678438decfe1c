"""The client-side engine: :class:`MessageCrypto` seals and opens bodies and messages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.crypto.envelope import (
    NONCE_SIZE,
    associated_data,
    is_encrypted,
    pack_header,
    parse_header,
)
from queue_runtime.crypto.keys import KeyProvider
from queue_runtime.crypto.settings import CryptoConfig, PlaintextPolicy
from queue_runtime.errors import (
    ConfigurationError,
    CryptoError,
    DecryptionFailedError,
    MessageExpiredError,
    NonceReusedError,
    QueueError,
    UnencryptedMessageError,
)
from queue_runtime.messages import Message, ReceivedMessage
from queue_runtime.telemetry import log_fields

__all__ = ["CryptoStats", "MessageCrypto", "UndecryptableMessage"]

logger = logging.getLogger("queue_runtime.crypto")

_OFFLOAD_BYTES: Final = 1024 * 1024  # bodies this large are sealed/opened in a worker thread


@dataclass(slots=True)
class CryptoStats:
    """Counters for metrics and logs (telemetry reads these).

    ``plaintext_received`` counts every plaintext body seen with encryption
    on; ``plaintext_alerts`` the ones under ``ALLOW_WITH_ALERT``;
    ``plaintext_rejected`` the ones under ``REJECT``. ``failures`` counts
    decryption failures by error class name.
    """

    encrypted: int = 0
    decrypted: int = 0
    plaintext_received: int = 0
    plaintext_alerts: int = 0
    plaintext_rejected: int = 0
    failures: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class UndecryptableMessage(ReceivedMessage):
    """A received message the client could not decrypt (or refused as plaintext).

    Receiving never loses such a message and never fails the rest of its
    batch: it comes back in its place, still locked, with ``body`` holding the
    bytes exactly as received and ``error`` the reason (a
    :class:`~queue_runtime.errors.CryptoError`, or
    :class:`~queue_runtime.errors.UnencryptedMessageError` under
    ``PlaintextPolicy.REJECT``). Settle it with its ``receipt`` (the actor Bot
    dead-letters it, reason = the error class name). :meth:`json` and
    :meth:`to_message` raise ``error`` so the raw bytes are not mistaken for
    the plaintext.
    """

    error: QueueError = field(kw_only=True)

    def json(self) -> NoReturn:
        raise self.error

    def to_message(self, **changes: object) -> NoReturn:
        raise self.error

    def __repr__(self) -> str:
        return (
            f"UndecryptableMessage(message_id={self.message_id!r}, "
            f"session_id={self.session_id!r}, error={type(self.error).__name__})"
        )


class _NonceCache:
    """Accepted nonces -> (expiry, message id), bounded, oldest evicted first."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._seen: OrderedDict[bytes, tuple[float, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            nonce, (expires, _) = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[nonce]

    def seen(self, nonce: bytes, now: float) -> str | bool | None:
        """False if unseen; else the message id it was accepted with (may be None)."""
        self._expire(now)
        entry = self._seen.get(nonce)
        return False if entry is None else entry[1]

    def record(self, nonce: bytes, message_id: str | None, now: float) -> None:
        self._seen.pop(nonce, None)
        self._seen[nonce] = (now + self._ttl, message_id)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


class MessageCrypto:
    """Seals and opens message bodies with a :class:`KeyProvider` (used by the client).

    :meth:`encrypt`/:meth:`decrypt` work on bodies and raise the
    :class:`~queue_runtime.errors.CryptoError` subclasses;
    :meth:`encrypt_message`/:meth:`open_received` work on messages, the latter
    never raising for a bad message (it returns an :class:`UndecryptableMessage`).
    Bodies of 1 MiB or more are processed in a worker thread so the event loop
    is not blocked.
    """

    def __init__(
        self, keys: KeyProvider, config: CryptoConfig | None = None, clock: Clock | None = None
    ) -> None:
        if not isinstance(keys, KeyProvider):
            raise ConfigurationError("expected a KeyProvider", field="crypto.keys")
        self.keys = keys
        self.config = config or CryptoConfig(enabled=True)
        self.clock: Clock = clock or SystemClock()
        self.stats = CryptoStats()
        self._nonces = _NonceCache(self.config.nonce_cache_ttl, self.config.nonce_cache_size)

    # -- bodies -------------------------------------------------------------------

    async def encrypt(
        self,
        body: bytes,
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        message_id: str | None = None,
    ) -> bytes:
        """Seal ``body`` with the current key into an envelope bound to these ids.

        Decrypting needs the same ids (the message id only for version 2, the
        default ``envelope_version``)."""
        key_id = await self.keys.current_key_id()
        key = await self.keys.get_key(key_id)
        nonce = os.urandom(NONCE_SIZE)
        version = self.config.envelope_version
        header = pack_header(key_id, nonce, math.floor(self.clock.now()), version)
        aad = associated_data(header, session_id, correlation_id, message_id, version=version)
        cipher = key.cipher()
        if len(body) >= _OFFLOAD_BYTES:
            sealed = await asyncio.to_thread(cipher.encrypt, nonce, body, aad)
        else:
            sealed = cipher.encrypt(nonce, body, aad)
        self.stats.encrypted += 1
        return header + sealed

    async def decrypt(
        self,
        body: bytes,
        *,
        session_id: str | None = None,
        correlation_id: str | None = None,
        message_id: str | None = None,
        redelivery: bool = False,
        check_freshness: bool = True,
        check_replay: bool = True,
    ) -> bytes:
        """Open an envelope: marker, version, structure, tag, freshness, replay.

        The ids must be those it was sealed with: a version 2 envelope also
        authenticates ``message_id``. ``redelivery`` (the provider's delivery
        count is above 1) lets a nonce already accepted *for the same message
        id* through: the provider redelivering an abandoned or expired lock is
        not a replay. Freshness and replay apply only when enabled in the
        config and not switched off here (the client switches them off for
        dead-letter reads).
        """
        data = bytes(body)
        key_id, nonce, encrypted_at, header_end = parse_header(data)
        key = await self.keys.get_key(key_id)
        aad = associated_data(
            data[:header_end], session_id, correlation_id, message_id, version=data[4]
        )
        sealed = memoryview(data)[header_end:]  # no copy of the ciphertext
        cipher = key.cipher()
        try:
            if len(sealed) >= _OFFLOAD_BYTES:
                plain = await asyncio.to_thread(cipher.decrypt, nonce, sealed, aad)
            else:
                plain = cipher.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionFailedError(
                "the message could not be decrypted: wrong key, tampered bytes or "
                "mismatched message/session/correlation id"
            ) from None
        now = self.clock.now()
        if check_freshness and self.config.validate_freshness:
            age = now - encrypted_at
            if age > self.config.max_message_age:
                raise MessageExpiredError(
                    f"the message was encrypted {age:.0f} s ago; the limit is "
                    f"{self.config.max_message_age:g} s"
                )
            if -age > self.config.max_clock_skew:
                raise MessageExpiredError(
                    f"the message is dated {-age:.0f} s in the future; the allowed clock "
                    f"skew is {self.config.max_clock_skew:g} s"
                )
        if check_replay and self.config.track_nonces:
            previous = self._nonces.seen(nonce, now)
            if previous is not False and not (
                redelivery and message_id is not None and previous == message_id
            ):
                raise NonceReusedError("the message's nonce was seen before: a replay")
            self._nonces.record(nonce, message_id, now)
        self.stats.decrypted += 1
        return plain

    # -- messages ------------------------------------------------------------------

    async def encrypt_message(self, message: Message) -> Message:
        """A copy of ``message`` whose body is sealed (routing fields unchanged)."""
        sealed = await self.encrypt(
            message.body,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
        )
        return dataclasses.replace(message, body=sealed)

    async def open_received(
        self, message: ReceivedMessage, *, dead_letter: bool = False
    ) -> ReceivedMessage:
        """The message with its body decrypted, or an :class:`UndecryptableMessage`.

        Plaintext bodies follow the plaintext policy. ``dead_letter=True`` (a
        DLQ read) checks the tag but not freshness or replay: a dead letter is
        old by nature and was delivered before. Errors other than
        ``CryptoError`` (a key provider failing, say) propagate.
        """
        if not is_encrypted(message.body):
            return self._plaintext(message)
        try:
            plain = await self.decrypt(
                message.body,
                session_id=message.session_id,
                correlation_id=message.correlation_id,
                message_id=message.message_id,
                redelivery=message.delivery_count > 1,
                check_freshness=not dead_letter,
                check_replay=not dead_letter,
            )
        except CryptoError as error:
            self.stats.failures[type(error).__name__] += 1
            logger.warning(
                "could not decrypt a message: %s",
                error,
                extra=log_fields("decrypt", None, message),  # identifiers only, never the body
            )
            return _undecryptable(message, error)
        return dataclasses.replace(message, body=plain)

    def _plaintext(self, message: ReceivedMessage) -> ReceivedMessage:
        fields = log_fields("decrypt", None, message)
        self.stats.plaintext_received += 1
        policy = self.config.plaintext_policy
        if policy is PlaintextPolicy.REJECT:
            self.stats.plaintext_rejected += 1
            logger.error("rejected an unencrypted message", extra=fields)
            error = UnencryptedMessageError(
                "the message is not encrypted and the plaintext policy is REJECT",
                message_id=message.message_id,
            )
            return _undecryptable(message, error)
        if policy is PlaintextPolicy.ALLOW_WITH_ALERT:
            self.stats.plaintext_alerts += 1
            logger.error("received an unencrypted message", extra=fields)
        else:
            logger.warning("received an unencrypted message", extra=fields)
        return message

    def __repr__(self) -> str:
        return f"MessageCrypto(keys={self.keys!r})"


def _undecryptable(message: ReceivedMessage, error: QueueError) -> UndecryptableMessage:
    error.with_context(queue=message.receipt.queue, message_id=message.message_id)
    values = {
        f.name: getattr(message, f.name) for f in dataclasses.fields(ReceivedMessage) if f.init
    }
    return UndecryptableMessage(**values, error=error)
