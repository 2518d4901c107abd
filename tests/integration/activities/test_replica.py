"""The teams replica: team unit paths and members from the teams topics, version-guarded."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select

from activities.adapters import member_replica, team_replica
from tests.integration.activities.support import Env


async def _row(env: Env, table, entity_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with env.runtime.sessions() as session:
        return (await session.execute(select(table).where(table.c.id == entity_id))).first()


async def test_team_unit_path_replicated_and_older_version_ignored(env: Env) -> None:
    team_id = await env.team(version=2, established_on=date(2023, 1, 1))
    row = await _row(env, team_replica, team_id)
    assert (row.province, row.commune, row.village) == ("82", "82-28000", "82-28000-V01")
    assert row.established_on == date(2023, 1, 1)

    # An older version arriving late (replay) must not win; a newer one must.
    await env.team(team_id=team_id, version=1, status="dissolved", wait=False)
    await env.team(team_id=team_id, version=3, established_on=date(2021, 1, 1))
    row = await _row(env, team_replica, team_id)
    assert row.version == 3 and row.status == "active" and row.established_on == date(2021, 1, 1)


async def test_member_replicated_with_leave_date(env: Env) -> None:
    team_id = await env.team()
    member_id = await env.member(team_id, joined_on=date(2022, 5, 1))
    await env.member(
        team_id,
        member_id=member_id,
        joined_on=date(2022, 5, 1),
        left_on=date(2024, 1, 1),
        version=2,
    )
    # A stale version then a removal: same key, same partition, so they apply in this order.
    await env.member(team_id, member_id=member_id, version=1, joined_on=date(2020, 1, 1))
    await env.member(
        team_id,
        member_id=member_id,
        joined_on=date(2022, 5, 1),
        left_on=date(2024, 1, 1),
        version=3,
        removed=True,
    )
    row = await _row(env, member_replica, member_id)
    assert row.version == 3 and row.removed
    assert row.left_on == date(2024, 1, 1)
    assert row.joined_on == date(2022, 5, 1)
    assert row.team_id == team_id
