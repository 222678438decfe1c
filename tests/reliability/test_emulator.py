"""The moto server as the proofs run it redelivers an expired FIFO group in order.

Without the ``moto_fifo_in_order`` fixture (see ``conftest.py``) moto 5.2.5
delivers only the *last* of a group's expired messages: the crash proof would
then fail for the emulator's sake, not the runtime's.
"""

from __future__ import annotations

import asyncio

import pytest

from queue_runtime.providers.aws import SqsProvider


@pytest.mark.timeout(60)
async def test_an_expired_fifo_group_comes_back_from_its_first_message(sqs: SqsProvider) -> None:
    url = await sqs.create_queue("emulator.fifo", dead_letter_queue=False)
    raw = await sqs.client()
    await raw.send_message_batch(
        QueueUrl=url,
        Entries=[
            {
                "Id": str(n),
                "MessageBody": str(n),
                "MessageGroupId": "g",
                "MessageDeduplicationId": str(n),
            }
            for n in range(4)
        ],
    )
    first = await raw.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)
    assert [m["Body"] for m in first["Messages"]] == ["0", "1", "2", "3"]

    await asyncio.sleep(1.5)  # every lock expires unacknowledged, as when a consumer dies
    again = await raw.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)

    assert [m["Body"] for m in again["Messages"]][:1] == ["0"]
