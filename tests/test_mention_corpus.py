"""The mention corpus (issue 16): hostile titles, bodies, file names, branch names, model
findings and answers, through everything Arbiter renders, each output read back with
markdown-it-py: no live mention, and no raw HTML but Arbiter's own tags and markers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot.conversation.answer import answer_text
from bot.conversation.commands import config_reply
from bot.conversation.exchange import as_reply
from bot.core.filters import NotReviewed
from bot.core.findings import DroppedFinding, Finding
from bot.core.render import FileNote, SummaryFacts, comment_body, summary_markdown
from bot.review.config_problems import problems_comment
from config.repo import resolve
from tests.mention_corpus import (
    HOSTILE_BRANCHES,
    HOSTILE_PATHS,
    HOSTILE_TITLES,
    TRICKS,
    problems,
    without_markers,
)

TEXTS = tuple(TRICKS.values())


def _finding(title: str, body: str, path: str = "app.py", n: int = 0) -> Finding:
    return Finding(
        path=path,
        line=3,
        severity="major",
        category="bug",
        title=title,
        body=body,
        confidence=0.9,
        fingerprint=f"fp{n}",
        suggestion="@Override\nvoid run() {}",
    )


def _quiet(posted: str) -> None:
    found = problems(without_markers(posted))
    assert found == [], "\n".join(str(f) for f in found) + "\n---\n" + posted


@pytest.mark.parametrize("text", TEXTS)
def test_an_inline_comment_pings_no_one(text: str) -> None:
    _quiet(comment_body(_finding(text, text)))
    _quiet(comment_body(_finding(" ".join(text.split()), f"Intro.\n\n{text}\n\nOutro.")))


def test_the_summary_pings_no_one_and_hides_nothing() -> None:
    findings = [
        _finding(" ".join(t.split())[:200], t, path=p, n=i)
        for i, (t, p) in enumerate(zip(TEXTS, HOSTILE_PATHS * 4, strict=False))
    ]
    facts = SummaryFacts(
        model="gpt-4o",
        files_changed=len(HOSTILE_PATHS),
        additions=10,
        deletions=2,
        reviewed_files=1,
        overview=TEXTS,
        findings=findings,
        dropped=[
            DroppedFinding(p, 9, "minor", " ".join(t.split()), f"duplicate of {t}")
            for t, p in zip(TEXTS, HOSTILE_PATHS * 4, strict=False)
        ],
        not_reviewed=[NotReviewed(p, "minified file") for p in HOSTILE_PATHS]
        + [
            NotReviewed(p, f"excluded by the path filter !{t}")
            for p, t in zip(HOSTILE_PATHS, TEXTS, strict=False)
        ],
        errors=TEXTS[:10],
        calls=3,
        cached_calls=0,
        input_tokens=100,
        output_tokens=20,
        cost_usd=0.01,
        priced=True,
        # the walkthrough's table: hostile paths, and the model's line on each
        walkthrough=[
            FileNote(p, t, additions=3, partial=i % 2 == 0)
            for i, (t, p) in enumerate(zip(TEXTS, HOSTILE_PATHS * 4, strict=False))
        ],
    )

    posted = summary_markdown(facts)

    _quiet(posted)
    assert "<!--" not in posted.replace("`<!--", "")  # a file name plants no marker


def test_a_summary_cut_to_fit_pings_no_one() -> None:
    paths = [f"dir/`x{n}` @octocat {n}.py" for n in range(400)]
    facts = SummaryFacts(
        model="gpt-4o",
        files_changed=400,
        additions=1,
        deletions=0,
        reviewed_files=0,
        overview=(),
        findings=(),
        dropped=(),
        not_reviewed=[NotReviewed(p, "minified file") for p in paths],
        errors=(),
        calls=0,
        cached_calls=0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        priced=True,
    )
    for limit in range(900, 1400, 37):  # cut at many points, mid code span too
        _quiet(summary_markdown(facts, max_chars=limit))


@pytest.mark.parametrize("text", TEXTS)
def test_an_answer_pings_no_one(text: str) -> None:
    _quiet(as_reply(answer_text(text)))
    _quiet(as_reply(answer_text(f"Sure.\n\n{text}\n\nHope this helps, @octocat.")))


def test_an_answer_cut_to_fit_pings_no_one() -> None:
    long = "`" + "@octocat " * 10_000 + "`"  # one code span, cut in the middle
    _quiet(as_reply(answer_text(long)))
    _quiet(as_reply(answer_text("@" * 70_000)))


@pytest.mark.parametrize("branch", HOSTILE_BRANCHES)
def test_the_config_comment_and_reply_ping_no_one(branch: str) -> None:
    # Unclosed brackets make every value a problem, quoted back in the comment.
    lines = "".join(f"  - {json.dumps('[' + ' '.join(t.split()))}\n" for t in TEXTS)
    text = f'path_filters:\n{lines}"@octocat <!-- x -->": 1\n'
    effective = replace(
        resolve(text),
        branch=branch,
        commit="0123456789abcdef",
    )
    assert effective.repo_problems  # the hostile values are quoted back in the problems

    _quiet(problems_comment(effective))
    _quiet(as_reply(config_reply(effective)))


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_hostile_file_name_pings_no_one_anywhere(path: str) -> None:
    finding = _finding("@octocat look", "see @octocat", path=path)
    facts = SummaryFacts(
        model="gpt-4o",
        files_changed=1,
        additions=1,
        deletions=0,
        reviewed_files=1,
        overview=(),
        findings=[finding],
        dropped=[DroppedFinding(path, 1, "nit", "t", "not a file in this review")],
        not_reviewed=[NotReviewed(path, "minified file"), NotReviewed(path + "/x", "lock file")],
        errors=(),
        calls=1,
        cached_calls=0,
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.0,
        priced=True,
    )

    _quiet(summary_markdown(facts))
    _quiet(comment_body(finding))


def test_every_hostile_title_is_in_the_corpus() -> None:
    assert len(TRICKS) >= 13 and len(HOSTILE_TITLES) == len(TRICKS)
