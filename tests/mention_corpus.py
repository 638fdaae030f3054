"""The mention corpus: hostile text for everything Arbiter posts, and a checker that reads the
result as GitHub and GitLab do.

The checker is written apart from bot/core/markdown.py on purpose: it parses with markdown-it-py
(CommonMark with GFM tables, as both platforms render comments), walks the tokens and looks for
what the platforms' mention filters would link in the rendered HTML: an `@` starting a text node
or after a character that is not an ASCII word character (Ruby's `\\W`, as in GitHub's
MentionFilter and GitLab's reference filters), followed by a character a user, team or group
name can start with. Text inside code, `pre` and links the platforms skip; so does the checker
for code and autolinks (link text is still checked: Arbiter defuses it too). Raw HTML outside
code is reported unless it is one of the tags Arbiter writes itself.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])

# GitHub: (?:^|\W)@[a-z0-9]; GitLab users, groups, subgroups and @all: (?<!\w)@[\w.]
LIVE_MENTION = re.compile(r"(?<![A-Za-z0-9_])@[A-Za-z0-9_.][\w.\-/]*")
ARBITER_TAGS = frozenset({"<sub>", "</sub>", "<details>", "</details>", "<summary>", "</summary>"})
TAG = re.compile(r"<[^>]*>?", re.DOTALL)
MARKER_LINE = re.compile(r"<!-- arbiter:[A-Za-z0-9._:/ -]+ -->")

# The 13 tricks of issue 16 (six of them left a live mention before), and more of the kind.
TRICKS: dict[str, str] = {
    "plain": "cc @octocat, please look",
    "team": "ask @github/security-team",
    "gitlab subgroup": "ask @group/subgroup/team",
    "gitlab everyone": "@all this breaks the build",
    "code span across a blank line": "see `x\n\n@octocat` here",
    "indented fence": "    ```\n@octocat\n    ```",
    "escaped backtick": "\\`@octocat` is the owner",
    "unbalanced backticks": "``@octocat` is the owner",
    "numeric entity": "&#64;octocat wrote this",
    "hex entity": "&#x40;octocat wrote this",
    "named entity": "&commat;octocat wrote this",
    "entity after the at sign": "@&#111;ctocat wrote this",
    "fence inside a list item": "- ```\n@octocat\n```",
    "fenced code (stays code)": "```\n@octocat\n```",
    "inline code (stays code)": "use `@Override` here",
    "email (not a mention)": "mail ops@example.com",
    "after emphasis": "*thanks*@octocat",
    "after a slash": "path/@octocat",
    "after a dot": "done.@octocat",
    "after a non-ASCII letter": "é@octocat",
    "after a hyphen": "x-@octocat",
    "in brackets": "(@octocat)",
    "in a blockquote": "> @octocat said so",
    "in a heading": "# @octocat",
    "in link text": "[@octocat](https://example.com)",
    "in a table": "| a | b |\n|---|---|\n| @octocat | x |",
    "pipe splits a code span in a table": "| a | b |\n|---|---|\n| `x|@octocat` | y |",
    "html tag": "<b>@octocat</b>",
    "html block": "<div>\n@octocat\n</div>",
    "html comment": "<!-- @octocat -->",
    "planted marker": "<!-- arbiter:repo-config -->",
    "planted summary marker": "<!-- arbiter:summary -->",
    "details": "<details><summary>@octocat</summary>hidden</details>",
    "img": '<img src="x" alt="@octocat">',
    "underscore name (GitLab)": "@_octocat_",
    "dot name (GitLab)": "@.octocat",
    "unclosed fence swallows the rest": "```\n@octocat in code",
    "tilde fence": "~~~\n@octocat\n~~~",
    "indented code": "para\n\n    @octocat in code",
    "backslash at the end": "trailing \\",
    "many ats": "@@@octocat @",
    "newline then mention": "x\n\n@octocat\n\ny",
    "line starts a fence": "```@octocat",
    "zero-width already": "@\u200boctocat",
    "autolink": "<https://example.com/@octocat>",
    "email autolink": "<octocat@example.com>",
    "link destination": "[profile](https://example.com/@octocat)",
    "lone less-than": "a < b and c<d",
    "script": "<script>alert(1)</script>@octocat",
    "cdata": "<![CDATA[ @octocat ]]>",
    "processing instruction": "<? @octocat ?>",
}

HOSTILE_PATHS: tuple[str, ...] = (
    "x\n\n@octocat\n\ny.min.js",
    "<!-- arbiter:repo-config -->.min.js",
    "<!-- arbiter:summary -->.py",
    "@octocat/owned.py",
    "src/`@octocat`.py",
    "src/a`b``c.py",
    "docs/a|@octocat|b.md",
    "&#64;octocat.js",
    "dir\n```\n@octocat\n```/f.py",
    "    @octocat.py",
    "- @octocat.py",
    "<b>@octocat</b>.py",
    "trailing\\",
    " spaced @octocat ",
    "`",
)

HOSTILE_TITLES: tuple[str, ...] = tuple(TRICKS.values())
HOSTILE_BRANCHES: tuple[str, ...] = (
    "@octocat",
    "feature/@org/team",
    "<!--x-->",
    "a`b",
    "x|@octocat",
)


@dataclass(frozen=True)
class Found:
    what: str  # "mention" or "html"
    text: str

    def __str__(self) -> str:
        return f"{self.what}: {self.text!r}"


def problems(markdown: str) -> list[Found]:
    """Live mentions and raw HTML (not Arbiter's own tags) in `markdown`, as rendered."""
    found: list[Found] = []
    for token in PARSER.parse(markdown):
        if token.type == "html_block":
            found += _in_html(token.content)
        elif token.type == "inline":
            found += _in_inline(token.children or [])
    return found


def live_mentions(markdown: str) -> list[str]:
    return [f.text for f in problems(markdown) if f.what == "mention"]


def without_markers(body: str) -> str:
    """`body` without the hidden markers Arbiter writes on its own first and last lines."""
    lines = body.split("\n")
    while lines and MARKER_LINE.fullmatch(lines[0]):
        lines.pop(0)
    while lines and (not lines[-1].strip() or MARKER_LINE.fullmatch(lines[-1])):
        lines.pop()
    return "\n".join(lines)


def _in_inline(children: list[Token]) -> list[Found]:
    found: list[Found] = []
    autolink = 0
    for child in children:
        if child.type == "link_open" and child.markup == "autolink":
            autolink += 1
        elif child.type == "link_close" and child.markup == "autolink":
            autolink -= 1
        elif child.type == "text" and not autolink:
            found += [Found("mention", m.group()) for m in LIVE_MENTION.finditer(child.content)]
        elif child.type == "html_inline":
            found += _in_html(child.content)
        elif child.type == "image":
            found += _in_inline(child.children or [])
    return found


def _in_html(raw: str) -> list[Found]:
    found: list[Found] = []
    for tag in TAG.findall(raw):
        if tag not in ARBITER_TAGS:
            found.append(Found("html", tag))
    text = html.unescape(TAG.sub(" ", raw))  # the text nodes between the tags
    found += [Found("mention", m.group()) for m in LIVE_MENTION.finditer(text)]
    return found
