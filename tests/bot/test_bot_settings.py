"""A bot's settings have one home, BotSettings: given whole, as keywords, or both."""

from __future__ import annotations

import dataclasses

import pytest

import queue_runtime as qr
from queue_runtime.bot import Bot, BotSettings, Event, Handler
from queue_runtime.bot.context import BotOptions


class Noop(Handler):
    event_types = ("noop",)

    async def handle(self, event: Event) -> None:
        return None


def test_keywords_override_the_settings_object_field_by_field() -> None:
    bot = Bot(
        qr.InMemoryConfig(),
        "jobs",
        [Noop],
        settings=BotSettings(max_in_flight=7, drain_timeout=3.0),
        drain_timeout=1.5,
    )

    assert bot.queue == "jobs"
    assert bot.settings.max_in_flight == 7
    assert bot.settings.drain_timeout == 1.5
    assert bot.settings.max_sessions == BotSettings().max_sessions


def test_without_settings_a_bot_has_the_defaults_of_bot_settings() -> None:
    assert Bot(qr.InMemoryConfig(), "jobs", [Noop]).settings == BotSettings()


def test_every_setting_can_be_given_as_a_keyword() -> None:
    fields = {field.name for field in dataclasses.fields(BotSettings)}

    assert set(BotOptions.__annotations__) == fields


def test_a_bad_keyword_setting_names_its_field() -> None:
    with pytest.raises(qr.ConfigurationError, match="max_in_flight"):
        Bot(qr.InMemoryConfig(), "jobs", [Noop], max_in_flight=0)
