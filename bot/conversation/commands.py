"""Commands given to the bot in a pull request comment, in one table.

Each entry names the command (the words after the mention), who may run it, what it does (a
function of the Context that returns the reply to post, or None when the 👀 says enough) and
its line in `@arbiter help`. The mention parser, the help reply, the runner and the docs test
all read this table: a new command is one entry and one function.

Commands spend money or change the pull request's state, so they need write access unless the
entry says `anyone`; anyone else gets one short reply saying who may use them, and nothing
changes. An accepted command is acknowledged with 👀 at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.context import Context
from bot.conversation.exchange import begin, exchange_start, finish, react, reply_id, requester, say
from bot.conversation.mentions import Command, handle_for
from bot.core.markdown import code, neutralise
from bot.review.request import schedule_review
from config.repo import EffectiveConfig
from platforms.base import Permission

WRITERS: frozenset[Permission] = frozenset({"admin", "write"})

# (ctx, the handle people type after `@`) → the reply to post, or None
Action = Callable[[Context, str], Awaitable[str | None]]


@dataclass(frozen=True)
class CommandSpec:
    name: str  # the words after the mention, lower case: "review", "full review"
    does: str  # its line in the help reply and the README's table
    run: Action
    anyone: bool = False  # open to everyone; otherwise write access is needed


# --- What each command does -----------------------------------------------------------------------


async def _review(ctx: Context, handle: str) -> str | None:
    who = requester(ctx.event).login
    queued = await schedule_review(ctx, reason="review command", requested_by=who)
    ctx.log.info("review requested", by=who, review_job=queued.job_id)
    return None


async def _full_review(ctx: Context, handle: str) -> str | None:
    who = requester(ctx.event).login
    queued = await schedule_review(
        ctx, full=True, fresh=True, reason="full review command", requested_by=who
    )
    ctx.log.info("full review requested", by=who, review_job=queued.job_id)
    return None


async def _pause(ctx: Context, handle: str) -> str | None:
    await _set_paused(ctx, True)
    return paused_reply(handle)


async def _resume(ctx: Context, handle: str) -> str | None:
    await _set_paused(ctx, False)
    return resumed_reply(handle)


async def _config(ctx: Context, handle: str) -> str | None:
    return config_reply(await ctx.repo_config())


async def _help(ctx: Context, handle: str) -> str | None:
    return help_reply(handle)


async def _set_paused(ctx: Context, paused: bool) -> None:
    e = ctx.event
    assert e.repo is not None  # classify() let only comments on a pull request through
    assert e.number is not None
    await ctx.store.update_pr_state(e.platform, e.repo, e.number, paused=paused)
    who = requester(e).login
    ctx.log.info("automatic reviews " + ("paused" if paused else "resumed"), by=who)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("review", "review the changes since the last review, now", _review),
    CommandSpec(
        "full review",
        "review the whole pull request again, ignoring earlier findings",
        _full_review,
    ),
    CommandSpec("pause", "stop automatic reviews of this pull request", _pause),
    CommandSpec("resume", "start automatic reviews of this pull request again", _resume),
    CommandSpec(
        "config",
        "show the repository's effective `.arbiter.yml`, and where each value came from",
        _config,
    ),
    CommandSpec("help", "this message", _help, anyone=True),
)
COMMAND_NAMES: tuple[str, ...] = tuple(c.name for c in COMMANDS)
_BY_NAME = {c.name: c for c in COMMANDS}


def command_spec(name: str) -> CommandSpec:
    """The table's entry for `name`; KeyError for a name that is not a command."""
    return _BY_NAME[name]


def may_command(name: str, permission: Permission) -> bool:
    """Commands spend money or change the pull request's state: they need write access."""
    return command_spec(name).anyone or permission in WRITERS


# --- Running one ----------------------------------------------------------------------------------


async def run_command(ctx: Context, command: Command) -> None:
    """Carry out `command` as one recorded exchange (nothing again when an earlier attempt of
    this job already did it)."""
    record = await begin(ctx, exchange_start(ctx.event, command))
    if record is None:
        return
    spec = command_spec(command.name)
    handle = handle_for(ctx.settings.bot_name)
    if not may_command(spec.name, await _permission(ctx, spec)):
        text = refusal(handle)
        ref = await say(ctx, text)
        await finish(ctx, record, "not_allowed", answer=text, reply_id=reply_id(ref))
        return
    await react(ctx, "eyes")
    done = await spec.run(ctx, handle)
    ref = await say(ctx, done) if done else None
    await finish(ctx, record, "done", answer=done, reply_id=reply_id(ref))


async def _permission(ctx: Context, spec: CommandSpec) -> Permission:
    if spec.anyone:
        return "none"  # open to anyone: no need to ask the platform
    return await ctx.platform.permission(requester(ctx.event).login)


# --- What Arbiter says ---------------------------------------------------------------------------


def refusal(handle: str) -> str:
    open_to_all = [c.name for c in COMMANDS if c.anyone]
    anyone = " or ".join(code(f"@{handle} {name}") for name in open_to_all)
    return (
        "Sorry, only people with write access to this repository can give Arbiter commands. "
        f"Anyone can ask for {anyone}."
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


def command_table(handle: str) -> str:
    """The commands as a Markdown table: the help reply's, and the README's."""
    rows = [f"| {code(f'@{handle} {c.name}')} | {c.does} |" for c in COMMANDS]
    return "\n".join(["| command | what it does |", "|---|---|", *rows])


def help_reply(handle: str) -> str:
    mention = code(f"@{handle}")
    open_to_all = ", ".join(code(c.name) for c in COMMANDS if c.anyone)
    return "\n".join(
        [
            f"**Talking to Arbiter.** Mention {mention} in a comment, followed by a command:",
            "",
            command_table(handle),
            "",
            f"Commands other than {open_to_all} need write access to the repository. "
            "Anything else after the mention is a question, answered in the same thread when "
            "Arbiter is sure of its answer (otherwise it reacts with 😕). A reply in a thread "
            "that one of Arbiter's findings started is a question too.",
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
        lines += [f"- {neutralise(' '.join(str(p).split()))}" for p in effective.repo_problems]
    return "\n".join(lines)
