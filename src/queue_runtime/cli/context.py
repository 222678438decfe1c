"""What every command gets: its arguments, the output, and a client built on demand.

The configuration comes from ``--config`` (or ``$QUEUE_RUNTIME_CONFIG``), the
environment, and the provider options (``--provider``, ``--sqlite-path``,
``--endpoint-url``, ``--region``), in that order of precedence (lowest first).
When none of them selects a provider, the command line uses the sqlite provider
on ``./.queue-runtime/queues.db`` (:data:`DEFAULT_PROVIDER`): separate commands
then share their queues, and nothing is lost between them. The client is
created the first time a command asks for it, and closed when the command
ends — unless one was given to :func:`~queue_runtime.cli.execute`, which the
caller keeps owning.

Example:
    >>> import argparse, asyncio
    >>> from queue_runtime.cli.context import Context
    >>> from queue_runtime.cli.output import Output
    >>> args = argparse.Namespace(config=None, provider="memory", endpoint_url=None, region=None,
    ...                           sqlite_path=None)
    >>> asyncio.run(Context(args, Output()).config()).provider.kind
    'memory'
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from queue_runtime.client import QueueClient, create_client
from queue_runtime.config import QueueConfig, load_config

from .output import CliError, Output

__all__ = ["DEFAULT_PROVIDER", "Context"]

DEFAULT_PROVIDER = "sqlite"
"""The command line's provider when the configuration names none (the library's is
memory): commands run one after another, in separate processes, and must see each
other's queues."""

MEMORY_NOTE = (
    "note: the memory provider keeps its queues in this process only; "
    "nothing is shared with other processes or kept after exit"
)


class Context:
    """One command's arguments, output, configuration and client."""

    def __init__(
        self, args: argparse.Namespace, output: Output, client: QueueClient | None = None
    ) -> None:
        self.args = args
        self.output = output
        self.injected = client is not None
        """True when the caller supplied the client (options then do not apply)."""
        self._client = client
        self._owned: QueueClient | None = None
        self._config: QueueConfig | None = None

    async def config(self) -> QueueConfig:
        """The configuration: file < environment < command-line options."""
        if self._config is None:
            args = self.args
            overrides: dict[str, Any] = {}
            if args.provider is not None:
                overrides["provider"] = args.provider
            aws = {
                name: value
                for name, value in (("endpoint_url", args.endpoint_url), ("region", args.region))
                if value is not None
            }
            if aws:
                overrides["aws"] = aws
            sqlite_path = getattr(args, "sqlite_path", None)
            if sqlite_path is not None:
                overrides["sqlite"] = {"path": sqlite_path}
            # reading the file is blocking I/O: keep it off the event loop
            config = await asyncio.to_thread(
                load_config, args.config, default_provider=DEFAULT_PROVIDER, **overrides
            )
            if aws and config.provider.kind != "aws":
                raise CliError(
                    "--endpoint-url and --region apply to the aws provider, but the provider is "
                    f"{config.provider.kind!r} (use --provider aws or QUEUE_PROVIDER=aws)"
                )
            if sqlite_path is not None and config.provider.kind != "sqlite":
                raise CliError(
                    "--sqlite-path applies to the sqlite provider, but the provider is "
                    f"{config.provider.kind!r} (use --provider sqlite or QUEUE_PROVIDER=sqlite)"
                )
            self._config = config
        return self._config

    async def client(self) -> QueueClient:
        """The client for this command (built from :meth:`config` on first use)."""
        if self._client is None:
            config = await self.config()
            if config.provider.kind == "memory":
                self.output.note(MEMORY_NOTE)
            self._client = self._owned = await create_client(config)
        return self._client

    def location(self) -> str:
        """`` in <file>`` when this command's client keeps its queues in a file, else ``""``."""
        path = getattr(self._client.provider, "path", None) if self._client else None
        return f" in {path}" if isinstance(path, str) else ""

    async def aclose(self) -> None:
        """Close the client if this context created it."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.aclose()
