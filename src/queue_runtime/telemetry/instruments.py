"""The instruments of one meter, and the live values the observed gauges report.

Example:
    >>> from queue_runtime.telemetry import Telemetry
    >>> observed = Telemetry("memory").observe("orders", active_sessions=lambda: 2)
    >>> observed.close()
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from queue_runtime.telemetry.conventions import (
    ABANDONED,
    ACTIVE_SESSIONS,
    CIRCUIT,
    CIRCUIT_STATE,
    CIRCUIT_VALUES,
    COMPLETED,
    CONSUMED,
    DEAD_LETTERED,
    DURATION_BUCKETS,
    IN_FLIGHT,
    INSTRUMENTATION_NAME,
    OPERATION_DURATION,
    PACKAGE_VERSION,
    PROCESS_DURATION,
    RETRIES,
    SENT,
)
from queue_runtime.telemetry.logs import log_fields

logger = logging.getLogger("queue_runtime.telemetry")
"""Named after the package: callback failures are its records."""


class Observed:
    """A registration of live values for the observed gauges; :meth:`close` ends it."""

    def __init__(
        self,
        instruments: _Instruments,
        attributes: Mapping[str, str],
        active_sessions: Callable[[], int] | None,
        in_flight: Callable[[], int] | None,
        circuits: Callable[[], Mapping[str, str]] | None,
    ) -> None:
        self._instruments = instruments
        self.attributes = attributes
        self.active_sessions = active_sessions
        self.in_flight = in_flight
        self.circuits = circuits

    def close(self) -> None:
        """Stop reporting these values (idempotent)."""
        self._instruments.forget(self)


class _Instruments:
    """The instruments of one meter. Observed gauges are created once, here, because
    an SDK keeps only the first callbacks registered under an instrument name."""

    def __init__(self, meter: Meter) -> None:
        self.sent = meter.create_counter(
            SENT, "{message}", "Messages the client tried to send (error.type if it failed)."
        )
        self.consumed = meter.create_counter(
            CONSUMED, "{message}", "Messages delivered to the application by receive calls."
        )
        self.operation_duration = meter.create_histogram(
            OPERATION_DURATION,
            "s",
            "Duration of each provider call (each attempt; retries are counted apart).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.process_duration = meter.create_histogram(
            PROCESS_DURATION,
            "s",
            "Duration of processing one message, handler attempts and settlement included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.settled = {
            COMPLETED: meter.create_counter(COMPLETED, "{message}", "Messages completed."),
            ABANDONED: meter.create_counter(ABANDONED, "{message}", "Messages abandoned."),
            DEAD_LETTERED: meter.create_counter(
                DEAD_LETTERED,
                "{message}",
                "Messages moved to the dead-letter queue (error.type: the reason).",
            ),
        }
        self.retries = meter.create_counter(
            RETRIES, "{retry}", "Retries of failed provider calls and handler attempts."
        )
        self._observed: tuple[Observed, ...] = ()
        meter.create_observable_up_down_counter(
            ACTIVE_SESSIONS, [self._sessions], "{session}", "Session actors alive."
        )
        meter.create_observable_up_down_counter(
            IN_FLIGHT, [self._in_flight], "{message}", "Messages received and not yet settled."
        )
        meter.create_observable_gauge(
            CIRCUIT_STATE,
            [self._circuits],
            "",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        )

    def observe(self, observed: Observed) -> None:
        self._observed = (*self._observed, observed)  # copied: callbacks run on other threads

    def forget(self, observed: Observed) -> None:
        self._observed = tuple(o for o in self._observed if o is not observed)

    def _sessions(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._count(lambda o: o.active_sessions)

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._count(lambda o: o.in_flight)

    def _count(self, pick: Callable[[Observed], Callable[[], int] | None]) -> Iterable[Observation]:
        observations = []
        for observed in self._observed:
            read = pick(observed)
            if read is None:
                continue
            try:
                observations.append(Observation(read(), observed.attributes))
            except Exception:
                logger.exception("a telemetry callback failed", extra=log_fields("observe"))
        return observations

    def _circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for observed in self._observed:
            if observed.circuits is None:
                continue
            try:
                states = dict(observed.circuits())
            except Exception:
                logger.exception("a telemetry callback failed", extra=log_fields("observe"))
                continue
            for name, state in states.items():
                value = CIRCUIT_VALUES.get(str(state))
                if value is not None:
                    observations.append(Observation(value, {**observed.attributes, CIRCUIT: name}))
        return observations


_global_instruments: _Instruments | None = None
_instruments_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def instruments_of(meter_provider: MeterProvider | None) -> _Instruments:
    """One set of instruments per meter provider (the global one when ``None``)."""
    global _global_instruments
    if meter_provider is None:
        if _global_instruments is None:
            # the API's proxy meter when no SDK is set yet: it binds to the SDK later
            _global_instruments = _Instruments(
                metrics.get_meter(INSTRUMENTATION_NAME, PACKAGE_VERSION)
            )
        return _global_instruments
    found = _instruments_by_provider.get(meter_provider)
    if found is None:
        found = _Instruments(meter_provider.get_meter(INSTRUMENTATION_NAME, PACKAGE_VERSION))
        _instruments_by_provider[meter_provider] = found
    return found
