"""pytest fixtures for the test kit, registered when queue-runtime is installed.

* ``bot_kit`` — a :class:`~queue_runtime.testing.BotKit` with default settings,
  not started yet (add probes, then ``await bot_kit.start()``); closed after the test.
* ``bot_kit_factory`` — ``bot_kit_factory(handlers, **settings)`` makes kits
  with your settings; all are closed after the test.
* ``virtual_time`` — virtual time for the test's event loop, from the fixture's
  setup to its teardown (the two fixtures above use it).

The fixtures are ``async`` (pytest-asyncio, either mode) and run on the test's
own event loop, with the loop scope pytest-asyncio gives function-scoped
fixtures. Virtual time comes from looptime (``queue-runtime[testing]``); it may
be combined with looptime's own ``@pytest.mark.looptime`` or ``--looptime``.

Importing this module needs nothing but pytest, so the plugin never disturbs a
test suite that does not use it.

Example:
    >>> from queue_runtime.testing import pytest_plugin
    >>> [hasattr(pytest_plugin, name) for name in ("bot_kit", "bot_kit_factory", "virtual_time")]
    [True, True, True]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from queue_runtime.testing.kit import BotKit

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures then explain what is missing
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["VirtualTime", "bot_kit", "bot_kit_factory", "virtual_time"]


class VirtualTime:
    """Virtual time switched on for one test's loop: the ``virtual_time`` fixture's value.

    Looptime's own ``pytest.mark.looptime`` switches virtual time on just around
    the test function; the hooks below hand over to it then, so that the kit's
    clock runs virtual from the fixture's setup to its teardown either way.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._held: contextlib.ExitStack | None = None
        self.handed_over = False
        """True while the test function runs (the hooks below hold time for it)."""

    def hold(self) -> None:
        """Switch virtual time on (until :meth:`release`)."""
        from queue_runtime.testing.virtual import virtual_time

        if self._held is None:
            stack = contextlib.ExitStack()
            stack.enter_context(virtual_time(self.loop))
            self._held = stack

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    @property
    def held(self) -> bool:
        return self._held is not None

    def __repr__(self) -> str:
        return f"VirtualTime(held={self.held})"


def _missing(*_: Any, **__: Any) -> Any:
    raise pytest.UsageError(
        "the queue-runtime test kit fixtures need pytest-asyncio and looptime: "
        "pip install 'queue-runtime[testing]' pytest-asyncio"
    )


if pytest_asyncio is None:  # pragma: no cover
    virtual_time = pytest.fixture(name="virtual_time")(_missing)
    bot_kit = pytest.fixture(name="bot_kit")(_missing)
    bot_kit_factory = pytest.fixture(name="bot_kit_factory")(_missing)
else:

    @pytest_asyncio.fixture
    async def virtual_time() -> AsyncIterator[VirtualTime]:
        """Virtual time for the test's loop, from this fixture's setup to its teardown."""
        handle = VirtualTime(asyncio.get_running_loop())
        handle.hold()
        try:
            yield handle
        finally:
            handle.release()

    @pytest_asyncio.fixture
    async def bot_kit(virtual_time: VirtualTime) -> AsyncIterator[BotKit]:
        """A test kit with default settings, not started; closed after the test."""
        from queue_runtime.testing.kit import BotKit

        kit = BotKit()
        try:
            yield kit
        finally:
            await kit.close()

    @pytest_asyncio.fixture
    async def bot_kit_factory(
        virtual_time: VirtualTime,
    ) -> AsyncIterator[Callable[..., BotKit]]:
        """Make kits: ``bot_kit_factory(handlers, **settings)``; each is closed after the test."""
        from queue_runtime.testing.kit import BotKit

        made: list[BotKit] = []

        def make(*args: Any, **kwargs: Any) -> BotKit:
            kit = BotKit(*args, **kwargs)
            made.append(kit)
            return kit

        try:
            yield make
        finally:
            for kit in made:
                await kit.close()


# -- handing virtual time over to looptime's marker, and back ----------------------


def _handle(item: pytest.Item) -> VirtualTime | None:
    value = getattr(item, "funcargs", {}).get("virtual_time")
    return value if isinstance(value, VirtualTime) else None


@pytest.hookimpl(tryfirst=True, wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Outermost: let go of virtual time, so that looptime's marker may take it (it
    refuses to switch on what is on already); take it back after the test."""
    handle = _handle(pyfuncitem)
    if handle is None or not handle.held:
        return (yield)
    handle.release()
    handle.handed_over = True
    try:
        return (yield)
    finally:
        handle.handed_over = False
        handle.hold()


@pytest.hookimpl(specname="pytest_pyfunc_call", trylast=True, wrapper=True)
def pytest_pyfunc_call_inner(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Innermost: unless looptime's marker switched virtual time on for the test, do."""
    handle = _handle(pyfuncitem)
    if handle is None or not handle.handed_over:
        return (yield)
    from queue_runtime.testing.virtual import is_virtual

    if is_virtual(handle.loop):
        return (yield)
    handle.hold()
    try:
        return (yield)
    finally:
        handle.release()
