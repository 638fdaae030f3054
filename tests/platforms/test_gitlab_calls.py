"""Every GitLab Platform call but the review, over HTTP against the fake GitLab."""

from __future__ import annotations

import pytest

from platforms.base import CommentRef, PlatformError, PullRequest, SinceNotAncestor
from platforms.gitlab import GitLabPlatform
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_PROJECT, MakeGitLab, visible

H1, H2, BASE, START = "a1" * 20, "b2" * 20, "c3" * 20, "d4" * 20
APP = "import os\n\n\ndef run():\n    return os.system('ls')\n"


@pytest.fixture
def seeded(gitlab_fake: FakeGitLab) -> FakeGitLab:
    gitlab_fake.add_merge_request(
        GL_PROJECT,
        7,
        files=[MRFile.added("app.py", APP)],
        head_sha=H1,
        base_sha=BASE,
        title="Run commands",
        description="Adds run()",
        author="dev",
        labels=["backend", "security"],
        source_branch="feature/run",
    )
    return gitlab_fake


# --- The merge request ---------------------------------------------------------------------------


async def test_a_merge_request_reads_as_a_pull_request(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await gitlab_platform.pull_request(7)

    assert (pr.repo, pr.number, pr.title, pr.body) == (GL_PROJECT, 7, "Run commands", "Adds run()")
    assert (pr.base_sha, pr.start_sha, pr.head_sha) == (BASE, BASE, H1)
    assert (pr.base_ref, pr.head_ref, pr.default_branch) == ("main", "feature/run", "main")
    assert (pr.author, pr.author_is_bot, pr.draft, pr.state) == ("dev", False, False, "open")
    assert pr.labels == ("backend", "security")
    assert pr.url == f"{seeded.url}/{GL_PROJECT}/-/merge_requests/7"


async def test_start_sha_comes_from_diff_refs_when_the_target_branch_moved(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.add_merge_request(GL_PROJECT, 8, head_sha=H1, base_sha=BASE, start_sha=START)

    pr = await gitlab_platform.pull_request(8)

    assert (pr.base_sha, pr.start_sha, pr.head_sha) == (BASE, START, H1)


@pytest.mark.parametrize(
    ("state", "draft", "author", "expected"),
    [
        ("merged", False, "dev", ("merged", False, False)),
        ("closed", False, "dev", ("closed", False, False)),
        ("locked", False, "dev", ("closed", False, False)),
        ("opened", True, "dev", ("open", True, False)),
        ("opened", False, "project_42_bot_1a2b", ("open", False, True)),
    ],
)
async def test_merge_request_states_drafts_and_bot_authors(
    gitlab_fake: FakeGitLab,
    gitlab_platform: GitLabPlatform,
    state: str,
    draft: bool,
    author: str,
    expected: tuple[str, bool, bool],
) -> None:
    gitlab_fake.add_merge_request(GL_PROJECT, 9, state=state, draft=draft, author=author)

    pr = await gitlab_platform.pull_request(9)

    assert (pr.state, pr.draft, pr.author_is_bot) == expected


async def test_a_diff_gitlab_is_still_preparing_is_a_retryable_error(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.add_merge_request(GL_PROJECT, 10, preparing=True)

    with pytest.raises(PlatformError, match="not prepared the diff of !10"):
        await gitlab_platform.pull_request(10)


async def test_a_missing_merge_request_is_a_404(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    with pytest.raises(PlatformError, match="merge request !99") as caught:
        await gitlab_platform.pull_request(99)
    assert caught.value.status == 404


async def test_a_project_the_token_cannot_see_is_a_404(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    gitlab_fake.add_project("other/secret", bot_access=None)
    gitlab_fake.add_merge_request("other/secret", 1)

    with pytest.raises(PlatformError) as caught:
        await make_gitlab().for_repo("other/secret").pull_request(1)
    assert caught.value.status == 404
    assert str(caught.value) == (
        "GitLab refused to read merge request !1 of other/secret: 404 Project Not Found"
    )


async def test_a_project_can_be_named_by_its_numeric_id(
    gitlab_fake: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    project = gitlab_fake.add_project("group/sub/by-id", id=4242)
    gitlab_fake.add_merge_request("group/sub/by-id", 3, head_sha=H1)

    pr = await make_gitlab().for_repo(4242).pull_request(3)

    assert (project["id"], pr.head_sha) == (4242, H1)
    assert gitlab_fake.requests_to("GET", "/api/v4/projects/4242/merge_requests/3")


# --- Changes -------------------------------------------------------------------------------------


async def test_changes_mark_added_renamed_removed_binary_and_collapsed_files(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    files = [
        MRFile.added("new.py", "x = 1\n"),
        MRFile.renamed("old/name.py", "new/name.py", "@@ -1 +1 @@\n-a = 1\n+a = 2\n"),
        MRFile.renamed("moved.txt", "here.txt"),
        MRFile.removed("gone.py", "y = 2\nz = 3\n"),
        MRFile("logo.png"),
        MRFile("huge.sql", "@@ -1 +1 @@\n-a\n+b\n", too_large=True),
    ]
    gitlab_fake.add_merge_request(GL_PROJECT, 11, files=files, head_sha=H1, base_sha=BASE)
    pr = await gitlab_platform.pull_request(11)

    changes = await gitlab_platform.changes(pr)

    got = {f.path: f for f in changes.files}
    assert [f.path for f in changes.files] == [
        "new.py",
        "new/name.py",
        "here.txt",
        "gone.py",
        "logo.png",
        "huge.sql",
    ]
    assert (got["new.py"].status, got["new.py"].additions, got["new.py"].patch) == (
        "added",
        1,
        "@@ -0,0 +1,1 @@\n+x = 1\n",
    )
    renamed = got["new/name.py"]
    assert (renamed.status, renamed.previous_path, renamed.additions, renamed.deletions) == (
        "renamed",
        "old/name.py",
        1,
        1,
    )
    pure = got["here.txt"]
    assert (pure.status, pure.previous_path, pure.patch, pure.binary) == (
        "renamed",
        "moved.txt",
        "",
        False,
    )
    assert (got["gone.py"].status, got["gone.py"].deletions) == ("removed", 2)
    assert (got["logo.png"].binary, got["logo.png"].patch) == (True, None)
    huge = got["huge.sql"]
    assert (huge.too_large, huge.binary, huge.patch) == (True, False, None)
    assert (changes.base_sha, changes.head_sha, changes.incremental) == (BASE, H1, False)


async def test_changes_read_every_page(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    files = [MRFile.added(f"src/f{i:03}.py", f"v = {i}\n") for i in range(230)]
    gitlab_fake.add_merge_request(GL_PROJECT, 12, files=files)
    pr = await gitlab_platform.pull_request(12)

    changes = await gitlab_platform.changes(pr)

    assert [f.path for f in changes.files] == [f.new_path for f in files]
    pages = gitlab_fake.requests_to("GET", f"{project_path(GL_PROJECT)}/merge_requests/12/diffs")
    assert [(r.query.get("page", "1"), r.query["per_page"]) for r in pages] == [
        ("1", "100"),
        ("2", "100"),
        ("3", "100"),
    ]
    assert not changes.truncated


async def test_changes_fall_back_to_the_changes_endpoint_before_gitlab_15_7(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    seeded.fail("GET", f"{project_path(GL_PROJECT)}/merge_requests/7/diffs", 404)
    pr = await gitlab_platform.pull_request(7)

    changes = await gitlab_platform.changes(pr)

    assert [f.path for f in changes.files] == ["app.py"]
    assert seeded.requests_to("GET", f"{project_path(GL_PROJECT)}/merge_requests/7/changes")


async def test_incremental_changes_are_the_comparison_from_the_last_reviewed_head(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    later = MRFile.added("later.py", "eval(input())\n")
    seeded.push(GL_PROJECT, 7, head_sha=H2, files=[MRFile.added("app.py", APP), later])
    seeded.add_compare(GL_PROJECT, H1, H2, files=[later])
    pr = await gitlab_platform.pull_request(7)

    changes = await gitlab_platform.changes(pr, since=H1)

    assert [f.path for f in changes.files] == ["later.py"]
    assert (changes.base_sha, changes.head_sha, changes.incremental) == (H1, H2, True)
    (compare,) = seeded.requests_to("GET", f"{project_path(GL_PROJECT)}/repository/compare")
    assert (compare.query["from"], compare.query["to"]) == (H1, H2)


async def test_a_force_push_makes_the_incremental_diff_unavailable(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    seeded.push(GL_PROJECT, 7, head_sha=H2, files=[MRFile.added("app.py", APP)], force=True)
    pr = await gitlab_platform.pull_request(7)

    with pytest.raises(SinceNotAncestor, match="no longer in the history of !7"):
        await gitlab_platform.changes(pr, since=H1)
    with pytest.raises(SinceNotAncestor) as unknown:
        await gitlab_platform.changes(pr, since="e5" * 20)
    assert unknown.value.status == 400


# --- Files, branches, people ---------------------------------------------------------------------


async def test_files_are_read_at_a_ref_and_missing_ones_are_none(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.add_file(GL_PROJECT, ".arbiter.yml", "review:\n  level: strict\n")
    first = gitlab_fake.branch_head(GL_PROJECT, "main")
    gitlab_fake.add_file(GL_PROJECT, ".arbiter.yml", "enabled: false\n")
    gitlab_fake.add_file(GL_PROJECT, "docs/é.md", "héllo\n")

    assert await gitlab_platform.default_branch() == "main"
    head = await gitlab_platform.branch_head("main")
    assert head == gitlab_fake.branch_head(GL_PROJECT, "main") != first
    assert await gitlab_platform.read_file(".arbiter.yml", head) == "enabled: false\n"
    assert await gitlab_platform.read_file(".arbiter.yml", first) == "review:\n  level: strict\n"
    assert await gitlab_platform.read_file("docs/é.md", "main") == "héllo\n"
    assert await gitlab_platform.read_file("nope.yml", head) is None


async def test_a_branch_that_does_not_exist_is_a_404(gitlab_platform: GitLabPlatform) -> None:
    with pytest.raises(PlatformError, match="head of release/9") as caught:
        await gitlab_platform.branch_head("release/9")
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ("owner", "admin"),
        ("maintainer", "admin"),
        ("developer", "write"),
        ("reporter", "read"),
        ("guest", "read"),
        (None, "none"),
    ],
)
async def test_permission_follows_the_members_access_level(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform, access: str | None, expected: str
) -> None:
    gitlab_fake.add_user("someone", project=GL_PROJECT, access=access)

    assert await gitlab_platform.permission("someone") == expected


async def test_permission_of_an_unknown_or_blocked_user_is_none(
    gitlab_fake: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gitlab_fake.add_user("blocked", project=GL_PROJECT, access="maintainer", state="blocked")

    assert await gitlab_platform.permission("nobody-at-all") == "none"
    assert await gitlab_platform.permission("blocked") == "none"


# --- Notes, replies, statuses, emoji -------------------------------------------------------------


async def _pr(platform: GitLabPlatform) -> PullRequest:
    return await platform.pull_request(7)


async def test_the_summary_note_is_found_again_and_edited_in_place(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await _pr(gitlab_platform)
    # Someone quoting our marker does not make their note ours.
    seeded.add_note(GL_PROJECT, 7, "<!-- arbiter:summary -->\nfake summary", author="dev")
    assert await gitlab_platform.find_comment(pr, "summary") is None

    first = await gitlab_platform.upsert_comment(pr, "summary", "## Review\nall good")
    again = await gitlab_platform.upsert_comment(pr, "summary", "## Review\nall good")
    edited = await gitlab_platform.upsert_comment(pr, "summary", "## Review\none finding")

    assert first.id == again.id == edited.id
    assert first.url == f"{seeded.url}/{GL_PROJECT}/-/merge_requests/7#note_{first.id}"
    ours = [n for n in seeded.notes(GL_PROJECT, 7) if n["author"]["username"] == "arbiter-bot"]
    assert [n["body"] for n in ours] == ["<!-- arbiter:summary -->\n## Review\none finding"]
    assert len(seeded.requests_to("PUT", f"{project_path(GL_PROJECT)}/merge_requests/7/notes/*"))
    assert len(seeded.requests_to("PUT", "*")) == 1  # the unchanged body was not written again
    assert await gitlab_platform.find_comment(pr, "summary") == edited


async def test_a_reply_goes_into_the_discussion(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    position = {"new_path": "app.py", "old_path": "app.py", "new_line": 5, "old_line": None}
    question = seeded.add_note(GL_PROJECT, 7, "@arbiter why?", position=position)

    ref = await gitlab_platform.reply(
        CommentRef(id=question["id"], kind="inline", number=7, thread=question["discussion_id"]),
        "Because it runs a shell.",
    )

    (discussion,) = seeded.discussions(GL_PROJECT, 7)
    assert [visible(n["body"]) for n in discussion["notes"]] == [
        "@arbiter why?",
        "Because it runs a shell.",
    ]
    assert discussion["notes"][1]["type"] == "DiffNote"
    assert (ref.id, ref.kind, ref.thread) == (
        discussion["notes"][1]["id"],
        "inline",
        question["discussion_id"],
    )


async def test_a_reply_to_a_lone_note_threads_it_and_without_a_thread_is_a_new_note(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    lone = seeded.add_note(GL_PROJECT, 7, "@arbiter help")

    await gitlab_platform.reply(
        CommentRef(lone["id"], "conversation", number=7, thread=lone["discussion_id"]), "Hi!"
    )
    await gitlab_platform.reply(CommentRef(lone["id"], "conversation", number=7), "Hello again")

    first, second = seeded.discussions(GL_PROJECT, 7)
    assert [visible(n["body"]) for n in first["notes"]] == ["@arbiter help", "Hi!"]
    assert first["individual_note"] is False
    assert [visible(n["body"]) for n in second["notes"]] == ["Hello again"]


async def test_a_reply_into_a_discussion_that_is_gone_fails(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    with pytest.raises(PlatformError, match="Discussion Not Found") as caught:
        await gitlab_platform.reply(CommentRef(1, "inline", number=7, thread="f" * 40), "hi")
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("state", "gitlab_state"),
    [("pending", "running"), ("success", "success"), ("failure", "failed"), ("error", "failed")],
)
async def test_statuses_map_to_gitlab_states_under_the_context_name(
    seeded: FakeGitLab, make_gitlab: MakeGitLab, state: str, gitlab_state: str
) -> None:
    platform = make_gitlab(status_check_context="arbiter/review").for_repo(GL_PROJECT)
    pr = await platform.pull_request(7)

    await platform.set_status(pr, state, "Arbiter  says\nso", "https://arbiter.example/r/1")  # type: ignore[arg-type]

    (change,) = seeded.status_changes(GL_PROJECT, H1)
    assert (change["status"], change["name"], change["description"], change["target_url"]) == (
        gitlab_state,
        "arbiter/review",
        "Arbiter says so",
        "https://arbiter.example/r/1",
    )


async def test_a_status_set_again_is_accepted_and_a_review_moves_running_to_success(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await _pr(gitlab_platform)

    await gitlab_platform.set_status(pr, "pending", "Arbiter is reviewing")
    await gitlab_platform.set_status(pr, "pending", "Arbiter is reviewing")  # a retried job
    await gitlab_platform.set_status(pr, "success", "No findings")

    posts = seeded.requests_to("POST", f"{project_path(GL_PROJECT)}/statuses/{H1}")
    assert [r.status for r in posts] == [201, 400, 201]
    (record,) = seeded.statuses(GL_PROJECT, H1)
    assert (record["status"], record["description"]) == ("success", "No findings")


async def test_a_long_status_description_is_trimmed_and_other_refusals_raise(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    pr = await _pr(gitlab_platform)

    await gitlab_platform.set_status(pr, "failure", "x" * 400)

    (change,) = seeded.status_changes(GL_PROJECT, H1)
    assert len(change["description"]) == 255 and change["description"].endswith("…")
    seeded.set_access(GL_PROJECT, "arbiter-bot", "reporter")
    with pytest.raises(PlatformError, match="403") as caught:
        await gitlab_platform.set_status(pr, "pending", "again")
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("reaction", "emoji"),
    [("+1", "thumbsup"), ("-1", "thumbsdown"), ("eyes", "eyes"), ("confused", "confused")],
)
async def test_reactions_are_award_emoji_and_awarding_twice_is_fine(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform, reaction: str, emoji: str
) -> None:
    note = seeded.add_note(GL_PROJECT, 7, "@arbiter review")
    ref = CommentRef(note["id"], "conversation", number=7, thread=note["discussion_id"])

    await gitlab_platform.react(ref, reaction)  # type: ignore[arg-type]
    await gitlab_platform.react(ref, reaction)  # type: ignore[arg-type]

    assert seeded.award_emoji(note["id"]) == [emoji]
    awards = seeded.requests_to("POST", f"{project_path(GL_PROJECT)}/merge_requests/7/notes/*")
    assert [r.status for r in awards] == [201, 404]


async def test_reacting_to_a_note_that_is_gone_raises(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    with pytest.raises(PlatformError, match="Note Not Found"):
        await gitlab_platform.react(CommentRef(987654, "conversation", number=7), "eyes")
