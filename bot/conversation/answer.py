"""Answering a question put to the bot on a pull request.

`answer(ctx, question)` first sees whether the question may be answered: questions are
on (ARBITER_FOLLOWUP_ENABLED, the repository's `followup.enabled`), the asker may ask
(`followup.allow`), is within ARBITER_FOLLOWUP_RATE_PER_HOUR on this pull request, and today's
budget is not spent; a refusal is one short reply. Then it acknowledges the question (👀),
gathers the context (the thread, the diff around the commented line, the PR's description,
Arbiter's earlier findings), and asks the model for an answer and a confidence. The answer is
posted in the comment's thread only when the confidence reaches
ARBITER_FOLLOWUP_CONFIDENCE_THRESHOLD; below it the comment gets 😕 and nothing else.

Everything from the pull request goes into the prompt as delimited data (bot/core/
prompting.py's boundaries), and what the model writes is neutralised before it is posted.
Every exchange is recorded, with its tokens and cost, and answers count toward the daily
budget like reviews.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

import prompts
from bot.context import Context
from bot.conversation.exchange import begin, exchange_start, finish, react, reply_id, requester, say
from bot.conversation.mentions import Question
from bot.conversation.rules import may_ask
from bot.conversation.threads import thread_findings
from bot.core.budget import utc_day_start
from bot.core.diff import ADDED, REMOVED, DiffFile, DiffLine, from_file_changes
from bot.core.markdown import code, neutralise
from bot.core.prompting import DESCRIPTION_CHARS, LINE_CHARS, NO_DESCRIPTION, boundary_for
from bot.llm import (
    Completion,
    LLMError,
    LLMNotConfigured,
    LLMRefused,
    MalformedAnswer,
    ModelPriceUnknown,
    Prompt,
)
from bot.store.base import ExchangeOutcome, ExchangeRecord, FindingRecord, UsageRecord
from platforms.base import PullRequest

HOUR = 3600.0
# Exchanges that put a question to the model (or are about to): what the rate limit counts.
COUNTED = ("pending", "answered", "unsure", "no_reply", "failed")
DIFF_RADIUS = 20  # lines of the diff shown either side of the commented line
DIFF_CHARS = 16_000  # the diff shown with a question about the whole pull request
FINDINGS_SHOWN = 30
THREAD_ENTRIES = 12  # the latest entries of a long thread
ENTRY_CHARS = 4000
ANSWER_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
CUT_ROOM = 100  # for the note that the answer was cut
ARBITER = "Arbiter"


class AnswerModel(BaseModel):
    """Answer the last comment of the conversation."""

    answer: str = Field(description="the reply, Markdown; empty when reply_needed is false")
    confidence: float = Field(
        description="0 to 1: how sure you are that the answer is right and answers the comment"
    )
    reply_needed: bool = Field(
        description="false when the comment asks nothing and needs no reply (thanks, done)"
    )


@dataclass(frozen=True)
class ThreadEntry:
    author: str
    text: str
    by_arbiter: bool = False


@dataclass(frozen=True)
class AnswerContext:
    """What the model is shown, each part already rendered."""

    title: str
    description: str
    where: str
    findings: str
    diff: str
    thread: Sequence[ThreadEntry]


async def answer(ctx: Context, question: Question) -> None:
    """Handle one question, from the checks to the reply (or the silence), recorded as an
    exchange; nothing again when an earlier attempt of this job already did it."""
    record = await begin(ctx, exchange_start(ctx.event, question))
    if record is None:
        return
    refusal = await _refusal(ctx, record)
    if refusal is not None:
        outcome, text = refusal
        ref = await say(ctx, text) if text else None
        await finish(ctx, record, outcome, answer=text, reply_id=reply_id(ref))
        return
    await react(ctx, "eyes")
    await _answer(ctx, record, question)


# --- May it be answered? -------------------------------------------------------------------


async def _refusal(
    ctx: Context, record: ExchangeRecord
) -> tuple[ExchangeOutcome, str | None] | None:
    """(outcome, reply) when the question is not to be answered (reply None: silence)."""
    settings = ctx.settings
    if not settings.followup_enabled:
        return "off", None
    effective = await ctx.repo_config()
    config = effective.config
    if not (config.enabled and config.followup.enabled):
        return "off", None
    if config.followup.allow != "everyone":
        permission = await ctx.platform.permission(record.author)
        if not may_ask(effective, permission):
            return "not_allowed", not_allowed_reply()
    asked = await ctx.store.count_exchanges(
        record.platform,
        record.repo,
        record.number,
        author=record.author,
        since=ctx.clock() - HOUR,
        outcomes=COUNTED,
        through_id=record.id,
    )
    limit = settings.followup_rate_per_hour
    if asked > limit:  # this question is one of those counted
        return "rate_limited", rate_limited_reply(limit)
    budget = settings.daily_budget_usd
    if budget > 0 and await ctx.store.spent_since(utc_day_start(ctx.clock())) >= budget:
        return "over_budget", over_budget_reply(budget)
    return None


# --- The answer ----------------------------------------------------------------------------


async def _answer(ctx: Context, record: ExchangeRecord, question: Question) -> None:
    event, platform, settings = ctx.event, ctx.platform, ctx.settings
    comment = event.comment
    assert comment is not None
    effective = await ctx.repo_config()
    pr = await platform.pull_request(record.number)
    files = from_file_changes((await platform.changes(pr)).files)
    findings = [
        f
        for f in await ctx.store.findings_for(record.platform, record.repo, record.number)
        if f.posted
    ]
    about = thread_findings(comment, findings)
    history = await ctx.store.list_exchanges(
        platform=record.platform, repo=record.repo, number=record.number
    )
    context = answer_context(
        pr,
        files,
        findings,
        about,
        earlier_in_thread(history, record),
        ThreadEntry(requester(event).login, question.text),
        path=comment.path if comment.kind == "inline" else None,
        line=comment.line if comment.kind == "inline" else None,
    )
    max_tokens = settings.followup_max_tokens_per_response
    prompt = build_answer_prompt(
        context, max_words=max(20, max_tokens * 3 // 5), language=effective.config.language
    )
    try:
        done = await ctx.model.complete(
            prompt,
            AnswerModel,
            model=effective.model or None,
            max_output_tokens=max_tokens,
            cost_cap_usd=effective.max_cost_per_review_usd,
        )
    except (ModelPriceUnknown, LLMNotConfigured, MalformedAnswer, LLMRefused) as exc:
        # Asking again cannot help: say nothing (a 😕), and record why.
        await _book(ctx, record, exc)
        ctx.log.warning("question not answered: the model failed", error=str(exc))
        await react(ctx, "confused")
        await finish(ctx, record, "failed", **_spent(exc))
        return
    except LLMError as exc:
        # Down, rate-limited or slow: the job is retried, and finds this exchange pending.
        await _book(ctx, record, exc)
        raise
    await _book(ctx, record, done)
    spent = {
        "model": done.model,
        "input_tokens": done.input_tokens,
        "output_tokens": done.output_tokens,
        "cost_usd": done.cost_usd,
    }
    value = done.value
    confidence = min(max(value.confidence, 0.0), 1.0)
    outcome = verdict(value, settings.followup_confidence_threshold)
    if outcome == "no_reply":
        await finish(ctx, record, "no_reply", confidence=confidence, **spent)
    elif outcome == "unsure":
        await react(ctx, "confused")
        await finish(ctx, record, "unsure", confidence=confidence, **spent)
    else:
        text = answer_text(value.answer)
        ref = await say(ctx, text)
        await finish(
            ctx,
            record,
            "answered",
            answer=text,
            confidence=confidence,
            reply_id=reply_id(ref),
            **spent,
        )


async def _book(
    ctx: Context, record: ExchangeRecord, spent: Completion[AnswerModel] | LLMError
) -> None:
    """Count what a model call was billed (a failed one too) toward the daily budget."""
    if not (spent.input_tokens or spent.output_tokens or spent.cost_usd):
        return  # from the cache, or never sent
    await ctx.store.record_usage(
        UsageRecord(
            "followup",
            spent.input_tokens,
            spent.output_tokens,
            spent.cost_usd,
            platform=record.platform,
            repo=record.repo,
            number=record.number,
            model=spent.model or None,
        )
    )


def _spent(exc: LLMError) -> dict[str, object]:
    return {
        "model": exc.model or None,
        "input_tokens": exc.input_tokens,
        "output_tokens": exc.output_tokens,
        "cost_usd": exc.cost_usd,
    }


# --- Pure steps -----------------------------------------------------------------------------------


def verdict(value: AnswerModel, threshold: float) -> Literal["answered", "unsure", "no_reply"]:
    """answered, unsure (below the threshold, or nothing written) or no_reply."""
    if not value.reply_needed:
        return "no_reply"
    if value.confidence < threshold or not value.answer.strip():
        return "unsure"
    return "answered"


def answer_text(answer: str) -> str:
    """The model's answer as posted: mentions and markers defused, within a comment's size.
    It is cut before it is neutralised: a cut inside a code span must not free what is in it."""
    text = answer.strip()
    keep = ANSWER_CHARS
    while True:
        cut = len(text) > keep
        shown = neutralise(text[:keep].rstrip() if cut else text)
        if cut:
            shown += "\n\n… (cut to fit a comment)"
        if len(shown) <= ANSWER_CHARS + CUT_ROOM or keep < 1000:
            return shown
        keep //= 2  # defusing grew it (every `@` gains a character): cut deeper


def earlier_in_thread(
    history: Iterable[ExchangeRecord], record: ExchangeRecord
) -> list[ExchangeRecord]:
    """Earlier questions of the same thread (the PR's conversation: those not inline), oldest
    first."""
    same = [
        e
        for e in history
        if e.id != record.id
        and e.kind == "question"
        and e.created_at <= record.created_at
        and e.thread == record.thread
        and (record.thread is not None or e.path is None)
    ]
    return sorted(same, key=lambda e: (e.created_at, e.id))


def thread_entries(
    about: Sequence[FindingRecord],
    earlier: Sequence[ExchangeRecord],
    latest: ThreadEntry,
) -> list[ThreadEntry]:
    """The conversation as the model reads it: the finding(s) that started the thread, earlier
    questions and Arbiter's answers, then the comment to answer; long threads keep their start
    and their latest entries."""
    start = [ThreadEntry(ARBITER, finding_text(f), by_arbiter=True) for f in about]
    middle: list[ThreadEntry] = []
    for e in earlier:
        middle.append(ThreadEntry(e.author, e.question))
        if e.answer and e.outcome == "answered":
            middle.append(ThreadEntry(ARBITER, e.answer, by_arbiter=True))
    room = max(THREAD_ENTRIES - len(start) - 1, 0)
    return [*start, *(middle[-room:] if room else []), latest]


def finding_text(finding: FindingRecord) -> str:
    where = f"{finding.path} line {finding.line}"
    if finding.start_line:
        where = f"{finding.path} lines {finding.start_line}–{finding.line}"
    return (
        f"Review finding ({finding.severity}, {finding.category}) on {where}: "
        f"{finding.title}\n\n{finding.body}"
    )


def findings_summary(findings: Sequence[FindingRecord], about: Sequence[FindingRecord]) -> str:
    others = [f for f in findings if f not in about]
    if not others:
        return "(no other findings on this pull request)"
    lines = [
        f"- {f.severity} {f.category}, {f.path} line {f.line}: {f.title}"
        for f in others[:FINDINGS_SHOWN]
    ]
    if len(others) > FINDINGS_SHOWN:
        lines.append(f"- … and {len(others) - FINDINGS_SHOWN} more")
    return "\n".join(lines)


def diff_around(
    files: Sequence[DiffFile],
    path: str | None,
    line: int | None,
    *,
    radius: int = DIFF_RADIUS,
    max_chars: int = DIFF_CHARS,
) -> str:
    """The diff a question is about: the lines around `line` of `path`, all of `path`'s diff
    when the line is not in it, or the whole diff (cut to `max_chars`) for a question about the
    pull request."""
    if path is None:
        return _cut("".join(_whole_file(f) for f in files) or "(no changes)", max_chars)
    file = next((f for f in files if f.path == path), None)
    if file is None:
        return f"(the pull request's diff no longer shows {path})"
    if not file.hunks:
        why = "binary" if file.binary else "too large to show" if file.too_large else "no lines"
        return f"=== FILE {path} ({file.status}) ===\n({why})\n"
    if line is None or file.hunk_of(line) is None:
        return _cut(_whole_file(file), max_chars)
    low, high = line - radius, line + radius
    out = [f"=== FILE {path} ({file.status}), around line {line} ===\n"]
    for hunk in file.hunks:
        position = float(hunk.new_start - 1)
        shown = False
        for diff_line in hunk.lines:
            position = diff_line.new if diff_line.new is not None else position + 0.001
            if low <= position <= high:
                if not shown:
                    out.append(hunk.heading + "\n")
                    shown = True
                out.append(_render(diff_line) + "\n")
    return _cut("".join(out), max_chars)


def _whole_file(file: DiffFile) -> str:
    out = [f"=== FILE {file.path} ({file.status}) ===\n"]
    for hunk in file.hunks:
        out.append(hunk.heading + "\n")
        out += [_render(diff_line) + "\n" for diff_line in hunk.lines]
    return "".join(out)


def _render(line: DiffLine) -> str:
    text = line.text if len(line.text) <= LINE_CHARS else line.text[:LINE_CHARS] + " …"
    if line.kind == REMOVED:
        return f"      -{text}"
    return f"{line.new:>5} {'+' if line.kind == ADDED else ' '}{text}"


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit("\n", 1)[0] + "\n… (the rest of the diff is left out)\n"


def answer_context(
    pr: PullRequest,
    files: Sequence[DiffFile],
    findings: Sequence[FindingRecord],
    about: Sequence[FindingRecord],
    earlier: Sequence[ExchangeRecord],
    latest: ThreadEntry,
    *,
    path: str | None,
    line: int | None,
) -> AnswerContext:
    if path is None:
        where = "a comment on the pull request as a whole"
    elif line is None:
        where = f"a comment on the file {path}"
    else:
        where = f"a comment on line {line} of {path}"
    return AnswerContext(
        title=pr.title,
        description=pr.body or "",
        where=where,
        findings=findings_summary(findings, about),
        diff=diff_around(files, path, line),
        thread=thread_entries(about, earlier, latest),
    )


def render_thread(entries: Sequence[ThreadEntry]) -> str:
    blocks = []
    for index, entry in enumerate(entries):
        text = entry.text.strip()
        if len(text) > ENTRY_CHARS:
            text = text[:ENTRY_CHARS] + " …(cut)"
        label = entry.author if not entry.by_arbiter else ARBITER
        if index == len(entries) - 1:
            label += " (the comment to answer)"
        blocks.append(f"--- {label} ---\n{text}")
    return "\n\n".join(blocks)


def build_answer_prompt(context: AnswerContext, *, max_words: int, language: str = "en") -> Prompt:
    description = context.description
    if len(description) > DESCRIPTION_CHARS:
        description = description[:DESCRIPTION_CHARS] + "\n…(description truncated)"
    conversation = render_thread(context.thread)
    diff = context.diff.rstrip("\n")
    boundary = boundary_for(context.title, description, context.findings, diff, conversation)
    note = "" if language.lower() in ("en", "english") else f"Write the answer in {language}.\n"
    system = prompts.render(
        "answer_system", boundary=boundary, max_words=str(max_words), language=note
    )
    user = prompts.render(
        "answer_user",
        boundary=boundary,
        where=context.where,
        title=context.title.strip() or "(no title)",
        description=description.strip() or NO_DESCRIPTION,
        findings=context.findings,
        diff=diff,
        conversation=conversation,
    )
    return Prompt(system=system, user=user)


# --- What Arbiter says when it does not answer ----------------------------------------------------


def not_allowed_reply() -> str:
    return (
        "Sorry, on this repository only people with write access can ask Arbiter questions "
        f"({code('followup.allow: collaborators')} in {code('.arbiter.yml')})."
    )


def rate_limited_reply(limit: int) -> str:
    return (
        f"You have asked {limit} questions on this pull request in the last hour, as many as "
        "Arbiter answers for one person; please ask again later."
    )


def over_budget_reply(budget: float) -> str:
    return (
        f"Arbiter's budget for today (${budget:.2f}) is spent, so it cannot answer now; "
        "questions are answered again after 00:00 UTC."
    )
