"""What the proofs publish, and how they watch a queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import orjson

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider

from .bot_process import EVENT_TYPE


def messages(sessions: int, per_session: int, *, blocks: bool = False) -> list[qr.Message]:
    """``per_session`` messages for each of ``sessions`` sessions, numbered by ``seq`` in
    publish order. Interleaved (s0:0, s1:0, ..., s0:1, ...) unless ``blocks``
    (s0:0, s0:1, ..., s1:0, ...), which lets one SQS receive take many of a session."""
    order = (
        [(s, n) for s in range(sessions) for n in range(per_session)]
        if blocks
        else [(s, n) for n in range(per_session) for s in range(sessions)]
    )
    return [
        qr.Message.from_json({"seq": n}, session_id=f"s{s}", attributes={"event_type": EVENT_TYPE})
        for s, n in order
    ]


def poisoned(sent: list[qr.Message], every: int) -> list[qr.Message]:
    """``sent`` with every ``every``-th message, counted session by session in ``seq``
    order, marked poison (a ``poison`` attribute: the handler raises). Spread so: a
    session holds at most one, and messages after it in its session wait for it."""
    order = sorted(range(len(sent)), key=lambda i: (sent[i].session_id or "", _seq(sent[i])))
    chosen = {i for k, i in enumerate(order) if k % every == every - 1}
    return [
        replace(m, attributes={**m.attributes, "poison": "1"}) if i in chosen else m
        for i, m in enumerate(sent)
    ]


def _seq(message: qr.Message) -> int:
    return int(orjson.loads(message.body)["seq"])


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: Callable[[], str]
) -> None:
    """Poll ``condition`` every 0.1 s; fail with ``what()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {what()}")
        await asyncio.sleep(0.1)


async def queue_depth(provider: SqsProvider, queue: str) -> tuple[int, int]:
    """(visible, in flight) messages of ``queue`` as SQS counts them, without receiving."""
    sqs = await provider.client()
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    attributes = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )
