"""What scores are measured against: criteria sets, targets and campaigns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from scoring import domain
from scoring.adapters.tables import campaigns, criteria_sets, targets
from scoring.domain import CriteriaSet, SubjectPeriod


async def targets_for(
    session: AsyncSession, keys: Sequence[SubjectPeriod]
) -> dict[SubjectPeriod, dict[str, float]]:
    out: dict[SubjectPeriod, dict[str, float]] = {k: {} for k in keys}
    if not keys:
        return out
    rows = await session.execute(
        text(
            """
            SELECT t.subject_type, t.subject_id, t.period, t.indicator, t.value
            FROM scoring.targets t
            JOIN unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]))
                 AS k(subject_type, subject_id, period)
              ON t.subject_type = k.subject_type AND t.subject_id = k.subject_id
             AND t.period = k.period
            """
        ),
        {"st": [k[0] for k in keys], "sid": [k[1] for k in keys], "p": [k[2] for k in keys]},
    )
    for stype, sid, period, indicator, value in rows:
        out[SubjectPeriod(stype, sid, period)][indicator] = float(value)
    return out


async def campaign_lengths(session: AsyncSession, periods: Iterable[str]) -> dict[str, int]:
    ids = sorted({p.removeprefix("campaign:") for p in periods if p.startswith("campaign:")})
    if not ids:
        return {}
    rows = await session.execute(
        select(campaigns.c.id, campaigns.c.start_date, campaigns.c.end_date).where(
            campaigns.c.id.in_(ids)
        )
    )
    return {f"campaign:{r[0]}": domain.campaign_days(r[1], r[2]) for r in rows}


def _criteria_set_of(row: RowMapping) -> CriteriaSet:
    return domain.criteria_from_json(row["version"], row["definition"])


async def active_criteria_set(session: AsyncSession) -> CriteriaSet:
    row = (
        (await session.execute(select(criteria_sets).where(criteria_sets.c.active)))
        .mappings()
        .first()
    )
    return _criteria_set_of(row) if row else domain.DEFAULT_CRITERIA_SET


async def criteria_set(session: AsyncSession, version: str) -> CriteriaSet | None:
    row = (
        (await session.execute(select(criteria_sets).where(criteria_sets.c.version == version)))
        .mappings()
        .first()
    )
    return _criteria_set_of(row) if row else None


# --------------------------------------------------------------------------- criteria sets


async def list_criteria_set_rows(session: AsyncSession, *, limit: int) -> Sequence[RowMapping]:
    """Stored criteria sets, oldest first."""
    return (
        (
            await session.execute(
                select(criteria_sets).order_by(criteria_sets.c.created_at).limit(limit)
            )
        )
        .mappings()
        .all()
    )


async def criteria_set_row(session: AsyncSession, *, version: str) -> RowMapping | None:
    """One stored criteria set as its row (name, flags, times, definition)."""
    return (
        (await session.execute(select(criteria_sets).where(criteria_sets.c.version == version)))
        .mappings()
        .first()
    )


async def criteria_set_versions(session: AsyncSession) -> list[str]:
    return list((await session.scalars(select(criteria_sets.c.version))).all())


async def insert_criteria_set(
    session: AsyncSession, *, version: str, name: str, definition: dict[str, Any]
) -> None:
    """Raises `IntegrityError` when a concurrent create took `version`."""
    await session.execute(
        criteria_sets.insert().values(version=version, name=name, definition=definition)
    )


async def lock_criteria_sets(session: AsyncSession) -> None:
    """Serialise activations until the transaction ends."""
    await session.execute(text("LOCK TABLE scoring.criteria_sets IN EXCLUSIVE MODE"))


async def criteria_set_exists(session: AsyncSession, *, version: str) -> bool:
    found = await session.scalar(
        select(criteria_sets.c.version).where(criteria_sets.c.version == version)
    )
    return found is not None


async def activate_criteria_set(
    session: AsyncSession, *, version: str, activated_at: datetime
) -> None:
    """`version` becomes the only active set."""
    await session.execute(update(criteria_sets).where(criteria_sets.c.active).values(active=False))
    await session.execute(
        update(criteria_sets)
        .where(criteria_sets.c.version == version)
        .values(active=True, activated_at=activated_at)
    )


# --------------------------------------------------------------------------- targets


async def upsert_target(
    session: AsyncSession,
    *,
    subject_type: str,
    subject_id: str,
    period: str,
    indicator: str,
    value: float,
    updated_at: datetime,
) -> None:
    statement = insert(targets).values(
        subject_type=subject_type,
        subject_id=subject_id,
        period=period,
        indicator=indicator,
        value=value,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["subject_type", "subject_id", "period", "indicator"],
            set_={"value": statement.excluded.value, "updated_at": updated_at},
        )
    )


# --------------------------------------------------------------------------- campaigns


async def insert_campaign(
    session: AsyncSession,
    *,
    campaign_id: str,
    name: str,
    start_date: date,
    end_date: date,
    unit_codes: Sequence[str],
) -> RowMapping | None:
    """The new campaign's row, or None when one with this id exists."""
    inserted = await session.execute(
        insert(campaigns)
        .values(
            id=campaign_id,
            name=name,
            start_date=start_date,
            end_date=end_date,
            unit_codes=list(unit_codes),
        )
        .on_conflict_do_nothing()
        .returning(*campaigns.c)
    )
    return inserted.mappings().first()


async def list_campaign_rows(
    session: AsyncSession, *, after: str | None, limit: int
) -> Sequence[RowMapping]:
    """Up to `limit` campaigns by id, those after `after` when given."""
    query = select(campaigns).order_by(campaigns.c.id).limit(limit)
    if after:
        query = query.where(campaigns.c.id > after)
    return (await session.execute(query)).mappings().all()
