"""``python -m queue_runtime.cli``: the same as the ``queue-runtime`` command."""

from queue_runtime.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
