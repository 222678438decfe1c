"""``queue-runtime``: run bots and operate queues from the command line.

Commands (each with ``--help``):

* ``run MODULE:BOT`` — run a bot until SIGTERM/SIGINT, then stop gracefully;
* ``send QUEUE`` — send one message (body from ``--body`` or stdin);
* ``peek QUEUE`` / ``receive QUEUE`` — show messages and give them back, or
  complete them;
* ``dlq list|stats|requeue|purge QUEUE`` — the dead-letter queue;
* ``health QUEUE`` — is the queue reachable, how deep is its DLQ;
* ``demo`` — the demo bot on its own in-memory provider.

Configuration comes from ``--config`` / ``$QUEUE_RUNTIME_CONFIG``, the
environment and ``--provider``, ``--sqlite-path``, ``--endpoint-url``,
``--region``. With none of them naming a provider, commands share the sqlite
file ``./.queue-runtime/queues.db``. The memory provider lives in one process,
so commands cannot share it; :func:`execute` takes a ``client`` for tests and
embedding. Exit codes: :class:`ExitCode`.

Example:
    >>> from queue_runtime.cli import main
    >>> main(["send", "jobs", "--body", "hello", "--message-id", "m-1", "--provider", "memory"])
    sent m-1 to jobs
    0
"""

from .app import build_parser, execute, main
from .output import CliError, ExitCode

__all__ = ["CliError", "ExitCode", "build_parser", "execute", "main"]
