"""Opt-in end-to-end message encryption (AES-256-GCM over the body only).

Only the body is encrypted; message id, session id, correlation id and
attributes stay readable so that providers can route. The message id, the
session id, the correlation id, the key id and the encryption time are
*authenticated* (associated data), so a copy of an envelope under another
message id, moved to another session or with a changed timestamp fails to
decrypt. Attributes are not authenticated (the runtime adds its own, such as
trace context and requeue counts, on the way).

Wire format (docs/design.md#encryption, big-endian)::

    offset  size  field
    0       4     magic b"QRE1"
    4       1     format version 0x02 (0x01 is still read)
    5       1     key-id length n (1-255)
    6       n     key id, UTF-8
    6+n     12    nonce (os.urandom)
    18+n    8     encrypted-at, signed Unix seconds
    26+n    L     ciphertext
    end-16  16    GCM tag

Associated data = header bytes ``[0, 26+n)`` + the session id, the
correlation id and (version 2) the message id, each as a 4-byte big-endian
length and its UTF-8 bytes (an absent id and an empty one both encode as
length 0). Version 1, the first format, leaves the message id out; it is
read so that messages queued before an upgrade still decrypt, and written
with ``CryptoConfig(envelope_version=1)`` while consumers that read only
version 1 are still running.

Checks on receive, in this order: marker -> version -> structure -> tag (with
the key lookup) -> freshness -> nonce replay. A nonce is recorded only after
every earlier check passed.

Keys are exactly 32 bytes, held in a ``bytearray`` that :meth:`EncryptionKey.close`
overwrites with zeros. **CPython cannot guarantee zeroisation**: the bytes a key
was built from, base64 text, the copy the ``cryptography`` library keeps inside
its cipher object and anything the allocator moved are out of our reach. The
wiping narrows the window; it does not protect against someone who can read the
process memory.

Example:
    >>> import asyncio
    >>> from queue_runtime.crypto import EncryptionKey, MessageCrypto, StaticKeyProvider
    >>> from queue_runtime.crypto import CryptoConfig, is_encrypted
    >>> keys = StaticKeyProvider(EncryptionKey("k1", bytes(range(32))))
    >>> crypto = MessageCrypto(keys, CryptoConfig(enabled=True))
    >>> async def main() -> bytes:
    ...     sealed = await crypto.encrypt(b"hello", session_id="octo/repo/pull/1")
    ...     assert is_encrypted(sealed)
    ...     return await crypto.decrypt(sealed, session_id="octo/repo/pull/1")
    >>> asyncio.run(main())
    b'hello'
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import logging
import math
import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, NoReturn, Protocol, SupportsIndex, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queue_runtime.clock import Clock, SystemClock
from queue_runtime.errors import (
    ConfigurationError,
    CryptoError,
    DecryptionFailedError,
    InvalidEnvelopeError,
    KeyNotFoundError,
    MessageExpiredError,
    NonceReusedError,
    QueueError,
    UnencryptedMessageError,
    UnsupportedVersionError,
)
from queue_runtime.messages import Message, ReceivedMessage
from queue_runtime.telemetry import log_fields

__all__ = [
    "ENVELOPE_OVERHEAD",
    "KEY_SIZE",
    "MAGIC",
    "VERSION",
    "VERSIONS",
    "CryptoConfig",
    "CryptoStats",
    "EncryptionKey",
    "EnvKeyProvider",
    "Envelope",
    "KeyProvider",
    "MessageCrypto",
    "MultiKeyProvider",
    "PlaintextPolicy",
    "StaticKeyProvider",
    "UndecryptableMessage",
    "associated_data",
    "decode_envelope",
    "encode_envelope",
    "is_encrypted",
]

logger = logging.getLogger("queue_runtime.crypto")

MAGIC: Final = b"QRE1"
VERSION: Final = 2
"""The envelope format version written by default (it authenticates the message id)."""
VERSIONS: Final = frozenset({1, 2})
"""Envelope format versions this release reads (and can write)."""
KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_TIMESTAMP = struct.Struct(">q")
_LENGTH = struct.Struct(">I")
ENVELOPE_OVERHEAD: Final = len(MAGIC) + 1 + 1 + NONCE_SIZE + _TIMESTAMP.size + TAG_SIZE
"""Bytes an envelope adds to the plaintext, plus the key id's UTF-8 length."""

_OFFLOAD_BYTES: Final = 1024 * 1024  # bodies this large are sealed/opened in a worker thread


# -- configuration --------------------------------------------------------------


class PlaintextPolicy(enum.Enum):
    """What a client with encryption enabled does with a body that is not an envelope.

    ``ALLOW`` delivers it and logs a warning; ``ALLOW_WITH_ALERT`` delivers it,
    logs an error and counts it (``CryptoStats.plaintext_alerts``); ``REJECT``
    refuses it with :class:`~queue_runtime.errors.UnencryptedMessageError`.
    """

    ALLOW = "allow"
    ALLOW_WITH_ALERT = "allow_with_alert"
    REJECT = "reject"


def _seconds(value: object, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigurationError("expected a number of seconds", field=path)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError("must be a finite number greater than 0", field=path)


@dataclass(frozen=True, slots=True)
class CryptoConfig:
    """Message encryption settings (``[crypto]`` in TOML, ``QUEUE_RUNTIME_CRYPTO_*``).

    Keys are not part of the configuration: pass a :class:`KeyProvider` to the
    client, or let :func:`~queue_runtime.client.create_client` read them from
    ``QUEUE_RUNTIME_ENCRYPTION_KEYS`` (:class:`EnvKeyProvider`).

    ``envelope_version`` is the format new envelopes are written in: 2 (the
    default) authenticates the message id, 1 is the first format, without
    it. Both are read. Write 1 only during a rolling upgrade, while consumers
    that read only version 1 still run.

    ``max_message_age`` and ``max_clock_skew`` bound how old, and how far in
    the future, an envelope's timestamp may be (seconds). With ``track_nonces``
    each client remembers the nonces it accepted for ``nonce_cache_ttl``
    seconds (at most ``nonce_cache_size`` of them, oldest evicted first) and
    rejects a repeat as a replay; keep the TTL at least
    ``max_message_age + max_clock_skew`` so that freshness covers what the
    cache forgot. The cache is per client: replays across processes are not
    detected.

    Example:
        >>> from queue_runtime.crypto import CryptoConfig, PlaintextPolicy
        >>> config = CryptoConfig(enabled=True, plaintext_policy=PlaintextPolicy.REJECT)
        >>> config.max_message_age, config.max_clock_skew, config.track_nonces
        (300.0, 60.0, False)
    """

    enabled: bool = False
    plaintext_policy: PlaintextPolicy = PlaintextPolicy.ALLOW
    max_message_age: float = 300.0
    max_clock_skew: float = 60.0
    validate_freshness: bool = True
    track_nonces: bool = False
    nonce_cache_ttl: float = 600.0
    nonce_cache_size: int = 100_000
    envelope_version: int = VERSION

    def __post_init__(self) -> None:
        for name in ("enabled", "validate_freshness", "track_nonces"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError("expected a boolean", field=f"crypto.{name}")
        if not isinstance(self.plaintext_policy, PlaintextPolicy):
            raise ConfigurationError(
                "expected one of: " + ", ".join(p.value for p in PlaintextPolicy),
                field="crypto.plaintext_policy",
            )
        _seconds(self.max_message_age, "crypto.max_message_age")
        _seconds(self.max_clock_skew, "crypto.max_clock_skew")
        _seconds(self.nonce_cache_ttl, "crypto.nonce_cache_ttl")
        size = self.nonce_cache_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigurationError(
                "must be an integer of at least 1", field="crypto.nonce_cache_size"
            )
        version = self.envelope_version
        if isinstance(version, bool) or version not in VERSIONS:
            raise ConfigurationError(
                "must be one of: " + ", ".join(map(str, sorted(VERSIONS))),
                field="crypto.envelope_version",
            )


# -- keys -------------------------------------------------------------------------


class EncryptionKey:
    """A 32-byte AES-256 key with an id; the material never shows itself.

    The material lives in a ``bytearray`` that :meth:`close` overwrites with
    zeros (best effort: CPython cannot guarantee zeroisation, see the module
    docs). ``repr`` shows the id and dates only; pickling and copying are
    refused. ``created_at``/``expires_at`` are informational (for rotation
    tooling); an expired key still decrypts until it is removed.

    Example:
        >>> from queue_runtime.crypto import EncryptionKey
        >>> key = EncryptionKey("k1", bytes(32))
        >>> key
        EncryptionKey(key_id='k1', created_at=None, expires_at=None)
        >>> key.close(); key.closed
        True
    """

    __slots__ = ("_cipher", "_material", "created_at", "expires_at", "key_id")

    def __init__(
        self,
        key_id: str,
        material: bytes | bytearray | memoryview,
        *,
        created_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        _check_key_id(key_id)
        if not isinstance(material, bytes | bytearray | memoryview):
            raise TypeError("key material must be bytes-like")
        if len(material) != KEY_SIZE:
            # the length is not secret; the material is never echoed
            raise ValueError(f"an encryption key must be exactly {KEY_SIZE} bytes")
        self.key_id = key_id
        self.created_at = created_at
        self.expires_at = expires_at
        self._material: bytearray | None = bytearray(material)
        self._cipher: AESGCM | None = AESGCM(self._material)

    @classmethod
    def generate(cls, key_id: str, **dates: datetime | None) -> EncryptionKey:
        """A fresh random key (``os.urandom``)."""
        return cls(key_id, bytearray(os.urandom(KEY_SIZE)), **dates)

    @classmethod
    def from_base64(cls, key_id: str, text: str, **dates: datetime | None) -> EncryptionKey:
        """A key from its standard base64 text (44 characters for 32 bytes)."""
        try:
            raw = bytearray(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError, AttributeError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        try:
            return cls(key_id, raw, **dates)
        finally:
            raw[:] = bytes(len(raw))

    @property
    def closed(self) -> bool:
        return self._material is None

    def cipher(self) -> AESGCM:
        """The AES-GCM cipher for this key (for the envelope code; never log it)."""
        if self._cipher is None:
            raise KeyNotFoundError(self.key_id)
        return self._cipher

    def close(self) -> None:
        """Overwrite the material with zeros and forget the cipher. Idempotent."""
        if self._material is not None:
            self._material[:] = bytes(len(self._material))
            self._material = None
        self._cipher = None

    def __repr__(self) -> str:
        created = None if self.created_at is None else self.created_at.isoformat()
        expires = None if self.expires_at is None else self.expires_at.isoformat()
        return (
            f"EncryptionKey(key_id={self.key_id!r}, created_at={created!r}, expires_at={expires!r})"
        )

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("EncryptionKey cannot be pickled: keys must not be serialized")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("EncryptionKey cannot be pickled: keys must not be serialized")

    def __copy__(self) -> NoReturn:
        raise TypeError("EncryptionKey cannot be copied")

    def __deepcopy__(self, memo: dict[int, object]) -> NoReturn:
        raise TypeError("EncryptionKey cannot be copied")


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str):
        raise TypeError("a key id must be a str")
    if not 1 <= len(key_id.encode("utf-8", "surrogatepass")) <= 255:
        raise ValueError("a key id must be 1-255 bytes of UTF-8")
    try:
        key_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a key id must be valid UTF-8 text") from None


@runtime_checkable
class KeyProvider(Protocol):
    """Where keys come from. All methods are async (a KMS or vault may sit behind them).

    ``get_key`` raises :class:`~queue_runtime.errors.KeyNotFoundError` for an
    unknown id. ``current_key_id`` names the key new messages are encrypted
    with; ``valid_key_ids`` lists every id that may still decrypt.
    """

    async def get_key(self, key_id: str) -> EncryptionKey: ...

    async def current_key_id(self) -> str: ...

    async def valid_key_ids(self) -> frozenset[str]: ...


class MultiKeyProvider:
    """Keys held in memory, with rotation.

    Rotation: :meth:`add_key` the new key, :meth:`set_current` to it (new
    messages use it; both keys decrypt), and :meth:`remove_key` the old one
    once the queues are drained of messages encrypted with it.

    Example:
        >>> import asyncio
        >>> from queue_runtime.crypto import EncryptionKey, MultiKeyProvider
        >>> keys = MultiKeyProvider([EncryptionKey("k1", bytes(32))])
        >>> keys.add_key(EncryptionKey("k2", bytes(range(32))), make_current=True)
        >>> keys.remove_key("k1")
        >>> asyncio.run(keys.valid_key_ids()), asyncio.run(keys.current_key_id())
        (frozenset({'k2'}), 'k2')
    """

    def __init__(self, keys: Iterable[EncryptionKey] = (), *, current: str | None = None) -> None:
        self._keys: dict[str, EncryptionKey] = {}
        self._current: str | None = None
        for key in keys:
            self.add_key(key)
        if current is not None:
            self.set_current(current)

    def add_key(self, key: EncryptionKey, *, make_current: bool = False) -> None:
        """Add a key (the first one added becomes current). Replacing an id is refused."""
        if not isinstance(key, EncryptionKey):
            raise TypeError("expected an EncryptionKey")
        if key.key_id in self._keys:
            raise ValueError(f"key {key.key_id!r} is already present")
        self._keys[key.key_id] = key
        if make_current or self._current is None:
            self._current = key.key_id

    def set_current(self, key_id: str) -> None:
        """Encrypt new messages with ``key_id`` (which must have been added)."""
        if key_id not in self._keys:
            raise KeyNotFoundError(key_id)
        self._current = key_id

    def remove_key(self, key_id: str) -> None:
        """Forget ``key_id`` and wipe it. The current key cannot be removed."""
        if key_id not in self._keys:
            raise KeyNotFoundError(key_id)
        if key_id == self._current:
            raise ValueError(f"key {key_id!r} is current; make another key current first")
        self._keys.pop(key_id).close()

    async def get_key(self, key_id: str) -> EncryptionKey:
        key = self._keys.get(key_id)
        if key is None or key.closed:
            raise KeyNotFoundError(key_id)
        return key

    async def current_key_id(self) -> str:
        if self._current is None:
            raise ConfigurationError("the key provider has no keys", field="crypto.keys")
        return self._current

    async def valid_key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def close(self) -> None:
        """Wipe every key."""
        for key in self._keys.values():
            key.close()
        self._keys.clear()
        self._current = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_ids={sorted(self._keys)!r}, current={self._current!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled: keys must not be serialized")


class StaticKeyProvider(MultiKeyProvider):
    """One fixed key (still rotatable with the inherited methods).

    Example:
        >>> from queue_runtime.crypto import EncryptionKey, StaticKeyProvider
        >>> StaticKeyProvider(EncryptionKey("k1", bytes(32)))
        StaticKeyProvider(key_ids=['k1'], current='k1')
    """

    def __init__(self, key: EncryptionKey) -> None:
        super().__init__([key])


ENCRYPTION_KEYS_ENV: Final = "QUEUE_RUNTIME_ENCRYPTION_KEYS"
ENCRYPTION_CURRENT_KEY_ENV: Final = "QUEUE_RUNTIME_ENCRYPTION_CURRENT_KEY"


class EnvKeyProvider(MultiKeyProvider):
    """Keys from environment variables, so operators can configure them without code.

    ``QUEUE_RUNTIME_ENCRYPTION_KEYS`` is a comma-separated list of
    ``<key id>:<base64 of 32 bytes>``; the first key is current unless
    ``QUEUE_RUNTIME_ENCRYPTION_CURRENT_KEY`` names another. Errors name the
    variable and the key id, never the key material.

    Example:
        >>> import base64
        >>> from queue_runtime.crypto import EnvKeyProvider
        >>> k1, k2 = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))
        >>> env = {"QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k2:{k2},k1:{k1}"}
        >>> EnvKeyProvider.from_env(env)
        EnvKeyProvider(key_ids=['k1', 'k2'], current='k2')
    """

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EnvKeyProvider:
        """Read the keys from ``env`` (``os.environ`` when ``None``)."""
        environ: Mapping[str, str] = os.environ if env is None else env
        raw = environ.get(ENCRYPTION_KEYS_ENV, "")
        if not raw.strip():
            raise ConfigurationError(
                f"encryption is enabled but no keys were given: set {ENCRYPTION_KEYS_ENV} "
                "to '<key id>:<base64 key>[,...]' or pass keys= to the client",
                field="crypto.keys",
            )
        provider = cls()
        for position, item in enumerate(raw.split(","), start=1):
            key_id, sep, text = item.strip().rpartition(":")
            if not sep or not key_id:
                raise ConfigurationError(
                    f"entry {position} of {ENCRYPTION_KEYS_ENV} is not '<key id>:<base64 key>'",
                    field="crypto.keys",
                )
            try:
                provider.add_key(EncryptionKey.from_base64(key_id, text))
            except ValueError as exc:
                provider.close()
                raise ConfigurationError(
                    f"entry {position} of {ENCRYPTION_KEYS_ENV}: {exc}", field="crypto.keys"
                ) from None
        current = environ.get(ENCRYPTION_CURRENT_KEY_ENV, "").strip()
        if current:
            try:
                provider.set_current(current)
            except KeyNotFoundError:
                provider.close()
                raise ConfigurationError(
                    f"{ENCRYPTION_CURRENT_KEY_ENV} names key {current!r}, which "
                    f"{ENCRYPTION_KEYS_ENV} does not define",
                    field="crypto.keys",
                ) from None
        return provider


# -- the envelope -----------------------------------------------------------------


def is_encrypted(body: bytes) -> bool:
    """True if ``body`` starts with the envelope marker ``QRE1``.

    Example:
        >>> from queue_runtime.crypto import is_encrypted
        >>> is_encrypted(b"QRE1\\x01..."), is_encrypted(b'{"plain": true}')
        (True, False)
    """
    return bytes(body[: len(MAGIC)]) == MAGIC


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope. ``header`` is bytes ``[0, 26+n)``; ``sealed`` is ciphertext + tag.

    Example:
        >>> from queue_runtime.crypto import Envelope, decode_envelope, encode_envelope
        >>> wire = encode_envelope("k1", bytes(12), 1_700_000_000, b"ciphertext+tag..")
        >>> envelope = decode_envelope(wire)
        >>> envelope.version, envelope.key_id, envelope.encrypted_at
        (2, 'k1', 1700000000)
    """

    version: int
    key_id: str
    nonce: bytes
    encrypted_at: int
    header: bytes = field(repr=False)
    sealed: bytes = field(repr=False)


def _header(key_id: str, nonce: bytes, encrypted_at: int, version: int = VERSION) -> bytes:
    raw_id = key_id.encode("utf-8")
    if not 1 <= len(raw_id) <= 255:
        raise ValueError("a key id must be 1-255 bytes of UTF-8")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce must be {NONCE_SIZE} bytes")
    if version not in VERSIONS:
        raise ValueError(f"envelope format version {version} is not supported")
    return b"".join(
        (MAGIC, bytes((version, len(raw_id))), raw_id, nonce, _TIMESTAMP.pack(encrypted_at))
    )


def encode_envelope(
    key_id: str, nonce: bytes, encrypted_at: int, sealed: bytes, *, version: int = VERSION
) -> bytes:
    """The wire bytes: header followed by ``sealed`` (ciphertext + 16-byte tag)."""
    if len(sealed) < TAG_SIZE:
        raise ValueError("sealed data must end with a 16-byte tag")
    return _header(key_id, nonce, encrypted_at, version) + sealed


def decode_envelope(body: bytes) -> Envelope:
    """Parse ``body``: marker, then version, then structure.

    Raises :class:`InvalidEnvelopeError` (no marker, truncated, bad key id)
    or :class:`UnsupportedVersionError`. Nothing is decrypted here.
    """
    view = bytes(body)
    key_id, nonce, encrypted_at, header_end = _parse(view)
    return Envelope(
        version=view[4],
        key_id=key_id,
        nonce=nonce,
        encrypted_at=encrypted_at,
        header=view[:header_end],
        sealed=view[header_end:],
    )


def _parse(view: bytes) -> tuple[str, bytes, int, int]:
    """Key id, nonce, timestamp and the header's length; the checks of decode_envelope.

    Versions 1 and 2 share the layout; they differ only in the associated data.
    """
    if view[: len(MAGIC)] != MAGIC:
        raise InvalidEnvelopeError("not an encrypted envelope (no QRE1 marker)")
    if len(view) < 6:
        raise InvalidEnvelopeError("envelope truncated in its header")
    version = view[4]
    if version not in VERSIONS:
        raise UnsupportedVersionError(f"envelope format version {version} is not supported")
    id_length = view[5]
    if id_length == 0:
        raise InvalidEnvelopeError("envelope has an empty key id")
    header_end = 6 + id_length + NONCE_SIZE + _TIMESTAMP.size
    if len(view) < header_end + TAG_SIZE:
        raise InvalidEnvelopeError("envelope truncated")
    try:
        key_id = view[6 : 6 + id_length].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEnvelopeError("envelope key id is not valid UTF-8") from None
    nonce = view[6 + id_length : 6 + id_length + NONCE_SIZE]
    (encrypted_at,) = _TIMESTAMP.unpack_from(view, 6 + id_length + NONCE_SIZE)
    return key_id, nonce, encrypted_at, header_end


def _prefixed(text: str | None) -> bytes:
    raw = b"" if text is None else text.encode("utf-8", "surrogatepass")
    return _LENGTH.pack(len(raw)) + raw


def associated_data(
    header: bytes,
    session_id: str | None,
    correlation_id: str | None,
    message_id: str | None = None,
    *,
    version: int = VERSION,
) -> bytes:
    """Header bytes + length-prefixed session id + length-prefixed correlation id,
    + (version 2) length-prefixed message id.

    Example:
        >>> from queue_runtime.crypto import associated_data
        >>> associated_data(b"H", "s", None, "m")
        b'H\\x00\\x00\\x00\\x01s\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01m'
        >>> associated_data(b"H", "s", None, "m", version=1)  # the message id is not in it
        b'H\\x00\\x00\\x00\\x01s\\x00\\x00\\x00\\x00'
    """
    data = header + _prefixed(session_id) + _prefixed(correlation_id)
    return data if version == 1 else data + _prefixed(message_id)


# -- the client-side engine ---------------------------------------------------------


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
        header = _header(key_id, nonce, math.floor(self.clock.now()), version)
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
        key_id, nonce, encrypted_at, header_end = _parse(data)
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
