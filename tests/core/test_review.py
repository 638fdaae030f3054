"""The review entry point end to end, against the fake model servers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bot.core import ReviewOptions, review_changes
from bot.core.diff import parse_diff
from bot.core.prompting import PathInstruction
from bot.core.review import IN_PLACE_CHARS, IN_PLACE_MATCHES, prepared_in_place
from bot.llm import ModelPriceUnknown
from bot.store.sql import SQLStore
from config.prices import load_prices
from platforms.base import FileChange
from tests.core.conftest import numbered, patch_of, settings_for
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import (
    FakeOpenAI,
    Malformed,
    ServerError,
    finding,
    findings_in_prompt,
    review_answer,
)

ROOT = Path(__file__).resolve().parents[2]
APP_BEFORE = numbered(40, "app line")
APP_AFTER = APP_BEFORE.replace("app line 20\n", "app line 20\ntotal = a / b\nreturn total\n")
PATCH = patch_of(
    {
        "src/app.py": (APP_BEFORE, APP_AFTER),
        "src/util.py": (None, "def helper():\n    return eval(input())\n"),
        "assets/logo.png": (None, None),  # replaced below by a binary entry
        "docs/notes.md": (None, "Some notes.\n"),
    }
).replace(
    "diff --git a/assets/logo.png b/assets/logo.png\nnew file mode 100644\n"
    "deleted file mode 100644\n",
    "diff --git a/assets/logo.png b/assets/logo.png\nnew file mode 100644\n"
    "Binary files /dev/null and b/assets/logo.png differ\n",
)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_findings_land_on_their_files_and_lines(provider: str, llm_for: Any) -> None:
    fake = FakeOpenAI() if provider == "openai" else FakeAnthropic()
    async with fake:
        model = "gpt-4o" if provider == "openai" else "claude-sonnet-4-6"
        llm = llm_for(settings_for(fake, default_model=model))
        fake.respond(
            findings_in_prompt(
                [
                    finding("src/app.py", 21, severity="critical", title="Division by zero"),
                    finding("src/util.py", 2, category="security", title="eval of input"),
                    finding("src/app.py", 19, title="Context line is fine"),
                    finding("src/app.py", 35, title="Not in the diff"),
                ]
            )
        )
        result = await review_changes(
            llm,
            PATCH,
            ReviewOptions(path_filters=("!docs/**",)),
            title="Add totals",
            description="Computes the total.",
        )
    assert [(f.path, f.line, f.title) for f in result.findings] == [
        ("src/app.py", 19, "Context line is fine"),
        ("src/app.py", 21, "Division by zero"),
        ("src/util.py", 2, "eval of input"),
    ]
    assert [(d.path, d.line, d.reason) for d in result.dropped] == [
        ("src/app.py", 35, "line 35 is not in the diff")
    ]
    assert {(n.path, n.reason) for n in result.not_reviewed} == {
        ("assets/logo.png", "binary file"),
        ("docs/notes.md", "excluded by the path filter !docs/**"),
    }
    assert result.reviewed_paths == ("src/app.py", "src/util.py")
    assert result.complete and result.errors == ()
    (request,) = fake.requests
    assert (
        "Computes the total." in request.user and "=== FILE src/util.py (added) ===" in request.user
    )
    assert "logo.png" not in request.user and "notes.md" not in request.user
    assert result.usage.input_tokens == request.input_tokens and result.usage.calls == 1
    assert result.worst_severity() == "critical"
    assert [c.line for c in result.comments] == [19, 21, 2]
    assert "### Findings: 3" in result.summary_markdown
    assert "line 35 is not in the diff" in result.summary_markdown


async def test_file_changes_from_a_platform_are_reviewed(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    fake_openai.respond(findings_in_prompt([finding("lib/a.py", 2)]))
    changes = [
        FileChange("lib/a.py", "modified", "@@ -1,2 +1,3 @@\n one\n+two\n three\n"),
        FileChange("lib/b.bin", "added", None, binary=True),
    ]
    result = await review_changes(llm_for(settings_for(fake_openai)), changes)
    assert [(f.path, f.line) for f in result.findings] == [("lib/a.py", 2)]
    assert [n.path for n in result.not_reviewed] == ["lib/b.bin"]


async def test_a_3000_file_patch_stays_within_the_cost_cap(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    files = {
        f"pkg{i % 30:02d}/mod_{i:04d}.py": (None, f"x = {i}\ny = x * 2\n") for i in range(3000)
    }
    patch = patch_of(files)
    cap = 0.05
    llm = llm_for(settings_for(fake_openai, max_cost_per_review_usd=cap))
    fake_openai.respond(findings_in_prompt([finding("pkg00/mod_0000.py", 2)]))
    result = await review_changes(llm, patch, ReviewOptions(concurrency=4))

    price = load_prices().lookup("openai", "gpt-4o")
    assert price is not None
    billed = sum(price.cost(r.input_tokens, r.output_tokens) for r in fake_openai.requests)
    assert 0 < billed <= cap
    assert result.usage.cost_usd == pytest.approx(billed)
    # (A model that answers at the full length it is allowed: tests/core/test_budget_promise.py)

    reviewed = set(result.reviewed_paths)
    unreviewed = {n.path: n.reason for n in result.not_reviewed}
    assert reviewed and unreviewed
    assert reviewed | set(unreviewed) == set(files) and not reviewed & set(unreviewed)
    assert all(reason.startswith("over the cost cap") for reason in unreviewed.values())
    assert not result.complete
    shown = "".join(r.user for r in fake_openai.requests)
    assert all(f"=== FILE {path} (" in shown for path in reviewed)
    assert not any(f"=== FILE {path} (" in shown for path in unreviewed)
    summary = result.summary_markdown
    assert len(summary) <= 60_000
    assert f"### Not reviewed: {len(unreviewed)} files" in summary
    for path in unreviewed:
        _directory, name = path.split("/")
        assert f"`{name}`" in summary
    assert summary.count("over the cost cap") == 1  # grouped under one reason
    assert "- **over the cost cap of $0.05 (ARBITER_MAX_COST_PER_REVIEW_USD)**" in summary


async def test_token_budget_limits_what_is_sent(fake_openai: FakeOpenAI, llm_for: Any) -> None:
    files = {f"m{i:03d}.py": (None, numbered(30, f"value_{i} = compute")) for i in range(200)}
    llm = llm_for(settings_for(fake_openai, max_tokens_per_review=20_000))
    result = await review_changes(llm, patch_of(files), ReviewOptions(concurrency=1))
    sent = sum(r.input_tokens + r.output_tokens for r in fake_openai.requests)
    assert sent <= 20_000
    assert result.usage.input_tokens + result.usage.output_tokens == sent
    assert {n.reason.split(":")[0] for n in result.not_reviewed} == {
        "over the token budget of 20,000 (ARBITER_MAX_TOKENS_PER_REVIEW)"
    }


async def test_a_malformed_answer_is_retried_once_then_reported(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    fake_openai.script(Malformed(), Malformed("{}"))
    result = await review_changes(llm_for(settings_for(fake_openai)), PATCH)
    assert len(fake_openai.requests) == 2
    assert [e.split(" (")[0] for e in result.errors] == [
        "the model's answer did not match the expected format"
    ]
    assert {n.path for n in result.not_reviewed if "malformed" in n.reason} == {
        "src/app.py",
        "src/util.py",
        "docs/notes.md",
    }
    assert result.usage.calls == 2 and result.usage.cost_usd > 0
    assert "The review is incomplete" in result.summary_markdown
    assert not result.complete


async def test_a_provider_error_stops_the_review_and_says_so(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    files = {f"f{i}.py": (None, numbered(200, f"statement_{i} = 1")) for i in range(6)}
    fake_openai.always(ServerError(503, "down for maintenance"))
    llm = llm_for(settings_for(fake_openai, llm_max_retries=1))
    result = await review_changes(
        llm, patch_of(files), ReviewOptions(concurrency=1, chunk_tokens=1000)
    )
    assert len(fake_openai.requests) == 2  # one chunk tried (and retried), then stopped
    assert result.errors[0].startswith("the model provider is down:")
    reasons = [n.reason for n in result.not_reviewed]
    assert reasons[0].startswith("the model provider is down:")
    assert all(r.startswith("the review stopped after an error") for r in reasons[1:])
    assert {n.path for n in result.not_reviewed} == set(files)


async def test_a_second_review_of_the_same_diff_is_served_from_the_cache(
    fake_openai: FakeOpenAI, llm_for: Any, sqlite_store: SQLStore
) -> None:
    """Another process (its own client, memory cache and all) asking the same question after
    the first answer reached the store is answered from there."""
    fake_openai.respond(findings_in_prompt([finding("src/app.py", 21)]))
    earlier = llm_for(settings_for(fake_openai), sqlite_store)
    first = await review_changes(earlier, PATCH)
    # The store's copy is written beside the review, not before it returns: a question asked
    # elsewhere in that moment is asked of the model too. Wait for it, as a later one would.
    await earlier.cache.flush()
    second = await review_changes(llm_for(settings_for(fake_openai), sqlite_store), PATCH)
    assert len(fake_openai.requests) == 1
    assert second.findings == first.findings
    assert (second.usage.calls, second.usage.cached_calls, second.usage.cost_usd) == (1 - 1, 1, 0)


async def test_options_floor_limit_and_known_findings(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    fake_openai.always(
        review_answer(
            finding("src/app.py", 21, severity="critical"),
            finding("src/app.py", 22, severity="minor"),
            finding("src/util.py", 2, severity="major", confidence=0.4),
            finding("src/util.py", 1, severity="major"),
        )
    )
    llm = llm_for(settings_for(fake_openai))
    first = await review_changes(llm, PATCH, ReviewOptions(min_severity="major", max_comments=1))
    assert [(f.path, f.line) for f in first.findings] == [("src/app.py", 21)]
    reasons = sorted(d.reason for d in first.dropped)
    assert reasons == [
        "below the severity floor (major)",
        "confidence 0.40 below the floor (0.50)",
        "over the limit of 1 comments per review",
    ]
    known = frozenset({first.findings[0].fingerprint})
    again = await review_changes(
        llm, PATCH, ReviewOptions(known_fingerprints=known, max_comments=None)
    )
    assert ("src/app.py", 21) not in [(f.path, f.line) for f in again.findings]
    assert "already reported earlier" in [d.reason for d in again.dropped]


async def test_instructions_reach_the_prompt(fake_openai: FakeOpenAI, llm_for: Any) -> None:
    options = ReviewOptions(
        instructions="Focus on money.",
        path_instructions=(PathInstruction("src/util.py", "No eval, ever."),),
    )
    await review_changes(llm_for(settings_for(fake_openai)), PATCH, options)
    (request,) = fake_openai.requests
    assert "Focus on money." in request.system and "No eval, ever." in request.system


async def test_an_unpriced_model_refuses_before_any_call(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    llm = llm_for(settings_for(fake_openai, default_model="openai:house-model"))
    with pytest.raises(ModelPriceUnknown):
        await review_changes(llm, PATCH)
    assert fake_openai.requests == []
    free = await review_changes(llm, PATCH, ReviewOptions(max_cost_usd=0))
    assert free.complete and not free.usage.priced
    assert "cost unknown" in free.summary_markdown


async def test_progress_is_reported_per_chunk(fake_openai: FakeOpenAI, llm_for: Any) -> None:
    files = {f"f{i}.py": (None, numbered(120, f"statement_{i} = 1")) for i in range(5)}
    seen: list[tuple[int, int]] = []
    result = await review_changes(
        llm_for(settings_for(fake_openai)),
        patch_of(files),
        ReviewOptions(chunk_tokens=1500),
        on_progress=lambda done, total: seen.append((done, total)),
    )
    total = result.chunks
    assert total == len(fake_openai.requests) > 1
    assert seen[0][0] == 0 and seen[-1] == (total, total)
    done = [d for d, _ in seen]
    assert done == sorted(done) and set(done) == set(range(total + 1))
    assert math.isclose(result.chunks_reviewed, total)


def test_the_core_imports_no_platform_or_provider_code() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, bot.core, bot.cli.review; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aiohttp', 'gidgethub', 'gitlab', 'openai', 'anthropic'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"  # the SDKs load on the first model call only


# --- Where a review is prepared (issue 20) -------------------------------------------------------


def test_only_a_small_review_is_prepared_on_the_event_loop() -> None:
    """A review whose counted text and glob matches are within the bounds is prepared where it
    is (the hop to a thread would cost more); anything larger goes to a thread."""
    small = parse_diff(patch_of({"a.py": (None, "x = 1\ny = 2\n")}))
    assert prepared_in_place(small, ReviewOptions(), title="Fix", description="A typo.")
    large = parse_diff(patch_of({"a.py": (None, numbered(60))}))
    assert not prepared_in_place(large, ReviewOptions())
    many = parse_diff(
        patch_of({f"f{i}.py": (None, "x = 1\n") for i in range(IN_PLACE_MATCHES + 1)})
    )
    assert not prepared_in_place(many, ReviewOptions())  # one glob match per file at least
    globs = ReviewOptions(path_filters=tuple(f"src/{i}/**" for i in range(IN_PLACE_MATCHES)))
    assert not prepared_in_place(small, globs)  # a few files, but every one against 64 globs
    words = "word " * (IN_PLACE_CHARS // 5 + 1)
    assert not prepared_in_place(small, ReviewOptions(), description=words)  # counted too
    assert not prepared_in_place(small, ReviewOptions(instructions=words))
    told = ReviewOptions(path_instructions=(PathInstruction("a.py", words),))
    assert not prepared_in_place(small, told)
