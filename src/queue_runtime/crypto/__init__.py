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

from queue_runtime.crypto.cipher import CryptoStats, MessageCrypto, UndecryptableMessage
from queue_runtime.crypto.envelope import (
    ENVELOPE_OVERHEAD,
    MAGIC,
    VERSION,
    VERSIONS,
    Envelope,
    associated_data,
    decode_envelope,
    encode_envelope,
    is_encrypted,
)
from queue_runtime.crypto.envelope import NONCE_SIZE as NONCE_SIZE
from queue_runtime.crypto.envelope import TAG_SIZE as TAG_SIZE
from queue_runtime.crypto.keys import ENCRYPTION_CURRENT_KEY_ENV as ENCRYPTION_CURRENT_KEY_ENV
from queue_runtime.crypto.keys import ENCRYPTION_KEYS_ENV as ENCRYPTION_KEYS_ENV
from queue_runtime.crypto.keys import (
    KEY_SIZE,
    EncryptionKey,
    EnvKeyProvider,
    KeyProvider,
    MultiKeyProvider,
    StaticKeyProvider,
)
from queue_runtime.crypto.settings import CryptoConfig, PlaintextPolicy

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
