"""Encryption on every provider: an envelope is bound to its message's identity.

A version 2 envelope authenticates the message id, session id and correlation
id, so this holds only if every provider carries the message id unchanged
end to end — through send and receive, the dead-letter queue (dead-lettered
by the client or after too many deliveries) and requeue. A copy of an envelope
under another message id, or in another session, must not decrypt.
"""

from __future__ import annotations

import dataclasses

import queue_runtime as qr
from queue_runtime.crypto import UndecryptableMessage, decode_envelope, is_encrypted

from .harness import Harness

KEYS = qr.StaticKeyProvider(qr.EncryptionKey("contract-key", bytes(range(32))))


def encrypting(harness: Harness) -> qr.QueueClient:
    """A client with encryption on, over the harness's provider (closed with the harness)."""
    plain = harness.client
    config = dataclasses.replace(plain.config, crypto=qr.CryptoConfig(enabled=True))
    return qr.QueueClient(plain.provider, config, clock=plain.clock, keys=KEYS)


async def receive(harness: Harness, client: qr.QueueClient, queue: str) -> qr.ReceivedMessage:
    """The queue's next message through ``client`` (through a session if they are native)."""
    if (
        client.session_support(queue) is qr.SessionSupport.NATIVE
        and queue in harness.session_queues
    ):
        session = await client.accept_session(queue, timeout=5.0)
        assert session is not None
        harness.open_sessions.append(session)
        message = await session.receive_message(timeout=5.0)
    else:
        message = await client.receive_message(queue, timeout=5.0)
    assert message is not None
    return message


async def dead_letter_of(
    client: qr.QueueClient, harness: Harness, queue: str
) -> qr.ReceivedMessage:
    for _ in range(50):
        [*letters] = await client.receive_dead_letters(queue, 1, timeout=0.5)
        if letters:
            return letters[0]
        await harness.pass_time(0.2)
    raise AssertionError(f"no dead letter in {queue}")


def sent(message_id: str) -> qr.Message:
    return qr.Message(
        b'{"secret": 1}', message_id=message_id, correlation_id="c-1", attributes={"k": "v"}
    )


async def test_an_envelope_decrypts_wherever_the_provider_carries_its_message(
    harness: Harness,
) -> None:
    client = encrypting(harness)
    queue = await harness.queue(sessions=False)
    await client.send_message(queue, sent("order-1"))

    raw = await receive(harness, harness.client, queue)  # a client without keys sees the envelope
    assert is_encrypted(raw.body)
    assert decode_envelope(raw.body).version == 2
    assert raw.message_id == "order-1"
    await harness.client.abandon_message(raw.receipt)

    received = await receive(harness, client, queue)
    assert not isinstance(received, UndecryptableMessage), received
    assert (received.body, received.message_id) == (b'{"secret": 1}', "order-1")
    await client.dead_letter_message(received.receipt, "ValueError", "dead-lettered by the client")

    letter = await dead_letter_of(client, harness, queue)
    assert not isinstance(letter, UndecryptableMessage), letter
    assert (letter.body, letter.message_id) == (b'{"secret": 1}', "order-1")
    await client.abandon_message(letter.receipt)

    assert await client.requeue_dead_letters(queue) == 1  # decrypted, sealed afresh
    requeued = await receive(harness, client, queue)
    assert not isinstance(requeued, UndecryptableMessage), requeued
    assert (requeued.body, requeued.message_id) == (b'{"secret": 1}', "order-1")

    # given back until it runs out of deliveries: the provider dead-letters it on its own
    message = requeued
    while True:
        await client.abandon_message(message.receipt)
        again = await client.receive_message(queue, timeout=0.5)
        if again is None:
            break
        message = again
    letter = await dead_letter_of(client, harness, queue)
    assert not isinstance(letter, UndecryptableMessage), letter
    assert letter.message_id == "order-1"
    await client.abandon_message(letter.receipt)

    # a client without keys requeues the envelope as it is: still bound, still readable
    assert await harness.client.requeue_dead_letters(queue) == 1
    verbatim = await receive(harness, client, queue)
    assert not isinstance(verbatim, UndecryptableMessage), verbatim
    assert (verbatim.body, verbatim.message_id) == (b'{"secret": 1}', "order-1")
    await client.complete_message(verbatim.receipt)


async def test_a_copy_under_another_message_id_does_not_decrypt(harness: Harness) -> None:
    client = encrypting(harness)
    queue = await harness.queue(sessions=False)
    await client.send_message(queue, sent("order-1"))
    raw = await receive(harness, harness.client, queue)
    await harness.client.complete_message(raw.receipt)

    # someone with access to the queue (not to the key) replays the envelope as a new message
    await harness.client.send_message(queue, raw.to_message(message_id="order-2"))
    await harness.client.send_message(queue, raw.to_message())  # the same id: genuine

    forged, genuine = await receive(harness, client, queue), await receive(harness, client, queue)
    if forged.message_id == "order-1":
        forged, genuine = genuine, forged
    assert forged.message_id == "order-2"
    assert isinstance(forged, UndecryptableMessage)
    assert isinstance(forged.error, qr.DecryptionFailedError)
    assert forged.body == raw.body  # kept as received, for the dead-letter queue
    assert not isinstance(genuine, UndecryptableMessage)
    assert genuine.body == b'{"secret": 1}'
    await client.complete_message(forged.receipt)
    await client.complete_message(genuine.receipt)


async def test_a_copy_moved_to_another_session_does_not_decrypt(harness: Harness) -> None:
    client = encrypting(harness)
    queue = await harness.queue()
    await client.send_message(queue, qr.Message(b"pr event", session_id="o/r/pull/1"))
    raw = await receive(harness, harness.client, queue)
    await harness.client.complete_message(raw.receipt)

    await harness.client.send_message(queue, raw.to_message(session_id="o/r/pull/2"))
    moved = await receive(harness, client, queue)

    assert moved.session_id == "o/r/pull/2"
    assert isinstance(moved, UndecryptableMessage)
    assert isinstance(moved.error, qr.DecryptionFailedError)
    await client.complete_message(moved.receipt)
