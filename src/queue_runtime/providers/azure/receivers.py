"""Cached SDK receivers, and taking turns on them within a timeout."""

from __future__ import annotations

import asyncio
from typing import Final

from .sdk import ReceiverSeam

__all__ = ["MIN_WAIT", "Receiver", "acquire"]

MIN_WAIT: Final = 0.01
"""The SDK wants wait times > 0; a zero timeout becomes this."""


class Receiver:
    """A cached SDK receiver; receive calls on it take turns.

    Its link is opened before the first receive: the SDK counts opening against
    the receive's wait, so a short wait on a cold receiver could return nothing
    although messages are waiting.
    """

    __slots__ = ("lock", "opened", "sdk")

    def __init__(self, sdk: ReceiverSeam, *, opened: bool = False) -> None:
        self.sdk = sdk
        self.lock = asyncio.Lock()
        self.opened = opened


async def acquire(lock: asyncio.Lock, timeout: float) -> bool:
    """Take ``lock`` within ``timeout`` seconds; False (lock not held) if that failed."""
    acquired = False
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await lock.acquire()
            acquired = True
    except TimeoutError:
        if acquired:
            lock.release()
        return False
    return True
