"""The teams runtime of a test module and helpers that create what tests need, with codes of
their own so tests do not depend on each other's data (the package import is idempotent)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from teams import bootstrap
from teams.settings import TeamsSettings
from tests.helpers import OPERATOR, running

DONG_THAP = "82"
MY_THO = "28261"  # Phường Mỹ Tho, Đồng Tháp (vietnam-provinces 2025)
CSV = {**OPERATOR, "Content-Type": "text/csv"}
NDJSON = {**OPERATOR, "Content-Type": "application/x-ndjson"}


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


@pytest_asyncio.fixture(scope="module")
async def teams(apply_env: None) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    runtime = bootstrap.build_runtime(TeamsSettings())
    async with running(runtime, bootstrap.build_app(runtime)) as client:
        reply = await client.post(
            "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
        )
        assert reply.status_code == 200, reply.text
        yield client, runtime


async def village(client: httpx.AsyncClient, *, commune: str = MY_THO) -> str:
    code = f"{commune}-V{tag()}"
    reply = await client.post(
        "/v1/admin-units",
        json={"code": code, "name": f"Ấp {code}", "level": "village", "parent_code": commune},
        headers=OPERATOR,
    )
    assert reply.status_code == 201, reply.text
    return code


async def team(client: httpx.AsyncClient, unit_code: str, **extra: Any) -> dict[str, Any]:
    body = {
        "code": f"DT-{tag()}",
        "name": "Tổ CNSCĐ ấp 1",
        "unit_code": unit_code,
        "established_on": "2022-04-01",
        "decision_no": "12/QĐ-UBND",
        **extra,
    }
    reply = await client.post("/v1/teams", json=body, headers=OPERATOR)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def member(client: httpx.AsyncClient, team_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "full_name": "Nguyễn Văn A",
        "role": "member",
        "affiliation": "youth_union",
        "phone": "0912345678",
        "joined_on": "2022-04-01",
        **extra,
    }
    reply = await client.post(f"/v1/teams/{team_id}/members", json=body, headers=OPERATOR)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())
