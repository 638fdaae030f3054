"""Posting a review on GitLab: positions, draft notes published at once, and exactly once."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from platforms.base import InlineComment, PlatformError, PullRequest
from platforms.gitlab import GitLabPlatform
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_PROJECT

H1, H2, BASE, START = "a1" * 20, "b2" * 20, "c3" * 20, "d4" * 20
MR = f"{project_path(GL_PROJECT)}/merge_requests/5"
# app.py, old → new: line 2 changed, a line added after it; line 1 and 3 are context.
MODIFIED = (
    "@@ -1,4 +1,5 @@\n"
    " import os\n"
    "-os.system(cmd)\n"
    "+subprocess.run(cmd, shell=True)\n"
    "+print('done')\n"
    " \n"
    " def main():\n"
)
RENAMED = (
    "@@ -10,3 +10,3 @@ class Store:\n"
    "     def get(self):\n"
    "-        return self.a\n"
    "+        return self.b\n"
    "     # end\n"
)


@pytest.fixture
def fake(gitlab_fake: FakeGitLab) -> FakeGitLab:
    gitlab_fake.add_merge_request(
        GL_PROJECT,
        5,
        files=[
            MRFile.modified("app.py", MODIFIED),
            MRFile.renamed("lib/store_old.py", "lib/store.py", RENAMED),
            MRFile.removed("legacy.py", "a = 1\nb = 2\n"),
        ],
        head_sha=H1,
        base_sha=BASE,
        start_sha=START,  # the target branch moved on: merge base and start differ
    )
    return gitlab_fake


async def pr_of(platform: GitLabPlatform) -> PullRequest:
    return await platform.pull_request(5)


def positions(fake: FakeGitLab) -> list[dict[str, Any]]:
    return [
        d["notes"][0]["position"]
        for d in fake.discussions(GL_PROJECT, 5)
        if d["notes"][0]["type"] == "DiffNote"
    ]


def where(position: dict[str, Any]) -> tuple[Any, ...]:
    return (
        position["old_path"],
        position["new_path"],
        position["old_line"],
        position["new_line"],
    )


# --- Positions ----------------------------------------------------------------------------------


async def test_positions_name_the_version_and_each_kind_of_line(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    comments = [
        InlineComment("app.py", 2, "shell=True is an injection"),  # an added line
        InlineComment("app.py", 4, "context line"),  # old 3, new 4
        InlineComment("app.py", 2, "the old call", side="LEFT"),  # a removed line
        InlineComment("lib/store.py", 11, "b?", previous_path="lib/store_old.py"),
        InlineComment("legacy.py", 2, "still used?", side="LEFT"),  # a line of a deleted file
    ]

    posted = await gitlab_platform.post_review(pr, "Arbiter found 5 issues.", comments)

    assert posted.posted == tuple(comments) and posted.dropped == ()
    found = positions(fake)
    assert [where(p) for p in found] == [
        ("app.py", "app.py", None, 2),
        ("app.py", "app.py", 3, 4),
        ("app.py", "app.py", 2, None),
        ("lib/store_old.py", "lib/store.py", None, 11),
        ("legacy.py", "legacy.py", 2, None),
    ]
    for position in found:
        assert (position["base_sha"], position["start_sha"], position["head_sha"]) == (
            BASE,
            START,
            H1,
        )
        assert position["position_type"] == "text"


async def test_comments_off_the_diff_are_dropped_and_the_others_posted(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    good = InlineComment("app.py", 3, "print is noisy")
    far = InlineComment("app.py", 40, "not in the diff")
    elsewhere = InlineComment("README.md", 1, "not changed")

    posted = await gitlab_platform.post_review(pr, "Review", [good, far, elsewhere])

    assert posted.posted == (good,)
    assert [(c, reason) for c, reason in posted.dropped] == [
        (far, "app.py:40 (RIGHT) is not part of the diff"),
        (elsewhere, "README.md is not changed in this merge request"),
    ]
    assert [where(p) for p in positions(fake)] == [("app.py", "app.py", None, 3)]


async def test_a_comment_gitlab_refuses_is_dropped_with_its_words(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    refused = InlineComment("app.py", 2, "refused")
    kept = InlineComment("app.py", 3, "kept")
    fake.fail(
        "POST",
        f"{MR}/draft_notes",
        400,
        body={"message": '400 Bad request - Note {:line_code=>["can\'t be blank"]}'},
    )

    posted = await gitlab_platform.post_review(pr, "Review", [refused, kept])

    assert posted.posted == (kept,)
    ((comment, reason),) = posted.dropped
    assert comment == refused and reason.startswith("GitLab: 400 Bad request - Note")
    assert [where(p) for p in positions(fake)] == [("app.py", "app.py", None, 3)]


async def test_the_head_moved_on_comments_keep_their_own_version(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    fake.push(GL_PROJECT, 5, head_sha=H2, files=[MRFile.added("other.py", "x\n")])

    await gitlab_platform.post_review(pr, "Review", [InlineComment("app.py", 2, "still here")])

    (position,) = positions(fake)
    assert (position["base_sha"], position["start_sha"], position["head_sha"]) == (
        BASE,
        START,
        H1,
    )
    assert fake.requests_to("GET", f"{project_path(GL_PROJECT)}/repository/compare")


# --- One review, at once -------------------------------------------------------------------------


async def test_a_review_is_drafted_then_published_in_one_go(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    comments = [InlineComment("app.py", 2, "one"), InlineComment("app.py", 3, "two")]

    posted = await gitlab_platform.post_review(pr, "Arbiter found 2 issues.", comments, key="r-1")

    assert len(fake.requests_to("POST", f"{MR}/draft_notes")) == 3  # two comments and the body
    assert len(fake.requests_to("POST", f"{MR}/draft_notes/bulk_publish")) == 1
    assert fake.requests_to("POST", f"{MR}/discussions") == []
    assert fake.draft_notes(GL_PROJECT, 5) == []
    notes = fake.notes(GL_PROJECT, 5)
    assert [n["body"].split("\n")[0] for n in notes] == ["one", "two", "Arbiter found 2 issues."]
    assert "<!-- arbiter:review:r-1 -->" in notes[2]["body"]
    assert posted.id == notes[2]["id"]
    assert posted.url == f"{fake.url}/{GL_PROJECT}/-/merge_requests/5#note_{notes[2]['id']}"


async def test_someone_elses_drafts_are_not_published_with_ours(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    """Drafts are per user; the token's user may be a person with pending comments."""
    pr = await pr_of(gitlab_platform)
    await _draft_as_token_user(fake, "my pending thought")

    await gitlab_platform.post_review(pr, "Review", [InlineComment("app.py", 2, "one")], key="k")

    assert fake.requests_to("POST", f"{MR}/draft_notes/bulk_publish") == []
    assert len(fake.requests_to("PUT", f"{MR}/draft_notes/*/publish")) == 2
    assert [d["note"] for d in fake.draft_notes(GL_PROJECT, 5)] == ["my pending thought"]


async def _draft_as_token_user(fake: FakeGitLab, text: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fake.url}{MR}/draft_notes",
            json={"note": text},
            headers={"PRIVATE-TOKEN": fake.token},
        ) as response,
    ):
        assert response.status == 201


async def test_without_draft_notes_each_discussion_is_posted_then_the_body(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    fake.draft_notes_supported = False
    pr = await pr_of(gitlab_platform)
    comments = [InlineComment("app.py", 2, "one"), InlineComment("app.py", 99, "far")]

    posted = await gitlab_platform.post_review(pr, "Review body", comments, key="r-2")

    assert posted.posted == (comments[0],)
    assert len(fake.requests_to("POST", f"{MR}/discussions")) == 1
    notes = fake.notes(GL_PROJECT, 5)
    assert [n["body"].split("\n")[0] for n in notes] == ["one", "Review body"]
    assert posted.id == notes[-1]["id"]


async def test_without_bulk_publish_drafts_are_published_one_by_one(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    fake.bulk_publish_supported = False
    pr = await pr_of(gitlab_platform)

    await gitlab_platform.post_review(pr, "Review", [InlineComment("app.py", 2, "one")], key="k")

    assert len(fake.requests_to("PUT", f"{MR}/draft_notes/*/publish")) == 2
    assert len(fake.notes(GL_PROJECT, 5)) == 2 and fake.draft_notes(GL_PROJECT, 5) == []


# --- Exactly once -------------------------------------------------------------------------------


COMMENTS = [InlineComment("app.py", 2, "one"), InlineComment("app.py", 3, "two")]


def summary_of(fake: FakeGitLab) -> list[str]:
    return [n["body"].split("\n")[0] for n in fake.notes(GL_PROJECT, 5)]


async def test_the_same_key_twice_posts_once(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)

    first = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")
    again = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")
    other = await gitlab_platform.post_review(pr, "Review", COMMENTS[:1], key="review-10")

    assert again.id == first.id and again.posted == tuple(COMMENTS)
    assert other.id != first.id
    assert summary_of(fake) == ["one", "two", "Review", "one", "Review"]


async def test_a_crash_before_publishing_leaves_nothing_twice(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    fake.fail("POST", f"{MR}/draft_notes/bulk_publish", 500, times=4)  # every retry fails
    with pytest.raises(PlatformError):
        await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")
    assert len(fake.draft_notes(GL_PROJECT, 5)) == 3 and fake.notes(GL_PROJECT, 5) == []

    posted = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    assert summary_of(fake) == ["one", "two", "Review"]
    assert fake.draft_notes(GL_PROJECT, 5) == []
    assert len(fake.requests_to("DELETE", f"{MR}/draft_notes/*")) == 3  # the stale drafts
    assert posted.posted == tuple(COMMENTS)


async def test_a_crash_after_publishing_posts_nothing_more(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    # Published, then the answer is lost: GitLab did it, the job does not know.
    fake.fail("POST", f"{MR}/draft_notes/bulk_publish", 502, times=4, landed=True)
    with pytest.raises(PlatformError):
        await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    posted = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    assert summary_of(fake) == ["one", "two", "Review"]
    assert posted.id == fake.notes(GL_PROJECT, 5)[-1]["id"]


async def test_a_publication_cut_short_is_finished_not_repeated(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    fake.bulk_publish_supported = False  # published one by one, and publishing fails
    fake.fail("PUT", f"{MR}/draft_notes/*/publish", 500, times=4)

    with pytest.raises(PlatformError):
        await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")
    assert fake.notes(GL_PROJECT, 5) == [] and len(fake.draft_notes(GL_PROJECT, 5)) == 3

    # Publish only the body by hand, as if the crash came after it: the review reads as up.
    body = next(d for d in fake.draft_notes(GL_PROJECT, 5) if d["note"].startswith("Review"))
    await _publish_as_token_user(fake, body["id"])

    posted = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    assert sorted(summary_of(fake)) == ["Review", "one", "two"]
    assert fake.draft_notes(GL_PROJECT, 5) == []
    assert posted.posted == tuple(COMMENTS)


async def _publish_as_token_user(fake: FakeGitLab, draft_id: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{fake.url}{MR}/draft_notes/{draft_id}/publish",
            headers={"PRIVATE-TOKEN": fake.token},
        ) as response,
    ):
        assert response.status == 204


async def test_a_draft_whose_answer_was_lost_is_found_not_drafted_again(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    # The first draft lands but its answer is a 502: it is looked for, not sent again.
    fake.fail("POST", f"{MR}/draft_notes", 502, landed=True)

    await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    assert len(fake.requests_to("POST", f"{MR}/draft_notes")) == 3
    assert fake.requests_to("DELETE", f"{MR}/draft_notes/*") == []
    assert summary_of(fake) == ["one", "two", "Review"]


async def test_discussions_one_by_one_resume_where_a_crash_stopped(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    fake.draft_notes_supported = False
    pr = await pr_of(gitlab_platform)
    fake.fail("POST", f"{MR}/notes", 500, times=4)  # the body note, posted last, fails
    with pytest.raises(PlatformError):
        await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")
    assert summary_of(fake) == ["one", "two"]

    posted = await gitlab_platform.post_review(pr, "Review", COMMENTS, key="review-9")

    assert summary_of(fake) == ["one", "two", "Review"]
    assert posted.posted == tuple(COMMENTS)
    assert len(fake.requests_to("POST", f"{MR}/discussions")) == 2


async def test_a_comment_dropped_the_first_time_is_reported_dropped_again(
    fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await pr_of(gitlab_platform)
    far = InlineComment("app.py", 99, "far")

    await gitlab_platform.post_review(pr, "Review", [COMMENTS[0], far], key="review-9")
    again = await gitlab_platform.post_review(pr, "Review", [COMMENTS[0], far], key="review-9")

    assert again.posted == (COMMENTS[0],)
    assert [c for c, _ in again.dropped] == [far]
