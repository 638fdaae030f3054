"""A review job's payload: which pull request, and why it is being reviewed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

REVIEW_JOB = "review"


@dataclass(frozen=True)
class ReviewRequest:
    platform: Literal["github", "gitlab"]
    repo: str
    number: int
    installation_id: int | None = None
    delivery_id: str | None = None
    reason: str = "opened"  # the event or command that asked for it
    requested_by: str | None = None  # a person's command, rather than an automatic review
    fresh: bool = False  # ignore earlier findings (a "full review" command)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReviewRequest:
        return cls(**json.loads(text))
