"""From :class:`~queue_runtime.config.AzureServiceBusConfig` to a connected SDK client.

One :class:`~azure.servicebus.aio.ServiceBusClient` per provider, built from
either the connection string or the namespace plus an ``azure.identity.aio``
credential (async, so token requests never block the event loop). Nothing here
touches the network: the SDK connects on first use.

Decisions:

* The SDK's own retries are turned off (``retry_total=0``):
  :class:`~queue_runtime.client.QueueClient` retries transient errors with the
  configured policy, and two stacked retry loops would multiply attempts and
  blow through the client's timeouts.
* A development-emulator connection string without a key gets the emulator's
  documented placeholder key (the SDK insists on one; the emulator ignores it),
  and ``UseDevelopmentEmulator`` is normalised to the lower-case ``true`` the
  SDK compares against.

Example:
    >>> from queue_runtime.config import AzureServiceBusConfig
    >>> from queue_runtime.providers.azure.connection import credential_for
    >>> config = AzureServiceBusConfig(namespace="bus.servicebus.windows.net",
    ...                                credential="managed_identity", client_id="app-id")
    >>> type(credential_for(config)).__name__
    'ManagedIdentityCredential'
"""

from __future__ import annotations

from typing import Final

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import TransportType
from azure.servicebus.aio import ServiceBusClient

from queue_runtime.config import AzureServiceBusConfig, Secret
from queue_runtime.errors import ConfigurationError

__all__ = ["build_client", "credential_for", "emulator_ready", "secret_values"]

EMULATOR_KEY_NAME: Final = "RootManageSharedAccessKey"
EMULATOR_KEY: Final = "SAS_KEY_VALUE"

_TRANSPORTS: Final = {
    "amqp": TransportType.Amqp,
    "amqp_websocket": TransportType.AmqpOverWebsocket,
}


def credential_for(config: AzureServiceBusConfig) -> AsyncTokenCredential | None:
    """The ``azure.identity.aio`` credential ``config`` asks for (none with a connection string).

    ``"default"`` → ``DefaultAzureCredential``, ``"managed_identity"`` →
    ``ManagedIdentityCredential`` (user-assigned when ``client_id`` is set),
    ``"client_secret"`` → ``ClientSecretCredential``. The caller owns the
    credential and must ``await credential.close()``.
    """
    if config.connection_string is not None:
        return None
    from azure.identity.aio import (
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    if config.credential == "managed_identity":
        return ManagedIdentityCredential(client_id=config.client_id)
    if config.credential == "client_secret":
        # AzureServiceBusConfig has checked that all three are set
        assert config.tenant_id is not None
        assert config.client_id is not None
        assert config.client_secret is not None
        return ClientSecretCredential(
            config.tenant_id, config.client_id, config.client_secret.reveal()
        )
    return DefaultAzureCredential()


def emulator_ready(connection_string: str) -> str:
    """``connection_string`` as the SDK accepts it for the local emulator (unchanged otherwise)."""
    parts = [part for part in connection_string.split(";") if part.strip()]
    keys = {part.partition("=")[0].strip().lower(): index for index, part in enumerate(parts)}
    flag = keys.get("usedevelopmentemulator")
    if flag is None or parts[flag].partition("=")[2].strip().lower() != "true":
        return connection_string
    parts[flag] = "UseDevelopmentEmulator=true"
    if "sharedaccesskey" not in keys and "sharedaccesssignature" not in keys:
        parts += [f"SharedAccessKeyName={EMULATOR_KEY_NAME}", f"SharedAccessKey={EMULATOR_KEY}"]
    return ";".join(parts)


def secret_values(config: AzureServiceBusConfig) -> tuple[Secret, ...]:
    """Every secret ``config`` holds, and the secret parts of its connection string.

    Used to scrub text that came from the SDK before it goes into an error
    message or a log line.
    """
    found: list[Secret] = []
    if config.client_secret is not None:
        found.append(config.client_secret)
    if config.connection_string is not None:
        found.append(config.connection_string)
        for part in config.connection_string.reveal().split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("sharedaccesskey", "sharedaccesssignature") and value:
                found.append(Secret(value.strip()))
                # a SAS token is itself a list of fields; its signature is the secret part
                for field in value.split("&"):
                    name, _, signed = field.partition("=")
                    if name.strip().lower().endswith("sig") and len(signed) >= 8:
                        found.append(Secret(signed))
    return tuple(found)


def build_client(
    config: AzureServiceBusConfig,
) -> tuple[ServiceBusClient, AsyncTokenCredential | None]:
    """A ``ServiceBusClient`` for ``config`` and the credential it owns (to close with it).

    Raises :class:`ConfigurationError` (naming ``azure.connection_string``, without
    echoing it) if the SDK rejects the connection string.
    """
    transport = _TRANSPORTS[config.transport]
    credential = credential_for(config)
    if credential is None:
        assert config.connection_string is not None
        try:
            client = ServiceBusClient.from_connection_string(
                emulator_ready(config.connection_string.reveal()),
                transport_type=transport,
                retry_total=0,
            )
        except ValueError as exc:
            # said without quoting the string (the SDK's messages do not quote it either)
            raise ConfigurationError(
                "the Service Bus SDK rejected the connection string",
                field="azure.connection_string",
            ) from exc
        return client, None
    assert config.namespace is not None
    client = ServiceBusClient(config.namespace, credential, transport_type=transport, retry_total=0)
    return client, credential
