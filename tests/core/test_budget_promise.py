"""Issue 17's acceptance: the caps are promises, and the budget goes where a reviewer would
spend it (risk order, a cap per file, nothing reserved and abandoned)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from bot.core import ReviewOptions, review_changes
from config.prices import load_prices
from tests.core.conftest import numbered, patch_of, settings_for
from tests.fakes.openai import FakeOpenAI, LLMRequest, Reply, review_answer

_FILE = re.compile(r"^=== FILE (\S+) [(=]")
_ADDED = re.compile(r"^(\d+)\+")


def shown(requests: list[LLMRequest]) -> set[tuple[str, int]]:
    """(path, line) of every added line the model was shown."""
    seen: set[tuple[str, int]] = set()
    for request in requests:
        path = ""
        for line in request.user.splitlines():
            head = _FILE.match(line)
            if head:
                path = head.group(1)
            elif hit := _ADDED.match(line):
                seen.add((path, int(hit.group(1))))
    return seen


def verbose(request: LLMRequest) -> Reply:
    """A model that writes as long an answer as it is allowed (and more)."""
    return review_answer(summary="word " * 40_000)


def code(rng: random.Random, n: int) -> str:
    words = ("user", "order", "total", "cache", "value", "limit", "index", "record", "name")
    return "".join(
        f"    {rng.choice(words)}_{i} = compute({rng.choice(words)}, {rng.randrange(999)})\n"
        for i in range(n)
    )


SHAPES: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "one small file": {"app.py": ("a = 1\n", "a = 2\nb = 3\n")},
    "many small files": {f"pkg/m{i}.py": (None, numbered(12, f"v{i} =")) for i in range(120)},
    "one huge file": {"big.py": (None, code(random.Random(1), 4000))},
    "mixed": {
        **{f"src/s{i}.py": (None, code(random.Random(i), 30 + 9 * i)) for i in range(25)},
        "src/huge.py": (None, code(random.Random(99), 2500)),
        "CHANGELOG.md": (None, numbered(40, "- entry")),
    },
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("max_tokens", "max_cost"), [(6_000, 0.0), (20_000, 0.0), (50_000, 0.03)])
@pytest.mark.parametrize("model", ["normal", "verbose"])
async def test_exact_input_plus_reserved_output_never_pass_the_caps(
    fake_openai: FakeOpenAI,
    llm_for: Any,
    shape: str,
    max_tokens: int,
    max_cost: float,
    model: str,
) -> None:
    if model == "verbose":
        fake_openai.respond(verbose)
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0, max_cost_per_review_usd=max_cost))
    result = await review_changes(
        llm, patch_of(SHAPES[shape]), ReviewOptions(max_tokens=max_tokens, max_cost_usd=max_cost)
    )
    requests = fake_openai.requests
    assert requests
    # What was billed (the fake counts exactly, as OpenAI does) never passes either cap...
    billed_in = sum(r.input_tokens for r in requests)
    billed_out = sum(r.output_tokens for r in requests)
    assert billed_in + billed_out <= max_tokens
    price = load_prices().lookup("openai", "gpt-4o")
    assert price is not None
    billed_usd = sum(price.cost(r.input_tokens, r.output_tokens) for r in requests)
    if max_cost:
        assert billed_usd <= max_cost
    # ...and no single call could have: its exact input plus the output it was allowed.
    for r in requests:
        assert r.input_tokens + (r.max_tokens or 0) <= max_tokens
    assert result.usage.input_tokens + result.usage.output_tokens == billed_in + billed_out
    # Every file is reviewed or named, each with its own reason.
    named = {n.path for n in result.not_reviewed}
    assert set(result.reviewed_paths) | named == set(SHAPES[shape])


async def test_a_huge_generated_looking_file_does_not_starve_a_small_source_change(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    files = {
        "src/tables.py": (None, code(random.Random(5), 20_000)),
        "src/billing/refund.py": (
            "def refund(x):\n    return x\n",
            "def refund(x):\n    if x < 0:\n        raise ValueError(x)\n    return x\n",
        ),
    }
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0))
    result = await review_changes(llm, patch_of(files), ReviewOptions(max_tokens=20_000))
    seen = shown(fake_openai.requests)
    assert {("src/billing/refund.py", n) for n in (2, 3)} <= seen
    assert "src/billing/refund.py" not in {n.path for n in result.not_reviewed}
    (left,) = [n for n in result.not_reviewed if n.path == "src/tables.py"]
    # Part of the big file was reviewed; the rest is named with its own lines and need.
    assert any(p == "src/tables.py" for p, _ in seen) and left.lines is not None
    need = int(re.search(r"its diff needs ([\d,]+) more tokens", left.reason)[1].replace(",", ""))  # type: ignore[index]
    assert 100_000 < need < 400_000  # the file's own need, not the whole chunk's


async def test_ci_files_requirements_and_changelogs_never_go_before_source(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    files = {
        ".github/workflows/ci.yml": (None, numbered(30, "  - run: step")),
        "requirements.txt": ("a==1\n", "a==2\nb==3\n"),
        "CHANGELOG.md": (None, numbered(30, "- change")),
        "docs/guide.md": (None, numbered(10, "text")),
        "tests/test_core.py": (None, numbered(20, "assert x ==")),
        "src/core.py": (None, code(random.Random(2), 40)),
        "src/auth/tokens.py": (None, code(random.Random(3), 10)),
    }
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0))
    await review_changes(llm, patch_of(files), ReviewOptions())
    (request,) = fake_openai.requests
    order = [m[1] for m in re.finditer(r"^=== FILE (\S+)", request.user, re.MULTILINE)]
    assert order[:2] == ["src/auth/tokens.py", "src/core.py"]  # security-sensitive first
    assert order.index("tests/test_core.py") > order.index("src/core.py")
    last = {".github/workflows/ci.yml", "requirements.txt", "CHANGELOG.md"}
    assert set(order[-3:]) == last

    # With room for little, it is the CI file, requirements and changelog that wait.
    small = FakeOpenAI()
    async with small:
        llm = llm_for(settings_for(small, cache_ttl_hours=0))
        result = await review_changes(llm, patch_of(files), ReviewOptions(max_tokens=2_600))
    named = {n.path for n in result.not_reviewed}
    assert {"src/core.py", "src/auth/tokens.py"} <= set(result.reviewed_paths)
    assert ".github/workflows/ci.yml" in named
    assert named <= last | {"docs/guide.md", "tests/test_core.py"}


def _refactor() -> dict[str, tuple[str | None, str | None]]:
    """28 files: four large new core modules among small edits, CI, requirements, a changelog,
    and a module whose 871 lines were deleted for a rewrite."""
    rng = random.Random(17)
    files: dict[str, tuple[str | None, str | None]] = {
        f"src/engine/core_{i}.py": (None, code(rng, 640)) for i in range(4)
    }
    for i in range(19):
        before = code(rng, 60)
        lines = before.splitlines(keepends=True)
        lines[20:26] = [f"    edited_{i}_{j} = True\n" for j in range(8)]
        files[f"src/app/edit_{i:02d}.py"] = (before, "".join(lines))
    files["src/engine/old.py"] = ("# kept\n" + code(rng, 871), "# kept\n" + code(rng, 30))
    files["tests/test_engine.py"] = (None, code(rng, 60))
    files[".github/workflows/ci.yml"] = ("on: push\n", "on: [push, pull_request]\n")
    files["requirements.txt"] = ("a==1\n", "a==2\n")
    files["CHANGELOG.md"] = ("# Changes\n", "# Changes\n- Engine rewrite.\n")
    return files


async def test_a_refactor_gets_most_of_its_added_source_to_the_model(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    files = _refactor()
    assert len(files) == 28
    patch = patch_of(files)
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0))
    result = await review_changes(llm, patch, ReviewOptions())  # the default budget, 50,000
    added_source = {
        (path, n)
        for path, (before, after) in files.items()
        if path.startswith("src/") and after is not None
        for n, _ in enumerate(after.splitlines(), start=1)
        if before is None
        or (path.startswith("src/app/") and 21 <= n <= 28)
        or (path == "src/engine/old.py" and n > 1)
    }
    reached = shown(fake_openai.requests) & added_source
    assert len(reached) >= 0.8 * len(added_source)
    budget = llm.settings.max_tokens_per_review
    spent = result.usage.input_tokens + result.usage.output_tokens
    refused = [n for n in result.not_reviewed if "budget" in n.reason]
    if refused:
        assert budget - spent <= 0.10 * budget  # no file refused while a tenth was unspent
    assert spent <= budget
    # The deleted block was shown short: its first lines and a count, not 871 lines.
    prompt = next(r.user for r in fake_openai.requests if "src/engine/old.py" in r.user)
    deleted = prompt.split("=== FILE src/engine/old.py", 1)[1].split("=== FILE", 1)[0]
    counted = re.search(r"^-… (\d+) more removed lines$", deleted, re.MULTILINE)
    assert counted is not None and int(counted[1]) > 800
    assert sum(1 for line in deleted.splitlines() if line.startswith("-")) < 10


async def test_what_an_answer_is_reserved_follows_recorded_usage(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0))
    files = {"app.py": (None, code(random.Random(4), 20))}
    await review_changes(llm, patch_of(files), ReviewOptions())
    floor = fake_openai.requests[-1].max_tokens
    await review_changes(llm, patch_of(files), ReviewOptions(recorded_output=(900,) * 10))
    measured = fake_openai.requests[-1].max_tokens
    assert floor is not None and measured is not None
    assert measured == 1125 > floor  # p90 of what answers took, with a 25 % margin
    await review_changes(llm, patch_of(files), ReviewOptions(recorded_output=(50,) * 10))
    assert fake_openai.requests[-1].max_tokens == floor  # never below the floor


async def test_the_walkthrough_is_built_from_the_chunks_answers(
    fake_openai: FakeOpenAI, llm_for: Any
) -> None:
    def respond(request: LLMRequest) -> Reply:
        paths = re.findall(r"^=== FILE (\S+)", request.user, re.MULTILINE)
        answer = review_answer(summary="Synthetic change.")
        answer.data["files"] = [{"path": p, "summary": f"Reworks {p}."} for p in paths]  # type: ignore[index]
        return answer

    fake_openai.respond(respond)
    files = {f"src/m{i}.py": (None, code(random.Random(i), 60)) for i in range(6)}
    llm = llm_for(settings_for(fake_openai, cache_ttl_hours=0))
    result = await review_changes(llm, patch_of(files), ReviewOptions(chunk_tokens=1500))
    assert len(fake_openai.requests) > 2  # several chunks, one walkthrough
    text = result.summary_markdown
    assert text.count("Synthetic change.") == 1
    for path in files:
        assert f"| `{path}` (+60 −0) | Reworks {path}. |" in text
