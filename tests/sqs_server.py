"""A local moto SQS server for the tests: started on first use, stopped at exit.

moto's in-process mock patches botocore's HTTP layer and does not work with
aiobotocore, so the tests talk to a real HTTP server on 127.0.0.1 (a free
port). One server per test process; :func:`reset` wipes its state between tests.
Credentials are dummies passed explicitly, never the machine's.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import urllib.request
from typing import Any

import queue_runtime as qr

REGION = "us-east-1"
_lock = threading.Lock()
_server: Any = None
_endpoint: str | None = None


def endpoint() -> str:
    """The server's URL, starting it on first call."""
    global _server, _endpoint
    with _lock:
        if _endpoint is None:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            _server, _endpoint = server, f"http://{host}:{port}"
            atexit.register(_stop)
        return _endpoint


def _stop() -> None:
    global _server, _endpoint
    with _lock:
        if _server is not None:
            _server.stop()
        _server, _endpoint = None, None


def reset_blocking() -> None:
    """Forget every queue and message on the server (``POST /moto-api/reset``)."""
    request = urllib.request.Request(f"{endpoint()}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def reset() -> None:
    """:func:`reset_blocking` off the event loop."""
    await asyncio.to_thread(reset_blocking)


def config(**overrides: Any) -> qr.AwsSqsConfig:
    """An :class:`AwsSqsConfig` for the local server with dummy credentials."""
    settings: dict[str, Any] = {
        "region": REGION,
        "endpoint_url": endpoint(),
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    settings.update(overrides)
    return qr.AwsSqsConfig(**settings)
