"""Acceptance 3: the configuration reaches the reviewer core (`review_changes`, the production
entry point, with the production LLM client against the fake OpenAI over HTTP)."""

from __future__ import annotations

from dataclasses import replace

from bot.core import review_changes
from bot.llm import LLM
from bot.review.policy import review_options
from config.repo import Policy, resolve
from tests.fakes.openai import FakeOpenAI, finding, findings_in_prompt, review_answer
from tests.repo_config.conftest import numbered, patch_of

POLICY = Policy(allowed_models=frozenset({"gpt-4o-mini"}), max_cost_per_review_usd=0.5)


def files_in(prompt: str) -> list[str]:
    return [line.split(" ")[2] for line in prompt.splitlines() if line.startswith("=== FILE ")]


async def test_path_filters_drop_files(fake_openai: FakeOpenAI, llm: LLM) -> None:
    effective = resolve('path_filters: ["src/**", "!src/generated/**"]\n', policy=POLICY)
    patch = patch_of(
        {
            "src/app.py": "def main():\n    return 1\n",
            "src/generated/client.py": "x = 1\n",
            "docs/guide.md": "# Guide\n",
        }
    )

    result = await review_changes(llm, patch, review_options(effective))

    assert [files_in(r.user) for r in fake_openai.requests] == [["src/app.py"]]
    assert {(n.path, n.reason) for n in result.not_reviewed} == {
        ("src/generated/client.py", "excluded by the path filter !src/generated/**"),
        ("docs/guide.md", "outside the path filters (src/**)"),
    }


async def test_path_instructions_reach_only_the_prompts_of_matching_files(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    effective = resolve(
        "instructions: Mention the ticket number.\n"
        "path_instructions:\n"
        "  - path: src/api/**\n"
        "    instructions: Check that every handler authorizes the caller.\n"
        "  - path: '**/*.sql'\n"
        "    instructions: Look for missing indexes.\n",
        policy=POLICY,
    )
    patch = patch_of(
        {
            "src/api/users.py": numbered(150, "api line"),
            "src/web/page.py": numbered(150, "web line"),
            "db/schema.sql": numbered(150, "sql line"),
        }
    )
    # Small chunks, so that each file is reviewed by a call of its own.
    options = replace(review_options(effective), chunk_tokens=1000)

    await review_changes(llm, patch, options)

    by_file = {tuple(files_in(r.user)): r.system for r in fake_openai.requests}
    assert set(by_file) == {("src/api/users.py",), ("src/web/page.py",), ("db/schema.sql",)}
    api, web, sql = (
        by_file[("src/api/users.py",)],
        by_file[("src/web/page.py",)],
        by_file[("db/schema.sql",)],
    )
    authorize = "For files matching src/api/**: Check that every handler authorizes the caller."
    indexes = "For files matching **/*.sql: Look for missing indexes."
    assert authorize in api and indexes not in api
    assert indexes in sql and authorize not in sql
    assert authorize not in web and indexes not in web
    for system in (api, web, sql):
        assert "For the whole pull request: Mention the ticket number." in system


FINDINGS = [
    finding("src/app.py", 1, severity="critical", confidence=0.9, title="Crash"),
    finding("src/app.py", 2, severity="major", confidence=0.95, title="Leak A"),
    finding("src/app.py", 3, severity="major", confidence=0.7, title="Leak B"),
    finding("src/app.py", 4, severity="minor", confidence=0.9, title="Naming"),
    finding("src/app.py", 5, severity="nit", confidence=0.9, title="Spacing"),
]
PATCH = patch_of({"src/app.py": numbered(8, "app line")})


async def test_min_severity_and_max_comments_shape_what_is_posted(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    effective = resolve("review:\n  min_severity: major\n  max_comments: 2\n", policy=POLICY)
    fake_openai.script(review_answer(*FINDINGS))

    result = await review_changes(llm, PATCH, review_options(effective))

    assert [f.title for f in result.findings] == ["Crash", "Leak A"]
    assert len(result.comments) == 2  # what would be posted inline
    assert {(d.title, d.reason) for d in result.dropped} == {
        ("Naming", "below the severity floor (major)"),
        ("Spacing", "below the severity floor (major)"),
        ("Leak B", "over the limit of 2 comments per review"),
    }


async def test_a_profile_shapes_what_is_posted_too(fake_openai: FakeOpenAI, llm: LLM) -> None:
    fake_openai.respond(findings_in_prompt(FINDINGS))

    quiet = await review_changes(llm, PATCH, review_options(resolve("profile: quiet\n")))
    thorough = await review_changes(llm, PATCH, review_options(resolve("profile: thorough\n")))

    assert [f.title for f in quiet.findings] == ["Crash", "Leak A", "Leak B"]
    assert [f.title for f in thorough.findings] == [
        "Crash",
        "Leak A",
        "Leak B",
        "Naming",
        "Spacing",
    ]


async def test_min_confidence_the_model_and_the_cost_cap_reach_the_review(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    effective = resolve(
        "profile: thorough\nmodel: gpt-4o-mini\nreview:\n  min_confidence: 0.8\n", policy=POLICY
    )
    fake_openai.script(review_answer(*FINDINGS))

    result = await review_changes(llm, PATCH, review_options(effective))

    assert fake_openai.requests[0].model == "gpt-4o-mini"
    assert "Leak B" not in [f.title for f in result.findings]  # confidence 0.7 < 0.8
    assert result.complete

    capped = resolve("budget:\n  max_cost_per_review_usd: 0.000001\n", policy=POLICY)
    before = len(fake_openai.requests)
    starved = await review_changes(llm, PATCH, review_options(capped))

    assert len(fake_openai.requests) == before  # not one call over the repository's cap
    assert not starved.complete
    assert any("cost cap" in n.reason for n in starved.not_reviewed)
