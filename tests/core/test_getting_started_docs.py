"""docs/getting-started.md works as written: its bot and its tests run."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
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
        assert config.provider.kind in {"sqlite", "aws", "azure"}


def _commands(section: str) -> list[str]:
    """The shell commands of the guide's bash blocks in ``section`` (continuations joined)."""
    text = GUIDE.split(section, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return [block.replace("|\n", "| ").strip() for block in blocks]


@pytest.mark.timeout(120)
def test_the_local_run_in_two_terminals_works_as_written(tmp_path: Path) -> None:
    """A bot started as terminal 1 says handles what terminal 2 sends, through the file."""
    run, send, *_ = _commands("## 4. Run it locally")
    cli = f"{shlex.quote(sys.executable)} -m queue_runtime.cli"
    (tmp_path / "bot.py").write_text(_file("bot.py"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")}
    env["PYTHONUNBUFFERED"] = "1"
    bot = subprocess.Popen(
        run.replace(".venv/bin/queue-runtime", cli),
        shell=True,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        sent = subprocess.run(
            send.replace(".venv/bin/queue-runtime", cli),
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        assert bot.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "label #1 needs-review" not in seen and time.monotonic() < deadline:
            seen += bot.stdout.readline().decode()
    finally:
        os.killpg(bot.pid, signal.SIGTERM)
        bot.wait(timeout=30)

    assert "label #1 needs-review" in seen
    assert (tmp_path / ".queue-runtime" / "queues.db").is_file()
