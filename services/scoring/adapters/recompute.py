"""The full recompute: truncating and reading back what it rebuilds, and its jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from scoring.adapters.facts import fact_of
from scoring.adapters.tables import (
    JOB_ACTIVE_STATES,
    activity_facts,
    indicator_sets,
    recompute_jobs,
    team_state,
)
from scoring.domain import ActivityFact

# --------------------------------------------------------------------------- full recompute

_LIVE_FACT = activity_facts.c.recorded & ~activity_facts.c.voided


async def truncate_derived(session: AsyncSession) -> None:
    """Empty the dirty marks and every indicator table (the recompute rebuilds them).

    dirty_subjects first: the publisher locks it first too (take_dirty), then reads the
    indicators; locking the indicators before it would deadlock with a pass in progress.
    """
    await session.execute(
        text(
            "TRUNCATE scoring.dirty_subjects, scoring.indicator_sets, scoring.distinct_values, "
            "scoring.state_values"
        )
    )


async def count_live_facts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).where(_LIVE_FACT)) or 0)


async def live_fact_batches(
    session: AsyncSession, *, chunk: int
) -> AsyncIterator[list[ActivityFact]]:
    """Every live fact, streamed in team order, in batches of `chunk`."""
    stream = await session.stream(
        select(activity_facts)
        .where(_LIVE_FACT)
        .order_by(activity_facts.c.team_id)
        .execution_options(yield_per=chunk)
    )
    async for partition in stream.mappings().partitions(chunk):
        yield [fact_of(row) for row in partition]


async def any_fact_stored(session: AsyncSession) -> bool:
    return await session.scalar(select(activity_facts.c.activity_id).limit(1)) is not None


async def any_indicator_stored(session: AsyncSession) -> bool:
    return await session.scalar(select(indicator_sets.c.subject_id).limit(1)) is not None


async def team_state_rows(session: AsyncSession) -> Sequence[RowMapping]:
    """The whole team and member replica (one row per team)."""
    return (await session.execute(select(team_state))).mappings().all()


# --------------------------------------------------------------------------- recompute jobs

STALE_JOB_SECONDS = 30


async def create_recompute_job(session: AsyncSession, job_id: UUID) -> RowMapping:
    """A new queued job, or the one already queued or running (one at a time). A job whose
    heartbeat stopped (its process died: its transaction rolled back) is failed first."""
    await session.execute(
        update(recompute_jobs)
        .where(
            recompute_jobs.c.state.in_(JOB_ACTIVE_STATES),
            recompute_jobs.c.heartbeat_at
            < func.now() - text(f"interval '{STALE_JOB_SECONDS} seconds'"),
        )
        .values(
            state="failed",
            finished_at=func.now(),
            error="interrupted: the process running it stopped",
        )
    )
    created = (
        (
            await session.execute(
                insert(recompute_jobs)
                .values(id=job_id, state="queued")
                .on_conflict_do_nothing()
                .returning(*recompute_jobs.c)
            )
        )
        .mappings()
        .first()
    )
    if created is not None:
        return created
    active = (
        (
            await session.execute(
                select(recompute_jobs).where(recompute_jobs.c.state.in_(JOB_ACTIVE_STATES))
            )
        )
        .mappings()
        .first()
    )
    assert active is not None, "the insert conflicted with an active job"
    return active


async def recompute_job(session: AsyncSession, job_id: UUID) -> RowMapping | None:
    return (
        (await session.execute(select(recompute_jobs).where(recompute_jobs.c.id == job_id)))
        .mappings()
        .first()
    )


def db_now() -> ColumnElement[datetime]:
    """The transaction's time on the database (`now()`), for a job's timestamps."""
    return func.now()


async def update_recompute_job(session: AsyncSession, job_id: UUID, **values: Any) -> None:
    """Progress, state or outcome of a job; every update is a heartbeat."""
    await session.execute(
        update(recompute_jobs)
        .where(recompute_jobs.c.id == job_id)
        .values(heartbeat_at=func.now(), **values)
    )
