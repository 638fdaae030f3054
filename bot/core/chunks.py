"""Chunk planning: the reviewed files cut into model-sized pieces, packed into chunks.

A file goes whole into a chunk when it fits; a larger one is cut at hunk boundaries into
parts, and a hunk larger than a chunk is cut between lines (line numbers stay exact, so the
model can still cite them). Pieces are then packed in order, so neighbouring files share a
chunk. Sizes are the conservative token estimates of bot.llm.tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.diff import ADDED, REMOVED, DiffFile, DiffLine, Hunk
from bot.core.prompting import LINE_CHARS, file_heading, render_hunk
from bot.llm import estimate_tokens

MIN_CHUNK_TOKENS = 1000  # a rendered line is at most ~350 estimated tokens


@dataclass(frozen=True)
class Piece:
    """A file, or part of one, as rendered into a prompt."""

    file: DiffFile
    text: str
    tokens: int
    first_line: int | None  # new-side span this piece shows
    last_line: int | None
    part: int = 1
    parts: int = 1

    @property
    def path(self) -> str:
        return self.file.path


@dataclass(frozen=True)
class Chunk:
    """What one model call reviews."""

    index: int
    pieces: tuple[Piece, ...]

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.pieces)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.pieces))


def plan_chunks(files: Sequence[DiffFile], *, max_tokens: int) -> list[Chunk]:
    """Chunks of at most `max_tokens` estimated diff tokens each, files in their order."""
    limit = max(max_tokens, MIN_CHUNK_TOKENS)
    chunks: list[Chunk] = []
    current: list[Piece] = []
    size = 0
    for file in files:
        for piece in _pieces(file, limit):
            if current and size + piece.tokens > limit:
                chunks.append(Chunk(len(chunks), tuple(current)))
                current, size = [], 0
            current.append(piece)
            size += piece.tokens
    if current:
        chunks.append(Chunk(len(chunks), tuple(current)))
    return chunks


def _pieces(file: DiffFile, limit: int) -> list[Piece]:
    heading_tokens = estimate_tokens(file_heading(file, 99, 99))
    room = limit - heading_tokens
    rendered: list[tuple[Hunk, str, int]] = []
    for hunk in file.hunks:
        text = render_hunk(hunk)
        tokens = estimate_tokens(text)
        if tokens <= room:
            rendered.append((hunk, text, tokens))
        else:
            for part in _split_hunk(hunk, room):
                part_text = render_hunk(part)
                rendered.append((part, part_text, estimate_tokens(part_text)))
    groups: list[list[tuple[Hunk, str, int]]] = []
    size = 0
    for item in rendered:
        if groups and size + item[2] <= room:
            groups[-1].append(item)
            size += item[2]
        else:
            groups.append([item])
            size = item[2]
    pieces: list[Piece] = []
    for number, group in enumerate(groups, start=1):
        heading = file_heading(file, number, len(groups))
        text = heading + "".join(t for _, t, _ in group)
        numbers = [ln.new for h, _, _ in group for ln in h.lines if ln.new is not None]
        pieces.append(
            Piece(
                file=file,
                text=text,
                tokens=estimate_tokens(heading) + sum(t for _, _, t in group),
                first_line=min(numbers) if numbers else None,
                last_line=max(numbers) if numbers else None,
                part=number,
                parts=len(groups),
            )
        )
    return pieces


def _split_hunk(hunk: Hunk, room: int) -> list[Hunk]:
    """Consecutive slices of a hunk's lines, each rendering within `room` tokens."""
    budget_bytes = max(room - 40, 100) * 3  # 3 bytes per token, as estimate_tokens counts
    slices: list[list[DiffLine]] = [[]]
    used = 0
    for line in hunk.lines:
        cost = min(len(line.text.encode("utf-8", "surrogatepass")), LINE_CHARS * 4) + 8
        if slices[-1] and used + cost > budget_bytes:
            slices.append([])
            used = 0
        slices[-1].append(line)
        used += cost
    parts: list[Hunk] = []
    old_next, new_next = hunk.old_start, hunk.new_start
    for lines in slices:
        old_len = sum(1 for ln in lines if ln.kind != ADDED)
        new_len = sum(1 for ln in lines if ln.kind != REMOVED)
        header = f"{hunk.header} (continued)" if parts else hunk.header
        parts.append(Hunk(old_next, old_len, new_next, new_len, header.strip(), tuple(lines)))
        old_next += old_len
        new_next += new_len
    return parts
