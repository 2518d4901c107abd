"""The fact ledger (one row per activity id), the locks a batch and a recompute take, and where
each team is placed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import dump_json
from scoring.adapters.tables import LEVEL_COLUMNS, RECOMPUTE_LOCK_KEY, activity_facts, team_state
from scoring.domain import ActivityFact, FactState, UnitPathCodes

# --------------------------------------------------------------------------- locking


async def lock_for_apply(session: AsyncSession) -> None:
    await session.execute(
        text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": RECOMPUTE_LOCK_KEY}
    )


async def lock_for_recompute(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RECOMPUTE_LOCK_KEY})


# --------------------------------------------------------------------------- facts


def path_of(row: RowMapping) -> UnitPathCodes:
    return UnitPathCodes(
        province=row["province"] or "",
        district=row["district"],
        commune=row["commune"],
        village=row["village"],
    )


def fact_of(row: RowMapping) -> ActivityFact:
    return ActivityFact(
        activity_id=row["activity_id"],
        team_id=row["team_id"],
        path=path_of(row),
        occurred_at=row["occurred_at"],
        periods=tuple(row["periods"]),
        counters=row["counters"],
        distinct=row["distinct_values"],
    )


async def load_fact_states(session: AsyncSession, ids: Sequence[UUID]) -> dict[UUID, FactState]:
    """The stored state of these activities, locked for this transaction."""
    if not ids:
        return {}
    rows = (
        await session.execute(
            select(activity_facts)
            .where(activity_facts.c.activity_id.in_(sorted(set(ids))))
            .order_by(activity_facts.c.activity_id)
            .with_for_update()
        )
    ).mappings()
    return {
        row["activity_id"]: FactState(fact_of(row) if row["recorded"] else None, row["voided"])
        for row in rows
    }


_SAVE_FACTS = text(
    """
    INSERT INTO scoring.activity_facts AS f (activity_id, team_id, province, district, commune,
        village, occurred_at, periods, counters, distinct_values, recorded, voided)
    SELECT id, team, pr, di, co, vi, at, string_to_array(pe, ','), CAST(cn AS jsonb),
        CAST(dv AS jsonb), rec, vo
    FROM unnest(CAST(:id AS uuid[]), CAST(:team AS uuid[]), CAST(:pr AS text[]),
        CAST(:di AS text[]), CAST(:co AS text[]), CAST(:vi AS text[]),
        CAST(:at AS timestamptz[]), CAST(:pe AS text[]), CAST(:cn AS text[]),
        CAST(:dv AS text[]), CAST(:rec AS boolean[]), CAST(:vo AS boolean[]))
        AS k(id, team, pr, di, co, vi, at, pe, cn, dv, rec, vo)
    ON CONFLICT (activity_id) DO UPDATE SET
        team_id = excluded.team_id, province = excluded.province,
        district = excluded.district, commune = excluded.commune, village = excluded.village,
        occurred_at = excluded.occurred_at, periods = excluded.periods,
        counters = excluded.counters, distinct_values = excluded.distinct_values,
        recorded = excluded.recorded, voided = excluded.voided, updated_at = now()
    """
)
_FACT_COLUMNS = ("id", "team", "pr", "di", "co", "vi", "at", "pe", "cn", "dv", "rec", "vo")


def _fact_values(activity_id: UUID, state: FactState, *, team_id: UUID) -> tuple[Any, ...]:
    """One row of `_SAVE_FACTS`, in `_FACT_COLUMNS` order (periods comma-joined: a period
    never holds a comma, see `domain.PERIOD_RE`)."""
    fact = state.fact
    if fact is None:  # a void that arrived before its activity
        return (
            activity_id,
            team_id,
            None,
            None,
            None,
            None,
            None,
            "",
            "{}",
            "{}",
            False,
            state.voided,
        )
    path = fact.path
    return (
        activity_id,
        fact.team_id,
        path.province,
        path.district,
        path.commune,
        path.village,
        fact.occurred_at,
        ",".join(fact.periods),
        dump_json(fact.counters),
        dump_json(fact.distinct),
        True,
        state.voided,
    )


async def save_fact_states(
    session: AsyncSession, states: Mapping[UUID, FactState], *, team_ids: Mapping[UUID, UUID]
) -> None:
    """One `unnest` statement for the batch's facts (as SQLAlchemy's multi-row insert it built
    thousands of bound parameters per batch)."""
    if not states:
        return
    rows = [
        _fact_values(activity_id, state, team_id=team_ids[activity_id])
        for activity_id, state in sorted(states.items())
    ]
    columns = zip(*rows, strict=True)
    await session.execute(
        _SAVE_FACTS,
        {name: list(column) for name, column in zip(_FACT_COLUMNS, columns, strict=True)},
    )


async def live_facts_where(session: AsyncSession, *, level: str, code: str) -> list[ActivityFact]:
    column = activity_facts.c[level]
    rows = (
        await session.execute(
            select(activity_facts)
            .where(column == code, activity_facts.c.recorded, ~activity_facts.c.voided)
            .order_by(activity_facts.c.activity_id)
            .with_for_update()
        )
    ).mappings()
    return [fact_of(row) for row in rows]


async def live_facts_of_teams(
    session: AsyncSession, team_ids: Iterable[UUID]
) -> list[ActivityFact]:
    rows = (
        await session.execute(
            select(activity_facts)
            .where(
                activity_facts.c.team_id == any_(bindparam("teams", type_=ARRAY(PgUUID))),
                activity_facts.c.recorded,
                ~activity_facts.c.voided,
            )
            .order_by(activity_facts.c.activity_id)
            .with_for_update(),
            {"teams": sorted(set(team_ids))},
        )
    ).mappings()
    return [fact_of(row) for row in rows]


_REWRITE_PATHS = text(
    "UPDATE scoring.activity_facts AS f"
    " SET province = r.province, district = r.district, commune = r.commune, village = r.village"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:province AS text[]), CAST(:district AS text[]),"
    " CAST(:commune AS text[]), CAST(:village AS text[]))"
    " AS r(activity_id, province, district, commune, village)"
    " WHERE f.activity_id = r.activity_id"
)


async def rewrite_fact_paths(session: AsyncSession, facts: Sequence[ActivityFact]) -> None:
    if not facts:
        return
    await session.execute(
        _REWRITE_PATHS,
        {
            "ids": [f.activity_id for f in facts],
            **{level: [f.path.code_at(level) for f in facts] for level in LEVEL_COLUMNS},
        },
    )


# --------------------------------------------------------------------------- team places


_LOCK_TEAMS = text(
    "SELECT team_id, province, district, commune, village FROM scoring.team_state"
    " WHERE team_id = ANY(CAST(:ids AS uuid[])) ORDER BY team_id FOR UPDATE"
)


async def lock_team_places(
    session: AsyncSession, team_ids: Iterable[UUID]
) -> dict[UUID, UnitPathCodes]:
    """Lock the batch's teams and return where those placed are.

    Locked first and in one sorted statement: every batch, whichever worker runs it, then takes
    team locks in the same order, before any fact lock (a move locks a team's facts too).
    """
    ids = sorted(set(team_ids))
    if not ids:
        return {}
    rows = (await session.execute(_LOCK_TEAMS, {"ids": ids})).mappings()
    return {row["team_id"]: path_of(row) for row in rows if row["province"]}


async def place_unknown_teams(
    session: AsyncSession, first_seen: Mapping[UUID, UnitPathCodes]
) -> dict[UUID, UnitPathCodes]:
    """A provisional place for teams known only from their activities (the first path seen),
    until their TeamChanged: every later activity of theirs counts there too. Returns the
    places now stored (another worker may have placed a team first)."""
    rows = [
        {
            "team_id": team_id,
            **{level: path.code_at(level) for level in LEVEL_COLUMNS},
            "active": False,
            "version": -1,
            "members": 0,
            "trained_members": 0,
        }
        for team_id, path in sorted(first_seen.items())
    ]
    statement = insert(team_state)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[team_state.c.team_id],
            set_={level: statement.excluded[level] for level in LEVEL_COLUMNS},
            where=team_state.c.province.is_(None),
        ),
        rows,
    )
    return await lock_team_places(session, first_seen)


async def teams_in_unit(session: AsyncSession, *, level: str, code: str) -> list[UUID]:
    rows = await session.execute(
        select(team_state.c.team_id).where(team_state.c[level] == code).order_by("team_id")
    )
    return list(rows.scalars())
