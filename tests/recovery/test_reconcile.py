"""The reconcile sweep: a review job for every open pull request whose head was never reviewed
(the same job and key a webhook queues), none for a reviewed head or one whose review waits,
nothing from before Arbiter knew the repository, within the limit per sweep; cheap when
nothing moved; GitLab's merge requests too."""

from __future__ import annotations

import json

from bot.review.request import REVIEW_JOB, ReviewRequest, review_job_key
from bot.store import Job, NewJob
from bot.store.base import ReviewStart
from tests.fakes.github import PullFile
from tests.fakes.gitlab import MRFile, project_path
from tests.recovery.conftest import INSTALLATION, PROJECT, REPO, MakeWorld

CODE = "def f(x):\n    return eval(x)\n"


def _requests(jobs: list[Job]) -> dict[int, ReviewRequest]:
    found = [ReviewRequest.from_json(j.payload) for j in jobs]
    return {r.number: r for r in found}


async def test_unreviewed_heads_get_a_review_job_and_the_others_none(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    store = world.runtime.store
    await store.note_repositories("github", [REPO], installation_id=INSTALLATION)
    gh = world.github
    files = [PullFile.added("a.py", CODE)]
    gh.add_pull(REPO, 1, files=files)  # opened while Arbiter was down: no webhook ever came
    reviewed = gh.add_pull(REPO, 2, files=files)
    await store.update_pr_state("github", REPO, 2, last_reviewed_head=reviewed["head"]["sha"])
    pushed = gh.add_pull(REPO, 3, files=files)
    await store.update_pr_state("github", REPO, 3, last_reviewed_head="0" * 40)  # a push missed
    gh.add_pull(REPO, 4, files=files)
    await store.enqueue(  # its review already waits in the queue (a webhook came)
        _job_for(4)
    )
    gh.add_pull(REPO, 5, files=files, state="closed")

    tally = await world.reconcile()

    queued = _requests([j for j in await world.jobs(REVIEW_JOB) if j.state == "queued"])
    assert sorted(queued) == [1, 3, 4]  # 4 is the job that was there already
    assert (queued[1].reason, queued[1].installation_id) == ("reconcile", INSTALLATION)
    assert (tally.listed, tally.due, tally.already, tally.done) == (4, 3, 1, 2)
    jobs = {ReviewRequest.from_json(j.payload).number: j for j in await world.jobs(REVIEW_JOB)}
    assert jobs[1].key == review_job_key("github", REPO, 1)
    assert pushed["head"]["sha"] != "0" * 40
    metrics = world.runtime.metrics.render().decode()
    assert 'arbiter_reconcile_reviews_scheduled_total{platform="github"} 2.0' in metrics

    again = await world.reconcile()
    assert again.done == 0 and again.already == 3  # their jobs wait: nothing queued twice
    assert len(await world.jobs(REVIEW_JOB)) == 3


def _job_for(number: int) -> NewJob:
    request = ReviewRequest(platform="github", repo=REPO, number=number, reason="opened")
    return NewJob(
        kind=REVIEW_JOB, payload=request.to_json(), key=review_job_key("github", REPO, number)
    )


async def test_pull_requests_from_before_arbiter_knew_the_repository_are_left_alone(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    gh = world.github
    gh.add_pull(REPO, 1, files=[PullFile.added("a.py", CODE)])
    world.clock.advance(3600)  # an hour later, Arbiter learns of the repository
    await world.runtime.store.note_repositories("github", [REPO], installation_id=INSTALLATION)
    world.clock.advance(60)
    real = gh.clock
    gh.clock = world.clock  # opened a minute after that (the fake's JWT check keeps real time)
    gh.add_pull(REPO, 2, files=[PullFile.added("b.py", CODE)])
    gh.clock = real

    await world.reconcile()

    assert sorted(_requests(await world.jobs(REVIEW_JOB))) == [2]


async def test_the_limit_per_sweep_leaves_the_rest_for_the_next(make_world: MakeWorld) -> None:
    world = await make_world(reconcile_max_reviews_per_pass=2)
    await world.runtime.store.note_repositories("github", [REPO], installation_id=INSTALLATION)
    gh = world.github
    gh.clock = world.clock
    for number in range(1, 6):
        gh.add_pull(REPO, number, files=[PullFile.added("a.py", CODE)])
        world.clock.advance(10)

    first = await world.reconcile()
    assert first.done == 2 and first.stopped is not None
    assert sorted(_requests(await world.jobs(REVIEW_JOB))) == [1, 2]  # least recently updated
    await world.reconcile()
    await world.reconcile()
    assert sorted(_requests(await world.jobs(REVIEW_JOB))) == [1, 2, 3, 4, 5]


async def test_an_unchanged_repository_costs_one_conditional_request(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    await world.runtime.store.note_repositories("github", [REPO], installation_id=INSTALLATION)
    world.github.add_pull(REPO, 1, files=[PullFile.added("a.py", CODE)])
    await world.reconcile()
    world.github.clear_requests()
    await world.reconcile()
    (listing,) = world.github.requests_to("GET", f"/repos/{REPO}/pulls")
    assert listing.status == 304  # GitHub does not count it against the rate limit
    assert world.github.requests_to("POST", "*") == []


async def test_a_repository_gone_is_forgotten_and_a_deleted_installation_skipped(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    store = world.runtime.store
    await store.note_repositories("github", ["octo/gone"], installation_id=INSTALLATION)
    await store.note_repositories("github", ["octo/removed"], installation_id=99)
    await store.upsert_installation("github", 99, account="octo", state="deleted")
    world.github.add_repo("octo/gone", installation_id=None)  # the App is not installed there

    tally = await world.reconcile()

    assert tally.errors == 1
    assert [r.repo for r in await store.known_repositories("github")] == ["octo/removed"]
    assert world.github.requests_to("GET", "/repos/octo/removed/*") == []


async def test_gitlab_merge_requests_never_reviewed_get_a_review_job(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    store = world.runtime.store
    await store.note_repositories("gitlab", [PROJECT])
    gl = world.gitlab
    gl.add_merge_request(PROJECT, 1, files=[MRFile.added("a.py", CODE)])
    reviewed = gl.add_merge_request(PROJECT, 2, files=[MRFile.added("b.py", CODE)])
    await store.update_pr_state("gitlab", PROJECT, 2, last_reviewed_head=reviewed["sha"])
    gl.add_merge_request(PROJECT, 3, state="merged")

    tally = await world.reconcile()

    queued = _requests(await world.jobs(REVIEW_JOB))
    assert sorted(queued) == [1] and tally.done == 1
    assert (queued[1].platform, queued[1].repo, queued[1].installation_id) == (
        "gitlab",
        PROJECT,
        None,
    )
    (listing,) = gl.requests_to("GET", f"{project_path(PROJECT)}/merge_requests")
    assert listing.query["state"] == "opened" and "updated_after" in listing.query
    assert json.loads(json.dumps(listing.query))["order_by"] == "updated_at"


async def test_a_repository_name_the_platform_cannot_take_is_skipped(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    await world.runtime.store.note_repositories("github", ["no-slash", REPO], installation_id=1)
    world.github.add_pull(REPO, 1, files=[PullFile.added("a.py", CODE)])
    tally = await world.reconcile()
    assert tally.errors == 1 and tally.done == 1


async def test_repositories_the_store_knew_before_are_adopted_without_a_backlog(
    make_world: MakeWorld,
) -> None:
    """Installations and reviews recorded before the list of repositories existed: the sweep
    takes their repositories on from now, and reviews nothing older than a few minutes."""
    world = await make_world()
    store = world.runtime.store
    gh = world.github
    await store.upsert_installation(
        "github", INSTALLATION, account="Codertocat", repositories=[REPO]
    )
    await store.upsert_installation("github", 55, account="gone", repositories=["gone/repo"])
    await store.set_installation_state("github", 55, "deleted")
    gh.add_pull(REPO, 1, files=[PullFile.added("a.py", CODE)])  # waiting since long ago
    gh.pull_updates[(REPO, 1)] = "2020-01-01T00:00:00Z"

    first = await world.reconcile()
    assert first.done == 0 and first.sources == 1
    assert [(r.repo, r.installation_id) for r in await store.known_repositories("github")] == [
        (REPO, INSTALLATION)
    ]
    gh.add_pull(REPO, 2, files=[PullFile.added("b.py", CODE)])  # opened after
    world.clock.advance(3600)
    await world.reconcile()
    assert sorted(_requests(await world.jobs(REVIEW_JOB))) == [2]


async def test_projects_with_reviews_are_adopted_too(make_world: MakeWorld) -> None:
    world = await make_world()
    store = world.runtime.store
    await store.start_review(ReviewStart("gitlab", PROJECT, 1, "a" * 40, "full", job_id=None))
    world.gitlab.add_merge_request(PROJECT, 5, files=[MRFile.added("a.py", CODE)])
    tally = await world.reconcile()
    assert [r.repo for r in await store.known_repositories("gitlab")] == [PROJECT]
    assert tally.done == 1  # opened within the last few minutes: reviewed
