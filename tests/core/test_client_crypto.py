"""QueueClient with encryption on, end to end over the in-memory provider.

The envelope and its checks: docs/design.md#encryption.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, Event, Handler
from queue_runtime.crypto import ENVELOPE_OVERHEAD, decode_envelope
from queue_runtime.providers.memory import InMemoryProvider

START = 1_700_000_000.0
QUEUE = "orders"
KEY1 = bytes(range(32))
KEY2 = bytes(range(50, 82))


def keyring() -> qr.MultiKeyProvider:
    return qr.MultiKeyProvider([qr.EncryptionKey("k1", KEY1)])


def crypto_config(**crypto: Any) -> qr.QueueConfig:
    return qr.QueueConfig(crypto=qr.CryptoConfig(enabled=True, **crypto))


@pytest.fixture
def clock() -> qr.ManualClock:
    return qr.ManualClock(start=START)


@pytest.fixture
async def provider(clock: qr.ManualClock) -> AsyncIterator[InMemoryProvider]:
    memory = InMemoryProvider(qr.InMemoryConfig(), clock=clock)
    yield memory
    await memory.aclose()


@pytest.fixture
def make_client(provider: InMemoryProvider, clock: qr.ManualClock) -> Callable[..., qr.QueueClient]:
    def make(keys: qr.KeyProvider | None = None, **crypto: Any) -> qr.QueueClient:
        return qr.QueueClient(
            provider, crypto_config(**crypto), clock=clock, keys=keys or keyring()
        )

    return make


@pytest.fixture
def client(make_client: Callable[..., qr.QueueClient]) -> qr.QueueClient:
    return make_client()


@pytest.fixture
def plain(provider: InMemoryProvider, clock: qr.ManualClock) -> qr.QueueClient:
    """A client without encryption on the same provider: it sees the wire bytes."""
    return qr.QueueClient(provider, qr.QueueConfig(), clock=clock)


# -- round trips ------------------------------------------------------------------------


async def test_send_and_receive_are_transparent_and_the_wire_carries_ciphertext(
    client: qr.QueueClient, plain: qr.QueueClient
) -> None:
    message = qr.Message(
        b'{"secret": 42}',
        attributes={"event_type": "push"},
        correlation_id="c-1",
        content_type="application/json",
    )
    await client.send_message(QUEUE, message)
    [wire] = plain.provider.pending_messages(QUEUE)  # type: ignore[attr-defined]
    assert qr.is_encrypted(wire.body)
    assert b"secret" not in wire.body
    assert wire.attributes == {"event_type": "push"}  # routing stays readable
    assert (wire.message_id, wire.correlation_id) == (message.message_id, "c-1")
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert received.body == b'{"secret": 42}'
    assert received.json() == {"secret": 42}
    assert (received.message_id, received.attributes) == (message.message_id, message.attributes)
    await client.complete_message(received.receipt)
    assert client.crypto is not None
    assert (client.crypto.stats.encrypted, client.crypto.stats.decrypted) == (1, 1)


@pytest.mark.parametrize("size", [0, 1, 200_000])
async def test_round_trip_sizes(client: qr.QueueClient, size: int) -> None:
    body = bytes(i % 256 for i in range(size))
    await client.send_message(QUEUE, qr.Message(body))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert received.body == body


async def test_batches_are_encrypted_and_decrypted_in_order(client: qr.QueueClient) -> None:
    sent = [qr.Message(f"m{i}".encode()) for i in range(25)]
    ids = await client.send_messages(QUEUE, sent)
    assert ids == [m.message_id for m in sent]
    received: list[qr.ReceivedMessage] = []
    while batch := await client.receive_messages(QUEUE, 10, timeout=0):
        received.extend(batch)
    assert [m.body for m in received] == [m.body for m in sent]


async def test_sessions_decrypt_and_the_session_id_is_authenticated(
    client: qr.QueueClient,
) -> None:
    await client.send_messages(
        QUEUE, [qr.Message(f"{i}".encode(), session_id="o/r/pull/1") for i in range(3)]
    )
    session = await client.accept_session(QUEUE, timeout=0)
    assert session is not None
    async with session:
        batch = await session.receive_messages(10, timeout=0)
        assert [m.body for m in batch] == [b"0", b"1", b"2"]
        single = await session.receive_message(timeout=0)
        assert single is None


async def test_an_envelope_moved_to_another_session_fails(
    client: qr.QueueClient, plain: qr.QueueClient
) -> None:
    await client.send_message(QUEUE, qr.Message(b"x", session_id="o/r/pull/1"))
    wire = await plain.receive_message(QUEUE, timeout=0)
    assert wire is not None
    await plain.complete_message(wire.receipt)
    await plain.send_message(QUEUE, qr.Message(wire.body, session_id="o/r/pull/2"))
    session = await client.accept_session(QUEUE, "o/r/pull/2", timeout=0)
    assert session is not None
    async with session:
        moved = await session.receive_message(timeout=0)
        assert isinstance(moved, qr.UndecryptableMessage)
        assert isinstance(moved.error, qr.DecryptionFailedError)
        await session.dead_letter_message(moved.receipt, type(moved.error).__name__)


# -- dead letters ----------------------------------------------------------------------------


async def test_dead_letters_decrypt_even_when_old_and_requeue_reencrypts(
    client: qr.QueueClient, plain: qr.QueueClient, clock: qr.ManualClock
) -> None:
    await client.send_message(QUEUE, qr.Message(b"poison", correlation_id="c"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    await client.dead_letter_message(received.receipt, "Bad", "bad input")
    clock.advance(3_600)  # far beyond max_message_age: dead letters skip freshness
    [peeked] = await client.peek_dead_letters(QUEUE)
    assert (peeked.body, peeked.dead_letter_reason) == (b"poison", "Bad")
    [locked] = await client.receive_dead_letters(QUEUE, timeout=0)
    assert locked.body == b"poison"
    await client.abandon_message(locked.receipt)
    assert await client.requeue_dead_letters(QUEUE, timeout=0) == 1
    [wire] = plain.provider.pending_messages(QUEUE)  # type: ignore[attr-defined]
    assert decode_envelope(wire.body).encrypted_at == int(START + 3_600)  # sealed afresh
    again = await client.receive_message(QUEUE, timeout=0)
    assert again is not None
    assert again.body == b"poison"


async def test_undecryptable_dead_letters_are_returned_marked_and_never_requeued(
    client: qr.QueueClient, plain: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await plain.send_message(QUEUE, qr.Message(b"QRE1\x01\x02k1 truncated"))
    wire = await plain.receive_message(QUEUE, timeout=0)
    assert wire is not None
    await plain.dead_letter_message(wire.receipt, "InvalidEnvelopeError")
    [peeked] = await client.peek_dead_letters(QUEUE)
    assert isinstance(peeked, qr.UndecryptableMessage)
    assert isinstance(peeked.error, qr.InvalidEnvelopeError)
    assert await client.requeue_dead_letters(QUEUE, timeout=0) == 0
    assert len(provider.dead_letter_messages(QUEUE)) == 1  # still there, nothing lost


# -- sizes -------------------------------------------------------------------------------------


async def test_size_limits_apply_to_the_encrypted_message(
    client: qr.QueueClient, provider: InMemoryProvider
) -> None:
    limit = client.max_message_size
    fits = limit - ENVELOPE_OVERHEAD - len("k1")
    await client.send_message(QUEUE, qr.Message(b"a" * fits))
    with pytest.raises(qr.MessageTooLargeError) as caught:
        await client.send_messages(QUEUE, [qr.Message(b"b"), qr.Message(b"c" * (fits + 1))])
    assert caught.value.size == limit + 1
    assert len(provider.pending_messages(QUEUE)) == 1  # nothing of the failed call was sent


# -- failures never lose messages ----------------------------------------------------------------


async def test_a_bad_envelope_in_a_batch_comes_back_marked_and_the_rest_decrypt(
    client: qr.QueueClient, plain: qr.QueueClient, provider: InMemoryProvider
) -> None:
    await client.send_message(QUEUE, qr.Message(b"first"))
    wire = await plain.receive_message(QUEUE, timeout=0)
    assert wire is not None
    await plain.complete_message(wire.receipt)
    tampered = wire.body[:-1] + bytes([wire.body[-1] ^ 0x80])
    await client.send_message(QUEUE, qr.Message(b"before"))
    await plain.send_message(QUEUE, qr.Message(tampered, message_id="bad-1"))
    await client.send_message(QUEUE, qr.Message(b"after"))

    batch = await client.receive_messages(QUEUE, 10, timeout=0)
    assert len(batch) == 3
    good_1, bad, good_2 = batch
    assert (good_1.body, good_2.body) == (b"before", b"after")
    assert isinstance(bad, qr.UndecryptableMessage)
    assert isinstance(bad.error, qr.DecryptionFailedError)
    assert bad.body == tampered  # exactly as received
    assert bad.error.message_id == "bad-1"
    assert bad.error.queue == QUEUE
    assert "UndecryptableMessage(message_id='bad-1'" in repr(bad)
    with pytest.raises(qr.DecryptionFailedError):
        bad.json()
    with pytest.raises(qr.DecryptionFailedError):
        bad.to_message()
    await client.dead_letter_message(bad.receipt, type(bad.error).__name__)
    [letter] = provider.dead_letter_messages(QUEUE)
    assert (letter.message_id, letter.body) == ("bad-1", tampered)
    assert client.crypto is not None
    assert client.crypto.stats.failures["DecryptionFailedError"] == 1


async def test_unknown_key_expired_and_replayed_messages_are_marked(
    make_client: Callable[..., qr.QueueClient],
    plain: qr.QueueClient,
    clock: qr.ManualClock,
) -> None:
    other = make_client(qr.StaticKeyProvider(qr.EncryptionKey("k9", KEY2)))
    client = make_client(track_nonces=True)
    await other.send_message(QUEUE, qr.Message(b"unknown key", message_id="u"))
    await client.send_message(QUEUE, qr.Message(b"old", message_id="o"))
    clock.advance(301)
    await client.send_message(QUEUE, qr.Message(b"fresh", message_id="f"))
    batch = await client.receive_messages(QUEUE, 10, timeout=0)
    errors = {m.message_id: getattr(m, "error", None) for m in batch}
    assert isinstance(errors["u"], qr.KeyNotFoundError)
    assert errors["u"].key_id == "k9"
    assert isinstance(errors["o"], qr.MessageExpiredError)
    assert errors["f"] is None
    fresh = next(m for m in batch if m.message_id == "f")
    # the same message redelivered after abandon is not a replay...
    await client.abandon_message(fresh.receipt)
    for m in batch:
        if m.message_id != "f":
            await client.complete_message(m.receipt)
    again = await client.receive_message(QUEUE, timeout=0)
    assert again is not None
    assert again.body == b"fresh"
    assert again.delivery_count == 2
    await client.complete_message(again.receipt)
    # ...but the same envelope sent again as a new message is
    wire = fresh.body
    assert wire == b"fresh"
    await client.send_message(QUEUE, qr.Message(b"x", message_id="copy-source"))
    source = await plain.receive_message(QUEUE, timeout=0)
    assert source is not None
    await plain.complete_message(source.receipt)
    await plain.send_message(QUEUE, qr.Message(source.body, message_id="copy-source"))
    first = await client.receive_message(QUEUE, timeout=0)
    assert first is not None
    assert first.body == b"x"
    await client.complete_message(first.receipt)
    await plain.send_message(QUEUE, qr.Message(source.body, message_id="copy-source"))
    replayed = await client.receive_message(QUEUE, timeout=0)
    assert isinstance(replayed, qr.UndecryptableMessage)
    assert isinstance(replayed.error, qr.NonceReusedError)


async def test_a_failing_key_provider_gives_the_batch_back_and_raises(
    make_client: Callable[..., qr.QueueClient], provider: InMemoryProvider
) -> None:
    class Broken(qr.MultiKeyProvider):
        fail = False

        async def get_key(self, key_id: str) -> qr.EncryptionKey:
            if self.fail:
                raise qr.ConnectionFailedError("vault unreachable")
            return await super().get_key(key_id)

    keys = Broken([qr.EncryptionKey("k1", KEY1)])
    client = make_client(keys)
    await client.send_messages(QUEUE, [qr.Message(b"1"), qr.Message(b"2")])
    keys.fail = True
    with pytest.raises(qr.ConnectionFailedError):
        await client.receive_messages(QUEUE, 10, timeout=0)
    keys.fail = False
    batch = await client.receive_messages(QUEUE, 10, timeout=0)  # visible again at once
    assert [m.body for m in batch] == [b"1", b"2"]


# -- plaintext policies ---------------------------------------------------------------------------


async def test_plaintext_allow_delivers_and_warns(
    make_client: Callable[..., qr.QueueClient],
    plain: qr.QueueClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client()
    await plain.send_message(QUEUE, qr.Message(b"plain"))
    with caplog.at_level(logging.WARNING, logger="queue_runtime.crypto"):
        received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert received.body == b"plain"
    assert not isinstance(received, qr.UndecryptableMessage)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert client.crypto is not None
    assert (client.crypto.stats.plaintext_received, client.crypto.stats.plaintext_alerts) == (1, 0)


async def test_plaintext_allow_with_alert_delivers_logs_an_error_and_counts(
    make_client: Callable[..., qr.QueueClient],
    plain: qr.QueueClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(plaintext_policy=qr.PlaintextPolicy.ALLOW_WITH_ALERT)
    await plain.send_message(QUEUE, qr.Message(b"plain"))
    with caplog.at_level(logging.WARNING, logger="queue_runtime.crypto"):
        received = await client.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert received.body == b"plain"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert client.crypto is not None
    assert client.crypto.stats.plaintext_alerts == 1


async def test_plaintext_reject_marks_the_message_with_unencrypted_message_error(
    make_client: Callable[..., qr.QueueClient], plain: qr.QueueClient
) -> None:
    client = make_client(plaintext_policy=qr.PlaintextPolicy.REJECT)
    await plain.send_message(QUEUE, qr.Message(b"plain"))
    received = await client.receive_message(QUEUE, timeout=0)
    assert isinstance(received, qr.UndecryptableMessage)
    assert isinstance(received.error, qr.UnencryptedMessageError)
    with pytest.raises(qr.UnencryptedMessageError):
        received.json()
    await client.dead_letter_message(received.receipt, "UnencryptedMessageError")
    assert client.crypto is not None
    assert client.crypto.stats.plaintext_rejected == 1


async def test_a_client_without_encryption_leaves_bodies_alone(
    client: qr.QueueClient, plain: qr.QueueClient
) -> None:
    await client.send_message(QUEUE, qr.Message(b"x"))
    received = await plain.receive_message(QUEUE, timeout=0)
    assert received is not None
    assert qr.is_encrypted(received.body)
    assert plain.crypto is None


# -- construction and rotation ----------------------------------------


async def test_enabled_needs_keys_and_keys_need_enabled(provider: InMemoryProvider) -> None:
    with pytest.raises(qr.ConfigurationError) as caught:
        qr.QueueClient(provider, crypto_config())
    assert caught.value.field == "crypto.enabled"
    with pytest.raises(qr.ConfigurationError):
        qr.QueueClient(provider, qr.QueueConfig(), keys=keyring())


async def test_create_client_reads_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_RUNTIME_ENCRYPTION_KEYS", f"k1:{base64.b64encode(KEY1).decode()}")
    async with await qr.create_client(crypto_config()) as client:
        await client.send_message(QUEUE, qr.Message(b"from env"))
        received = await client.receive_message(QUEUE, timeout=0)
        assert received is not None
        assert received.body == b"from env"
    monkeypatch.delenv("QUEUE_RUNTIME_ENCRYPTION_KEYS")
    with pytest.raises(qr.ConfigurationError, match="QUEUE_RUNTIME_ENCRYPTION_KEYS"):
        await qr.create_client(crypto_config())


async def test_rotation_through_the_client(client: qr.QueueClient) -> None:
    assert client.crypto is not None
    keys = client.crypto.keys
    assert isinstance(keys, qr.MultiKeyProvider)
    await client.send_message(QUEUE, qr.Message(b"under k1"))
    keys.add_key(qr.EncryptionKey("k2", KEY2), make_current=True)
    await client.send_message(QUEUE, qr.Message(b"under k2"))
    batch = await client.receive_messages(QUEUE, 10, timeout=0)
    assert [m.body for m in batch] == [b"under k1", b"under k2"]
    for m in batch:
        await client.abandon_message(m.receipt)
    keys.remove_key("k1")
    old, new = await client.receive_messages(QUEUE, 10, timeout=0)
    assert isinstance(old, qr.UndecryptableMessage)
    assert isinstance(old.error, qr.KeyNotFoundError)
    assert old.error.key_id == "k1"
    assert new.body == b"under k2"


async def test_key_material_is_not_in_the_client_repr(client: qr.QueueClient) -> None:
    assert client.crypto is not None
    for text in (repr(client), repr(client.crypto), repr(client.crypto.keys)):
        assert KEY1.hex() not in text
        assert base64.b64encode(KEY1).decode() not in text


# -- the bot dead-letters what cannot be decrypted and handles the rest ----------


async def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", ["emulated", "native"])
async def test_the_bot_dead_letters_a_bad_envelope_and_handles_the_rest_of_the_batch(
    mode: str,
) -> None:
    provider = InMemoryProvider(qr.InMemoryConfig(session_mode=mode))  # type: ignore[arg-type]
    handled: list[bytes] = []

    class Record(Handler):
        event_types: ClassVar[tuple[str, ...]] = ("push",)

        async def handle(self, event: Event) -> None:
            handled.append(event.body)

    sender = qr.QueueClient(provider, crypto_config(), keys=keyring())
    plain = qr.QueueClient(provider)
    attrs = {"event_type": "push"}
    session = "o/r/pull/1"
    await sender.send_message(QUEUE, qr.Message(b"0", attributes=attrs, session_id=session))
    sealed = await qr.MessageCrypto(keyring()).encrypt(b"1", session_id=session)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    await plain.send_message(
        QUEUE, qr.Message(tampered, attributes=attrs, session_id=session, message_id="bad")
    )
    await sender.send_message(QUEUE, qr.Message(b"2", attributes=attrs, session_id=session))

    receiver = qr.QueueClient(provider, crypto_config(), keys=keyring())
    async with Bot(receiver, QUEUE, [Record], receive_wait=0.05) as bot:
        await _wait_until(lambda: bot.stats().dead_lettered == 1 and bot.stats().completed == 2)
    assert handled == [b"0", b"2"]
    [letter] = provider.dead_letter_messages(QUEUE)
    assert (letter.message_id, letter.dead_letter_reason) == ("bad", "DecryptionFailedError")
    assert letter.body == tampered
    await provider.aclose()
