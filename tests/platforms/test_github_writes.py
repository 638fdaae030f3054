"""Writes whose answer is lost: GitHub carried them out, then a 502, a dropped connection or an
answer later than the client waits. Each is looked for on GitHub before it is sent again, so
the pull request shows it once; one that did not land is sent again.

The fake applies the write and only then loses its answer (`landed=True`), as a proxy in front
of GitHub does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from platforms.base import CommentRef, InlineComment, PlatformError, WriteUncertain
from platforms.github import GitHubPlatform, comment_marker
from tests.fakes.github import FakeGitHub, ManualClock, PullFile
from tests.platforms.conftest import REPO, MakeGitHub

PATCH = "@@ -1,2 +1,3 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n"
HEAD = "h" * 40
REVIEWS = f"/repos/{REPO}/pulls/1/reviews"
ISSUE_COMMENTS = f"/repos/{REPO}/issues/1/comments"
COMMENTS = [InlineComment("app.py", 2, "b changed"), InlineComment("app.py", 3, "new c")]

# How an answer is lost: a 502 from the proxy, the connection dropped, or too late.
Lose = Callable[[FakeGitHub, str, str, int], None]


def _502(fake: FakeGitHub, method: str, path: str, times: int) -> None:
    fake.fail(method, path, 502, times=times, landed=True)


def _dropped(fake: FakeGitHub, method: str, path: str, times: int) -> None:
    fake.disconnect(method, path, times=times, landed=True)


def _too_late(fake: FakeGitHub, method: str, path: str, times: int) -> None:
    fake.delay(method, path, 5, times=times, landed=True)  # the client waits 0.5 s


LOSSES = {"502": _502, "dropped": _dropped, "too late": _too_late}


@pytest.fixture(params=list(LOSSES))
def lose(request: pytest.FixtureRequest) -> Lose:
    return LOSSES[str(request.param)]


@pytest.fixture
def github(fake: FakeGitHub, make_github: MakeGitHub, mode: str) -> GitHubPlatform:
    fake.add_pull(REPO, 1, files=[PullFile("app.py", patch=PATCH)], head_sha=HEAD)
    return make_github(mode, integration_timeout=0.5).for_repo(REPO, 7)


def posts(fake: FakeGitHub, path: str) -> int:
    return fake.arrived("POST", path)


def submitted(fake: FakeGitHub) -> list[dict[str, Any]]:
    return [r for r in fake.reviews(REPO, 1) if r["state"] != "PENDING"]


# --- The review ---------------------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 3])
async def test_a_review_github_made_but_whose_answer_was_lost_is_found_not_posted_again(
    fake: FakeGitHub, github: GitHubPlatform, lose: Lose, times: int
) -> None:
    pr = await github.pull_request(1)
    lose(fake, "POST", REVIEWS, times)

    posted = await github.post_review(pr, "Arbiter found 2 issues", COMMENTS, key="review-7")

    [review] = submitted(fake)
    assert posted.id == review["id"] and posted.posted == tuple(COMMENTS)
    assert [c["line"] for c in fake.review_comments(REPO, 1)] == [2, 3]
    assert posts(fake, REVIEWS) == 1  # looked for, found, never sent again


async def test_a_fresh_key_is_not_looked_for_first_but_a_lost_answer_still_is(
    fake: FakeGitHub, github: GitHubPlatform, lose: Lose
) -> None:
    """A key no earlier attempt used (`fresh`) costs no lookup before the post; a post whose
    answer is lost is still looked for, and found, rather than sent again."""
    pr = await github.pull_request(1)
    await github.post_review(pr, "Summary", COMMENTS, key="review-8", fresh=True)
    assert fake.requests_to("GET", f"{REVIEWS}*") == []  # straight to the post
    lose(fake, "POST", REVIEWS, 1)

    posted = await github.post_review(pr, "Again", COMMENTS, key="review-9", fresh=True)

    assert posted.id == submitted(fake)[-1]["id"] and len(submitted(fake)) == 2
    assert posts(fake, REVIEWS) == 2  # the lost one was found, not sent a second time
    assert len(fake.requests_to("GET", f"{REVIEWS}*")) == 1  # after the lost answer only


async def test_a_review_without_a_key_is_reconciled_all_the_same(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    pr = await github.pull_request(1)
    _502(fake, "POST", REVIEWS, 1)

    posted = await github.post_review(pr, "Summary", COMMENTS)

    [review] = submitted(fake)
    assert posted.id == review["id"] and review["body"].startswith("Summary")
    assert posts(fake, REVIEWS) == 1


async def test_a_review_that_did_not_land_is_looked_for_then_sent_again(
    fake: FakeGitHub, github: GitHubPlatform, manual_clock: ManualClock
) -> None:
    pr = await github.pull_request(1)
    fake.fail("POST", REVIEWS, 502, times=2)  # refused before GitHub did anything

    posted = await github.post_review(pr, "Summary", COMMENTS, key="review-7")

    [review] = submitted(fake)
    assert posted.id == review["id"]
    assert [r.status for r in fake.requests_to("POST", REVIEWS)] == [502, 502, 200]
    lookups = fake.requests_to("GET", f"{REVIEWS}*")
    assert len(lookups) == 3  # once before posting (the key), once after each lost answer
    assert manual_clock.sleeps == [0.5, 1.0]


async def test_a_review_whose_answers_are_lost_every_time_fails_plainly(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str
) -> None:
    fake.add_pull(REPO, 1, files=[PullFile("app.py", patch=PATCH)], head_sha=HEAD)
    github = make_github(mode, integration_max_retries=2).for_repo(REPO, 7)
    pr = await github.pull_request(1)
    fake.fail("POST", REVIEWS, 503, times=10)

    with pytest.raises(WriteUncertain) as caught:
        await github.post_review(pr, "Summary", COMMENTS, key="review-7")

    assert caught.value.status == 503
    assert "POST" in str(caught.value) and "503" in str(caught.value)
    assert posts(fake, REVIEWS) == 3 and submitted(fake) == []


async def test_a_probe_github_made_but_whose_answer_was_lost_is_deleted_not_doubled(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    """The probes (pending reviews) that find a refused line: GitHub allows one pending review
    per user, so a probe sent twice would read as a refusal of good comments."""
    pr = await github.pull_request(1)
    fake.fail("GET", f"/repos/{REPO}/pulls/1/files", 500, times=100)  # the diff is unreadable
    far = InlineComment("app.py", 40, "far away")
    fake.fail("POST", REVIEWS, 502, times=2, landed=True, if_body=_probe_of_good_lines)

    posted = await github.post_review(pr, "Summary", [COMMENTS[0], far, COMMENTS[1]])

    assert posted.posted == tuple(COMMENTS)
    assert [c for c, _ in posted.dropped] == [far]
    assert [r["state"] for r in fake.reviews(REPO, 1)] == ["COMMENTED"]  # no probe left
    assert [c["line"] for c in fake.review_comments(REPO, 1)] == [2, 3]


def _probe_of_good_lines(body: dict[str, Any]) -> bool:
    return "event" not in body and all(c["line"] != 40 for c in body["comments"])


async def test_a_deletion_whose_answer_was_lost_is_done(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    pr = await github.pull_request(1)
    fake.fail("GET", f"/repos/{REPO}/pulls/1/files", 500, times=100)
    fake.fail("DELETE", f"{REVIEWS}/*", 502, times=2, landed=True)  # sent again: a 404
    far = InlineComment("app.py", 40, "far away")

    posted = await github.post_review(pr, "Summary", [COMMENTS[0], far])

    assert posted.posted == (COMMENTS[0],)
    assert [r["state"] for r in fake.reviews(REPO, 1)] == ["COMMENTED"]


# --- The summary, replies -----------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 3])
async def test_a_summary_github_made_but_whose_answer_was_lost_is_found_not_posted_again(
    fake: FakeGitHub, github: GitHubPlatform, lose: Lose, times: int
) -> None:
    pr = await github.pull_request(1)
    lose(fake, "POST", ISSUE_COMMENTS, times)

    ref = await github.upsert_comment(pr, "summary", "Reviewed 1 file")

    [comment] = fake.issue_comments(REPO, 1)
    assert ref.id == comment["id"] and ref.url == comment["html_url"]
    assert comment["body"] == f"{comment_marker('summary')}\nReviewed 1 file"
    assert posts(fake, ISSUE_COMMENTS) == 1


async def test_a_reply_on_the_conversation_whose_answer_was_lost_is_posted_once(
    fake: FakeGitHub, github: GitHubPlatform, lose: Lose
) -> None:
    asked = fake.add_issue_comment(REPO, 1, "@arbiter why?")
    lose(fake, "POST", ISSUE_COMMENTS, 1)

    ref = await github.reply(CommentRef(id=asked["id"], kind="conversation", number=1), "Because.")

    mine = [c for c in fake.issue_comments(REPO, 1) if c["id"] != asked["id"]]
    assert [c["id"] for c in mine] == [ref.id]
    assert mine[0]["body"].startswith("Because.")
    assert posts(fake, ISSUE_COMMENTS) == 1


async def test_the_same_reply_twice_is_two_replies(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    """A reply is found again by its own mark, not by its words: the same answer to a second
    question is a second reply."""
    asked = fake.add_issue_comment(REPO, 1, "@arbiter pause")
    where = CommentRef(id=asked["id"], kind="conversation", number=1)
    await github.reply(where, "Paused.")
    _502(fake, "POST", ISSUE_COMMENTS, 1)

    again = await github.reply(where, "Paused.")

    comments = fake.issue_comments(REPO, 1)
    assert len(comments) == 3 and again.id == comments[-1]["id"]
    assert posts(fake, ISSUE_COMMENTS) == 2


async def test_a_reply_in_a_thread_whose_answer_was_lost_is_posted_once(
    fake: FakeGitHub, github: GitHubPlatform, lose: Lose
) -> None:
    root = fake.add_review_comment(REPO, 1, path="app.py", line=2, body="why?")
    replies = f"/repos/{REPO}/pulls/1/comments/{root['id']}/replies"
    lose(fake, "POST", replies, 1)

    ref = await github.reply(
        CommentRef(id=root["id"], kind="inline", number=1, thread=str(root["id"])), "Because."
    )

    answers = [c for c in fake.review_comments(REPO, 1) if c.get("in_reply_to_id") == root["id"]]
    assert [c["id"] for c in answers] == [ref.id]
    assert posts(fake, replies) == 1


# --- Writes that are idempotent in effect ------------------------------------------------------


async def test_a_status_whose_answer_was_lost_is_simply_set_again(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    pr = await github.pull_request(1)
    statuses = f"/repos/{REPO}/statuses/{HEAD}"
    _502(fake, "POST", statuses, 1)

    await github.set_status(pr, "success", "No findings")

    # The newest status of a context is the commit's: the same one twice changes nothing.
    assert [s["state"] for s in fake.statuses(REPO, HEAD)] == ["success", "success"]
    assert fake.requests_to("GET", f"/repos/{REPO}/commits/*") == []


async def test_a_reaction_whose_answer_was_lost_is_simply_sent_again(
    fake: FakeGitHub, github: GitHubPlatform
) -> None:
    asked = fake.add_issue_comment(REPO, 1, "@arbiter review")
    _502(fake, "POST", f"/repos/{REPO}/issues/comments/{asked['id']}/reactions", 1)

    await github.react(CommentRef(id=asked["id"], kind="conversation", number=1), "eyes")

    assert fake.reactions(asked["id"]) == ["eyes"]  # GitHub keeps one reaction per user


async def test_a_write_that_never_reached_github_is_not_a_lost_answer(
    make_github: MakeGitHub, mode: str, manual_clock: ManualClock
) -> None:
    from tests.conftest import free_port

    github = make_github(
        mode, github_base_url=f"http://127.0.0.1:{free_port()}", integration_max_retries=1
    ).for_repo(REPO, 7)
    ref = CommentRef(id=1, kind="conversation", number=1)

    with pytest.raises(PlatformError, match="could not reach GitHub") as caught:
        await github.reply(ref, "Hi")

    assert not isinstance(caught.value, WriteUncertain)
    assert manual_clock.sleeps == [0.5]
