"""Recovery from a PostgreSQL outage: how long after the database comes back every review that
was in flight carries its final status, with `arbiter serve`'s default worker settings.

    .venv/bin/python -m bench.outage_recovery [--prs 10] [--outage-seconds 10]

Starts a PostgreSQL server of its own (initdb and pg_ctl on a temporary folder and a free port;
as the `postgres` OS user when run as root), a fake GitHub holding N open pull requests, a fake
OpenAI that holds its answers, and `arbiter serve` against them. Sends one `pull_request`
`opened` delivery per pull request; once every review is waiting for the model, stops the
database, lets the answers go, and starts the database again after `--outage-seconds`. Prints
the seconds from the database's return until each pull request's final status, how many were
still "pending" 60 s after it came back (the issue's figure, before the fix: 10 of 10), and what
was posted and paid for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.conftest import fixture_json, github_headers
from tests.e2e.postgres_server import PostgresServer
from tests.e2e.serve import ServeProcess
from tests.e2e.world import wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, Outcome, Reply, finding, findings_in_prompt

REPO = "Codertocat/Hello-World"
PAT = "ghp_" + "c" * 36
SECRET = "bench-secret"


class HeldOpenAI(FakeOpenAI):
    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def _settle(self, reply: Reply, *, since: float | None = None) -> Outcome | None:
        await self.released.wait()
        return await super()._settle(reply, since=since)


def _head(number: int) -> str:
    return f"{number:04d}" * 10


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prs", type=int, default=10)
    parser.add_argument("--outage-seconds", type=float, default=10.0)
    args = parser.parse_args()
    numbers = list(range(2, 2 + args.prs))

    postgres = PostgresServer.create()
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-outage-"))
    key = AppKey.generate()
    openai = HeldOpenAI()
    try:
        postgres.start()
        url = postgres.create_database("arbiter")
        async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github, openai:
            github.add_repo(REPO, installation_id=1)
            for n in numbers:
                code = f"import os\n\n\ndef run(command):\n    return os.system(command)  # {n}\n"
                github.add_pull(
                    REPO, n, files=[PullFile.added(f"pr{n}.py", code)], head_sha=_head(n)
                )
            openai.respond(findings_in_prompt([finding(f"pr{n}.py", 5) for n in numbers]))
            env = {
                "ARBITER_DATABASE_URL": url,
                "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
                "ARBITER_GITHUB_TOKEN": PAT,
                "ARBITER_GITHUB_BASE_URL": github.url,
                "ARBITER_DEFAULT_MODEL": "gpt-4o",
                "ARBITER_LLM_MAX_RETRIES": "0",
                **openai.env(),
            }
            server = ServeProcess(workdir, env)
            server.migrate()
            await server.start()
            try:
                async with aiohttp.ClientSession() as http:
                    for n in numbers:
                        payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
                        payload["number"] = n
                        payload["pull_request"] = github.update_pull(REPO, n)
                        body = json.dumps(payload).encode()
                        headers = github_headers("pull_request", f"d-{n}", body, SECRET)
                        url_hook = f"{server.url}/webhooks/github"
                        async with http.post(url_hook, data=body, headers=headers) as answer:
                            assert answer.status == 202, await answer.text()
                await wait_for(lambda: len(openai.requests) == len(numbers), 120, "the reviews")
                postgres.stop()
                openai.released.set()
                await asyncio.sleep(args.outage_seconds)
                postgres.start()
                back = time.monotonic()
                settled: dict[int, float] = {}
                while len(settled) < len(numbers) and time.monotonic() - back < 180:
                    for n in numbers:
                        found = github.statuses(REPO, _head(n))
                        if n not in settled and found and found[-1]["state"] != "pending":
                            settled[n] = time.monotonic() - back
                    await asyncio.sleep(0.05)
            finally:
                server.stop()
            seconds = sorted(settled.values())
            late = sum(1 for n in numbers if settled.get(n, 1e9) > 60)
            reviews = sum(
                len([r for r in github.reviews(REPO, n) if r["state"] != "PENDING"])
                for n in numbers
            )
            print(f"pull requests in flight:           {len(numbers)}")
            print(f"database outage:                   {args.outage_seconds:g} s")
            print(f"final status after the DB is back: {len(settled)} of {len(numbers)}")
            if seconds:
                print(
                    f"seconds until final (min/median/max): {seconds[0]:.1f} / "
                    f"{seconds[len(seconds) // 2]:.1f} / {seconds[-1]:.1f}"
                )
            print(f"still pending 60 s after:          {late} of {len(numbers)}")
            print(f"reviews posted:                    {reviews} (expected: {len(numbers)})")
            print(f"model calls:                       {len(openai.requests)}")
    finally:
        openai.released.set()
        postgres.destroy()


if __name__ == "__main__":
    asyncio.run(main())
