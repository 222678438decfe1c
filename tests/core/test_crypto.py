"""queue_runtime.crypto: the envelope format, keys, key providers and the receive checks.

The format and the order of the checks: docs/design.md#encryption.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import pickle
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import queue_runtime as qr
from queue_runtime.clock import to_datetime
from queue_runtime.config import config_reference, load_config
from queue_runtime.crypto import (
    ENVELOPE_OVERHEAD,
    MAGIC,
    CryptoConfig,
    EncryptionKey,
    EnvKeyProvider,
    MessageCrypto,
    MultiKeyProvider,
    PlaintextPolicy,
    StaticKeyProvider,
    associated_data,
    decode_envelope,
    encode_envelope,
    is_encrypted,
)
from queue_runtime.errors import (
    ConfigurationError,
    CryptoError,
    DecryptionFailedError,
    InvalidEnvelopeError,
    KeyNotFoundError,
    MessageExpiredError,
    NonceReusedError,
    UnsupportedVersionError,
)

START = 1_700_000_000.0
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
SESSION = "octo/repo/pull/7"
CORRELATION = "corr-1"
MESSAGE = "m1"


def engine(
    clock: qr.ManualClock | None = None,
    keys: MultiKeyProvider | None = None,
    **config: object,
) -> MessageCrypto:
    return MessageCrypto(
        keys or StaticKeyProvider(EncryptionKey("k1", KEY1)),
        CryptoConfig(enabled=True, **config),  # type: ignore[arg-type]
        clock or qr.ManualClock(start=START),
    )


async def seal(crypto: MessageCrypto, body: bytes = b"hello, world") -> bytes:
    return await crypto.encrypt(
        body, session_id=SESSION, correlation_id=CORRELATION, message_id=MESSAGE
    )


async def unseal(crypto: MessageCrypto, envelope: bytes, **kwargs: object) -> bytes:
    kwargs.setdefault("session_id", SESSION)
    kwargs.setdefault("correlation_id", CORRELATION)
    kwargs.setdefault("message_id", MESSAGE)
    return await crypto.decrypt(envelope, **kwargs)  # type: ignore[arg-type]


# -- round trips and the wire format ---------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 200_000])
async def test_round_trip(size: int) -> None:
    crypto = engine()
    body = bytes(i % 251 for i in range(size))
    envelope = await seal(crypto, body)
    assert is_encrypted(envelope)
    assert len(envelope) == size + ENVELOPE_OVERHEAD + len("k1")
    assert await unseal(crypto, envelope) == body
    assert (crypto.stats.encrypted, crypto.stats.decrypted) == (1, 1)


async def test_round_trip_of_a_large_body_goes_through_a_worker_thread() -> None:
    crypto = engine()
    body = b"x" * (2 * 1024 * 1024)
    assert await unseal(crypto, await seal(crypto, body)) == body


async def test_the_header_follows_the_wire_format() -> None:
    crypto = engine()
    envelope = await seal(crypto, b"abc")
    assert envelope[:4] == b"QRE1"
    assert envelope[4] == 2
    assert envelope[5] == 2
    assert envelope[6:8] == b"k1"
    (stamp,) = struct.unpack(">q", envelope[20:28])
    assert stamp == int(START)
    parsed = decode_envelope(envelope)
    assert (parsed.version, parsed.key_id, parsed.encrypted_at) == (2, "k1", int(START))
    assert parsed.nonce == envelope[8:20]
    assert parsed.header == envelope[:28]
    assert len(parsed.sealed) == 3 + 16
    assert encode_envelope("k1", parsed.nonce, parsed.encrypted_at, parsed.sealed) == envelope


def test_associated_data_is_the_header_and_length_prefixed_ids() -> None:
    assert associated_data(b"HDR", "s", "cc", "mid") == b"HDR\0\0\0\x01s\0\0\0\x02cc\0\0\0\x03mid"
    assert associated_data(b"HDR", None, None) == b"HDR" + bytes(12)
    # version 1 (docs/design.md#encryption as first written): the message id is not authenticated
    assert associated_data(b"HDR", "s", "cc", "mid", version=1) == b"HDR\0\0\0\x01s\0\0\0\x02cc"
    assert associated_data(b"HDR", None, None, version=1) == b"HDR" + bytes(8)


async def test_version_1_envelopes_are_written_on_request_and_still_read() -> None:
    old_writer = engine(envelope_version=1)
    envelope = await seal(old_writer)
    assert envelope[4] == 1
    assert decode_envelope(envelope).version == 1
    assert await unseal(engine(), envelope) == b"hello, world"  # a queued v1 message survives


async def test_a_copy_under_another_message_id_fails_the_tag() -> None:
    crypto = engine()
    envelope = await seal(crypto)
    for message_id in ("m2", "", None, MESSAGE + " "):
        with pytest.raises(DecryptionFailedError):
            await unseal(crypto, envelope, message_id=message_id)
    assert await unseal(crypto, envelope) == b"hello, world"


async def test_version_1_does_not_authenticate_the_message_id() -> None:
    # the gap version 2 closes: documented, and only there for messages queued before it
    envelope = await seal(engine(envelope_version=1))
    assert await unseal(engine(), envelope, message_id="m2") == b"hello, world"


async def test_downgrading_a_version_2_envelope_to_version_1_fails_the_tag() -> None:
    # the version byte is in the authenticated header: a downgrade cannot drop the message id
    tampered = bytearray(await seal(engine()))
    tampered[4] = 1
    with pytest.raises(DecryptionFailedError):
        await unseal(engine(), bytes(tampered), message_id="m2")
    with pytest.raises(DecryptionFailedError):
        await unseal(engine(), bytes(tampered))


def test_is_encrypted_looks_at_the_marker_only() -> None:
    assert is_encrypted(MAGIC + b"\x01")
    assert not is_encrypted(b"QRE")
    assert not is_encrypted(b"")
    assert not is_encrypted(b'{"a": 1}')


async def test_nonces_are_unique() -> None:
    crypto = engine()
    nonces = {decode_envelope(await seal(crypto, b"same")).nonce for _ in range(2_000)}
    assert len(nonces) == 2_000


# -- tampering: every single-bit flip fails, following the order of checks ---------


def _expected_for_offset(offset: int, id_length: int) -> tuple[type[CryptoError], ...]:
    if offset < 4:  # marker
        return (InvalidEnvelopeError,)
    if offset == 4:  # version
        return (UnsupportedVersionError,)
    if offset == 5:  # key-id length: structure or a different key id
        return (InvalidEnvelopeError, KeyNotFoundError)
    if offset < 6 + id_length:  # key id: unknown (or not UTF-8)
        return (KeyNotFoundError, InvalidEnvelopeError)
    return (DecryptionFailedError,)  # nonce, timestamp, ciphertext, tag


async def test_every_single_bit_flip_fails_with_the_error_of_its_check() -> None:
    crypto = engine(track_nonces=True)
    envelope = await seal(crypto, b"a short body")
    seen: set[type[CryptoError]] = set()
    for offset in range(len(envelope)):
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[offset] ^= 1 << bit
            with pytest.raises(CryptoError) as caught:
                await unseal(crypto, bytes(tampered))
            expected = _expected_for_offset(offset, 2)
            assert isinstance(caught.value, expected), (offset, bit, caught.value)
            seen.add(type(caught.value))
    assert DecryptionFailedError in seen
    assert UnsupportedVersionError in seen
    # nothing tampered was recorded as a nonce: the original still decrypts
    assert await unseal(crypto, envelope) == b"a short body"


async def test_a_flipped_key_id_naming_another_known_key_fails_the_tag() -> None:
    # "k1" -> "k0" is one bit; k0 even has the same material: the key id is authenticated
    keys = MultiKeyProvider([EncryptionKey("k1", KEY1), EncryptionKey("k0", KEY1)])
    crypto = engine(keys=keys)
    tampered = bytearray(await seal(crypto))
    tampered[7] ^= 1
    assert decode_envelope(bytes(tampered)).key_id == "k0"
    with pytest.raises(DecryptionFailedError):
        await unseal(crypto, bytes(tampered))


async def test_a_changed_timestamp_fails_the_tag_before_freshness() -> None:
    crypto = engine()
    envelope = bytearray(await seal(crypto))
    envelope[20:28] = struct.pack(">q", int(START) - 10_000)
    with pytest.raises(DecryptionFailedError):
        await unseal(crypto, bytes(envelope))


@pytest.mark.parametrize(
    ("session_id", "correlation_id"),
    [("octo/repo/pull/8", CORRELATION), (None, CORRELATION), (SESSION, "corr-2"), (SESSION, None)],
)
async def test_wrong_session_or_correlation_id_fails(
    session_id: str | None, correlation_id: str | None
) -> None:
    crypto = engine()
    envelope = await seal(crypto)
    with pytest.raises(DecryptionFailedError):
        await unseal(crypto, envelope, session_id=session_id, correlation_id=correlation_id)


async def test_unknown_key_id_raises_key_not_found_naming_it() -> None:
    sender = engine(keys=StaticKeyProvider(EncryptionKey("k9", KEY1)))
    receiver = engine()
    with pytest.raises(KeyNotFoundError) as caught:
        await unseal(receiver, await seal(sender))
    assert caught.value.key_id == "k9"
    assert "'k9'" in str(caught.value)


async def test_wrong_key_bytes_fail_decryption() -> None:
    sender = engine(keys=StaticKeyProvider(EncryptionKey("k1", KEY2)))
    with pytest.raises(DecryptionFailedError):
        await unseal(engine(), await seal(sender))


@pytest.mark.parametrize("version", [0, 3, 255])
async def test_unknown_versions_are_unsupported(version: int) -> None:
    envelope = bytearray(await seal(engine()))
    envelope[4] = version
    with pytest.raises(UnsupportedVersionError):
        await unseal(engine(), bytes(envelope))


async def test_every_truncation_fails_with_a_crypto_error() -> None:
    crypto = engine()
    envelope = await seal(crypto, b"0123456789")
    for length in range(len(envelope)):
        with pytest.raises(CryptoError):
            await unseal(crypto, envelope[:length])


async def test_a_plain_body_is_not_an_envelope() -> None:
    with pytest.raises(InvalidEnvelopeError):
        await unseal(engine(), b'{"plain": true}')


# -- random inputs only ever raise CryptoError -------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


FUZZ = settings(
    max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _decrypt_only_raises_crypto_errors(
    loop: asyncio.AbstractEventLoop, crypto: MessageCrypto, data: bytes
) -> None:
    with contextlib.suppress(CryptoError):
        loop.run_until_complete(unseal(crypto, data))


def test_random_bytes_only_raise_crypto_errors(loop: asyncio.AbstractEventLoop) -> None:
    crypto = engine(track_nonces=True)

    @FUZZ
    @given(st.binary(max_size=200))
    def check(data: bytes) -> None:
        _decrypt_only_raises_crypto_errors(loop, crypto, data)

    check()


def test_random_bytes_after_the_marker_only_raise_crypto_errors(
    loop: asyncio.AbstractEventLoop,
) -> None:
    crypto = engine(track_nonces=True)

    @FUZZ
    @given(
        st.sampled_from([b"", b"\x01", b"\x01\x02k1", b"\x02", b"\x02\x02k1", b"\x03"]),
        st.binary(max_size=120),
    )
    def check(prefix: bytes, data: bytes) -> None:
        _decrypt_only_raises_crypto_errors(loop, crypto, MAGIC + prefix + data)

    check()


@pytest.mark.parametrize("version", [1, 2])
def test_mutated_envelopes_only_raise_crypto_errors(
    loop: asyncio.AbstractEventLoop, version: int
) -> None:
    crypto = engine(envelope_version=version)
    envelope = loop.run_until_complete(seal(crypto, b"payload"))

    @FUZZ
    @given(
        st.lists(
            st.tuples(st.integers(0, len(envelope) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        ),
        st.integers(0, len(envelope)),
    )
    def check(edits: list[tuple[int, int]], cut: int) -> None:
        tampered = bytearray(envelope)
        for offset, value in edits:
            tampered[offset] = value
        data = bytes(tampered[:cut])
        if data == envelope:
            return
        with pytest.raises(CryptoError):
            loop.run_until_complete(unseal(crypto, data))

    check()


# -- freshness ------------------------------------------------------------------------


async def test_a_stale_message_is_expired() -> None:
    clock = qr.ManualClock(start=START)
    crypto = engine(clock)
    envelope = await seal(crypto)
    clock.advance(300)
    assert await unseal(crypto, envelope) == b"hello, world"  # exactly at the limit
    clock.advance(1)
    with pytest.raises(MessageExpiredError):
        await unseal(crypto, envelope)


async def test_a_message_from_too_far_in_the_future_is_expired() -> None:
    keys = StaticKeyProvider(EncryptionKey("k1", KEY1))
    receiver_clock = qr.ManualClock(start=START)
    receiver = engine(receiver_clock, keys)
    near = await seal(engine(qr.ManualClock(start=START + 60), keys))
    far = await seal(engine(qr.ManualClock(start=START + 61), keys))
    assert await unseal(receiver, near) == b"hello, world"
    with pytest.raises(MessageExpiredError):
        await unseal(receiver, far)


async def test_freshness_can_be_switched_off() -> None:
    clock = qr.ManualClock(start=START)
    crypto = engine(clock, validate_freshness=False)
    envelope = await seal(crypto)
    clock.advance(10_000)
    assert await unseal(crypto, envelope) == b"hello, world"


async def test_custom_age_and_skew_limits() -> None:
    clock = qr.ManualClock(start=START)
    crypto = engine(clock, max_message_age=5.0, max_clock_skew=1.0)
    envelope = await seal(crypto)
    clock.advance(6)
    with pytest.raises(MessageExpiredError):
        await unseal(crypto, envelope)


# -- nonce replay ------------------------------------------------------------------------


async def test_a_replayed_envelope_is_rejected_when_nonces_are_tracked() -> None:
    crypto = engine(track_nonces=True)
    envelope = await seal(crypto)
    await unseal(crypto, envelope, message_id="m1")
    with pytest.raises(NonceReusedError):
        await unseal(crypto, envelope, message_id="m1")
    with pytest.raises(DecryptionFailedError):  # a copy under another id fails the tag
        await unseal(crypto, envelope, message_id="m2", redelivery=True)
    old = engine(track_nonces=True, envelope_version=1)
    legacy = await seal(old)
    await unseal(old, legacy, message_id="m1")
    with pytest.raises(NonceReusedError):  # version 1: such a copy is caught as a replay
        await unseal(old, legacy, message_id="m2", redelivery=True)


async def test_a_redelivery_of_the_same_message_is_not_a_replay() -> None:
    crypto = engine(track_nonces=True)
    envelope = await seal(crypto)
    await unseal(crypto, envelope, message_id="m1")
    assert await unseal(crypto, envelope, message_id="m1", redelivery=True) == b"hello, world"


async def test_replays_pass_when_nonces_are_not_tracked() -> None:
    crypto = engine()
    envelope = await seal(crypto)
    await unseal(crypto, envelope)
    await unseal(crypto, envelope)


async def test_a_nonce_is_recorded_only_after_the_tag_verified() -> None:
    crypto = engine(track_nonces=True)
    envelope = await seal(crypto)
    forged = envelope[:-1] + bytes([envelope[-1] ^ 1])  # same nonce, bad tag
    with pytest.raises(DecryptionFailedError):
        await unseal(crypto, forged)
    assert await unseal(crypto, envelope) == b"hello, world"


async def test_an_expired_message_does_not_record_its_nonce() -> None:
    clock = qr.ManualClock(start=START)
    crypto = engine(clock, track_nonces=True)
    envelope = await seal(crypto)
    clock.advance(301)
    with pytest.raises(MessageExpiredError):
        await unseal(crypto, envelope)
    assert await unseal(crypto, envelope, check_freshness=False) == b"hello, world"


async def test_the_nonce_cache_is_bounded_in_size() -> None:
    crypto = engine(track_nonces=True, nonce_cache_size=2)
    first, second, third = [await seal(crypto) for _ in range(3)]
    for envelope in (first, second, third):
        await unseal(crypto, envelope)
    assert len(crypto._nonces) == 2
    await unseal(crypto, first)  # evicted, so accepted again
    with pytest.raises(NonceReusedError):
        await unseal(crypto, third)


async def test_the_nonce_cache_forgets_after_its_ttl() -> None:
    clock = qr.ManualClock(start=START)
    crypto = engine(clock, track_nonces=True, nonce_cache_ttl=10.0)
    envelope = await seal(crypto)
    await unseal(crypto, envelope)
    clock.advance(9)
    with pytest.raises(NonceReusedError):
        await unseal(crypto, envelope)
    clock.advance(2)
    assert await unseal(crypto, envelope) == b"hello, world"
    assert len(crypto._nonces) == 1


# -- keys and rotation ----------------------------------------------------------------------


async def test_rotation_keeps_old_messages_readable_until_the_old_key_is_removed() -> None:
    keys = MultiKeyProvider([EncryptionKey("k1", KEY1)])
    crypto = engine(keys=keys)
    old = await seal(crypto, b"old")
    keys.add_key(EncryptionKey("k2", KEY2), make_current=True)
    new = await seal(crypto, b"new")
    assert decode_envelope(old).key_id == "k1"
    assert decode_envelope(new).key_id == "k2"
    assert await unseal(crypto, old) == b"old"
    assert await unseal(crypto, new) == b"new"
    assert await keys.valid_key_ids() == frozenset({"k1", "k2"})
    keys.remove_key("k1")
    with pytest.raises(KeyNotFoundError) as caught:
        await unseal(crypto, old)
    assert caught.value.key_id == "k1"
    assert await unseal(crypto, new) == b"new"


async def test_provider_rules() -> None:
    keys = MultiKeyProvider()
    with pytest.raises(ConfigurationError):
        await keys.current_key_id()
    keys.add_key(EncryptionKey("k1", KEY1))
    keys.add_key(EncryptionKey("k2", KEY2))
    assert await keys.current_key_id() == "k1"  # the first key added
    with pytest.raises(ValueError, match="already present"):
        keys.add_key(EncryptionKey("k1", KEY2))
    with pytest.raises(ValueError, match="current"):
        keys.remove_key("k1")
    with pytest.raises(KeyNotFoundError):
        keys.set_current("k3")
    with pytest.raises(KeyNotFoundError):
        keys.remove_key("k3")
    keys.set_current("k2")
    keys.remove_key("k1")
    assert await keys.valid_key_ids() == frozenset({"k2"})
    assert isinstance(keys, qr.KeyProvider)
    keys.close()
    assert await keys.valid_key_ids() == frozenset()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_keys_must_be_exactly_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="exactly 32 bytes") as caught:
        EncryptionKey("k1", b"\xaa" * size)
    assert "aa" not in str(caught.value).lower()


@pytest.mark.parametrize("key_id", ["", "x" * 256, "\udc80"])
def test_key_ids_must_be_1_to_255_bytes_of_utf8(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        EncryptionKey(key_id, KEY1)


def test_close_wipes_the_key_material() -> None:
    key = EncryptionKey("k1", KEY1)
    material = key._material
    assert material == bytearray(KEY1)
    key.close()
    assert material == bytearray(32)
    assert key.closed
    key.close()  # idempotent
    with pytest.raises(KeyNotFoundError):
        key.cipher()


async def test_a_closed_key_no_longer_decrypts() -> None:
    key = EncryptionKey("k1", KEY1)
    crypto = engine(keys=StaticKeyProvider(key))
    envelope = await seal(crypto)
    key.close()
    with pytest.raises(KeyNotFoundError):
        await unseal(crypto, envelope)


def test_generated_keys_are_random() -> None:
    first, second = EncryptionKey.generate("a"), EncryptionKey.generate("b")
    assert first._material != second._material


def _secret_forms(material: bytes) -> list[str]:
    return [
        material.hex(),
        base64.b64encode(material).decode(),
        repr(material)[2:-1],
        repr(bytearray(material)),
    ]


def test_key_material_never_shows_in_repr_str_pickle_or_copies() -> None:
    key = EncryptionKey("k1", KEY2, created_at=to_datetime(START))
    keys = MultiKeyProvider([key])
    crypto = engine(keys=keys)
    texts = [repr(key), str(key), repr(keys), repr(crypto), str(keys)]
    assert repr(key) == (
        "EncryptionKey(key_id='k1', created_at='2023-11-14T22:13:20+00:00', expires_at=None)"
    )
    for text in texts:
        for form in _secret_forms(KEY2):
            assert form not in text
    for obj in (key, keys):
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(obj)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


async def test_key_material_never_shows_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = StaticKeyProvider(EncryptionKey("k1", KEY2))
    crypto = engine(keys=keys, track_nonces=True)
    envelope = await seal(crypto)
    errors: list[BaseException] = []
    tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])  # b"\0" was no change 1 in 256 times
    for bad in (tampered, envelope.replace(b"k1", b"k2", 1), envelope[:10]):
        try:
            await unseal(crypto, bad)
        except CryptoError as error:
            errors.append(error)
    await unseal(crypto, envelope)
    try:
        await unseal(crypto, envelope)
    except CryptoError as error:
        errors.append(error)
    with pytest.raises(ValueError, match="not valid base64") as bad_base64:
        EncryptionKey.from_base64("k1", base64.b64encode(KEY2).decode()[:-4] + "!!!!")
    errors.append(bad_base64.value)
    assert len(errors) == 5
    text = caplog.text + " ".join(f"{e!s} {e!r}" for e in errors)
    for form in _secret_forms(KEY2):
        assert form not in text


# -- keys from the environment ---------------------------------------------------------------


def _b64(material: bytes) -> str:
    return base64.b64encode(material).decode()


async def test_env_key_provider_reads_keys_and_the_current_one() -> None:
    env = {"QUEUE_RUNTIME_ENCRYPTION_KEYS": f" k1:{_b64(KEY1)} , k2:{_b64(KEY2)} "}
    keys = EnvKeyProvider.from_env(env)
    assert await keys.current_key_id() == "k1"
    assert await keys.valid_key_ids() == frozenset({"k1", "k2"})
    env["QUEUE_RUNTIME_ENCRYPTION_CURRENT_KEY"] = "k2"
    assert await EnvKeyProvider.from_env(env).current_key_id() == "k2"
    # a message sealed with a code-configured key opens with the env-configured one
    sealed = await seal(engine(keys=StaticKeyProvider(EncryptionKey("k2", KEY2))))
    assert await unseal(engine(keys=keys), sealed) == b"hello, world"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "no keys were given"),
        ({"QUEUE_RUNTIME_ENCRYPTION_KEYS": "  "}, "no keys were given"),
        ({"QUEUE_RUNTIME_ENCRYPTION_KEYS": _b64(KEY2)}, "entry 1"),
        ({"QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k1:{_b64(KEY1)},k2:{_b64(KEY2)[:-2]}"}, "entry 2"),
        ({"QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k2:{_b64(KEY2[:16])}"}, "exactly 32 bytes"),
        ({"QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k2:{_b64(KEY2)},k2:{_b64(KEY2)}"}, "already"),
        (
            {
                "QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k2:{_b64(KEY2)}",
                "QUEUE_RUNTIME_ENCRYPTION_CURRENT_KEY": "k3",
            },
            "'k3'",
        ),
    ],
)
def test_env_key_provider_errors_name_the_problem_not_the_key(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        EnvKeyProvider.from_env(env)
    assert caught.value.field == "crypto.keys"
    for form in [*_secret_forms(KEY2), _b64(KEY2)[:-2], _b64(KEY2[:16])]:
        assert form not in str(caught.value)


# -- configuration ------------------------------------------------------------------------------


def test_crypto_config_defaults_follow_the_spec() -> None:
    config = CryptoConfig()
    assert config == CryptoConfig(
        enabled=False,
        plaintext_policy=PlaintextPolicy.ALLOW,
        max_message_age=300.0,
        max_clock_skew=60.0,
        validate_freshness=True,
        track_nonces=False,
        nonce_cache_ttl=600.0,
        nonce_cache_size=100_000,
        envelope_version=2,
    )
    assert qr.QueueConfig().crypto == config


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"enabled": "yes"}, "crypto.enabled"),
        ({"plaintext_policy": "reject"}, "crypto.plaintext_policy"),
        ({"max_message_age": 0}, "crypto.max_message_age"),
        ({"max_clock_skew": float("inf")}, "crypto.max_clock_skew"),
        ({"nonce_cache_ttl": -1}, "crypto.nonce_cache_ttl"),
        ({"nonce_cache_size": 0}, "crypto.nonce_cache_size"),
        ({"track_nonces": 1}, "crypto.track_nonces"),
        ({"envelope_version": 3}, "crypto.envelope_version"),
        ({"envelope_version": 0}, "crypto.envelope_version"),
        ({"envelope_version": True}, "crypto.envelope_version"),
        ({"envelope_version": "2"}, "crypto.envelope_version"),
    ],
)
def test_crypto_config_validates(settings_: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CryptoConfig(**settings_)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_crypto_section_loads_from_toml_env_and_code(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "queue.toml"
    path.write_text('[crypto]\nenabled = true\nplaintext_policy = "allow_with_alert"\n')
    env = {
        "QUEUE_RUNTIME_CRYPTO_MAX_MESSAGE_AGE": "120",
        "QUEUE_RUNTIME_CRYPTO_TRACK_NONCES": "1",
        "QUEUE_RUNTIME_CRYPTO_ENVELOPE_VERSION": "1",
    }
    config = load_config(path, env=env, crypto={"nonce_cache_size": 10})
    assert config.crypto == CryptoConfig(
        enabled=True,
        plaintext_policy=PlaintextPolicy.ALLOW_WITH_ALERT,
        max_message_age=120.0,
        track_nonces=True,
        nonce_cache_size=10,
        envelope_version=1,
    )
    assert load_config(env={"QUEUE_RUNTIME_CRYPTO_PLAINTEXT_POLICY": "REJECT"}).crypto == (
        CryptoConfig(plaintext_policy=PlaintextPolicy.REJECT)
    )
    with pytest.raises(ConfigurationError) as caught:
        load_config(env={"QUEUE_RUNTIME_CRYPTO_KEY": "x"})
    assert caught.value.field == "crypto.key"
    rows = {row[0]: row for row in config_reference()}
    assert rows["crypto.plaintext_policy"][1:] == (
        "QUEUE_RUNTIME_CRYPTO_PLAINTEXT_POLICY",
        "allow | allow_with_alert | reject",
        '"allow"',
    )


def test_the_encryption_keys_variable_is_not_taken_for_a_config_setting() -> None:
    env = {"QUEUE_RUNTIME_ENCRYPTION_KEYS": f"k1:{_b64(KEY1)}"}
    assert load_config(env=env).crypto == CryptoConfig()
