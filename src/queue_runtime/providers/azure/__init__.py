"""The Azure Service Bus provider (``pip install 'queue-runtime[azure]'``).

Built on the ``azure-servicebus`` ``aio`` API and ``azure.identity.aio``
credentials. The SDK is imported only when this package is, which happens when
a client is created for an :class:`~queue_runtime.config.AzureServiceBusConfig`.

Example:
    >>> import queue_runtime as qr
    >>> async def main() -> None:
    ...     config = qr.AzureServiceBusConfig(namespace="my-bus.servicebus.windows.net")
    ...     async with await qr.create_client(config) as client:
    ...         await client.send_message("events", qr.Message(b"{}", session_id="o/r/pull/1"))
    ...         session = await client.accept_session("events", timeout=5.0)
    ...         if session is not None:
    ...             async with session:
    ...                 if msg := await session.receive_message(timeout=5.0):
    ...                     await session.complete_message(msg.receipt)
"""

from .provider import AzureServiceBusProvider, AzureSessionReceiver, create_provider

__all__ = ["AzureServiceBusProvider", "AzureSessionReceiver", "create_provider"]
