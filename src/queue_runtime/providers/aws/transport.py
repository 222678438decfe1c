"""The SQS requests the provider makes, over one reused aiobotocore client.

:class:`SqsTransport` owns the client (created on first use, with SDK retries
off so the runtime's retry policy governs), resolves and caches queue URLs,
finds a queue's DLQ, and turns every botocore failure into the error tree
(:func:`.errors.map_error`, chained). It keeps no message state; that is
:mod:`.inflight`'s job.

Example:
    >>> import queue_runtime as qr
    >>> dead_letter_queue_name(qr.QueueName("orders.fifo"))
    'orders-dlq.fifo'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Final
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from queue_runtime.config import AwsSqsConfig
from queue_runtime.errors import (
    ConfigurationError,
    QueueError,
    QueueNotFoundError,
    ThrottledError,
    ValidationError,
)
from queue_runtime.messages import QueueName

from .errors import THROTTLING, map_code, map_error
from .inflight import QueueState
from .wire import Outgoing

__all__ = ["MAX_BATCH", "MAX_QUEUE_NAME", "SqsTransport", "dead_letter_queue_name"]

MAX_BATCH: Final = 10
MAX_QUEUE_NAME: Final = 80


def dead_letter_queue_name(name: QueueName) -> str:
    """The conventional DLQ of ``name``: ``{name}-dlq``, or ``{base}-dlq.fifo``."""
    return f"{name.removesuffix('.fifo')}-dlq" + (".fifo" if name.is_fifo else "")


def check_queue_name(name: QueueName, operation: str) -> None:
    """SQS's own limit on top of :class:`QueueName`'s rules."""
    if len(name) > MAX_QUEUE_NAME:
        raise ValidationError(
            f"SQS queue names have at most {MAX_QUEUE_NAME} characters (with .fifo), "
            f"got {len(name)}",
            field="queue",
            operation=operation,
        )


class SqsTransport:
    """One aiobotocore SQS client and the calls made with it."""

    def __init__(self, config: AwsSqsConfig) -> None:
        self.config = config
        hidden = [
            secret.reveal()
            for secret in (config.secret_access_key, config.session_token)
            if secret is not None
        ]
        password = urlsplit(config.endpoint_url).password if config.endpoint_url else None
        if password:
            hidden.append(password)
        self.secrets = tuple(hidden)
        """Values that must never appear in an error (scrubbed by the error mapping)."""
        self.closed = False
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._exit = AsyncExitStack()

    # -- the client ---------------------------------------------------------------------

    async def client(self) -> Any:
        """The aiobotocore client, created on first use."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                if self.closed:
                    raise QueueError("the SQS provider is closed")
                self._client = await self._create()
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def _create(self) -> Any:
        config = self.config
        session = get_session()
        try:
            region = config.region
            if region is None:
                # reads ~/.aws/config: keep that file I/O off the event loop
                region = await asyncio.to_thread(session.get_config_variable, "region")
            secret = config.secret_access_key
            token = config.session_token
            context = session.create_client(
                "sqs",
                region_name=region,
                endpoint_url=config.endpoint_url,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=secret.reveal() if secret is not None else None,
                aws_session_token=token.reveal() if token is not None else None,
                config=AioConfig(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=10,
                    read_timeout=int(config.wait_time) + 30,
                    max_pool_connections=20,
                    # loads the service model in a thread, not on the event loop
                    warm_up_loader_caches=True,
                ),
            )
            return await self._exit.enter_async_context(context)
        except Exception as exc:
            raise map_error(exc, operation="connect", queue=None, secrets=self.secrets) from exc

    async def aclose(self) -> None:
        self.closed = True
        await self._exit.aclose()
        self._client = None

    # -- requests -----------------------------------------------------------------------

    async def call(
        self,
        state: QueueState,
        method: str,
        operation: str,
        *,
        receipt: bool = False,
        message_id: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """One SQS request against ``state``'s queue, errors mapped and chained."""
        client = await self.client()
        url = await self.url(state, operation)
        try:
            response: dict[str, Any] = await getattr(client, method)(QueueUrl=url, **params)
        except Exception as exc:
            if self.closed:
                raise QueueError(
                    "the SQS provider was closed", operation=operation, queue=state.name
                ) from exc
            error = map_error(
                exc,
                operation=operation,
                queue=state.sqs_name,
                message_id=message_id,
                receipt=receipt,
                secrets=self.secrets,
            )
            if isinstance(error, QueueNotFoundError):
                state.url = None
            raise error from exc
        return response

    async def url(self, state: QueueState, operation: str) -> str:
        """The queue's URL (``GetQueueUrl``; cached unless ``cache_queue_urls`` is off)."""
        if state.url is not None:
            return state.url
        client = await self.client()
        try:
            response = await client.get_queue_url(QueueName=state.sqs_name)
        except Exception as exc:
            raise map_error(
                exc, operation=operation, queue=state.sqs_name, secrets=self.secrets
            ) from exc
        url = str(response["QueueUrl"])
        if self.config.cache_queue_urls:
            state.url = url
        return url

    async def dead_letter_state(self, source: QueueState) -> QueueState:
        """The DLQ of ``source``: its RedrivePolicy's target, else the conventional name."""
        found = source.dead_letter_state
        if found is not None and (found.url is not None or not self.config.cache_queue_urls):
            return found
        response = await self.call(
            source, "get_queue_attributes", "dead_letter_queue", AttributeNames=["RedrivePolicy"]
        )
        policy = (response.get("Attributes") or {}).get("RedrivePolicy")
        name: str | None = None
        if policy:
            try:
                arn = str(json.loads(policy).get("deadLetterTargetArn") or "")
            except (ValueError, AttributeError):
                arn = ""
            name = arn.rsplit(":", 1)[-1] or None
        if name is None:
            name = dead_letter_queue_name(source.name)
            if len(name) > MAX_QUEUE_NAME:
                raise ConfigurationError(
                    f"queue {source.name!r} has no RedrivePolicy and its conventional DLQ name "
                    f"would exceed {MAX_QUEUE_NAME} characters; configure a RedrivePolicy",
                    field="queue",
                )
        if found is None or found.sqs_name != name:
            found = QueueState(source.name, name, dead_letter=True)
            source.dead_letter_state = found
        await self.url(found, "dead_letter_queue")
        return found

    async def send(self, state: QueueState, outgoing: Sequence[Outgoing], operation: str) -> None:
        """``SendMessageBatch``; raises naming the message ids SQS rejected, if any."""
        entries = [item.entry(str(i)) for i, item in enumerate(outgoing)]
        response = await self.call(
            state,
            "send_message_batch",
            operation,
            message_id=outgoing[0].message_id if len(outgoing) == 1 else None,
            Entries=entries,
        )
        failed = response.get("Failed") or []
        if failed:
            raise self._send_failure(failed, outgoing, state, operation)

    async def receive(
        self, state: QueueState, count: int, wait: int, visibility: int, operation: str
    ) -> list[dict[str, Any]]:
        """``ReceiveMessage`` with every attribute; an empty list once the transport closed."""
        try:
            response = await self.call(
                state,
                "receive_message",
                operation,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                VisibilityTimeout=visibility,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
        except QueueError:
            if self.closed:
                return []
            raise
        return list(response.get("Messages") or [])

    async def set_visibility(
        self, state: QueueState, changes: Sequence[tuple[str, int]], operation: str
    ) -> set[int]:
        """``ChangeMessageVisibilityBatch`` for (handle, seconds) pairs; the failed indexes."""
        failed: set[int] = set()
        for start in range(0, len(changes), MAX_BATCH):
            chunk = changes[start : start + MAX_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(chunk)
            ]
            response = await self.call(
                state, "change_message_visibility_batch", operation, receipt=True, Entries=entries
            )
            for entry in response.get("Failed") or []:
                with contextlib.suppress(ValueError):
                    failed.add(start + int(str(entry.get("Id"))))
        return failed

    async def delete_batch(
        self, state: QueueState, handles: Sequence[tuple[str, str]], operation: str
    ) -> dict[int, QueueError]:
        """``DeleteMessageBatch`` for up to 10 (handle, message id) pairs; errors by index."""
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, (h, _) in enumerate(handles)]
        response = await self.call(
            state, "delete_message_batch", operation, receipt=True, Entries=entries
        )
        errors: dict[int, QueueError] = {}
        for entry in response.get("Failed") or []:
            try:
                index = int(str(entry.get("Id")))
            except ValueError:
                continue
            errors[index] = self.entry_error(entry, operation, state, handles[index][1], True)
        return errors

    # -- provisioning -------------------------------------------------------------------

    async def create_queue(
        self, name: QueueName, *, max_receive_count: int | None, attributes: Mapping[str, str]
    ) -> str:
        """Create ``name``; with ``max_receive_count``, also its DLQ and a RedrivePolicy."""
        client = await self.client()
        fifo = {"FifoQueue": "true"} if name.is_fifo else {}
        extra = dict(attributes)
        try:
            if max_receive_count is not None:
                dlq = QueueName(dead_letter_queue_name(name))
                check_queue_name(dlq, "create_queue")
                created = await client.create_queue(QueueName=dlq, Attributes=fifo)
                arn = (
                    await client.get_queue_attributes(
                        QueueUrl=created["QueueUrl"], AttributeNames=["QueueArn"]
                    )
                )["Attributes"]["QueueArn"]
                extra["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
                )
            response = await client.create_queue(QueueName=name, Attributes={**fifo, **extra})
        except Exception as exc:
            raise map_error(
                exc, operation="create_queue", queue=name, secrets=self.secrets
            ) from exc
        return str(response["QueueUrl"])

    async def delete_queue(self, name: str) -> None:
        """Delete the SQS queue ``name`` if it exists."""
        client = await self.client()
        try:
            url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
            await client.delete_queue(QueueUrl=url)
        except Exception as exc:
            error = map_error(exc, operation="delete_queue", queue=name, secrets=self.secrets)
            if not isinstance(error, QueueNotFoundError):
                raise error from exc

    # -- batch failures -------------------------------------------------------------------

    def entry_error(
        self,
        entry: Mapping[str, Any],
        operation: str,
        state: QueueState,
        message_id: str | None,
        receipt: bool = False,
    ) -> QueueError:
        """The error for one failed entry of a batch response."""
        return map_code(
            {str(entry.get("Code") or "")} - {""},
            None,
            str(entry.get("Message") or ""),
            operation=operation,
            queue=state.sqs_name,
            message_id=message_id,
            receipt=receipt,
            secrets=self.secrets,
        )

    def _send_failure(
        self,
        failed: Sequence[Mapping[str, Any]],
        outgoing: Sequence[Outgoing],
        state: QueueState,
        operation: str,
    ) -> QueueError:
        """One error for a batch's rejected entries; transient if all were the service's fault."""
        ids: list[str] = []
        for entry in failed:
            try:
                ids.append(outgoing[int(str(entry.get("Id")))].message_id)
            except (ValueError, IndexError):
                ids.append("?")
        throttled = [e for e in failed if str(e.get("Code")) in THROTTLING]
        permanent = [e for e in failed if e.get("SenderFault") and e not in throttled]
        summary = (
            f"SQS rejected {len(failed)} of {len(outgoing)} messages "
            f"(message ids: {', '.join(ids)}); the others were sent"
        )
        first_id = ids[0] if ids else None
        if permanent:
            error = self.entry_error(permanent[0], operation, state, first_id)
            error.message = f"{summary}: {error.message}"
            error.args = (error.message,)
            return error
        codes = sorted({str(e.get("Code")) for e in failed})
        if throttled:
            return ThrottledError(
                f"{summary}: throttled ({', '.join(codes)})",
                operation=operation,
                queue=state.sqs_name,
                message_id=first_id,
            )
        return QueueError(
            f"{summary}: service-side failure ({', '.join(codes)})",
            operation=operation,
            queue=state.sqs_name,
            message_id=first_id,
            transient=True,
        )
