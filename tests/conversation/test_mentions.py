"""The mention parser alone: what counts as talking to the bot, and which command it is."""

from __future__ import annotations

import pytest

from bot.conversation.mentions import Command, Question, handle_for, mentions, readable_text
from bot.conversation.rules import parse_request

BOT = "arbiter"


@pytest.mark.parametrize(
    "body",
    [
        "@arbiter why is this a bug?",
        "@Arbiter why?",
        "@ARBITER why?",
        "Thanks! @arbiter, is this safe?",
        "(@arbiter) what about this?",
        "cc:@arbiter",
        "Is this right, @arbiter.",
        "Is this right @arbiter?",
        "first line\n\n@arbiter second paragraph",
        "@arbiter[bot] what now?",
        "> quoted text\n\n@arbiter after the quote",
        "```\ncode\n```\n@arbiter after the block",
        "text `code` @arbiter after a span",
        "an unclosed ` backtick @arbiter",
        "- a list item\n  @arbiter inside it",
        "paragraph\n    @arbiter indented, but a paragraph's continuation",
        # As CommonMark reads them (issue 16): none of these is code.
        "`a\n\n@arbiter why` (a code span cannot cross a blank line)",
        "    ```\n@arbiter why\n    ```",
        "\\`@arbiter why` (an escaped backtick opens nothing)",
        "&#64;arbiter why?",
    ],
)
def test_a_mention_the_reader_sees_counts(body: str) -> None:
    assert mentions(body, BOT)
    assert parse_request(body, BOT) is not None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("no mention at all", "nothing"),
        ("arbiter, why?", "no @"),
        ("write to me@arbiter.dev", "an e-mail address"),
        ("@arbiter-dev why?", "a longer name"),
        ("@arbiters why?", "a longer name"),
        ("@arbiter_ci why?", "a longer name"),
        ("@arbiter.ci why?", "a longer name (GitLab allows dots)"),
        ("@arbiter/reviewers why?", "a team"),
        ("`@arbiter pause`", "an inline code span"),
        ("``@arbiter ` pause``", "a code span of two backticks"),
        ("```\n@arbiter pause\n```", "a fenced block"),
        ("~~~python\n@arbiter pause\n~~~", "a tilde fence"),
        ("````\n```\n@arbiter pause\n```\n````", "a longer fence around a shorter one"),
        ("```\n@arbiter pause", "a fence never closed runs to the end"),
        ("    @arbiter pause", "an indented code block"),
        ("text\n\n    @arbiter pause", "an indented block after a blank line"),
        ("> @arbiter pause", "a quote"),
        ("  > @arbiter pause", "a quote, indented"),
        ("> earlier text\n@arbiter pause", "a quote's lazy continuation line"),
        ("> > @arbiter pause", "a nested quote"),
        ("<!-- @arbiter pause -->", "an HTML comment"),
        ("<!--\n@arbiter pause\n-->", "an HTML comment over lines"),
        ("[@arbiter pause](https://example.com)", "a link's text"),
        ("<details>\n@arbiter pause\n</details>", "an HTML block"),
        ("- ```\n  @arbiter pause\n  ```", "a fence inside a list item"),
    ],
)
def test_a_mention_the_reader_does_not_see_as_one_does_not_count(body: str, why: str) -> None:
    assert not mentions(body, BOT), why
    assert parse_request(body, BOT) is None, why


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("@arbiter review", "review"),
        ("@arbiter Review", "review"),
        ("@arbiter review.", "review"),
        ("@arbiter review!", "review"),
        ("@arbiter: review", "review"),
        ("@arbiter, pause", "pause"),
        ("@arbiter full review", "full review"),
        ("@arbiter  FULL   Review", "full review"),
        ("@arbiter pause", "pause"),
        ("@arbiter resume", "resume"),
        ("@arbiter config", "config"),
        ("@arbiter help", "help"),
        ("Fixed the bug. @arbiter review", "review"),
        ("@arbiter review this part too", "review"),  # the first word decides
        ("> @arbiter pause\n\n@arbiter help", "help"),  # the quoted mention is not the first
        ("```\n@arbiter pause\n```\n@arbiter resume", "resume"),
    ],
)
def test_the_first_word_after_the_mention_is_the_command(body: str, name: str) -> None:
    assert parse_request(body, BOT) == Command(name)


@pytest.mark.parametrize(
    "body",
    [
        "@arbiter why is this a bug?",
        "@arbiter please review",
        "@arbiter full",
        "@arbiter full check",
        "@arbiter reviewing is slow",
        "@arbiter review-please",
        "@arbiter",
        "@arbiter\nreview",  # the command word is on the mention's line
        "cc @arbiter\n\npause here: is this right?",
        "@arbiter `pause`",
    ],
)
def test_anything_else_is_a_question_of_the_whole_comment(body: str) -> None:
    assert parse_request(body, BOT) == Question(body)


def test_nothing_after_the_command_word_is_read() -> None:
    """A comment cannot pass options: `--model`, `--config` and the like are just words."""
    for body in (
        "@arbiter review --model gpt-4-turbo",
        "@arbiter full review --config budget.max_cost_per_review_usd=100",
    ):
        request = parse_request(body, BOT)
        assert isinstance(request, Command)
        assert request.name in ("review", "full review")
        assert vars(request) == {"name": request.name}


def test_a_github_app_bot_name_is_mentioned_by_its_slug() -> None:
    assert handle_for("arbiter[bot]") == "arbiter"
    assert parse_request("@arbiter pause", "arbiter[bot]") == Command("pause")
    assert parse_request("@arbiter[bot] pause", "arbiter[bot]") == Command("pause")


def test_another_bot_name_is_another_handle() -> None:
    assert parse_request("@arbiter pause", "reviewbot") is None
    assert parse_request("@ReviewBot pause", "reviewbot") == Command("pause")
    assert parse_request("@review.bot pause", "review.bot") == Command("pause")
    assert parse_request("@reviewXbot pause", "review.bot") is None  # the dot is not a wildcard


def test_windows_line_endings_and_blocks_keep_words_apart() -> None:
    body = "```\r\nx\r\n```\r\n@arbiter pause\r\n"
    assert parse_request(body, BOT) == Command("pause")
    assert "@arbiter pause" in readable_text(body)
    assert "x" not in readable_text(body)
