"""post_review when GitHub refuses a line, and upsert_comment run again and again."""

from __future__ import annotations

from typing import Any

from platforms.base import InlineComment
from platforms.github import GitHubPlatform, comment_marker, review_marker
from tests.fakes.github import LINE_NOT_IN_DIFF, FakeGitHub, PullFile
from tests.platforms.conftest import REPO, visible

PATCH = (
    "@@ -10,3 +10,4 @@ def main():\n     a = 1\n-    b = 2\n+    b = 3\n+    c = 4\n     return a"
)
# RIGHT lines 10..13 are in the diff; LEFT lines 10..12.
REVIEWS = f"/repos/{REPO}/pulls/1/reviews"


def seed(fake: FakeGitHub, **fields: Any) -> None:
    files = [PullFile("app.py", patch=PATCH), PullFile("blob.bin", status="added")]
    fake.add_pull(REPO, 1, files=files, head_sha="h" * 40, base_sha="b" * 40, **fields)


async def test_a_comment_outside_the_diff_is_dropped_and_the_others_posted(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)
    good = [InlineComment("app.py", 11, "b changed"), InlineComment("app.py", 12, "new c")]
    bad = InlineComment("app.py", 40, "far away")

    posted = await platform.post_review(pr, "Summary", [good[0], bad, good[1]])

    assert posted.posted == tuple(good)
    [(dropped, reason)] = posted.dropped
    assert dropped == bad
    assert "app.py:40 (RIGHT) is not part of the diff" in reason
    assert LINE_NOT_IN_DIFF in reason  # GitHub's own words come along
    [review] = fake.reviews(REPO, 1)
    assert review["id"] == posted.id and review["state"] == "COMMENTED"
    assert [c["line"] for c in fake.review_comments(REPO, 1)] == [11, 12]
    assert [r.status for r in fake.requests_to("POST", REVIEWS)] == [422, 200]


async def test_every_kind_of_misplaced_comment_is_reported_in_order(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)
    comments = [
        InlineComment("elsewhere.py", 1, "not in the PR"),
        InlineComment("blob.bin", 1, "binary"),
        InlineComment("app.py", 13, "ok"),
        InlineComment("app.py", 13, "left side only has 10-12", side="LEFT"),
        InlineComment("app.py", 12, "range across hunks", start_line=2),
    ]

    posted = await platform.post_review(pr, "Summary", comments)

    assert posted.posted == (comments[2],)
    assert [c for c, _ in posted.dropped] == [comments[0], comments[1], comments[3], comments[4]]
    reasons = [reason for _, reason in posted.dropped]
    assert "not changed in this pull request" in reasons[0]
    assert "binary or too large" in reasons[1]
    assert "(LEFT) is not part of the diff" in reasons[2]
    assert "start line 2" in reasons[3]


async def test_when_the_diff_cannot_be_read_github_is_asked_with_pending_reviews(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)
    fake.fail("GET", f"/repos/{REPO}/pulls/1/files", 500, times=100)
    comments = [InlineComment("app.py", line, f"line {line}") for line in (10, 11, 99, 12, 13)]

    posted = await platform.post_review(pr, "Summary", comments)

    assert posted.posted == tuple(c for c in comments if c.line != 99)
    [(dropped, reason)] = posted.dropped
    assert dropped.line == 99 and LINE_NOT_IN_DIFF in reason
    # One submitted review, no pending probe left behind, and only the probes' reviews deleted.
    [review] = fake.reviews(REPO, 1)
    assert review["state"] == "COMMENTED"
    assert [c["line"] for c in fake.review_comments(REPO, 1)] == [10, 11, 12, 13]
    probes = [r for r in fake.requests_to("POST", REVIEWS) if "event" not in r.json()]
    assert probes and len(fake.requests_to("DELETE", f"{REVIEWS}/*")) == sum(
        1 for r in probes if r.status == 200
    )


async def test_a_pending_review_left_by_a_crash_does_not_block_the_probes(
    fake: FakeGitHub, platform: GitHubPlatform, mode: str
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)
    fake.fail("GET", f"/repos/{REPO}/pulls/1/files", 500, times=100)
    # GitHub allows one pending review per user; someone else's is none of our business.
    me = "arbiter[bot]" if mode == "app" else "arbiter-bot"
    leftover = fake.add_review(REPO, 1, author=me, state="PENDING")
    theirs = fake.add_review(REPO, 1, author="alice", state="PENDING")
    comments = [InlineComment("app.py", 11, "fine"), InlineComment("app.py", 99, "bad")]

    posted = await platform.post_review(pr, "Summary", comments)

    assert posted.posted == (comments[0],)
    assert [c for c, _ in posted.dropped] == [comments[1]]
    remaining = {r["id"]: r["state"] for r in fake.reviews(REPO, 1)}
    assert leftover["id"] not in remaining and remaining[theirs["id"]] == "PENDING"


async def test_when_github_cannot_be_asked_the_summary_still_goes_up(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)
    fake.fail("GET", f"/repos/{REPO}/pulls/1/files", 500, times=100)
    fake.fail("POST", REVIEWS, 500, times=100, if_body=lambda body: "event" not in body)
    comments = [InlineComment("app.py", 11, "fine"), InlineComment("app.py", 99, "bad")]

    posted = await platform.post_review(pr, "Summary", comments)

    assert posted.posted == ()
    assert [c for c, _ in posted.dropped] == comments
    assert all(LINE_NOT_IN_DIFF in reason for _, reason in posted.dropped)
    [review] = fake.reviews(REPO, 1)
    assert (review["state"], visible(review["body"])) == ("COMMENTED", "Summary")
    assert fake.review_comments(REPO, 1) == []


async def test_a_review_without_comments_is_just_the_summary(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)

    posted = await platform.post_review(pr, "Nothing to say", [])

    assert posted.posted == () and posted.dropped == ()
    [review] = fake.reviews(REPO, 1)
    assert visible(review["body"]) == "Nothing to say"


async def test_a_review_with_a_key_is_posted_once(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    """A retried job posts its review again with the same key: GitHub gets it once."""
    seed(fake)
    pr = await platform.pull_request(1)
    comment = InlineComment("app.py", 11, "a finding")

    first = await platform.post_review(pr, "Arbiter found 1 issue", [comment], key="review-7")
    again = await platform.post_review(pr, "Arbiter found 1 issue", [comment], key="review-7")
    other = await platform.post_review(pr, "A later push", [], key="review-8")

    assert again.id == first.id
    assert other.id != first.id
    reviews = fake.reviews(REPO, 1)
    assert len(reviews) == 2
    assert review_marker("review-7") in reviews[0]["body"]
    assert len(fake.review_comments(REPO, 1)) == 1


async def test_upsert_comment_three_times_leaves_one_comment_edited_twice(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    fake.add_issue_comment(REPO, 1, "LGTM?", author="alice")
    pr = await platform.pull_request(1)

    refs = [await platform.upsert_comment(pr, "summary", f"Review {n}") for n in (1, 2, 3)]

    assert len({ref.id for ref in refs}) == 1
    ours = [c for c in fake.issue_comments(REPO, 1) if c["user"]["login"] != "alice"]
    assert [c["body"] for c in ours] == [f"{comment_marker('summary')}\nReview 3"]
    assert len(fake.requests_to("POST", f"/repos/{REPO}/issues/1/comments")) == 1
    assert len(fake.requests_to("PATCH", f"/repos/{REPO}/issues/comments/{refs[0].id}")) == 2


async def test_upsert_comment_keeps_one_comment_per_key(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed(fake)
    pr = await platform.pull_request(1)

    summary = await platform.upsert_comment(pr, "summary", "S")
    config = await platform.upsert_comment(pr, "config-error", "C")
    await platform.upsert_comment(pr, "summary", "S2")

    assert summary.id != config.id
    assert len(fake.issue_comments(REPO, 1)) == 2
