"""The fake model's side of a conversation: answers in Arbiter's answer schema, and a responder
that answers questions and reviews alike (one fake serves both in an end-to-end world)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.conversation.answer import AnswerModel
from tests.fakes.openai import Answer, LLMRequest, Reply, Responder, findings_in_prompt

TEXT = "Because `shell=True` hands the whole string to `/bin/sh`, so input can run commands."


def answer(text: str = TEXT, confidence: float = 0.9, *, reply_needed: bool = True) -> Answer:
    """An Answer in the schema of bot.conversation.answer.AnswerModel."""
    data = {"answer": text, "confidence": confidence, "reply_needed": reply_needed}
    AnswerModel.model_validate(data)  # a test's typo fails here, not deep in the answerer
    return Answer(data)


def is_question(request: LLMRequest) -> bool:
    """Whether the model was asked to answer a question (rather than to review)."""
    properties = (request.schema or {}).get("properties") or {}
    return "confidence" in properties and "findings" not in properties


def questions(requests: Iterable[LLMRequest]) -> list[LLMRequest]:
    return [r for r in requests if is_question(r)]


def answering(reply: Reply | None = None, findings: Iterable[Mapping[str, Any]] = ()) -> Responder:
    """Questions get `reply` (default: a confident answer); reviews get `findings`."""
    review = findings_in_prompt(findings)
    given = reply or answer()

    def respond(request: LLMRequest) -> Reply:
        return given if is_question(request) else review(request)

    return respond
