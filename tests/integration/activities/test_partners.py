"""Partner apps and keys: shown once, stored hashed, rotated and revoked at once, rate-limited."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import func, select

from activities.adapters import activities, partners
from tests.helpers import OPERATOR
from tests.integration.activities.support import Env, activity, bearer


async def test_key_shown_once_and_stored_hashed(env: Env) -> None:
    created = await env.partner(provinces=["82", "86", "82"], rate_limit_per_second=50)
    assert created["provinces"] == ["82", "86"]
    assert created["rate_limit_per_second"] == 50
    key = created["api_key"]
    assert key.startswith("cdtp_") and len(key) > 50
    async with env.runtime.sessions() as session:
        row = (
            await session.execute(select(partners).where(partners.c.id == uuid.UUID(created["id"])))
        ).one()
    stored = " ".join(str(v) for v in row)
    secret = key.split("_", 2)[2]  # the secret itself may contain "_" (base64url)
    assert key not in stored and secret not in stored
    assert len(row.key_hash) == 32


async def test_partner_admin_needs_operator(env: Env) -> None:
    created = await env.partner()
    body = {"name": "x", "provinces": ["82"]}
    assert (await env.client.post("/v1/partners", json=body)).status_code == 401
    as_partner = await env.client.post(
        "/v1/partners", json=body, headers=bearer(created["api_key"])
    )
    assert as_partner.status_code == 403
    bad = await env.client.post(
        "/v1/partners", json={"name": "x", "provinces": [], "extra": 1}, headers=OPERATOR
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"body.provinces", "body.extra"}


async def test_a_name_that_cannot_be_stored_is_refused_naming_the_field(env: Env) -> None:
    refused = await env.client.post(
        "/v1/partners", json={"name": "VNPT\u0000", "provinces": ["82"]}, headers=OPERATOR
    )
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.name"]
    assert "U+0000" in refused.json()["errors"][0]["message"]


async def test_key_rotated_mid_stream_stops_working_at_once(env: Env) -> None:
    team_id = await env.team()
    created = await env.partner(rate_limit_per_second=10_000)
    old = bearer(created["api_key"])
    statuses: list[tuple[float, int, str]] = []
    rotated_at: list[float] = []

    async def stream() -> None:
        while not rotated_at or len([s for s in statuses if s[0] > rotated_at[0]]) < 20:
            started = time.monotonic()
            body = activity(team_id)
            reply = await env.client.post("/v1/activities", json=body, headers=old)
            statuses.append((started, reply.status_code, body["id"]))

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(0.3)
    rotate = await env.client.post(f"/v1/partners/{created['id']}:rotate-key", headers=OPERATOR)
    rotated_at.append(time.monotonic())
    await streaming
    assert rotate.status_code == 200
    new_key = rotate.json()["api_key"]
    assert new_key != created["api_key"]

    after = [code for started, code, _ in statuses if started > rotated_at[0]]
    before_ok = [ident for started, code, ident in statuses if code == 201]
    assert after and set(after) == {401}
    assert before_ok  # the stream was accepted until the rotation
    assert {code for _, code, _ in statuses} <= {201, 401}
    # Nothing accepted was lost: every 201 is stored.
    async with env.runtime.sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(activities)
            .where(activities.c.id.in_([uuid.UUID(i) for i in before_ok]))
        )
    assert stored == len(before_ok)
    fresh = await env.client.post("/v1/activities", json=activity(team_id), headers=bearer(new_key))
    assert fresh.status_code == 201


async def test_revoked_malformed_and_missing_keys_are_401(env: Env) -> None:
    team_id = await env.team()
    created = await env.partner()
    key = created["api_key"]
    assert (
        await env.client.delete(f"/v1/partners/{created['id']}", headers=OPERATOR)
    ).status_code == 204
    # Revoking again is harmless; rotating a revoked partner is not possible.
    assert (
        await env.client.delete(f"/v1/partners/{created['id']}", headers=OPERATOR)
    ).status_code == 204
    rotate = await env.client.post(f"/v1/partners/{created['id']}:rotate-key", headers=OPERATOR)
    assert rotate.status_code == 404
    for headers in (
        bearer(key),
        bearer("cdtp_zzzz_nothex"),
        bearer(key[:-1] + ("A" if key[-1] != "A" else "B")),
        {"Authorization": "Basic abc"},
        {},
    ):
        reply = await env.client.post("/v1/activities", json=activity(team_id), headers=headers)
        assert reply.status_code == 401, headers
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.headers["www-authenticate"] == "Bearer"
        assert key not in reply.text
    # The key is judged before the body: a bad key learns nothing about its payload.
    for path, body in (("/v1/activities", b'{"id": '), ("/v1/activities:batch", b"[{,]")):
        headers = {**bearer(key), "content-type": "application/json"}
        assert (await env.client.post(path, content=body, headers=headers)).status_code == 401
        operator = {**OPERATOR, "content-type": "application/json"}
        assert (await env.client.post(path, content=body, headers=operator)).status_code == 403


async def test_rate_limit_429_with_retry_after_and_other_partners_unaffected(env: Env) -> None:
    team_id = await env.team()
    slow = await env.partner(rate_limit_per_second=2)
    other = await env.partner(rate_limit_per_second=1000)
    codes = []
    for _ in range(4):
        reply = await env.client.post(
            "/v1/activities", json=activity(team_id), headers=bearer(slow["api_key"])
        )
        codes.append(reply.status_code)
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
    assert codes[:2] == [201, 201] and 429 in codes[2:]
    ok = await env.client.post(
        "/v1/activities", json=activity(team_id), headers=bearer(other["api_key"])
    )
    assert ok.status_code == 201
