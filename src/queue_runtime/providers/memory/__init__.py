"""The in-memory provider, for tests and local runs.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.memory import InMemoryProvider
    >>> provider = InMemoryProvider(qr.InMemoryConfig(session_mode="native"))
    >>> provider.session_support(qr.QueueName("jobs")).value
    'native'
"""

from .faults import FaultInjector, FaultyProvider
from .provider import InMemoryProvider, MemorySessionReceiver, QueueStats, create_provider

__all__ = [
    "FaultInjector",
    "FaultyProvider",
    "InMemoryProvider",
    "MemorySessionReceiver",
    "QueueStats",
    "create_provider",
]
