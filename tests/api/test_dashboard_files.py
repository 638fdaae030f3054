"""The dashboard's files: served as they are, safe by construction, the vendored chart library
what its README says it is."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bot.api.dashboard import CONTENT_SECURITY_POLICY, DASHBOARD_DIR
from tests.api.conftest import MakeApi

VENDOR = DASHBOARD_DIR / "vendor"
SCRIPTS = sorted(p for p in DASHBOARD_DIR.glob("*.js"))


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.found.append(value)


def _references() -> list[str]:
    reader = _References()
    reader.feed((DASHBOARD_DIR / "index.html").read_text())
    return reader.found


def test_the_page_loads_only_its_own_files_by_relative_paths() -> None:
    """Relative paths: the same files work at /, below a prefix, and on any static host."""
    references = _references()
    assert {"config.js", "app.js", "style.css", "vendor/chart.umd.min.js"} <= set(references)
    for ref in references:
        assert not ref.startswith(("/", "http:", "https:", "//")), ref
        assert (DASHBOARD_DIR / ref).is_file(), ref


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_of_ours_parses_text_as_html(script: Path) -> None:
    text = script.read_text()
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "srcdoc")
    for sink in sinks:
        assert sink not in text, f"{script.name} uses {sink}"
    assert not re.search(r"new\s+Function\s*\(", text)


def test_the_api_base_url_defaults_to_the_serving_server() -> None:
    config = (DASHBOARD_DIR / "config.js").read_text()
    assert re.search(r'apiBaseUrl:\s*""', config)


def test_the_vendored_chart_library_is_what_its_readme_says() -> None:
    library = VENDOR / "chart.umd.min.js"
    readme = (VENDOR / "README.md").read_text()
    header = library.read_text()[:200]
    version = re.search(r"Chart\.js v(\d+\.\d+\.\d+)", header)
    assert version is not None and "Released under the MIT License" in header
    assert f"**{version.group(1)}**" in readme
    assert f"chart.js@{version.group(1)}" in readme
    assert hashlib.sha256(library.read_bytes()).hexdigest() in readme
    assert "npm pack chart.js@" in readme  # how to refresh it
    assert "MIT License" in (VENDOR / "LICENSE-chart.js.md").read_text()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_our_scripts_parse(script: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_every_file_the_page_loads_is_served_with_its_type_and_policy(
    make_api: MakeApi,
) -> None:
    api = await make_api(seeded=False)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    page = await api.client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for ref in _references():
        answer = await api.client.get("/" + ref)
        assert answer.status == 200, ref
        assert answer.content_type == types[Path(ref).suffix], ref
        assert await answer.read() == (DASHBOARD_DIR / ref).read_bytes()
    # Only what a browser loads is served: not the vendor README, nothing outside.
    assert (await api.client.get("/vendor/README.md")).status == 404
    assert (await api.client.get("/../pyproject.toml")).status == 404
