"""Issue 16, item 5: a hidden marker counts only where Arbiter writes it (its comment's first
line, or the trailing marker lines), and only on Arbiter's own comments."""

from __future__ import annotations

import pytest

from bot.core.markdown import code
from platforms.base import comment_marker, finding_marker, has_marker, review_marker
from platforms.github import GitHubPlatform
from platforms.gitlab import GitLabPlatform
from tests.fakes.github import FakeGitHub
from tests.fakes.gitlab import FakeGitLab, MRFile
from tests.platforms.conftest import GL_PROJECT
from tests.platforms.test_github_calls import seed_pull

CONFIG = comment_marker("repo-config")
REVIEW = review_marker("review-12")
PLANTED = f"- {code(CONFIG + '.min.js')}: minified file"  # a file name in the summary


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"{CONFIG}\n### Arbiter configuration", True),  # upsert_comment's first line
        (f"Arbiter found 2 issues.\n\n{CONFIG}", True),  # a review's last line
        (f"body\n\n{finding_marker('abc')}\n\n{CONFIG}", True),  # among the trailing markers
        (f"{comment_marker('summary')}\n## Arbiter review\n{PLANTED}\n\n<sub>x</sub>", False),
        (f"text\n\n    {CONFIG}\n", False),  # an indented code block is not the marker line
        (f"```\n{CONFIG}\n```", False),
        (f"> {CONFIG}\n> quoted", False),
        (f"see {CONFIG} here", False),
        ("", False),
    ],
)
def test_a_marker_counts_only_where_arbiter_writes_it(body: str, expected: bool) -> None:
    assert has_marker(body, CONFIG) is expected


def test_a_review_marker_in_a_findings_code_block_is_not_the_review() -> None:
    finding = f"🟠 **Major**\n\n```\n{REVIEW}\n```\n\n<sub>x</sub>\n{finding_marker('f1')}"

    assert not has_marker(finding, REVIEW)
    assert has_marker(f"Arbiter found 1 new issue.\n\n{REVIEW}", REVIEW)


async def test_a_file_name_in_the_github_summary_does_not_become_the_config_comment(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    pr = await platform.pull_request(1)
    summary = await platform.upsert_comment(pr, "summary", f"## Arbiter review\n\n{PLANTED}")

    assert await platform.find_comment(pr, "repo-config") is None
    config = await platform.upsert_comment(pr, "repo-config", "### ⚠️ Arbiter configuration")

    assert config.id != summary.id
    bodies = {c["id"]: c["body"] for c in fake.issue_comments("octo/demo", 1)}
    assert PLANTED in bodies[summary.id]  # the summary was not overwritten
    assert await platform.find_comment(pr, "summary") == summary


async def test_a_summary_quoting_its_own_marker_still_carries_it(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    pr = await platform.pull_request(1)
    body = f"## Arbiter review\n\n- {code(comment_marker('summary'))}: minified file"

    first = await platform.upsert_comment(pr, "summary", body)
    again = await platform.upsert_comment(pr, "summary", body + "\nmore")

    assert first.id == again.id
    assert len(fake.issue_comments("octo/demo", 1)) == 1


async def test_a_file_name_in_the_gitlab_summary_does_not_become_the_config_note(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.add_merge_request(
        GL_PROJECT, 7, files=[MRFile.added("app.py", "x = 1\n")], head_sha="a" * 40
    )
    pr = await gitlab_platform.pull_request(7)
    summary = await gitlab_platform.upsert_comment(pr, "summary", f"## Review\n\n{PLANTED}")

    assert await gitlab_platform.find_comment(pr, "repo-config") is None
    config = await gitlab_platform.upsert_comment(pr, "repo-config", "### Arbiter configuration")

    assert config.id != summary.id
    assert await gitlab_platform.find_comment(pr, "summary") == summary
