"""Writes whose answer is lost: GitLab carried them out, then a 502, a dropped connection or an
answer later than the client waits. Each is looked for on GitLab (by its hidden marker) before
it is sent again, so the merge request shows it once; one that did not land is sent again.

GitLab's REST API honours no `Idempotency-Key` on notes, discussions or draft notes (it only
sends one on its webhooks), so the markers are what make these writes happen once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from platforms.base import CommentRef, InlineComment, PlatformError, WriteUncertain
from platforms.gitlab import GitLabPlatform
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_PROJECT, MakeGitLab, Sleeps, visible

H1, BASE = "a1" * 20, "c3" * 20
MR = f"{project_path(GL_PROJECT)}/merge_requests/5"
MODIFIED = "@@ -1,3 +1,4 @@\n import os\n-os.system(cmd)\n+subprocess.run(cmd)\n+print('done')\n \n"
COMMENTS = [InlineComment("app.py", 2, "one"), InlineComment("app.py", 3, "two")]

Lose = Callable[[FakeGitLab, str, str, int], None]


def _502(fake: FakeGitLab, method: str, path: str, times: int) -> None:
    fake.fail(method, path, 502, times=times, landed=True)


def _dropped(fake: FakeGitLab, method: str, path: str, times: int) -> None:
    fake.disconnect(method, path, times=times, landed=True)


def _too_late(fake: FakeGitLab, method: str, path: str, times: int) -> None:
    fake.delay(method, path, 5, times=times, landed=True)  # the client waits 0.5 s


LOSSES = {"502": _502, "dropped": _dropped, "too late": _too_late}


@pytest.fixture(params=list(LOSSES))
def lose(request: pytest.FixtureRequest) -> Lose:
    return LOSSES[str(request.param)]


@pytest.fixture
def gitlab(gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab) -> GitLabPlatform:
    gitlab_fake.add_merge_request(
        GL_PROJECT, 5, files=[MRFile.modified("app.py", MODIFIED)], head_sha=H1, base_sha=BASE
    )
    return make_gitlab(integration_timeout=0.5).for_repo(GL_PROJECT)


def texts(fake: FakeGitLab) -> list[str]:
    return [visible(n["body"]) for n in fake.notes(GL_PROJECT, 5)]


# --- The review ---------------------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 3])
async def test_drafts_gitlab_made_but_whose_answers_were_lost_are_found_not_made_again(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose, times: int
) -> None:
    pr = await gitlab.pull_request(5)
    lose(gitlab_fake, "POST", f"{MR}/draft_notes", times)

    posted = await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert texts(gitlab_fake) == ["one", "two", "Review"]
    assert posted.posted == tuple(COMMENTS)
    assert posted.id == gitlab_fake.notes(GL_PROJECT, 5)[-1]["id"]
    assert gitlab_fake.arrived("POST", f"{MR}/draft_notes") == 3  # each sent once
    assert gitlab_fake.requests_to("DELETE", "*") == []


@pytest.mark.parametrize("times", [1, 3])
async def test_discussions_and_the_body_gitlab_made_are_found_not_posted_again(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose, times: int
) -> None:
    gitlab_fake.draft_notes_supported = False  # an older GitLab: one discussion at a time
    pr = await gitlab.pull_request(5)
    lose(gitlab_fake, "POST", f"{MR}/discussions", times)
    lose(gitlab_fake, "POST", f"{MR}/notes", 1)  # the body, posted last

    posted = await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert texts(gitlab_fake) == ["one", "two", "Review"]
    assert posted.posted == tuple(COMMENTS)
    assert gitlab_fake.arrived("POST", f"{MR}/discussions") == 2
    assert gitlab_fake.arrived("POST", f"{MR}/notes") == 1


async def test_a_review_without_a_key_is_reconciled_by_its_words(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform
) -> None:
    gitlab_fake.draft_notes_supported = False
    pr = await gitlab.pull_request(5)
    _502(gitlab_fake, "POST", f"{MR}/discussions", 2)
    _502(gitlab_fake, "POST", f"{MR}/notes", 1)

    await gitlab.post_review(pr, "Review", COMMENTS)

    assert texts(gitlab_fake) == ["one", "two", "Review"]


async def test_a_publication_whose_answer_was_lost_is_done(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose
) -> None:
    pr = await gitlab.pull_request(5)
    lose(gitlab_fake, "POST", f"{MR}/draft_notes/bulk_publish", 1)

    posted = await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert texts(gitlab_fake) == ["one", "two", "Review"]
    assert gitlab_fake.draft_notes(GL_PROJECT, 5) == []
    assert posted.id == gitlab_fake.notes(GL_PROJECT, 5)[-1]["id"]


async def test_drafts_published_one_by_one_whose_answers_were_lost_are_done(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform
) -> None:
    gitlab_fake.bulk_publish_supported = False
    pr = await gitlab.pull_request(5)
    # Published, answered 502: sent again, GitLab no longer has the draft (404).
    _502(gitlab_fake, "PUT", f"{MR}/draft_notes/*/publish", 3)

    await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert sorted(texts(gitlab_fake)) == ["Review", "one", "two"]
    assert gitlab_fake.draft_notes(GL_PROJECT, 5) == []


async def test_a_stale_draft_whose_deletion_answer_was_lost_is_gone(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform
) -> None:
    pr = await gitlab.pull_request(5)
    gitlab_fake.fail("POST", f"{MR}/draft_notes/bulk_publish", 500, times=4)  # first try dies
    with pytest.raises(PlatformError):
        await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")
    _502(gitlab_fake, "DELETE", f"{MR}/draft_notes/*", 3)  # deleted, answered 502: then a 404

    await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert texts(gitlab_fake) == ["one", "two", "Review"]
    assert gitlab_fake.draft_notes(GL_PROJECT, 5) == []


async def test_a_draft_whose_answers_are_lost_every_time_fails_plainly(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    gitlab_fake.add_merge_request(
        GL_PROJECT, 5, files=[MRFile.modified("app.py", MODIFIED)], head_sha=H1, base_sha=BASE
    )
    gitlab = make_gitlab(integration_max_retries=2).for_repo(GL_PROJECT)
    pr = await gitlab.pull_request(5)
    gitlab_fake.fail("POST", f"{MR}/draft_notes", 503, times=10)  # never carried out

    with pytest.raises(WriteUncertain) as caught:
        await gitlab.post_review(pr, "Review", COMMENTS, key="review-9")

    assert caught.value.status == 503 and "503" in str(caught.value)
    assert gitlab_fake.arrived("POST", f"{MR}/draft_notes") == 3
    assert gitlab_fake.draft_notes(GL_PROJECT, 5) == [] and gitlab_fake.notes(GL_PROJECT, 5) == []
    assert sleeps.seconds == [0.5, 1.0]


# --- The summary, replies -----------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 3])
async def test_a_summary_note_gitlab_made_is_found_not_posted_again(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose, times: int
) -> None:
    pr = await gitlab.pull_request(5)
    lose(gitlab_fake, "POST", f"{MR}/notes", times)

    ref = await gitlab.upsert_comment(pr, "summary", "## Review\nall good")

    [note] = gitlab_fake.notes(GL_PROJECT, 5)
    assert ref.id == note["id"]
    assert note["body"] == "<!-- arbiter:summary -->\n## Review\nall good"
    assert gitlab_fake.arrived("POST", f"{MR}/notes") == 1


async def test_a_reply_in_a_discussion_whose_answer_was_lost_is_posted_once(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose
) -> None:
    position = {"new_path": "app.py", "old_path": "app.py", "new_line": 2, "old_line": None}
    question = gitlab_fake.add_note(GL_PROJECT, 5, "@arbiter why?", position=position)
    discussion = question["discussion_id"]
    lose(gitlab_fake, "POST", f"{MR}/discussions/{discussion}/notes", 1)

    ref = await gitlab.reply(
        CommentRef(id=question["id"], kind="inline", number=5, thread=discussion), "Because."
    )

    (found,) = gitlab_fake.discussions(GL_PROJECT, 5)
    assert [visible(n["body"]) for n in found["notes"]] == ["@arbiter why?", "Because."]
    assert ref.id == found["notes"][1]["id"]


async def test_a_reply_as_a_new_note_whose_answer_was_lost_is_posted_once(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform, lose: Lose
) -> None:
    asked = gitlab_fake.add_note(GL_PROJECT, 5, "@arbiter help")
    lose(gitlab_fake, "POST", f"{MR}/notes", 1)

    ref = await gitlab.reply(CommentRef(asked["id"], "conversation", number=5), "Hello")

    assert texts(gitlab_fake) == ["@arbiter help", "Hello"]
    assert ref.id == gitlab_fake.notes(GL_PROJECT, 5)[-1]["id"]


async def test_the_same_reply_twice_is_two_replies(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform
) -> None:
    asked = gitlab_fake.add_note(GL_PROJECT, 5, "@arbiter pause")
    where = CommentRef(asked["id"], "conversation", number=5)
    await gitlab.reply(where, "Paused.")
    _502(gitlab_fake, "POST", f"{MR}/notes", 1)

    again = await gitlab.reply(where, "Paused.")

    assert texts(gitlab_fake) == ["@arbiter pause", "Paused.", "Paused."]
    assert again.id == gitlab_fake.notes(GL_PROJECT, 5)[-1]["id"]


# --- Writes that are idempotent in effect ------------------------------------------------------


async def test_a_status_and_an_emoji_whose_answers_were_lost_are_simply_sent_again(
    gitlab_fake: FakeGitLab, gitlab: GitLabPlatform
) -> None:
    pr = await gitlab.pull_request(5)
    asked = gitlab_fake.add_note(GL_PROJECT, 5, "@arbiter review")
    _502(gitlab_fake, "POST", f"{project_path(GL_PROJECT)}/statuses/{H1}", 1)
    _502(gitlab_fake, "POST", f"{MR}/notes/{asked['id']}/award_emoji", 1)

    await gitlab.set_status(pr, "success", "No findings")
    await gitlab.react(CommentRef(asked["id"], "conversation", number=5), "eyes")

    # GitLab makes a new status record for a finished one: the commit's status is success.
    assert {s["status"] for s in gitlab_fake.status_changes(GL_PROJECT, H1)} == {"success"}
    assert gitlab_fake.award_emoji(asked["id"]) == ["eyes"]


async def test_a_write_that_never_reached_gitlab_is_not_a_lost_answer(
    make_gitlab: MakeGitLab, sleeps: Sleeps
) -> None:
    from tests.conftest import free_port

    gitlab = make_gitlab(
        gitlab_base_url=f"http://127.0.0.1:{free_port()}", integration_max_retries=1
    ).for_repo(GL_PROJECT)

    with pytest.raises(PlatformError, match="could not reach GitLab") as caught:
        await gitlab.reply(CommentRef(1, "conversation", number=5), "Hi")

    assert not isinstance(caught.value, WriteUncertain)
    assert sleeps.seconds == [0.5]
