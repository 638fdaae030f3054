"""What recovery costs in API calls: the redelivery pass and the reconcile sweep, counted.

    .venv/bin/python -m bench.recovery_cost [--repos 100] [--pulls 5] [--deliveries 600]
                                            [--failed 5] [--updated 10]

A GitHub App installed on `--repos` repositories, each with `--pulls` open pull requests whose
heads were reviewed, and an Arbiter (in this process, on a SQLite store) that knows them. The
fake GitHub counts every request. Printed: the calls of each pass in three situations (the
first pass, a pass when nothing changed, a pass after `--deliveries` deliveries of which
`--failed` failed and `--updated` pull requests moved), how many of them GitHub charges to the
rate limit (a 304 to a conditional request is free), and the calls per hour at the default
intervals (a redelivery pass every 300 s, a sweep every 3600 s), to set beside the formula of
docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp.test_utils import TestServer

from bot.app import create_app
from bot.logs import configure_logging
from bot.recovery import Recovery, RecoveryParts, Tally
from bot.runtime import Runtime
from config.settings import load_settings
from tests.fakes.github import AppKey, FakeGitHub, RecordedRequest

SECRET = "bench-secret"
OWNER = "bench"


def _kinds(requests: list[RecordedRequest]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in requests:
        if r.path.startswith("/app/installations/"):
            kind = "token"
        elif r.path.startswith("/app/hook/deliveries") and r.method == "GET":
            kind = "list deliveries"
        elif r.path.startswith("/app/hook/deliveries"):
            kind = "redeliver"
        elif r.path.endswith("/pulls") and r.method == "GET":
            kind = "list pull requests"
        else:
            kind = f"{r.method} other"
        counts[kind] += 1
        if r.status == 304:
            counts["(of them 304, free)"] += 1
    return counts


def _payload(repo: str, number: int) -> dict[str, object]:
    return {
        "action": "opened",
        "number": number,
        "pull_request": {"number": number},
        "repository": {"full_name": repo, "id": number},
        "installation": {"id": 1},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--pulls", type=int, default=5, help="open pull requests per repository")
    parser.add_argument("--deliveries", type=int, default=600, help="new deliveries, third pass")
    parser.add_argument("--failed", type=int, default=5, help="of them, failed")
    parser.add_argument("--updated", type=int, default=10, help="pull requests moved, third pass")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="arbiter-recovery-cost-"))
    key = AppKey.generate()
    async with FakeGitHub(app_id="7", public_key=key.public_pem) as github:
        repos = [f"{OWNER}/repo-{i}" for i in range(args.repos)]
        for repo in repos:
            github.add_repo(repo, installation_id=1)
            for number in range(1, args.pulls + 1):
                github.add_pull(repo, number)
        settings = load_settings(
            database_url=f"sqlite+aiosqlite:///{workdir}/bench.db",
            github_app_id="7",
            github_private_key=key.private_pem,
            github_webhook_secret=SECRET,
            github_base_url=github.url,
            log_level="WARNING",
        )
        configure_logging(settings)
        runtime = Runtime(settings)
        await runtime.start()
        server = TestServer(create_app(runtime), host="127.0.0.1")
        await server.start_server()
        github.set_app_webhook(str(server.make_url("/webhooks/github")), SECRET)
        store = runtime.store
        await store.note_repositories("github", repos, installation_id=1)
        for repo in repos:  # every head reviewed already
            for number in range(1, args.pulls + 1):
                head = github.update_pull(repo, number)["head"]["sha"]
                await store.update_pr_state("github", repo, number, last_reviewed_head=head)
        recovery = Recovery(
            RecoveryParts(
                settings=lambda: runtime.settings,
                store=store,
                router=runtime.router,
                metrics=runtime.metrics,
                github=lambda: runtime.github,
                gitlab=lambda: None,
                notify=lambda: None,
            )
        )

        async def measure(name: str) -> tuple[Counter[str], Counter[str], float]:
            results = []
            for run in (recovery.redelivery.run, recovery.reconcile.run):
                github.clear_requests()
                started = time.perf_counter()
                await run(Tally())
                await github.sent()
                took = time.perf_counter() - started
                results.append((_kinds(github.requests), took))
            (delivery_calls, d_time), (sweep_calls, s_time) = results
            print(f"\n{name}")
            print(f"  redelivery pass ({d_time:.2f} s): {dict(delivery_calls)}")
            print(f"  reconcile sweep ({s_time:.2f} s): {dict(sweep_calls)}")
            return delivery_calls, sweep_calls, d_time + s_time

        print(
            f"{args.repos} repositories x {args.pulls} open pull requests, one installation; "
            f"{args.deliveries} deliveries ({args.failed} failed) and {args.updated} pull "
            "requests moved before the third pass"
        )
        await measure("1. first pass (no marks yet)")
        await measure("2. nothing changed since")
        for i in range(args.deliveries):
            repo = repos[i % len(repos)]
            status = 502 if i < args.failed else 202
            github.record_delivery("pull_request", _payload(repo, 1), status_code=status)
        for i in range(args.updated):
            github.update_pull(repos[i % len(repos)], 1 + i // len(repos), title=f"moved {i}")
            github.update_pull(repos[i % len(repos)], 1 + i // len(repos), head_sha=f"{i:040x}")
        redelivery, sweep, _ = await measure("3. after the traffic of one interval")

        def charged(calls: Counter[str]) -> int:
            total = sum(n for k, n in calls.items() if not k.startswith("("))
            return total - calls["(of them 304, free)"]

        per_hour = 12 * charged(redelivery) + 1 * charged(sweep)
        print(
            "\nper hour at the default intervals, with the traffic of pass 3 in every 5 minutes "
            f"and the moves of pass 3 in every hour: {12 * charged(redelivery)} (12 redelivery "
            f"passes) + {charged(sweep)} (1 sweep) = {per_hour} calls charged to the rate limit"
        )
        await server.close()
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
