"""Fixtures for the SQS adapter tests: a fresh moto server state and a provider per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiobotocore.awsrequest import AioAWSResponse

import queue_runtime as qr
from queue_runtime.providers.aws import SqsProvider
from tests import sqs_server

VISIBILITY = 2.0
MAX_DELIVERIES = 3


def make_provider(**overrides: Any) -> SqsProvider:
    settings: dict[str, Any] = {
        "visibility_timeout": VISIBILITY,
        "max_delivery_count": MAX_DELIVERIES,
    }
    settings.update(overrides)
    return SqsProvider(sqs_server.config(**settings))


def make_client(provider: SqsProvider) -> qr.QueueClient:
    config = qr.QueueConfig(
        provider=provider.config, retry=qr.RetryPolicy(initial_delay=0.05, max_delay=0.2)
    )
    return qr.QueueClient(provider, config)


@pytest.fixture
async def provider() -> AsyncIterator[SqsProvider]:
    await sqs_server.reset()
    chosen = make_provider()
    try:
        yield chosen
    finally:
        await chosen.aclose()


@pytest.fixture
async def client(provider: SqsProvider) -> AsyncIterator[qr.QueueClient]:
    chosen = make_client(provider)
    try:
        yield chosen
    finally:
        await chosen.aclose()


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self) -> bytes:
        return self._body


def fake_response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    """A canned HTTP response for a ``before-send`` hook (the request never leaves)."""

    def hook(request: Any, **_: Any) -> AioAWSResponse:
        return AioAWSResponse(request.url, status, headers or {}, _Body(body))

    return hook


async def record_calls(provider: SqsProvider) -> list[str]:
    """The SQS operations the provider calls from now on, in order."""
    calls: list[str] = []
    sqs = await provider.client()

    def note(model: Any, **_: Any) -> None:
        calls.append(str(model.name))

    sqs.meta.events.register("before-call.sqs", note)
    return calls


async def record_receive_waits(provider: SqsProvider) -> list[int]:
    """The ``WaitTimeSeconds`` of each ``ReceiveMessage`` the provider makes from now on."""
    waits: list[int] = []
    sqs = await provider.client()

    def note(params: dict[str, Any], **_: Any) -> None:
        waits.append(int(params.get("WaitTimeSeconds", 0)))

    sqs.meta.events.register("before-parameter-build.sqs.ReceiveMessage", note)
    return waits


async def inject(
    provider: SqsProvider, operation: str, hook: Callable[..., Any], *, times: int = 1
) -> None:
    """Answer the next ``times`` calls of ``operation`` with ``hook`` instead of the server."""
    sqs = await provider.client()
    left = [times]

    def once(request: Any, **kwargs: Any) -> Any:
        if left[0] <= 0:
            return None
        left[0] -= 1
        return hook(request=request, **kwargs)

    sqs.meta.events.register_first(f"before-send.sqs.{operation}", once)
