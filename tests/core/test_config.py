"""Configuration: defaults, validation, layering (file < env < code), secrets."""

from __future__ import annotations

import copy
import dataclasses
import hmac
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queue_runtime.circuit import CircuitBreakerConfig
from queue_runtime.config import (
    AwsSqsConfig,
    AzureServiceBusConfig,
    InMemoryConfig,
    QueueConfig,
    Secret,
    SqliteConfig,
    TimeoutConfig,
    config_reference,
    load_config,
)
from queue_runtime.crypto import CryptoConfig
from queue_runtime.errors import ConfigurationError
from queue_runtime.retry import Backoff, RetryPolicy

PLANTED = "Pl4nted-S3cret-zq7XK"  # distinctive: must never show up anywhere
SAS_KEY = "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey="
VALID_SAS_KEY = f"{SAS_KEY}{PLANTED}="


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "queue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_text(error: ConfigurationError) -> str:
    """Everything an error could show: str, repr, args and chained errors."""
    parts = [str(error), repr(error), *map(str, error.args), str(error.field)]
    cause = error.__cause__ or error.__context__
    if cause is not None:
        parts += [str(cause), repr(cause)]
    return "\n".join(parts)


# -- defaults -------------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    config = QueueConfig()

    assert config.timeouts == TimeoutConfig(connect=30.0, send=10.0, receive=30.0)
    assert (
        config.retry.max_attempts,
        config.retry.initial_delay,
        config.retry.max_delay,
        config.retry.multiplier,
        config.retry.backoff,
    ) == (3, 1.0, 30.0, 2.0, Backoff.EXPONENTIAL)
    assert (
        config.circuit_breaker.failure_threshold,
        config.circuit_breaker.recovery_timeout,
        config.circuit_breaker.success_threshold,
    ) == (5, 30.0, 3)
    assert isinstance(config.provider, InMemoryConfig)
    assert config.provider.max_message_size == 256 * 1024
    assert config.provider.max_delivery_count == 5
    assert config.provider.lock_duration == 30.0
    assert config.provider.session_lock_duration == 300.0


def test_sqs_defaults_match_the_spec() -> None:
    aws = AwsSqsConfig()
    assert (aws.visibility_timeout, aws.wait_time, aws.max_delivery_count) == (30.0, 20.0, 5)


def test_provider_kinds() -> None:
    assert (InMemoryConfig.kind, AwsSqsConfig.kind, AzureServiceBusConfig.kind) == (
        "memory",
        "aws",
        "azure",
    )


def test_empty_environment_and_no_file_give_the_defaults() -> None:
    assert QueueConfig.from_env({}) == QueueConfig()
    assert load_config(env={}) == QueueConfig()


def test_configs_are_frozen_and_slotted() -> None:
    config = QueueConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.retry = RetryPolicy()  # type: ignore[misc]
    for obj in (config, config.provider, config.timeouts, AwsSqsConfig()):
        assert not hasattr(obj, "__dict__")


# -- validation names the field ---------------------------------------------------

AZ_NS = "myns.servicebus.windows.net"

INVALID: list[tuple[Callable[[], object], str]] = [
    (lambda: TimeoutConfig(connect=0), "timeouts.connect"),
    (lambda: TimeoutConfig(send=-1), "timeouts.send"),
    (lambda: TimeoutConfig(receive=math.nan), "timeouts.receive"),
    (lambda: InMemoryConfig(session_mode="both"), "memory.session_mode"),  # type: ignore[arg-type]
    (lambda: InMemoryConfig(lock_duration=0), "memory.lock_duration"),
    (lambda: InMemoryConfig(session_lock_duration=-5), "memory.session_lock_duration"),
    (lambda: InMemoryConfig(max_delivery_count=0), "memory.max_delivery_count"),
    (lambda: InMemoryConfig(max_message_size=0), "memory.max_message_size"),
    (lambda: InMemoryConfig(max_batch_size=0), "memory.max_batch_size"),
    (lambda: InMemoryConfig(max_queue_size=0), "memory.max_queue_size"),
    (lambda: AwsSqsConfig(region=""), "aws.region"),
    (lambda: AwsSqsConfig(visibility_timeout=43_200.5), "aws.visibility_timeout"),
    (lambda: AwsSqsConfig(visibility_timeout=-1), "aws.visibility_timeout"),
    (lambda: AwsSqsConfig(wait_time=21), "aws.wait_time"),
    (lambda: AwsSqsConfig(max_delivery_count=0), "aws.max_delivery_count"),
    (lambda: AwsSqsConfig(endpoint_url="ftp://localhost:4566"), "aws.endpoint_url"),
    (lambda: AwsSqsConfig(endpoint_url="localhost:4566"), "aws.endpoint_url"),
    (lambda: AwsSqsConfig(access_key_id="AKID"), "aws.secret_access_key"),
    (lambda: AwsSqsConfig(secret_access_key=Secret("s")), "aws.access_key_id"),
    (lambda: AwsSqsConfig(session_token=Secret("t")), "aws.session_token"),
    (
        lambda: AwsSqsConfig(access_key_id="AKID", secret_access_key=Secret("")),
        "aws.secret_access_key",
    ),
    (lambda: AzureServiceBusConfig(), "azure.connection_string"),
    (lambda: AzureServiceBusConfig(namespace="myns"), "azure.namespace"),
    (lambda: AzureServiceBusConfig(namespace=f"sb://{AZ_NS}"), "azure.namespace"),
    (lambda: AzureServiceBusConfig(namespace=f"{AZ_NS}:5671"), "azure.namespace"),
    (lambda: AzureServiceBusConfig(namespace="my ns.example.com"), "azure.namespace"),
    (
        lambda: AzureServiceBusConfig(namespace=AZ_NS, credential="password"),  # type: ignore[arg-type]
        "azure.credential",
    ),
    (
        lambda: AzureServiceBusConfig(namespace=AZ_NS, transport="http"),  # type: ignore[arg-type]
        "azure.transport",
    ),
    (
        lambda: AzureServiceBusConfig(
            namespace=AZ_NS, credential="client_secret", client_id="c", client_secret=Secret("s")
        ),
        "azure.tenant_id",
    ),
    (
        lambda: AzureServiceBusConfig(namespace=AZ_NS, client_secret=Secret("s")),
        "azure.client_secret",
    ),
    (
        lambda: AzureServiceBusConfig(
            namespace=AZ_NS, credential="managed_identity", tenant_id="t"
        ),
        "azure.tenant_id",
    ),
    (
        lambda: AzureServiceBusConfig(
            connection_string=Secret(VALID_SAS_KEY), credential="managed_identity"
        ),
        "azure.credential",
    ),
    (lambda: AzureServiceBusConfig(namespace=AZ_NS, prefetch=-1), "azure.prefetch"),
    (lambda: AzureServiceBusConfig(namespace=AZ_NS, max_message_size=0), "azure.max_message_size"),
    (lambda: QueueConfig(provider="aws"), "provider"),  # type: ignore[arg-type]
    (lambda: QueueConfig(retry={"max_attempts": 5}), "retry"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("build", "field"), INVALID, ids=[f for _, f in INVALID])
def test_each_validation_error_names_its_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"connection_string": Secret(VALID_SAS_KEY), "namespace": AZ_NS}],
    ids=["neither", "both"],
)
def test_azure_needs_exactly_one_of_connection_string_and_namespace(
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError) as info:
        AzureServiceBusConfig(**kwargs)
    assert "azure.connection_string" in str(info.value)
    assert "azure.namespace" in str(info.value)


def test_client_secret_credential_lists_every_missing_field() -> None:
    with pytest.raises(ConfigurationError) as info:
        AzureServiceBusConfig(namespace=AZ_NS, credential="client_secret")
    message = str(info.value)
    assert all(f"azure.{name}" in message for name in ("tenant_id", "client_id", "client_secret"))


def test_valid_azure_credential_combinations_load() -> None:
    AzureServiceBusConfig(namespace=AZ_NS)
    AzureServiceBusConfig(namespace="bus.example.internal", credential="managed_identity")
    AzureServiceBusConfig(namespace=AZ_NS, credential="managed_identity", client_id="uami")
    config = AzureServiceBusConfig(
        namespace=AZ_NS,
        credential="client_secret",
        tenant_id="tenant",
        client_id="app",
        client_secret="app-secret",  # type: ignore[arg-type]
    )
    assert isinstance(config.client_secret, Secret)
    assert config.client_secret.reveal() == "app-secret"


def test_plain_string_secrets_are_wrapped() -> None:
    aws = AwsSqsConfig(
        access_key_id="AKID",
        secret_access_key="sk",  # type: ignore[arg-type]
        session_token="tok",  # type: ignore[arg-type]
    )
    assert aws.secret_access_key == Secret("sk")
    assert aws.session_token == Secret("tok")
    azure = AzureServiceBusConfig(connection_string=VALID_SAS_KEY)  # type: ignore[arg-type]
    assert isinstance(azure.connection_string, Secret)


def test_sqs_bounds_are_inclusive() -> None:
    AwsSqsConfig(visibility_timeout=0, wait_time=0)
    AwsSqsConfig(visibility_timeout=43_200, wait_time=20, endpoint_url="http://localhost:4566")


# -- azure connection strings ---------------------------------------------------

VALID_CONNECTION_STRINGS = [
    VALID_SAS_KEY,
    f"{VALID_SAS_KEY};EntityPath=orders",
    "endpoint=sb://myns.servicebus.windows.net/;sharedaccesskeyname=Root;sharedaccesskey=k=",
    "Endpoint=sb://myns.servicebus.windows.net/;"
    "SharedAccessSignature=SharedAccessSignature sr=x&sig=abc%3D&se=1700000000&skn=Root",
    "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
    "Endpoint=sb://localhost:5672;UseDevelopmentEmulator=true",
]

INVALID_CONNECTION_STRINGS = [
    "garbage",
    PLANTED,
    "Endpoint=sb://myns.servicebus.windows.net/",
    f"SharedAccessKeyName=Root;SharedAccessKey={PLANTED}",
    f"Endpoint=https://myns.servicebus.windows.net/;SharedAccessKeyName=R;SharedAccessKey={PLANTED}",
    f"Endpoint=sb://;SharedAccessKeyName=Root;SharedAccessKey={PLANTED}",
    f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName={PLANTED}",
    f"Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKey={PLANTED}",
    f"{VALID_SAS_KEY};SharedAccessSignature=SharedAccessSignature sig={PLANTED}",
    f"{VALID_SAS_KEY};{PLANTED}",
    f"{VALID_SAS_KEY};SharedAccessKey={PLANTED}",
    f"Endpoint=sb://myns.servicebus.windows.net/;{PLANTED}=1",
    "Endpoint=sb://localhost;UseDevelopmentEmulator=false",
    "   ",
]


@pytest.mark.parametrize("connection_string", VALID_CONNECTION_STRINGS)
def test_azure_accepts_sas_key_sas_token_and_emulator_connection_strings(
    connection_string: str,
) -> None:
    config = AzureServiceBusConfig(connection_string=Secret(connection_string))
    assert config.connection_string == Secret(connection_string)


@pytest.mark.parametrize("connection_string", INVALID_CONNECTION_STRINGS)
def test_azure_rejects_malformed_connection_strings_without_echoing_them(
    connection_string: str,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        AzureServiceBusConfig(connection_string=Secret(connection_string))
    assert info.value.field == "azure.connection_string"
    assert PLANTED not in error_text(info.value)


# -- layering ---------------------------------------------------------------------


def test_precedence_is_file_then_env_then_code(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[retry]\nmax_attempts = 2\n")
    env = {"QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS": "4"}

    assert load_config(path, env={}).retry.max_attempts == 2
    assert load_config(path, env=env).retry.max_attempts == 4
    assert load_config(path, env=env, retry={"max_attempts": 6}).retry.max_attempts == 6
    assert load_config(path, env=env, retry=RetryPolicy(max_attempts=5)).retry.max_attempts == 5


def test_provider_selection_follows_the_same_precedence(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'provider = "aws"\n[aws]\nregion = "eu-west-1"\n')

    assert load_config(path, env={}).provider == AwsSqsConfig(region="eu-west-1")
    assert isinstance(load_config(path, env={"QUEUE_PROVIDER": "memory"}).provider, InMemoryConfig)
    from_code = load_config(path, env={"QUEUE_PROVIDER": "memory"}, provider="aws")
    assert from_code.provider == AwsSqsConfig(region="eu-west-1")


def test_layers_merge_field_by_field(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[retry]\ninitial_delay = 2.0\nmax_attempts = 2\n")
    config = load_config(
        path, env={"QUEUE_RUNTIME_RETRY_MULTIPLIER": "3"}, retry={"max_attempts": 9}
    )
    assert (config.retry.initial_delay, config.retry.multiplier, config.retry.max_attempts) == (
        2.0,
        3.0,
        9,
    )


def test_a_section_object_in_code_replaces_the_whole_section(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[retry]\ninitial_delay = 2.0\n")
    config = load_config(path, env={}, retry=RetryPolicy(max_attempts=5))
    assert config.retry == RetryPolicy(max_attempts=5)


def test_a_provider_object_in_code_selects_and_sets_the_provider() -> None:
    aws = AwsSqsConfig(region="us-east-1", endpoint_url="http://localhost:4566")
    config = load_config(env={"QUEUE_PROVIDER": "azure"}, provider=aws)
    assert config.provider == aws


def test_config_file_can_be_named_by_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[timeouts]\nsend = 3\n")
    config = load_config(env={"QUEUE_RUNTIME_CONFIG": str(path)})
    assert config.timeouts.send == 3.0


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS", "7")
    monkeypatch.delenv("QUEUE_RUNTIME_CONFIG", raising=False)
    monkeypatch.delenv("QUEUE_PROVIDER", raising=False)
    assert load_config().retry.max_attempts == 7
    assert QueueConfig.from_env().retry.max_attempts == 7


def test_from_toml_reads_every_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
provider = "azure"

[azure]
namespace = "myns.servicebus.windows.net"
credential = "managed_identity"
prefetch = 20

[aws]
region = "ignored-because-not-selected"

[retry]
max_attempts = 4
backoff = "linear"

[circuit_breaker]
enabled = false
recovery_timeout = 10

[timeouts]
receive = 5
""",
    )
    config = QueueConfig.from_toml(path)
    assert config.provider == AzureServiceBusConfig(
        namespace="myns.servicebus.windows.net", credential="managed_identity", prefetch=20
    )
    assert config.retry == RetryPolicy(max_attempts=4, backoff=Backoff.LINEAR)
    assert config.circuit_breaker == CircuitBreakerConfig(enabled=False, recovery_timeout=10.0)
    assert config.timeouts == TimeoutConfig(receive=5.0)


def test_only_the_selected_provider_table_is_used(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[aws]\nvisibility_timeout = "not a number"\n[azure]\n')
    assert isinstance(QueueConfig.from_toml(path).provider, InMemoryConfig)


def test_an_empty_env_value_unsets_an_optional_field(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'provider = "aws"\n[aws]\nregion = "eu-west-1"\n')
    config = load_config(path, env={"QUEUE_RUNTIME_AWS_REGION": ""})
    assert config.provider == AwsSqsConfig(region=None)


def test_missing_or_malformed_toml_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as missing:
        QueueConfig.from_toml(tmp_path / "nope.toml")
    assert missing.value.field == "config_file"
    with pytest.raises(ConfigurationError) as malformed:
        QueueConfig.from_toml(write_toml(tmp_path, "[retry\nmax_attempts = 1\n"))
    assert malformed.value.field == "config_file"


# -- coercion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "read", "expected"),
    [
        ({"QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS": " 7 "}, lambda c: c.retry.max_attempts, 7),
        ({"QUEUE_RUNTIME_TIMEOUTS_SEND": "2.5"}, lambda c: c.timeouts.send, 2.5),
        ({"QUEUE_RUNTIME_TIMEOUTS_CONNECT": "4"}, lambda c: c.timeouts.connect, 4.0),
        ({"QUEUE_RUNTIME_RETRY_BACKOFF": "linear"}, lambda c: c.retry.backoff, Backoff.LINEAR),
        ({"QUEUE_RUNTIME_RETRY_BACKOFF": "FIXED"}, lambda c: c.retry.backoff, Backoff.FIXED),
        (
            {"QUEUE_RUNTIME_MEMORY_SESSION_MODE": "Native"},
            lambda c: c.provider.session_mode,
            "native",
        ),
        ({"QUEUE_PROVIDER": "AWS"}, lambda c: c.provider.kind, "aws"),
        (
            {"QUEUE_PROVIDER": "aws", "QUEUE_RUNTIME_AWS_ENDPOINT_URL": "http://localhost:4566"},
            lambda c: c.provider.endpoint_url,
            "http://localhost:4566",
        ),
        (
            {"QUEUE_PROVIDER": "aws", "QUEUE_RUNTIME_AWS_WAIT_TIME": "0"},
            lambda c: c.provider.wait_time,
            0.0,
        ),
        (
            {"QUEUE_PROVIDER": "azure", "QUEUE_RUNTIME_AZURE_CONNECTION_STRING": VALID_SAS_KEY},
            lambda c: c.provider.connection_string,
            Secret(VALID_SAS_KEY),
        ),
        (
            {
                "QUEUE_PROVIDER": "azure",
                "QUEUE_RUNTIME_AZURE_NAMESPACE": AZ_NS,
                "QUEUE_RUNTIME_AZURE_TRANSPORT": "amqp_websocket",
            },
            lambda c: c.provider.transport,
            "amqp_websocket",
        ),
    ],
)
def test_env_values_are_coerced_to_the_field_type(
    env: dict[str, str], read: Callable[[Any], object], expected: object
) -> None:
    value = read(QueueConfig.from_env(env))
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
    ],
)
def test_env_booleans(text: str, expected: bool) -> None:
    config = QueueConfig.from_env({"QUEUE_RUNTIME_CIRCUIT_BREAKER_ENABLED": text})
    assert config.circuit_breaker.enabled is expected


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS", "three", "retry.max_attempts", "int"),
        ("QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS", "2.5", "retry.max_attempts", "int"),
        ("QUEUE_RUNTIME_TIMEOUTS_SEND", "soon", "timeouts.send", "number"),
        ("QUEUE_RUNTIME_TIMEOUTS_SEND", "inf", "timeouts.send", "finite"),
        ("QUEUE_RUNTIME_RETRY_INITIAL_DELAY", "nan", "retry.initial_delay", "finite"),
        ("QUEUE_RUNTIME_CIRCUIT_BREAKER_ENABLED", "maybe", "circuit_breaker.enabled", "bool"),
        ("QUEUE_RUNTIME_RETRY_BACKOFF", "quadratic", "retry.backoff", "exponential | linear"),
        ("QUEUE_RUNTIME_MEMORY_SESSION_MODE", "hybrid", "memory.session_mode", "emulated"),
    ],
)
def test_bad_env_values_name_the_field_and_expected_type(
    variable: str, value: str, field: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_env({variable: value})
    assert info.value.field == field
    assert expected in str(info.value)
    assert variable in str(info.value)


def test_env_values_are_validated_after_coercion() -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_env({"QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS": "0"})
    assert info.value.field == "retry.max_attempts"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[retry]\nmax_attempts = true\n", "retry.max_attempts"),
        ("[retry]\nmax_attempts = 2.0\n", "retry.max_attempts"),
        ('[retry]\nmax_attempts = "x"\n', "retry.max_attempts"),
        ('[timeouts]\nsend = "fast"\n', "timeouts.send"),
        ("[circuit_breaker]\nenabled = 1.5\n", "circuit_breaker.enabled"),
        ('provider = "aws"\n[aws]\nregion = 1\n', "aws.region"),
    ],
)
def test_bad_toml_values_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_toml(write_toml(tmp_path, toml))
    assert info.value.field == field


def test_toml_integers_are_accepted_for_float_fields(tmp_path: Path) -> None:
    config = QueueConfig.from_toml(write_toml(tmp_path, "[timeouts]\nsend = 5\n"))
    assert config.timeouts.send == 5.0
    assert isinstance(config.timeouts.send, float)


# -- typos and unknown names -------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[retry]\nmax_attemps = 3\n", "retry.max_attemps"),
        ("[retyr]\nmax_attempts = 3\n", "retyr"),
        ("provder = 'aws'\n", "provder"),
        ("[azure]\nconection_string = 'x'\n", "azure.conection_string"),
        ("retry = 3\n", "retry"),
    ],
)
def test_typos_in_toml_are_rejected(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_toml(write_toml(tmp_path, toml))
    assert info.value.field == named


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("QUEUE_RUNTIME_RETRY_MAX_ATTEMPS", "retry.max_attemps"),
        ("QUEUE_RUNTIME_AWS_REGON", "aws.regon"),
        ("QUEUE_RUNTIME_AZURE_NAMESPCE", "azure.namespce"),
        ("QUEUE_RUNTIME_CIRCUIT_BREAKER_THRESHOLD", "circuit_breaker.threshold"),
    ],
)
def test_typos_in_env_variables_of_known_tables_are_rejected(variable: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_env({variable: "1"})
    assert info.value.field == named
    assert variable in str(info.value)


def test_env_variables_of_unknown_tables_are_ignored() -> None:
    env = {"QUEUE_RUNTIME_LOG_LEVEL": "debug", "QUEUE_RUNTIME_CONFIG": "", "PATH": "/bin"}
    assert QueueConfig.from_env(env) == QueueConfig()


@pytest.mark.parametrize("overrides", [{"retyr": {}}, {"retry": {"max_attemps": 3}}])
def test_typos_in_code_overrides_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        load_config(env={}, **overrides)


def test_a_section_override_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config(env={}, retry=TimeoutConfig())
    assert info.value.field == "retry"


@pytest.mark.parametrize(
    "load",
    [
        lambda tmp: QueueConfig.from_env({"QUEUE_PROVIDER": "rabbitmq"}),
        lambda tmp: QueueConfig.from_toml(write_toml(tmp, 'provider = "rabbitmq"\n')),
        lambda tmp: load_config(env={}, provider="rabbitmq"),
    ],
    ids=["env", "toml", "code"],
)
def test_unknown_provider_lists_the_valid_ones(
    tmp_path: Path, load: Callable[[Path], QueueConfig]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        load(tmp_path)
    assert info.value.field == "provider"
    assert all(name in str(info.value) for name in ("memory", "aws", "azure"))


# -- secrets ------------------------------------------------------------------


def test_secret_reveals_only_on_request() -> None:
    secret = Secret(PLANTED)
    assert secret.reveal() == PLANTED
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert PLANTED not in f"{secret!r} {secret!s} {[secret]} { ({'k': secret}) }"


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert Secret("pässwörd") == Secret("pässwörd")
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_secret_equality_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert Secret("x") == Secret("x")
    assert calls == [(b"x", b"x")]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(Secret(PLANTED), protocol=protocol)


def test_a_config_holding_a_secret_cannot_be_pickled() -> None:
    config = QueueConfig(provider=AwsSqsConfig(access_key_id="A", secret_access_key=Secret("s")))
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(config)


def test_secret_is_immutable_and_copies_to_itself() -> None:
    secret = Secret("x")
    with pytest.raises(AttributeError):
        secret._value = "y"
    assert not hasattr(secret, "__dict__")
    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret


def test_secrets_never_appear_in_config_repr_or_str() -> None:
    aws = AwsSqsConfig(
        access_key_id="AKID",
        secret_access_key=Secret(PLANTED),
        session_token=Secret(PLANTED + "-token"),
    )
    azure_cs = AzureServiceBusConfig(connection_string=Secret(VALID_SAS_KEY))
    azure_sp = AzureServiceBusConfig(
        namespace=AZ_NS,
        credential="client_secret",
        tenant_id="t",
        client_id="c",
        client_secret=Secret(PLANTED),
    )
    for provider in (aws, azure_cs, azure_sp):
        config = QueueConfig(provider=provider)
        for text in (repr(provider), str(provider), repr(config), str(config)):
            assert PLANTED not in text
            assert "***" in text


def test_secrets_from_env_never_appear_in_repr() -> None:
    config = QueueConfig.from_env(
        {
            "QUEUE_PROVIDER": "aws",
            "QUEUE_RUNTIME_AWS_ACCESS_KEY_ID": "AKID",
            "QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY": PLANTED,
        }
    )
    assert PLANTED not in repr(config)
    assert config.provider == AwsSqsConfig(access_key_id="AKID", secret_access_key=Secret(PLANTED))


@pytest.mark.parametrize(
    "build",
    [
        lambda: AwsSqsConfig(secret_access_key=Secret(PLANTED)),
        lambda: AwsSqsConfig(session_token=Secret(PLANTED)),
        lambda: AwsSqsConfig(endpoint_url=f"ftp://user:{PLANTED}@localhost"),
        lambda: AzureServiceBusConfig(namespace=AZ_NS, client_secret=Secret(PLANTED)),
        lambda: AzureServiceBusConfig(
            connection_string=Secret(VALID_SAS_KEY), client_secret=Secret(PLANTED)
        ),
        lambda: AzureServiceBusConfig(connection_string=Secret(VALID_SAS_KEY), namespace=AZ_NS),
        lambda: QueueConfig.from_env(
            {"QUEUE_PROVIDER": "azure", "QUEUE_RUNTIME_AZURE_CONNECTION_STRING": PLANTED}
        ),
        lambda: QueueConfig.from_env(
            {
                "QUEUE_PROVIDER": "aws",
                "QUEUE_RUNTIME_AWS_SECRET_ACCESS_KEY": PLANTED,
                "QUEUE_RUNTIME_AWS_WAIT_TIME": "x",
            }
        ),
    ],
)
def test_secrets_never_appear_in_configuration_errors(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert PLANTED not in error_text(info.value)


def test_a_secret_field_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'provider = "aws"\n[aws]\nsecret_access_key = 73619482\n')
    with pytest.raises(ConfigurationError) as info:
        QueueConfig.from_toml(path)
    assert info.value.field == "aws.secret_access_key"
    assert "73619482" not in error_text(info.value)


# -- reference ------------------------------------------------------------------

SECTIONS: dict[str, type[Any]] = {
    "memory": InMemoryConfig,
    "sqlite": SqliteConfig,
    "aws": AwsSqsConfig,
    "azure": AzureServiceBusConfig,
    "retry": RetryPolicy,
    "circuit_breaker": CircuitBreakerConfig,
    "timeouts": TimeoutConfig,
    "crypto": CryptoConfig,
}


def test_config_reference_lists_every_field_with_its_env_variable() -> None:
    rows = config_reference()
    expected = {"provider"} | {
        f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }
    assert {row[0] for row in rows} == expected
    assert len(rows) == len(expected)
    by_path = {row[0]: row for row in rows}
    assert by_path["provider"][1] == "QUEUE_PROVIDER"
    assert by_path["retry.max_attempts"] == (
        "retry.max_attempts",
        "QUEUE_RUNTIME_RETRY_MAX_ATTEMPTS",
        "int",
        "3",
    )
    assert by_path["aws.endpoint_url"][1] == "QUEUE_RUNTIME_AWS_ENDPOINT_URL"
    assert by_path["timeouts.send"][3] == "10.0"


def _env_text(default: str) -> str:
    if default == "unset":
        return ""
    return default.strip('"')


@pytest.mark.parametrize("provider", ["memory", "aws", "azure"])
def test_reference_defaults_fed_back_through_env_give_the_defaults(provider: str) -> None:
    env = {"QUEUE_PROVIDER": provider}
    for path, variable, _type, default in config_reference()[1:]:
        if path.split(".")[0] in (provider, "retry", "circuit_breaker", "timeouts"):
            env[variable] = _env_text(default)
    if provider == "azure":
        env["QUEUE_RUNTIME_AZURE_CONNECTION_STRING"] = VALID_SAS_KEY
        expected = AzureServiceBusConfig(connection_string=Secret(VALID_SAS_KEY))
    else:
        expected = SECTIONS[provider]()
    assert QueueConfig.from_env(env) == QueueConfig(provider=expected)


# -- property: env values never crash with anything but ConfigurationError ---------

NUMERIC_ROWS = [row for row in config_reference() if row[2] in ("int", "float")]

numeric_text = st.one_of(
    st.text(),
    st.from_regex(r"\s*[-+]?\d{0,6}(\.\d{0,4})?([eE][-+]?\d{1,4})?\s*", fullmatch=True),
    st.sampled_from(["nan", "-inf", "1e400", "0", "-0", "1_000", "9" * 5000, "0x10", "\uff15"]),
)


@given(row=st.sampled_from(NUMERIC_ROWS), value=numeric_text)
def test_random_env_values_for_numeric_fields_load_or_raise_configuration_error(
    row: tuple[str, str, str, str], value: str
) -> None:
    path, variable, _type, _default = row
    env = {"QUEUE_PROVIDER": path.split(".")[0], variable: value}
    if env["QUEUE_PROVIDER"] not in ("memory", "aws", "azure"):
        env["QUEUE_PROVIDER"] = "memory"
    if env["QUEUE_PROVIDER"] == "azure":
        env["QUEUE_RUNTIME_AZURE_NAMESPACE"] = AZ_NS
    error: ConfigurationError | None = None
    try:
        QueueConfig.from_env(env)
    except ConfigurationError as exc:
        error = exc
    if error is not None:
        # Usually the field itself; a cross-field rule may name its partner in the section.
        assert error.field is not None
        assert error.field.split(".")[0] == path.split(".")[0]


# -- sqlite ---------------------------------------------------------------------


def test_sqlite_is_selected_and_configured_from_the_environment() -> None:
    env = {
        "QUEUE_PROVIDER": "sqlite",
        "QUEUE_RUNTIME_SQLITE_PATH": "/var/lib/bot/q.db",
        "QUEUE_RUNTIME_SQLITE_LOCK_DURATION": "12.5",
        "QUEUE_RUNTIME_SQLITE_CREATE_QUEUES": "false",
        "QUEUE_RUNTIME_SQLITE_SYNCHRONOUS": "NORMAL",
        "QUEUE_RUNTIME_SQLITE_SESSION_MODE": "native",
    }

    provider = load_config(env=env).provider

    assert isinstance(provider, SqliteConfig)
    assert (provider.path, provider.lock_duration, provider.create_queues) == (
        "/var/lib/bot/q.db",
        12.5,
        False,
    )
    assert (provider.synchronous, provider.session_mode) == ("normal", "native")


def test_sqlite_is_configured_from_a_toml_table(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    path.write_text('provider = "sqlite"\n[sqlite]\npath = "q.db"\nmax_delivery_count = 9\n')

    provider = load_config(path, env={}).provider

    assert isinstance(provider, SqliteConfig)
    assert (provider.path, provider.max_delivery_count) == ("q.db", 9)


def test_sqlite_defaults_keep_the_file_in_the_working_directory() -> None:
    config = SqliteConfig()

    assert config.path == ".queue-runtime/queues.db"
    assert (config.synchronous, config.create_queues, config.session_mode) == (
        "full",
        True,
        "emulated",
    )


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"path": ""}, "sqlite.path"),
        ({"path": ":memory:"}, "sqlite.path"),
        ({"synchronous": "off"}, "sqlite.synchronous"),
        ({"busy_timeout": -1.0}, "sqlite.busy_timeout"),
        ({"poll_interval": 0.0}, "sqlite.poll_interval"),
        ({"lock_duration": 0.0}, "sqlite.lock_duration"),
        ({"create_queues": "yes"}, "sqlite.create_queues"),
    ],
)
def test_invalid_sqlite_settings_name_their_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SqliteConfig(**settings)

    assert info.value.field == field


# -- renamed settings -------------------------------------------------------------


def test_the_memory_providers_old_auto_create_queues_still_works_and_warns(
    tmp_path: Path,
) -> None:
    with pytest.warns(DeprecationWarning, match="use create_queues"):
        assert InMemoryConfig(auto_create_queues=False).create_queues is False
    path = write_toml(tmp_path, "provider = 'memory'\n[memory]\nauto_create_queues = false\n")
    with pytest.warns(DeprecationWarning, match=r"memory\.auto_create_queues .* use memory\."):
        from_file = load_config(path, env={})
    with pytest.warns(DeprecationWarning, match="QUEUE_RUNTIME_MEMORY_AUTO_CREATE_QUEUES"):
        from_env = load_config(env={"QUEUE_RUNTIME_MEMORY_AUTO_CREATE_QUEUES": "false"})
    with pytest.warns(DeprecationWarning, match=r"load_config\(memory="):
        from_code = load_config(env={}, memory={"auto_create_queues": False})
    for config in (from_file, from_env, from_code):
        assert isinstance(config.provider, InMemoryConfig)
        assert config.provider.create_queues is False
    assert load_config(env={}).provider == InMemoryConfig()  # the default: created on use
