"""Typed configuration, loadable from code, a TOML file and environment variables.

Every setting lives in a frozen dataclass that validates itself on construction and
raises :class:`~queue_runtime.errors.ConfigurationError` naming the offending field by
its dotted path (``aws.visibility_timeout``). Layers, lowest precedence first:

    defaults  <  TOML file  <  environment  <  code

* TOML: a top-level ``provider = "memory" | "sqlite" | "aws" | "azure"`` and the tables
  ``[memory]``, ``[sqlite]``, ``[aws]``, ``[azure]``, ``[retry]``, ``[circuit_breaker]``,
  ``[timeouts]`` and ``[crypto]``, whose keys are exactly the dataclass field names.
  Only the table of the selected provider is used; the others may be present (their key
  names are still checked, to catch typos). Encryption keys are not configuration: see
  :class:`~queue_runtime.crypto.EnvKeyProvider`.
* Environment: ``QUEUE_PROVIDER`` selects the provider; each field is
  ``QUEUE_RUNTIME_<TABLE>_<FIELD>`` (``QUEUE_RUNTIME_AWS_REGION``,
  ``QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS``). ``QUEUE_RUNTIME_CONFIG`` names the TOML file
  when :func:`load_config` is not given a path. An empty value for an optional field
  means "unset" (and so overrides a value from the file).
* Code: keyword arguments of :func:`load_config`, either whole section objects
  (``retry=RetryPolicy(...)``, which replace that section of the lower layers) or
  mappings (``retry={"max_attempts": 5}``, merged field by field).

Secrets (connection strings, keys, tokens) are held in :class:`Secret`, which shows as
``***`` in ``repr``/``str``, refuses to be pickled and is never echoed in errors.
:func:`config_reference` lists every setting with its environment variable, type and
default.

Example:
    >>> from queue_runtime.config import load_config
    >>> env = {"QUEUE_PROVIDER": "aws", "QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY": "s3cr3t",
    ...        "QUEUE_RUNTIME_AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"}
    >>> config = load_config(env=env, retry={"max_attempts": 5})
    >>> config.provider.kind, config.retry.max_attempts
    ('aws', 5)
    >>> config.provider.secret_access_key
    Secret('***')
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, NoReturn, SupportsIndex, TypeAlias
from urllib.parse import urlsplit

from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.crypto import CryptoConfig
from queue_runtime.errors import ConfigurationError
from queue_runtime.retry import RetryPolicy

__all__ = [
    "AwsSqsConfig",
    "AzureServiceBusConfig",
    "InMemoryConfig",
    "ProviderConfig",
    "QueueConfig",
    "Secret",
    "SqliteConfig",
    "TimeoutConfig",
    "config_reference",
    "load_config",
]

SessionMode: TypeAlias = Literal["emulated", "native"]
SqliteSynchronous: TypeAlias = Literal["full", "normal"]
AzureCredentialKind: TypeAlias = Literal["default", "managed_identity", "client_secret"]
AzureTransport: TypeAlias = Literal["amqp", "amqp_websocket"]

_SQS_MAX_VISIBILITY: Final = 43_200.0  # 12 hours
_SQS_MAX_WAIT: Final = 20.0
_AZURE_MAX_MESSAGE_SIZE: Final = 100 * 1024 * 1024  # premium tier
DEFAULT_SQLITE_PATH: Final = ".queue-runtime/queues.db"
"""Where the sqlite provider keeps its queues unless told otherwise (relative to the
working directory)."""


# -- Secret -----------------------------------------------------------------


class Secret:
    """A secret string that does not show itself.

    ``repr``/``str`` give ``Secret('***')``/``***``; :meth:`reveal` returns the value
    for the one place that needs it (the SDK call). Comparison with another ``Secret``
    is constant-time; a ``Secret`` never equals a plain ``str``. Pickling is refused so
    a secret cannot leak through a serialized config; ``copy`` returns the same
    (immutable) object.

    CPython cannot wipe strings from memory: this guards against accidental display,
    not against someone who can read the process memory.
    """

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret value. Pass it straight to the SDK; never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(_utf8(self._value), _utf8(other._value))

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled: secrets must not be serialized")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("Secret cannot be pickled: secrets must not be serialized")


def _utf8(value: str) -> bytes:
    # surrogatepass: os.environ may carry surrogate-escaped bytes on POSIX.
    return value.encode("utf-8", "surrogatepass")


# -- field validators ---------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(value: object, path: str) -> None:
    if not _is_number(value):
        raise ConfigurationError("expected a number of seconds", field=path)
    number = typing.cast(float, value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError("must be a finite number greater than 0", field=path)


def _in_range(value: object, low: float, high: float, path: str) -> None:
    if not _is_number(value):
        raise ConfigurationError("expected a number of seconds", field=path)
    number = typing.cast(float, value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigurationError(f"must be between {low:g} and {high:g}", field=path)


def _int_at_least(value: object, minimum: int, path: str, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError("expected an integer", field=path)
    if value < minimum:
        raise ConfigurationError(f"must be at least {minimum}", field=path)
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"must be at most {maximum}", field=path)


def _optional_text(value: object, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigurationError("expected a string", field=path)
    if not value.strip():
        raise ConfigurationError("must not be empty (leave it unset instead)", field=path)


def _choice(value: object, choices: tuple[str, ...], path: str) -> None:
    if value not in choices:
        raise ConfigurationError(f"expected one of: {', '.join(choices)}", field=path)


def _wrap_secret(config: object, name: str, path: str) -> Secret | None:
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


_QUEUE_PATTERN = re.compile(r"[A-Za-z0-9_.*?-]{1,260}")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOTTED_HOST = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})+\Z")

_CONNECTION_STRING_SHAPE: Final = (
    "expected 'Endpoint=sb://<host>/;SharedAccessKeyName=<name>;SharedAccessKey=<key>', "
    "'Endpoint=sb://<host>/;SharedAccessSignature=<sas>' or "
    "'Endpoint=sb://<host>;UseDevelopmentEmulator=true'"
)


def _check_connection_string(secret: Secret, path: str) -> None:
    """Validate the shape of a Service Bus connection string.

    Error messages name only the fixed key names this function knows; nothing taken
    from the string itself (no values, no unknown key names) is ever included.
    """

    def fail(problem: str) -> NoReturn:
        raise ConfigurationError(
            f"not a valid Service Bus connection string ({problem}); {_CONNECTION_STRING_SHAPE}",
            field=path,
        )

    settings: dict[str, str] = {}
    for position, segment in enumerate(secret.reveal().split(";"), start=1):
        if not segment.strip():
            continue
        key, sep, value = segment.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            fail(f"part {position} is not 'Key=Value'")
        if key in settings:
            fail(f"part {position} repeats a key")
        settings[key] = value.strip()

    endpoint = settings.get("endpoint")
    if endpoint is None:
        fail("Endpoint is missing")
    if not endpoint.lower().startswith("sb://"):
        fail("Endpoint must start with sb://")
    host = re.split(r"[/:]", endpoint[len("sb://") :], maxsplit=1)[0]
    if not host or any(char.isspace() for char in host):
        fail("Endpoint has no host")

    key_name = settings.get("sharedaccesskeyname")
    access_key = settings.get("sharedaccesskey")
    signature = settings.get("sharedaccesssignature")
    emulator = settings.get("usedevelopmentemulator", "").lower() == "true"
    if (key_name is None) != (access_key is None):
        fail("SharedAccessKeyName and SharedAccessKey must be given together")
    if key_name is not None and signature is not None:
        fail("give either SharedAccessKeyName/SharedAccessKey or SharedAccessSignature, not both")
    if key_name is not None and access_key is not None and not (key_name and access_key):
        fail("SharedAccessKeyName and SharedAccessKey must not be empty")
    if signature is not None and not signature:
        fail("SharedAccessSignature must not be empty")
    if key_name is None and signature is None and not emulator:
        fail("no credentials")


# -- configuration sections ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Per-operation timeouts in seconds (spec defaults: connect 30, send 10, receive 30)."""

    connect: float = 30.0
    send: float = 10.0
    receive: float = 30.0

    def __post_init__(self) -> None:
        _positive(self.connect, "timeouts.connect")
        _positive(self.send, "timeouts.send")
        _positive(self.receive, "timeouts.receive")


@dataclass(frozen=True, slots=True)
class InMemoryConfig:
    """The in-process provider, for tests and local development.

    ``max_message_size`` defaults to 256 KiB, the strictest real provider's limit, so
    tests catch oversize messages. ``session_mode="emulated"`` implements sessions in
    the runtime; ``"native"`` uses the provider's own session support.
    """

    kind: ClassVar[Literal["memory"]] = "memory"

    session_mode: SessionMode = "emulated"
    lock_duration: float = 30.0
    session_lock_duration: float = 300.0
    max_delivery_count: int = 5
    max_message_size: int = 262_144
    max_batch_size: int = 100
    max_queue_size: int = 100_000
    auto_create_queues: bool = True

    def __post_init__(self) -> None:
        _choice(self.session_mode, typing.get_args(SessionMode), "memory.session_mode")
        _positive(self.lock_duration, "memory.lock_duration")
        _positive(self.session_lock_duration, "memory.session_lock_duration")
        _int_at_least(self.max_delivery_count, 1, "memory.max_delivery_count")
        _int_at_least(self.max_message_size, 1, "memory.max_message_size")
        _int_at_least(self.max_batch_size, 1, "memory.max_batch_size")
        _int_at_least(self.max_queue_size, 1, "memory.max_queue_size")
        if not isinstance(self.auto_create_queues, bool):
            raise ConfigurationError("expected a boolean", field="memory.auto_create_queues")


@dataclass(frozen=True, slots=True)
class SqliteConfig:
    """Durable queues in one SQLite file (WAL mode), shared by every process on the machine.

    ``path`` is the database file (created with its directory on first use; relative
    paths are relative to the working directory). ``session_mode`` works as for the
    in-memory provider: ``"emulated"`` (default) hands out session messages on plain
    receives, one session at a time in order, like SQS FIFO; ``"native"`` only through
    ``accept_session``, like Azure Service Bus. Session locks live in the file, so they
    hold across processes.

    ``synchronous="full"`` (default) makes every returned send and settle survive a
    power loss (one fsync per transaction); ``"normal"`` survives a crash of the process
    (SIGKILL) but may lose the last transactions on power loss or an OS crash, and is
    much faster. ``busy_timeout`` is how long a call waits for another process's write
    before it fails with a transient error; ``poll_interval`` is how often a waiting
    receive looks for messages written by other processes. ``create_queues=False`` makes
    unknown queue names fail with ``QueueNotFoundError`` instead of creating them.

    Example:
        >>> SqliteConfig(path="/var/lib/bot/queues.db", lock_duration=60.0).path
        '/var/lib/bot/queues.db'
    """

    kind: ClassVar[Literal["sqlite"]] = "sqlite"

    path: str = DEFAULT_SQLITE_PATH
    session_mode: SessionMode = "emulated"
    lock_duration: float = 30.0
    session_lock_duration: float = 300.0
    max_delivery_count: int = 5
    max_message_size: int = 262_144
    max_batch_size: int = 100
    create_queues: bool = True
    synchronous: SqliteSynchronous = "full"
    busy_timeout: float = 10.0
    poll_interval: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise ConfigurationError("expected a file path", field="sqlite.path")
        if self.path.strip() == ":memory:" or self.path.startswith("file:"):
            raise ConfigurationError(
                "must be a file path (for queues in memory use the memory provider)",
                field="sqlite.path",
            )
        _choice(self.session_mode, typing.get_args(SessionMode), "sqlite.session_mode")
        _positive(self.lock_duration, "sqlite.lock_duration")
        _positive(self.session_lock_duration, "sqlite.session_lock_duration")
        _int_at_least(self.max_delivery_count, 1, "sqlite.max_delivery_count")
        _int_at_least(self.max_message_size, 1, "sqlite.max_message_size")
        _int_at_least(self.max_batch_size, 1, "sqlite.max_batch_size")
        if not isinstance(self.create_queues, bool):
            raise ConfigurationError("expected a boolean", field="sqlite.create_queues")
        _choice(self.synchronous, typing.get_args(SqliteSynchronous), "sqlite.synchronous")
        _in_range(self.busy_timeout, 0, 3600, "sqlite.busy_timeout")
        _in_range(self.poll_interval, 0.001, 10, "sqlite.poll_interval")


@dataclass(frozen=True, slots=True)
class AwsSqsConfig:
    """Amazon SQS.

    Without explicit keys the default AWS credential chain is used. ``endpoint_url``
    points at a local emulator (LocalStack, moto). ``wait_time`` is the long-poll wait
    (0-20 s); ``visibility_timeout`` is 0 s to 12 h. Secret fields accept a plain
    ``str`` and wrap it into :class:`Secret`.
    """

    kind: ClassVar[Literal["aws"]] = "aws"

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    visibility_timeout: float = 30.0
    wait_time: float = 20.0
    max_delivery_count: int = 5
    cache_queue_urls: bool = True

    def __post_init__(self) -> None:
        _optional_text(self.region, "aws.region")
        _optional_text(self.endpoint_url, "aws.endpoint_url")
        if self.endpoint_url is not None:
            # The URL is not echoed: it may carry user:password.
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "must be an http:// or https:// URL with a host", field="aws.endpoint_url"
                )
        _optional_text(self.access_key_id, "aws.access_key_id")
        secret = _wrap_secret(self, "secret_access_key", "aws.secret_access_key")
        token = _wrap_secret(self, "session_token", "aws.session_token")
        if self.access_key_id is not None and secret is None:
            raise ConfigurationError(
                "is required when aws.access_key_id is set", field="aws.secret_access_key"
            )
        if secret is not None and self.access_key_id is None:
            raise ConfigurationError(
                "is required when aws.secret_access_key is set", field="aws.access_key_id"
            )
        if token is not None and secret is None:
            raise ConfigurationError(
                "requires aws.access_key_id and aws.secret_access_key", field="aws.session_token"
            )
        _in_range(self.visibility_timeout, 0, _SQS_MAX_VISIBILITY, "aws.visibility_timeout")
        _in_range(self.wait_time, 0, _SQS_MAX_WAIT, "aws.wait_time")
        _int_at_least(self.max_delivery_count, 1, "aws.max_delivery_count")
        if not isinstance(self.cache_queue_urls, bool):
            raise ConfigurationError("expected a boolean", field="aws.cache_queue_urls")


@dataclass(frozen=True, slots=True)
class AzureServiceBusConfig:
    """Azure Service Bus.

    Give exactly one of ``connection_string`` (SAS key, SAS token, or the local
    emulator with ``UseDevelopmentEmulator=true``) or ``namespace`` (the fully
    qualified host, ``<name>.servicebus.windows.net``) with a ``credential``:
    ``"default"`` (``DefaultAzureCredential``), ``"managed_identity"`` (optional
    user-assigned ``client_id``) or ``"client_secret"`` (``tenant_id``, ``client_id``
    and ``client_secret``). Secret fields accept a plain ``str`` and wrap it.

    ``session_queues`` names the session-enabled queues (comma-separated names or
    ``fnmatch`` patterns such as ``"orders,pr-*"``): those report native sessions and all
    others none. Unset, every queue reports native sessions and the provider learns from
    the service which queues refuse session (or plain) receivers. ``max_message_size`` is
    the entity's limit on the encoded message (256 KiB on the standard tier, up to
    100 MiB on premium); the provider keeps a small reserve of it for the AMQP envelope.
    ``max_delivery_count`` is the entities' ``MaxDeliveryCount`` (set on the queue in
    Azure, 10 by default): the service dead-letters by it, and the bot's limit of failed
    handlings follows it.
    """

    kind: ClassVar[Literal["azure"]] = "azure"

    connection_string: Secret | None = None
    namespace: str | None = None
    credential: AzureCredentialKind = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    transport: AzureTransport = "amqp"
    prefetch: int = 0
    max_message_size: int = 262_144
    session_queues: str | None = None
    max_delivery_count: int = 10

    def __post_init__(self) -> None:
        _int_at_least(self.max_delivery_count, 1, "azure.max_delivery_count")
        connection_string = _wrap_secret(self, "connection_string", "azure.connection_string")
        client_secret = _wrap_secret(self, "client_secret", "azure.client_secret")
        _optional_text(self.namespace, "azure.namespace")
        _optional_text(self.tenant_id, "azure.tenant_id")
        _optional_text(self.client_id, "azure.client_id")
        _choice(self.credential, typing.get_args(AzureCredentialKind), "azure.credential")
        _choice(self.transport, typing.get_args(AzureTransport), "azure.transport")

        if (connection_string is None) == (self.namespace is None):
            raise ConfigurationError(
                "give exactly one of azure.connection_string or azure.namespace",
                field="azure.connection_string",
            )
        if connection_string is not None:
            _check_connection_string(connection_string, "azure.connection_string")
            if self.credential != "default":
                raise ConfigurationError(
                    "only applies with azure.namespace, not azure.connection_string",
                    field="azure.credential",
                )
            for name in ("tenant_id", "client_id", "client_secret"):
                if getattr(self, name) is not None:
                    raise ConfigurationError(
                        "only applies with azure.namespace, not azure.connection_string",
                        field=f"azure.{name}",
                    )
        else:
            namespace = typing.cast(str, self.namespace)
            if not _DOTTED_HOST.match(namespace):
                raise ConfigurationError(
                    "must be a fully qualified host name such as "
                    "'<name>.servicebus.windows.net' (no scheme, port or path)",
                    field="azure.namespace",
                )
            self._check_credential(client_secret)

        _int_at_least(self.prefetch, 0, "azure.prefetch")
        _int_at_least(
            self.max_message_size, 1, "azure.max_message_size", maximum=_AZURE_MAX_MESSAGE_SIZE
        )
        _optional_text(self.session_queues, "azure.session_queues")
        if self.session_queues is not None:
            for pattern in self.session_queues.split(","):
                if not _QUEUE_PATTERN.fullmatch(pattern.strip()):
                    raise ConfigurationError(
                        "expected comma-separated queue names or patterns "
                        "(letters, digits, '_', '-', '.', '*', '?')",
                        field="azure.session_queues",
                    )

    def session_queue_patterns(self) -> tuple[str, ...]:
        """The ``session_queues`` entries, stripped (empty when unset)."""
        if self.session_queues is None:
            return ()
        return tuple(pattern.strip() for pattern in self.session_queues.split(","))

    def _check_credential(self, client_secret: Secret | None) -> None:
        if self.credential == "client_secret":
            missing = [
                f"azure.{name}"
                for name, value in (
                    ("tenant_id", self.tenant_id),
                    ("client_id", self.client_id),
                    ("client_secret", client_secret),
                )
                if value is None
            ]
            if missing:
                raise ConfigurationError(
                    "credential 'client_secret' requires azure.tenant_id, azure.client_id and "
                    f"azure.client_secret (missing: {', '.join(missing)})",
                    field=missing[0],
                )
            return
        if client_secret is not None:
            raise ConfigurationError(
                "only applies with credential 'client_secret'", field="azure.client_secret"
            )
        if self.credential == "managed_identity" and self.tenant_id is not None:
            raise ConfigurationError(
                "does not apply to credential 'managed_identity'", field="azure.tenant_id"
            )


ProviderConfig: TypeAlias = InMemoryConfig | SqliteConfig | AwsSqsConfig | AzureServiceBusConfig

_PROVIDER_TYPES: Final = (InMemoryConfig, SqliteConfig, AwsSqsConfig, AzureServiceBusConfig)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The whole runtime configuration: provider, retry, circuit breaker, timeouts, crypto."""

    provider: ProviderConfig = field(default_factory=InMemoryConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    crypto: CryptoConfig = field(default_factory=CryptoConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.provider, _PROVIDER_TYPES):
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


# -- loading --------------------------------------------------------------------

_ENV_PREFIX: Final = "QUEUE_RUNTIME_"
_PROVIDER_ENV: Final = "QUEUE_PROVIDER"
_CONFIG_FILE_ENV: Final = "QUEUE_RUNTIME_CONFIG"
_DEFAULT_PROVIDER: Final = "memory"

_PROVIDERS: Final[dict[str, type[ProviderConfig]]] = {
    "memory": InMemoryConfig,
    "sqlite": SqliteConfig,
    "aws": AwsSqsConfig,
    "azure": AzureServiceBusConfig,
}
_COMMON_SECTIONS: Final = ("retry", "circuit_breaker", "timeouts", "crypto")
_SECTIONS: Final[dict[str, type[Any]]] = {
    **_PROVIDERS,
    "retry": RetryPolicy,
    "circuit_breaker": CircuitBreakerConfig,
    "timeouts": TimeoutConfig,
    "crypto": CryptoConfig,
}

_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


@dataclass(slots=True)
class _Layer:
    """One source of settings: raw values, each with where it came from."""

    provider: str | None = None
    values: dict[str, dict[str, tuple[object, str]]] = field(default_factory=dict)

    def put(self, section: str, name: str, value: object, source: str) -> None:
        self.values.setdefault(section, {})[name] = (value, source)


def _field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> resolved type, in declaration order (ClassVars excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_key(section: str, name: str, source: str) -> None:
    known = _field_types(_SECTIONS[section])
    if name not in known:
        raise ConfigurationError(
            f"unknown setting ({source}); [{section}] accepts: {', '.join(known)}",
            field=f"{section}.{name}",
        )


def _parse_provider(value: object, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() in _PROVIDERS:
        return value.strip().lower()
    raise ConfigurationError(
        f"unknown provider {_preview(value)} ({source}); expected one of: {', '.join(_PROVIDERS)}",
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
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigurationError(f"must be a table ({source})", field=key)
            for name, raw in value.items():
                _check_key(key, name, source)
                layer.put(key, name, raw, f"{source}, [{key}]")
        else:
            raise ConfigurationError(
                f"unknown key ({source}); expected provider or one of the tables "
                f"{', '.join(_SECTIONS)}",
                field=key,
            )
    return layer


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    if _PROVIDER_ENV in env:
        layer.provider = _parse_provider(env[_PROVIDER_ENV], f"environment {_PROVIDER_ENV}")
    for variable, raw in env.items():
        if not variable.startswith(_ENV_PREFIX):
            continue
        rest = variable[len(_ENV_PREFIX) :]
        for section in _SECTIONS:
            table = section.upper() + "_"
            if rest.startswith(table):
                name = rest[len(table) :].lower()
                source = f"environment {variable}"
                _check_key(section, name, source)
                layer.put(section, name, raw, source)
                break
    return layer


def _override_layer(overrides: Mapping[str, Any]) -> _Layer:
    layer = _Layer()
    # "provider" first so that a table mapping given alongside merges on top of it.
    for key in sorted(overrides, key=lambda key: key != "provider"):
        value = overrides[key]
        source = f"load_config({key}=...)"
        if key == "provider":
            if isinstance(value, _PROVIDER_TYPES):
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
        elif key in _SECTIONS:
            cls = _SECTIONS[key]
            if isinstance(value, cls):
                _put_object(layer, key, value, source)
            elif isinstance(value, Mapping):
                for name, raw in value.items():
                    _check_key(key, str(name), source)
                    layer.put(key, str(name), raw, source)
            else:
                raise ConfigurationError(
                    f"expected {cls.__name__} or a mapping of its fields", field=key
                )
        else:
            raise ConfigurationError(
                f"unknown setting; load_config accepts provider, {', '.join(_SECTIONS)}",
                field=key,
            )
    return layer


def _put_object(layer: _Layer, section: str, value: object, source: str) -> None:
    # An object is a complete section: every field is set, so it replaces lower layers.
    for name in _field_types(type(value)):
        layer.put(section, name, getattr(value, name), source)


def _merge(layers: list[_Layer], default_provider: str = _DEFAULT_PROVIDER) -> QueueConfig:
    kind: str = default_provider
    for layer in layers:
        if layer.provider is not None:
            kind = layer.provider
    built: dict[str, Any] = {}
    for section in (kind, *_COMMON_SECTIONS):
        types_ = _field_types(_SECTIONS[section])
        values: dict[str, object] = {}
        for layer in layers:
            for name, (raw, source) in layer.values.get(section, {}).items():
                values[name] = _coerce(raw, types_[name], f"{section}.{name}", source)
        built[section] = _SECTIONS[section](**values)
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
    default_provider: str = _DEFAULT_PROVIDER,
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


# -- coercion -----------------------------------------------------------------


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _contains_secret(tp: Any) -> bool:
    return tp is Secret or any(_contains_secret(arg) for arg in typing.get_args(tp))


def _describe(tp: Any) -> str:
    """A short human name of a field type, for errors and the reference table."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return " | ".join(_describe(arg) for arg in inner) + " (optional)"
    if origin is Literal:
        return " | ".join(str(arg) for arg in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(str(member.value) for member in tp)
    if tp is Secret:
        return "secret"
    if tp is bool:
        return "bool (true/false/1/0/yes/no)"
    return str(getattr(tp, "__name__", tp))


def _coerce(value: object, tp: Any, path: str, source: str) -> object:
    """Convert a raw value (TOML value, environment string, code value) to type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or value == ""):
            return None
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1:  # pragma: no cover - no such field exists
            raise TypeError(f"unsupported config field type {tp!r}")
        return _coerce(value, inner[0], path, source)

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
        if _is_number(value):
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

    expected = "a finite number" if tp is float else _describe(tp)
    got = "a value of the wrong type (hidden)" if _contains_secret(tp) else _preview(value)
    raise ConfigurationError(f"expected {expected}, got {got} ({source})", field=path)


# -- reference ------------------------------------------------------------------


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
    path read by :func:`load_config`) is not a setting and is not listed.
    """
    rows = [("provider", _PROVIDER_ENV, " | ".join(_PROVIDERS), f'"{_DEFAULT_PROVIDER}"')]
    for section, cls in _SECTIONS.items():
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
                    f"{_ENV_PREFIX}{section.upper()}_{f.name.upper()}",
                    _describe(_field_types(cls)[f.name]),
                    _format_default(default),
                )
            )
    return rows
