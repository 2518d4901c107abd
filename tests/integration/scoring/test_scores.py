"""Slices 3-6: criteria sets, targets, campaigns, scores, rankings and coalesced publication."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from common import topics
from scoring import adapters
from scoring.domain import SubjectPeriod
from scoring.use_cases.changelog import score_payload_of
from tests.helpers import OPERATOR, eventually, read_topic
from tests.integration.scoring.conftest import produce, wait_processed
from tests.unit.scoring import factory


def unique_province() -> str:
    return f"S{uuid.uuid4().hex[:6]}"


async def wait_published(runtime, key: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The ScoreUpdated payloads sent for `key` (from the score changelog, in order), once
    nothing for it is left dirty or unsent."""
    stype, sid, period = key.split(":", 2)

    async def settled() -> list[dict] | None:
        async with runtime.sessions() as session:
            pending = await session.scalar(
                select(adapters.dirty_subjects.c.subject_id).where(
                    adapters.dirty_subjects.c.subject_type == stype,
                    adapters.dirty_subjects.c.subject_id == sid,
                    adapters.dirty_subjects.c.period == period,
                )
            ) or await session.scalar(
                select(adapters.state_marks.c.subject_id).where(
                    adapters.state_marks.c.subject_type == stype,
                    adapters.state_marks.c.subject_id == sid,
                )
            )
            sent = await adapters.sent_versions(session, SubjectPeriod(stype, sid, period))
        payloads = [json.loads(score_payload_of(row)) for row in sent]
        return payloads if payloads and pending is None else None

    return await eventually(settled, what=f"score of {key} published")


async def test_burst_is_coalesced_into_few_versioned_updates(scoring, producer, infra) -> None:
    client, runtime = scoring
    province = unique_province()
    commune = f"{province}-C1"
    teams = [uuid.uuid4() for _ in range(10)]
    burst = [
        factory.activity(
            team_id=teams[i % 10],
            unit_path=factory.path(province, commune, f"{commune}-V{i % 10}"),
            household_hash=f"h{i}",
            outcomes={"app_installs": 1},
        )
        for i in range(300)
    ]
    events = await produce(producer, *burst)
    await wait_processed(runtime, events)
    key = f"commune:{commune}:2026-11"
    payloads = await wait_published(runtime, key)

    assert 1 <= len(payloads) <= 15, len(payloads)  # 300 events, a handful of updates
    versions = [p["version"] for p in payloads]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    final = payloads[-1]
    assert final["indicators"]["app_installs"] == 300
    assert final["indicators"]["households_visited"] == 300
    assert final["criteria_set"] == "default@1"
    assert final["as_of_event_time"] is not None
    assert 0 < final["score"] <= 100
    assert sum(c["max_points"] for c in final["components"]) == 100
    groups = {c["group"] for c in final["components"]}
    assert groups == {"activity", "reach", "skill_coverage", "outcomes", "capacity"}

    # the compacted topic carries the same latest version under key subject:id:period
    records = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.SCORE_LATEST.name,
        until=lambda rs: any(
            r.key == key.encode() and json.loads(r.value)["version"] == final["version"] for r in rs
        ),
    )
    assert records

    reply = await client.get(f"/v1/scores/commune/{commune}", params={"period": "2026-11"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["version"] == final["version"] and body["score"] == final["score"]
    assert body["rank"] == 1 and body["rank_of"] == 1


async def test_targets_rollups_rankings_and_criteria_versions(scoring, producer) -> None:
    client, runtime = scoring
    province = unique_province()
    strong, weak = f"{province}-C1", f"{province}-C2"
    team_strong, team_weak = uuid.uuid4(), uuid.uuid4()
    activities = [
        factory.activity(
            team_id=team_strong,
            unit_path=factory.path(province, strong),
            household_hash=f"s{i}",
            skills=["public_services", "online_payment", "online_shopping"],
            citizens_reached=4,
            outcomes={"app_installs": 2},
        )
        for i in range(30)
    ] + [
        factory.activity(
            team_id=team_weak, unit_path=factory.path(province, weak), household_hash="w0"
        )
    ]
    events = await produce(producer, *activities)
    await wait_processed(runtime, events)
    await wait_published(runtime, f"commune:{weak}:2026")
    await wait_published(runtime, f"commune:{strong}:2026")

    # the province's indicators are the sum of its communes (then scored, never averaged)
    reply = await client.get(f"/v1/indicators/province/{province}", params={"period": "2026"})
    assert reply.status_code == 200
    values = reply.json()["indicators"]
    assert values["app_installs"] == 60 and values["households_visited"] == 31
    assert values["activities"] == 31 and values["skills_taught"] == 3

    ranking = await client.get(
        "/v1/rankings", params={"parent": province, "level": "commune", "period": "2026"}
    )
    assert ranking.status_code == 200, ranking.text
    items = ranking.json()["items"]
    assert [i["subject_id"] for i in items] == [strong, weak]
    assert [i["rank"] for i in items] == [1, 2] and items[0]["rank_of"] == 2

    # a target (chỉ tiêu giao) replaces the default for that subject and period
    bad = await client.put(
        "/v1/targets",
        json={
            "subject_type": "commune",
            "subject_id": strong,
            "period": "2026-13",
            "indicator": "app_installs",
            "value": 1,
        },
        headers=OPERATOR,
    )
    assert bad.status_code == 422 and "period" in bad.text
    unauthorised = await client.put(
        "/v1/targets",
        json={
            "subject_type": "commune",
            "subject_id": strong,
            "period": "2026",
            "indicator": "app_installs",
            "value": 120,
        },
    )
    assert unauthorised.status_code == 401
    put = await client.put(
        "/v1/targets",
        json={
            "subject_type": "commune",
            "subject_id": strong,
            "period": "2026",
            "indicator": "app_installs",
            "value": 120,
        },
        headers=OPERATOR,
    )
    assert put.status_code == 200, put.text

    async def target_applied() -> dict | None:
        body = (await client.get(f"/v1/scores/commune/{strong}", params={"period": "2026"})).json()
        commerce = next(c for c in body["components"] if c["criterion"] == "app_installs")
        return body if commerce["target"] == 120 else None

    scored = await eventually(target_applied, what="target in the published score")
    commerce = next(c for c in scored["components"] if c["criterion"] == "app_installs")
    assert commerce["value"] == 60 and commerce["points"] == 2.0  # min(60/120, 1) × 4

    # a new criteria-set version: created, activated, and both stay queryable
    criteria = {
        "name": "reach_only",
        "provenance": "test",
        "criteria": [
            {
                "id": "households_visited",
                "group": "reach",
                "max_points": 100,
                "numerator": ["households_visited"],
                "target": 10,
            },
        ],
    }
    assert (await client.post("/v1/criteria-sets", json=criteria)).status_code == 401
    wrong = {**criteria, "criteria": [{**criteria["criteria"][0], "max_points": 90}]}
    rejected = await client.post("/v1/criteria-sets", json=wrong, headers=OPERATOR)
    assert rejected.status_code == 422 and "sum to 100" in rejected.text
    created = await client.post("/v1/criteria-sets", json=criteria, headers=OPERATOR)
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    assert version == "reach_only@1"
    listed = (await client.get("/v1/criteria-sets")).json()["items"]
    default = next(s for s in listed if s["version"] == "default@1")
    assert "our proposal" in default["provenance"].lower()
    activated = await client.post(f"/v1/criteria-sets/{version}:activate", headers=OPERATOR)
    assert activated.status_code == 200, activated.text
    try:

        async def rescored() -> dict | None:
            body = (
                await client.get(f"/v1/scores/commune/{weak}", params={"period": "2026"})
            ).json()
            return body if body["criteria_set"] == version and body["version"] > 0 else None

        new = await eventually(rescored, what="weak commune re-scored with the new set")
        assert new["score"] == 10.0  # 1 household of a target of 10 → 10 points of 100
        old = (
            await client.get(
                f"/v1/scores/commune/{weak}",
                params={"period": "2026", "criteria_set": "default@1"},
            )
        ).json()
        assert old["criteria_set"] == "default@1" and old["score"] != new["score"]
    finally:
        back = await client.post("/v1/criteria-sets/default@1:activate", headers=OPERATOR)
        assert back.status_code == 200


async def test_campaigns_are_periods_with_their_own_length(scoring, producer) -> None:
    client, runtime = scoring
    campaign = {
        "id": f"bp-{uuid.uuid4().hex[:6]}",
        "name": "Bình Phước 92 ngày",
        "start_date": "2026-06-01",
        "end_date": "2026-08-31",
        "unit_codes": ["70"],
    }
    assert (await client.post("/v1/campaigns", json=campaign)).status_code == 401
    created = await client.post("/v1/campaigns", json=campaign, headers=OPERATOR)
    assert created.status_code == 201, created.text
    assert created.json()["days"] == 92 and created.json()["period"] == f"campaign:{campaign['id']}"
    again = await client.post("/v1/campaigns", json=campaign, headers=OPERATOR)
    assert again.status_code == 409
    backwards = {**campaign, "id": "x-1", "end_date": "2026-05-01"}
    assert (await client.post("/v1/campaigns", json=backwards, headers=OPERATOR)).status_code == 422
    nul = await client.post(
        "/v1/campaigns", json={**campaign, "id": "x-2", "name": "92\u0000"}, headers=OPERATOR
    )
    assert nul.status_code == 422 and [e["field"] for e in nul.json()["errors"]] == ["body.name"]
    listed = (await client.get("/v1/campaigns", params={"limit": 500})).json()
    assert campaign["id"] in [c["id"] for c in listed["items"]]

    province = unique_province()
    team_id = uuid.uuid4()
    events = await produce(
        producer,
        factory.activity(
            team_id=team_id,
            unit_path=factory.path(province),
            campaign_id=campaign["id"],
            household_hash="h",
        ),
    )
    await wait_processed(runtime, events)
    period = f"campaign:{campaign['id']}"
    reply = await client.get(f"/v1/scores/province/{province}", params={"period": period})
    assert reply.status_code == 200, reply.text
    households = next(
        c for c in reply.json()["components"] if c["criterion"] == "households_visited"
    )
    # default 20 households per team per month, over 92 days (≈ 3.02 months)
    assert abs(households["target"] - 20 * 92 / 30.4375) < 1e-3
    missing = await client.get("/v1/scores/province/nowhere", params={"period": "2026"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
