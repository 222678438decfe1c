"""The in-memory provider's stateful property test, run on the sqlite provider.

The same random sends, receives, settlements, clock moves and session work,
checked against the same exact model after every step (``tests/memory/
test_memory_state_machine.py``): the sqlite provider hands out the same
messages in the same order and batches, with the same counts, errors and
dead letters, as the reference implementation of the delivery contract.
Each example gets a fresh file; fewer examples than on memory, as each step
is a few transactions.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings

from queue_runtime.config import SqliteConfig
from queue_runtime.messages import ReceivedMessage
from queue_runtime.providers.memory import QueueStats
from queue_runtime.providers.sqlite import SqliteProvider
from tests.memory.test_memory_state_machine import (
    LOCK,
    MAX_DELIVERIES,
    QUEUE,
    SESSION_LOCK,
    MemoryProviderMachine,
)


class SqliteProviderMachine(MemoryProviderMachine):
    def make_provider(self) -> SqliteProvider:
        self.directory = Path(tempfile.mkdtemp(prefix="qr-state-machine-"))
        return SqliteProvider(
            SqliteConfig(
                path=str(self.directory / "queues.db"),
                session_mode=self.session_mode,
                lock_duration=LOCK,
                session_lock_duration=SESSION_LOCK,
                max_delivery_count=MAX_DELIVERIES,
                synchronous="normal",
            ),
            clock=self.clock,
        )

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def sqlite(self) -> SqliteProvider:
        assert isinstance(self.provider, SqliteProvider)
        return self.provider

    def queue_stats(self) -> QueueStats:
        waiting, in_flight, scheduled, dead = self.run(self.sqlite.stats(QUEUE))
        return QueueStats(waiting, in_flight, scheduled, dead)

    def pending_ids(self) -> list[str]:
        self.queue_stats()  # applies what time made due, as the memory provider's reads do
        rows = self.run(
            self.sqlite._call(
                "test",
                lambda: self.sqlite._store.db.execute(
                    "SELECT message_id FROM messages WHERE queue = ? AND dead = 0 "
                    "AND token IS NULL ORDER BY seq",
                    (QUEUE,),
                ).fetchall(),
            )
        )
        return [row[0] for row in rows]

    def dead_letters(self) -> list[ReceivedMessage]:
        return self.run(self.sqlite.peek_dead_letters(QUEUE, 1000))


class SqliteNativeSessionsMachine(SqliteProviderMachine):
    session_mode = "native"


_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestSqliteProviderMatchesModelEmulatedSessions = SqliteProviderMachine.TestCase
TestSqliteProviderMatchesModelEmulatedSessions.settings = _SETTINGS
TestSqliteProviderMatchesModelNativeSessions = SqliteNativeSessionsMachine.TestCase
TestSqliteProviderMatchesModelNativeSessions.settings = _SETTINGS
