"""Prompt rendering: the diff in a compact, citable form, and the PR's text as delimited data.

The diff format spends tokens only on what the model reads: a new-side line is its number and
a marker (`12+added`, `13 unchanged`), a removed line is `-text` without a number, and a hunk
starts with `@@` and the enclosing function git names. Context that carries no meaning is
trimmed (at most `CONTEXT_KEPT` lines at a hunk's edges, blank or bracket-only lines at its
outer edge dropped), and a long run of removed lines shows its first lines and a count. Every
numbered line is a line of the new file, so a finding the model cites lands exactly.

The templates live in `prompts/` (review_system, review_user, review_instructions). The
system prompt is the same text on every call, so the providers' prompt caching applies to it;
the repository's instructions follow it as `Prompt.instructions`. Author-written text (title,
description, diff) goes between `<<<NAME b>>>` / `<<<END NAME b>>>` lines whose boundary `b` is
a hash of that very text, so the text cannot forge its own end marker, and the same chunk
renders the same prompt (and hits the cache) on every run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import prompts
from bot.core.diff import ADDED, CONTEXT, REMOVED, DiffFile, DiffLine, Hunk
from bot.llm import Prompt
from config.globs import matches

BOUNDARY_CHARS = 16
NO_DESCRIPTION = "(none)"
DESCRIPTION_CHARS = 4000  # a PR description is context, not the subject: keep it bounded
LINE_CHARS = 1000  # longer lines (removed or context; added ones are filtered) are cut
CONTEXT_KEPT = 1  # unchanged lines kept before a hunk's first change and after its last
REMOVED_RUN_MAX = 8  # a longer run of removed lines is shown as its first lines and a count
REMOVED_RUN_SHOWN = 3
_NO_MEANING = re.compile(r"^[\s{}()\[\];,.:]*$")  # blank, or brackets and separators only


@dataclass(frozen=True)
class PathInstruction:
    """Extra review instructions for the files matching a glob (`src/api/**`)."""

    path: str
    instructions: str


def shown_lines(hunk: Hunk) -> Iterator[DiffLine | int]:
    """The lines of a hunk the model is shown; an int stands for that many removed lines
    left out after the ones before it."""
    lines = hunk.lines
    changed = [i for i, ln in enumerate(lines) if ln.kind != CONTEXT]
    if not changed:
        yield from lines
        return
    first, last = changed[0], changed[-1]
    start = max(0, first - CONTEXT_KEPT)
    while start < first and _NO_MEANING.match(lines[start].text):
        start += 1
    end = min(len(lines), last + 1 + CONTEXT_KEPT)
    while end > last + 1 and _NO_MEANING.match(lines[end - 1].text):
        end -= 1
    index = start
    while index < end:
        line = lines[index]
        if line.kind != REMOVED:
            yield line
            index += 1
            continue
        run_end = index
        while run_end < end and lines[run_end].kind == REMOVED:
            run_end += 1
        run = run_end - index
        shown = run if run <= REMOVED_RUN_MAX else REMOVED_RUN_SHOWN
        yield from lines[index : index + shown]
        if shown < run:
            yield run - shown
        index = run_end


def render_hunk(hunk: Hunk) -> str:
    """A hunk as the model sees it: `@@`, then new-side lines as number + marker + text and
    removed lines as `-text`."""
    out = [f"@@ {hunk.header}" if hunk.header else "@@"]
    for line in shown_lines(hunk):
        if isinstance(line, int):
            out.append(f"-… {line} more removed line{'s' if line != 1 else ''}")
            continue
        text = line.text if len(line.text) <= LINE_CHARS else line.text[:LINE_CHARS] + " …"
        if line.kind == REMOVED:
            out.append(f"-{text}")
        else:
            out.append(f"{line.new}{'+' if line.kind == ADDED else ' '}{text}")
    return "\n".join(out) + "\n"


def file_heading(file: DiffFile, part: int = 1, parts: int = 1) -> str:
    """`=== FILE path ===`, with the status unless the file was only modified."""
    status: str = "" if file.status == "modified" else file.status
    if file.previous_path and file.previous_path != file.path:
        status = f"{file.status} from {file.previous_path}"
    if parts > 1:
        status = f"{status}; part {part} of {parts}" if status else f"part {part} of {parts}"
    return f"=== FILE {file.path} ({status}) ===\n" if status else f"=== FILE {file.path} ===\n"


def boundary_for(*texts: str) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:BOUNDARY_CHARS]


def instructions_block(
    paths: Sequence[str] | None, instructions: str, path_instructions: Sequence[PathInstruction]
) -> str:
    """The configured instructions that apply to these files (None: to any file), rendered;
    "" when none do."""
    items: list[str] = []
    if instructions.strip():
        items.append(f"- For the whole pull request: {instructions.strip()}")
    for entry in path_instructions:
        hit = paths is None or any(matches(entry.path, p) for p in paths)
        if hit and entry.instructions.strip():
            items.append(f"- For files matching {entry.path}: {entry.instructions.strip()}")
    if not items:
        return ""
    return prompts.render("review_instructions", items="\n".join(items)).rstrip("\n")


def build_prompt(
    diff_text: str,
    paths: Sequence[str] | None,
    *,
    title: str = "",
    description: str = "",
    scope: str = "all of the changes",
    instructions: str = "",
    path_instructions: Sequence[PathInstruction] = (),
    cache_prefix: bool = False,
) -> Prompt:
    """The system and user messages reviewing `diff_text`, the rendered pieces of `paths`
    (None: any path, as when measuring the largest fixed part of a prompt)."""
    if len(description) > DESCRIPTION_CHARS:
        description = description[:DESCRIPTION_CHARS] + "\n…(description truncated)"
    boundary = boundary_for(title, description, diff_text)
    user = prompts.render(
        "review_user",
        boundary=boundary,
        scope=scope,
        title=title.strip() or "(no title)",
        description=description.strip() or NO_DESCRIPTION,
        diff=diff_text.rstrip("\n"),
    )
    return Prompt(
        system=prompts.render("review_system").rstrip("\n"),
        user=user,
        instructions=instructions_block(paths, instructions, path_instructions),
        cache_prefix=cache_prefix,
    )
