"""The in-memory provider, for tests and local runs.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.memory import InMemoryProvider
    >>> provider = InMemoryProvider(qr.InMemoryConfig(session_mode="native"))
    >>> provider.session_support(qr.QueueName("jobs")).value
    'native'
"""

from .faults import FaultInjector
from .provider import InMemoryProvider, MemorySessionReceiver, QueueStats, create_provider

__all__ = [
    "FaultInjector",
    "InMemoryProvider",
    "MemorySessionReceiver",
    "QueueStats",
    "create_provider",
]


def __getattr__(name: str) -> object:
    """``FaultyProvider`` moved to :mod:`queue_runtime.testing`; forward for one release."""
    if name == "FaultyProvider":
        from . import faults

        return faults.FaultyProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
