"""The envelope's wire format: marker, header, associated data (see :mod:`queue_runtime.crypto`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from queue_runtime.errors import InvalidEnvelopeError, UnsupportedVersionError

__all__ = [
    "ENVELOPE_OVERHEAD",
    "MAGIC",
    "NONCE_SIZE",
    "TAG_SIZE",
    "VERSION",
    "VERSIONS",
    "Envelope",
    "associated_data",
    "decode_envelope",
    "encode_envelope",
    "is_encrypted",
    "pack_header",
    "parse_header",
]

MAGIC: Final = b"QRE1"
VERSION: Final = 2
"""The envelope format version written by default (it authenticates the message id)."""
VERSIONS: Final = frozenset({1, 2})
"""Envelope format versions this release reads (and can write)."""
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_TIMESTAMP = struct.Struct(">q")
_LENGTH = struct.Struct(">I")
ENVELOPE_OVERHEAD: Final = len(MAGIC) + 1 + 1 + NONCE_SIZE + _TIMESTAMP.size + TAG_SIZE
"""Bytes an envelope adds to the plaintext, plus the key id's UTF-8 length."""


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


def pack_header(key_id: str, nonce: bytes, encrypted_at: int, version: int = VERSION) -> bytes:
    """The header bytes ``[0, 26+n)`` of an envelope with these fields."""
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
    return pack_header(key_id, nonce, encrypted_at, version) + sealed


def decode_envelope(body: bytes) -> Envelope:
    """Parse ``body``: marker, then version, then structure.

    Raises :class:`InvalidEnvelopeError` (no marker, truncated, bad key id)
    or :class:`UnsupportedVersionError`. Nothing is decrypted here.
    """
    view = bytes(body)
    key_id, nonce, encrypted_at, header_end = parse_header(view)
    return Envelope(
        version=view[4],
        key_id=key_id,
        nonce=nonce,
        encrypted_at=encrypted_at,
        header=view[:header_end],
        sealed=view[header_end:],
    )


def parse_header(view: bytes) -> tuple[str, bytes, int, int]:
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
