"""Issue #24, identity: the teams service as the local OpenID Connect issuer, every service
verifying its tokens locally.

Real path: teams serves its JWKS, discovery document and disabled subjects over real HTTP
(uvicorn on a free port); scoring, configured with `CDT_OIDC_ISSUER` pointing at it, finds the
keys through discovery and verifies tokens on an operator-only write (`PUT /v1/targets`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from activities import bootstrap as activities_bootstrap
from activities.settings import ActivitiesSettings
from common.runtime import ServiceRuntime
from scoring import bootstrap as scoring_bootstrap
from scoring.settings import ScoringSettings
from teams import bootstrap as teams_bootstrap
from teams.adapters import signing_keys
from teams.settings import TeamsSettings
from tests.helpers import OPERATOR, eventually, running

PASSWORD = "correct horse battery staple"
TARGET = {
    "subject_type": "province",
    "subject_id": "82",
    "period": "2026",
    "indicator": "app_installs",
    "value": 1333,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def identity_env(apply_env: None) -> Iterator[str]:
    issuer = f"http://127.0.0.1:{free_port()}"
    env = {
        "CDT_OIDC_ISSUER": issuer,
        "TEAMS_ISSUER_URL": issuer,
        "CDT_OIDC_DISABLED_URL": f"{issuer}/v1/auth/disabled-subjects",
        "CDT_OIDC_DISABLED_REFRESH_SECONDS": "1",
        "CDT_OIDC_JWKS_MIN_REFRESH_SECONDS": "0.2",
        "TEAMS_LOGIN_MAX_FAILURES": "3",
        "TEAMS_LOGIN_MAX_FAILURES_PER_ADDRESS": "6",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield issuer
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class Stack:
    teams: httpx.AsyncClient
    scoring: httpx.AsyncClient
    activities: httpx.AsyncClient
    teams_runtime: ServiceRuntime
    app: Any

    async def account(self, role: str, unit: str | None = None) -> tuple[str, str, str]:
        """(id, username, access token) of a new account that redeemed its invitation."""
        username = f"u{uuid.uuid4().hex[:10]}"
        created = await self.teams.post(
            "/v1/accounts",
            json={
                "username": username,
                "display_name": "Nguyễn Thị Cán Bộ",
                "roles": [{"role": role, "unit": unit}],
            },
            headers=OPERATOR,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        redeemed = await self.teams.post(
            "/v1/invitations:redeem", json={"code": body["invitation_code"], "password": PASSWORD}
        )
        assert redeemed.status_code == 200, redeemed.text
        return body["id"], username, await self.login(username)

    async def login(self, username: str, password: str = PASSWORD) -> str:
        reply = await self.teams.post(
            "/v1/auth/token", json={"username": username, "password": password}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])

    async def private_key(self, kid: str) -> str:
        async with self.teams_runtime.sessions() as session:
            row = (
                await session.execute(
                    select(signing_keys.c.private_key_pem).where(signing_keys.c.kid == kid)
                )
            ).first()
        assert row is not None
        return str(row.private_key_pem)


@pytest_asyncio.fixture(scope="module")
async def stack(identity_env: str) -> AsyncIterator[Stack]:
    teams_runtime = teams_bootstrap.build_runtime(TeamsSettings())
    teams_app = teams_bootstrap.build_app(teams_runtime)
    scoring_runtime = scoring_bootstrap.build_runtime(ScoringSettings())
    scoring_app = scoring_bootstrap.build_app(scoring_runtime)
    activities_runtime = activities_bootstrap.build_runtime(ActivitiesSettings())
    activities_app = activities_bootstrap.build_app(activities_runtime)
    port = int(identity_env.rsplit(":", 1)[1])
    async with running(teams_runtime, teams_app, workers=False) as teams:
        server = uvicorn.Server(
            uvicorn.Config(
                teams_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            async with (
                running(scoring_runtime, scoring_app, workers=False) as scoring,
                running(activities_runtime, activities_app, workers=False) as activities,
            ):
                yield Stack(
                    teams=teams,
                    scoring=scoring,
                    activities=activities,
                    teams_runtime=teams_runtime,
                    app=teams_app,
                )
        finally:
            server.should_exit = True
            await serving


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": "cdt",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "roles": [{"role": "ministry_admin", "unit": None}],
        **overrides,
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


async def test_an_administrator_token_writes_at_another_service(stack: Stack) -> None:
    _, username, token = await stack.account("ministry_admin")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["preferred_username"] == username
    assert payload["roles"] == [{"role": "ministry_admin", "unit": None}]
    assert payload["exp"] - payload["iat"] == 900

    reply = await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    # ... and at the issuer itself (verified from its own tables)
    other = await stack.teams.post(
        "/v1/accounts",
        json={"username": f"x{uuid.uuid4().hex[:8]}", "display_name": "B", "roles": [
            {"role": "auditor"}]},
        headers=bearer(token),
    )  # fmt: skip
    assert other.status_code == 201, other.text
    # the break-glass operator token keeps working; other credentials stay 403
    assert (
        await stack.scoring.put("/v1/targets", json=TARGET, headers=OPERATOR)
    ).status_code == 200
    odd = await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer("not-a-jwt"))
    assert odd.status_code == 403
    # registry reads too
    assert (await stack.teams.get("/v1/teams", headers=bearer(token))).status_code == 200
    # activities: its operator's writes and reads
    partner = await stack.activities.post(
        "/v1/partners", json={"name": "e-Đồng Tháp", "provinces": ["82"]}, headers=bearer(token)
    )
    assert partner.status_code == 201, partner.text
    listed = await stack.activities.get("/v1/activities?limit=1", headers=bearer(token))
    assert listed.status_code == 200, listed.text


async def test_a_province_officer_acts_in_their_province_only(stack: Stack) -> None:
    """The role matrix, through real tokens (`tests/security/test_role_matrix.py` walks it all)."""
    _, _, token = await stack.account("province_officer", "82")
    reply = await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    other = {**TARGET, "subject_id": "01"}
    reply = await stack.scoring.put("/v1/targets", json=other, headers=bearer(token))
    assert reply.status_code == 403, reply.text
    reply = await stack.teams.post(
        "/v1/accounts",
        json={"username": "someone", "display_name": "B", "roles": [{"role": "auditor"}]},
        headers=bearer(token),
    )
    assert reply.status_code == 403  # accounts are the ministry's
    assert (await stack.teams.get("/v1/teams", headers=bearer(token))).status_code == 200
    assert (
        await stack.activities.get("/v1/activities?limit=1", headers=bearer(token))
    ).status_code == 200
    scoped = await stack.teams.post(
        "/v1/accounts",
        json={"username": "noscope", "display_name": "B", "roles": [{"role": "team_leader"}]},
        headers=OPERATOR,
    )
    assert scoped.status_code == 422  # a scoped role needs its unit


async def test_forged_expired_foreign_and_unsigned_tokens_are_401(stack: Stack) -> None:
    issuer = os.environ["CDT_OIDC_ISSUER"]
    _, _, token = await stack.account("ministry_admin")
    kid = jwt.get_unverified_header(token)["kid"]
    real_key = await stack.private_key(kid)
    public_jwk = next(
        k
        for k in (await stack.teams.get("/.well-known/jwks.json")).json()["keys"]
        if k["kid"] == kid
    )
    stranger = ec.generate_private_key(ec.SECP256R1())
    mac_secret = json.dumps(public_jwk).encode()
    hs_input = unsigned({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims(issuer))
    hs_signature = b64(hmac.new(mac_secret, hs_input.encode(), hashlib.sha256).digest())
    bad = {
        "another key": jwt.encode(claims(issuer), stranger, "ES256", headers={"kid": kid}),
        "expired": jwt.encode(
            claims(issuer, exp=int(time.time()) - 120, iat=int(time.time()) - 1000),
            real_key, "ES256", headers={"kid": kid},
        ),
        "not yet valid": jwt.encode(
            claims(issuer, nbf=int(time.time()) + 600), real_key, "ES256", headers={"kid": kid}
        ),
        "another audience": jwt.encode(
            claims(issuer, aud="other-system"), real_key, "ES256", headers={"kid": kid}
        ),
        "another issuer": jwt.encode(
            claims("https://evil.example"), real_key, "ES256", headers={"kid": kid}
        ),
        "alg none": unsigned({"alg": "none", "kid": kid}, claims(issuer)) + ".",
        "HS256 with the public key": f"{hs_input}.{hs_signature}",
        "unknown kid": jwt.encode(claims(issuer), real_key, "ES256", headers={"kid": "nope"}),
        "tampered": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
    }  # fmt: skip
    for what, forged in bad.items():
        for client in (stack.scoring, stack.teams):
            method = client.put if client is stack.scoring else client.post
            path = "/v1/targets" if client is stack.scoring else "/v1/auth/keys:rotate"
            kwargs: dict[str, Any] = {"json": TARGET} if client is stack.scoring else {}
            reply = await method(path, headers=bearer(forged), **kwargs)
            assert reply.status_code == 401, (what, reply.status_code, reply.text)
            assert reply.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert reply.headers["content-type"] == "application/problem+json"
            assert forged not in reply.text
        listed = await stack.activities.get("/v1/activities?limit=1", headers=bearer(forged))
        assert listed.status_code == 401, (what, listed.text)


async def test_rotation_keeps_earlier_tokens_valid_until_they_expire(stack: Stack) -> None:
    _, username, before = await stack.account("ministry_admin")
    old_kid = jwt.get_unverified_header(before)["kid"]
    assert (await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(before))).is_success

    rotated = await stack.teams.post("/v1/auth/keys:rotate", headers=bearer(before))
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid
    after = await stack.login(username)
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    kids = {k["kid"] for k in (await stack.teams.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= kids

    await asyncio.sleep(0.3)  # scoring may refetch the JWKS for the new kid
    for token in (before, after):
        reply = await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))
        assert reply.status_code == 200, reply.text
        reply = await stack.teams.get(f"/v1/accounts/{uuid.uuid4()}", headers=bearer(token))
        assert reply.status_code == 404, reply.text

    # once the tokens it signed have all expired (lifetime + leeway), the old key is unpublished
    async with stack.teams_runtime.sessions() as session:
        await session.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == old_kid)
            .values(retired_at=datetime.now(UTC) - timedelta(seconds=931))
        )
        await session.commit()
    kids = {k["kid"] for k in (await stack.teams.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid not in kids and new_kid in kids


async def test_an_invitation_is_redeemed_once_with_an_acceptable_password(stack: Stack) -> None:
    created = await stack.teams.post(
        "/v1/accounts",
        json={"username": f"r{uuid.uuid4().hex[:8]}", "display_name": "C", "roles": [
            {"role": "commune_officer", "unit": "28261"}]},
        headers=OPERATOR,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    code = created.json()["invitation_code"]
    weak = await stack.teams.post("/v1/invitations:redeem", json={"code": code, "password": "x"})
    assert weak.status_code == 422  # and the invitation is still unused
    first = await stack.teams.post(
        "/v1/invitations:redeem", json={"code": code, "password": PASSWORD}
    )
    assert first.status_code == 200, first.text
    assert first.json()["has_password"] is True
    again = await stack.teams.post(
        "/v1/invitations:redeem", json={"code": code, "password": PASSWORD + "!"}
    )
    assert again.status_code == 404
    assert code not in again.text
    unknown = await stack.teams.post(
        "/v1/invitations:redeem", json={"code": "cdti_" + "A" * 43, "password": PASSWORD}
    )
    assert unknown.status_code == 404


async def test_failed_logins_are_limited_per_account_and_per_address(stack: Stack) -> None:
    _, username, _ = await stack.account("auditor")
    for _ in range(3):
        wrong = await stack.teams.post(
            "/v1/auth/token", json={"username": username, "password": "wrong password!"}
        )
        assert wrong.status_code == 401
        assert wrong.headers.get("www-authenticate") is None
    limited = await stack.teams.post(
        "/v1/auth/token",
        json={"username": username, "password": PASSWORD},
        headers={"Accept-Language": "en"},
    )
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) > 0
    assert limited.json()["title"] == "Too Many Requests"

    # parallel guesses cannot slip past the limit while the first are being checked
    _, other, _ = await stack.account("auditor")
    transport = httpx.ASGITransport(app=stack.app, client=("198.51.100.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as guesser:
        replies = await asyncio.gather(
            *(
                guesser.post("/v1/auth/token", json={"username": other, "password": f"guess {i}!"})
                for i in range(8)
            )
        )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [401] * 3 + [429] * 5, statuses

    # per address: another client address trying many names
    transport = httpx.ASGITransport(app=stack.app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as sprayer:
        codes = [
            (
                await sprayer.post(
                    "/v1/auth/token",
                    json={"username": f"n{i}{uuid.uuid4().hex[:6]}", "password": "guess guess"},
                )
            ).status_code
            for i in range(7)
        ]
    assert codes == [401] * 6 + [429]


async def test_a_disabled_accounts_tokens_stop_working_everywhere(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account_id, username, token = await stack.account("ministry_admin")
    assert (await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))).is_success
    disabled = await stack.teams.post(f"/v1/accounts/{account_id}:disable", headers=OPERATOR)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    started = time.monotonic()

    async def refused() -> bool:
        at_scoring = await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))
        at_teams = await stack.teams.get(f"/v1/accounts/{account_id}", headers=bearer(token))
        return at_scoring.status_code == 401 and at_teams.status_code == 401

    await eventually(refused, timeout=5, what="the disabled account's token refused")
    assert time.monotonic() - started < 3  # the window is CDT_OIDC_DISABLED_REFRESH_SECONDS (1)
    login = await stack.teams.post(
        "/v1/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert login.status_code == 401
    # nothing secret was logged on the way (invitation, password, tokens, refusals)
    assert caplog.records
    assert PASSWORD not in caplog.text and token not in caplog.text
    assert "cdti_" not in caplog.text and "eyJ" not in caplog.text


async def test_discovery_and_jwks_are_published(stack: Stack) -> None:
    issuer = os.environ["CDT_OIDC_ISSUER"]
    async with httpx.AsyncClient() as client:  # over real HTTP, as the other services fetch it
        discovery = (await client.get(f"{issuer}/.well-known/openid-configuration")).json()
        assert discovery["issuer"] == issuer
        jwks = (await client.get(discovery["jwks_uri"])).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kty"] == "EC" and key["alg"] == "ES256" and key["use"] == "sig"
        assert "d" not in key  # never the private part


async def test_make_runs_first_administrator_command(
    stack: Stack, subprocess_env: dict[str, str]
) -> None:
    username = f"admin{uuid.uuid4().hex[:6]}"
    env = {
        **subprocess_env,
        **{k: os.environ[k] for k in ("CDT_OIDC_ISSUER", "TEAMS_ISSUER_URL")},
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teams", "create-admin", "--username", username, "--name", "Quản trị",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    printed = out.decode()
    assert "/v1/invitations:redeem" in printed and "/v1/auth/token" in printed
    code = next(w for w in printed.split() if w.startswith("cdti_"))
    redeemed = await stack.teams.post(
        "/v1/invitations:redeem", json={"code": code, "password": PASSWORD}
    )
    assert redeemed.status_code == 200, redeemed.text
    token = await stack.login(username)
    assert (await stack.scoring.put("/v1/targets", json=TARGET, headers=bearer(token))).is_success


async def test_people_are_named_in_the_audit_trail_which_auditors_read(stack: Stack) -> None:
    _, _, admin = await stack.account("ministry_admin")
    _, _, auditor = await stack.account("auditor")
    _, _, officer = await stack.account("province_officer", "82")
    subject = jwt.decode(admin, options={"verify_signature": False})["sub"]
    written, refused = f"w-{uuid.uuid4().hex}", f"r-{uuid.uuid4().hex}"
    reply = await stack.scoring.put(
        "/v1/targets", json=TARGET, headers={**bearer(admin), "X-Request-ID": written}
    )
    assert reply.status_code == 200, reply.text
    reply = await stack.scoring.put(
        "/v1/targets", json=TARGET, headers={**bearer(auditor), "X-Request-ID": refused}
    )
    assert reply.status_code == 403  # an auditor writes nothing

    trail = await stack.scoring.get("/v1/audit", params={"limit": 500}, headers=bearer(auditor))
    assert trail.status_code == 200, trail.text
    by_request = {entry["request_id"]: entry for entry in trail.json()["items"]}
    assert refused not in by_request
    entry = by_request[written]
    assert (entry["actor_subject"], entry["actor_role"]) == (subject, "ministry_admin")
    assert entry["action"] == "PUT /v1/targets"
    mine = await stack.scoring.get("/v1/audit", params={"actor": subject}, headers=bearer(admin))
    assert [e["request_id"] for e in mine.json()["items"]] == [written]
    by_officer = f"o-{uuid.uuid4().hex}"
    reply = await stack.scoring.put(
        "/v1/targets", json=TARGET, headers={**bearer(officer), "X-Request-ID": by_officer}
    )
    assert reply.status_code == 200, reply.text  # province 82's officer, in province 82
    in_82 = await stack.scoring.get("/v1/audit", params={"unit": "82"}, headers=bearer(auditor))
    assert {e["actor_unit"] for e in in_82.json()["items"]} == {"82"}
    assert by_officer in {e["request_id"] for e in in_82.json()["items"]}
    assert (await stack.scoring.get("/v1/audit", headers=bearer(officer))).status_code == 403
