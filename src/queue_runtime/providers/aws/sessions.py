"""A session of an SQS FIFO queue: one message group, locked by one receiver.

SQS has no sessions; FIFO message groups give the ordering, and
:class:`~queue_runtime.providers.aws.SqsProvider` adds the rest:

* **Lock.** Exclusive within the provider instance that accepted it, for
  ``visibility_timeout`` seconds, extended by :meth:`SqsSessionReceiver.renew_lock`
  (which also extends the visibility of every message of the session it holds).
  Across processes SQS's group blocking keeps the order: nobody else receives a
  message of the group while one of its messages is in flight here. It does not
  stop another process from receiving the group's *next* message once
  everything held here is settled.
* **Receive.** The session's buffered messages first, in order; else a poll of
  SQS, keeping other groups' messages buffered for later sessions. While a
  message of the session is out, SQS holds back the rest of its group, so
  settle before asking for more than one batch.
* **State.** SQS stores none: :meth:`get_state`/:meth:`set_state` keep it in the
  provider's memory, per queue and session id. It survives closing and
  re-accepting the session in the same process, not a restart and not another
  process.
* **Close.** Releases the session's unsettled and buffered messages
  (visibility 0) so any consumer can take the session at once.

Example:
    >>> # session = await client.accept_session("orders.fifo", timeout=5.0)
    >>> # async with session:
    >>> #     message = await session.receive_message(timeout=5.0)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from queue_runtime.clock import to_datetime
from queue_runtime.errors import ValidationError
from queue_runtime.messages import ReceivedMessage, SessionId

from .inflight import QueueState, SessionLock

if TYPE_CHECKING:
    from .provider import SqsProvider

__all__ = ["SqsSessionReceiver"]


class SqsSessionReceiver:
    """A locked session (message group) of an SQS FIFO queue."""

    def __init__(self, provider: SqsProvider, state: QueueState, lock: SessionLock) -> None:
        self._provider = provider
        self._state = state
        self._lock = lock

    @property
    def session_id(self) -> SessionId:
        return self._lock.session_id

    @property
    def locked_until(self) -> datetime:
        return to_datetime(self._lock.locked_until)

    async def receive(self, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        return await self._provider._session_receive(self._lock, max_messages, timeout)

    async def renew_lock(self) -> datetime:
        return await self._provider._renew_session(self._lock, "renew_session_lock")

    async def get_state(self) -> bytes | None:
        """The session's state in this process (SQS keeps none)."""
        await self._provider._check_session(self._lock, "get_state")
        return self._provider._session_state(self._lock)

    async def set_state(self, state: bytes | None) -> None:
        """Keep ``state`` for this session in this process's memory (``None`` clears it)."""
        await self._provider._check_session(self._lock, "set_state")
        if state is not None and not isinstance(state, bytes):
            raise ValidationError("must be bytes or None", field="state")
        self._provider._set_session_state(self._lock, state)

    async def close(self) -> None:
        """Release the session; its unsettled messages become available again at once."""
        await self._provider._end_session(self._lock, lost=False)

    def __repr__(self) -> str:
        return f"SqsSessionReceiver(queue={self._state.name!r}, session_id={self.session_id!r})"
