"""Teams persistence: tables in the `teams` schema and the repository over them."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession

from common.outbox_tables import define_service_tables
from teams.domain import Team

SCHEMA = "teams"
metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)

teams_table = Table(
    "teams",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("unit_code", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("established_on", Date),
    Column("decision_no", String(100)),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


class TeamRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, team: Team) -> None:
        await self._session.execute(teams_table.insert().values(**_row(team)))

    async def get(self, team_id: UUID) -> Team | None:
        row = (
            (await self._session.execute(select(teams_table).where(teams_table.c.id == team_id)))
            .mappings()
            .first()
        )
        return _team(row) if row else None

    async def code_exists(self, code: str) -> bool:
        found = await self._session.scalar(
            select(teams_table.c.id).where(teams_table.c.code == code)
        )
        return found is not None


def _row(team: Team) -> dict[str, object]:
    return {
        "id": team.id,
        "code": team.code,
        "name": team.name,
        "unit_code": team.unit_code,
        "status": team.status,
        "established_on": team.established_on,
        "decision_no": team.decision_no,
        "version": team.version,
    }


def _team(row: object) -> Team:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("updated_at", None)
    return Team(**data)
