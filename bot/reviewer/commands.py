"""Commands given to the bot in a pull request comment: `review`, `full review`, `pause`,
`resume`, `config`, `help`.

Everything but `help` needs write access to the repository; anyone else gets one short reply
saying who may use them, and nothing changes. An accepted command is acknowledged with 👀 at
once. `review` and `full review` queue a review requested by the commenter (it runs even on a
paused pull request); `pause` and `resume` switch automatic reviews of this pull request.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.reviewer.conversation import exchange_start, may_command, requester
from bot.reviewer.exchange import begin, finish, react, reply_id, say
from bot.reviewer.mentions import Command, handle_for
from bot.reviewer.render import code, neutralise
from config.repo import EffectiveConfig
from platforms.base import Permission

if TYPE_CHECKING:
    from bot.context import Context


async def run_command(ctx: Context, command: Command) -> None:
    record = await begin(ctx, exchange_start(ctx.event, command))
    if record is None:
        return
    handle = handle_for(ctx.settings.bot_name)
    if not may_command(command.name, await _permission(ctx, command)):
        text = refusal(handle)
        ref = await say(ctx, text)
        await finish(ctx, record, "not_allowed", answer=text, reply_id=reply_id(ref))
        return
    await react(ctx, "eyes")
    done = await _perform(ctx, command, handle)
    ref = await say(ctx, done) if done else None
    await finish(ctx, record, "done", answer=done, reply_id=reply_id(ref))


async def _permission(ctx: Context, command: Command) -> Permission:
    if may_command(command.name, "none"):
        return "none"  # open to anyone: no need to ask the platform
    return await ctx.platform.permission(requester(ctx.event).login)


async def _perform(ctx: Context, command: Command, handle: str) -> str | None:
    """Carry the command out; the reply to post (None: the 👀 says enough)."""
    e = ctx.event
    assert e.repo is not None  # classify() let only comments on a pull request through
    assert e.number is not None
    who = requester(e).login
    if command.name == "review":
        queued = await ctx.schedule_review(reason="review command", requested_by=who)
        ctx.log.info("review requested", by=who, review_job=queued.job_id)
        return None
    if command.name == "full review":
        queued = await ctx.schedule_review(
            full=True, fresh=True, reason="full review command", requested_by=who
        )
        ctx.log.info("full review requested", by=who, review_job=queued.job_id)
        return None
    if command.name in ("pause", "resume"):
        paused = command.name == "pause"
        await ctx.store.update_pr_state(e.platform, e.repo, e.number, paused=paused)
        ctx.log.info("automatic reviews " + ("paused" if paused else "resumed"), by=who)
        return paused_reply(handle) if paused else resumed_reply(handle)
    if command.name == "config":
        return config_reply(await ctx.repo_config())
    return help_reply(handle)


# --- What Arbiter says ---------------------------------------------------------------------------


def refusal(handle: str) -> str:
    return (
        "Sorry, only people with write access to this repository can give Arbiter commands. "
        f"Anyone can ask for {code(f'@{handle} help')}."
    )


def paused_reply(handle: str) -> str:
    return (
        "Automatic reviews are paused on this pull request: new pushes are not reviewed. "
        f"{code(f'@{handle} resume')} turns them back on; "
        f"{code(f'@{handle} review')} reviews the changes now."
    )


def resumed_reply(handle: str) -> str:
    return (
        "Automatic reviews are back on for this pull request: the next push is reviewed. "
        f"{code(f'@{handle} review')} reviews the changes now."
    )


def help_reply(handle: str) -> str:
    mention = code(f"@{handle}")
    rows = [
        ("review", "review the changes since the last review, now"),
        ("full review", "review the whole pull request again, ignoring earlier findings"),
        ("pause", "stop automatic reviews of this pull request"),
        ("resume", "start automatic reviews of this pull request again"),
        (
            "config",
            "show the repository's effective `.arbiter.yml`, and where each value came from",
        ),
        ("help", "this message"),
    ]
    table = "\n".join(f"| {code(f'@{handle} {name}')} | {what} |" for name, what in rows)
    return "\n".join(
        [
            f"**Talking to Arbiter.** Mention {mention} in a comment, followed by a command:",
            "",
            "| command | what it does |",
            "|---|---|",
            table,
            "",
            "Commands other than `help` need write access to the repository. Anything else after "
            "the mention is a question, answered in the same thread when Arbiter is sure of its "
            "answer (otherwise it reacts with 😕). A reply in a thread that one of Arbiter's "
            "findings started is a question too.",
        ]
    )


def config_reply(effective: EffectiveConfig) -> str:
    """The effective `.arbiter.yml` with where each value came from, and what is wrong in it."""
    file = code(effective.file or ".arbiter.yml")
    if effective.file is None:
        where = "This repository has no `.arbiter.yml`"
    else:
        where = f"This repository's {file}"
    if effective.branch:
        commit = f" at {code(effective.commit[:7])}" if effective.commit else ""
        where += f" (default branch {code(effective.branch)}{commit})"
    yaml = effective.render()
    longest = max((len(run) for run in re.findall(r"`{3,}", yaml)), default=2)
    fence = "`" * max(3, longest + 1)
    lines = [
        f"{where}. The configuration in effect, each value with where it came from:",
        "",
        f"{fence}yaml",
        yaml.rstrip("\n"),
        fence,
    ]
    if effective.repo_problems:
        lines += ["", f"**Problems in {file}** (the defaults apply where they are):", ""]
        lines += [f"- {neutralise(str(problem))}" for problem in effective.repo_problems]
    return "\n".join(lines)
