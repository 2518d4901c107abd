"""The audit trail (issue #24 item 4): every state-changing request in every service leaves one
entry, in the same transaction as its change, naming who acted; a refused write leaves none;
the trail is read-only, holds no secret, and exports as CSV."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from common.db import asyncpg_dsn
from tests.helpers import OPERATOR
from tests.security.conftest import (
    DONG_THAP,
    MY_THO,
    SERVICES,
    Stack,
    World,
    activity_body,
    post_until_known,
    tag,
)


def request_id() -> str:
    return f"audit-test-{uuid.uuid4().hex}"


async def entries(http: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    """Every entry matching `filters`, following the cursor."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "limit": "200", **({"cursor": cursor} if cursor else {})}
        reply = await http.get("/v1/audit", params=params, headers=OPERATOR)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        out += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


async def entry_of(http: httpx.AsyncClient, rid: str) -> list[dict[str, Any]]:
    return [e for e in await entries(http) if e["request_id"] == rid]


async def test_a_write_in_every_service_names_its_actor_route_and_request(
    stack: Stack, world: World
) -> None:
    writes = {
        "teams": (
            "POST",
            "/v1/teams",
            {"code": f"AUD-{tag()}", "name": "Tổ kiểm toán", "unit_code": MY_THO},
            "POST /v1/teams",
        ),
        "activities": (
            "POST",
            "/v1/partners",
            {"name": f"app audit {tag()}", "provinces": [DONG_THAP]},
            "POST /v1/partners",
        ),
        "scoring": (
            "POST",
            "/v1/evaluation-rounds",
            {
                "level": "province",
                "unit_code": DONG_THAP,
                "period": "2031-Q1",
                "due_on": "2031-04-15",
            },
            "POST /v1/evaluation-rounds",
        ),
        "notifications": (
            "PUT",
            "/v1/rules",
            {
                "scope": DONG_THAP,
                "alert_type": "target_reached",
                "params": {"criteria": ["-"], "indicator_targets": {"ecommerce_products": 10**9}},
            },
            "PUT /v1/rules",
        ),
    }
    assert set(writes) == set(SERVICES)
    for service, (method, path, body, action) in writes.items():
        rid = request_id()
        async with stack.http(service) as http:
            reply = await http.request(
                method, path, json=body, headers={**OPERATOR, "X-Request-ID": rid}
            )
            assert reply.status_code in (200, 201), (service, reply.text)
            assert reply.headers["x-request-id"] == rid
            [entry] = await entry_of(http, rid)
        assert entry["action"] == action
        assert entry["resource"] == path
        assert (entry["actor_subject"], entry["actor_role"]) == ("operator", "operator")
        assert entry["outcome"] == "succeeded"


async def test_a_partners_ingest_is_audited_as_that_partner(stack: Stack, world: World) -> None:
    rid = request_id()
    async with stack.http("activities") as http:
        body = activity_body(world.team_dt, world.member_dt)
        world.household_refs.append(body["household_ref"])
        reply = await post_until_known(http, body, {**world.key_dt, "X-Request-ID": rid})
        assert reply.status_code == 201, reply.text
        [entry] = await entry_of(http, rid)
        mine = await entries(http, actor=f"partner:{world.partner_dt['id']}")
    assert entry["action"] == "POST /v1/activities"
    assert (entry["actor_subject"], entry["actor_role"]) == (
        f"partner:{world.partner_dt['id']}",
        "partner",
    )
    assert rid in {e["request_id"] for e in mine}
    assert {e["actor_role"] for e in mine} == {"partner"}


async def test_a_refused_or_empty_write_leaves_no_entry(stack: Stack, world: World) -> None:
    async with stack.http("teams") as teams, stack.http("activities") as activities:
        invalid, forbidden, unauthenticated, duplicate = (request_id() for _ in range(4))
        reply = await teams.post(
            "/v1/teams",
            json={"code": "", "name": "x", "unit_code": MY_THO},
            headers={**OPERATOR, "X-Request-ID": invalid},
        )
        assert reply.status_code == 422
        reply = await activities.post(
            "/v1/partners",
            json={"name": "not mine to make", "provinces": [DONG_THAP]},
            headers={**world.key_dt, "X-Request-ID": forbidden},
        )
        assert reply.status_code == 403
        reply = await teams.post(
            "/v1/teams",
            json={"code": f"AUD-{tag()}", "name": "Tổ", "unit_code": MY_THO},
            headers={"X-Request-ID": unauthenticated},
        )
        assert reply.status_code == 401
        # An activity posted again: a duplicate changes nothing, so nothing is recorded.
        body = activity_body(world.team_dt, world.member_dt)
        world.household_refs.append(body["household_ref"])
        first = await post_until_known(activities, body, world.key_dt)
        assert first.status_code == 201, first.text
        again = await activities.post(
            "/v1/activities", json=body, headers={**world.key_dt, "X-Request-ID": duplicate}
        )
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate"
        teams_ids = {e["request_id"] for e in await entries(teams)}
        activities_ids = {e["request_id"] for e in await entries(activities)}
    assert not {invalid, unauthenticated} & teams_ids
    assert forbidden not in activities_ids
    assert duplicate not in activities_ids


async def test_the_trail_is_append_only(stack: Stack, world: World, service_env) -> None:  # type: ignore[no-untyped-def]
    connection = await asyncpg.connect(asyncpg_dsn(service_env["DATABASE_URL"]))
    try:
        for schema in SERVICES:
            for statement in (
                f"UPDATE {schema}.audit_log SET outcome = 'rewritten'",
                f"DELETE FROM {schema}.audit_log",
                f"TRUNCATE {schema}.audit_log",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await connection.execute(statement)
    finally:
        await connection.close()
    async with stack.http("teams") as http:
        for method in ("PUT", "PATCH", "DELETE"):
            reply = await http.request(method, "/v1/audit", headers=OPERATOR)
            assert reply.status_code == 405, method


async def test_the_trail_reads_in_pages_filters_and_exports_without_secrets(
    stack: Stack, world: World
) -> None:
    async with stack.http("teams") as http:
        first = await http.get("/v1/audit", params={"limit": "1"}, headers=OPERATOR)
        assert first.status_code == 200, first.text
        [newest] = first.json()["items"]
        cursor = first.json()["next_cursor"]
        assert cursor is not None
        second = await http.get(
            "/v1/audit", params={"limit": "1", "cursor": cursor}, headers=OPERATOR
        )
        [older] = second.json()["items"]
        assert older["seq"] < newest["seq"]
        under_teams = await entries(http, resource="/v1/teams/")
        assert under_teams and all(e["resource"].startswith("/v1/teams/") for e in under_teams)
        bad_range = await http.get(
            "/v1/audit",
            params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=OPERATOR,
        )
        assert bad_range.status_code == 200 and bad_range.json()["items"] == []
        assert (await http.get("/v1/audit", headers=world.key_dt)).status_code == 403
        assert (await http.get("/v1/audit")).status_code == 401
        for path in ("/v1/audit", "/v1/audit:export"):  # refused whole, not cut mid-stream
            nul = await http.get(path, params={"resource": "/v1/\x00"}, headers=OPERATOR)
            assert nul.status_code == 422, (path, nul.text)
            assert "resource" in str(nul.json()["errors"]), nul.text
    secrets = world.secrets()
    for service in SERVICES:
        async with stack.http(service) as http:
            listed = (await http.get("/v1/audit", params={"limit": "500"}, headers=OPERATOR)).text
            exported = await http.get("/v1/audit:export", headers=OPERATOR)
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        text = exported.content.decode("utf-8")
        assert text.startswith("\ufeff")
        rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
        assert rows, service
        assert {"seq", "at", "actor_subject", "action", "resource"} <= set(rows[0])
        assert [int(r["seq"]) for r in rows] == sorted((int(r["seq"]) for r in rows), reverse=True)
        for secret in secrets:
            assert secret not in listed and secret not in text, service
