"""Comments: people talking to Arbiter on a pull request, with commands or questions.

What counts as talking to it, and who may, is decided by the conversation's rules
(bot/conversation/rules.py); commands run from the table of bot/conversation/commands.py and
questions are answered by bot/conversation/answer.py. Both platforms' comments arrive here as
`comment` events.
"""

from __future__ import annotations

from bot.context import Context
from bot.router import Router

router = Router()


@router.register("comment", action="created")
@router.register("comment", action="edited")
async def talk(ctx: Context) -> None:
    # The conversation (and the Markdown parser and model client it uses) is imported by the
    # first comment, not by a process that only takes webhooks.
    from bot.conversation.answer import answer
    from bot.conversation.commands import run_command
    from bot.conversation.mentions import Command, Question
    from bot.conversation.rules import ThreadReply, classify
    from bot.conversation.threads import thread_findings

    e = ctx.event
    asked = classify(e, ctx.settings.bot_name)
    if isinstance(asked, ThreadReply):
        assert e.repo is not None  # classify() let only comments on a pull request through
        assert e.number is not None
        findings = await ctx.store.findings_for(e.platform, e.repo, e.number)
        # A reply without a mention is for Arbiter only in a thread one of its findings started.
        asked = Question(asked.comment.body) if thread_findings(asked.comment, findings) else None
    if asked is None:
        return
    if isinstance(asked, Command):
        ctx.log.info("command", command=asked.name)
        await run_command(ctx, asked)
        return
    ctx.log.info("question")
    await answer(ctx, asked)
