"""Worker throughput: how long 100 pull requests take to be reviewed with a 1 s model.

    .venv/bin/python -m bench.worker_throughput [--prs 100] [--model-seconds 1] [--jobs 10]
                                                [--store-url URL]

Starts a fake GitHub holding N open pull requests and a fake OpenAI that answers every review
after `--model-seconds`, runs `arbiter serve` as its own process against both with
ARBITER_WORKER_MAX_JOBS=`--jobs`, sends one signed `pull_request` `opened` delivery per pull
request, and prints the seconds until every pull request carries its final commit status.
The ideal is N × model-seconds / jobs; the issue's target is within 125 % of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from tests.conftest import fixture_json, github_headers
from tests.e2e.serve import ServeProcess
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, Slow, finding, review_answer

REPO = "Codertocat/Hello-World"
PAT = "ghp_" + "b" * 36
SECRET = "bench-secret"


def _payload(github: FakeGitHub, number: int) -> bytes:
    payload = fixture_json("github/webhooks/pull_request/opened.payload.json")
    payload["number"] = number
    payload["pull_request"] = github.update_pull(REPO, number)
    return json.dumps(payload).encode()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prs", type=int, default=100)
    parser.add_argument("--model-seconds", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--store-url", help="default: a fresh SQLite file in a temporary folder")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="arbiter-throughput-"))
    store_url = args.store_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    key = AppKey.generate()
    async with (
        FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github,
        FakeOpenAI(record=False) as openai,
    ):
        github.add_repo(REPO, installation_id=1)
        heads = {}
        for number in range(1, args.prs + 1):
            head = uuid.uuid4().hex + "0" * 8
            github.add_pull(
                REPO,
                number,
                files=[PullFile.added(f"m{number}.py", "def f(x):\n    return eval(x)\n")],
                head_sha=head,
            )
            heads[number] = head
        answer = review_answer(finding(f"m{1}.py", 2))  # same answer for all: findings vary
        openai.always(Slow(args.model_seconds, answer))

        env = {
            "ARBITER_DATABASE_URL": store_url,
            "ARBITER_GITHUB_WEBHOOK_SECRET": SECRET,
            "ARBITER_GITHUB_TOKEN": PAT,
            "ARBITER_GITHUB_BASE_URL": github.url,
            "ARBITER_WORKER_MAX_JOBS": str(args.jobs),
            "ARBITER_LOG_LEVEL": "WARNING",
            **openai.env(),
        }
        server = ServeProcess(workdir, env)
        if not store_url.startswith("sqlite"):
            server.migrate()
        await server.start()
        try:
            bodies = {n: _payload(github, n) for n in heads}
            started = time.perf_counter()
            async with aiohttp.ClientSession() as http:
                for number, body in bodies.items():
                    headers = github_headers("pull_request", str(uuid.uuid4()), body, SECRET)
                    async with http.post(
                        f"{server.url}/webhooks/github", data=body, headers=headers
                    ) as response:
                        if response.status != 202:
                            raise SystemExit(f"delivery {number}: {response.status}")
            sent = time.perf_counter() - started
            while True:
                final = sum(
                    1
                    for head in heads.values()
                    if (s := github.statuses(REPO, head)) and s[-1]["state"] != "pending"
                )
                if final == len(heads):
                    break
                if time.perf_counter() - started > 600:
                    raise SystemExit(f"only {final} of {len(heads)} reviewed after 600 s")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            server.stop()
        states = {github.statuses(REPO, head)[-1]["state"] for head in heads.values()}
    ideal = args.prs * args.model_seconds / args.jobs
    print(f"store            {store_url.split('://')[0]}")
    print(f"pull requests    {args.prs}, one {args.model_seconds:g} s model call each")
    print(f"workers          ARBITER_WORKER_MAX_JOBS={args.jobs}")
    print(f"deliveries sent  in {sent:.2f} s")
    print(f"all reviewed     in {elapsed:.2f} s (final statuses: {sorted(states)})")
    print(f"ideal            {ideal:.2f} s; took {elapsed / ideal:.0%} of it")
    print(json.dumps({"seconds": round(elapsed, 2), "ideal": ideal, "ratio": elapsed / ideal}))


if __name__ == "__main__":
    asyncio.run(main())
