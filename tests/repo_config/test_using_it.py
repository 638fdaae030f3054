"""What the configuration decides beyond the review itself: whether to review automatically,
who may ask questions; and the two Platform calls the loader added, over the fake GitHub."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.conversation.rules import may_ask
from bot.review.policy import skip_reason
from config.repo import EffectiveConfig, resolve
from platforms.base import Permission, PlatformError, PullRequest
from platforms.github import GitHubPlatform
from tests.fakes.github import FakeGitHub
from tests.repo_config.conftest import REPO

PR = PullRequest(
    repo=REPO,
    number=1,
    title="Add the parser",
    body=None,
    author="octocat",
    author_is_bot=False,
    base_sha="b" * 40,
    head_sha="h" * 40,
    base_ref="main",
    head_ref="feature",
    draft=False,
    state="open",
    labels=("parser",),
    url=f"https://github.com/{REPO}/pull/1",
    default_branch="main",
)


def config(text: str) -> EffectiveConfig:
    effective = resolve(text or None)  # "": no file
    assert effective.problems == ()
    return effective


@pytest.mark.parametrize(
    ("text", "pr", "reason"),
    [
        ("", PR, None),
        ("enabled: false\n", PR, "Arbiter is turned off here (enabled: false, .arbiter.yml)"),
        ("auto_review:\n  enabled: false\n", PR, "automatic reviews are off"),
        ("", replace(PR, draft=True), "a draft (auto_review.drafts is false)"),
        ("auto_review:\n  drafts: true\n", replace(PR, draft=True), None),
        ("", replace(PR, base_ref="release/1.2"), "its base branch release/1.2 is neither"),
        (
            "auto_review:\n  base_branches: ['release/.*']\n",
            replace(PR, base_ref="release/1.2"),
            None,
        ),
        (  # a regex matches the whole name, not a part of it
            "auto_review:\n  base_branches: ['release']\n",
            replace(PR, base_ref="release/1.2"),
            "its base branch release/1.2 is neither",
        ),
        (
            "auto_review:\n  ignore_authors: [OctoCat]\n",
            PR,
            "its author octocat is in auto_review.ignore_authors",
        ),
        (
            "auto_review:\n  ignore_title_keywords: [wip]\n",
            replace(PR, title="WIP: parser"),
            "its title contains 'wip'",
        ),
        ("auto_review:\n  labels: ['!parser']\n", PR, "it is labelled 'parser'"),
        ("auto_review:\n  labels: [review-me, ready]\n", PR, "it carries none of the labels"),
        ("auto_review:\n  labels: [Parser]\n", PR, None),
    ],
)
def test_when_the_config_skips_an_automatic_review(
    text: str, pr: PullRequest, reason: str | None
) -> None:
    found = skip_reason(config(text), pr)

    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason), found


def test_the_default_branch_comes_from_the_loaded_config_first() -> None:
    effective = replace(config(""), branch="trunk")

    assert skip_reason(effective, replace(PR, base_ref="trunk", default_branch=None)) is None
    assert skip_reason(effective, PR) is not None  # main is not the default branch here


@pytest.mark.parametrize(
    ("text", "permission", "allowed"),
    [
        ("", "write", True),
        ("", "admin", True),
        ("", "read", False),
        ("followup:\n  allow: everyone\n", "none", True),
        ("followup:\n  enabled: false\n", "admin", False),
        ("enabled: false\n", "admin", False),
    ],
)
def test_who_may_ask_questions(text: str, permission: Permission, allowed: bool) -> None:
    assert may_ask(config(text), permission) is allowed


# --- The Platform calls the loader needs -----------------------------------------------------


async def test_branch_head_follows_commits(fake: FakeGitHub, platform: GitHubPlatform) -> None:
    before = await platform.branch_head("main")
    fake.add_file(REPO, "README.md", "hello\n")
    fake.add_file(REPO, "notes.txt", "x\n", ref="topic/with-slash")

    after = await platform.branch_head("main")

    assert before != after == fake.branch_head(REPO, "main")
    assert await platform.read_file("README.md", after) == "hello\n"
    assert await platform.read_file("README.md", before) is None  # not in the older commit
    assert await platform.branch_head("topic/with-slash") == fake.branch_head(
        REPO, "topic/with-slash"
    )
    with pytest.raises(PlatformError) as raised:
        await platform.branch_head("no-such-branch")
    assert raised.value.status == 404


async def test_find_comment_finds_only_our_marked_comment(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    fake.add_pull(REPO, 1)
    pr = await platform.pull_request(1)
    assert await platform.find_comment(pr, "repo-config") is None

    fake.add_issue_comment(REPO, 1, "<!-- arbiter:repo-config --> copied by a person")
    assert await platform.find_comment(pr, "repo-config") is None

    made = await platform.upsert_comment(pr, "repo-config", "hello")
    found = await platform.find_comment(pr, "repo-config")

    assert found is not None and found.id == made.id and found.kind == "conversation"
