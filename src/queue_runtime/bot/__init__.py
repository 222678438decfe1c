"""The queue bot: a supervised tree of actors that receives, orders, handles and settles.

Write a :class:`Handler` per group of event types and run a :class:`Bot`. The
modules follow the message path: ``receiver`` pulls from the provider,
``sessions`` keeps each session in order, ``handlers`` runs user code,
``completions`` settles, ``locks`` renews, ``dead_letters`` escalates, and
``circuits`` holds messages while a handler's downstream is down.

Example:
    >>> from queue_runtime.bot import Bot, Event, Handler
    >>> class Pushes(Handler):
    ...     event_types = ("push",)
    ...     async def handle(self, event: Event) -> None:
    ...         ...
    >>> Pushes.concurrency
    64
"""

from queue_runtime.bot.bot import Bot
from queue_runtime.bot.context import BotSettings, BotStats
from queue_runtime.bot.handlers import (
    WILDCARD,
    Event,
    Handler,
    PermanentFailure,
    RestartPolicy,
)

__all__ = [
    "WILDCARD",
    "Bot",
    "BotSettings",
    "BotStats",
    "Event",
    "Handler",
    "PermanentFailure",
    "RestartPolicy",
]
