"""A moto server that counts the SQS requests it answers, by operation.

The peers benchmark compares consumers built on different HTTP stacks: aiobotocore
(the bot, the raw loop), boto3 (dramatiq), and kombu's own pycurl client for
Celery's receives. Client-side hooks would see only some of those requests, so the
server counts them all: a WSGI middleware in front of moto's application reads the
operation from the ``X-Amz-Target`` header (SQS's JSON protocol, what botocore and
kombu speak today) or the ``Action`` query parameter, and answers two paths of its
own:

* ``GET /_bench/requests``: the counts since the last reset and the seconds spent
  answering, by operation, as JSON;
* ``DELETE /_bench/requests``: the same, and start again from zero.

Run: ``python -m bench.moto_counted -p PORT`` (what :func:`counted_moto_server` does).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

PATH = "/_bench/requests"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]


class Counting:
    """WSGI middleware: count each request by SQS operation, then pass it on."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self.busy: collections.defaultdict[str, float] = collections.defaultdict(float)
        """Seconds spent answering, by operation (moto's own work, waits of long polls too)."""
        self.lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            with self.lock:
                counts = {"requests": dict(self.counts), "seconds": dict(self.busy)}
                if environ.get("REQUEST_METHOD") == "DELETE":
                    self.counts.clear()
                    self.busy.clear()
            body = json.dumps(counts).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        name = operation(environ)
        started = time.perf_counter()
        try:
            return self.app(environ, start_response)
        finally:
            busy = time.perf_counter() - started
            with self.lock:
                self.counts[name] += 1
                self.busy[name] += busy


def operation(environ: Environ) -> str:
    """The SQS operation a request asks for, or ``other``.

    Example:
        >>> operation({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"})
        'ReceiveMessage'
        >>> operation({"QUERY_STRING": "Action=DeleteMessage&QueueUrl=x"})
        'DeleteMessage'
    """
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonSQS."):
        return str(target.removeprefix("AmazonSQS."))
    actions = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    return actions[0] if actions else "other"


def serve(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server sets it: queue URLs
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, Counting(app), threaded=True, request_handler=MotoRequestHandler)


@dataclass(frozen=True, slots=True)
class Served:
    """What the server answered since its last reset, by operation."""

    requests: collections.Counter[str]
    seconds: dict[str, float]
    """Seconds spent answering (long polls that waited included)."""


def served(endpoint: str, *, reset: bool = False) -> Served:
    """The server's counts by operation (``reset``: and start again from zero)."""
    request = urllib.request.Request(endpoint + PATH, method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.loads(response.read())
    return Served(collections.Counter(payload["requests"]), dict(payload["seconds"]))


@contextmanager
def counted_moto_server() -> Iterator[str]:
    """A counting moto server in its own process on a free local port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.moto_counted", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                served(url)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("the counting moto server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
