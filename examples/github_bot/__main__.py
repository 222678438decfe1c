"""Run the triage bot locally on the in-memory provider with a few sample webhooks.

cd examples && ../.venv/bin/python -m github_bot
"""

from __future__ import annotations

import asyncio

import queue_runtime as qr
from queue_runtime.testing import github_events

from github_bot.app import QUEUE, make_bot
from github_bot.github_api import RecordingGitHub

SAMPLES = [
    github_events.pull_request("opened", number=7, repo="octo/app"),
    github_events.issues("opened", number=8, repo="octo/app", title="Bug: crash on start"),
    github_events.issue_comment(number=7, repo="octo/app", on_pull_request=True, body="/hello"),
    github_events.pull_request_review("submitted", number=7, repo="octo/app", state="approved"),
    github_events.push(repo="octo/app"),
]


async def main() -> None:
    github = RecordingGitHub()
    async with await qr.create_client(qr.InMemoryConfig()) as client:
        await client.send_messages(QUEUE, [sample.message() for sample in SAMPLES])
        async with make_bot(client, github) as bot:
            while bot.stats().completed < len(SAMPLES):  # noqa: ASYNC110 - a demo's wait
                await asyncio.sleep(0.01)
    for call in github.calls:
        print(*call)


if __name__ == "__main__":
    asyncio.run(main())
