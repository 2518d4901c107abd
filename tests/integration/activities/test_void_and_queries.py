"""Corrections (void), queries with cursor pagination and scoping, CSV export, metrics."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from common import topics
from tests.helpers import OPERATOR, read_topic
from tests.integration.activities.support import OTHER_PROVINCE, Env, activity, bearer


async def _key(env: Env, provinces: list[str] | None = None) -> dict[str, str]:
    created = await env.partner(provinces=provinces, rate_limit_per_second=100_000)
    return bearer(created["api_key"])


async def _post(env: Env, key: dict[str, str], body: dict[str, Any]) -> None:
    reply = await env.client.post("/v1/activities", json=body, headers=key)
    assert reply.status_code == 201, reply.text


async def test_void_publishes_once_and_is_idempotent(env: Env) -> None:
    key, stranger = await _key(env), await _key(env)
    team_id = await env.team()
    body = activity(team_id)
    await _post(env, key, body)
    url = f"/v1/activities/{body['id']}:void"

    assert (
        await env.client.post(url, json={"reason": "typo"}, headers=stranger)
    ).status_code == 404
    first = await env.client.post(url, json={"reason": "entered twice"}, headers=key)
    assert first.status_code == 200 and first.json()["reason"] == "entered twice"
    second = await env.client.post(url, json={"reason": "again"}, headers=OPERATOR)
    assert second.status_code == 200 and second.json() == first.json()
    missing = await env.client.post(
        f"/v1/activities/{uuid.uuid4()}:void", json={"reason": "x"}, headers=OPERATOR
    )
    assert missing.status_code == 404
    assert (await env.client.post(url, json={}, headers=key)).status_code == 422

    def voids(records: list[Any]) -> list[Any]:
        return [r for r in records if json.loads(r.value)["id"] == body["id"]]

    records = await read_topic(
        env.bootstrap, topics.ACTIVITY_VOIDED.name, until=lambda rs: bool(voids(rs))
    )
    (record,) = voids(records)
    payload = json.loads(record.value)
    assert record.key == str(team_id).encode()
    assert payload["reason"] == "entered twice" and payload["team_id"] == str(team_id)

    listed = await env.client.get("/v1/activities", params={"team_id": str(team_id)}, headers=key)
    (item,) = listed.json()["items"]
    assert item["voided_at"] is not None and item["void_reason"] == "entered twice"


async def test_queries_filter_paginate_and_stay_in_the_partners_provinces(env: Env) -> None:
    key = await _key(env)
    foreign_key = await _key(env, provinces=[OTHER_PROVINCE])
    team_id = await env.team()
    member_id = await env.member(team_id)
    foreign_team = await env.team(province=OTHER_PROVINCE)
    mine = [
        activity(team_id, member_id, occurred_at=f"2026-03-{day:02d}T09:00:00+07:00",
                 kind="group_session" if day % 2 else "household_visit",
                 skills=["cyber_safety"] if day % 3 == 0 else ["public_services"])
        for day in range(1, 26)
    ]  # fmt: skip
    for body in mine:
        await _post(env, key, body)
    await _post(env, foreign_key, activity(foreign_team, occurred_at="2026-03-05T09:00:00+07:00"))

    seen: list[str] = []
    cursor = None
    while True:
        params = {"team_id": str(team_id), "limit": "10", **({"cursor": cursor} if cursor else {})}
        page = (await env.client.get("/v1/activities", params=params, headers=key)).json()
        seen += [i["id"] for i in page["items"]]
        assert "household_hash" not in json.dumps(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [b["id"] for b in mine]  # oldest first, each exactly once

    window = {"unit": "82-28000", "since": "2026-03-10T00:00:00+07:00",
              "until": "2026-03-20T00:00:00+07:00", "kind": "group_session",
              "skill": "cyber_safety", "member_id": str(member_id)}  # fmt: skip
    filtered = (await env.client.get("/v1/activities", params=window, headers=key)).json()
    days = sorted(int(i["occurred_at"][8:10]) for i in filtered["items"])
    # 2026-03-DD 09:00+07 = 02:00Z same day: odd days (group sessions) divisible by 3.
    assert days == [15] and all(i["team_id"] == str(team_id) for i in filtered["items"])

    scoped = await env.client.get(
        "/v1/activities", params={"team_id": str(foreign_team)}, headers=key
    )
    assert scoped.json()["items"] == []
    as_operator = await env.client.get(
        "/v1/activities", params={"team_id": str(foreign_team)}, headers=OPERATOR
    )
    assert len(as_operator.json()["items"]) == 1
    naive = await env.client.get(
        "/v1/activities", params={"since": "2026-03-01T00:00:00"}, headers=key
    )
    assert naive.status_code == 422
    bad_cursor = await env.client.get("/v1/activities", params={"cursor": "nope"}, headers=key)
    assert bad_cursor.status_code == 422
    assert (await env.client.get("/v1/activities")).status_code == 401

    export = await env.client.get(
        "/v1/activities:export", params={"team_id": str(team_id)}, headers=key
    )
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["id"] for r in rows] == [b["id"] for b in mine]
    assert rows[0]["public_service_accounts"] == "1" and rows[0]["skills"] == "public_services"
    assert "household" not in export.text.splitlines()[0] and "HH-0001" not in export.text
    assert rows[0]["occurred_at"] == "2026-03-01T02:00:00+00:00"


async def test_metrics_count_accepted_and_rejected_by_reason(env: Env) -> None:
    key = await _key(env)
    team_id = await env.team()
    await _post(env, key, activity(team_id))
    await env.client.post("/v1/activities", json=activity(uuid.uuid4()), headers=key)
    text = (await env.client.get("/metrics")).text
    assert 'cdt_activities_events_total{outcome="accepted",reason=""}' in text
    assert 'cdt_activities_events_total{outcome="rejected",reason="team_unknown"}' in text
