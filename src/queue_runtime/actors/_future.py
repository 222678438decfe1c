"""The future of the asyncio runtime: pykka's ``Future``, awaited natively.

Example:
    >>> import asyncio
    >>> from queue_runtime.actors import AsyncioFuture
    >>> async def main() -> int:
    ...     future: AsyncioFuture[int] = AsyncioFuture()
    ...     asyncio.get_running_loop().call_soon(future.set, 42)
    ...     return await future
    >>> asyncio.run(main())
    42
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar, cast

import pykka
from pykka import ActorDeadError, Timeout

T = TypeVar("T")
M = TypeVar("M")

_PENDING = object()


class AsyncioFuture(pykka.Future[T], Generic[T]):
    """A pykka future for the asyncio runtime: ``await`` it.

    ``get()`` works once the value is there; before that it raises
    ``RuntimeError`` rather than block the event loop.
    """

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__()
        self._value: Any = _PENDING
        self._error: BaseException | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        self._timeout = timeout

    def done(self) -> bool:
        """True once a value or an exception has been set."""
        return self._value is not _PENDING or self._error is not None

    def set(self, value: T | None = None) -> None:
        if self.done() or self._get_hook is not None:
            raise RuntimeError("the future already has a result")
        self._value = value
        self._wake()

    def set_exception(self, exc_info: Any = None) -> None:
        if self.done() or self._get_hook is not None:
            raise RuntimeError("the future already has a result")
        self._error = _error_of(exc_info if exc_info is not None else sys.exc_info())
        self._wake()

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if self._error is not None:
            raise self._error
        if self._value is _PENDING:
            raise RuntimeError(
                "AsyncioFuture.get() would block the event loop until the actor answers; "
                "use `await future` instead"
            )
        return cast(T, self._value)

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done() and self._get_hook is None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            if self._timeout is None:
                yield from waiter.__await__()
            else:
                try:
                    yield from _wait_with_timeout(waiter, self._timeout).__await__()
                except TimeoutError:
                    raise Timeout(f"{self._timeout} seconds") from None
        return self.get()

    __iter__ = __await__

    def map(self, func: Callable[[T], M]) -> AsyncioFuture[M]:
        """A future of ``func(value)``, set when this one is."""
        result: AsyncioFuture[M] = AsyncioFuture()
        self._on_done(lambda: _settle_from(result, lambda: func(self.get())))
        return result

    def filter(self, func: Callable[[Any], bool]) -> AsyncioFuture[Iterable[Any]]:
        """A future of the items of this (iterable) value for which ``func`` is true."""

        def kept(value: Any) -> Iterable[Any]:
            return [item for item in value if func(item)]

        return self.map(kept)

    def reduce(self, func: Callable[[Any, Any], Any], *args: Any) -> AsyncioFuture[Any]:
        """A future of ``functools.reduce(func, value, *args)``."""

        def reduced(value: Any) -> Any:
            return functools.reduce(func, value, *args)

        return self.map(reduced)

    def join(self, *futures: pykka.Future[Any]) -> AsyncioFuture[Iterable[Any]]:
        """A future of the list of this and ``futures``' values."""
        everything = [self, *futures]
        result: AsyncioFuture[Iterable[Any]] = AsyncioFuture()
        remaining = len(everything)

        def one_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                _settle_from(result, lambda: [f.get() for f in everything])

        for future in everything:
            if not isinstance(future, AsyncioFuture):
                raise TypeError("join() needs AsyncioFutures")
            future._on_done(one_done)
        return result

    def _on_done(self, callback: Callable[[], None]) -> None:
        if self.done():
            callback()
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(lambda _: callback())
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("failed" if self._error else "done")
        return f"<AsyncioFuture {state}>"


def _error_of(exc_info: Any) -> BaseException:
    """The exception of an ``exc_info`` triple, with its traceback."""
    error: BaseException = exc_info[1] if exc_info[1] is not None else exc_info[0]()
    if exc_info[2] is not None and error.__traceback__ is None:
        error = error.with_traceback(exc_info[2])
    return error


async def _wait_with_timeout(waiter: asyncio.Future[None], timeout: float) -> None:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
    async with asyncio.timeout(timeout):
        await waiter


def _settle_from(future: AsyncioFuture[Any], compute: Callable[[], Any]) -> None:
    try:
        future.set(compute())
    except Exception:
        future.set_exception(sys.exc_info())


class _StopFuture(AsyncioFuture[bool]):
    """The answer to a stop request: True once stopped by it, False if already dead."""

    def set(self, value: bool | None = None) -> None:
        super().set(True)

    def set_exception(self, exc_info: Any = None) -> None:
        error = (exc_info or sys.exc_info())[1]
        if isinstance(error, ActorDeadError):
            super().set(False)
        else:
            super().set_exception(exc_info)
