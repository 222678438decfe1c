"""The actor engine: an asyncio runtime for pykka (actors that are tasks on one loop).

pykka leaves the inbox, the future and the actor loop to a runtime; this one
keeps them in ``_inbox``, ``_future`` and ``_actor``. The queue bot built on it
lives in :mod:`queue_runtime.bot`.

Example:
    >>> import asyncio
    >>> from queue_runtime.actors import AsyncioActor
    >>> class Greeter(AsyncioActor):
    ...     async def greet(self, name: str) -> str:
    ...         return f"hello {name}"
    >>> async def main() -> str:
    ...     ref = Greeter.start()
    ...     try:
    ...         return await ref.proxy().greet("octocat")
    ...     finally:
    ...         await ref.stop()
    >>> asyncio.run(main())
    'hello octocat'
"""

from __future__ import annotations

import warnings
from typing import Any

from queue_runtime.actors._actor import (
    AsyncioActor,
    AsyncioActorRef,
    StrayCancellation,
    kill,
    stop_all,
)
from queue_runtime.actors._future import AsyncioFuture

__all__ = [
    "AsyncioActor",
    "AsyncioActorRef",
    "AsyncioFuture",
    "StrayCancellation",
    "kill",
    "stop_all",
]

# Names that lived here before the bot got a package of its own (0.1). They keep
# working for one release, with a warning that says where they are now.
_MOVED_TO_BOT = frozenset(
    {"Bot", "BotStats", "Event", "Handler", "PermanentFailure", "RestartPolicy", "WILDCARD"}
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_BOT:
        warnings.warn(
            f"queue_runtime.actors.{name} moved to queue_runtime.bot.{name}; "
            "the old name goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        import queue_runtime.bot

        return getattr(queue_runtime.bot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
