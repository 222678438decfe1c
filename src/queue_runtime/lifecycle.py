"""``async with`` written once, for everything that is closed with ``aclose()``:
providers (:class:`~queue_runtime.provider.ProviderBase`), clients and sessions.

Example:
    >>> import asyncio
    >>> from queue_runtime.lifecycle import Closing
    >>> class Connection(Closing):
    ...     closed = False
    ...     async def aclose(self) -> None:
    ...         self.closed = True
    >>> async def main() -> bool:
    ...     async with Connection() as connection:
    ...         pass
    ...     return connection.closed
    >>> asyncio.run(main())
    True
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """A base that closes itself with :meth:`aclose` when its ``async with`` ends."""

    async def aclose(self) -> None:
        """Release what this holds; idempotent. The base holds nothing."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
