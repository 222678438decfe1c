"""From a raw value (TOML value, environment string, code value) to a field's type."""

from __future__ import annotations

import enum
import math
import types
import typing
from typing import Any, Final, Literal

from queue_runtime.config.secrets import Secret
from queue_runtime.config.validation import is_number
from queue_runtime.errors import ConfigurationError

__all__ = ["coerce", "describe", "preview"]

_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _contains_secret(tp: Any) -> bool:
    return tp is Secret or any(_contains_secret(arg) for arg in typing.get_args(tp))


def describe(tp: Any) -> str:
    """A short human name of a field type, for errors and the reference table."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return " | ".join(describe(arg) for arg in inner) + " (optional)"
    if origin is Literal:
        return " | ".join(str(arg) for arg in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(str(member.value) for member in tp)
    if tp is Secret:
        return "secret"
    if tp is bool:
        return "bool (true/false/1/0/yes/no)"
    return str(getattr(tp, "__name__", tp))


def coerce(value: object, tp: Any, path: str, source: str) -> object:
    """Convert a raw value (TOML value, environment string, code value) to type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or value == ""):
            return None
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1:  # pragma: no cover - no such field exists
            raise TypeError(f"unsupported config field type {tp!r}")
        return coerce(value, inner[0], path, source)

    text = value.strip() if isinstance(value, str) else None
    if origin is Literal:
        for choice in typing.get_args(tp):
            if text is not None and text.lower() == str(choice).lower():
                return choice
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if text is not None and text.lower() in {
                str(member.value).lower(),
                member.name.lower(),
            }:
                return member
    elif tp is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None:
            try:
                return int(text)
            except ValueError:
                pass
    elif tp is float:
        number: float | None = None
        if is_number(value):
            number = float(typing.cast(float, value))
        elif text is not None:
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is not None and math.isfinite(number):
            return number
    elif tp is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - no such field exists
        raise TypeError(f"unsupported config field type {tp!r}")

    expected = "a finite number" if tp is float else describe(tp)
    got = "a value of the wrong type (hidden)" if _contains_secret(tp) else preview(value)
    raise ConfigurationError(f"expected {expected}, got {got} ({source})", field=path)
