"""`GET /api/recovery`, what the dashboard's queue view shows of recovery: each pass, what it
covers or why it is off, its last run, the totals of every process, the latest requests."""

from __future__ import annotations

from bot.api.recovery import RecoveryState
from tests.api.conftest import READ, MakeApi
from tests.api.seed import MARKUP


async def test_recovery_shows_each_pass_and_the_latest_requests(make_api: MakeApi) -> None:
    api = await make_api(reconcile_interval_seconds=0, github_token="ghp_" + "x" * 36)
    answer = await api.get("/api/recovery", token=READ)
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    RecoveryState.model_validate(body)

    redelivery, reconcile = body["redelivery"], body["reconcile"]
    assert (redelivery["enabled"], redelivery["interval_seconds"]) == (True, 300)
    assert (redelivery["total"], redelivery["running"]) == (1, False)
    assert redelivery["last_run"]["done"] == 1 and redelivery["last_run"]["refused"] == 1
    assert redelivery["metric"] == "arbiter_redeliveries_requested_total"
    assert redelivery["next_due_at"] is not None
    assert (reconcile["enabled"], reconcile["next_due_at"], reconcile["total"]) == (False, None, 1)
    assert reconcile["covers"] == ["2 github repositories"]
    assert reconcile["metric"] == "arbiter_reconcile_reviews_scheduled_total"

    newest, older = body["redeliveries"]
    assert (newest["delivery_id"], newest["state"]) == ("guid-refused", "refused")
    assert newest["error"].startswith("422 too old") and MARKUP in newest["error"]
    assert (older["delivery_id"], older["state"], older["attempts"]) == (
        "guid-accepted",
        "accepted",
        1,
    )


async def test_recovery_needs_a_token(make_api: MakeApi) -> None:
    api = await make_api()
    assert (await api.get("/api/recovery", token=None)).status == 401
