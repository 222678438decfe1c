"""Encryption keys and where they come from: a key, the provider protocol, key rings."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, NoReturn, Protocol, SupportsIndex, runtime_checkable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queue_runtime.errors import ConfigurationError, KeyNotFoundError

__all__ = [
    "ENCRYPTION_CURRENT_KEY_ENV",
    "ENCRYPTION_KEYS_ENV",
    "KEY_SIZE",
    "EncryptionKey",
    "EnvKeyProvider",
    "KeyProvider",
    "MultiKeyProvider",
    "StaticKeyProvider",
]

KEY_SIZE: Final = 32


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
