"""The sqlite provider: durable queues in one SQLite file, shared by local processes.

No extra is needed (``sqlite3`` is in the standard library). Select it with
``QUEUE_PROVIDER=sqlite`` or ``SqliteConfig(path=...)``; see
:mod:`.provider` for how it works and what it guarantees.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.sqlite import SqliteProvider
    >>> provider = SqliteProvider(qr.SqliteConfig(path="/tmp/example-queues.db"))
    >>> provider.session_support(qr.QueueName("jobs")).value
    'emulated'
"""

from .provider import SqliteProvider, SqliteSessionReceiver, create_provider
from .schema import APPLICATION_ID, SCHEMA_VERSION, StorageFullError

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "SqliteProvider",
    "SqliteSessionReceiver",
    "StorageFullError",
    "create_provider",
]
