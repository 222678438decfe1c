"""Moved: the GitHub event builders are test support.

They are now :mod:`queue_runtime.testing.github_events`; this module forwards
to it for one release, with a :class:`DeprecationWarning`.
"""

import warnings

from queue_runtime.testing.github_events import *  # noqa: F403
from queue_runtime.testing.github_events import __all__  # noqa: F401

warnings.warn(
    "queue_runtime.github.events moved to queue_runtime.testing.github_events; "
    "the old name goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)
