"""Talking to Arbiter end to end (issue 7's acceptance): `arbiter serve` as a process, the fake
GitHub, the fake model. Questions on a finding answered in its thread, low confidence and
questions turned off, pause and resume and who may, mentions that are not requests, and the
hourly rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.store.base import ExchangeRecord
from bot.store.sql import SQLStore
from tests.conversation.model import TEXT, answer, answering, questions
from tests.e2e.world import PAT, REPO, World, wait_for
from tests.fakes.github import AppKey, FakeGitHub, PullFile
from tests.fakes.openai import FakeOpenAI, finding

pytestmark = pytest.mark.e2e

ARBITER = "arbiter-bot"  # the fake GitHub's login for the token Arbiter uses
H1, H2, H3, BASE = "a1" * 20, "b2" * 20, "d4" * 20, "c3" * 20
APP = "import subprocess\n\n\ndef run(command):\n    return subprocess.run(command, shell=True)\n"
LATER = "def parse(text):\n    return eval(text)\n"
SHELL = finding("app.py", 5, severity="critical", title="Shell injection", category="security")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    key = AppKey.generate()
    async with FakeGitHub(app_id="1", public_key=key.public_pem, token=PAT) as github:
        github.add_repo(REPO, installation_id=1)
        github.add_pull(
            REPO,
            2,
            files=[PullFile.added("app.py", APP)],
            head_sha=H1,
            base_sha=BASE,
            title="Run commands",
            body="Adds `run()`, which runs a command line.",
            author="Codertocat",
        )
        github.set_permission(REPO, "alice", "write")
        github.set_permission(REPO, "bob", "read")
        async with FakeOpenAI() as openai:
            openai.respond(answering(findings=[SHELL]))
            w = World(tmp_path, github, openai)
            try:
                yield w
            finally:
                w.stop()


@pytest.fixture
async def records(world: World) -> AsyncIterator[SQLStore]:
    """The store `arbiter serve` writes, read from the test (start the server first)."""
    await world.start()
    store = await world.store()
    try:
        yield store
    finally:
        await store.close()


# --- Helpers --------------------------------------------------------------------------------------


async def ask(world: World, body: str, *, author: str = "alice", **kind: Any) -> dict[str, Any]:
    """Post a conversation comment on the fake GitHub and deliver its webhook."""
    made = world.github.add_issue_comment(REPO, 2, body, author=author, **kind)
    status, answer = await world.deliver("issue_comment", world.issue_comment_payload(2, made))
    assert status == 202, answer
    return made


async def reply_to(
    world: World, root: dict[str, Any], body: str, *, author: str = "alice"
) -> dict[str, Any]:
    """Reply in an inline thread on the fake GitHub and deliver the webhook."""
    made = world.github.add_review_comment(
        REPO,
        2,
        path=root["path"],
        line=root["line"],
        body=body,
        author=author,
        in_reply_to=root["id"],
    )
    payload = world.review_comment_payload(2, made)
    status, answer = await world.deliver("pull_request_review_comment", payload)
    assert status == 202, answer
    return made


async def handled(store: SQLStore, count: int) -> list[ExchangeRecord]:
    """Once `count` exchanges are recorded and none is still being handled: them, oldest first."""

    async def done() -> bool:
        found = await store.list_exchanges(limit=1000)
        return len(found) >= count and all(e.outcome != "pending" for e in found)

    await wait_for(done, what=f"{count} exchange(s) handled")
    return list(reversed(await store.list_exchanges(limit=1000)))


async def quiet(store: SQLStore, events: int) -> None:
    """Once `events` event jobs, and every review job they queued, are finished."""

    async def done() -> bool:
        jobs = await store.list_jobs(limit=1000)
        events_done = [j for j in jobs if j.kind == "event" and j.state in ("done", "dead")]
        return len(events_done) >= events and all(
            j.state in ("done", "dead", "cancelled") for j in jobs
        )

    await wait_for(done, what=f"{events} event jobs and their reviews")


def by_arbiter(world: World) -> list[dict[str, Any]]:
    """Arbiter's replies (its review's inline findings and summary left out)."""
    found = world.github.issue_comments(REPO, 2) + world.github.review_comments(REPO, 2)
    return [c for c in found if c["user"]["login"] == ARBITER and "arbiter:reply" in c["body"]]


async def reviewed(world: World) -> dict[str, Any]:
    """Open the pull request, let Arbiter review it; its inline finding."""
    await world.deliver("pull_request", world.pull_request_payload(2, "opened"))
    statuses = await world.settled(H1)
    assert statuses[-1][0] == "success"
    (root,) = world.github.review_comments(REPO, 2)
    assert "Shell injection" in root["body"] and root["user"]["login"] == ARBITER
    return root


# --- 1. A question on a finding is answered in its thread ----------------------------------------


async def test_a_question_on_a_finding_is_answered_in_its_thread(
    world: World, records: SQLStore
) -> None:
    root = await reviewed(world)
    question = await reply_to(world, root, "@arbiter why is this a bug?")

    await wait_for(lambda: len(by_arbiter(world)) == 1, what="the answer")
    (said,) = by_arbiter(world)
    assert said["body"].startswith(TEXT)  # the fake model's text
    assert said["in_reply_to_id"] == root["id"] and said["path"] == "app.py"  # in the thread
    assert world.github.reactions(question["id"], inline=True) == ["eyes"]

    (asked,) = questions(world.openai.requests)
    # The prompt held the thread: the finding that started it, then the question.
    assert "Shell injection" in asked.user and "@arbiter why is this a bug?" in asked.user
    assert asked.user.index("Shell injection") < asked.user.index("why is this a bug?")
    # ... and the diff lines around the commented line.
    assert "    4 +def run(command):" in asked.user
    assert "    5 +    return subprocess.run(command, shell=True)" in asked.user
    assert "Adds `run()`, which runs a command line." in asked.user  # the description

    (exchange,) = await handled(records, 1)
    assert (exchange.outcome, exchange.author, exchange.thread) == (
        "answered",
        "alice",
        str(root["id"]),
    )
    assert exchange.confidence == 0.9 and exchange.reply_id == str(said["id"])
    assert exchange.input_tokens > 0 and exchange.output_tokens > 0 and exchange.cost_usd > 0


async def test_a_reply_without_a_mention_in_arbiters_thread_is_a_question(
    world: World, records: SQLStore
) -> None:
    root = await reviewed(world)
    await reply_to(world, root, "Is this really exploitable?")
    await wait_for(lambda: len(by_arbiter(world)) == 1, what="the answer")
    assert by_arbiter(world)[0]["in_reply_to_id"] == root["id"]


# --- 2. Low confidence; questions turned off ----------------------------------------------------


async def test_low_confidence_gets_a_confused_reaction_and_no_reply(
    world: World, records: SQLStore
) -> None:
    world.openai.respond(answering(answer("Perhaps?", confidence=0.2)))
    question = await ask(world, "@arbiter is this thread-safe?")
    (exchange,) = await handled(records, 1)
    assert (exchange.outcome, exchange.confidence, exchange.answer) == ("unsure", 0.2, None)
    assert world.github.reactions(question["id"]) == ["eyes", "confused"]
    assert by_arbiter(world) == []
    assert len(questions(world.openai.requests)) == 1


async def test_with_questions_turned_off_no_model_is_called(world: World) -> None:
    await world.start(ARBITER_FOLLOWUP_ENABLED="false")
    store = await world.store()
    try:
        question = await ask(world, "@arbiter why is this a bug?")
        pause = await ask(world, "@arbiter pause")  # commands still work
        exchanges = await handled(store, 2)
        assert [(e.kind, e.outcome) for e in exchanges] == [
            ("question", "off"),
            ("command", "done"),
        ]
        assert (await store.pr_state("github", REPO, 2)).paused
    finally:
        await store.close()
    assert world.openai.requests == []
    assert world.github.reactions(question["id"]) == []
    assert world.github.reactions(pause["id"]) == ["eyes"]
    (said,) = by_arbiter(world)  # the pause's confirmation; nothing for the question
    assert said["body"].startswith("Automatic reviews are paused on this pull request")


# --- 3. Pause and resume, and who may -------------------------------------------------------------


async def test_pause_and_resume_by_a_writer_and_not_by_a_reader(
    world: World, records: SQLStore
) -> None:
    await reviewed(world)
    pause = await ask(world, "@arbiter pause")
    await handled(records, 1)
    assert world.github.reactions(pause["id"]) == ["eyes"]

    # The next push is not reviewed.
    world.github.update_pull(
        REPO,
        2,
        head_sha=H2,
        files=[PullFile.added("app.py", APP), PullFile.added("later.py", LATER)],
    )
    world.github.add_compare(REPO, H1, H2, files=[PullFile.added("later.py", LATER)])
    await world.deliver("pull_request", world.pull_request_payload(2, "synchronize"))
    await quiet(records, events=3)  # opened, the comment, synchronize
    assert world.statuses(H2) == []
    assert len(await world.reviews()) == 1 and len(world.openai.requests) == 1

    # A reader can neither resume nor (later) pause: a polite refusal, nothing changes.
    refused = await ask(world, "@arbiter resume", author="bob")
    await handled(records, 2)
    assert (await records.pr_state("github", REPO, 2)).paused
    assert world.github.reactions(refused["id"]) == []
    assert by_arbiter(world)[-1]["body"].startswith(
        "Sorry, only people with write access to this repository can give Arbiter commands."
    )

    resume = await ask(world, "@arbiter resume")
    await handled(records, 3)
    assert not (await records.pr_state("github", REPO, 2)).paused
    assert world.github.reactions(resume["id"]) == ["eyes"]
    await ask(world, "@arbiter pause", author="bob")
    await handled(records, 4)
    assert not (await records.pr_state("github", REPO, 2)).paused

    # Reviews resume: the next push is reviewed.
    world.github.update_pull(REPO, 2, head_sha=H3)
    world.github.add_compare(REPO, H1, H3, files=[PullFile.added("later.py", LATER)])
    await world.deliver("pull_request", world.pull_request_payload(2, "synchronize"))
    statuses = await world.settled(H3)
    assert statuses[-1][0] == "success"
    assert len(await world.reviews()) == 2
    refusals = [c for c in by_arbiter(world) if c["body"].startswith("Sorry, only people")]
    assert len(refusals) == 2


# --- 4. Mentions that are not requests ------------------------------------------------------------


async def test_mentions_in_code_quotes_by_bots_and_by_arbiter_start_nothing(
    world: World, records: SQLStore
) -> None:
    root = await reviewed(world)
    await reply_to(world, root, "@arbiter why is this a bug?")  # one real question
    await wait_for(lambda: len(by_arbiter(world)) == 1, what="the answer")
    (answer_comment,) = by_arbiter(world)
    calls = len(world.openai.requests)

    not_requests = [
        await ask(world, "To ask it, write:\n\n```\n@arbiter pause\n```"),
        await ask(world, "Like this: `@arbiter full review`"),
        await ask(world, "> @arbiter pause\n\nI would not do that yet."),
        await ask(world, "@arbiter review", author="dependabot[bot]", author_type="Bot"),
    ]
    # Arbiter's own comments come back as webhooks too: its answer in its own thread (which
    # mentions nobody, and is a reply there) and a help text full of its name.
    payload = world.review_comment_payload(2, answer_comment)
    assert (await world.deliver("pull_request_review_comment", payload))[0] == 202
    own_help = world.github.add_issue_comment(
        REPO, 2, "Say `@arbiter pause` or @arbiter help\n\n<!-- arbiter:reply -->", author=ARBITER
    )
    await world.deliver("issue_comment", world.issue_comment_payload(2, own_help))

    await quiet(records, events=8)  # opened, the question, four comments, Arbiter's two
    assert len(world.openai.requests) == calls
    assert {c["id"] for c in by_arbiter(world)} == {answer_comment["id"], own_help["id"]}
    for comment in [*not_requests, own_help]:
        assert world.github.reactions(comment["id"]) == []
    assert world.github.reactions(answer_comment["id"], inline=True) == []
    assert len(await records.list_exchanges()) == 1
    assert not (await records.pr_state("github", REPO, 2)).paused
    assert len(await records.list_jobs(kind="review")) == 1


# --- 5. The hourly rate limit ---------------------------------------------------------------------


async def test_the_21st_question_in_an_hour_gets_a_rate_limit_reply_and_no_model_call(
    world: World, records: SQLStore
) -> None:
    for i in range(1, 22):
        await ask(world, f"@arbiter question number {i}?")
        await handled(records, i)
    exchanges = await handled(records, 21)
    assert [e.outcome for e in exchanges] == ["answered"] * 20 + ["rate_limited"]
    assert len(questions(world.openai.requests)) == 20
    replies = by_arbiter(world)
    assert len(replies) == 21
    assert replies[-1]["body"].startswith(
        "You have asked 20 questions on this pull request in the last hour"
    )
    assert exchanges[-1].answer is not None and exchanges[-1].cost_usd == 0
