"""Evaluation rounds: the rounds and their moves, approvals with their frozen snapshots, and the
rows of score reports (live, or as a round froze them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import (
    Integer,
    Select,
    Text,
    and_,
    cast,
    func,
    literal,
    nulls_last,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from scoring.adapters.tables import (
    LEVEL_COLUMNS,
    admin_units,
    evaluation_rounds,
    round_approvals,
    round_snapshots,
    round_transitions,
    scores,
    subject_names,
    subjects,
)
from scoring.domain import NATIONAL_ID
from scoring.domain.reports import LEVELS_TOP_DOWN, Coverage, ReportRow, ReportScope, Summary
from scoring.domain.rounds import (
    CommendationRule,
    EvaluationRound,
    RoundKey,
    RoundState,
    Transition,
)


def _round_of(row: RowMapping) -> EvaluationRound:
    return EvaluationRound(
        id=row["id"],
        level=row["level"],
        unit_code=row["unit_code"],
        period=row["period"],
        criteria_set=row["criteria_set"],
        due_on=row["due_on"],
        state=RoundState(row["state"]),
        approvals=row["approvals"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def unit_known(session: AsyncSession, *, level: str, unit_code: str) -> bool:
    """Whether the teams topics announced this unit, or a team was placed under it."""
    if level == "national":
        return unit_code == NATIONAL_ID
    announced = await session.scalar(
        select(admin_units.c.code).where(
            admin_units.c.code == unit_code, admin_units.c.level == level
        )
    )
    placed = await session.scalar(
        select(subjects.c.subject_id).where(
            subjects.c.subject_type == level, subjects.c.subject_id == unit_code
        )
    )
    return announced is not None or placed is not None


async def insert_round(
    session: AsyncSession, *, round_id: UUID, key: RoundKey, due_on: date, at: datetime
) -> EvaluationRound | None:
    """The new round, or None when one already reviews this unit, period and criteria set."""
    statement = (
        insert(evaluation_rounds)
        .values(
            id=round_id,
            level=key.level,
            unit_code=key.unit_code,
            period=key.period,
            criteria_set=key.criteria_set,
            due_on=due_on,
            state=RoundState.OPEN.value,
            created_at=at,
            updated_at=at,
        )
        .on_conflict_do_nothing()
        .returning(*evaluation_rounds.c)
    )
    row = (await session.execute(statement)).mappings().first()
    return _round_of(row) if row is not None else None


async def round_for(session: AsyncSession, key: RoundKey) -> EvaluationRound | None:
    row = (
        (
            await session.execute(
                select(evaluation_rounds).where(
                    evaluation_rounds.c.level == key.level,
                    evaluation_rounds.c.unit_code == key.unit_code,
                    evaluation_rounds.c.period == key.period,
                    evaluation_rounds.c.criteria_set == key.criteria_set,
                )
            )
        )
        .mappings()
        .first()
    )
    return _round_of(row) if row is not None else None


async def get_round(
    session: AsyncSession, round_id: UUID, *, for_update: bool = False
) -> EvaluationRound | None:
    query = select(evaluation_rounds).where(evaluation_rounds.c.id == round_id)
    if for_update:  # one move at a time: two approvals racing would both freeze a snapshot
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    return _round_of(row) if row is not None else None


async def list_rounds(
    session: AsyncSession,
    *,
    filters: Mapping[str, str | None],
    limit: int,
    offset: int,
) -> list[EvaluationRound]:
    """Rounds matching the given column values (None: any), newest first."""
    query = select(evaluation_rounds)
    for column, value in filters.items():
        if value is not None:
            query = query.where(evaluation_rounds.c[column] == value)
    query = query.order_by(evaluation_rounds.c.created_at.desc(), evaluation_rounds.c.id)
    rows = (await session.execute(query.limit(limit).offset(offset))).mappings()
    return [_round_of(row) for row in rows]


async def move_round(
    session: AsyncSession,
    current: EvaluationRound,
    move: Transition,
    *,
    actor: str,
    trace_id: str | None,
    at: datetime,
) -> EvaluationRound:
    """Store the round's new state and the move that led there (who, when, why)."""
    approvals = current.approvals + (1 if move.approves else 0)
    row = (
        (
            await session.execute(
                evaluation_rounds.update()
                .where(evaluation_rounds.c.id == current.id)
                .values(
                    state=move.to_state.value,
                    approvals=approvals,
                    version=current.version + 1,
                    updated_at=at,
                )
                .returning(*evaluation_rounds.c)
            )
        )
        .mappings()
        .one()
    )
    await record_transition(
        session,
        round_id=current.id,
        action=move.action.value,
        from_state=move.from_state.value,
        to_state=move.to_state.value,
        actor=actor,
        reason=move.reason,
        trace_id=trace_id,
        at=at,
    )
    return _round_of(row)


async def record_transition(
    session: AsyncSession,
    *,
    round_id: UUID,
    action: str,
    from_state: str | None,
    to_state: str,
    actor: str,
    reason: str | None,
    trace_id: str | None,
    at: datetime,
) -> None:
    await session.execute(
        round_transitions.insert().values(
            round_id=round_id,
            action=action,
            from_state=from_state,
            to_state=to_state,
            actor=actor,
            reason=reason,
            trace_id=trace_id,
            at=at,
        )
    )


async def transitions_of(session: AsyncSession, round_id: UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            round_transitions.c.action,
            round_transitions.c.from_state,
            round_transitions.c.to_state,
            round_transitions.c.actor,
            round_transitions.c.reason,
            round_transitions.c.trace_id,
            round_transitions.c.at,
        )
        .where(round_transitions.c.round_id == round_id)
        .order_by(round_transitions.c.seq)
    )
    return [dict(row) for row in rows.mappings()]


# --------------------------------------------------------------------------- snapshots


def _live_rows(*, level: str, unit: str, period: str, criteria_set: str) -> Select[Any]:
    """The unit and every subject under it (the nation: every subject) with their codes,
    names, parents' names and live scores (JSON documents as text, decoded by the caller)."""
    s, sc = subjects.alias("s"), scores.alias("sc")
    name, parent = subject_names.alias("n"), subject_names.alias("pn")
    under = true() if level == "national" else s.c[level] == unit
    return (
        select(
            s.c.subject_type,
            s.c.subject_id,
            func.coalesce(name.c.code, s.c.subject_id).label("code"),
            name.c.name,
            s.c.parent_type,
            s.c.parent_id,
            func.coalesce(parent.c.code, s.c.parent_id).label("parent_code"),
            parent.c.name.label("parent_name"),
            sc.c.score,
            sc.c.max_score,
            sc.c.rank,
            sc.c.rank_of,
            type_coerce(sc.c.components, Text).label("components"),
            type_coerce(sc.c.indicators, Text).label("indicators"),
            sc.c.version.label("score_version"),
        )
        .select_from(
            s.outerjoin(
                sc,
                and_(
                    sc.c.subject_type == s.c.subject_type,
                    sc.c.subject_id == s.c.subject_id,
                    sc.c.period == period,
                    sc.c.criteria_set == criteria_set,
                ),
            )
            .outerjoin(
                name,
                and_(name.c.subject_type == s.c.subject_type, name.c.subject_id == s.c.subject_id),
            )
            .outerjoin(
                parent,
                and_(
                    parent.c.subject_type == s.c.parent_type, parent.c.subject_id == s.c.parent_id
                ),
            )
        )
        .where(under)
    )


def _report_order(rows: Any) -> tuple[Any, ...]:
    """Top level first; siblings together, best first; ties in code order: the same rows always
    come out in the same order (a frozen report is byte for byte the same)."""
    top_down = literal(list(LEVELS_TOP_DOWN), ARRAY(Text))
    return (
        func.array_position(top_down, cast(rows.subject_type, Text)),
        rows.parent_id,
        nulls_last(rows.rank),
        rows.code,
        rows.subject_id,
    )


async def freeze_snapshot(
    session: AsyncSession, evaluation_round: EvaluationRound, *, approval: int
) -> int:
    """Copy every score under the round's unit, with names, into its `approval`-th snapshot."""
    live = _live_rows(
        level=evaluation_round.level,
        unit=evaluation_round.unit_code,
        period=evaluation_round.period,
        criteria_set=evaluation_round.criteria_set,
    ).subquery()
    columns = [c.name for c in live.c]
    result = await session.execute(
        insert(round_snapshots).from_select(
            ["round_id", "approval", *columns],
            select(
                literal(evaluation_round.id, round_snapshots.c.round_id.type),
                literal(approval, Integer),
                *live.c,
            ),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# The members with live activity under the unit in the period, counted from the facts (an
# activity counts where its team is now, as everywhere in scoring).
_FREEZE_MEMBERS = """
    INSERT INTO scoring.round_member_snapshots (round_id, approval, member_id, team_id,
        activities, households, citizens_reached)
    SELECT CAST(:round_id AS uuid), :approval, CAST(f.distinct_values ->> 'member' AS uuid),
           f.team_id, count(*), count(DISTINCT f.distinct_values ->> 'household'),
           coalesce(sum(CAST(f.counters ->> 'citizens_reached' AS bigint)), 0)
    FROM scoring.activity_facts f
    WHERE f.recorded AND NOT f.voided AND f.distinct_values ? 'member'
      AND CAST(:period AS text) = ANY(f.periods) AND {under}
    GROUP BY f.distinct_values ->> 'member', f.team_id
"""


async def freeze_member_snapshot(
    session: AsyncSession, evaluation_round: EvaluationRound, *, approval: int
) -> int:
    """Copy the activity of every member under the round's unit in its period into its
    `approval`-th member snapshot."""
    level = evaluation_round.level
    if level != "national" and level not in LEVEL_COLUMNS:
        raise ValueError(f"no fact column for the level {level!r}")
    under = "true" if level == "national" else f"f.{level} = :unit"
    result = await session.execute(
        text(_FREEZE_MEMBERS.format(under=under)),
        {
            "round_id": evaluation_round.id,
            "approval": approval,
            "period": evaluation_round.period,
            "unit": evaluation_round.unit_code,
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def record_approval(
    session: AsyncSession,
    *,
    round_id: UUID,
    approval: int,
    at: datetime,
    actor: str,
    subjects_frozen: int,
    summary: Summary,
) -> None:
    await session.execute(
        round_approvals.insert().values(
            round_id=round_id,
            approval=approval,
            approved_at=at,
            actor=actor,
            subjects=subjects_frozen,
            summary=summary.as_json(),
        )
    )


async def approvals_of(session: AsyncSession, round_id: UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(round_approvals)
        .where(round_approvals.c.round_id == round_id)
        .order_by(round_approvals.c.approval)
    )
    return [dict(row) for row in rows.mappings()]


async def late_changes(session: AsyncSession, *, round_id: UUID, approval: int) -> int:
    """Subjects of the snapshot whose live score moved since (later events, voids, moves)."""
    found = await session.scalar(
        text(
            """
            SELECT count(*) FROM scoring.round_snapshots r
            JOIN scoring.evaluation_rounds e ON e.id = r.round_id
            LEFT JOIN scoring.scores sc
              ON sc.subject_type = r.subject_type AND sc.subject_id = r.subject_id
             AND sc.period = e.period AND sc.criteria_set = e.criteria_set
            WHERE r.round_id = :round_id AND r.approval = :approval
              AND sc.version IS DISTINCT FROM r.score_version
            """
        ),
        {"round_id": round_id, "approval": approval},
    )
    return int(found or 0)


# --------------------------------------------------------------------------- reports


_SUMMARY = text(
    """
    WITH state AS (
      SELECT indicator, value FROM scoring.state_values
      WHERE subject_type = :level AND subject_id = :unit
    ), covered AS (
      SELECT s.subject_type, count(*) AS units
      FROM scoring.subjects s
      JOIN scoring.state_values v
        ON v.subject_type = s.subject_type AND v.subject_id = s.subject_id
       AND v.indicator = 'teams' AND v.value > 0
      WHERE s.subject_type IN ('village', 'commune')
        AND CASE CAST(:level AS text) WHEN 'national' THEN TRUE
                 WHEN 'province' THEN s.province = :unit WHEN 'district' THEN s.district = :unit
                 WHEN 'commune' THEN s.commune = :unit WHEN 'village' THEN s.village = :unit END
      GROUP BY s.subject_type
    ), announced AS (
      SELECT a.level, count(*) AS units
      FROM scoring.admin_units a
      WHERE a.level IN ('village', 'commune')
        AND a.change NOT IN ('merged', 'split', 'retired')
        AND (CAST(:level AS text) = 'national' OR a.path ->> CAST(:level AS text) = :unit)
      GROUP BY a.level
    )
    SELECT
      (SELECT coalesce(sum(value), 0) FROM state WHERE indicator = 'teams') AS teams,
      (SELECT coalesce(sum(value), 0) FROM state WHERE indicator = 'members') AS members,
      (SELECT coalesce(sum(value), 0) FROM state WHERE indicator = 'trained_members')
        AS trained_members,
      (SELECT coalesce(sum(units), 0) FROM covered WHERE subject_type = 'village')
        AS villages_covered,
      (SELECT coalesce(sum(units), 0) FROM covered WHERE subject_type = 'commune')
        AS communes_covered,
      (SELECT coalesce(sum(units), 0) FROM announced WHERE level = 'village') AS villages,
      (SELECT coalesce(sum(units), 0) FROM announced WHERE level = 'commune') AS communes
    """
)


async def unit_summary(session: AsyncSession, *, level: str, unit_code: str) -> Summary:
    """The unit's teams, members and trained members now, and how many of its villages and
    communes have a team (of those the teams topics announced)."""
    row = (await session.execute(_SUMMARY, {"level": level, "unit": unit_code})).mappings().one()
    villages, communes = int(row["villages_covered"]), int(row["communes_covered"])
    return Summary(
        teams=int(row["teams"]),
        members=int(row["members"]),
        trained_members=int(row["trained_members"]),
        # a unit a team sits in counts as known even before its announcement arrives
        villages=Coverage(villages, max(int(row["villages"]), villages)),
        communes=Coverage(communes, max(int(row["communes"]), communes)),
    )


async def snapshot_summary(session: AsyncSession, *, round_id: UUID, approval: int) -> Summary:
    found = await session.scalar(
        select(round_approvals.c.summary).where(
            round_approvals.c.round_id == round_id, round_approvals.c.approval == approval
        )
    )
    if found is None:
        raise LookupError(f"round {round_id} has no approval {approval}")
    return Summary.from_json(found)


async def report_rows(
    session: AsyncSession, scope: ReportScope, *, levels: tuple[str, ...], batch: int = 5_000
) -> AsyncIterator[ReportRow]:
    """The report's rows in their fixed order, read in batches through a server-side cursor:
    the national team sheet streams without holding its 74,422 rows."""
    if scope.approval is not None:
        frozen = round_snapshots
        query = (
            select(*(frozen.c[c] for c in _REPORT_COLUMNS))
            .where(
                frozen.c.round_id == scope.round_id,
                frozen.c.approval == scope.approval,
                frozen.c.subject_type.in_(levels),
            )
            .order_by(*_report_order(frozen.c))
        )
    else:
        live = _live_rows(
            level=scope.level,
            unit=scope.unit_code,
            period=scope.period,
            criteria_set=scope.criteria_set,
        ).subquery()
        query = (
            select(*(live.c[c] for c in _REPORT_COLUMNS))
            .where(live.c.subject_type.in_(levels))
            .order_by(*_report_order(live.c))
        )
    result = await session.stream(query.execution_options(yield_per=batch))
    async for row in result.mappings():
        yield _report_row(row)


_REPORT_COLUMNS = (
    "subject_type",
    "code",
    "name",
    "parent_code",
    "parent_name",
    "score",
    "max_score",
    "rank",
    "rank_of",
    "components",
    "indicators",
)


def _report_row(row: RowMapping) -> ReportRow:
    components = _json(row["components"]) or []
    return ReportRow(
        level=row["subject_type"],
        code=row["code"],
        name=row["name"],
        parent_code=row["parent_code"],
        parent_name=row["parent_name"],
        score=row["score"],
        max_score=row["max_score"],
        rank=row["rank"],
        rank_of=row["rank_of"],
        points={c["criterion"]: c["points"] for c in components},
        indicators=_json(row["indicators"]) or {},
    )


def _json(value: Any) -> Any:
    """`json` columns come back parsed or as text depending on the path; both are handled."""
    if isinstance(value, str):
        return orjson.loads(value)
    return value


async def frozen_score(
    session: AsyncSession, *, round_id: UUID, approval: int, subject: tuple[str, str]
) -> float | None:
    """A subject's score as the round's `approval`-th snapshot froze it."""
    found: float | None = await session.scalar(
        select(round_snapshots.c.score).where(
            round_snapshots.c.round_id == round_id,
            round_snapshots.c.approval == approval,
            round_snapshots.c.subject_type == subject[0],
            round_snapshots.c.subject_id == subject[1],
        )
    )
    return found


# Every unit of a level (announced by the teams topics and current, or holding teams) with its
# round for the period and criteria set, if any, and the approval in force.
_SCHEDULE = text(
    """
    WITH units AS (
      SELECT code FROM scoring.admin_units
      WHERE level = :level AND change NOT IN ('merged', 'split', 'retired')
      UNION
      SELECT subject_id FROM scoring.subjects WHERE subject_type = :level
    )
    SELECT u.code AS unit_code, n.name, r.id AS round_id, r.state, r.due_on, r.approvals,
           a.approved_at
    FROM units u
    LEFT JOIN scoring.subject_names n ON n.subject_type = :level AND n.subject_id = u.code
    LEFT JOIN scoring.evaluation_rounds r
      ON r.level = :level AND r.unit_code = u.code AND r.period = :period
     AND r.criteria_set = :criteria_set
    LEFT JOIN scoring.round_approvals a ON a.round_id = r.id AND a.approval = r.approvals
    ORDER BY u.code
    """
)


async def schedule_rows(
    session: AsyncSession, *, level: str, period: str, criteria_set: str
) -> list[RowMapping]:
    """(unit_code, name, round_id, state, due_on, approvals, approved_at) for every unit."""
    result = await session.execute(
        _SCHEDULE, {"level": level, "period": period, "criteria_set": criteria_set}
    )
    return list(result.mappings())


# The best subjects of a level under a round's unit, from its snapshot (or live before any),
# by score then code, with the rule's floors; flagged teams left out when the rule says so.
_CANDIDATES = text(
    """
    SELECT r.subject_type, r.subject_id, r.code, r.name, r.parent_code, r.parent_name,
           r.score, r.rank, r.rank_of,
           CAST(r.indicators::jsonb ->> 'activities' AS float8) AS activities
    FROM scoring.round_snapshots r
    WHERE r.round_id = :round_id AND r.approval = :approval AND r.subject_type = :level
      AND r.score >= :min_score
      AND coalesce(CAST(r.indicators::jsonb ->> 'activities' AS float8), 0) >= :min_activities
      AND NOT (CAST(:exclude_flagged AS boolean) AND r.subject_type = 'team' AND EXISTS (
            SELECT 1 FROM scoring.team_flags f WHERE f.team_id = r.subject_id))
    ORDER BY r.score DESC, r.code, r.subject_id
    LIMIT :top
    """
)


# The most active members under a round's unit, from its member snapshot, with their team's
# code and name from the same approval's snapshot; members of flagged teams left out when the
# rule says so. Ranked by activities, then households reached, citizens reached, member id.
_MEMBER_CANDIDATES = text(
    """
    SELECT * FROM (
        SELECT CAST(m.member_id AS text) AS member_id, CAST(m.team_id AS text) AS team_id,
               t.code AS team_code, t.name AS team_name, m.activities, m.households,
               m.citizens_reached,
               rank() OVER (ORDER BY m.activities DESC, m.households DESC,
                            m.citizens_reached DESC) AS rank,
               count(*) OVER () AS rank_of
        FROM scoring.round_member_snapshots m
        LEFT JOIN scoring.round_snapshots t
          ON t.round_id = m.round_id AND t.approval = m.approval AND t.subject_type = 'team'
         AND t.subject_id = CAST(m.team_id AS text)
        WHERE m.round_id = :round_id AND m.approval = :approval
    ) ranked
    WHERE ranked.activities >= :min_activities
      AND NOT (CAST(:exclude_flagged AS boolean) AND EXISTS (
            SELECT 1 FROM scoring.team_flags f WHERE f.team_id = ranked.team_id))
    ORDER BY ranked.rank, ranked.member_id
    LIMIT :top
    """
)


async def member_candidate_rows(
    session: AsyncSession, *, round_id: UUID, approval: int, rule: CommendationRule
) -> list[RowMapping]:
    result = await session.execute(
        _MEMBER_CANDIDATES,
        {
            "round_id": round_id,
            "approval": approval,
            "min_activities": rule.min_activities,
            "exclude_flagged": rule.exclude_flagged,
            "top": rule.top,
        },
    )
    return list(result.mappings())


async def candidate_rows(
    session: AsyncSession, *, round_id: UUID, approval: int, level: str, rule: CommendationRule
) -> list[RowMapping]:
    result = await session.execute(
        _CANDIDATES,
        {
            "round_id": round_id,
            "approval": approval,
            "level": level,
            "min_score": rule.min_score,
            "min_activities": rule.min_activities,
            "exclude_flagged": rule.exclude_flagged,
            "top": rule.top,
        },
    )
    return list(result.mappings())
