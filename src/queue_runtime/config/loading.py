"""The whole configuration, :class:`QueueConfig`, and :func:`load_config`.

Layers, lowest precedence first: defaults < TOML file < environment < code.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.config.coercion import coerce, preview
from queue_runtime.config.providers import (
    PROVIDER_TYPES,
    AwsSqsConfig,
    AzureServiceBusConfig,
    InMemoryConfig,
    ProviderConfig,
    SqliteConfig,
)
from queue_runtime.config.validation import positive
from queue_runtime.crypto import CryptoConfig
from queue_runtime.errors import ConfigurationError
from queue_runtime.retry import RetryPolicy

__all__ = [
    "DEFAULT_PROVIDER",
    "ENV_PREFIX",
    "PROVIDERS",
    "PROVIDER_ENV",
    "SECTIONS",
    "QueueConfig",
    "TimeoutConfig",
    "field_types",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Per-operation timeouts in seconds (spec defaults: connect 30, send 10, receive 30)."""

    connect: float = 30.0
    send: float = 10.0
    receive: float = 30.0

    def __post_init__(self) -> None:
        positive(self.connect, "timeouts.connect")
        positive(self.send, "timeouts.send")
        positive(self.receive, "timeouts.receive")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The whole runtime configuration: provider, retry, circuit breaker, timeouts, crypto."""

    provider: ProviderConfig = field(default_factory=InMemoryConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    crypto: CryptoConfig = field(default_factory=CryptoConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.provider, PROVIDER_TYPES):
            raise ConfigurationError(
                "expected InMemoryConfig, SqliteConfig, AwsSqsConfig or AzureServiceBusConfig",
                field="provider",
            )
        for name, expected in (
            ("retry", RetryPolicy),
            ("circuit_breaker", CircuitBreakerConfig),
            ("timeouts", TimeoutConfig),
            ("crypto", CryptoConfig),
        ):
            if not isinstance(getattr(self, name), expected):
                raise ConfigurationError(f"expected {expected.__name__}", field=name)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> QueueConfig:
        """Defaults overlaid with a TOML file (blocking read: call it at start-up)."""
        return _merge([_toml_layer(path)])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QueueConfig:
        """Defaults overlaid with environment variables (``os.environ`` if ``env`` is None).

        ``QUEUE_RUNTIME_CONFIG`` is not read here; :func:`load_config` does that.
        """
        return _merge([_env_layer(os.environ if env is None else env)])


ENV_PREFIX: Final = "QUEUE_RUNTIME_"
PROVIDER_ENV: Final = "QUEUE_PROVIDER"
_CONFIG_FILE_ENV: Final = "QUEUE_RUNTIME_CONFIG"
DEFAULT_PROVIDER: Final = "memory"

PROVIDERS: Final[dict[str, type[ProviderConfig]]] = {
    "memory": InMemoryConfig,
    "sqlite": SqliteConfig,
    "aws": AwsSqsConfig,
    "azure": AzureServiceBusConfig,
}
_COMMON_SECTIONS: Final = ("retry", "circuit_breaker", "timeouts", "crypto")
SECTIONS: Final[dict[str, type[Any]]] = {
    **PROVIDERS,
    "retry": RetryPolicy,
    "circuit_breaker": CircuitBreakerConfig,
    "timeouts": TimeoutConfig,
    "crypto": CryptoConfig,
}


@dataclass(slots=True)
class _Layer:
    """One source of settings: raw values, each with where it came from."""

    provider: str | None = None
    values: dict[str, dict[str, tuple[object, str]]] = field(default_factory=dict)

    def put(self, section: str, name: str, value: object, source: str) -> None:
        self.values.setdefault(section, {})[name] = (value, source)


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> resolved type, in declaration order (ClassVars excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


RENAMED: Final[dict[tuple[str, str], str]] = {("memory", "auto_create_queues"): "create_queues"}
"""Old setting names that still work, with a warning: (section, old name) -> new name."""


def _check_key(section: str, name: str, source: str) -> str:
    """The setting's name (its new one if it was renamed), or a clear error."""
    renamed = RENAMED.get((section, name))
    if renamed is not None:
        warnings.warn(
            f"{section}.{name} ({source}) is deprecated: use {section}.{renamed}",
            DeprecationWarning,
            stacklevel=4,
        )
        return renamed
    known = field_types(SECTIONS[section])
    if name not in known:
        raise ConfigurationError(
            f"unknown setting ({source}); [{section}] accepts: {', '.join(known)}",
            field=f"{section}.{name}",
        )
    return name


def _parse_provider(value: object, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() in PROVIDERS:
        return value.strip().lower()
    raise ConfigurationError(
        f"unknown provider {preview(value)} ({source}); expected one of: {', '.join(PROVIDERS)}",
        field="provider",
    )


def _toml_layer(path: str | os.PathLike[str]) -> _Layer:
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read config file {filename!r}: {exc.strerror or type(exc).__name__}",
            field="config_file",
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"config file {filename!r} is not valid TOML: {exc}", field="config_file"
        ) from exc

    layer = _Layer()
    for key, value in data.items():
        source = f"config file {filename!r}"
        if key == "provider":
            layer.provider = _parse_provider(value, source)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigurationError(f"must be a table ({source})", field=key)
            for name, raw in value.items():
                layer.put(key, _check_key(key, name, source), raw, f"{source}, [{key}]")
        else:
            raise ConfigurationError(
                f"unknown key ({source}); expected provider or one of the tables "
                f"{', '.join(SECTIONS)}",
                field=key,
            )
    return layer


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    if PROVIDER_ENV in env:
        layer.provider = _parse_provider(env[PROVIDER_ENV], f"environment {PROVIDER_ENV}")
    for variable, raw in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :]
        for section in SECTIONS:
            table = section.upper() + "_"
            if rest.startswith(table):
                name = rest[len(table) :].lower()
                source = f"environment {variable}"
                layer.put(section, _check_key(section, name, source), raw, source)
                break
    return layer


def _override_layer(overrides: Mapping[str, Any]) -> _Layer:
    layer = _Layer()
    # "provider" first so that a table mapping given alongside merges on top of it.
    for key in sorted(overrides, key=lambda key: key != "provider"):
        value = overrides[key]
        source = f"load_config({key}=...)"
        if key == "provider":
            if isinstance(value, PROVIDER_TYPES):
                layer.provider = value.kind
                _put_object(layer, value.kind, value, source)
            elif isinstance(value, str):
                layer.provider = _parse_provider(value, source)
            else:
                raise ConfigurationError(
                    "expected 'memory', 'sqlite', 'aws', 'azure' or a provider config object "
                    "(use memory=/sqlite=/aws=/azure= for a mapping of settings)",
                    field="provider",
                )
        elif key in SECTIONS:
            cls = SECTIONS[key]
            if isinstance(value, cls):
                _put_object(layer, key, value, source)
            elif isinstance(value, Mapping):
                for name, raw in value.items():
                    layer.put(key, _check_key(key, str(name), source), raw, source)
            else:
                raise ConfigurationError(
                    f"expected {cls.__name__} or a mapping of its fields", field=key
                )
        else:
            raise ConfigurationError(
                f"unknown setting; load_config accepts provider, {', '.join(SECTIONS)}",
                field=key,
            )
    return layer


def _put_object(layer: _Layer, section: str, value: object, source: str) -> None:
    # An object is a complete section: every field is set, so it replaces lower layers.
    for name in field_types(type(value)):
        layer.put(section, name, getattr(value, name), source)


def _merge(layers: list[_Layer], default_provider: str = DEFAULT_PROVIDER) -> QueueConfig:
    kind: str = default_provider
    for layer in layers:
        if layer.provider is not None:
            kind = layer.provider
    built: dict[str, Any] = {}
    for section in (kind, *_COMMON_SECTIONS):
        types_ = field_types(SECTIONS[section])
        values: dict[str, object] = {}
        for layer in layers:
            for name, (raw, source) in layer.values.get(section, {}).items():
                values[name] = coerce(raw, types_[name], f"{section}.{name}", source)
        built[section] = SECTIONS[section](**values)
    return QueueConfig(
        provider=built[kind],
        retry=built["retry"],
        circuit_breaker=built["circuit_breaker"],
        timeouts=built["timeouts"],
        crypto=built["crypto"],
    )


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    default_provider: str = DEFAULT_PROVIDER,
    **overrides: Any,
) -> QueueConfig:
    """Build a :class:`QueueConfig` from defaults < TOML file < environment < ``overrides``.

    ``path`` defaults to ``$QUEUE_RUNTIME_CONFIG`` (no file if that is unset too).
    ``env`` defaults to ``os.environ``. ``overrides`` are ``provider`` (``"aws"`` or a
    provider config object) and the sections ``memory``, ``sqlite``, ``aws``, ``azure``,
    ``retry``, ``circuit_breaker``, ``timeouts``, ``crypto``, each a section object (replaces that
    section) or a mapping of field values (merged field by field).

    ``default_provider`` is the provider when no layer selects one (``"memory"``; the
    command line passes ``"sqlite"``, so that separate commands share queues).

    Reading the file is blocking I/O. It is meant to run once at start-up, before the
    event loop starts; inside a running loop use ``asyncio.to_thread(load_config)``.
    Any invalid setting raises :class:`ConfigurationError` naming its field.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environ.get(_CONFIG_FILE_ENV) or None
    layers: list[_Layer] = []
    if path is not None:
        layers.append(_toml_layer(path))
    layers.append(_env_layer(environ))
    layers.append(_override_layer(overrides))
    return _merge(layers, _parse_provider(default_provider, "load_config(default_provider=...)"))
