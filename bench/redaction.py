"""What logging and redaction cost: microseconds per log line, per redacted post, per API page.

    .venv/bin/python -m bench.redaction [--lines 20000]

Prints the cost of one JSON log line written by Arbiter (structlog) and by a library (the
standard library's logging), both through the one configured pipeline with redaction, to a
stream that discards them; of scrubbing a 60 KB review summary (what a post costs on top);
and of scrubbing an API answer of 100 reviews.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable

from bot.logs import configure_logging, get_logger
from bot.redaction import Redactor
from config.settings import load_settings


class Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        return False


def per_call(n: int, call: Callable[[], object]) -> float:
    """Microseconds per call, best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    n = parser.parse_args().lines
    settings = load_settings(
        log_format="json",
        openai_api_key="sk-" + "k" * 40,
        github_token="ghp_" + "t" * 36,
        github_webhook_secret="hook-secret-1234",  # noqa: S106 - a made-up one
        api_tokens="read-token-5f2c9d1e7a:read,admin-token-8b3e6a0f4c:admin",
        database_url="postgresql+asyncpg://arbiter:db-pass-999@db/arbiter",
    )
    configure_logging(settings, stream=Discard())
    log = get_logger(delivery_id="d-1", platform="github", repo="o/r", number=7, job_id=3)
    library = logging.getLogger("aiohttp.server")
    arbiter_line = per_call(
        n, lambda: log.info("delivery queued", _event="pull_request.opened", job=12)
    )
    library_line = per_call(n, lambda: library.warning("odd request from %s", "127.0.0.1"))
    filtered = per_call(n, lambda: log.debug("below the level", x=1))

    redactor = Redactor.from_settings(settings)
    summary = "".join(
        f"- `src/module_{i}.py` line {i}: a finding with https://example.com/doc/{i} and text\n"
        for i in range(700)
    )
    page = {
        "items": [
            {"id": i, "repo": "acme/api", "reason": f"{i} new finding(s): 1 major", "cost": 0.01}
            for i in range(100)
        ]
    }
    scrub_summary = per_call(200, lambda: redactor.scrub(summary))
    scrub_page = per_call(200, lambda: redactor.scrub_value(page))

    print(f"log line, Arbiter's (JSON, redacted)      {arbiter_line:8.1f} µs")
    print(f"log line, a library's (JSON, redacted)    {library_line:8.1f} µs")
    print(f"log call below the level                  {filtered:8.1f} µs")
    print(f"scrub a {len(summary) // 1000} KB summary                   {scrub_summary:8.1f} µs")
    print(f"scrub an API page of 100 reviews          {scrub_page:8.1f} µs")


if __name__ == "__main__":
    main()
