"""The test kit for bot authors: run a :class:`~queue_runtime.bot.Bot` on the
in-memory provider under virtual time, with probes, faults and crashes.

* :class:`BotKit` — a bot on the in-memory provider: ``publish``, ``drain``,
  ``crash``/``restart``, ``dead_letters``, ``stats``, ``assert_invariants``;
* :class:`Probe` — a recording, scriptable stand-in for a handler;
* :func:`run` / :func:`virtual_time` — virtual time (waits cost no real time);
* :mod:`~queue_runtime.testing.simulation` — seeded runs that mix publishing,
  latency, faults and crashes, check the invariants and shrink failures;
* a pytest plugin (installed with the package): fixtures ``bot_kit``,
  ``bot_kit_factory`` and ``virtual_time``.

Needs ``pip install 'queue-runtime[testing]'`` (looptime). See docs/testing.md.

Example:
    >>> from queue_runtime.testing import BotKit, run
    >>> async def main() -> list[int]:
    ...     kit = BotKit()
    ...     probe = kit.probe("push").delay(120.0)  # busy when the bot crashes
    ...     async with kit:
    ...         await kit.publish("push", session_id="octo/repo")
    ...         await probe.expect()
    ...         await kit.restart()  # the message stays locked until its lock expires
    ...         await kit.drain()
    ...         kit.assert_invariants()
    ...     return [call.delivery_count for call in probe.events]
    >>> run(main())  # 30 virtual seconds of lock expiry, in milliseconds
    [1, 2]
"""

from queue_runtime.providers.memory.faults import FaultInjector
from queue_runtime.testing.faults import FaultyProvider
from queue_runtime.testing.kit import BotKit, KitStats
from queue_runtime.testing.probes import ANY, Journal, Probe, ProbeEvent, ProbeFailure
from queue_runtime.testing.virtual import VirtualClock, is_virtual, run, virtual_time

__all__ = [
    "ANY",
    "BotKit",
    "FaultInjector",
    "FaultyProvider",
    "Journal",
    "KitStats",
    "Probe",
    "ProbeEvent",
    "ProbeFailure",
    "VirtualClock",
    "is_virtual",
    "run",
    "virtual_time",
]
