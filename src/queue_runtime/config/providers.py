"""One config class per provider: in-memory, sqlite, AWS SQS, Azure Service Bus."""

from __future__ import annotations

import re
import typing
import warnings
from dataclasses import InitVar, dataclass
from typing import ClassVar, Final, Literal, NoReturn, TypeAlias
from urllib.parse import urlsplit

from queue_runtime.config.secrets import Secret
from queue_runtime.config.validation import (
    choice,
    in_range,
    int_at_least,
    optional_text,
    positive,
    wrap_secret,
)
from queue_runtime.errors import ConfigurationError

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "PROVIDER_TYPES",
    "AwsSqsConfig",
    "AzureCredentialKind",
    "AzureServiceBusConfig",
    "AzureTransport",
    "InMemoryConfig",
    "ProviderConfig",
    "SessionMode",
    "SqliteConfig",
    "SqliteSynchronous",
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


@dataclass(frozen=True, slots=True)
class InMemoryConfig:
    """The in-process provider, for tests and local development.

    ``max_message_size`` defaults to 256 KiB, the strictest real provider's limit, so
    tests catch oversize messages. ``session_mode="emulated"`` implements sessions in
    the runtime; ``"native"`` uses the provider's own session support.
    ``create_queues=False`` makes unknown queue names fail with ``QueueNotFoundError``
    instead of creating them (``auto_create_queues``, its old name, still works and
    warns).

    Example:
        >>> InMemoryConfig(create_queues=False).create_queues
        False
    """

    kind: ClassVar[Literal["memory"]] = "memory"

    session_mode: SessionMode = "emulated"
    lock_duration: float = 30.0
    session_lock_duration: float = 300.0
    max_delivery_count: int = 5
    max_message_size: int = 262_144
    max_batch_size: int = 100
    max_queue_size: int = 100_000
    create_queues: bool = True
    auto_create_queues: InitVar[bool | None] = None
    """Deprecated: the old name of ``create_queues``."""

    def __post_init__(self, auto_create_queues: bool | None) -> None:
        if auto_create_queues is not None:
            warnings.warn(
                "InMemoryConfig(auto_create_queues=...) is deprecated: use create_queues",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "create_queues", auto_create_queues)
        choice(self.session_mode, typing.get_args(SessionMode), "memory.session_mode")
        positive(self.lock_duration, "memory.lock_duration")
        positive(self.session_lock_duration, "memory.session_lock_duration")
        int_at_least(self.max_delivery_count, 1, "memory.max_delivery_count")
        int_at_least(self.max_message_size, 1, "memory.max_message_size")
        int_at_least(self.max_batch_size, 1, "memory.max_batch_size")
        int_at_least(self.max_queue_size, 1, "memory.max_queue_size")
        if not isinstance(self.create_queues, bool):
            raise ConfigurationError("expected a boolean", field="memory.create_queues")


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
        choice(self.session_mode, typing.get_args(SessionMode), "sqlite.session_mode")
        positive(self.lock_duration, "sqlite.lock_duration")
        positive(self.session_lock_duration, "sqlite.session_lock_duration")
        int_at_least(self.max_delivery_count, 1, "sqlite.max_delivery_count")
        int_at_least(self.max_message_size, 1, "sqlite.max_message_size")
        int_at_least(self.max_batch_size, 1, "sqlite.max_batch_size")
        if not isinstance(self.create_queues, bool):
            raise ConfigurationError("expected a boolean", field="sqlite.create_queues")
        choice(self.synchronous, typing.get_args(SqliteSynchronous), "sqlite.synchronous")
        in_range(self.busy_timeout, 0, 3600, "sqlite.busy_timeout")
        in_range(self.poll_interval, 0.001, 10, "sqlite.poll_interval")


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
        optional_text(self.region, "aws.region")
        optional_text(self.endpoint_url, "aws.endpoint_url")
        if self.endpoint_url is not None:
            # The URL is not echoed: it may carry user:password.
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "must be an http:// or https:// URL with a host", field="aws.endpoint_url"
                )
        optional_text(self.access_key_id, "aws.access_key_id")
        secret = wrap_secret(self, "secret_access_key", "aws.secret_access_key")
        token = wrap_secret(self, "session_token", "aws.session_token")
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
        in_range(self.visibility_timeout, 0, _SQS_MAX_VISIBILITY, "aws.visibility_timeout")
        in_range(self.wait_time, 0, _SQS_MAX_WAIT, "aws.wait_time")
        int_at_least(self.max_delivery_count, 1, "aws.max_delivery_count")
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
        int_at_least(self.max_delivery_count, 1, "azure.max_delivery_count")
        connection_string = wrap_secret(self, "connection_string", "azure.connection_string")
        client_secret = wrap_secret(self, "client_secret", "azure.client_secret")
        optional_text(self.namespace, "azure.namespace")
        optional_text(self.tenant_id, "azure.tenant_id")
        optional_text(self.client_id, "azure.client_id")
        choice(self.credential, typing.get_args(AzureCredentialKind), "azure.credential")
        choice(self.transport, typing.get_args(AzureTransport), "azure.transport")

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

        int_at_least(self.prefetch, 0, "azure.prefetch")
        int_at_least(
            self.max_message_size, 1, "azure.max_message_size", maximum=_AZURE_MAX_MESSAGE_SIZE
        )
        optional_text(self.session_queues, "azure.session_queues")
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

PROVIDER_TYPES: Final = (InMemoryConfig, SqliteConfig, AwsSqsConfig, AzureServiceBusConfig)
