"""The bot's names moved from queue_runtime.actors to queue_runtime.bot; the old
names keep working for one release, with a warning that says where they went."""

from __future__ import annotations

import pytest

import queue_runtime.actors
import queue_runtime.bot


@pytest.mark.parametrize(
    "name", ["Bot", "BotStats", "Event", "Handler", "PermanentFailure", "RestartPolicy", "WILDCARD"]
)
def test_an_old_name_warns_and_is_the_new_object(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"queue_runtime.bot.{name}"):
        old = getattr(queue_runtime.actors, name)

    assert old is getattr(queue_runtime.bot, name)


def test_from_import_of_an_old_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="moved to queue_runtime.bot.Bot"):
        from queue_runtime.actors import Bot

    assert Bot is queue_runtime.bot.Bot


def test_the_engine_names_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    from queue_runtime.actors import AsyncioActor, AsyncioFuture, kill, stop_all

    assert all(callable(thing) for thing in (AsyncioActor, AsyncioFuture, kill, stop_all))
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_a_name_that_never_existed_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Robot'"):
        getattr(queue_runtime.actors, "Robot")  # noqa: B009
