"""A real browser (Debian's Chromium, driven by Playwright) walks the set-up page, posts the
manifest form to "GitHub" and comes back to a configured server."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from bot.setup import build_manifest, load_app_definition
from tests.fakes.github import AppKey, FakeGitHub
from tests.setup.conftest import SETUP_TOKEN, MakeArbiter

DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT_COPY = Path("/tmp/arbiter-setup.png")


def chromium() -> str:
    """Debian's Chromium; never a browser build downloaded by Playwright."""
    found = DEBIAN_CHROMIUM if Path(DEBIAN_CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI needs Debian's chromium for the browser test (.ci/run installs it)")
    pytest.skip("no chromium binary: `apt-get install chromium` to run the browser test")


async def test_a_browser_walks_the_set_up_page_to_github_and_back(
    make_arbiter: MakeArbiter, fake_github: FakeGitHub, app_key: AppKey, tmp_path: Path
) -> None:
    executable = chromium()
    from playwright.async_api import Route, async_playwright

    arbiter = await make_arbiter()
    posts: list[tuple[str, dict[str, object]]] = []

    async def github_creates_the_app(route: Route) -> None:
        """GitHub's side of the form post: take the manifest, create the App, and send the
        browser back to the manifest's redirect URL with a code and the state, as GitHub does
        once someone clicks "Create GitHub App"."""
        request = route.request
        manifest = json.loads(parse_qs(request.post_data or "")["manifest"][0])
        posts.append((request.url, manifest))
        state = parse_qs(urlsplit(request.url).query)["state"][0]
        code = fake_github.add_manifest_code(
            manifest, owner="acme", owner_type="Organization", key=app_key
        )
        back = f"{manifest['redirect_url']}?{urlencode({'code': code, 'state': state})}"
        await route.fulfill(status=302, headers={"Location": back})

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 900})
            await page.route(f"{fake_github.url}/**", github_creates_the_app)

            await page.goto(f"{arbiter.url}/setup?token={SETUP_TOKEN}")
            assert await page.inner_text("h1") == "Create Arbiter's GitHub App"
            await page.fill("#organization", "acme")
            async with page.expect_navigation():
                await page.click("text=Use this owner")
            create = page.locator("#create-app button")
            assert await create.inner_text() == "Create the GitHub App for the organization acme"
            assert "pull_request_review_comment" in await page.inner_text("main")

            screenshot = tmp_path / "setup.png"
            await page.screenshot(path=str(screenshot), full_page=True)
            shutil.copyfile(screenshot, SCREENSHOT_COPY)

            async with page.expect_navigation(url=f"{arbiter.url}/setup/callback?*"):
                await create.click()
            await page.wait_for_load_state()
            assert "is ready" in await page.inner_text("h1")
            install = page.locator("a.button.primary")
            created = fake_github.created_apps[0]
            assert await install.get_attribute("href") == f"{created['html_url']}/installations/new"
            await page.screenshot(path=str(tmp_path / "done.png"), full_page=True)
        finally:
            await browser.close()

    # What the browser posted is the manifest of app.yml, to the organization's new-App page.
    assert len(posts) == 1
    url, manifest = posts[0]
    assert urlsplit(url).path == "/organizations/acme/settings/apps/new"
    assert manifest == build_manifest(load_app_definition(), public_url=arbiter.url)
    assert (tmp_path / ".env").exists() and screenshot.stat().st_size > 10_000
    assert arbiter.runtime.platforms["github"].enabled
