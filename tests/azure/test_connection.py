"""Building the SDK client and credential from configuration, offline."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import azure.identity.aio
import pytest
from azure.identity.aio import (
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from azure.servicebus import TransportType
from azure.servicebus.aio import ServiceBusClient

import queue_runtime as qr
from queue_runtime.config import AzureServiceBusConfig, Secret
from queue_runtime.providers.azure import AzureServiceBusProvider
from queue_runtime.providers.azure.connection import (
    EMULATOR_KEY,
    build_client,
    credential_for,
    emulator_ready,
    secret_values,
)

from .conftest import CONNECTION_STRING, PLANTED

NAMESPACE = "my-bus.servicebus.windows.net"


def test_importing_the_runtime_does_not_import_the_azure_sdk() -> None:
    code = (
        "import sys, queue_runtime, queue_runtime.providers;"
        "assert not [m for m in sys.modules if m.startswith('azure')], 'azure imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_connection_string_builds_a_client_without_a_credential() -> None:
    client, credential = build_client(AzureServiceBusConfig(connection_string=CONNECTION_STRING))  # type: ignore[arg-type]
    try:
        assert isinstance(client, ServiceBusClient)
        assert credential is None
        assert client.fully_qualified_namespace == "fake.servicebus.windows.net"
        assert client._config.retry_total == 0  # the QueueClient retries, not the SDK
        assert client._config.transport_type is TransportType.Amqp
    finally:
        await client.close()


async def test_websocket_transport_is_passed_to_the_sdk() -> None:
    config = AzureServiceBusConfig(
        connection_string=Secret(CONNECTION_STRING), transport="amqp_websocket"
    )
    client, _ = build_client(config)
    try:
        assert client._config.transport_type is TransportType.AmqpOverWebsocket
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (AzureServiceBusConfig(namespace=NAMESPACE), DefaultAzureCredential),
        (
            AzureServiceBusConfig(namespace=NAMESPACE, credential="managed_identity"),
            ManagedIdentityCredential,
        ),
        (
            AzureServiceBusConfig(
                namespace=NAMESPACE, credential="managed_identity", client_id="user-assigned"
            ),
            ManagedIdentityCredential,
        ),
        (
            AzureServiceBusConfig(
                namespace=NAMESPACE,
                credential="client_secret",
                tenant_id="tenant",
                client_id="app",
                client_secret=Secret(PLANTED),
            ),
            ClientSecretCredential,
        ),
    ],
    ids=["default", "system-assigned", "user-assigned", "client-secret"],
)
async def test_each_credential_kind_builds_its_async_identity_class(
    config: AzureServiceBusConfig, expected: type[Any]
) -> None:
    client, credential = build_client(config)
    try:
        assert type(credential) is expected
        assert client.fully_qualified_namespace == NAMESPACE
        assert client._credential is credential
    finally:
        await client.close()
        assert credential is not None
        await credential.close()


def test_credentials_get_exactly_the_configured_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def recorder(name: str) -> Any:
        def build(*args: object, **kwargs: object) -> str:
            calls.append((name, args, kwargs))
            return name

        return build

    for name in ("ManagedIdentityCredential", "ClientSecretCredential", "DefaultAzureCredential"):
        monkeypatch.setattr(azure.identity.aio, name, recorder(name))

    credential_for(AzureServiceBusConfig(namespace=NAMESPACE, credential="managed_identity"))
    credential_for(
        AzureServiceBusConfig(namespace=NAMESPACE, credential="managed_identity", client_id="u")
    )
    credential_for(
        AzureServiceBusConfig(
            namespace=NAMESPACE,
            credential="client_secret",
            tenant_id="t",
            client_id="c",
            client_secret=Secret(PLANTED),
        )
    )
    credential_for(AzureServiceBusConfig(namespace=NAMESPACE))

    assert calls == [
        ("ManagedIdentityCredential", (), {"client_id": None}),
        ("ManagedIdentityCredential", (), {"client_id": "u"}),
        ("ClientSecretCredential", ("t", "c", PLANTED), {}),
        ("DefaultAzureCredential", (), {}),
    ]
    assert (
        credential_for(AzureServiceBusConfig(connection_string=Secret(CONNECTION_STRING))) is None
    )


def test_emulator_connection_strings_get_the_placeholder_key_the_sdk_requires() -> None:
    ready = emulator_ready("Endpoint=sb://localhost;UseDevelopmentEmulator=TRUE")

    assert ready == (
        "Endpoint=sb://localhost;UseDevelopmentEmulator=true;"
        f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={EMULATOR_KEY}"
    )
    keyed = "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true"
    assert emulator_ready(keyed) == keyed
    assert emulator_ready(CONNECTION_STRING) == CONNECTION_STRING


async def test_an_emulator_connection_string_connects_without_tls_to_localhost() -> None:
    config = AzureServiceBusConfig(
        connection_string=Secret("Endpoint=sb://localhost:5672;UseDevelopmentEmulator=true")
    )
    client, _ = build_client(config)
    try:
        assert client.fully_qualified_namespace == "localhost:5672"
        assert client._config.use_tls is False
    finally:
        await client.close()


def test_a_connection_string_the_sdk_rejects_is_a_configuration_error_without_the_secret() -> None:
    # the config skips empty parts; the SDK's parser refuses them
    config = AzureServiceBusConfig(
        connection_string=Secret(
            f"Endpoint=sb://h.example.net/;;SharedAccessKeyName=k;SharedAccessKey={PLANTED}"
        )
    )

    with pytest.raises(qr.ConfigurationError) as caught:
        build_client(config)

    assert caught.value.field == "azure.connection_string"
    assert PLANTED not in str(caught.value)
    assert PLANTED not in repr(caught.value)


def test_secret_values_cover_keys_signatures_and_client_secrets() -> None:
    sas = f"SharedAccessSignature sr=x&sig={PLANTED}&se=1&skn=k"
    config = AzureServiceBusConfig(
        connection_string=Secret(f"Endpoint=sb://h.example.net/;SharedAccessSignature={sas}")
    )
    revealed = {secret.reveal() for secret in secret_values(config)}

    assert PLANTED in revealed
    assert sas in revealed
    assert PLANTED in {
        s.reveal()
        for s in secret_values(AzureServiceBusConfig(connection_string=Secret(CONNECTION_STRING)))
    }


async def test_create_client_builds_the_azure_provider_from_config_alone() -> None:
    config = AzureServiceBusConfig(
        connection_string=Secret(CONNECTION_STRING), session_queues="events"
    )
    async with await qr.create_client(config) as client:
        assert isinstance(client.provider, AzureServiceBusProvider)
        assert client.provider_type is qr.ProviderType.AZURE_SERVICE_BUS
        assert client.max_batch_size == 100
        assert client.max_message_size == 262_144 - 4096
        assert client.session_support("events") is qr.SessionSupport.NATIVE
        assert client.session_support("jobs") is qr.SessionSupport.NONE


async def test_closing_the_provider_closes_the_credential_it_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[str] = []
    original = ManagedIdentityCredential.close

    async def close(self: ManagedIdentityCredential) -> None:
        closed.append("credential")
        await original(self)

    monkeypatch.setattr(ManagedIdentityCredential, "close", close)
    provider = AzureServiceBusProvider(
        AzureServiceBusConfig(namespace=NAMESPACE, credential="managed_identity")
    )

    await provider.aclose()
    await provider.aclose()

    assert closed == ["credential"]
