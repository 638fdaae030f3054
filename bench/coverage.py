"""Benchmark: how much of a pull request reaches the model, for how many tokens.

    .venv/bin/python bench/coverage.py

Two synthetic pull requests, built deterministically (a fixed seed):

- small: 3 modified Python files, 60 changed lines;
- large: 300 modified Python files, 10,000 changed lines, with 10 planted problems (SQL built
  by hand, eval of input, a shell command, TLS verification off…) in files 0, 30, …, 270.

Each is reviewed by the real pipeline (`bot.core.review.review_changes`) against the fake
OpenAI of tests/fakes (gpt-4o), which bills every request as OpenAI does, with the real
`o200k_base` encoding; the fake model reports a finding wherever a planted problem's line is
in its prompt, at the line number the prompt shows. The large one runs at the default budget
(ARBITER_MAX_TOKENS_PER_REVIEW = 50,000) and at 32,000. Printed per run: calls, prompt tokens
(exact), prompt tokens per changed line, files whose diff reached the model, files named as
not reviewed, files neither (absent), planted problems reached (a finding on the planted
line), and the budget used (input + output billed, against the cap; never over it).

Goals (issue 17): small PR <= 25 prompt tokens per changed line; large PR at 50,000: >= 100
files with diff, 0 absent, never over the cap and >= 90 % used; at 32,000: >= 60 files with
diff. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.core import ReviewOptions, review_changes  # noqa: E402
from bot.llm import make_llm  # noqa: E402
from bot.metrics import Metrics  # noqa: E402
from config.settings import load_settings  # noqa: E402
from platforms.base import FileChange  # noqa: E402
from tests.fakes.openai import FakeOpenAI, LLMRequest, Reply, finding, review_answer  # noqa: E402

WORDS = (
    *("user", "order", "item", "price", "total", "cache", "session", "record", "event", "value"),
    *("limit", "offset", "name", "path", "result", "payload", "config", "client", "index"),
)
PLANTED = (
    "    cursor.execute(f\"SELECT * FROM users WHERE name = '{name}'\")",
    '    return eval(request.args["expression"])',
    "    subprocess.run(command, shell=True, check=False)",
    "    data = pickle.loads(request.body)",
    "    response = requests.get(url, verify=False, timeout=5)",
    '    api_password = "hunter2-production"',
    "    os.chmod(upload_path, 0o777)",
    "    digest = hashlib.md5(password.encode()).hexdigest()",
    "    settings = yaml.load(stream)",
    "    token = str(random.random())",
)


@dataclass(frozen=True)
class Planted:
    path: str
    line: int
    text: str


def _line(rng: random.Random, indent: int) -> str:
    a, b, c = rng.sample(WORDS, 3)
    pad = "    " * indent
    kind = rng.randrange(10)
    if kind == 0:
        return ""
    if kind == 1:
        return f"{pad}# Keep the {a} in step with the {b}."
    if kind == 2:
        return f"{pad}if {a} is None:"
    if kind == 3:
        return f"{pad}return {a}_{b}"
    if kind == 4:
        return f"{pad}for {a} in {b}_{c}s:"
    if kind == 5:
        return f'{pad}log.info("{a} %s", {b})'
    if kind == 6:
        return f"{pad}{a} = {b}.get({c!r})"
    return f"{pad}{a}_{b} = compute_{c}({a}, {b}={rng.randrange(100)})"


def build_pr(
    files: int, changed: int, *, seed: int, plant_every: int = 0
) -> tuple[list[FileChange], list[Planted]]:
    """`files` modified Python files adding up to `changed` changed lines (about two added for
    each removed, in hunks of up to 12 changes between 3 lines of context, as git shows them)."""
    rng = random.Random(seed)
    per_file = [changed // files + (1 if i < changed % files else 0) for i in range(files)]
    changes: list[FileChange] = []
    planted: list[Planted] = []
    for number, count in enumerate(per_file):
        path = f"src/pkg{number % 12}/module_{number:03d}.py"
        plant = plant_every and number % plant_every == 0
        out: list[str] = []
        old = new = 1 + rng.randrange(40)
        left = count
        first_hunk = True
        while left > 0:
            size = min(left, rng.randrange(6, 13))
            removed = size // 3
            added = size - removed
            left -= size
            before = [_line(rng, 1) for _ in range(3)]
            after = [_line(rng, 1) for _ in range(3)]
            plus = [_line(rng, 1 + rng.randrange(2)) for _ in range(added)]
            if plant and first_hunk:
                text = PLANTED[(number // plant_every) % len(PLANTED)]
                plus[added // 2] = text
                planted.append(Planted(path, new + 3 + added // 2, text))
            first_hunk = False
            header = (
                f"@@ -{old},{6 + removed} +{new},{6 + added} @@ def handle_{rng.choice(WORDS)}("
            )
            body = [f" {t}" for t in before]
            body += [f"-{_line(rng, 1)}" for _ in range(removed)]
            body += [f"+{t}" for t in plus]
            body += [f" {t}" for t in after]
            out.append(header + "\n" + "\n".join(body))
            old += 6 + removed + 15 + rng.randrange(30)
            new += 6 + added + 15 + rng.randrange(30)
        patch = "\n".join(out) + "\n"
        adds = patch.count("\n+")
        dels = patch.count("\n-")
        changes.append(FileChange(path, "modified", patch, additions=adds, deletions=dels))
    return changes, planted


_FILE = re.compile(r"^=== FILE (\S+) [(=]", re.MULTILINE)
_NUMBERED = re.compile(r"^(\d+)\+(.*)$")


def model_for(planted: list[Planted]) -> Any:
    """A fake model that reads the prompt: a finding on each planted line it is shown (at
    the number printed before it), a line on each file, one summary."""
    texts = {p.text for p in planted}

    def respond(request: LLMRequest) -> Reply:
        findings: list[dict[str, Any]] = []
        files: list[dict[str, str]] = []
        path = ""
        for line in request.user.splitlines():
            head = _FILE.match(line)
            if head:
                path = head.group(1)
                files.append({"path": path, "summary": "Reworks the handlers' lookups."})
                continue
            hit = _NUMBERED.match(line)
            if hit and hit.group(2) in texts:
                findings.append(
                    finding(path, int(hit.group(1)), severity="critical", category="security")
                )
        answer = review_answer(*findings, summary="Reworks lookups across the handlers.")
        answer.data["files"] = files  # type: ignore[index]
        return answer

    return respond


async def run(
    name: str, pr: tuple[list[FileChange], list[Planted]], max_tokens: int | None
) -> dict[str, Any]:
    changes, planted = pr
    async with FakeOpenAI() as fake:
        settings = load_settings(
            **fake.settings(), default_model="gpt-4o", cache_ttl_hours=0, llm_timeout=30
        )
        llm = make_llm(settings, None, Metrics())
        fake.respond(model_for(planted))
        try:
            result = await review_changes(
                llm, changes, ReviewOptions(max_tokens=max_tokens), title="Rework the handlers"
            )
        finally:
            await llm.close()
        cap = max_tokens or settings.max_tokens_per_review
        prompt_tokens = sum(r.input_tokens for r in fake.requests)
        output_tokens = sum(r.output_tokens for r in fake.requests)
    changed = sum(c.additions + c.deletions for c in changes)
    shown = {m for r in fake.requests for m in _FILE.findall(r.user)}
    named = {n.path for n in result.not_reviewed} - shown
    absent = {c.path for c in changes} - shown - named
    reached = {(f.path, f.line) for f in result.findings}
    return {
        "pr": name,
        "cap": cap,
        "calls": len(fake.requests),
        "prompt": prompt_tokens,
        "per_line": prompt_tokens / changed,
        "with_diff": len(shown),
        "named": len(named),
        "absent": len(absent),
        "planted": f"{sum((p.path, p.line) in reached for p in planted)}/{len(planted)}",
        "used": (prompt_tokens + output_tokens) / cap,
        "over": prompt_tokens + output_tokens > cap,
    }


async def main() -> None:
    small = build_pr(3, 60, seed=3)
    large = build_pr(300, 10_000, seed=17, plant_every=30)
    rows = [
        await run("small (3 files, 60 lines)", small, None),
        await run("large (300 files, 10,000 lines)", large, None),
        await run("large (300 files, 10,000 lines)", large, 32_000),
    ]
    print(
        f"{'PR':34} {'cap':>7} {'calls':>5} {'prompt':>7} {'tok/line':>8} {'w/ diff':>7} "
        f"{'named':>5} {'absent':>6} {'planted':>7} {'used':>6} {'over':>5}"
    )
    for r in rows:
        print(
            f"{r['pr']:34} {r['cap']:>7,} {r['calls']:>5} {r['prompt']:>7,} {r['per_line']:>8.1f} "
            f"{r['with_diff']:>7} {r['named']:>5} {r['absent']:>6} {r['planted']:>7} "
            f"{r['used']:>6.1%} {'yes' if r['over'] else 'no':>5}"
        )


if __name__ == "__main__":
    asyncio.run(main())
