"""Contract tests: every Platform call over HTTP against the fake GitHub, in both auth modes."""

from __future__ import annotations

from typing import Any

import pytest

from platforms.base import CommentRef, InlineComment, PlatformError, SinceNotAncestor
from platforms.github import GitHubPlatform, comment_marker
from tests.fakes.github import FakeGitHub, PullFile
from tests.platforms.conftest import INSTALLATION, REPO, MakeGitHub, visible

PATCH = "@@ -1,3 +1,4 @@\n context one\n-old two\n+new two\n+new three\n context four"
# Line numbers in PATCH. RIGHT (new file): 1, 2, 3, 4 (context, added, added, context).
# LEFT (old file): 1, 2, 3 (context, removed, context).


def seed_pull(fake: FakeGitHub, number: int = 1, **fields: Any) -> dict[str, Any]:
    files = fields.pop("files", [PullFile("src/app.py", patch=PATCH)])
    return fake.add_pull(REPO, number, files=files, head_sha="h" * 40, base_sha="b" * 40, **fields)


# --- Reading ------------------------------------------------------------------------------------


async def test_pull_request_is_normalized(fake: FakeGitHub, platform: GitHubPlatform) -> None:
    seed_pull(
        fake,
        title="Add the parser",
        body="Fixes #3",
        author="dependabot[bot]",
        author_type="Bot",
        draft=True,
        labels=["bug", "parser"],
        head_ref="topic",
    )

    pr = await platform.pull_request(1)

    assert (pr.repo, pr.number, pr.title, pr.body) == (REPO, 1, "Add the parser", "Fixes #3")
    assert (pr.author, pr.author_is_bot, pr.draft) == ("dependabot[bot]", True, True)
    assert (pr.base_sha, pr.head_sha) == ("b" * 40, "h" * 40)
    assert (pr.base_ref, pr.head_ref, pr.default_branch) == ("main", "topic", "main")
    assert pr.state == "open"
    assert pr.labels == ("bug", "parser")
    assert pr.url == f"https://github.com/{REPO}/pull/1"


async def test_pull_request_states_and_null_body(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake, 1, merged=True)
    seed_pull(fake, 2, state="closed")

    merged, closed = await platform.pull_request(1), await platform.pull_request(2)

    assert (merged.state, merged.body) == ("merged", None)
    assert closed.state == "closed"


async def test_missing_pull_request_is_a_404_platform_error(platform: GitHubPlatform) -> None:
    with pytest.raises(PlatformError) as caught:
        await platform.pull_request(99)

    assert caught.value.status == 404
    assert "#99" in str(caught.value)


async def test_changes_mark_renamed_removed_binary_and_too_large(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(
        fake,
        files=[
            PullFile("src/app.py", patch=PATCH),
            PullFile("src/new.py", status="renamed", previous_filename="src/old.py"),
            PullFile("gone.py", patch="@@ -1 +0,0 @@\n-x = 1", status="removed"),
            PullFile("logo.png", status="added"),
            PullFile("data.json", additions=90000, deletions=3),
        ],
    )
    pr = await platform.pull_request(1)

    changes = await platform.changes(pr)

    by_path = {change.path: change for change in changes.files}
    assert list(by_path) == ["src/app.py", "src/new.py", "gone.py", "logo.png", "data.json"]
    app = by_path["src/app.py"]
    assert (app.patch, app.additions, app.deletions) == (PATCH, 2, 1)
    assert not app.binary and not app.too_large
    renamed = by_path["src/new.py"]
    assert (renamed.status, renamed.previous_path, renamed.binary) == (
        "renamed",
        "src/old.py",
        False,
    )
    assert by_path["gone.py"].status == "removed"
    assert by_path["logo.png"].binary and by_path["logo.png"].patch is None
    large = by_path["data.json"]
    assert large.too_large and not large.binary and large.patch is None
    assert (changes.base_sha, changes.head_sha) == ("b" * 40, "h" * 40)
    assert not changes.incremental and not changes.truncated


async def test_changes_since_a_commit_use_the_compare_api(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    fake.add_compare(REPO, "s" * 40, "h" * 40, files=[PullFile("src/app.py", patch=PATCH)])
    pr = await platform.pull_request(1)

    changes = await platform.changes(pr, since="s" * 40)

    assert changes.incremental
    assert (changes.base_sha, changes.head_sha) == ("s" * 40, "h" * 40)
    assert [change.path for change in changes.files] == ["src/app.py"]
    assert fake.requests_to("GET", f"/repos/{REPO}/compare/{'s' * 40}...{'h' * 40}")


@pytest.mark.parametrize("status", ["diverged", "behind", None])
async def test_changes_since_a_force_pushed_commit_say_so(
    fake: FakeGitHub, platform: GitHubPlatform, status: str | None
) -> None:
    seed_pull(fake)
    if status is not None:  # None: GitHub no longer knows the commit at all (404)
        fake.add_compare(REPO, "s" * 40, "h" * 40, status=status)
    pr = await platform.pull_request(1)

    with pytest.raises(SinceNotAncestor, match="force-pushed"):
        await platform.changes(pr, since="s" * 40)


async def test_changes_since_the_head_itself_are_empty(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    fake.add_compare(REPO, "h" * 40, "h" * 40, status="identical")
    pr = await platform.pull_request(1)

    changes = await platform.changes(pr, since="h" * 40)

    assert changes.incremental and changes.files == ()


async def test_read_file_text_missing_and_directories(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    fake.add_file(REPO, ".arbiter.yml", "review:\n  severity: high\n")
    fake.add_file(REPO, "docs/naïve café.md", "héllo\n", ref="feature/x")

    assert await platform.read_file(".arbiter.yml", "main") == "review:\n  severity: high\n"
    assert await platform.read_file("docs/naïve café.md", "feature/x") == "héllo\n"
    assert await platform.read_file("absent.txt", "main") is None
    assert await platform.read_file(".arbiter.yml", "no-such-branch") is None
    assert await platform.read_file("docs", "feature/x") is None  # a directory has no text


async def test_read_file_over_one_megabyte_goes_through_the_raw_media_type(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    big = ("x" * 99 + "\n") * 11000  # 1.1 MB
    fake.add_file(REPO, "big.txt", big)

    assert await platform.read_file("big.txt", "main") == big

    reads = fake.requests_to("GET", f"/repos/{REPO}/contents/big.txt")
    assert [r.headers["accept"] for r in reads] == [
        "application/vnd.github.v3+json",
        "application/vnd.github.raw",
    ]


async def test_default_branch(
    fake: FakeGitHub, platform: GitHubPlatform, make_github: MakeGitHub, mode: str
) -> None:
    fake.add_repo("octo/other", installation_id=7, default_branch="trunk")
    other = make_github(mode).for_repo("octo/other", 7)

    assert await platform.default_branch() == "main"
    assert await other.default_branch() == "trunk"


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
    ],
)
async def test_permission_maps_github_roles(
    fake: FakeGitHub, platform: GitHubPlatform, role: str, expected: str
) -> None:
    fake.set_permission(REPO, "alice", role)

    assert await platform.permission("alice") == expected


async def test_permission_of_strangers_is_none(fake: FakeGitHub, platform: GitHubPlatform) -> None:
    fake.fail("GET", f"/repos/{REPO}/collaborators/ghost/permission", 404)

    assert await platform.permission("mallory") == "none"  # not a collaborator of a private repo
    assert await platform.permission("ghost") == "none"  # a user GitHub does not know


# --- Writing ------------------------------------------------------------------------------------


async def test_post_review_sends_one_comment_review_with_every_inline_comment(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    pr = await platform.pull_request(1)
    comments = [
        InlineComment("src/app.py", 2, "Is two right?"),
        InlineComment("src/app.py", 3, "A range", start_line=2),
        InlineComment("src/app.py", 2, "The old line", side="LEFT"),
    ]

    posted = await platform.post_review(pr, "Summary", comments)

    assert posted.posted == tuple(comments) and posted.dropped == ()
    [review] = fake.reviews(REPO, 1)
    assert (review["id"], review["state"], visible(review["body"])) == (
        posted.id,
        "COMMENTED",
        "Summary",
    )
    assert review["commit_id"] == "h" * 40
    placed = [
        (c["path"], c["line"], c["side"], c["start_line"], c["body"])
        for c in fake.review_comments(REPO, 1)
    ]
    assert placed == [
        ("src/app.py", 2, "RIGHT", None, "Is two right?"),
        ("src/app.py", 3, "RIGHT", 2, "A range"),
        ("src/app.py", 2, "LEFT", None, "The old line"),
    ]
    [request] = fake.requests_to("POST", f"/repos/{REPO}/pulls/1/reviews")
    assert request.json()["event"] == "COMMENT"


async def test_upsert_comment_finds_its_marker_again_across_pages(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    for n in range(120):  # push the bot's comment onto the second page of 100
        fake.add_issue_comment(REPO, 1, f"comment {n}")
    pr = await platform.pull_request(1)

    first = await platform.upsert_comment(pr, "summary", "Reviewed 1 file")
    again = await platform.upsert_comment(pr, "summary", "Reviewed 2 files")

    assert first.id == again.id and again.kind == "conversation" and again.number == 1
    mine = [c for c in fake.issue_comments(REPO, 1) if comment_marker("summary") in c["body"]]
    assert [c["body"] for c in mine] == [f"{comment_marker('summary')}\nReviewed 2 files"]
    listed = fake.requests_to("GET", f"/repos/{REPO}/issues/1/comments")
    assert {r.query.get("page", "1") for r in listed} == {"1", "2"}


async def test_upsert_comment_leaves_a_marker_in_someone_elses_comment_alone(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    quoted = f"> {comment_marker('summary')}\n> quoting the bot"
    human = fake.add_issue_comment(REPO, 1, quoted, author="mallory")
    pr = await platform.pull_request(1)

    ref = await platform.upsert_comment(pr, "summary", "Reviewed")

    assert ref.id != human["id"]
    bodies = {c["id"]: c["body"] for c in fake.issue_comments(REPO, 1)}
    assert bodies[human["id"]] == quoted
    assert fake.requests_to("PATCH", "*") == []


async def test_upsert_comment_with_an_unchanged_body_does_not_edit(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    pr = await platform.pull_request(1)

    await platform.upsert_comment(pr, "summary", "Same")
    await platform.upsert_comment(pr, "summary", "Same")

    assert len(fake.issue_comments(REPO, 1)) == 1
    assert fake.requests_to("PATCH", "*") == []


async def test_one_listing_of_the_comments_answers_every_marker_until_a_write(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    """A review looks for the repository file's comment, then for its summary: GitHub is asked
    for the listing once. A write of ours forgets it: the next look reads it again."""
    seed_pull(fake)
    fake.add_issue_comment(REPO, 1, "a human's comment")
    pr = await platform.pull_request(1)
    listing = f"/repos/{REPO}/issues/1/comments"

    assert await platform.find_comment(pr, "repo-config") is None
    made = await platform.upsert_comment(pr, "summary", "Reviewed 1 file")
    assert len(fake.requests_to("GET", listing)) == 1

    found = await platform.find_comment(pr, "summary")
    assert found is not None and found.id == made.id
    assert len(fake.requests_to("GET", listing)) == 2


async def test_a_comment_deleted_after_the_listing_was_read_is_made_anew(
    fake: FakeGitHub, platform: GitHubPlatform, make_github: MakeGitHub, mode: str
) -> None:
    seed_pull(fake)
    pr = await platform.pull_request(1)
    first = await platform.upsert_comment(pr, "summary", "Reviewed 1 file")
    job = make_github(mode).for_repo(REPO, INSTALLATION)  # the next job: a platform of its own
    assert await job.find_comment(pr, "repo-config") is None  # the listing, with the summary
    fake.delete_issue_comment(int(first.id))  # by someone, meanwhile

    again = await job.upsert_comment(pr, "summary", "Reviewed 2 files")

    assert again.id != first.id
    assert [c["body"] for c in fake.issue_comments(REPO, 1)] == [
        f"{comment_marker('summary')}\nReviewed 2 files"
    ]
    [edit] = fake.requests_to("PATCH", f"/repos/{REPO}/issues/comments/{first.id}")
    assert edit.status == 404


async def test_a_lost_answer_is_looked_for_in_a_new_listing(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    """The listing read before a comment is posted says nothing of whether the post landed."""
    seed_pull(fake)
    pr = await platform.pull_request(1)
    assert await platform.find_comment(pr, "repo-config") is None  # the listing, kept
    fake.fail("POST", f"/repos/{REPO}/issues/1/comments", 502, landed=True)

    await platform.upsert_comment(pr, "summary", "Reviewed 1 file")

    assert len(fake.issue_comments(REPO, 1)) == 1
    assert len(fake.requests_to("POST", f"/repos/{REPO}/issues/1/comments")) == 1


async def test_reply_in_an_inline_thread_goes_to_its_first_comment(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    root = fake.add_review_comment(REPO, 1, path="src/app.py", line=2, body="why?")
    follow = fake.add_review_comment(
        REPO, 1, path="src/app.py", line=2, body="and?", in_reply_to=root["id"]
    )
    asked = CommentRef(id=follow["id"], kind="inline", number=1, thread=str(root["id"]))

    ref = await platform.reply(asked, "Because.")

    assert (ref.kind, ref.number, ref.thread) == ("inline", 1, str(root["id"]))
    reply = next(c for c in fake.review_comments(REPO, 1) if c["id"] == ref.id)
    assert (visible(reply["body"]), reply["in_reply_to_id"], reply["path"]) == (
        "Because.",
        root["id"],
        "src/app.py",
    )
    assert fake.requests_to("POST", f"/repos/{REPO}/pulls/1/comments/{root['id']}/replies")


async def test_reply_to_a_conversation_comment_comments_on_the_pull_request(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    asked = fake.add_issue_comment(REPO, 1, "@arbiter why?")

    ref = await platform.reply(CommentRef(id=asked["id"], kind="conversation", number=1), "Hi")

    assert ref.kind == "conversation"
    assert [visible(c["body"]) for c in fake.issue_comments(REPO, 1)] == ["@arbiter why?", "Hi"]


async def test_reply_needs_the_pull_request_number(platform: GitHubPlatform) -> None:
    with pytest.raises(PlatformError, match="no pull request number"):
        await platform.reply(CommentRef(id=5, kind="conversation"), "Hi")


async def test_set_status_uses_the_configured_context_and_trims_the_description(
    fake: FakeGitHub, make_github: MakeGitHub, mode: str
) -> None:
    platform = make_github(mode, status_check_context="ci/arbiter").for_repo(REPO, 7)
    seed_pull(fake)
    pr = await platform.pull_request(1)
    long = "Found " + "many problems, " * 20

    await platform.set_status(pr, "pending", "Reviewing…", "https://arbiter.test/r/1")
    await platform.set_status(pr, "failure", long)

    first, second = fake.statuses(REPO, "h" * 40)
    assert (first["state"], first["context"], first["description"]) == (
        "pending",
        "ci/arbiter",
        "Reviewing…",
    )
    assert first["target_url"] == "https://arbiter.test/r/1"
    assert second["state"] == "failure" and second["target_url"] is None
    assert len(second["description"]) == 140 and second["description"].endswith("…")


async def test_react_on_conversation_and_inline_comments(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake)
    said = fake.add_issue_comment(REPO, 1, "@arbiter review")
    inline = fake.add_review_comment(REPO, 1, path="src/app.py", line=2, body="hm")

    await platform.react(CommentRef(id=said["id"], kind="conversation", number=1), "eyes")
    await platform.react(CommentRef(id=inline["id"], kind="inline", number=1), "+1")

    assert fake.reactions(said["id"]) == ["eyes"]
    assert fake.reactions(inline["id"], inline=True) == ["+1"]
    with pytest.raises(PlatformError, match="no reactions on a review"):
        await platform.react(CommentRef(id=1, kind="review", number=1), "+1")


async def test_calls_carry_the_delivery_id_and_arbiters_user_agent(
    fake: FakeGitHub, platform: GitHubPlatform, mode: str
) -> None:
    seed_pull(fake)

    await platform.pull_request(1)

    for request in fake.requests:
        assert request.headers["x-arbiter-delivery"] == "delivery-1"
        assert request.headers["user-agent"].startswith("Arbiter/")
    expected = "installation:7" if mode == "app" else "token"
    assert fake.requests_to("GET", f"/repos/{REPO}/pulls/1")[0].actor == expected


async def test_a_pull_request_with_3000_files_is_read_completely(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    files = [PullFile.added(f"src/m{n:04}.py", f"x = {n}\n") for n in range(3000)]
    seed_pull(fake, files=files)
    pr = await platform.pull_request(1)

    changes = await platform.changes(pr)

    assert [change.path for change in changes.files] == [f.filename for f in files]
    assert changes.files[2999].patch == "@@ -0,0 +1,1 @@\n+x = 2999"
    pages = fake.requests_to("GET", f"/repos/{REPO}/pulls/1/files")
    assert len(pages) == 30 and {r.query["per_page"] for r in pages} == {"100"}
    assert changes.truncated  # 3,000 is GitHub's limit: there may be more


async def test_github_stops_listing_at_3000_files(
    fake: FakeGitHub, platform: GitHubPlatform
) -> None:
    seed_pull(fake, files=[PullFile.added(f"f{n}.py", "x\n") for n in range(3005)])
    pr = await platform.pull_request(1)

    changes = await platform.changes(pr)

    assert len(changes.files) == 3000 and changes.truncated
