"""What the API answers is redacted on the way out, whatever the store holds: errors and
reasons written before redaction at the source existed, or by a release that missed one."""

from __future__ import annotations

import json

from bot.store.base import FindingRecord, NewJob, ReviewStart
from tests.api.conftest import MakeApi

KEY = "proxy-key-7f3a9c2e51b84d06"  # the configured OpenAI key, of no known shape
PAT = "ghp_" + "Z" * 36  # a token nobody configured here: caught by its shape


async def test_stored_errors_reasons_and_findings_leave_redacted(make_api: MakeApi) -> None:
    api = await make_api(seeded=False, openai_api_key=KEY)
    store = api.store
    job = await store.enqueue(
        NewJob("review", json.dumps({"platform": "github", "repo": "o/r", "number": 1}))
    )
    (claimed,) = await store.claim("w", limit=1, lease_seconds=30)
    await store.bury(claimed.id, "w", error=f"ReviewFailed: 401 Incorrect API key: {KEY}")
    review = await store.start_review(
        ReviewStart("github", "o/r", 1, "a" * 40, "full", job_id=job.job_id)
    )
    await store.update_review(
        review.id,
        state="done",
        outcome="error",
        reason=f"Incomplete review: 401 Incorrect API key provided: {KEY}",
        not_reviewed=[{"path": "b.py", "reason": f"401 Incorrect API key provided: {KEY}"}],
        finished_at=api.clock.now,
    )
    await store.record_findings(
        review.id,
        "github",
        "o/r",
        1,
        [
            FindingRecord(
                fingerprint="f1",
                path="config.py",
                line=3,
                severity="critical",
                category="security",
                title="A token in the code",
                body=f"`TOKEN = '{PAT}'` is committed: revoke it.",
                confidence=0.9,
                posted=True,
            )
        ],
    )
    answers = {
        path: await (await api.get(path)).text()
        for path in ("/api/jobs", "/api/reviews", f"/api/reviews/{review.id}")
    }
    for path, text in answers.items():
        assert KEY not in text and PAT not in text, path
    (dead,) = json.loads(answers["/api/jobs"])["dead"]
    assert dead["last_error"] == "ReviewFailed: 401 Incorrect API key: ***"
    (listed,) = json.loads(answers["/api/reviews"])["items"]
    assert listed["reason"] == "Incomplete review: 401 Incorrect API key provided: ***"
    detail = json.loads(answers[f"/api/reviews/{review.id}"])
    assert detail["not_reviewed"] == [
        {"path": "b.py", "reason": "401 Incorrect API key provided: ***"}
    ]
    assert detail["findings"][0]["body"] == "`TOKEN = '***'` is committed: revoke it."
    # Counts whose names mention tokens are numbers still.
    assert isinstance(listed["input_tokens"], int)
