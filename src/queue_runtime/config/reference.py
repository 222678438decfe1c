"""Every setting with its environment variable, type and default (docs/configuration.md)."""

from __future__ import annotations

import dataclasses
import enum

from queue_runtime.config.coercion import describe
from queue_runtime.config.loading import (
    DEFAULT_PROVIDER,
    ENV_PREFIX,
    PROVIDER_ENV,
    PROVIDERS,
    SECTIONS,
    field_types,
)

__all__ = ["config_reference"]


def _format_default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return f'"{value.value}"'
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def config_reference() -> list[tuple[str, str, str, str]]:
    """Every setting as ``(toml path, environment variable, type, default)`` rows.

    The first row is the provider selector; ``QUEUE_RUNTIME_CONFIG`` (the TOML file
    path read by :func:`~queue_runtime.config.load_config`) is not a setting and is not listed.
    """
    rows = [("provider", PROVIDER_ENV, " | ".join(PROVIDERS), f'"{DEFAULT_PROVIDER}"')]
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default: object = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:  # pragma: no cover - every field has a default
                default = None
            rows.append(
                (
                    f"{section}.{f.name}",
                    f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}",
                    describe(field_types(cls)[f.name]),
                    _format_default(default),
                )
            )
    return rows
