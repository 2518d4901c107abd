"""Each rule fires when it should and stays quiet when it should not, one alert per condition
even under redelivery; rules per scope; the inbox. Real Postgres and Kafka; events of the other
services are produced to their topics by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest_asyncio

from common import topics
from common.contracts.activities import ActivityVoided
from common.contracts.scoring import EvaluationRoundChanged, ScoreComponent
from notifications import bootstrap
from notifications.handlers import evaluate_inactivity
from notifications.settings import NotificationsSettings
from tests.helpers import OPERATOR, eventually, read_topic, running
from tests.integration.notifications.support import (
    Events,
    MutableClock,
    activity,
    consumed,
    new_code,
    score,
    team,
)


@pytest_asyncio.fixture(scope="module")
async def clock() -> MutableClock:
    return MutableClock()


@pytest_asyncio.fixture(scope="module")
async def service(
    apply_env: None, clock: MutableClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = NotificationsSettings(CDT_SWEEP_INTERVAL_SECONDS=0.3, CDT_WEBHOOK_ALLOW_PRIVATE=True)
    runtime = bootstrap.build_runtime(settings, clock=clock)
    async with running(runtime, bootstrap.build_app(runtime)) as client:
        yield client, runtime


async def alerts(client: httpx.AsyncClient, unit: str, **params: Any) -> list[dict[str, Any]]:
    reply = await client.get("/v1/alerts", params={"unit": unit, **params}, headers=OPERATOR)
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


async def put_rule(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    reply = await client.put("/v1/rules", json=body, headers=OPERATOR)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def settle(runtime: Any, events: Events) -> None:
    """Wait until every event sent so far has been consumed (and its effects committed)."""
    await eventually(lambda: consumed(runtime, events.sent), what="events consumed", timeout=30)


# --------------------------------------------------------------------------- rules API


async def test_rules_national_defaults_and_province_override(service) -> None:  # type: ignore[no-untyped-def]
    client, _runtime = service
    province = new_code()
    reply = await client.get("/v1/rules", params={"scope": province}, headers=OPERATOR)
    assert reply.status_code == 200
    rules = {r["alert_type"]: r for r in reply.json()["items"]}
    assert set(rules) == {
        "team_inactive",
        "score_drop",
        "target_reached",
        "campaign_at_risk",
        "suspicious_activity",
        "round_overdue",
    }
    assert rules["team_inactive"]["params"]["days"] == 14

    out = await put_rule(client, scope=province, alert_type="team_inactive", params={"days": 3})
    assert out["params"]["days"] == 3 and out["sources"] == ["default", province]
    national = await client.get("/v1/rules", headers=OPERATOR)
    assert {r["alert_type"]: r for r in national.json()["items"]}["team_inactive"]["params"][
        "days"
    ] == 14

    bad = await client.put(
        "/v1/rules",
        json={"scope": province, "alert_type": "team_inactive", "params": {"days": 0}},
        headers=OPERATOR,
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"] == "params.days"
    unknown = await client.put(
        "/v1/rules",
        json={"scope": province, "alert_type": "team_inactive", "params": {"dayz": 3}},
        headers=OPERATOR,
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "params.dayz"
    still = await client.get("/v1/rules", params={"scope": province}, headers=OPERATOR)
    assert {r["alert_type"]: r for r in still.json()["items"]}["team_inactive"]["params"][
        "days"
    ] == 3  # the rejected writes changed nothing

    assert (await client.get("/v1/rules")).status_code == 401
    forbidden = await client.put(
        "/v1/rules",
        json={"scope": province, "alert_type": "team_inactive", "params": {}},
        headers={"Authorization": "Bearer wrong"},
    )
    assert forbidden.status_code == 403


# --------------------------------------------------------------------------- team_inactive


async def test_inactivity_sweep_with_injected_clock(service, events, clock) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province, other = new_code(), new_code()
    await put_rule(client, scope=province, alert_type="team_inactive", params={"days": 3})
    quiet_team, busy_team, national_team = team(province), team(province), team(other)
    for t in (quiet_team, busy_team, national_team):
        await events.send(t)
    start = clock.now
    for t, p in ((quiet_team, province), (busy_team, province), (national_team, other)):
        await events.send(
            activity(team_id=t.id, province=p, occurred_at=start - timedelta(hours=1))
        )
    await settle(runtime, events)

    try:
        clock.now = start + timedelta(days=2)
        await runtime.sweep_once()
        assert [
            a for a in await alerts(client, province) if a["alert_type"] == "team_inactive"
        ] == []

        # busy_team keeps working; quiet_team falls silent past its province's 3 days, while
        # the other province keeps the national 14 days. The scheduled sweep finds it.
        await events.send(
            activity(team_id=busy_team.id, province=province, occurred_at=start + timedelta(days=2))
        )
        await settle(runtime, events)
        clock.now = start + timedelta(days=4)

        async def raised() -> list[dict[str, Any]]:
            return await alerts(client, province, type="team_inactive")

        found = await eventually(raised, what="scheduled sweep raises team_inactive")
        assert [a["subject_id"] for a in found] == [str(quiet_team.id)]
        assert found[0]["status"] == "open" and found[0]["details"]["limit_days"] == 3
        assert found[0]["unit_path"] == [province]
        await runtime.sweep_once()
        await runtime.sweep_once()
        assert len(await alerts(client, province, type="team_inactive")) == 1
        assert await alerts(client, other, type="team_inactive") == []

        # Activity clears the condition: the alert resolves by itself.
        await events.send(
            activity(
                team_id=quiet_team.id, province=province, occurred_at=clock.now - timedelta(hours=1)
            )
        )

        async def resolved() -> bool:
            found = await alerts(client, province, type="team_inactive")
            return [a["status"] for a in found] == ["resolved"]

        await eventually(resolved, what="team_inactive resolved by new activity")
    finally:
        clock.now = datetime.now(UTC)


# --------------------------------------------------------------------------- round_overdue


def review_round(
    province: str, *, due_on: date, state: str, version: int, round_id: uuid.UUID
) -> EvaluationRoundChanged:
    return EvaluationRoundChanged(
        id=round_id,
        level="province",
        unit_code=province,
        period="2026-Q4",
        criteria_set="default@1",
        due_on=due_on,
        state=state,  # type: ignore[arg-type]
        actor="operator",
        version=version,
        changed_at=datetime.now(UTC),
    )


async def test_a_round_past_its_due_date_raises_round_overdue_until_approved(  # type: ignore[no-untyped-def]
    service, events, clock
) -> None:
    client, runtime = service
    late, patient, on_time = new_code(), new_code(), new_code()
    await put_rule(client, scope=patient, alert_type="round_overdue", params={"grace_days": 5})
    today = clock.now.astimezone(timezone(timedelta(hours=7))).date()
    rounds = {code: uuid.uuid4() for code in (late, patient, on_time)}
    for code, due_on in ((late, today), (patient, today), (on_time, today + timedelta(days=3))):
        await events.send(
            review_round(code, due_on=due_on, state="open", version=1, round_id=rounds[code]),
            source="/cdt/scoring",
        )
    await settle(runtime, events)
    assert await alerts(client, late, type="round_overdue") == []  # due today: not late yet

    try:
        clock.now += timedelta(days=2)

        async def raised() -> list[dict[str, Any]]:
            # this sweep, or the scheduled one that held the sweep lock at that moment
            await runtime.sweep_once()
            return await alerts(client, late, type="round_overdue")

        [overdue] = await eventually(raised, what="the sweep raises round_overdue")
        assert overdue["subject_id"] == late and overdue["period"] == "2026-Q4"
        assert overdue["details"]["days_late"] == 2 and overdue["unit_path"] == [late]
        assert await alerts(client, patient, type="round_overdue") == []  # 5 days of grace
        assert await alerts(client, on_time, type="round_overdue") == []
        await runtime.sweep_once()
        assert len(await alerts(client, late, type="round_overdue")) == 1  # once

        # Approved, late: the alert resolves as the event arrives.
        await events.send(
            review_round(late, due_on=today, state="approved", version=3, round_id=rounds[late]),
            source="/cdt/scoring",
        )

        async def resolved() -> bool:
            found = await alerts(client, late, type="round_overdue")
            return [a["status"] for a in found] == ["resolved"]

        await eventually(resolved, what="round_overdue resolved by the approval")
        # an older version redelivered does not reopen it
        await events.send(
            review_round(late, due_on=today, state="open", version=1, round_id=rounds[late]),
            source="/cdt/scoring",
        )
        await settle(runtime, events)
        await runtime.sweep_once()
        assert [a["status"] for a in await alerts(client, late, type="round_overdue")] == [
            "resolved"
        ]
    finally:
        clock.now = datetime.now(UTC)


async def test_voided_activity_no_longer_counts_as_activity(service, events, clock) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await put_rule(client, scope=province, alert_type="team_inactive", params={"days": 3})
    quiet = team(province)
    await events.send(quiet)
    old = activity(team_id=quiet.id, province=province, occurred_at=clock.now - timedelta(days=5))
    recent = activity(
        team_id=quiet.id, province=province, occurred_at=clock.now - timedelta(hours=1)
    )
    await events.send(recent)  # first: the old one alone would (rightly) raise an alert
    await events.send(old)
    await settle(runtime, events)
    assert await alerts(client, province, type="team_inactive") == []

    void_first = activity(team_id=quiet.id, province=province, occurred_at=clock.now)
    for voided in (recent, recent, void_first):  # the same void re-published: harmless
        await events.send(
            ActivityVoided(id=voided.id, team_id=quiet.id, reason="duplicate", voided_at=clock.now)
        )
    await settle(runtime, events)
    await events.send(void_first)  # recorded after its void: must not count either
    await settle(runtime, events)
    found = await alerts(client, province, type="team_inactive")
    assert [(a["subject_id"], a["status"]) for a in found] == [(str(quiet.id), "open")]
    assert found[0]["details"]["days"] == 5


async def test_the_full_sweep_waits_for_a_consumer_judging_teams(service, clock) -> None:  # type: ignore[no-untyped-def]
    """The sweep must not read a team before a consumer's commit and its alerts after it."""
    _client, runtime = service
    async with runtime.unit_of_work() as consumer_side:
        await evaluate_inactivity(consumer_side, now=clock.now, team_ids=[uuid.uuid4()])
        async with runtime.unit_of_work() as sweep_side:
            sweep = asyncio.create_task(evaluate_inactivity(sweep_side, now=clock.now))
            await asyncio.sleep(0.5)
            assert not sweep.done()  # held back by the consumer's open transaction
            await consumer_side.commit()
            await asyncio.wait_for(sweep, timeout=10)


# --------------------------------------------------------------------------- score_drop


async def test_score_drop_between_versions_once_under_redelivery(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await events.send(score(subject_id=province, version=1, value=80))
    await events.send(score(subject_id=province, version=2, value=75))  # -5: under 10
    third = await events.send(score(subject_id=province, version=3, value=60))  # -15
    await events.resend(third)  # same event id again
    await events.send(score(subject_id=province, version=3, value=60))  # same fact, new id
    await events.send(score(subject_id=province, version=2, value=75))  # stale version
    await settle(runtime, events)

    found = await alerts(client, province, type="score_drop")
    assert len(found) == 1
    assert found[0]["details"]["baseline"] == 75 and found[0]["details"]["points"] == 15
    assert found[0]["dedupe_key"] == f"score_drop|province:{province}|2026-11"

    await events.send(score(subject_id=province, version=4, value=70))  # back within 10 of 75
    await settle(runtime, events)
    assert [a["status"] for a in await alerts(client, province, type="score_drop")] == ["resolved"]


async def test_score_drop_threshold_per_province(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await put_rule(client, scope=province, alert_type="score_drop", params={"points": 20})
    await events.send(score(subject_id=province, version=1, value=80))
    await events.send(score(subject_id=province, version=2, value=65))  # -15 < 20 here
    await settle(runtime, events)
    assert await alerts(client, province, type="score_drop") == []
    await put_rule(
        client, scope=province, alert_type="score_drop", enabled=False, params={"points": 1}
    )
    await events.send(score(subject_id=province, version=3, value=10))
    await settle(runtime, events)
    assert await alerts(client, province, type="score_drop") == []  # disabled


async def test_score_drop_between_periods_when_enabled(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await put_rule(
        client, scope=province, alert_type="score_drop", params={"between_periods": True}
    )
    await events.send(score(subject_id=province, version=1, value=85, period="2026-Q3"))
    await settle(runtime, events)
    await events.send(score(subject_id=province, version=1, value=70, period="2026-Q4"))
    await settle(runtime, events)
    [found] = await alerts(client, province, type="score_drop")
    assert found["period"] == "2026-Q4"
    assert found["details"]["compared_with"] == "previous_period"
    assert found["details"]["baseline"] == 85
    single = await client.get(f"/v1/alerts/{found['id']}", headers=OPERATOR)
    assert single.status_code == 200 and single.json()["dedupe_key"] == found["dedupe_key"]


# --------------------------------------------------------------------------- target_reached


async def test_target_reached_component_and_indicator(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await put_rule(
        client,
        scope=province,
        alert_type="target_reached",
        params={"criteria": ["reach"], "indicator_targets": {"app_installs": 1333}},
    )

    def reach(value: float) -> ScoreComponent:
        return ScoreComponent(criterion="reach", points=10, max_points=25, value=value, target=1.0)

    other = ScoreComponent(criterion="skills", points=5, max_points=5, value=2, target=1)
    await events.send(
        score(
            subject_id=province,
            version=1,
            value=50,
            period="2026",
            components=[reach(0.9), other],
            indicators={"app_installs": 1000},
        )
    )
    await settle(runtime, events)
    assert await alerts(client, province, type="target_reached") == []
    for version in (2, 3):  # reached, then seen again: still one alert each
        await events.send(
            score(
                subject_id=province,
                version=version,
                value=70,
                period="2026",
                components=[reach(1.0), other],
                indicators={"app_installs": 1333},
            )
        )
    await settle(runtime, events)
    reached = [
        a for a in await alerts(client, province, type="target_reached") if a["period"] == "2026"
    ]
    assert sorted(a["details"]["target"] for a in reached) == [
        "criterion:reach",
        "indicator:app_installs",
    ]
    assert all(a["status"] == "open" for a in reached)


# --------------------------------------------------------------------------- campaign_at_risk


async def test_campaign_at_risk_by_pace(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    goal = {
        "indicator": "citizens_reached",
        "target": 1000,
        "starts_on": "2026-06-01",
        "ends_on": "2026-08-31",
    }
    await put_rule(
        client,
        scope=province,
        alert_type="campaign_at_risk",
        params={"campaigns": {"slow": goal, "brisk": goal}},
    )
    halfway = datetime(2026, 7, 16, 12, tzinfo=UTC)  # about half of the 92 days
    await events.send(
        score(
            subject_id=province,
            version=1,
            value=10,
            period="campaign:slow",
            indicators={"citizens_reached": 200},
            computed_at=halfway,
        )
    )
    await events.send(
        score(
            subject_id=province,
            version=1,
            value=60,
            period="campaign:brisk",
            indicators={"citizens_reached": 600},
            computed_at=halfway,
        )
    )
    await events.send(
        score(
            subject_id=province,
            version=1,
            value=1,
            period="campaign:unknown",
            indicators={"citizens_reached": 1},
            computed_at=halfway,
        )
    )
    await events.send(
        score(
            subject_id=province,
            version=2,
            value=1,
            period="campaign:brisk",
            indicators={"citizens_reached": 10},
            computed_at=datetime(2026, 6, 2, tzinfo=UTC),
        )
    )  # too early to judge
    await settle(runtime, events)
    found = await alerts(client, province, type="campaign_at_risk")
    assert [a["period"] for a in found] == ["campaign:slow"]
    assert found[0]["details"]["projected"] < 1000

    await events.send(
        score(
            subject_id=province,
            version=2,
            value=90,
            period="campaign:slow",
            indicators={"citizens_reached": 950},
            computed_at=halfway,
        )
    )
    await settle(runtime, events)
    assert [a["status"] for a in await alerts(client, province, type="campaign_at_risk")] == [
        "resolved"
    ]


# --------------------------------------------------------------------------- suspicious_activity


async def test_suspicious_activity_checks(service, events) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    await put_rule(
        client,
        scope=province,
        alert_type="suspicious_activity",
        params={
            "max_visits_per_member_day": 4,
            "household_max_teams": 3,
            "household_window_hours": 6,
            "backdate_hours": 48,
            "backdate_burst_count": 5,
            "backdate_burst_window_minutes": 30,
        },
    )
    teams = [team(province) for _ in range(4)]
    for t in teams:
        await events.send(t)
    now = datetime.now(UTC)
    day = datetime(2026, 11, 20, 2, tzinfo=UTC)  # 09:00 local
    busy, normal = uuid.uuid4(), uuid.uuid4()
    busy_events = [
        activity(
            team_id=teams[0].id,
            province=province,
            member_id=busy,
            occurred_at=day + timedelta(minutes=30 * i),
            recorded_at=day + timedelta(hours=6),
        )
        for i in range(5)
    ]
    for a in busy_events:
        await events.send(a)
    await events.send(busy_events[0])  # a redelivered copy does not count twice
    for i in range(4):
        await events.send(
            activity(
                team_id=teams[1].id,
                province=province,
                member_id=normal,
                occurred_at=day + timedelta(minutes=30 * i),
                recorded_at=day + timedelta(hours=6),
            )
        )
    # one household, three teams within two hours; another household, three teams over days
    for i in range(3):
        await events.send(
            activity(
                team_id=teams[i].id,
                province=province,
                household_hash="h-many",
                occurred_at=day + timedelta(hours=i),
                recorded_at=day + timedelta(hours=6),
            )
        )
        await events.send(
            activity(
                team_id=teams[i].id,
                province=province,
                household_hash="h-spread",
                occurred_at=day + timedelta(days=2 * i),
                recorded_at=day + timedelta(days=2 * i, hours=6),
            )
        )
    # team 3: a burst of five events backdated by ten days; team 2: four, under the limit
    for i in range(5):
        await events.send(
            activity(
                team_id=teams[3].id,
                province=province,
                kind="group_session",
                occurred_at=now - timedelta(days=10, hours=i),
                recorded_at=now,
            )
        )
    for i in range(4):
        await events.send(
            activity(
                team_id=teams[2].id,
                province=province,
                kind="group_session",
                occurred_at=now - timedelta(days=10, hours=i),
                recorded_at=now,
            )
        )
    await settle(runtime, events)

    found = await alerts(client, province, type="suspicious_activity")
    by_check = {a["details"]["check"]: a for a in found}
    assert sorted(by_check) == ["backdated_burst", "household_many_teams", "visits_per_day"]
    assert len(found) == 3
    assert by_check["visits_per_day"]["subject_id"] == str(busy)
    assert by_check["visits_per_day"]["details"]["visits"] == 5
    assert by_check["visits_per_day"]["period"] == "2026-11-20"
    assert by_check["household_many_teams"]["subject_id"] == "h-many"
    assert by_check["backdated_burst"]["subject_id"] == str(teams[3].id)


# --------------------------------------------------------------------------- inbox


async def test_inbox_subtree_status_pagination_and_ack(service, events, infra) -> None:  # type: ignore[no-untyped-def]
    client, runtime = service
    province = new_code()
    commune_a, commune_b = f"{province}-A", f"{province}-B"
    team_a, team_b = team(province, commune=commune_a), team(province, commune=commune_b)
    await events.send(team_a)
    await events.send(team_b)
    for t in (team_a, team_b):
        await events.send(
            score(
                subject_type="team",
                subject_id=str(t.id),
                version=1,
                value=1,
                period="2026-11",
                components=[
                    ScoreComponent(criterion="reach", points=1, max_points=1, value=2, target=1)
                ],
            )
        )
    await settle(runtime, events)

    in_a = await alerts(client, commune_a, type="target_reached")
    assert [a["subject_id"] for a in in_a] == [str(team_a.id)]
    assert in_a[0]["unit_path"] == [province, commune_a]
    whole = await alerts(client, province, type="target_reached")
    assert {a["subject_id"] for a in whole} == {str(team_a.id), str(team_b.id)}

    first = await client.get("/v1/alerts", params={"unit": province, "limit": 1}, headers=OPERATOR)
    page = first.json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    second = await client.get(
        "/v1/alerts",
        params={"unit": province, "limit": 1, "cursor": page["next_cursor"]},
        headers=OPERATOR,
    )
    assert second.json()["items"][0]["id"] != page["items"][0]["id"]
    assert (
        await client.get("/v1/alerts", params={"cursor": "nope"}, headers=OPERATOR)
    ).status_code == 422

    alert_id = in_a[0]["id"]
    acked = await client.post(f"/v1/alerts/{alert_id}:ack", headers=OPERATOR)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    again = await client.post(f"/v1/alerts/{alert_id}:ack", headers=OPERATOR)
    assert again.status_code == 200 and again.json()["status"] == "acknowledged"
    assert (await client.post(f"/v1/alerts/{alert_id}:ack")).status_code == 401
    assert (
        await client.post(f"/v1/alerts/{uuid.uuid4()}:ack", headers=OPERATOR)
    ).status_code == 404
    assert [a["id"] for a in await alerts(client, province, status="acknowledged")] == [alert_id]
    assert alert_id not in [a["id"] for a in await alerts(client, province, status="open")]

    records = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.ALERT_RAISED.name,
        until=lambda rs: sum(r.key == alert_id.encode() for r in rs) >= 2,
    )
    states = [json.loads(r.value)["status"] for r in records if r.key == alert_id.encode()]
    assert states == ["open", "acknowledged"]


async def test_a_unit_score_alert_is_placed_where_the_units_teams_are(service, events) -> None:  # type: ignore[no-untyped-def]
    """A unit's score carries no path: its alert takes the one its teams give the unit, and
    follows the unit when its teams move it under another province (a re-parenting)."""
    client, runtime = service
    province, new_province = new_code(), new_code()
    commune = f"{province}-C"
    placed = team(province, commune=commune)
    await events.send(placed)

    def reached(period: str) -> Any:
        return score(
            subject_type="commune",
            subject_id=commune,
            version=1,
            value=1,
            period=period,
            components=[
                ScoreComponent(criterion="reach", points=1, max_points=1, value=2, target=1)
            ],
        )

    await events.send(reached("2026-10"))
    await settle(runtime, events)
    [first] = await alerts(client, commune, type="target_reached")
    assert first["unit_path"] == [province, commune]

    moved = placed.model_copy(
        update={
            "unit_path": placed.unit_path.model_copy(update={"province": new_province}),
            "version": 2,
        }
    )
    await events.send(moved)
    await events.send(reached("2026-11"))
    await settle(runtime, events)
    [second] = await alerts(client, new_province, type="target_reached")
    assert second["unit_path"] == [new_province, commune] and second["period"] == "2026-11"
    assert [a["period"] for a in await alerts(client, province, type="target_reached")] == [
        "2026-10"
    ]
