"""Reliability proofs: crash, competing consumers, fault soak, shutdown.

See docs/reliability.md for what each proves, how, and the measured numbers.
"""
