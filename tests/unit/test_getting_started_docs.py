"""docs/getting-started.md works as written: its bot and its tests run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import queue_runtime as qr

GUIDE = (Path(__file__).parents[2] / "docs" / "getting-started.md").read_text()


def _file(name: str) -> str:
    """The python block of the guide that starts with ``# name``."""
    for block in re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"no python block for {name} in the guide")


@pytest.mark.timeout(120)
def test_the_guides_bot_passes_the_guides_tests(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(_file("bot.py"))
    (tmp_path / "test_bot.py").write_text(_file("test_bot.py"))

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--asyncio-mode=auto", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_guides_configuration_files_load(tmp_path: Path) -> None:
    for block in re.findall(r"```toml\n(.*?)```", GUIDE, re.DOTALL):
        path = tmp_path / "queue.toml"
        path.write_text(block)
        config = qr.load_config(path)
        assert config.provider.kind in {"aws", "azure"}
