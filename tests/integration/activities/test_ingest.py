"""Ingest: idempotency, validation against the replica, privacy, storage and publication."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text

from activities.adapters import activities, activity_ids, service_tables
from common import topics
from tests.helpers import headers_of, read_topic
from tests.integration.activities.support import (
    HMAC_KEY,
    OTHER_PROVINCE,
    Env,
    activity,
    bearer,
)


async def _partner_key(env: Env, **extra: Any) -> dict[str, str]:
    created = await env.partner(rate_limit_per_second=100_000, **extra)
    return bearer(created["api_key"])


async def _stored(env: Env, ids: list[str]) -> int:
    async with env.runtime.sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(activities)
            .where(activities.c.id.in_([uuid.UUID(i) for i in ids]))
        )
    return int(found or 0)


async def _outbox_rows(env: Env, ids: list[str]) -> int:
    outbox = service_tables.outbox
    async with env.runtime.sessions() as session:
        found = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.payload["id"].astext.in_(ids))
        )
    return int(found or 0)


async def test_accepted_event_is_stored_hashed_and_published_keyed_by_team(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team()
    member_id = await env.member(team_id)
    body = activity(team_id, member_id, household_ref="HH-secret-42", skills=["online_payment"])
    reply = await env.client.post("/v1/activities", json=body, headers=key)
    assert reply.status_code == 201, reply.text
    assert reply.json() == {"id": body["id"], "status": "accepted"}

    records = await read_topic(
        env.bootstrap,
        topics.ACTIVITY_RECORDED.name,
        until=lambda rs: any(json.loads(r.value)["id"] == body["id"] for r in rs),
    )
    record = next(r for r in records if json.loads(r.value)["id"] == body["id"])
    payload = json.loads(record.value)
    assert record.key == str(team_id).encode()
    assert headers_of(record)["ce_type"] == "vn.cdt.activities.activity-recorded.v1"
    assert payload["unit_path"] == {
        "province": "82", "district": None, "commune": "82-28000", "village": "82-28000-V01"
    }  # fmt: skip
    expected = hmac.new(HMAC_KEY.encode(), b"HH-secret-42", hashlib.sha256).hexdigest()
    assert payload["household_hash"] == expected
    assert payload["member_id"] == str(member_id)
    assert payload["outcomes"] == {"app_installs": 1, "public_service_accounts": 1}
    # The raw household reference is nowhere: not in the event, the row or the outbox.
    assert "HH-secret-42" not in record.value.decode()
    async with env.runtime.sessions() as session:
        row = (
            await session.execute(
                select(activities).where(activities.c.id == uuid.UUID(body["id"]))
            )
        ).one()
    assert row.household_hash == expected and "HH-secret-42" not in str(tuple(row))


async def test_same_id_same_payload_is_duplicate_different_payload_is_conflict(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team()
    body = activity(team_id, skills=["public_services", "online_payment"])
    assert (await env.client.post("/v1/activities", json=body, headers=key)).status_code == 201
    # Same meaning, different spelling: another UTC offset, another skill order.
    moment = datetime.fromisoformat(body["occurred_at"]).astimezone(UTC).isoformat()
    respelled = {**body, "occurred_at": moment, "skills": ["online_payment", "public_services"]}
    again = await env.client.post("/v1/activities", json=respelled, headers=key)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    changed = await env.client.post(
        "/v1/activities", json={**body, "citizens_reached": 4}, headers=key
    )
    assert changed.status_code == 409
    assert changed.json()["reason"] == "conflict"
    assert await _stored(env, [body["id"]]) == 1
    assert await _outbox_rows(env, [body["id"]]) == 1


async def test_batch_retried_after_timeout_creates_no_duplicates(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team()
    items = [activity(team_id, household_ref=f"HH-{i}") for i in range(300)]
    # The partner's first attempt "timed out" while still in flight, so it retried at once,
    # and once more later: the three deliveries overlap.
    first, second = await asyncio.gather(
        env.client.post("/v1/activities:batch", json={"items": items}, headers=key),
        env.client.post("/v1/activities:batch", json={"items": items}, headers=key),
    )
    third = await env.client.post("/v1/activities:batch", json=items, headers=key)
    assert {first.status_code, second.status_code, third.status_code} == {200}
    for index in range(len(items)):
        statuses = sorted(r.json()["items"][index]["status"] for r in (first, second, third))
        assert statuses == ["accepted", "duplicate", "duplicate"], statuses
    assert third.json()["duplicate"] == 300
    ids = [i["id"] for i in items]
    assert await _stored(env, ids) == 300
    assert await _outbox_rows(env, ids) == 300


async def test_batch_with_bad_items_keeps_the_good_ones(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team(established_on=date(2023, 1, 1))
    other_team = await env.team()
    member = await env.member(team_id, joined_on=date(2023, 1, 1))
    left = await env.member(team_id, joined_on=date(2023, 1, 1), left_on=date(2024, 6, 1))
    foreign = await env.team(province=OTHER_PROVINCE)
    now = datetime.now(UTC)
    good = [activity(team_id, member) for _ in range(3)]
    repeated = activity(team_id)
    cases: list[tuple[Any, str]] = [
        (activity(team_id, left, occurred_at="2024-07-01T09:00:00+07:00"),
         "member_not_in_team_at_occurred_at"),
        (activity(team_id, member, occurred_at="2022-12-31T09:00:00+07:00"),
         "before_team_established"),
        (activity(other_team, member), "member_not_in_team"),
        (activity(team_id, uuid.uuid4()), "member_unknown"),
        (activity(uuid.uuid4()), "team_unknown"),
        (activity(foreign), "team_outside_scope"),
        (activity(team_id, occurred_at=(now + timedelta(minutes=10)).isoformat()),
         "occurred_in_future"),
        (activity(team_id, occurred_at="2026-01-01T09:00:00"), "naive_timestamp"),
        (activity(team_id, skills=["juggling"]), "unknown_skill"),
        (activity(team_id, outcomes={"likes": 3}), "unknown_outcome"),
        (activity(team_id, outcomes={"app_installs": -1}), "count_out_of_range"),
        (activity(team_id, citizens_reached=10_001), "count_out_of_range"),
        (activity(team_id, citizens_reached=500), "count_out_of_range"),  # one household
        (activity(team_id, citizens_reached="3"), "invalid"),
        (activity(team_id, colour="red"), "unknown_field"),
        ("not an object", "invalid"),
        ({**repeated, "citizens_reached": 9}, "conflict"),
    ]  # fmt: skip
    items = [*good, repeated, *(c for c, _ in cases), repeated]
    reply = await env.client.post("/v1/activities:batch", json={"items": items}, headers=key)
    assert reply.status_code == 200, reply.text
    results = reply.json()["items"]
    assert [r["status"] for r in results[:4]] == ["accepted"] * 4
    reasons = [r.get("reason") for r in results[4 : 4 + len(cases)]]
    assert reasons == [reason for _, reason in cases]
    assert results[-1]["status"] == "duplicate"
    retryable = {r["reason"] for r in results if r.get("retryable")}
    assert retryable == {"team_unknown", "member_unknown"}
    naive = results[4 + 7]
    assert naive["errors"][0]["field"] == "occurred_at"
    assert reply.json()["accepted"] == 4 and reply.json()["rejected"] == len(cases)
    assert await _stored(env, [*(g["id"] for g in good), repeated["id"]]) == 4
    rejected_ids = [c["id"] for c, _ in cases if isinstance(c, dict)]
    assert await _stored(env, [i for i in rejected_ids if i != repeated["id"]]) == 0


async def test_clock_skew_tolerated_and_unknown_team_accepted_once_replicated(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team()
    soon = activity(team_id, occurred_at=(datetime.now(UTC) + timedelta(minutes=2)).isoformat())
    assert (await env.client.post("/v1/activities", json=soon, headers=key)).status_code == 201

    later_team = uuid.uuid4()
    early = activity(later_team)
    reply = await env.client.post("/v1/activities", json=early, headers=key)
    assert reply.status_code == 422
    assert reply.json()["reason"] == "team_unknown" and reply.json()["retryable"] is True
    assert "retry-after" in reply.headers
    await env.team(team_id=later_team)
    retried = await env.client.post("/v1/activities", json=early, headers=key)
    assert retried.status_code == 201


async def test_dissolved_team_rejected(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team(status="dissolved", dissolved_on=date(2024, 1, 1))
    before = activity(team_id, occurred_at="2023-12-31T10:00:00+07:00")
    after = activity(team_id, occurred_at="2024-01-02T10:00:00+07:00")
    assert (await env.client.post("/v1/activities", json=before, headers=key)).status_code == 201
    reply = await env.client.post("/v1/activities", json=after, headers=key)
    assert reply.status_code == 422 and reply.json()["reason"] == "team_dissolved"


async def test_bad_requests_get_precise_codes_and_lose_nothing_else(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team()
    foreign = await env.team(province=OTHER_PROVINCE)
    post = env.client.post
    headers = {**key, "content-type": "application/json"}

    malformed = await post("/v1/activities", content=b'{"id": ', headers=headers)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    assert (await post("/v1/activities:batch", content=b"[{,]", headers=headers)).status_code == 400

    naive = await post(
        "/v1/activities", json=activity(team_id, occurred_at="2026-01-01T08:00:00"), headers=key
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["field"] == "occurred_at"
    assert naive.json()["reason"] == "naive_timestamp"
    unknown = await post("/v1/activities", json=activity(team_id, colour="red"), headers=key)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "colour"
    wrong_type = await post(
        "/v1/activities", json=activity(team_id, citizens_reached="many"), headers=key
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["errors"][0]["field"] == "citizens_reached"
    secret = activity(team_id, household_ref="HH-private", kind="chat")
    echoed = await post("/v1/activities", json=secret, headers=key)
    assert echoed.status_code == 422 and "HH-private" not in echoed.text

    too_big = await post(
        "/v1/activities:batch",
        content=b'{"items": [' + b" " * 2_100_000 + b"]}",
        headers=headers,
    )
    assert too_big.status_code == 413
    too_many = [activity(team_id) for _ in range(1001)]
    many = await post("/v1/activities:batch", json={"items": too_many}, headers=key)
    assert many.status_code == 413

    outside = await post("/v1/activities", json=activity(foreign), headers=key)
    assert outside.status_code == 403 and outside.json()["reason"] == "team_outside_scope"
    assert (await post("/v1/activities", json=activity(team_id))).status_code == 401

    # Nothing of the above was written, and the same partner carries on normally.
    bad_ids = [secret["id"], *(a["id"] for a in too_many)]
    assert await _stored(env, bad_ids) == 0
    good = [activity(team_id) for _ in range(1000)]
    full = await post("/v1/activities:batch", json={"items": good}, headers=key)
    assert full.status_code == 200 and full.json()["accepted"] == 1000
    async with env.runtime.sessions() as session:
        ids = await session.scalar(
            select(func.count())
            .select_from(activity_ids)
            .where(activity_ids.c.id.in_([uuid.UUID(g["id"]) for g in good]))
        )
    assert ids == 1000


async def test_events_are_stored_in_their_months_partition(env: Env) -> None:
    key = await _partner_key(env)
    team_id = await env.team(established_on=None)  # nothing bounds how early its events are
    when = {
        "activities_2024_03": "2024-03-31T23:30:00+07:00",
        "activities_2025_07": "2025-07-02T08:00:00+07:00",
        # Before the months created ahead. Not 2021: the scoring suite's Đồng Tháp table reads
        # province 82's 2021 from the same topics.
        "activities_default": "2019-06-15T08:00:00+07:00",
    }
    items = [activity(team_id, occurred_at=moment) for moment in when.values()]
    reply = await env.client.post("/v1/activities:batch", json={"items": items}, headers=key)
    assert reply.status_code == 200 and reply.json()["accepted"] == 3, reply.text
    async with env.runtime.sessions() as session:
        rows = (
            await session.execute(
                select(activities.c.id, text("activities.tableoid::regclass::text")).where(
                    activities.c.id.in_([uuid.UUID(i["id"]) for i in items])
                )
            )
        ).all()
    partitions = {str(activity_id): partition for activity_id, partition in rows}
    assert partitions == {
        item["id"]: f"activities.{name}" for item, name in zip(items, when, strict=True)
    }
