"""Chunks: the reviewed files cut into units with exact token counts, queued in risk order
with a cap per file, then packed into the chunks the model reviews.

A unit is one hunk as the model sees it, or a slice of a hunk too large for one (cut between
lines: line numbers stay exact, so the model can still cite them). `queue_units` lays the
units out in the order they are worth reviewing: each file in risk order (bot/core/risk.py)
up to its cap, its riskiest hunks first; then what the cap held back, in the same order.
`take` fills a chunk from the head of the queue, cutting the head unit between lines to fill
the room left rather than leaving it empty. Counts come from the model's own tokenizer
(`Count`, see bot.llm.tokens), so what is planned is what is billed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bot.core.diff import ADDED, REMOVED, DiffFile, DiffLine, Hunk
from bot.core.prompting import file_heading, render_hunk
from bot.core.risk import hunk_order

Count = Callable[[str], int]
MIN_SLICE_TOKENS = 120  # a cut leaves at least this much on either side, or is not made
MAX_FILES = 40  # files per chunk: the answer gives each a line of the walkthrough


@dataclass(frozen=True)
class Unit:
    """A hunk (or a slice of one) of a file, rendered, with its exact token count."""

    file: DiffFile
    hunk: Hunk
    order: tuple[int, int]  # (hunk index in the file, first line's index in the hunk)
    text: str
    tokens: int
    held_back: bool = False  # over the file's cap on the first pass
    cut: bool = False  # a piece of a unit cut to fill a chunk

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def span(self) -> tuple[int, int] | None:
        numbers = [ln.new for ln in self.hunk.lines if ln.new is not None]
        return (min(numbers), max(numbers)) if numbers else None

    @property
    def added(self) -> int:
        return sum(1 for ln in self.hunk.lines if ln.kind == ADDED)


@dataclass(frozen=True)
class Chunk:
    """What one model call reviews."""

    index: int
    units: tuple[Unit, ...]
    text: str

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(u.path for u in self.units))

    @property
    def tokens(self) -> int:
        return sum(u.tokens for u in self.units)


def units_of(file: DiffFile, count: Count, max_tokens: int) -> list[Unit]:
    """The file's hunks as units of at most `max_tokens` each, in file order."""
    units: list[Unit] = []
    for index, hunk in enumerate(file.hunks):
        text = render_hunk(hunk)
        tokens = count(text)
        if tokens <= max_tokens:
            units.append(Unit(file, hunk, (index, 0), text, tokens))
            continue
        offset = 0
        for part in _slices(hunk, count, max_tokens):
            part_text = render_hunk(part)
            units.append(Unit(file, part, (index, offset), part_text, count(part_text)))
            offset += len(part.lines)
    return units


def heading_tokens(file: DiffFile, count: Count) -> int:
    return count(file_heading(file, 2, 2))  # the longest form of the heading


def queue_units(
    ordered: Sequence[DiffFile],
    units: dict[str, list[Unit]],
    count: Count,
    *,
    file_cap: int,
) -> list[Unit]:
    """All units, in the order to review them: each file's riskiest hunks up to `file_cap`
    tokens, file by file; then what the caps held back, file by file."""
    first: list[Unit] = []
    later: list[Unit] = []
    for file in ordered:
        mine = units[file.path]
        room = file_cap - heading_tokens(file, count)
        picked: set[int] = set()
        used = 0
        for index in _unit_order(mine):
            if not picked or used + mine[index].tokens <= room:
                picked.add(index)
                used += mine[index].tokens
        first += [u for i, u in enumerate(mine) if i in picked]
        later += [_held(u) for i, u in enumerate(mine) if i not in picked]
    return first + later


def take(
    queue: deque[Unit],
    room: int,
    count: Count,
    *,
    max_files: int = MAX_FILES,
    fill: bool = True,
) -> list[Unit]:
    """Units from the head of `queue` filling at most `room` tokens (a file's heading counted
    once) of at most `max_files` files. A head unit that does not fit is cut between lines to
    fill what is left when `fill` is set (the last chunk the budget allows) or nothing was
    taken yet; otherwise it waits whole for the next chunk. [] when nothing fits."""
    taken: list[Unit] = []
    paths: set[str] = set()
    used = 0
    while queue:
        unit = queue[0]
        if unit.path not in paths and len(paths) >= max_files:
            break
        heading = 0 if unit.path in paths else heading_tokens(unit.file, count)
        if used + heading + unit.tokens <= room:
            taken.append(queue.popleft())
            paths.add(unit.path)
            used += heading + unit.tokens
            continue
        left = room - used - heading
        if (fill or not taken) and left >= MIN_SLICE_TOKENS:
            cut = split(unit, left, count)
            if cut is not None:
                queue.popleft()
                queue.appendleft(cut[1])
                taken.append(cut[0])
        break
    return taken


def split(unit: Unit, room: int, count: Count) -> tuple[Unit, Unit] | None:
    """The unit cut between lines into a head of at most `room` tokens and the rest."""
    lines = unit.hunk.lines
    if len(lines) < 2:
        return None
    sizes = [count(line.text) + 2 for line in lines]  # the text, its number or marker, newline
    head_size = count(render_hunk(_part(unit.hunk, (), continued=False))) + 2
    at = 0
    while at < len(lines) - 1 and head_size + sizes[at] <= room:
        head_size += sizes[at]
        at += 1
    while at > 0:
        head, rest = _cut(unit.hunk, at)
        head_text = render_hunk(head)
        head_tokens = count(head_text)
        if head_tokens <= room:
            rest_text = render_hunk(rest)
            if count(rest_text) < MIN_SLICE_TOKENS // 2 and head_tokens < MIN_SLICE_TOKENS:
                return None
            index, offset = unit.order
            return (
                Unit(unit.file, head, unit.order, head_text, head_tokens, unit.held_back, True),
                Unit(
                    unit.file, rest, (index, offset + at), rest_text, count(rest_text), True, True
                ),
            )
        at -= 1
    return None


def assemble(index: int, units: Iterable[Unit], whole: dict[str, int]) -> Chunk:
    """A chunk of these units: files in the order they came, each file's units in its own
    order under one heading; `whole` is each file's count of units, to mark partial ones."""
    by_file: dict[str, list[Unit]] = {}
    for unit in units:
        by_file.setdefault(unit.path, []).append(unit)
    parts: list[str] = []
    ordered: list[Unit] = []
    for mine in by_file.values():
        mine.sort(key=lambda u: u.order)
        file = mine[0].file
        complete = len(mine) == whole.get(file.path, len(mine)) and not any(u.cut for u in mine)
        heading = file_heading(file, 1, 1 if complete else 2)
        parts.append(heading.replace("part 1 of 2", "part"))
        parts += [u.text for u in mine]
        ordered += mine
    return Chunk(index, tuple(ordered), "".join(parts))


def _unit_order(units: Sequence[Unit]) -> list[int]:
    """Units of one file, those of its riskiest hunks first (a hunk's slices stay together)."""
    hunks: list[Hunk] = []
    first_unit: dict[int, list[int]] = {}
    for i, unit in enumerate(units):
        if unit.order[0] not in first_unit:
            first_unit[unit.order[0]] = []
            hunks.append(unit.hunk)
        first_unit[unit.order[0]].append(i)
    keys = list(first_unit)
    return [i for h in hunk_order(hunks) for i in first_unit[keys[h]]]


def _held(unit: Unit) -> Unit:
    return Unit(unit.file, unit.hunk, unit.order, unit.text, unit.tokens, True, unit.cut)


def _slices(hunk: Hunk, count: Count, max_tokens: int) -> list[Hunk]:
    """Consecutive slices of a hunk's lines, each rendering within `max_tokens` tokens."""
    room = max(max_tokens - 20, MIN_SLICE_TOKENS)
    groups: list[list[DiffLine]] = [[]]
    used = 0
    for line in hunk.lines:
        cost = count(line.text) + 2
        if groups[-1] and used + cost > room:
            groups.append([])
            used = 0
        groups[-1].append(line)
        used += cost
    parts: list[Hunk] = []
    old_next, new_next = hunk.old_start, hunk.new_start
    for lines in groups:
        part = _part(
            hunk, tuple(lines), continued=bool(parts), old_start=old_next, new_start=new_next
        )
        parts.append(part)
        old_next += part.old_length
        new_next += part.new_length
    return parts


def _cut(hunk: Hunk, at: int) -> tuple[Hunk, Hunk]:
    head = _part(hunk, hunk.lines[:at], continued=False)
    rest = _part(
        hunk,
        hunk.lines[at:],
        continued=True,
        old_start=hunk.old_start + head.old_length,
        new_start=hunk.new_start + head.new_length,
    )
    return head, rest


def _part(
    hunk: Hunk,
    lines: Sequence[DiffLine],
    *,
    continued: bool,
    old_start: int | None = None,
    new_start: int | None = None,
) -> Hunk:
    old_len = sum(1 for ln in lines if ln.kind != ADDED)
    new_len = sum(1 for ln in lines if ln.kind != REMOVED)
    header = f"{hunk.header} (continued)".strip() if continued else hunk.header
    return Hunk(
        hunk.old_start if old_start is None else old_start,
        old_len,
        hunk.new_start if new_start is None else new_start,
        new_len,
        header,
        tuple(lines),
    )
