"""Redaction: one set of rules (known secrets, and credential shapes nobody told us about) for
every place text leaves Arbiter: logs, stored errors, API answers, what is posted."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import Any, get_type_hints
from urllib.parse import quote

import pytest

from bot.outbound import RedactedPlatform
from bot.redaction import REDACTED, Redactor, secret_field
from config.settings import load_settings
from platforms.base import (
    Changes,
    CommentRef,
    InlineComment,
    Permission,
    Platform,
    PostedReview,
    PullRequest,
    Reaction,
    StatusState,
)

KEY = "proxy-key-7f3a9c2e51b84d06"  # an API key of no known shape: only "known" can catch it


def test_known_secrets_are_masked_as_given_and_as_encoded() -> None:
    redactor = Redactor([KEY, "p@ss/wörd+1"])
    text = (
        f"401 Incorrect API key provided: {KEY}. "
        f"body {json.dumps({'key': 'p@ss/wörd+1'})} "
        f"url https://proxy/v1?key={quote('p@ss/wörd+1', safe='')}"
    )
    clean = redactor.scrub(text)
    assert KEY not in clean
    assert "ss/w" not in clean and "ss%2Fw" not in clean and "ss\\/w" not in clean
    assert clean.startswith(f"401 Incorrect API key provided: {REDACTED}. ")


def test_the_longest_secret_is_masked_first() -> None:
    # A secret inside another must not leave the rest of the longer one behind.
    assert Redactor(["abcd", "abcd-efgh-ijkl"]).scrub("x abcd-efgh-ijkl y") == f"x {REDACTED} y"


def test_settings_give_every_secret_they_hold() -> None:
    settings = load_settings(
        openai_api_key=KEY,
        github_webhook_secret="hook-secret-1234",
        api_tokens="read-token-5f2c9d1e7a:read",
        database_url="postgresql+asyncpg://arbiter:db-pass-999@db/arbiter",
    )
    clean = Redactor.from_settings(settings).scrub(
        f"{KEY} hook-secret-1234 read-token-5f2c9d1e7a db-pass-999"
    )
    assert clean == " ".join([REDACTED] * 4)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 used", "abcdefghijklmnopqrst"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "11ABCDEFG0123456789"),
        ("glpat-abcdefghijklmnopqrst and gldt-abcdefghijklmnopqrst", "abcdefghijklmnopqrst"),
        ("v1.0123456789abcdef0123456789abcdef01234567", "0123456789abcdef0123"),
        ("sk-proj-abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuv"),
        ("sk-ant-api03-abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuv"),
        ("AKIAABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP"),
        ("postgresql://user:pw-123456@host/db", "pw-123456"),
        ("redis://:redis-pass-42@cache:6379/0", "redis-pass-42"),
        ("https://ghs_abcdefghijklmnopqrstuvwxyz012@github.com/o/r.git", "abcdefghijklmnop"),
        ("Authorization: Bearer abc.def-ghi_jkl+mno/pqr=", "abc.def-ghi_jkl"),
        ('{"api_key": "plain-looking-value-123"}', "plain-looking-value"),
        ("X-Gitlab-Token: gitlab-hook-token-77", "gitlab-hook-token"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjM0NTYifQ.c2lnbmF0dXJlLXBhcnQtaGVyZQ", "eyJpc3Mi"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA",
        ),
        # A key cut short (a truncated error body) is still a key.
        ("key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ", "MIIEvQIBADAN"),
    ],
)
def test_credential_shapes_are_masked_without_being_told(text: str, gone: str) -> None:
    clean = Redactor().scrub(text)
    assert gone not in clean
    assert REDACTED in clean


@pytest.mark.parametrize(
    "text",
    [
        "send a token of ARBITER_API_TOKENS as `Authorization: Bearer TOKEN`",
        "input_tokens=1200 output_tokens=300, a basic configuration",
        "git@github.com:octocat/hello.git and https://github.com/octocat",
        "the model provider rejected our credentials (check OPENAI_API_KEY): 401",
        "api_key: none",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor(["secret-value-1"]).scrub(text) == text


def test_structured_values_are_scrubbed_throughout_and_keep_their_shape() -> None:
    value = {
        "items": [{"reason": f"401 {KEY}", "input_tokens": 12, "cost_usd": 0.5, "ok": True}],
        "next": None,
    }
    assert Redactor([KEY]).scrub_value(value) == {
        "items": [{"reason": f"401 {REDACTED}", "input_tokens": 12, "cost_usd": 0.5, "ok": True}],
        "next": None,
    }


def test_field_names_that_hold_secrets() -> None:
    for name in ("github_token", "webhook_secret", "api_key", "Authorization", "db_password"):
        assert secret_field(name), name
    for name in ("input_tokens", "output_tokens", "max_tokens", "event", "key_file"):
        assert not secret_field(name), name


# --- What is posted ----------------------------------------------------------------------------

PR = PullRequest(
    repo="o/r",
    number=1,
    title="t",
    body=None,
    author="a",
    author_is_bot=False,
    base_sha="b" * 40,
    head_sha="h" * 40,
    base_ref="main",
    head_ref="f",
    draft=False,
    state="open",
    labels=(),
    url="https://example.test/o/r/pull/1",
)
REF = CommentRef(id=1, kind="conversation", number=1)


class Recorder:
    """A Platform that keeps what it is asked to post (the unit under test wraps it)."""

    name = "github"
    repo = "o/r"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def pull_request(self, number: int) -> PullRequest:
        return PR

    async def changes(self, pr: PullRequest, since: str | None = None) -> Changes:
        return Changes(pr.base_sha, pr.head_sha, ())

    async def read_file(self, path: str, ref: str) -> str | None:
        return f"read {path}"

    async def default_branch(self) -> str:
        return "main"

    async def branch_head(self, branch: str) -> str:
        return "c" * 40

    async def post_review(
        self,
        pr: PullRequest,
        summary: str,
        comments: Sequence[InlineComment],
        *,
        key: str | None = None,
        fresh: bool = False,
    ) -> PostedReview:
        self.sent.append(("review", (summary, [c.body for c in comments], key)))
        return PostedReview(id=1, posted=tuple(comments))

    async def upsert_comment(self, pr: PullRequest, key: str, body: str) -> CommentRef:
        self.sent.append(("upsert", (key, body)))
        return REF

    async def find_comment(self, pr: PullRequest, key: str) -> CommentRef | None:
        return None

    async def reply(self, comment: CommentRef, body: str) -> CommentRef:
        self.sent.append(("reply", body))
        return REF

    async def set_status(
        self, pr: PullRequest, state: StatusState, description: str, url: str | None = None
    ) -> None:
        self.sent.append(("status", (state, description)))

    async def permission(self, user: str) -> Permission:
        return "write"

    async def react(self, comment: CommentRef, reaction: Reaction) -> None:
        self.sent.append(("react", reaction))


async def test_everything_posted_is_redacted_and_the_rest_passes_through() -> None:
    inner = Recorder()
    platform: Platform = RedactedPlatform(inner, Redactor([KEY]))
    assert (platform.name, platform.repo) == ("github", "o/r")
    assert await platform.read_file(f"{KEY}.py", "main") == f"read {KEY}.py"  # reads untouched
    comment = InlineComment("app.py", 3, f"finding: {KEY}")
    posted = await platform.post_review(PR, f"summary {KEY}", [comment], key="review-1")
    await platform.upsert_comment(PR, "summary", f"## Summary\n{KEY}")
    await platform.reply(REF, f"answer {KEY}")
    await platform.set_status(PR, "error", f"Arbiter could not review: 401 {KEY}")
    await platform.react(REF, "eyes")
    assert inner.sent == [
        ("review", (f"summary {REDACTED}", [f"finding: {REDACTED}"], "review-1")),
        ("upsert", ("summary", f"## Summary\n{REDACTED}")),
        ("reply", f"answer {REDACTED}"),
        ("status", ("error", f"Arbiter could not review: 401 {REDACTED}")),
        ("react", "eyes"),
    ]
    # What was posted, as posted (the use case matches it by place, which is unchanged).
    assert posted.posted == (InlineComment("app.py", 3, f"finding: {REDACTED}"),)


# Parameters that name things rather than carry free text (never redacted).
_NAMES = {"path", "ref", "key", "user", "branch", "since"}


def test_every_platform_call_that_carries_text_is_redacted() -> None:
    """A call added to the Platform protocol with a text parameter must be wrapped too."""
    for name, member in inspect.getmembers(Platform, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = get_type_hints(member)
        carries_text = any(
            param not in _NAMES and ("str" in str(hint) or "InlineComment" in str(hint))
            for param, hint in hints.items()
            if param != "return"
        )
        if carries_text:
            assert name in vars(RedactedPlatform), f"RedactedPlatform does not redact {name}()"
