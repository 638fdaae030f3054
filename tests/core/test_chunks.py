from __future__ import annotations

import re

from bot.core.chunks import MIN_CHUNK_TOKENS, plan_chunks
from bot.core.diff import parse_diff
from bot.llm import estimate_tokens
from tests.core.conftest import numbered, patch_of

_NUMBERED = re.compile(r"^ *(\d+) [+ ]", re.MULTILINE)


def _cited(text: str) -> list[int]:
    return [int(n) for n in _NUMBERED.findall(text)]


def test_small_files_share_one_chunk_in_order() -> None:
    files = parse_diff(patch_of({f"f{i}.py": (None, numbered(5)) for i in range(4)}))
    chunks = plan_chunks(files, max_tokens=5000)
    assert len(chunks) == 1
    assert chunks[0].paths == ["f0.py", "f1.py", "f2.py", "f3.py"]
    assert chunks[0].tokens <= 5000


def test_chunks_respect_the_limit_and_show_every_line_once() -> None:
    files = parse_diff(
        patch_of({f"dir/file{i}.py": (None, numbered(40 + i * 7)) for i in range(30)})
    )
    chunks = plan_chunks(files, max_tokens=MIN_CHUNK_TOKENS)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.tokens <= MIN_CHUNK_TOKENS
        assert estimate_tokens(chunk.text) <= chunk.tokens + len(chunk.pieces)
    shown: dict[str, list[int]] = {}
    for chunk in chunks:
        for piece in chunk.pieces:
            shown.setdefault(piece.path, []).extend(_cited(piece.text))
    for file in files:
        assert shown[file.path] == sorted(file.new_lines)  # each line exactly once, in order


def test_a_big_file_is_cut_at_hunks_into_numbered_parts() -> None:
    prefix = "a reasonably long line of source code, number"
    before = numbered(600, prefix)
    after = "".join(
        f"changed {i}\n" if i % 50 == 0 else f"{prefix} {i}\n" for i in range(1, 601)
    )  # 12 hunks far apart
    (file,) = parse_diff(patch_of({"big.py": (before, after)}))
    assert len(file.hunks) == 12
    chunks = plan_chunks([file], max_tokens=MIN_CHUNK_TOKENS)
    pieces = [p for c in chunks for p in c.pieces]
    assert len(pieces) > 1
    assert [p.part for p in pieces] == list(range(1, len(pieces) + 1))
    assert all(p.parts == len(pieces) for p in pieces)
    assert f"=== FILE big.py (modified; part 2 of {len(pieces)}) ===" in pieces[1].text
    # Parts cut between hunks: each hunk heading appears in exactly one part.
    headings = [ln for p in pieces for ln in p.text.splitlines() if ln.startswith("@@")]
    assert len(headings) == 12
    assert pieces[0].first_line == 47 and pieces[-1].last_line == 600


def test_a_hunk_bigger_than_a_chunk_is_cut_between_lines_keeping_numbers() -> None:
    (file,) = parse_diff(patch_of({"huge.py": (None, numbered(900, "x = compute_something"))}))
    assert len(file.hunks) == 1
    chunks = plan_chunks([file], max_tokens=MIN_CHUNK_TOKENS)
    assert len(chunks) > 5
    cited = [n for c in chunks for n in _cited(c.text)]
    assert cited == list(range(1, 901))
    second = chunks[1].pieces[0]
    first_new = second.first_line
    assert f"+{first_new}," in second.text  # the cut hunk's heading starts at its first line
    assert "(continued)" not in chunks[0].text and "(continued)" in second.text
