"""bot/core/markdown.py: what is code and what would ping, decided by a CommonMark parser.

Every check reads the output with the corpus's own checker (tests/mention_corpus.py), which
parses it with markdown-it-py the way GitHub and GitLab render comments.
"""

from __future__ import annotations

import pytest

from bot.core.markdown import ZWSP, code, defused, neutralise, table_cell
from tests.mention_corpus import HOSTILE_PATHS, PARSER, TRICKS, problems

# The six tricks that left a live mention in posted comments before issue 16.
REGRESSIONS = (
    "code span across a blank line",
    "indented fence",
    "escaped backtick",
    "unbalanced backticks",
    "numeric entity",
    "fence inside a list item",
)


@pytest.mark.parametrize("name", REGRESSIONS)
def test_the_six_tricks_of_issue_16_ping_no_one(name: str) -> None:
    text = TRICKS[name]
    assert problems(text), "the trick itself must be live, or the test proves nothing"

    assert problems(neutralise(text)) == []


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_no_trick_leaves_a_mention_or_raw_html(name: str) -> None:
    out = neutralise(TRICKS[name])

    assert problems(out) == []
    assert neutralise(out) == out  # defusing twice changes nothing more


@pytest.mark.parametrize("name", sorted(TRICKS))
@pytest.mark.parametrize("frame", ["**{}**", "- {}", "> {}", "# {}", "a {} b", "{}\n\nafter"])
def test_a_neutralised_line_stays_quiet_wherever_it_is_put(name: str, frame: str) -> None:
    line = neutralise(" ".join(TRICKS[name].split()))

    assert problems(frame.format(line)) == []


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("```java\n@Override\npublic void run() {}\n```", "\n@Override\n"),
        ("Use `@dataclass` here.", "`@dataclass`"),
        ("para\n\n    @decorator\n    def f(): ...", "    @decorator"),
        ("mail ops@example.com or me@example.org", "ops@example.com or me@example.org"),
        ("[profile](https://example.com/@octocat)", "(https://example.com/@octocat)"),
        ("<https://example.com/@octocat>", "<https://example.com/@octocat>"),
        ("x `<!-- in code -->`", "`<!-- in code -->`"),
        ("```suggestion\n<!-- x --> @y\n```", "<!-- x --> @y"),
    ],
)
def test_code_emails_and_link_targets_are_left_as_written(text: str, kept: str) -> None:
    assert kept in neutralise(text)


def test_mentions_in_text_get_a_zero_width_space() -> None:
    assert neutralise("cc @octocat and @org/team") == f"cc @{ZWSP}octocat and @{ZWSP}org/team"
    assert neutralise("&#64;octocat") == f"@{ZWSP}octocat"
    assert neutralise("a <b> c") == "a &lt;b> c"


def test_an_unclosed_fence_is_closed_so_it_cannot_swallow_what_follows() -> None:
    out = neutralise("```\n@octocat")

    assert out == "```\n@octocat\n```"
    after = out + "\n\n@octocat"
    assert [p.text for p in problems(after)] == ["@octocat"]  # the text after is text again


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_code_shows_any_text_as_one_code_span(path: str) -> None:
    for frame in ("{}", "- {} line 3", "**{}**", "x {} y {}"):
        rendered = frame.format(*(code(path),) * frame.count("{}"))
        (block,) = [t for t in PARSER.parse(rendered) if t.type == "inline"]
        spans = [c for c in block.children or [] if c.type == "code_inline"]
        assert len(spans) == frame.count("{}"), rendered
        assert problems(rendered) == []
        for span in spans:
            shown = span.content
            assert "\n" not in shown
            assert shown == path.replace("\n", "\u240a"), rendered


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_code_span_in_a_table_cell_stays_one_cell(path: str) -> None:
    table = f"| file | note |\n|---|---|\n| {table_cell(code(path))} | x |"

    cells = [t for t in PARSER.parse(table) if t.type == "inline"]
    assert len(cells) == 4
    assert problems(table) == []


def test_the_last_pass_defuses_what_embedding_made_live() -> None:
    # A stray backtick before a neutralised code span turns the span's inside into text.
    composed = "` " + neutralise("`@octocat`") + "\n\n" + code("a|@b")
    table = "| a | b |\n|---|---|\n| " + code("x|@octocat") + " |"

    assert problems(composed)  # live before the last pass
    assert problems(defused(composed)) == []
    assert problems(defused(table)) == []
    assert defused("```\n@Override\n```") == "```\n@Override\n```"


def test_the_last_pass_escapes_hidden_comments_but_keeps_arbiters_tags() -> None:
    table = "| x | y |\n|---|---|\n| `a|<!-- b -->` |"
    text = f"<details><summary>Findings</summary>\n\n{table}\n\n</details>"

    out = defused(text)

    assert "<details><summary>Findings</summary>" in out
    assert "&lt;!-- b" in out
    assert problems(out) == []
