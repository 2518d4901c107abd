"""Teams flagged by unresolved suspicious-activity alerts, replicated from notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from scoring.adapters.tables import team_flags


async def save_flags(
    session: AsyncSession,
    *,
    raised: Sequence[tuple[UUID, str, str | None, datetime]],
    resolved: Sequence[UUID],
) -> None:
    """`raised`: (alert id, team id, check, raised at) of open alerts; `resolved`: alert ids."""
    if raised:
        await session.execute(
            insert(team_flags)
            .values(
                [
                    {"alert_id": a, "team_id": t, "check_name": c, "raised_at": at}
                    for a, t, c, at in raised
                ]
            )
            .on_conflict_do_nothing()
        )
    if resolved:
        await session.execute(delete(team_flags).where(team_flags.c.alert_id.in_(resolved)))
