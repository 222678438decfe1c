"""The GitHub event builders moved to queue_runtime.testing.github_events; the old
module keeps working for one release, with a warning that says where they went."""

from __future__ import annotations

import importlib
import sys

import pytest

from queue_runtime.testing import github_events


def test_the_old_module_warns_and_forwards_the_builders() -> None:
    sys.modules.pop("queue_runtime.github.events", None)
    with pytest.warns(DeprecationWarning, match="queue_runtime.testing.github_events"):
        old = importlib.import_module("queue_runtime.github.events")

    assert old.pull_request is github_events.pull_request
    assert sorted(old.__all__) == sorted(github_events.__all__)
    assert old.issues("opened", number=7, repo="o/r").message().session_id == "o/r/issues/7"
