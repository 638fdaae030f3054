"""The review: a diff in, findings, a summary and the bill out.

`review_changes(llm, changes, options)` runs the pure steps in order: parse the diff, drop
what must not be reviewed, plan chunks within the budget, render each chunk's prompt, ask
the model (chunks in parallel, each call booked against the budget first), anchor and check
the findings, and render the inline comments and the summary. It needs no platform: the
caller posts the result.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from bot.core.budget import Budget, Spend
from bot.core.chunks import MIN_CHUNK_TOKENS, Chunk, plan_chunks
from bot.core.diff import DiffFile, from_file_changes, parse_diff
from bot.core.filters import NotReviewed, filter_files
from bot.core.findings import (
    DroppedFinding,
    Finding,
    ReviewAnswer,
    anchor,
    apply_floors,
    drop_known,
    in_file_order,
    limit,
    merge_duplicates,
)
from bot.core.prompting import PathInstruction, build_prompt
from bot.core.render import SummaryFacts, inline_comments, summary_markdown
from bot.llm import (
    LLM,
    LLMError,
    LLMNotConfigured,
    MalformedAnswer,
    ModelInfo,
    ModelPriceUnknown,
)
from bot.logs import get_logger
from config.severity import SEVERITY_RANK, Severity
from platforms.base import FileChange, InlineComment

OUTPUT_FLOOR = 2048  # output tokens allowed even to a small chunk: room for a dozen findings
ONE_PART = "the changes in this pull request"
SOME_PART = "one part of the changes in this pull request (the other parts are reviewed apart)"

Progress = Callable[[int, int], None]  # (chunks done, chunks planned)


@dataclass(frozen=True)
class ReviewOptions:
    """How to review. `None` limits fall back to the settings (ARBITER_MAX_*)."""

    model: str | None = None  # None: ARBITER_DEFAULT_MODEL
    path_filters: tuple[str, ...] = ()  # `!glob` excludes; plain globs form an allow-list
    instructions: str = ""
    path_instructions: tuple[PathInstruction, ...] = ()
    min_severity: Severity = "nit"
    min_confidence: float = 0.5
    max_comments: int | None = 30
    max_cost_usd: float | None = None  # 0: no cost cap
    max_tokens: int | None = None
    max_output_tokens: int = 4096
    chunk_tokens: int = 12_000
    concurrency: int = 4
    known_fingerprints: frozenset[str] = frozenset()  # findings already posted on this PR


@dataclass(frozen=True)
class Usage:
    calls: int = 0  # requests billed (a malformed answer counts)
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True


@dataclass(frozen=True)
class ReviewResult:
    model: str
    findings: tuple[Finding, ...]  # kept, in file order
    dropped: tuple[DroppedFinding, ...]
    not_reviewed: tuple[NotReviewed, ...]
    reviewed_paths: tuple[str, ...]
    usage: Usage
    errors: tuple[str, ...]  # model calls that failed; their files are in not_reviewed
    chunks: int  # model-sized parts the reviewable files were cut into
    chunks_reviewed: int
    overview: tuple[str, ...]  # the model's summaries of what changed
    files_changed: int
    additions: int
    deletions: int
    summary_markdown: str
    comments: tuple[InlineComment, ...] = field(repr=False)
    facts: SummaryFacts | None = field(default=None, repr=False)  # what the summary was made of

    @property
    def complete(self) -> bool:
        """Every reviewable file was reviewed: no part was over budget or failed."""
        return self.chunks_reviewed == self.chunks

    def worst_severity(self) -> Severity | None:
        return max(self.findings, key=lambda f: f.rank).severity if self.findings else None

    def at_least(self, severity: Severity) -> list[Finding]:
        floor = SEVERITY_RANK[severity]
        return [f for f in self.findings if f.rank >= floor]

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("comments")
        data.pop("facts")
        data["complete"] = self.complete
        return data


async def review_changes(
    llm: LLM,
    changes: Sequence[FileChange] | str,
    options: ReviewOptions = ReviewOptions(),  # frozen: one shared default is safe
    *,
    title: str = "",
    description: str = "",
    on_progress: Progress | None = None,
) -> ReviewResult:
    """Review `changes` (the platform's files, or a unified diff) and report the outcome.

    Raises ModelPriceUnknown or LLMNotConfigured before anything is reviewed when the model
    cannot be used; DiffError when a diff text cannot be read. Other model failures do not
    raise: the affected files are listed as not reviewed and the error is in `errors`.
    """
    files = parse_diff(changes) if isinstance(changes, str) else from_file_changes(changes)
    # Off the event loop: a repository's globs are linear-time, but can be many and long.
    kept, skipped = await asyncio.to_thread(filter_files, files, options.path_filters)
    info = llm.model_info(options.model)
    cap = (
        llm.settings.max_cost_per_review_usd
        if options.max_cost_usd is None
        else options.max_cost_usd
    )
    llm.require_price(info, cap)
    max_tokens = options.max_tokens or llm.settings.max_tokens_per_review
    run = _Run(
        llm=llm,
        info=info,
        options=options,
        files={f.path: f for f in kept},
        budget=Budget(info, max_tokens=max_tokens, max_cost_usd=cap),
        title=title,
        description=description,
        cap=cap,
    )
    chunks = plan_chunks(kept, max_tokens=run.chunk_room())
    run.total = len(chunks)
    if on_progress is not None:
        on_progress(0, run.total)
    run.on_progress = on_progress
    tasks = [asyncio.create_task(run.review_chunk(chunk)) for chunk in chunks]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return run.result(files, skipped)


@dataclass
class _Run:
    """The state of one review while its chunks are in flight."""

    llm: LLM
    info: ModelInfo
    options: ReviewOptions
    files: dict[str, DiffFile]
    budget: Budget
    title: str
    description: str
    cap: float
    total: int = 0
    done: int = 0
    on_progress: Progress | None = None
    stopped: str | None = None
    found: list[Finding] = field(default_factory=list)
    dropped: list[DroppedFinding] = field(default_factory=list)
    not_reviewed: list[NotReviewed] = field(default_factory=list)
    reviewed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    overview: list[str] = field(default_factory=list)
    calls: int = 0
    cached_calls: int = 0
    chunks_reviewed: int = 0
    _gate: asyncio.Semaphore | None = None

    def chunk_room(self) -> int:
        """Diff tokens per chunk: the option, shrunk to what the context window, the token
        budget and the cost cap leave once the fixed prompt and the answer are paid for."""
        o = self.options
        fixed = self.llm.estimate_input_tokens(
            build_prompt(
                "",
                None,
                title=self.title,
                description=self.description,
                scope=SOME_PART,
                instructions=o.instructions,
                path_instructions=o.path_instructions,
            ),
            ReviewAnswer,
        )
        room = min(
            o.chunk_tokens,
            self.info.context_tokens - o.max_output_tokens - fixed,
            self.budget.max_tokens - OUTPUT_FLOOR - fixed,
        )
        price = self.info.price
        if self.budget.capped and price is not None and price.input_per_mtok > 0:
            affordable_usd = self.cap - self.info.cost(0, OUTPUT_FLOOR)
            room = min(room, math.floor(affordable_usd * 1_000_000 / price.input_per_mtok) - fixed)
        return max(room, MIN_CHUNK_TOKENS)

    def output_limit(self, estimate: int) -> int:
        return max(min(math.ceil(estimate / 3), self.options.max_output_tokens), OUTPUT_FLOOR)

    async def review_chunk(self, chunk: Chunk) -> None:
        if self._gate is None:
            self._gate = asyncio.Semaphore(max(self.options.concurrency, 1))
        async with self._gate:
            try:
                await self._review(chunk)
            finally:
                self.done += 1
                if self.on_progress is not None:
                    self.on_progress(self.done, self.total)

    async def _review(self, chunk: Chunk) -> None:
        if self.stopped is not None:
            self._skip(chunk, f"the review stopped after an error: {self.stopped}")
            return
        o = self.options
        prompt = build_prompt(
            chunk.text,
            chunk.paths,
            title=self.title,
            description=self.description,
            scope=ONE_PART if self.total == 1 else SOME_PART,
            instructions=o.instructions,
            path_instructions=o.path_instructions,
        )
        estimate = self.llm.estimate_input_tokens(prompt, ReviewAnswer)
        out = self.output_limit(estimate)
        for attempt in (1, 2):
            booking = await self.budget.reserve(estimate, out)
            if isinstance(booking, str):
                reason = (
                    booking
                    if attempt == 1
                    else f"its answer was malformed, and a retry is {booking}"
                )
                self._skip(chunk, reason)
                return
            try:
                answer = await self.llm.complete(
                    prompt,
                    ReviewAnswer,
                    model=o.model,
                    max_output_tokens=out,
                    cost_cap_usd=self.cap,
                    max_attempts=1,  # the retry below is booked against the budget first
                )
            except MalformedAnswer as exc:
                self.calls += 1
                await self.budget.settle(booking, _spend(exc))
                if attempt == 1:
                    continue
                self.errors.append(f"{exc} (the first answer was malformed too: retried once)")
                self._skip(chunk, "the model's answer was malformed twice")
                return
            except (LLMNotConfigured, ModelPriceUnknown):
                await self.budget.settle(booking, Spend())
                raise
            except LLMError as exc:
                await self.budget.settle(booking, _spend(exc))
                self.stopped = self.stopped or str(exc)
                self.errors.append(str(exc))
                self._skip(chunk, str(exc))
                return
            await self.budget.settle(
                booking,
                Spend(answer.input_tokens, answer.output_tokens, answer.cost_usd),
                cached=answer.cached,
            )
            if answer.cached:
                self.cached_calls += 1
            else:
                self.calls += answer.attempts
            kept, dropped = anchor(answer.value.findings, self.files)
            self.found += kept
            self.dropped += dropped
            self.overview.append(answer.value.summary)
            self.reviewed += chunk.paths
            self.chunks_reviewed += 1
            return

    def _skip(self, chunk: Chunk, reason: str) -> None:
        for piece in chunk.pieces:
            span = (
                (piece.first_line, piece.last_line)
                if piece.parts > 1 and piece.first_line is not None and piece.last_line is not None
                else None
            )
            self.not_reviewed.append(NotReviewed(piece.path, reason, span))

    def result(self, files: Sequence[DiffFile], skipped: Sequence[NotReviewed]) -> ReviewResult:
        o = self.options
        merged, duplicates = merge_duplicates(self.found)
        fresh, known = drop_known(merged, o.known_fingerprints)
        floored, low = apply_floors(
            fresh, min_severity=o.min_severity, min_confidence=o.min_confidence
        )
        kept, over = limit(floored, o.max_comments)
        findings = in_file_order(kept)
        dropped = [*self.dropped, *duplicates, *known, *low, *over]
        not_reviewed = [*skipped, *self.not_reviewed]
        spent = self.budget.spent
        usage = Usage(
            calls=self.calls,
            cached_calls=self.cached_calls,
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost_usd=spent.cost_usd,
            priced=self.info.price is not None,
        )
        reviewed = tuple(dict.fromkeys(self.reviewed))
        facts = SummaryFacts(
            model=str(self.info.ref.name),
            files_changed=len(files),
            additions=sum(f.additions for f in files),
            deletions=sum(f.deletions for f in files),
            reviewed_files=len(reviewed),
            overview=self.overview,
            findings=findings,
            dropped=dropped,
            not_reviewed=not_reviewed,
            errors=self.errors,
            calls=usage.calls,
            cached_calls=usage.cached_calls,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            priced=usage.priced,
        )
        get_logger(component="reviewer").debug(
            "review done",
            files=len(files),
            reviewed=len(reviewed),
            findings=len(findings),
            dropped=len(dropped),
            cost_usd=round(usage.cost_usd, 6),
        )
        return ReviewResult(
            model=str(self.info.ref),
            findings=tuple(findings),
            dropped=tuple(dropped),
            not_reviewed=tuple(not_reviewed),
            reviewed_paths=reviewed,
            usage=usage,
            errors=tuple(self.errors),
            chunks=self.total,
            chunks_reviewed=self.chunks_reviewed,
            overview=tuple(self.overview),
            files_changed=facts.files_changed,
            additions=facts.additions,
            deletions=facts.deletions,
            summary_markdown=summary_markdown(facts),
            comments=tuple(inline_comments(findings)),
            facts=facts,
        )


def _spend(exc: LLMError) -> Spend:
    return Spend(exc.input_tokens, exc.output_tokens, exc.cost_usd)
