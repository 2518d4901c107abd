"""Partner keys read the registry within their provinces, learnt from `activities.partner.v1`.

Real path: the activities service creates, rotates and revokes partners and publishes them
through its outbox; the teams service consumes them into `partner_replica` and authenticates
reads with them. Writes stay with the operator; reads without credentials get 401.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from activities import bootstrap as activities_bootstrap
from activities.settings import ActivitiesSettings
from common.contracts.activities import PartnerChanged
from common.envelope import OutboundEvent, kafka_headers
from common.kafka import kafka_client_options
from teams import bootstrap
from teams.adapters import partner_replica, service_tables
from teams.settings import TeamsSettings
from tests.helpers import OPERATOR, eventually, running

DONG_THAP, MY_THO = "82", "28261"
HA_NOI, HOAN_KIEM = "01", "00070"
PHONE = "0912345678"


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Stack:
    teams: httpx.AsyncClient
    activities: httpx.AsyncClient
    runtime: Any  # the teams runtime

    async def team_with_member(self, unit_code: str) -> tuple[dict[str, Any], dict[str, Any]]:
        body = {"code": f"PA-{tag()}", "name": "Tổ CNSCĐ", "unit_code": unit_code}
        team = await self.teams.post("/v1/teams", json=body, headers=OPERATOR)
        assert team.status_code == 201, team.text
        member = await self.teams.post(
            f"/v1/teams/{team.json()['id']}/members",
            json={"full_name": "Trần Thị B", "phone": PHONE, "joined_on": "2022-04-01"},
            headers=OPERATOR,
        )
        assert member.status_code == 201, member.text
        return team.json(), member.json()

    async def partner(self, provinces: list[str]) -> dict[str, Any]:
        reply = await self.activities.post(
            "/v1/partners", json={"name": "e-Đồng Tháp", "provinces": provinces}, headers=OPERATOR
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    async def replica(self, partner_id: str) -> Any:
        async with self.runtime.sessions() as session:
            return (
                await session.execute(
                    select(partner_replica).where(partner_replica.c.id == uuid.UUID(partner_id))
                )
            ).first()

    async def replicated(self, partner_id: str, *, lookup: str, revoked: bool = False) -> None:
        async def check() -> bool:
            row = await self.replica(partner_id)
            return row is not None and row.key_lookup == lookup and row.revoked is revoked

        await eventually(check, what=f"partner {partner_id} replicated")


@pytest_asyncio.fixture(scope="module")
async def stack(apply_env: None) -> AsyncIterator[Stack]:
    teams_rt = bootstrap.build_runtime(TeamsSettings())
    activities_rt = activities_bootstrap.build_runtime(ActivitiesSettings())
    async with (
        running(teams_rt, bootstrap.build_app(teams_rt)) as teams_client,
        running(activities_rt, activities_bootstrap.build_app(activities_rt)) as activities_client,
    ):
        imported = await teams_client.post(
            "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
        )
        assert imported.status_code == 200, imported.text
        yield Stack(teams_client, activities_client, teams_rt)


def lookup_of(key: str) -> str:
    return key.split("_")[1]


async def all_team_ids(client: httpx.AsyncClient, headers: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        url = "/v1/teams?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = await client.get(url, headers=headers)
        assert page.status_code == 200, page.text
        ids |= {t["id"] for t in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


async def test_partner_reads_only_within_its_provinces(stack: Stack) -> None:
    client = stack.teams
    mine, my_member = await stack.team_with_member(MY_THO)
    theirs, their_member = await stack.team_with_member(HOAN_KIEM)
    partner = await stack.partner([DONG_THAP])
    await stack.replicated(partner["id"], lookup=lookup_of(partner["api_key"]))
    key = bearer(partner["api_key"])

    assert (await client.get(f"/v1/teams/{mine['id']}", headers=key)).status_code == 200
    # Outside the key's provinces: "not found" for single reads, by id or code, ...
    for path in (
        f"/v1/teams/{theirs['id']}",
        f"/v1/teams/{theirs['code']}",
        f"/v1/teams/{theirs['id']}/members",
        f"/v1/members/{their_member['id']}",
        f"/v1/admin-units/{HA_NOI}",
        f"/v1/admin-units/{HOAN_KIEM}",
        f"/v1/admin-units/{HOAN_KIEM}/coverage",
        f"/v1/teams?unit={HA_NOI}",
    ):
        reply = await client.get(path, headers=key)
        assert reply.status_code == 404, path
        assert theirs["name"] not in reply.text and PHONE not in reply.text
    # ... the operator still sees everything, ...
    assert (await client.get(f"/v1/teams/{theirs['id']}", headers=OPERATOR)).status_code == 200
    # ... and lists leave it out.
    visible = await all_team_ids(client, key)
    assert mine["id"] in visible and theirs["id"] not in visible
    assert theirs["id"] in await all_team_ids(client, OPERATOR)
    in_province = await client.get(f"/v1/teams?unit={DONG_THAP}&limit=500", headers=key)
    assert in_province.status_code == 200
    provinces = await client.get("/v1/admin-units?level=province&limit=500", headers=key)
    assert [u["code"] for u in provinces.json()["items"]] == [DONG_THAP]
    ha_noi_communes = await client.get(f"/v1/admin-units?parent={HA_NOI}", headers=key)
    assert ha_noi_communes.json()["items"] == []
    coverage = await client.get(f"/v1/admin-units/{MY_THO}/coverage", headers=key)
    assert coverage.status_code == 200 and coverage.json()["teams"] >= 1

    # Phone numbers are masked for partners, in full for the operator.
    one = (await client.get(f"/v1/members/{my_member['id']}", headers=key)).json()
    assert one["phone"] == "091*****78"
    listed = (await client.get(f"/v1/teams/{mine['id']}/members", headers=key)).json()["items"]
    assert [m["phone"] for m in listed] == ["091*****78"]
    full = (await client.get(f"/v1/members/{my_member['id']}", headers=OPERATOR)).json()
    assert full["phone"] == PHONE

    # Writes still need the operator token.
    write = await client.post(
        "/v1/teams", json={"code": f"PA-{tag()}", "name": "x", "unit_code": MY_THO}, headers=key
    )
    assert write.status_code == 403


async def test_reads_without_valid_credentials_get_401(stack: Stack) -> None:
    mine, member = await stack.team_with_member(MY_THO)
    forged = "cdtp_0123456789ab_" + "x" * 43
    for path in (
        f"/v1/teams/{mine['id']}",
        "/v1/teams",
        f"/v1/teams/{mine['id']}/members",
        f"/v1/members/{member['id']}",
        f"/v1/admin-units/{DONG_THAP}",
        "/v1/admin-units",
        f"/v1/admin-units/{DONG_THAP}/coverage",
        "/v1/admin-units:crosswalk",
    ):
        for headers in ({}, bearer("not-a-key"), bearer(forged), {"Authorization": "Basic x"}):
            reply = await stack.teams.get(path, headers=headers)
            assert reply.status_code == 401, (path, headers)
            assert reply.headers["content-type"] == "application/problem+json"
            assert reply.headers["www-authenticate"] == "Bearer"
            assert PHONE not in reply.text and forged not in reply.text


async def test_rotated_and_revoked_keys_are_refused_once_consumed(stack: Stack) -> None:
    client = stack.teams
    mine, _ = await stack.team_with_member(MY_THO)
    partner = await stack.partner([DONG_THAP])
    old = partner["api_key"]
    await stack.replicated(partner["id"], lookup=lookup_of(old))
    assert (await client.get(f"/v1/teams/{mine['id']}", headers=bearer(old))).status_code == 200

    rotated = await stack.activities.post(
        f"/v1/partners/{partner['id']}:rotate-key", headers=OPERATOR
    )
    assert rotated.status_code == 200
    new = rotated.json()["api_key"]
    await stack.replicated(partner["id"], lookup=lookup_of(new))
    assert (await client.get(f"/v1/teams/{mine['id']}", headers=bearer(old))).status_code == 401
    assert (await client.get(f"/v1/teams/{mine['id']}", headers=bearer(new))).status_code == 200
    # Same lookup, wrong secret: refused.
    tampered = new[:-1] + ("A" if new[-1] != "A" else "B")
    assert (
        await client.get(f"/v1/teams/{mine['id']}", headers=bearer(tampered))
    ).status_code == 401

    revoked = await stack.activities.delete(f"/v1/partners/{partner['id']}", headers=OPERATOR)
    assert revoked.status_code == 204
    await stack.replicated(partner["id"], lookup=lookup_of(new), revoked=True)
    assert (await client.get(f"/v1/teams/{mine['id']}", headers=bearer(new))).status_code == 401
    assert (await client.get("/v1/admin-units", headers=bearer(new))).status_code == 401

    # A stale event (replayed, or older than what the replica holds) never moves it back.
    stale = PartnerChanged(
        id=uuid.UUID(partner["id"]), name="stale", provinces=[DONG_THAP],
        key_lookup=lookup_of(old), key_sha256=hashlib.sha256(old.encode()).hexdigest(),
        revoked=False, version=1, changed_at=datetime.now(UTC),
    )  # fmt: skip
    event = OutboundEvent.of(stale, source="/cdt/activities", subject=partner["id"])
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.runtime.settings.kafka_bootstrap_servers, **kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            stale.TOPIC.name,
            key=event.key.encode(),
            value=json.dumps(event.data).encode(),
            headers=kafka_headers(event.ce_headers()),
        )
    finally:
        await producer.stop()
    processed = service_tables.processed_events

    async def consumed() -> bool:
        async with stack.runtime.sessions() as session:
            found = await session.scalar(
                select(processed.c.event_id).where(processed.c.event_id == event.id)
            )
        return found is not None

    await eventually(consumed, what="the stale partner event consumed")
    row = await stack.replica(partner["id"])
    assert row.revoked is True and row.key_lookup == lookup_of(new) and row.name != "stale"
    assert (await client.get(f"/v1/teams/{mine['id']}", headers=bearer(old))).status_code == 401
