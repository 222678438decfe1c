"""FaultyProvider moved to queue_runtime.testing; the old names keep working for
one release, with a warning that says where it went."""

from __future__ import annotations

import pytest

from queue_runtime import testing


def test_the_old_faults_module_warns_and_forwards_faulty_provider() -> None:
    from queue_runtime.providers.memory import faults

    with pytest.warns(DeprecationWarning, match="queue_runtime.testing.FaultyProvider"):
        old = faults.FaultyProvider

    assert old is testing.FaultyProvider


def test_the_old_package_name_warns_and_forwards_faulty_provider() -> None:
    from queue_runtime.providers import memory

    with pytest.warns(DeprecationWarning, match="queue_runtime.testing.FaultyProvider"):
        old = memory.FaultyProvider

    assert old is testing.FaultyProvider


def test_other_unknown_names_still_fail() -> None:
    from queue_runtime.providers import memory
    from queue_runtime.providers.memory import faults

    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = memory.NoSuchThing
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = faults.NoSuchThing
