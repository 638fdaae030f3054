"""Benchmark: what a lost answer costs. GitHub carries out the review's post and the summary's
post, then the answer is lost (a 502) 0, 1 or 3 times; Arbiter looks for what it made before
sending it again.

    .venv/bin/python bench/lost_answers.py

Against the fake GitHub of tests/fakes (token mode, a clock that sleeps without waiting).
Printed per case: what the pull request shows (reviews, inline comments, summaries), the writes
sent, the reads made, and the backoff slept before looking (ARBITER_INTEGRATION_MAX_RETRIES and
its pauses). Before reconciliation, one lost answer gave two reviews and three gave four.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.logs import configure_logging  # noqa: E402
from config.settings import load_settings  # noqa: E402
from platforms.base import InlineComment  # noqa: E402
from platforms.github import GitHub  # noqa: E402
from tests.fakes.github import FakeGitHub, ManualClock, PullFile  # noqa: E402

REPO = "octo/bench"
PAT = "ghp_" + "b" * 36
PATCH = "@@ -1,2 +1,3 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n"
COMMENTS = [InlineComment("app.py", 2, "b changed"), InlineComment("app.py", 3, "new c")]


async def case(lost: int) -> str:
    clock = ManualClock()
    async with FakeGitHub(token=PAT, clock=clock) as fake, aiohttp.ClientSession() as http:
        fake.add_repo(REPO)
        fake.add_pull(REPO, 1, files=[PullFile("app.py", patch=PATCH)], head_sha="h" * 40)
        settings = load_settings(github_base_url=fake.url, github_token=SecretStr(PAT))
        platform = GitHub(settings, http, clock=clock, sleep=clock.sleep).for_repo(REPO, None)
        pr = await platform.pull_request(1)
        fake.clear_requests()
        for path in (f"/repos/{REPO}/pulls/1/reviews", f"/repos/{REPO}/issues/1/comments"):
            fake.fail("POST", path, 502, times=lost, landed=True)

        await platform.post_review(pr, "Summary", COMMENTS, key="review-1")
        await platform.upsert_comment(pr, "summary", "Reviewed 1 file")

        reviews = len([r for r in fake.reviews(REPO, 1) if r["state"] != "PENDING"])
        inline = len(fake.review_comments(REPO, 1))
        summaries = len(fake.issue_comments(REPO, 1))
        writes = len(fake.requests_to("POST", "*"))
        reads = len(fake.requests_to("GET", "*"))
        slept = sum(clock.sleeps)
        return (
            f"{lost:>4}  {reviews:>7}  {inline:>6}  {summaries:>9}  {writes:>6}  {reads:>5}"
            f"  {slept:>7.1f} s"
        )


async def main() -> None:
    configure_logging(load_settings(log_level="ERROR"))  # the figures, not the retries' log
    print("lost  reviews  inline  summaries  writes  reads  backoff")
    for lost in (0, 1, 3):
        print(await case(lost))


if __name__ == "__main__":
    asyncio.run(main())
