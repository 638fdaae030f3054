"""The review: a diff in, findings, a summary and the bill out.

`review_changes(llm, changes, options)` runs the pure steps in order: parse the diff, drop
what must not be reviewed, order the rest by risk and cut it into units with exact token
counts (bot/core/chunks.py), then pack chunks while the budget lasts: each chunk is filled
from the head of the queue to what the budget leaves once its fixed prompt and its answer are
paid for, counted exactly and booked before it is sent (chunks run side by side; the last one
is planned once the others have settled, so nothing they did not use is left over). Findings
are anchored and checked, and the inline comments and the summary rendered. Whatever the
budget did not reach is listed, file by file, with what it needed. It needs no platform: the
caller posts the result.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from bot.core.budget import Budget, Reservation, Spend
from bot.core.chunks import Chunk, Count, Unit, assemble, queue_units, take, units_of
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
from bot.core.render import FileNote, SummaryFacts, inline_comments, summary_markdown
from bot.core.risk import order_files
from bot.llm import (
    LLM,
    LLMError,
    LLMNotConfigured,
    MalformedAnswer,
    ModelInfo,
    ModelPriceUnknown,
    Prompt,
)
from bot.logs import get_logger
from config.severity import SEVERITY_RANK, Severity
from platforms.base import FileChange, InlineComment

OUTPUT_FLOOR = 640  # output tokens reserved for any answer: a summary and a few findings
OUTPUT_PER_FILE = 24  # and for each file's line of the walkthrough
OUTPUT_MARGIN = 1.25  # over what recorded answers of this model took (p90)
FILE_SHARE = 0.25  # of the review's diff budget, what one file takes before the others
MIN_FILE_CAP = 1500
MIN_CALL_TOKENS = 200  # diff tokens below which a call is not worth its fixed prompt
ONE_PART = "all of it"
SOME_PART = "one part of it (the other parts are reviewed apart)"

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
    # Output tokens per call of recent reviews with this model (from the store): what an
    # answer is reserved is measured on them (their p90, with a margin and a floor).
    recorded_output: tuple[int, ...] = ()


@dataclass(frozen=True)
class Usage:
    calls: int = 0  # requests billed (a malformed answer counts)
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    cache_read_tokens: int = 0  # input billed at the prompt cache's price
    cache_write_tokens: int = 0


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
    prepared = await prepare_changes(llm, changes, options, title=title, description=description)
    return await prepared.execute(on_progress)


@dataclass
class PreparedReview:
    """A review with everything before its first model call done (`prepare_changes`): the
    filters applied and the plan made. `execute` asks the model, once."""

    run: _Run
    files: Sequence[DiffFile]
    queue: list[Unit]
    skipped: list[NotReviewed]

    async def execute(self, on_progress: Progress | None = None) -> ReviewResult:
        self.run.on_progress = on_progress
        await self.run.execute(self.queue)
        return self.run.result(self.files, self.skipped)


async def prepare_changes(
    llm: LLM,
    changes: Sequence[FileChange] | str,
    options: ReviewOptions = ReviewOptions(),
    *,
    title: str = "",
    description: str = "",
) -> PreparedReview:
    """`review_changes` up to its first model call: parse, check the model's price, filter and
    plan (every unit's tokens counted). A caller that must wait before asking the model (a
    review claimed ahead of a worker's free slot) does this first. Raises as `review_changes`
    does before anything is reviewed."""
    files = parse_diff(changes) if isinstance(changes, str) else from_file_changes(changes)
    llm.require_price(llm.model_info(options.model), _cost_cap(llm, options))
    prepare = functools.partial(
        prepare_review, llm, files, options, title=title, description=description
    )
    # Off the event loop, in one hop: a repository's globs (linear-time, but can be many and
    # long) and counting every line's tokens are CPU work. A diff so small that the hop would
    # cost more than the work is prepared where it is (bounded: `prepared_in_place`).
    if prepared_in_place(files, options, title=title, description=description):
        run, queue, skipped = prepare()
    else:
        run, queue, skipped = await asyncio.to_thread(prepare)
    return PreparedReview(run=run, files=files, queue=queue, skipped=skipped)


def _cost_cap(llm: LLM, options: ReviewOptions) -> float:
    """The review's cost cap: the option, else ARBITER_MAX_COST_PER_REVIEW_USD."""
    if options.max_cost_usd is None:
        return llm.settings.max_cost_per_review_usd
    return options.max_cost_usd


def prepare_review(
    llm: LLM,
    files: Sequence[DiffFile],
    options: ReviewOptions,
    *,
    title: str = "",
    description: str = "",
) -> tuple[_Run, list[Unit], list[NotReviewed]]:
    """What a review does before its first model call: the path filters, then the plan (every
    unit's tokens, in risk order). CPU work: see `prepared_in_place` for where it runs."""
    info = llm.model_info(options.model)
    cap = _cost_cap(llm, options)
    max_tokens = options.max_tokens or llm.settings.max_tokens_per_review
    kept, skipped = filter_files(files, options.path_filters)
    run = _Run(
        llm=llm,
        info=info,
        options=options,
        files={f.path: f for f in kept},
        budget=Budget(info, max_tokens=max_tokens, max_cost_usd=cap),
        title=title,
        description=description,
        cap=cap,
        count=llm.counter(options.model).count,
    )
    return run, run.plan(kept), skipped


# A review this small is prepared on the event loop: for a file of two lines the work takes
# ~0.25 ms on this project's 2-core machine (`bench.prepare`), at the bound about 0.3 ms; a
# thread hop costs ~0.1 ms of CPU and, while the loop is busy, milliseconds of waiting for the
# GIL. The bounds keep the work small whatever the pull request and the configuration
# hold: the text whose tokens are counted, in characters, and the glob matches (files × globs).
IN_PLACE_CHARS = 400
IN_PLACE_MATCHES = 64


def prepared_in_place(
    files: Sequence[DiffFile], options: ReviewOptions, *, title: str = "", description: str = ""
) -> bool:
    """Is the review small enough to prepare on the event loop? Its text counted in tokens
    (the diff, the title and description, the repository's instructions) within
    `IN_PLACE_CHARS`, and its paths matched against globs within `IN_PLACE_MATCHES`."""
    patterns = len(options.path_filters) + len(options.path_instructions) + 1
    if len(files) * patterns > IN_PLACE_MATCHES:
        return False
    chars = len(title) + len(description) + len(options.instructions)
    chars += sum(len(p.instructions) for p in options.path_instructions)
    if chars > IN_PLACE_CHARS:
        return False
    for file in files:
        for hunk in file.hunks:
            for line in hunk.lines:
                chars += len(line.text) + 1
                if chars > IN_PLACE_CHARS:
                    return False
    return True


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
    count: Count
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
    notes: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    cached_calls: int = 0
    chunks_reviewed: int = 0
    cache_read: int = 0
    cache_write: int = 0
    whole: dict[str, int] = field(default_factory=dict)
    unit_room: int = 0
    many_calls: bool = False
    unplanned: int = 0  # chunks the budget did not reach
    fixed: int | None = None  # a call's input tokens besides its diff, once planned
    expected: int = 0  # chunks the whole queue would take
    queued: bool = True  # units are still waiting for a chunk

    # --- Planning ---------------------------------------------------------------------------

    def fixed_tokens(self, *, paths: Sequence[str] | None = None) -> int:
        """Input tokens of a call besides its diff (all the instructions when `paths` is None)."""
        o = self.options
        prompt = build_prompt(
            "",
            paths,
            title=self.title,
            description=self.description,
            scope=SOME_PART,
            instructions=o.instructions,
            path_instructions=o.path_instructions,
        )
        return self.llm.estimate_input_tokens(prompt, ReviewAnswer, model=o.model)

    def chunk_room(self, fixed: int) -> int:
        """Diff tokens one chunk may hold besides `fixed` (`fixed_tokens()`): the option,
        within the context window."""
        o = self.options
        window = self.info.context_tokens - o.max_output_tokens - fixed
        return max(min(o.chunk_tokens, window), MIN_CALL_TOKENS)

    def plan(self, files: Sequence[DiffFile]) -> list[Unit]:
        """Every unit of the reviewable files, in the order to review them."""
        self.fixed = fixed = self.fixed_tokens()  # counted once: the whole instructions' text
        room = self.chunk_room(fixed)
        units = {f.path: units_of(f, self.count, room) for f in files}
        sizes = {path: sum(u.tokens for u in mine) for path, mine in units.items()}
        ordered = order_files(files, sizes, self.options.path_instructions)
        diff_budget = self.budget.max_tokens - fixed - self.output_limit(1)
        file_cap = max(int(diff_budget * FILE_SHARE), MIN_FILE_CAP)
        queue = queue_units(ordered, units, self.count, file_cap=file_cap)
        self.whole = {path: len(mine) for path, mine in units.items()}
        self.unit_room = room
        self.many_calls = sum(sizes.values()) > room
        return queue

    def output_limit(self, files: int) -> int:
        """Output tokens to reserve for an answer on `files` files: what recorded answers of
        this model took (p90, with a margin), at least the floor, within the option."""
        recorded = sorted(self.options.recorded_output)
        measured = 0
        if recorded:
            measured = math.ceil(
                recorded[min(len(recorded) - 1, len(recorded) * 9 // 10)] * OUTPUT_MARGIN
            )
        floor = OUTPUT_FLOOR + OUTPUT_PER_FILE * files
        return max(min(max(measured, floor), self.options.max_output_tokens), 1)

    # --- Packing and calling ----------------------------------------------------------------

    async def execute(self, queue_list: list[Unit]) -> None:
        queue = deque(queue_list)
        running: set[asyncio.Task[None]] = set()
        fixed = self.fixed if self.fixed is not None else self.fixed_tokens()
        self.expected = max(math.ceil(sum(u.tokens for u in queue) / max(self.unit_room, 1)), 1)
        if queue:
            self.progress()
        shrink = 0  # tokens a chunk came out over its room by, on the last try
        try:
            while queue and self.stopped is None:
                if len(running) >= max(self.options.concurrency, 1):
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                out_guess = self.output_limit(4)
                room = self.budget.input_room(out_guess) - fixed - shrink
                last = room < self.unit_room
                if (last or room < MIN_CALL_TOKENS) and self.budget.in_flight:
                    # Plan the last chunk with what the others leave unused, once they settle.
                    await self.budget.changed()
                    continue
                if room < MIN_CALL_TOKENS:
                    break
                units = take(queue, min(room, self.unit_room), self.count, fill=last)
                if not units:
                    break
                chunk = assemble(self.total, units, self.whole)
                prompt = self.prompt_for(chunk)
                exact = self.llm.estimate_input_tokens(
                    prompt, ReviewAnswer, model=self.options.model
                )
                out = self.output_limit(len(chunk.paths))
                booking = self.budget.book(exact, out, cache_write=self.cache_write_for(prompt))
                if isinstance(booking, str):
                    queue.extendleft(reversed(units))
                    over = exact + out - self.budget.input_room(0)
                    shrink += max(over, 0) + 50
                    if shrink > self.unit_room:  # cannot fit even a small chunk any more
                        break
                    continue
                shrink = 0
                self.total += 1
                self.progress()
                task = asyncio.create_task(self.review_chunk(chunk, prompt, booking))
                running.add(task)
                task.add_done_callback(running.discard)
            self.queued = False
            self.progress()
            if running:
                await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        if queue:
            self.unplanned = math.ceil(sum(u.tokens for u in queue) / max(self.unit_room, 1))
            self._skip_units(queue, self.left_reason)

    def prompt_for(self, chunk: Chunk) -> Prompt:
        o = self.options
        return build_prompt(
            chunk.text,
            chunk.paths,
            title=self.title,
            description=self.description,
            scope=SOME_PART if self.many_calls else ONE_PART,
            instructions=o.instructions,
            path_instructions=o.path_instructions,
            cache_prefix=self.many_calls,
        )

    def cache_write_for(self, prompt: Prompt) -> int:
        """Input that may be billed as a prompt-cache write (Anthropic, when asked)."""
        if not prompt.cache_prefix or self.info.ref.provider != "anthropic":
            return 0
        return self.llm.estimate_input_tokens(
            Prompt(prompt.system, ""), ReviewAnswer, model=self.options.model
        )

    def left_reason(self, need: int) -> str:
        """Why units needing `need` tokens were not reviewed."""
        b = self.budget
        if self.stopped is not None:
            return f"the review stopped after an error: {self.stopped}"
        if b.cost_binds(self.output_limit(1)):
            usd_left = max(b.max_cost_usd - b.spent.cost_usd, 0)
            return (
                f"over the cost cap of ${b.max_cost_usd:.2f} (ARBITER_MAX_COST_PER_REVIEW_USD): "
                f"its diff needs {need:,} more tokens, ${usd_left:.4f} were left"
            )
        left = max(b.max_tokens - b.spent.tokens, 0)
        return (
            f"over the token budget of {b.max_tokens:,} (ARBITER_MAX_TOKENS_PER_REVIEW): "
            f"its diff needs {need:,} more tokens, {left:,} were left"
        )

    def progress(self) -> None:
        """Report (chunks done, chunks planned so far or expected, whichever is more)."""
        if self.on_progress is not None:
            self.on_progress(self.done, max(self.total, self.expected if self.queued else 0))

    async def review_chunk(self, chunk: Chunk, prompt: Prompt, booking: Reservation) -> None:
        try:
            await self._review(chunk, prompt, booking)
        finally:
            self.done += 1
            self.progress()

    async def _review(self, chunk: Chunk, prompt: Prompt, booking: Reservation) -> None:
        o = self.options
        out = booking.output_tokens
        for attempt in (1, 2):
            if attempt == 2:
                rebooked = self.budget.book(booking.estimate, out)
                if isinstance(rebooked, str):
                    self._skip(chunk, f"its answer was malformed, and a retry is {rebooked}")
                    return
                booking = rebooked
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
                    if "cut off" in str(exc):  # the answer needed more room than reserved
                        out = min(out * 2, max(o.max_output_tokens, out))
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
            self.cache_read += answer.cache_read_tokens
            self.cache_write += answer.cache_write_tokens
            kept, dropped = anchor(answer.value.findings, self.files)
            self.found += kept
            self.dropped += dropped
            self.overview.append(answer.value.summary)
            shown = set(chunk.paths)
            for note in answer.value.files:
                path = note.path.strip().strip("`")
                if path in shown and path not in self.notes and note.summary.strip():
                    self.notes[path] = " ".join(note.summary.split())
            self.reviewed += chunk.paths
            self.chunks_reviewed += 1
            return

    def _skip(self, chunk: Chunk, reason: str) -> None:
        self._skip_units(chunk.units, lambda _need: reason)

    def _skip_units(self, units: Sequence[Unit], reason: Callable[[int], str]) -> None:
        """List units not reviewed, one entry per file with its own need (and, for part of a
        file, the lines left out)."""
        by_file: dict[str, list[Unit]] = {}
        for unit in units:
            by_file.setdefault(unit.path, []).append(unit)
        for path, mine in by_file.items():
            whole = len(mine) == self.whole.get(path, -1) and not any(u.cut for u in mine)
            spans = [u.span for u in mine if u.span is not None]
            lines = (
                None if whole or not spans else (min(s[0] for s in spans), max(s[1] for s in spans))
            )
            self.not_reviewed.append(NotReviewed(path, reason(sum(u.tokens for u in mine)), lines))

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
            cache_read_tokens=self.cache_read,
            cache_write_tokens=self.cache_write,
        )
        reviewed = tuple(p for p in self.files if p in set(self.reviewed))
        partly = {n.path for n in self.not_reviewed}
        walkthrough = tuple(
            FileNote(
                path=p,
                note=self.notes.get(p, ""),
                additions=self.files[p].additions,
                deletions=self.files[p].deletions,
                partial=p in partly,
            )
            for p in reviewed
        )
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
            walkthrough=walkthrough,
            cache_read_tokens=usage.cache_read_tokens,
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
            chunks=self.total + self.unplanned,
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
