"""Health: is this bot doing its job, and if not, would a restart help?

A :class:`HealthReport` is a list of :class:`CheckResult` s, each Healthy,
Degraded or Unhealthy with a line of detail and a little data; the report is
as bad as its worst check. The statuses mean:

* **Healthy** — working.
* **Degraded** — not doing its job right now, for a reason a restart does not
  fix and that should pass by itself: the provider is unreachable or
  throttling, a circuit breaker is open, dead letters are piling up.
* **Unhealthy** — broken in a way a restart may fix, or that needs a person:
  the receive loop stalled while the provider answers, handlers are
  crash-looping, or the provider refuses the bot for good (missing queue, bad
  credentials, no permission).

So a liveness probe fails only on Unhealthy (``report.live``) and a readiness
probe on anything but Healthy (``report.ready``); :func:`serve_health`
serves both over HTTP.

The checks are plain functions over plain inputs, so a bot (or anything else)
assembles its report from what it knows:

* :func:`probe_queue` + :func:`check_provider` — the provider answers, without
  consuming a message (the provider's optional ``queue_info`` hook, see
  :class:`SupportsQueueInfo`); the probe also reads queue and DLQ depths;
* :func:`check_circuits` — open or half-open breakers;
* :func:`check_receive_stall` — time since the last successful receive;
* :func:`check_handler_restarts` — handler restarts and crash-loop escalation;
* :func:`check_dead_letters` / :class:`DeadLetterWatch` — DLQ depth and growth.

Example:
    >>> from queue_runtime.circuit import CircuitState
    >>> from queue_runtime.health import HealthReport, check_circuits, check_handler_restarts
    >>> report = HealthReport((
    ...     check_circuits({"provider": CircuitState.OPEN}),
    ...     check_handler_restarts(2, escalated=False),
    ... ))
    >>> report.status.label, report.live, report.ready
    ('degraded', True, False)
    >>> [(c.name, c.status.label) for c in report.checks]
    [('circuits', 'degraded'), ('handlers', 'healthy')]
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from queue_runtime.circuit import CircuitBreaker, CircuitState
from queue_runtime.errors import OperationTimeoutError, QueueError
from queue_runtime.messages import QueueName
from queue_runtime.provider import QueueInfo, SupportsQueueInfo
from queue_runtime.telemetry import log_fields

if TYPE_CHECKING:
    from queue_runtime.client import QueueClient

__all__ = [
    "DEFAULT_STALL_THRESHOLD",
    "CheckResult",
    "DeadLetterWatch",
    "HealthReport",
    "HealthServer",
    "HealthStatus",
    "QueueInfo",
    "QueueProbe",
    "SupportsQueueInfo",
    "check_circuits",
    "check_dead_letters",
    "check_handler_restarts",
    "check_provider",
    "check_receive_stall",
    "probe_queue",
    "serve_health",
]

logger = logging.getLogger("queue_runtime.health")

JsonScalar: TypeAlias = str | int | float | bool | None

DEFAULT_STALL_THRESHOLD = 120.0
"""Seconds without a successful receive after which the receive loop counts as stalled."""


class HealthStatus(enum.IntEnum):
    """How well something works; ordered, so the worst of several is their ``max``.

    Example:
        >>> max(HealthStatus.HEALTHY, HealthStatus.DEGRADED).label
        'degraded'
    """

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    @property
    def label(self) -> str:
        """``"healthy"``, ``"degraded"`` or ``"unhealthy"`` (the JSON form)."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check: a status, a line for humans, a few values for machines."""

    name: str
    status: HealthStatus
    detail: str
    data: Mapping[str, JsonScalar] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.label,
            "detail": self.detail,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Several checks; the overall status is the worst of them (Healthy when there are none).

    Example:
        >>> report = HealthReport((CheckResult("handlers", HealthStatus.HEALTHY, "ok"),))
        >>> report.to_json()[:60]
        b'{"status":"healthy","checks":[{"name":"handlers","status":"h'
    """

    checks: tuple[CheckResult, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))

    @property
    def status(self) -> HealthStatus:
        return max((check.status for check in self.checks), default=HealthStatus.HEALTHY)

    @property
    def live(self) -> bool:
        """False only when Unhealthy: restarting the process may help (liveness)."""
        return self.status is not HealthStatus.UNHEALTHY

    @property
    def ready(self) -> bool:
        """True only when Healthy (readiness)."""
        return self.status is HealthStatus.HEALTHY

    def check(self, name: str) -> CheckResult | None:
        """The check called ``name``, if the report has one."""
        return next((check for check in self.checks if check.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.label,
            "checks": [check.to_dict() for check in self.checks],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class QueueProbe:
    """The outcome of :func:`probe_queue`: ``info``, or the ``error`` that stopped it."""

    queue: str
    supported: bool
    """False when the provider has no ``queue_info`` hook (nothing was asked)."""
    info: QueueInfo | None = None
    error: QueueError | None = None
    latency: float = 0.0
    """Seconds the provider took to answer (or to fail)."""

    @property
    def ok(self) -> bool:
        return self.supported and self.error is None


async def probe_queue(client: QueueClient, queue: str, *, timeout: float = 5.0) -> QueueProbe:
    """Ask ``client``'s provider about ``queue`` without consuming a message. Never raises
    (except on cancellation): a failure is returned as ``QueueProbe.error``.

    The call goes straight to the provider, past the client's retries and
    circuit breaker: a probe should neither wait out back-off nor move the
    breaker.

    Example:
        >>> import asyncio
        >>> import queue_runtime as qr
        >>> async def main() -> qr.health.QueueInfo | None:
        ...     async with await qr.create_client(qr.InMemoryConfig()) as client:
        ...         await client.send_message("jobs", qr.Message(b"x"))
        ...         return (await probe_queue(client, "jobs")).info
        >>> asyncio.run(main())
        QueueInfo(depth=1, in_flight=0, dead_letter_depth=0)
    """
    provider = client.provider
    if not isinstance(provider, SupportsQueueInfo):
        return QueueProbe(queue, supported=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    error: QueueError
    try:
        name = QueueName(queue)
        async with asyncio.timeout(timeout):
            info = await provider.queue_info(name)
    except TimeoutError as exc:
        error = OperationTimeoutError(
            f"no answer within {timeout:g} s", operation="queue_info", queue=queue
        )
        error.__cause__ = exc
    except QueueError as exc:
        error = exc.with_context(operation="queue_info", queue=queue)
    except Exception as exc:  # a provider bug must not break the health report
        # only the type: the text of an unmapped SDK error may quote a secret
        logger.warning(
            "queue_info of %r failed unexpectedly: %s",
            queue,
            type(exc).__name__,
            extra=log_fields("queue_info", queue),
        )
        error = QueueError(
            f"unexpected {type(exc).__name__} from the provider", operation="queue_info"
        )
    else:
        return QueueProbe(queue, supported=True, info=info, latency=loop.time() - started)
    return QueueProbe(queue, supported=True, error=error, latency=loop.time() - started)


# -- checks ----------------------------------------------------------------------


def check_provider(probe: QueueProbe) -> CheckResult:
    """The provider answers: Healthy; a transient failure (network, throttling,
    timeout): Degraded; a permanent one (missing queue, credentials,
    permissions): Unhealthy. A provider without the hook is reported Healthy
    with "not probed" (the stall check still notices a dead provider).

    Example:
        >>> from queue_runtime.errors import QueueNotFoundError
        >>> probe = QueueProbe("jobs", supported=True, error=QueueNotFoundError("jobs"))
        >>> check_provider(probe).status.label
        'unhealthy'
    """
    name = "provider"
    if not probe.supported:
        return CheckResult(
            name,
            HealthStatus.HEALTHY,
            "not probed: the provider has no queue_info hook",
            {"probed": False},
        )
    latency_ms = round(probe.latency * 1000, 1)
    error = probe.error
    if error is not None:
        status = HealthStatus.DEGRADED if error.transient else HealthStatus.UNHEALTHY
        return CheckResult(
            name,
            status,
            f"{probe.queue}: {error}",
            {
                "probed": True,
                "error": type(error).__name__,
                "transient": error.transient,
                "latency_ms": latency_ms,
            },
        )
    info = probe.info or QueueInfo()
    return CheckResult(
        name,
        HealthStatus.HEALTHY,
        f"{probe.queue}: reachable in {latency_ms:g} ms",
        {
            "probed": True,
            "latency_ms": latency_ms,
            "depth": info.depth,
            "in_flight": info.in_flight,
            "dead_letter_depth": info.dead_letter_depth,
        },
    )


def check_circuits(circuits: Mapping[str, CircuitBreaker | CircuitState | str]) -> CheckResult:
    """Open or half-open circuit breakers make the bot Degraded, never Unhealthy.

    An open breaker means a dependency (the provider, a handler's downstream)
    is failing; the bot already stops pulling and waits, and restarting it
    would not mend the dependency. Half-open counts as Degraded until the
    probes have closed it. Values may be breakers, states or state strings
    (``bot.stats().circuits``).

    Example:
        >>> check_circuits({"provider": "closed", "Checks": "half_open"}).detail
        'half_open: Checks'
    """
    states = {
        name: value.state if isinstance(value, CircuitBreaker) else CircuitState(value)
        for name, value in circuits.items()
    }
    data: dict[str, JsonScalar] = {name: state.value for name, state in states.items()}
    troubled = {name: s for name, s in states.items() if s is not CircuitState.CLOSED}
    if not troubled:
        return CheckResult("circuits", HealthStatus.HEALTHY, "all closed", data)
    parts = []
    for state in (CircuitState.OPEN, CircuitState.HALF_OPEN):
        names = sorted(name for name, s in troubled.items() if s is state)
        if names:
            parts.append(f"{state.value}: {', '.join(names)}")
    return CheckResult("circuits", HealthStatus.DEGRADED, "; ".join(parts), data)


def check_receive_stall(
    *,
    now: float,
    last_receive: float | None,
    started_at: float,
    threshold: float = DEFAULT_STALL_THRESHOLD,
    provider_ok: bool = True,
) -> CheckResult:
    """The stall watchdog: how long since a receive call last succeeded.

    A receive that returns nothing counts as a success: an idle queue is not a
    stall. Times are seconds on one clock (e.g. the event loop's). Past
    ``threshold`` the bot is Unhealthy — unless ``provider_ok`` is False (the
    provider is failing, or its circuit is open), which explains the silence:
    then Degraded. Before the first successful receive it is Degraded (not
    ready yet), and Unhealthy once ``threshold`` has passed since the start.

    Example:
        >>> check_receive_stall(now=500.0, last_receive=100.0, started_at=0.0).status.label
        'unhealthy'
        >>> check_receive_stall(now=500.0, last_receive=499.0, started_at=0.0).detail
        'last successful receive 1 s ago'
    """
    since = now - (started_at if last_receive is None else last_receive)
    data: dict[str, JsonScalar] = {
        "seconds_since_receive": None if last_receive is None else round(now - last_receive, 1),
        "threshold_s": threshold,
    }
    if since > threshold:
        what = (
            f"no successful receive for {since:.0f} s"
            if last_receive is not None
            else f"no successful receive since the start {since:.0f} s ago"
        )
        if not provider_ok:
            return CheckResult(
                "receive", HealthStatus.DEGRADED, f"{what} (the provider is failing)", data
            )
        return CheckResult(
            "receive", HealthStatus.UNHEALTHY, f"{what}: the receive loop is stalled", data
        )
    if last_receive is None:
        return CheckResult("receive", HealthStatus.DEGRADED, "no successful receive yet", data)
    return CheckResult(
        "receive", HealthStatus.HEALTHY, f"last successful receive {since:.0f} s ago", data
    )


def check_handler_restarts(restarts: int, *, escalated: bool) -> CheckResult:
    """Handler restarts are normal recovery (Healthy); a crash loop that escalated
    (more than ``RestartPolicy.max_restarts`` in its window) is Unhealthy.

    Example:
        >>> check_handler_restarts(12, escalated=True).detail
        'handlers are crash-looping (12 restarts since the start)'
    """
    data: dict[str, JsonScalar] = {"restarts": restarts, "escalated": escalated}
    if escalated:
        return CheckResult(
            "handlers",
            HealthStatus.UNHEALTHY,
            f"handlers are crash-looping ({restarts} restarts since the start)",
            data,
        )
    return CheckResult(
        "handlers", HealthStatus.HEALTHY, f"{restarts} restarts since the start", data
    )


def check_dead_letters(
    depth: int | None,
    *,
    new: int | None = None,
    window: float | None = None,
    max_depth: int | None = None,
    max_new: int = 0,
) -> CheckResult:
    """Dead letters: Degraded when more than ``max_new`` arrived within ``window``
    seconds, or when the DLQ holds more than ``max_depth``; otherwise Healthy.
    Never Unhealthy: poison messages are the messages' problem, not the
    process's. ``depth`` is ``None`` when the provider cannot tell.

    Example:
        >>> check_dead_letters(7, new=2, window=300.0).detail
        '7 dead letters, 2 new in the last 300 s'
    """
    data: dict[str, JsonScalar] = {"depth": depth, "new": new, "window_s": window}
    if depth is None:
        return CheckResult(
            "dead_letters", HealthStatus.HEALTHY, "depth unknown (the provider cannot tell)", data
        )
    detail = f"{depth} dead letters"
    if new is not None and window is not None:
        detail += f", {new} new in the last {window:g} s"
    degraded = (new is not None and new > max_new) or (max_depth is not None and depth > max_depth)
    status = HealthStatus.DEGRADED if degraded else HealthStatus.HEALTHY
    return CheckResult("dead_letters", status, detail, data)


class DeadLetterWatch:
    """Remembers DLQ depths over time to tell how many dead letters are new.

    Growth is the sum of the increases between successive observations in the
    last ``window`` seconds, so a purge in between does not hide new arrivals.
    Keeps at most ``max_samples`` observations.

    Example:
        >>> watch = DeadLetterWatch(window=300.0)
        >>> watch.observe(3, now=0.0).status.label
        'healthy'
        >>> result = watch.observe(5, now=10.0)
        >>> result.status.label, result.data["new"]
        ('degraded', 2)
    """

    def __init__(
        self,
        *,
        window: float = 300.0,
        max_depth: int | None = None,
        max_new: int = 0,
        max_samples: int = 1000,
    ) -> None:
        if not window > 0:
            raise ValueError("window must be positive")
        self.window = window
        self.max_depth = max_depth
        self.max_new = max_new
        self._samples: deque[tuple[float, int]] = deque(maxlen=max_samples)

    def observe(self, depth: int | None, now: float) -> CheckResult:
        """Record ``depth`` (``None``: unknown, not recorded) at time ``now`` and check it."""
        if depth is None:
            return check_dead_letters(None)
        samples = self._samples
        samples.append((now, depth))
        while samples and now - samples[0][0] > self.window:
            samples.popleft()
        depths = [d for _, d in samples]
        new = sum(max(0, later - earlier) for earlier, later in itertools.pairwise(depths))
        return check_dead_letters(
            depth, new=new, window=self.window, max_depth=self.max_depth, max_new=self.max_new
        )


# -- the HTTP endpoint -------------------------------------------------------------

ReportSource: TypeAlias = Callable[[], Awaitable[HealthReport]]
"""Something that builds a fresh report, e.g. ``bot.health``."""

MAX_REQUEST_HEAD = 8192
"""Bytes of request line and headers the endpoint reads; longer requests get 431."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed without an answer."""


@dataclass(frozen=True, slots=True)
class HealthServer:
    """Where :func:`serve_health` listens (``port`` is the bound one, also when 0 was asked)."""

    host: str
    port: int


@contextlib.asynccontextmanager
async def serve_health(
    report: ReportSource, port: int, host: str = "0.0.0.0", *, timeout: float = 10.0
) -> AsyncIterator[HealthServer]:
    """Serve ``GET /healthz`` (liveness) and ``GET /readyz`` (readiness) while in the block.

    Each request calls ``report()`` and answers with its JSON (``HEAD``: the
    same without the body). ``/healthz`` is 200 unless the report is
    Unhealthy, ``/readyz`` is 200 only when it is Healthy; otherwise 503. A
    report that raises or takes longer than ``timeout`` seconds answers 503.
    Other paths get 404, other methods 405, malformed requests 400. A client
    that sends nothing within ``timeout`` is disconnected. Plain asyncio, no
    dependency; every connection task is cancelled and awaited on exit.

    ``host="0.0.0.0"`` (all interfaces) is what Kubernetes probes need; use
    ``"127.0.0.1"`` to keep it local. ``port=0`` picks a free port.

    Example:
        >>> import asyncio
        >>> async def main() -> bytes:
        ...     async def report() -> HealthReport:
        ...         return HealthReport((check_handler_restarts(0, escalated=False),))
        ...     async with serve_health(report, port=0, host="127.0.0.1") as server:
        ...         reader, writer = await asyncio.open_connection(server.host, server.port)
        ...         writer.write(b"GET /readyz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        ...         answer = await reader.read()
        ...         writer.close()
        ...         return answer.split(b"\\r\\n", 1)[0]
        >>> asyncio.run(main())
        b'HTTP/1.1 200 OK'
    """
    connections: set[asyncio.Task[Any]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        connections.add(task)
        try:
            await _answer(reader, writer, report, timeout)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading
        except Exception:  # never let one request disturb the server
            logger.exception("health endpoint: answering a request failed")
        finally:
            connections.discard(task)
            writer.close()

    server = await asyncio.start_server(connected, host, port, limit=MAX_REQUEST_HEAD)
    try:
        bound = server.sockets[0].getsockname()
        yield HealthServer(host, int(bound[1]))
    finally:
        server.close()
        pending = list(connections)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    report: ReportSource,
    timeout: float,
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        await _respond(writer, 431, {"error": "request head too large"})
        return
    except (asyncio.IncompleteReadError, TimeoutError, ValueError):
        return  # nothing sensible came in time: just close
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        await _respond(writer, 400, {"error": "malformed request line"})
        return
    method, target = parts[0], parts[1]
    path = target.split(b"?", 1)[0]
    if path not in (b"/healthz", b"/readyz"):
        await _respond(writer, 404, {"error": "try /healthz or /readyz"})
        return
    if method not in (b"GET", b"HEAD"):
        await _respond(writer, 405, {"error": "use GET"}, allow=True)
        return
    with_body = method == b"GET"
    try:
        async with asyncio.timeout_at(deadline):
            result = await report()
    except TimeoutError:
        await _respond(
            writer, 503, {"status": "unhealthy", "error": "the health report timed out"}, with_body
        )
        return
    except Exception as exc:
        logger.warning("health report failed: %s", type(exc).__name__)
        failure = {
            "status": "unhealthy",
            "error": f"the health report failed: {type(exc).__name__}",
        }
        await _respond(writer, 503, failure, with_body)
        return
    ok = result.live if path == b"/healthz" else result.ready
    await _respond(writer, 200 if ok else 503, result.to_dict(), with_body)


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    payload: Mapping[str, Any],
    with_body: bool = True,
    *,
    allow: bool = False,
) -> None:
    body = orjson.dumps(payload)
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if allow:
        head.append("Allow: GET, HEAD")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
    if with_body:
        writer.write(body)
    async with asyncio.timeout(5.0):
        await writer.drain()
