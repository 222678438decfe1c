"""Checks shared by the config classes; each names the field by its dotted path."""

from __future__ import annotations

import math
import typing

from queue_runtime.config.secrets import Secret
from queue_runtime.errors import ConfigurationError

__all__ = [
    "choice",
    "in_range",
    "int_at_least",
    "is_number",
    "optional_text",
    "positive",
    "wrap_secret",
]


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive(value: object, path: str) -> None:
    if not is_number(value):
        raise ConfigurationError("expected a number of seconds", field=path)
    number = typing.cast(float, value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError("must be a finite number greater than 0", field=path)


def in_range(value: object, low: float, high: float, path: str) -> None:
    if not is_number(value):
        raise ConfigurationError("expected a number of seconds", field=path)
    number = typing.cast(float, value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigurationError(f"must be between {low:g} and {high:g}", field=path)


def int_at_least(value: object, minimum: int, path: str, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError("expected an integer", field=path)
    if value < minimum:
        raise ConfigurationError(f"must be at least {minimum}", field=path)
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"must be at most {maximum}", field=path)


def optional_text(value: object, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigurationError("expected a string", field=path)
    if not value.strip():
        raise ConfigurationError("must not be empty (leave it unset instead)", field=path)


def choice(value: object, choices: tuple[str, ...], path: str) -> None:
    if value not in choices:
        raise ConfigurationError(f"expected one of: {', '.join(choices)}", field=path)


def wrap_secret(config: object, name: str, path: str) -> Secret | None:
    """Wrap a plain ``str`` secret field into :class:`Secret`; reject empty ones."""
    value = getattr(config, name)
    if value is None:
        return None
    if isinstance(value, str):
        value = Secret(value)
        object.__setattr__(config, name, value)
    if not isinstance(value, Secret):
        raise ConfigurationError("expected a string or Secret", field=path)
    if not value.reveal().strip():
        raise ConfigurationError("must not be empty", field=path)
    return value
