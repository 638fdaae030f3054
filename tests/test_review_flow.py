"""The pull-request review flow in one process: handlers, the review job, the repo config's
rules, dry runs, statuses and coalescing, against the fake GitHub and the fake OpenAI."""

from __future__ import annotations

import asyncio
import copy
import gc
import importlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import bot.core.review
import bot.review
import bot.runtime
from bot.events import from_github
from bot.review.policy import REVIEWING
from bot.review.request import REVIEW_JOB
from bot.runtime import Runtime
from bot.worker import slot_no_longer_needed
from config.settings import load_settings
from tests.conftest import fixture_json
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, LLMRequest, Reply, finding, findings_in_prompt, noting

PAT = "ghp_" + "f" * 36
REPO = "Codertocat/Hello-World"
H1, H2, H3, BASE = "a1" * 20, "b2" * 20, "c3" * 20, "d4" * 20
CODE = "def f(x):\n    return eval(x)\n"

MakeRuntime = Callable[..., Any]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeGitHub, FakeOpenAI]]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(REPO, 2, files=[PullFile.added("a.py", CODE)], head_sha=H1, base_sha=BASE)
        async with FakeOpenAI() as openai:
            openai.respond(findings_in_prompt([finding("a.py", 2, severity="critical")]))
            yield github, openai


@pytest.fixture
async def make_runtime(
    tmp_path: Path, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> AsyncIterator[MakeRuntime]:
    github, openai = fakes
    made: list[Runtime] = []

    async def make(*, settle_heap: bool = False, **overrides: Any) -> Runtime:
        settings = load_settings(
            **{
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/flow.db",
                "github_token": PAT,
                "github_webhook_secret": "s",
                "github_base_url": github.url,
                "llm_max_retries": 0,
                **openai.settings(),
                **overrides,
            }
        )
        runtime = Runtime(settings, settle_heap=settle_heap)
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


def _event(action: str, *, sender: dict[str, Any] | None = None, **extra: Any) -> Any:
    payload = copy.deepcopy(fixture_json("github/webhooks/pull_request/opened.payload.json"))
    payload["action"] = action
    if sender is not None:
        payload["sender"] = sender
    payload.update(extra)
    return from_github("pull_request", str(uuid.uuid4()), payload)


async def _handle(runtime: Runtime, action: str, **kwargs: Any) -> None:
    result = await runtime.router.dispatch(runtime.context(_event(action, **kwargs)))
    assert result.ok, result.failed


async def _work(runtime: Runtime) -> None:
    worker = runtime.make_worker()
    async with asyncio.timeout(30):
        await worker.run_until_idle()


async def test_a_bot_opening_a_pull_request_gets_no_review(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime()
    await _handle(runtime, "opened", sender={"login": "renovate[bot]", "type": "Bot", "id": 9})
    assert await runtime.store.list_jobs(kind=REVIEW_JOB) == []


async def test_closing_cancels_the_queued_review(make_runtime: MakeRuntime) -> None:
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _handle(runtime, "closed")
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert (job.state, job.last_error) == ("cancelled", "the pull request was closed")


async def test_quick_pushes_coalesce_and_the_queued_review_takes_the_newest_head(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, openai = fakes
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    # A worker elsewhere took the first review: it is running while three pushes arrive.
    (running,) = await runtime.store.claim("elsewhere", limit=5, lease_seconds=60)
    for head in (H2, H3):
        github.update_pull(REPO, 2, head_sha=head)
        await _handle(runtime, "synchronize")
    jobs = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert sorted(j.state for j in jobs) == ["cancelled", "queued", "running"]
    # The running one's key blocks the queued one until it is done.
    assert await runtime.store.claim("here", limit=5, lease_seconds=60) == []
    assert await runtime.store.complete(running.id, "elsewhere")
    await _work(runtime)
    (review,) = await runtime.store.list_reviews()
    assert review.head_sha == H3
    assert len(openai.requests) == 1


async def test_a_dry_run_records_the_review_and_posts_nothing(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, _ = fakes
    runtime = await make_runtime(post_comments=False, update_status=False)
    await _handle(runtime, "opened")
    await _work(runtime)
    (review,) = await runtime.store.list_reviews()
    assert (review.outcome, review.findings) == ("success", 1)
    assert github.reviews(REPO, 2) == []
    assert github.issue_comments(REPO, 2) == []
    assert github.statuses(REPO) == []
    (recorded,) = await runtime.store.findings_for("github", REPO, 2)
    assert recorded.posted is False  # not on the pull request: a later run may post it


async def test_fail_on_turns_the_status_red(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, _ = fakes
    github.add_file(REPO, ".arbiter.yml", "review:\n  fail_on: major\n")
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)
    states = [(s["state"], s["description"]) for s in github.statuses(REPO, H1)]
    assert states[-1][0] == "failure"
    assert "at or above major" in states[-1][1]
    (review,) = await runtime.store.list_reviews()
    assert review.outcome == "failure"


@pytest.mark.parametrize(
    ("config", "pull", "reason"),
    [
        ("enabled: false\n", {}, "turned off"),
        ("", {"draft": True}, "draft"),
        ("auto_review:\n  ignore_title_keywords: [WIP]\n", {"title": "WIP: try"}, "WIP"),
        ("auto_review:\n  labels: ['!skip-review']\n", {"labels": ["skip-review"]}, "label"),
        ("", {"base_ref": "feature/x"}, "base branch"),
    ],
)
async def test_the_repo_config_decides_what_is_reviewed(
    make_runtime: MakeRuntime,
    fakes: tuple[FakeGitHub, FakeOpenAI],
    config: str,
    pull: dict[str, Any],
    reason: str,
) -> None:
    github, openai = fakes
    if config:
        github.add_file(REPO, ".arbiter.yml", config)
    github.update_pull(REPO, 2, **pull)
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)
    assert await runtime.store.list_reviews() == []
    assert openai.requests == []
    assert github.statuses(REPO) == []
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert job.state == "done"  # skipped is a decision, not a failure


async def test_the_config_is_read_beside_the_pull_request_once_its_branch_is_known(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    """A review waits for one round trip, not two, before it knows its configuration: the
    default branch's head is asked for while the pull request is (a second review of the
    repository, the branch's name known from the first)."""
    github, _ = fakes
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)
    github.update_pull(REPO, 2, head_sha=H2)
    github.clear_requests()
    github.delay("GET", f"/repos/{REPO}/pulls/2", 0.5)  # answered after the branch's head
    await _handle(runtime, "synchronize")
    await _work(runtime)
    paths = [r.path for r in github.requests if r.method == "GET"]
    assert paths.index(f"/repos/{REPO}/git/ref/heads/main") < paths.index(f"/repos/{REPO}/pulls/2")
    assert [r.head_sha for r in await runtime.store.list_reviews()] == [H2, H1]


@pytest.mark.parametrize("old_branch", ["kept", "gone"])
async def test_a_new_default_branch_is_read_for_the_config_not_the_old_one(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI], old_branch: str
) -> None:
    """The configuration read ahead from the branch the last review read is used only if the
    pull request names that branch: once another is the default, its file decides, whether
    the old branch is still there (read ahead, not used) or gone (the read ahead fails)."""
    github, openai = fakes
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)
    assert len(openai.requests) == 1
    github.add_file(REPO, ".arbiter.yml", "enabled: false\n", ref="trunk")
    github.set_default_branch(REPO, "trunk", drop_old=old_branch == "gone")
    github.update_pull(REPO, 2, head_sha=H2, base_ref="trunk")
    await _handle(runtime, "synchronize")
    await _work(runtime)
    assert len(openai.requests) == 1  # trunk's file turned reviews off
    reviews = await runtime.store.list_reviews()
    assert [r.head_sha for r in reviews] == [H1]
    assert github.requests_to("GET", f"/repos/{REPO}/git/ref/heads/trunk")
    jobs = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert [(j.state, j.attempts, j.last_error) for j in jobs] == [("done", 1, None)] * 2
    # The first review's read of `main`, then the second's read ahead.
    first, read_ahead = github.requests_to("GET", f"/repos/{REPO}/git/ref/heads/main")
    assert first.status == 200
    expected = {404} if old_branch == "gone" else {200, 304}  # 304: answered from its ETag
    assert read_ahead.status in expected  # read ahead, and failed only when the branch is gone


def _pending(body: Any) -> bool:
    """The review's own pending status (a queued review may have set one before)."""
    return isinstance(body, dict) and body.get("description") == REVIEWING


async def test_the_model_is_asked_while_the_pending_status_is_being_set(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    """Only the changes and the earlier findings go into the prompt: the review's record and
    its pending status are written while the model is asked, and the final status still
    comes after the pending one."""
    github, openai = fakes
    statuses = f"/repos/{REPO}/statuses/*"
    held: list[bool] = []
    asked = asyncio.Event()
    answer = findings_in_prompt([finding("a.py", 2, severity="critical")])

    def respond(request: LLMRequest) -> Reply:
        # The review's pending status not answered yet.
        held.append(not any(_pending(r.json()) for r in github.requests_to("POST", statuses)))
        asked.set()
        return answer(request)

    runtime = await make_runtime()
    await _handle(runtime, "opened")  # the first review loads what reviews use (the tokenizer)
    await _work(runtime)
    openai.respond(respond)
    pushed = PullFile.added("b.py", CODE)
    github.update_pull(REPO, 2, head_sha=H2, files=[PullFile.added("a.py", CODE), pushed])
    github.add_compare(REPO, H1, H2, files=[pushed])
    # The pending status is answered once the model is asked (or after 10 s, if it never is).
    github.delay("POST", statuses, 10, if_body=_pending, until=asked)
    github.clear_requests()
    await _handle(runtime, "synchronize")
    await _work(runtime)
    assert held == [True]
    posted = [r.json() for r in github.requests_to("POST", statuses)]
    assert _pending(posted[-2]) and posted[-1]["state"] in ("success", "failure")
    latest, _ = await runtime.store.list_reviews()
    assert (latest.head_sha, latest.state) == (H2, "done")


async def test_a_pending_status_refused_before_the_model_is_asked_stops_the_review(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    """A step written beside the model call that fails before the call is made fails the
    attempt as before: the model is not asked (nothing is spent), and the job is retried."""
    github, openai = fakes
    github.delay("GET", f"/repos/{REPO}/pulls/2/files", 0.5)  # the prompt waits for these
    github.fail("POST", f"/repos/{REPO}/statuses/*", 403, if_body=_pending)
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)
    assert openai.requests == []
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert job.state == "queued" and job.attempts == 1
    assert job.last_error is not None and "status" in job.last_error
    assert await runtime.store.spent_since(0) == 0


async def test_a_model_answer_paid_for_is_booked_when_the_attempt_fails_after_it(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    """The pending status fails once the model has been asked: the call is not cut off (a
    request cut off may still be billed) but awaited, the attempt fails, what the answer cost
    counts toward the daily budget under the review, and the retry reads the answer from the
    cache instead of paying again."""
    github, openai = fakes
    asked = asyncio.Event()
    openai.respond(noting(asked, findings_in_prompt([finding("a.py", 2, severity="critical")])))
    # Refused once the model has been asked.
    github.fail("POST", f"/repos/{REPO}/statuses/*", 403, if_body=_pending, until=asked)
    runtime = await make_runtime(worker_retry_backoff_seconds=0)
    await _handle(runtime, "opened")
    worker = runtime.make_worker()
    async with asyncio.timeout(30):
        await worker._claim_once()  # the first attempt only
        await asyncio.wait(list(worker._tasks.values()))
    assert len(openai.requests) == 1
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert (job.state, job.attempts) == ("queued", 1)
    spent = await runtime.store.spent_since(0)
    assert spent > 0
    (first,) = await runtime.store.list_reviews()
    booked = await runtime.store.run_sql(
        lambda conn: conn.exec_driver_sql("SELECT review_id FROM usage").scalars().all()
    )
    assert booked == [first.id]  # under the review it paid for
    await _work(runtime)  # the retry
    assert len(openai.requests) == 1  # answered from the cache
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert (job.state, job.attempts) == ("done", 2)
    assert await runtime.store.spent_since(0) == spent
    (review,) = await runtime.store.list_reviews()
    assert review.state == "done"


async def test_a_review_gives_its_slot_back_once_its_outcome_is_on_the_pull_request(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI], monkeypatch: Any
) -> None:
    """The worker's slot is given back once the final status is set, before the review's last
    bookkeeping, which the job still finishes."""
    github, _ = fakes
    runtime = await make_runtime()
    statuses = f"/repos/{REPO}/statuses/*"
    seen: list[list[str]] = []  # the statuses set when the slot was given back

    def given_back() -> None:
        seen.append([r.json()["state"] for r in github.requests_to("POST", statuses)])
        slot_no_longer_needed()

    monkeypatch.setattr(bot.runtime, "slot_no_longer_needed", given_back)
    await _handle(runtime, "opened")
    await _work(runtime)
    assert seen == [["pending", "success"]]  # once, after the final status
    (review,) = await runtime.store.list_reviews()
    assert (review.state, review.findings) == ("done", 1)
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert job.state == "done"


async def test_a_review_waits_for_its_slot_with_all_before_the_model_done_and_off_its_clock(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI], monkeypatch: Any
) -> None:
    """A review claimed ahead of a free slot waits for one just before the model is asked (its
    pull request and files fetched, its plan made with every token counted, nothing asked
    yet), and the wait is not counted against its deadline: here 0.5 s of waiting against a
    deadline 0.3 s away, and the review is done on its first attempt."""
    github, openai = fakes
    runtime = await make_runtime()
    # What a process's first review loads (the model's SDK, its tokenizer) is loaded before the
    # test's short deadline starts: its plan is made before the wait now.
    importlib.import_module("openai")
    assert runtime.llm is not None
    runtime.llm.counter().count("warm")
    seen: list[tuple[int, int, int]] = []  # (file listings, plans, model calls) when it waited
    plans: list[int] = []
    prepare_review = bot.core.review.prepare_review

    def planned(*args: Any, **kwargs: Any) -> Any:
        plans.append(1)
        return prepare_review(*args, **kwargs)

    async def wait_for_a_slot() -> float:
        files = github.requests_to("GET", f"/repos/{REPO}/pulls/2/files")
        seen.append((len(files), len(plans), len(openai.requests)))
        await asyncio.sleep(0.5)
        return 0.5

    monkeypatch.setattr(bot.core.review, "prepare_review", planned)
    monkeypatch.setattr(bot.runtime, "slot_needed", wait_for_a_slot)
    monkeypatch.setattr(bot.review, "attempt_deadline", lambda now, timeout: now + 0.3)
    await _handle(runtime, "opened")
    await _work(runtime)
    assert seen == [(1, 1, 0)]
    assert len(openai.requests) == 1
    (job,) = await runtime.store.list_jobs(kind=REVIEW_JOB)
    assert (job.state, job.attempts) == ("done", 1)
    (review,) = await runtime.store.list_reviews()
    assert (review.state, review.findings) == ("done", 1)


async def test_a_worker_s_heap_is_settled_after_its_first_review_only(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    """What the first review loads for good (the review core, the model's SDK, the tokenizer)
    is frozen once it is done; later reviews freeze nothing more (bot/heap.py)."""
    github, openai = fakes
    runtime = await make_runtime(settle_heap=True)
    try:
        before = gc.get_freeze_count()
        await _handle(runtime, "opened")
        await _work(runtime)
        await asyncio.sleep(0)  # settled beside the job, once it returned
        assert len(openai.requests) == 1
        settled = gc.get_freeze_count()
        assert settled > before
        github.update_pull(REPO, 2, head_sha=H2)
        await _handle(runtime, "synchronize")
        await _work(runtime)
        await asyncio.sleep(0)
        assert [r.head_sha for r in await runtime.store.list_reviews()] == [H2, H1]
        # Not frozen again (which would add all made since); some frozen objects went since.
        assert gc.get_freeze_count() <= settled
    finally:
        gc.unfreeze()  # this test process's heap as it was


async def test_a_paused_pull_request_is_not_reviewed_automatically(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    _, openai = fakes
    runtime = await make_runtime()
    await runtime.store.update_pr_state("github", REPO, 2, paused=True)
    await _handle(runtime, "synchronize")
    await _work(runtime)
    assert openai.requests == []
    await runtime.store.update_pr_state("github", REPO, 2, paused=False)
    await _handle(runtime, "synchronize")
    await _work(runtime)
    assert len(openai.requests) == 1


async def test_the_repo_config_shapes_what_is_posted(
    make_runtime: MakeRuntime, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, openai = fakes
    github.add_file(
        REPO,
        ".arbiter.yml",
        "path_filters: ['!generated/**']\n"
        "path_instructions:\n  - path: 'src/**'\n    instructions: Watch for SQL built by hand.\n"
        "review:\n  min_severity: major\n  max_comments: 1\n",
    )
    code = "def q(db, name):\n    return db.execute('SELECT ' + name)\n    # end\n"
    github.update_pull(
        REPO,
        2,
        files=[
            PullFile.added("src/db.py", code),
            PullFile.added("a.py", CODE),
            PullFile.added("generated/x.py", CODE),
        ],
    )
    openai.respond(
        findings_in_prompt(
            [
                finding("src/db.py", 2, severity="critical", title="SQL injection"),
                finding("src/db.py", 3, severity="minor", title="A comment"),
                finding("a.py", 2, severity="major", title="eval"),
                finding("generated/x.py", 2, severity="critical", title="Never shown"),
            ]
        )
    )
    runtime = await make_runtime()
    await _handle(runtime, "opened")
    await _work(runtime)

    prompts = "\n".join(r.user for r in openai.requests)
    assert "=== FILE generated/x.py (" not in prompts  # path_filters dropped it
    for request in openai.requests:
        has_src = "=== FILE src/db.py (" in request.user
        assert ("Watch for SQL built by hand." in request.system) == has_src
    comments = github.review_comments(REPO, 2)
    assert [(c["path"], c["line"]) for c in comments] == [("src/db.py", 2)]  # cap 1, major+
    (review,) = await runtime.store.list_reviews()
    assert review.findings == 1
    summary = next(c for c in github.issue_comments(REPO, 2) if "arbiter:summary" in c["body"])
    body = str(summary["body"])
    assert "### Not reviewed: 1 file" in body and "generated" in body  # said, with the reason
