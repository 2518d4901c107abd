"""Activities persistence: its own tables plus a local replica of teams (from the teams topics)."""

from __future__ import annotations

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.contracts.teams import TeamChanged
from common.outbox_tables import define_service_tables

SCHEMA = "activities"
metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)

team_replica = Table(
    "team_replica",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("code", String(64), nullable=False),
    Column("unit_code", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("established_on", Date),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def upsert_team(session: AsyncSession, team: TeamChanged) -> None:
    """Apply a team's latest state; an older version (compaction, replays) never wins."""
    row = {
        "id": team.id,
        "code": team.code,
        "unit_code": team.unit_code,
        "status": team.status,
        "established_on": team.established_on,
        "version": team.version,
    }
    statement = insert(team_replica).values(**row)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[team_replica.c.id],
            set_={**{k: statement.excluded[k] for k in row if k != "id"}, "updated_at": func.now()},
            where=team_replica.c.version < statement.excluded.version,
        )
    )
