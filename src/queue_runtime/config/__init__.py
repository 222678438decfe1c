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

from queue_runtime.config.loading import QueueConfig, TimeoutConfig, load_config
from queue_runtime.config.providers import DEFAULT_SQLITE_PATH as DEFAULT_SQLITE_PATH
from queue_runtime.config.providers import (
    AwsSqsConfig,
    AzureServiceBusConfig,
    InMemoryConfig,
    ProviderConfig,
    SqliteConfig,
)
from queue_runtime.config.providers import AzureCredentialKind as AzureCredentialKind
from queue_runtime.config.providers import AzureTransport as AzureTransport
from queue_runtime.config.providers import SessionMode as SessionMode
from queue_runtime.config.providers import SqliteSynchronous as SqliteSynchronous
from queue_runtime.config.reference import config_reference
from queue_runtime.config.secrets import Secret

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
