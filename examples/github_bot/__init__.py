"""A small GitHub triage bot built on queue-runtime: see README.md in this folder."""
