"""Bugs the simulation found, each with the test that would have caught it."""

from __future__ import annotations

from collections.abc import Callable

import queue_runtime as qr
from queue_runtime.testing import BotKit

MakeKit = Callable[..., BotKit]


async def test_a_lost_session_receive_answer_does_not_let_later_messages_overtake(
    bot_kit_factory: MakeKit,
) -> None:
    kit = bot_kit_factory(memory=qr.InMemoryConfig(session_mode="native"), mailbox_size=1)
    probe = kit.probe("push")
    first = await kit.publish("push", {"n": 1}, session_id="o/r")
    second = await kit.publish("push", {"n": 2}, session_id="o/r")
    kit.faults.drop_next("session_receive")

    await kit.start()
    await kit.drain()

    probe.assert_order([first, second])
