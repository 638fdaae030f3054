"""python-gitlab is synchronous: each Platform call is one hop to a bounded thread pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from platforms.base import CommentRef, InlineComment
from platforms.gitlab import GitLabPlatform
from tests.fakes.gitlab import FakeGitLab, MRFile, project_path
from tests.platforms.conftest import GL_PROJECT, MakeGitLab

H1 = "a1" * 20
MR = f"{project_path(GL_PROJECT)}/merge_requests/3"


class CountingPool(ThreadPoolExecutor):
    """A thread pool that counts what is handed to it and where it ran."""

    def __init__(self) -> None:
        super().__init__(max_workers=4, thread_name_prefix="counted")
        self.submitted = 0
        self.threads: set[str] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1

        def run() -> Any:
            self.threads.add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return super().submit(run)


@pytest.fixture
def pool() -> Iterator[CountingPool]:
    executor = CountingPool()
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def seeded(gitlab_fake: FakeGitLab) -> FakeGitLab:
    gitlab_fake.add_merge_request(
        GL_PROJECT, 3, files=[MRFile.added("a.py", "x = 1\ny = 2\n")], head_sha=H1
    )
    gitlab_fake.add_user("dev", project=GL_PROJECT, access="developer")
    return gitlab_fake


async def test_every_call_is_one_hop_however_many_requests_it_makes(
    seeded: FakeGitLab, make_gitlab: MakeGitLab, pool: CountingPool
) -> None:
    platform = make_gitlab(executor=pool).for_repo(GL_PROJECT)
    pr = await platform.pull_request(3)
    note = seeded.add_note(GL_PROJECT, 3, "@arbiter hi", author="dev")
    ref = CommentRef(note["id"], "conversation", number=3, thread=note["discussion_id"])
    calls: list[Callable[[], Any]] = [
        lambda: platform.pull_request(3),
        lambda: platform.changes(pr),
        lambda: platform.read_file("a.py", "main"),
        lambda: platform.default_branch(),
        lambda: platform.branch_head("main"),
        lambda: platform.permission("dev"),
        lambda: platform.post_review(pr, "Review", [InlineComment("a.py", 1, "x")], key="k"),
        lambda: platform.upsert_comment(pr, "summary", "text"),
        lambda: platform.find_comment(pr, "summary"),
        lambda: platform.reply(ref, "hello"),
        lambda: platform.set_status(pr, "pending", "reviewing"),
        lambda: platform.react(ref, "eyes"),
    ]
    for call in calls:
        before, requests_before = pool.submitted, len(seeded.requests)
        await call()
        assert pool.submitted - before == 1
        assert len(seeded.requests) > requests_before
    # The review alone: the user, notes, the merge request, its diff, drafts, publish…
    assert len(seeded.requests_to("*", f"{MR}*")) > len(calls)
    assert pool.threads and all(name.startswith("counted") for name in pool.threads)


async def test_a_slow_call_does_not_hold_up_the_event_loop(
    seeded: FakeGitLab, gitlab_platform: GitLabPlatform
) -> None:
    gate = seeded.hold("GET", f"{MR}/diffs")
    pr = await gitlab_platform.pull_request(3)
    slow = asyncio.create_task(gitlab_platform.changes(pr))
    while seeded.arrived("GET", f"{MR}/diffs") == 0:
        await asyncio.sleep(0.01)

    # The fake answers in this event loop: another call completing proves it is free.
    assert await gitlab_platform.default_branch() == "main"
    assert not slow.done()

    gate.set()
    assert [f.path for f in (await slow).files] == ["a.py"]


async def test_the_pool_is_bounded_by_worker_max_jobs(
    seeded: FakeGitLab, make_gitlab: MakeGitLab
) -> None:
    platform = make_gitlab(worker_max_jobs=2).for_repo(GL_PROJECT)
    gate = seeded.hold("GET", f"{project_path(GL_PROJECT)}/repository/branches/*")
    calls = [asyncio.create_task(platform.branch_head("main")) for _ in range(3)]
    branches = f"{project_path(GL_PROJECT)}/repository/branches/*"
    while seeded.arrived("GET", branches) < 2:
        await asyncio.sleep(0.01)

    await asyncio.sleep(0.2)  # time enough for a third thread, were there one
    assert seeded.arrived("GET", branches) == 2

    gate.set()
    heads = await asyncio.gather(*calls)
    assert heads == [seeded.branch_head(GL_PROJECT, "main")] * 3
    assert seeded.arrived("GET", branches) == 3
