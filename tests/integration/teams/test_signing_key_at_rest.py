"""With TEAMS_SIGNING_KEY_PASSPHRASE set, the keys the local issuer stores are encrypted, and
the tokens it signs with them verify at the service as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from common.roles import RoleGrant
from teams import adapters, bootstrap
from teams.adapters import signing_keys
from teams.settings import TeamsSettings
from teams.use_cases import new_signing_key
from tests.helpers import OPERATOR, person_login, running


@pytest_asyncio.fixture(scope="module")
async def teams(apply_env: None) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = TeamsSettings(TEAMS_SIGNING_KEY_PASSPHRASE="mot-cum-tu-bi-mat-du-dai")
    runtime = bootstrap.build_runtime(settings)
    async with running(runtime, bootstrap.build_app(runtime), workers=False) as client:
        yield client, runtime
        # The database is shared: leave an active key the other modules (no passphrase) can use.
        async with runtime.unit_of_work() as uow:
            await adapters.retire_signing_keys(uow.session)
            await adapters.insert_signing_key(uow.session, new_signing_key(passphrase=None))
            await uow.commit()


async def _stored_pems(runtime: Any) -> list[str]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(signing_keys.c.private_key_pem).where(signing_keys.c.retired_at.is_(None))
        )
        return [str(pem) for (pem,) in rows]


async def test_the_active_key_is_stored_encrypted_and_its_tokens_verify(teams: Any) -> None:
    client, runtime = teams
    rotated = await client.post("/v1/auth/keys:rotate", headers=OPERATOR)
    assert rotated.status_code == 200, rotated.text
    admin = await person_login(client, RoleGrant("ministry_admin", None))
    [pem] = await _stored_pems(runtime)
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    audit = await client.get("/v1/audit", headers=admin)
    assert audit.status_code == 200, audit.text  # a ministry_admin reads the audit trail
