"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against `arbiter
serve` after an end-to-end review: sign in, the overview with its charts, the review that the
flow produced with its findings and what it did not review, a dead job retried by an admin,
and a read token that cannot retry. Screenshots: /tmp/arbiter-dashboard.png (the overview) and
/tmp/arbiter-dashboard-review.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN, READ, TOKENS
from tests.e2e.world import REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, ServerError, finding, findings_in_prompt

pytestmark = pytest.mark.e2e

DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
OVERVIEW_COPY = Path("/tmp/arbiter-dashboard.png")
REVIEW_COPY = Path("/tmp/arbiter-dashboard-review.png")

H1, H3, BASE = "a1" * 20, "d4" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
# A model's finding is attacker-steerable text: the page must show it, never run it.
ATTACK = '<img src=x onerror="window.__owned=1"><b>bold?</b>'
SHELL = finding(
    "app.py",
    5,
    severity="critical",
    category="security",
    title="Shell injection",
    body="`shell=True` runs whatever `command` holds; pass a list instead.",
)
HOSTILE = finding("app.py", 4, severity="minor", title=ATTACK, body=f"Body: {ATTACK}")


def chromium() -> str:
    """Debian's Chromium; never a browser build downloaded by Playwright."""
    found = DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI needs Debian's chromium for the browser test (.ci/run installs it)")
    pytest.skip("no chromium binary: `apt-get install chromium` to run the browser test")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token="ghp_" + "e" * 36) as gh:
        gh.add_repo(REPO, installation_id=1)
        gh.add_pull(
            REPO,
            2,
            files=[PullFile.added("app.py", APP), PullFile.added("package-lock.json", "{}\n")],
            head_sha=H1,
            base_sha=BASE,
            title="Run commands",
        )
        gh.add_pull(
            REPO, 3, files=[PullFile.added("other.py", "x = 1\n")], head_sha=H3, base_sha=BASE
        )
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([SHELL, HOSTILE]))
            w = World(tmp_path, gh, openai)
            try:
                yield w
            finally:
                w.stop()


async def test_the_dashboard_shows_what_a_review_did(world: World, tmp_path: Path) -> None:
    executable = chromium()
    from playwright.async_api import Page, async_playwright, expect

    # --- An end-to-end review, then a review whose model always fails (a dead job) ---------
    server = await world.start(
        ARBITER_API_TOKENS=TOKENS,
        ARBITER_DAILY_BUDGET_USD="0.05",
        ARBITER_WORKER_RETRY_ATTEMPTS="0",
    )
    status, _ = await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    assert status == 202
    assert (await world.settled(H1))[-1][0] == "success"
    world.openai.always(ServerError(500))
    await world.deliver("pull_request", world.pull_request_payload(3, "opened"))
    store = await world.store()
    try:

        async def dead() -> bool:
            return any(j.state == "dead" for j in await store.list_jobs(kind="review"))

        await wait_for(dead, timeout=60, what="the failing review to die")
        (review,) = [r for r in await store.list_reviews() if r.number == 2]
        (dead_job,) = await store.list_jobs(state="dead")
    finally:
        await store.close()

    problems: list[str] = []

    def watch(page: Page) -> None:
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
        )

    async def sign_in(page: Page, token: str) -> None:
        await page.goto(f"{server.url}/")
        await page.fill("#token", token)
        await page.click("#sign-in button[type=submit]")
        await page.wait_for_selector("#chart-reviews")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            # --- Admin: the overview ------------------------------------------------------
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            watch(page)
            await page.goto(f"{server.url}/")
            assert await page.is_visible("#sign-in")
            await page.fill("#token", "not-a-token-at-all-0000")
            await page.click("#sign-in button[type=submit]")
            await page.wait_for_selector("#sign-in-status .notice.error")
            assert "not accepted" in await page.inner_text("#sign-in-status")
            problems.clear()  # the refused sign-in logs its 401: that one is expected

            await sign_in(page, ADMIN)
            assert await page.inner_text("#role") == "admin token"
            stored = await page.evaluate("sessionStorage.getItem('arbiter.session')")
            assert ADMIN in stored  # the token lives in this tab's session storage
            assert await page.evaluate("localStorage.length") == 0

            recent = page.locator(f'tr[data-review="{review.id}"]')
            assert "Codertocat/Hello-World #2" in await recent.inner_text()
            assert "1 critical" in await recent.inner_text()
            cards = await page.inner_text("section.cards")
            assert "1 dead" in cards  # queue health
            assert "of $0.0500" in cards  # today's spend against the daily budget
            for chart in ("reviews", "cost", "cache", "budget", "queue", "severity"):
                drawn = await page.evaluate(
                    "(id) => !!Chart.getChart(document.getElementById(id))", f"chart-{chart}"
                )
                assert drawn, chart
            reviews_per_day = await page.evaluate(
                "Chart.getChart(document.getElementById('chart-reviews')).data.datasets[0].data"
            )
            assert sum(reviews_per_day) == 2 and len(reviews_per_day) == 30
            overview = tmp_path / "overview.png"
            shot = await page.screenshot(path=str(overview), full_page=True)
            shutil.copyfile(overview, OVERVIEW_COPY)

            # --- The review the flow produced ---------------------------------------------
            await recent.locator("a").click()
            await page.wait_for_selector("ol.findings")
            assert await page.inner_text("h1") == f"Codertocat/Hello-World #2 review {review.id}"
            titles = await page.locator(".finding-title").all_inner_texts()
            assert titles == ["Shell injection", ATTACK]  # most severe first; markup as text
            assert await page.locator(".findings img, .findings b").count() == 0
            assert await page.evaluate("window.__owned") is None
            body = await page.inner_text("ol.findings")
            assert "pass a list instead" in body and f"Body: {ATTACK}" in body
            not_reviewed = await page.inner_text("table.not-reviewed")
            assert "package-lock.json" in not_reviewed
            pr_link = page.locator("a", has_text="Pull request")
            assert await pr_link.get_attribute("href") == f"{world.github.url}/{REPO}/pull/2"
            facts = await page.inner_text("dl.facts")
            assert "gpt-4o" in facts and f"{review.input_tokens:,} in" in facts
            review_shot = tmp_path / "review.png"
            await page.screenshot(path=str(review_shot), full_page=True)
            shutil.copyfile(review_shot, REVIEW_COPY)

            # --- The reviews list, filtered -----------------------------------------------
            await page.click("nav a[data-route=reviews]")
            await page.wait_for_selector("#filters")
            await page.select_option("#filter-outcome", "error")
            await page.click("#filters button[type=submit]")
            await page.wait_for_url("**/#/reviews?outcome=error")
            # The list renders after its fetch: wait for the filtered rows, not just the table.
            filtered = page.locator("table.reviews tbody tr")
            await expect(filtered).to_have_count(1)
            await expect(filtered.first).to_contain_text("Codertocat/Hello-World #3")

            # --- Repositories -------------------------------------------------------------
            await page.click("nav a[data-route=repos]")
            await page.wait_for_selector("h2:has-text('Installations')")
            assert REPO in await page.inner_text("main")

            # --- A dead job, retried by the admin -----------------------------------------
            asked = len(world.openai.requests)
            await page.click("nav a[data-route=jobs]")
            row = page.locator(f'tr[data-job="{dead_job.id}"]')
            await row.wait_for()
            # The queue view shows recovery: both passes, and why redelivery is off here.
            recovery = await page.inner_text("section.recovery")
            assert (
                "Redeliveries requested" in recovery and "Reviews queued by the sweep" in recovery
            )
            assert "ARBITER_GITHUB_HOOK_IDS" in recovery  # token mode, no webhook ids
            assert "provider" in (await row.inner_text()).lower()
            await row.locator("button[data-retry]").click()
            await page.wait_for_selector(".notice.success")
            assert f"job {dead_job.id} is queued again" in await page.inner_text("main")
            # The job really runs again: the model is asked once more.
            await wait_for(lambda: len(world.openai.requests) > asked, what="the retried job")

            await page.click("#sign-out")
            await page.wait_for_selector("#sign-in")
            assert await page.evaluate("sessionStorage.getItem('arbiter.session')") is None

            # --- A read token sees the same, and cannot retry -----------------------------
            reader = await browser.new_page(viewport={"width": 1280, "height": 900})
            watch(reader)
            await sign_in(reader, READ)
            await reader.goto(f"{server.url}/#/jobs")
            await reader.wait_for_selector("h2:has-text('Dead jobs')")
            assert await reader.locator("button[data-retry]").count() == 0
            assert "read token" in await reader.inner_text("#role")
        finally:
            await browser.close()

    assert problems == []  # no script errors, no Content-Security-Policy violations
    assert len(shot) > 20_000  # a drawn page, not a blank one


async def test_a_server_without_tokens_says_so_on_the_sign_in_page(
    world: World, tmp_path: Path
) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    server = await world.start()  # no ARBITER_API_TOKENS
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{server.url}/")
            await page.wait_for_selector("#sign-in-status .notice.error")
            message = await page.inner_text("#sign-in-status")
            assert "ARBITER_API_TOKENS" in message and "disabled" in message
            await page.fill("#token", ADMIN)
            await page.click("#sign-in button[type=submit]")
            # A locator waits without evaluating a string in the page (its CSP forbids eval).
            await page.locator("#sign-in-status", has_text="disabled").wait_for()
            assert await page.evaluate("sessionStorage.length") == 0
        finally:
            await browser.close()
