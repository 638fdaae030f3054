"""The README's command table is the command table's (bot/conversation/commands.py): a command
added there and not documented fails here."""

from __future__ import annotations

from bot.conversation.commands import COMMANDS, command_table, help_reply
from tests.conftest import ROOT

MARK = "<!-- commands: generated from bot/conversation/commands.py"


def test_the_readme_lists_every_command_as_the_table_says() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(MARK)
    block = readme[start:].split("\n\n", 1)[0].split("\n", 1)[1]
    assert block == command_table("arbiter")


def test_the_help_reply_is_the_table() -> None:
    reply = help_reply("arbiter")
    for spec in COMMANDS:
        assert f"| `@arbiter {spec.name}` | {spec.does} |" in reply
