"""Encrypted messages through SQS (moto server): ciphertext on the wire, plaintext to the caller."""

from __future__ import annotations

import queue_runtime as qr
from queue_runtime.crypto import is_encrypted
from queue_runtime.providers.aws import SqsProvider


async def test_encrypted_messages_round_trip_through_sqs_and_travel_as_ciphertext(
    provider: SqsProvider, client: qr.QueueClient
) -> None:
    await provider.create_queue("secret.fifo")
    keys = qr.StaticKeyProvider(qr.EncryptionKey.generate("k1"))
    config = qr.QueueConfig(
        provider=provider.config,
        retry=client.config.retry,
        crypto=qr.CryptoConfig(enabled=True),
    )
    encrypted = qr.QueueClient(provider, config, keys=keys)
    body = b'{"token": "not for the queue operator"}'

    await encrypted.send_message(
        "secret.fifo", qr.Message(body, session_id="o/r/pull/1", attributes={"k": "v"})
    )
    raw = await client.receive_message("secret.fifo", timeout=5.0)  # a client without keys
    assert raw is not None
    await client.abandon_message(raw.receipt)
    received = await encrypted.receive_message("secret.fifo", timeout=5.0)

    assert is_encrypted(raw.body)
    assert body not in raw.body
    assert raw.attributes["k"] == "v"  # routing metadata stays readable
    assert received is not None
    assert received.body == body
    assert received.session_id == "o/r/pull/1"
    await encrypted.complete_message(received.receipt)
