"""Units with exact token counts, the queue in risk order with a cap per file, and chunks
filled from its head."""

from __future__ import annotations

import re
from collections import deque

from bot.core.chunks import MIN_SLICE_TOKENS, Chunk, assemble, queue_units, take, units_of
from bot.core.diff import parse_diff
from bot.llm import ModelRef
from bot.llm.tokens import counter_for
from tests.core.conftest import numbered, patch_of

COUNT = counter_for(ModelRef("openai", "gpt-4o")).count
_NUMBERED = re.compile(r"^(\d+)[+ ]", re.MULTILINE)


def _cited(text: str) -> list[int]:
    return [int(n) for n in _NUMBERED.findall(text)]


def test_units_are_hunks_counted_exactly_and_huge_hunks_are_cut_between_lines() -> None:
    (file,) = parse_diff(patch_of({"huge.py": (None, numbered(900, "x = compute_something"))}))
    assert len(file.hunks) == 1
    units = units_of(file, COUNT, 1000)
    assert len(units) > 5
    for unit in units:
        assert unit.tokens == COUNT(unit.text) <= 1000
    assert [n for u in units for n in _cited(u.text)] == list(range(1, 901))
    assert "(continued)" not in units[0].text and "(continued)" in units[1].text


def test_take_fills_the_room_in_queue_order_and_shows_every_line_once() -> None:
    files = parse_diff(
        patch_of({f"dir/file{i}.py": (None, numbered(40 + i * 7)) for i in range(30)})
    )
    units = {f.path: units_of(f, COUNT, 1000) for f in files}
    queue = deque(queue_units(files, units, COUNT, file_cap=10_000))
    whole = {p: len(u) for p, u in units.items()}
    chunks: list[Chunk] = []
    while queue:
        taken = take(queue, 1000, COUNT)
        assert taken
        chunk = assemble(len(chunks), taken, whole)
        assert COUNT(chunk.text) <= 1000  # what is sent fits the room, counted exactly
        chunks.append(chunk)
    assert len(chunks) > 3
    # Full chunks: a head that does not fit is cut to fill what is left, unless too little is.
    assert all(COUNT(c.text) > 1000 - MIN_SLICE_TOKENS - 30 for c in chunks[:-1])
    shown: dict[str, list[int]] = {}
    for chunk in chunks:
        for path, text in re.findall(r"=== FILE (\S+) [^\n]*\n((?:(?!===).*\n)*)", chunk.text):
            shown.setdefault(path, []).extend(_cited(text))
    for file in files:
        assert shown[file.path] == sorted(file.new_lines)  # each line exactly once, in order
    assert "=== FILE dir/file0.py (added) ===" in chunks[0].text
    assert any("; part) ===" in c.text for c in chunks)  # a file cut across chunks says so


def test_a_file_over_its_cap_gives_its_riskiest_hunks_first_and_the_rest_later() -> None:
    prefix = "a reasonably long line of source code, number"
    before = numbered(600, prefix)
    after = "".join(
        ("result = eval(user_input)\n" if i == 400 else f"changed {i}\n")
        if i % 50 == 0
        else f"{prefix} {i}\n"
        for i in range(1, 601)
    )  # 12 hunks far apart, the one at line 400 risky
    big, small = parse_diff(patch_of({"big.py": (before, after), "small.py": ("a\n", "b\n")}))
    units = {f.path: units_of(f, COUNT, 1000) for f in (big, small)}
    per_hunk = units["big.py"][0].tokens
    queue = queue_units([big, small], units, COUNT, file_cap=4 * per_hunk)
    paths = [u.path for u in queue]
    first_small = paths.index("small.py")
    assert 1 < first_small < len(units["big.py"])  # the cap let the small file in early
    assert any("eval(user_input)" in u.text for u in queue[:first_small])  # riskiest kept
    assert all(u.held_back for u in queue[first_small + 1 :])
    every = [n for mine in units.values() for u in mine for n in _cited(u.text)]
    assert sorted(n for u in queue for n in _cited(u.text)) == sorted(every)  # each once
