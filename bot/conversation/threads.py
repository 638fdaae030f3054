"""Inline threads: whether a comment replies in one, and which of Arbiter's findings started it.

Which thread a reply belongs to is matched against the findings Arbiter recorded: a reply sits
on its thread's file and line, so the findings posted there are the ones the thread is about.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.events import Comment
from bot.store.base import FindingRecord


def is_thread_reply(comment: Comment) -> bool:
    """An inline comment that answers another: GitHub names the comment replied to; a GitLab
    note in a diff discussion carries the discussion's id, never its own."""
    if comment.kind != "inline":
        return False
    if comment.in_reply_to is not None:
        return True
    return comment.thread is not None and comment.thread != str(comment.id)


def thread_findings(comment: Comment, findings: Iterable[FindingRecord]) -> list[FindingRecord]:
    """Arbiter's posted findings whose inline comment started the thread `comment` replies in."""
    if not is_thread_reply(comment) or comment.path is None or comment.line is None:
        return []
    return [f for f in findings if f.posted and f.path == comment.path and f.line == comment.line]
