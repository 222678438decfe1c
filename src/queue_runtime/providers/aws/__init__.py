"""The Amazon SQS provider (``pip install 'queue-runtime[aws]'``).

Imported only when an :class:`~queue_runtime.config.AwsSqsConfig` is used, so
``import queue_runtime`` works without aiobotocore.

Example:
    >>> import queue_runtime as qr
    >>> from queue_runtime.providers.aws import SqsProvider
    >>> config = qr.AwsSqsConfig(region="us-east-1", endpoint_url="http://127.0.0.1:5000",
    ...                          access_key_id="test", secret_access_key="test")
    >>> SqsProvider(config)
    SqsProvider(id=..., region='us-east-1', endpoint=custom)
"""

from .provider import MAX_DELIVERY_REASON, TTL_EXPIRED_REASON, SqsProvider, create_provider
from .sessions import SqsSessionReceiver

__all__ = [
    "MAX_DELIVERY_REASON",
    "TTL_EXPIRED_REASON",
    "SqsProvider",
    "SqsSessionReceiver",
    "create_provider",
]
