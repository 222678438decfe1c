"""Message encryption settings: :class:`CryptoConfig` and :class:`PlaintextPolicy`."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from queue_runtime.crypto.envelope import VERSION, VERSIONS
from queue_runtime.errors import ConfigurationError

__all__ = ["CryptoConfig", "PlaintextPolicy"]


class PlaintextPolicy(enum.Enum):
    """What a client with encryption enabled does with a body that is not an envelope.

    ``ALLOW`` delivers it and logs a warning; ``ALLOW_WITH_ALERT`` delivers it,
    logs an error and counts it (``CryptoStats.plaintext_alerts``); ``REJECT``
    refuses it with :class:`~queue_runtime.errors.UnencryptedMessageError`.
    """

    ALLOW = "allow"
    ALLOW_WITH_ALERT = "allow_with_alert"
    REJECT = "reject"


def _seconds(value: object, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigurationError("expected a number of seconds", field=path)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError("must be a finite number greater than 0", field=path)


@dataclass(frozen=True, slots=True)
class CryptoConfig:
    """Message encryption settings (``[crypto]`` in TOML, ``QUEUE_RUNTIME_CRYPTO_*``).

    Keys are not part of the configuration: pass a :class:`KeyProvider` to the
    client, or let :func:`~queue_runtime.client.create_client` read them from
    ``QUEUE_RUNTIME_ENCRYPTION_KEYS`` (:class:`EnvKeyProvider`).

    ``envelope_version`` is the format new envelopes are written in: 2 (the
    default) authenticates the message id, 1 is the first format, without
    it. Both are read. Write 1 only during a rolling upgrade, while consumers
    that read only version 1 still run.

    ``max_message_age`` and ``max_clock_skew`` bound how old, and how far in
    the future, an envelope's timestamp may be (seconds). With ``track_nonces``
    each client remembers the nonces it accepted for ``nonce_cache_ttl``
    seconds (at most ``nonce_cache_size`` of them, oldest evicted first) and
    rejects a repeat as a replay; keep the TTL at least
    ``max_message_age + max_clock_skew`` so that freshness covers what the
    cache forgot. The cache is per client: replays across processes are not
    detected.

    Example:
        >>> from queue_runtime.crypto import CryptoConfig, PlaintextPolicy
        >>> config = CryptoConfig(enabled=True, plaintext_policy=PlaintextPolicy.REJECT)
        >>> config.max_message_age, config.max_clock_skew, config.track_nonces
        (300.0, 60.0, False)
    """

    enabled: bool = False
    plaintext_policy: PlaintextPolicy = PlaintextPolicy.ALLOW
    max_message_age: float = 300.0
    max_clock_skew: float = 60.0
    validate_freshness: bool = True
    track_nonces: bool = False
    nonce_cache_ttl: float = 600.0
    nonce_cache_size: int = 100_000
    envelope_version: int = VERSION

    def __post_init__(self) -> None:
        for name in ("enabled", "validate_freshness", "track_nonces"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError("expected a boolean", field=f"crypto.{name}")
        if not isinstance(self.plaintext_policy, PlaintextPolicy):
            raise ConfigurationError(
                "expected one of: " + ", ".join(p.value for p in PlaintextPolicy),
                field="crypto.plaintext_policy",
            )
        _seconds(self.max_message_age, "crypto.max_message_age")
        _seconds(self.max_clock_skew, "crypto.max_clock_skew")
        _seconds(self.nonce_cache_ttl, "crypto.nonce_cache_ttl")
        size = self.nonce_cache_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigurationError(
                "must be an integer of at least 1", field="crypto.nonce_cache_size"
            )
        version = self.envelope_version
        if isinstance(version, bool) or version not in VERSIONS:
            raise ConfigurationError(
                "must be one of: " + ", ".join(map(str, sorted(VERSIONS))),
                field="crypto.envelope_version",
            )
