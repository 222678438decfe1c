"""The actor layer: an asyncio runtime for pykka, and the supervised bot built on it.

Write a :class:`Handler` per group of event types and run a :class:`Bot`:

Example:
    >>> from queue_runtime.actors import Bot, Event, Handler
    >>> class Pushes(Handler):
    ...     event_types = ("push",)
    ...     async def handle(self, event: Event) -> None:
    ...         ...
    >>> Pushes.concurrency
    64
"""

from queue_runtime.actors.bot import Bot
from queue_runtime.actors.context import BotStats
from queue_runtime.actors.handlers import (
    WILDCARD,
    Event,
    Handler,
    PermanentFailure,
    RestartPolicy,
)
from queue_runtime.actors.runtime import AsyncioActor, AsyncioActorRef, AsyncioFuture

__all__ = [
    "WILDCARD",
    "AsyncioActor",
    "AsyncioActorRef",
    "AsyncioFuture",
    "Bot",
    "BotStats",
    "Event",
    "Handler",
    "PermanentFailure",
    "RestartPolicy",
]
