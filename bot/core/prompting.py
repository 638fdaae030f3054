"""Prompt rendering: the diff with citable line numbers, and the PR's text as delimited data.

The templates live in `prompts/` (review_system, review_user, review_instructions). Author-
written text (title, description, diff) goes in between `<<<NAME b>>>` / `<<<END NAME b>>>`
lines whose boundary `b` is a hash of that very text, so the text cannot forge its own end
marker, and the same chunk renders the same prompt (and hits the cache) on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import prompts
from bot.core.diff import ADDED, REMOVED, DiffFile, Hunk
from bot.llm import Prompt
from config.globs import matches

BOUNDARY_CHARS = 16
NO_DESCRIPTION = "(no description)"
DESCRIPTION_CHARS = 4000  # a PR description is context, not the subject: keep it bounded
LINE_CHARS = 1000  # longer lines (removed or context; added ones are filtered) are cut


@dataclass(frozen=True)
class PathInstruction:
    """Extra review instructions for the files matching a glob (`src/api/**`)."""

    path: str
    instructions: str


def render_hunk(hunk: Hunk) -> str:
    """A hunk as the model sees it: new-side line numbers, then the marker and the text."""
    out = [hunk.heading]
    for line in hunk.lines:
        text = line.text if len(line.text) <= LINE_CHARS else line.text[:LINE_CHARS] + " …"
        if line.kind == REMOVED:
            out.append(f"      -{text}")
        else:
            marker = "+" if line.kind == ADDED else " "
            out.append(f"{line.new:>5} {marker}{text}")
    return "\n".join(out) + "\n"


def file_heading(file: DiffFile, part: int = 1, parts: int = 1) -> str:
    status: str = file.status
    if file.previous_path and file.previous_path != file.path:
        status = f"{status} from {file.previous_path}"
    if parts > 1:
        status = f"{status}; part {part} of {parts}"
    return f"=== FILE {file.path} ({status}) ===\n"


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
    return prompts.render("review_instructions", items="\n".join(items))


def build_prompt(
    diff_text: str,
    paths: Sequence[str] | None,
    *,
    title: str = "",
    description: str = "",
    scope: str = "all of the changes",
    instructions: str = "",
    path_instructions: Sequence[PathInstruction] = (),
) -> Prompt:
    """The system and user messages reviewing `diff_text`, the rendered pieces of `paths`
    (None: any path, as when measuring the largest fixed part of a prompt)."""
    if len(description) > DESCRIPTION_CHARS:
        description = description[:DESCRIPTION_CHARS] + "\n…(description truncated)"
    boundary = boundary_for(title, description, diff_text)
    system = prompts.render(
        "review_system",
        boundary=boundary,
        instructions=instructions_block(paths, instructions, path_instructions),
    )
    user = prompts.render(
        "review_user",
        boundary=boundary,
        scope=scope,
        title=title.strip() or "(no title)",
        description=description.strip() or NO_DESCRIPTION,
        diff=diff_text.rstrip("\n"),
    )
    return Prompt(system=system, user=user)
