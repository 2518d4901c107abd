"""Scoring persistence: tables in the `scoring` schema and set-based repositories over them.

Hot-path writes use `INSERT ... SELECT ... ON CONFLICT DO UPDATE` over one parameter holding all
rows: one statement per table per batch whatever its size (no 32k bind-parameter ceiling, no
per-row round trips). The rows come as `unnest(arrays)`, or for the largest upserts as one JSON
document (`common.db.json_rows`, far cheaper to encode). Rows are sorted by key before each
upsert so concurrent writers lock rows in the same order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import IntEnum
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, insert
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement, TextClause

from common.db import dump_json, json_rows, upsert_newer
from common.outbox_tables import define_service_tables
from scoring import domain
from scoring.domain import (
    ActivityFact,
    CriteriaSet,
    Deltas,
    DistinctKey,
    FactState,
    MemberState,
    Roster,
    TeamState,
    UnitPathCodes,
)

SCHEMA = "scoring"


def key_string(length: int) -> String:
    """A code or name that keys rows: compared byte by byte (collation "C"). Under the
    database's default collation every index comparison went through the C library's strcoll;
    nothing here is ever shown sorted to people, and Python sorts the same way (migration 0008).
    """
    return String(length, collation="C")


metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)

# The consumer holds this lock shared per batch; a full recompute holds it exclusively.
RECOMPUTE_LOCK_KEY = 582_731_004

activity_facts = Table(
    "activity_facts",
    metadata,
    Column("activity_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("periods", ARRAY(Text), nullable=False, server_default="{}"),
    Column("counters", JSONB, nullable=False, server_default="{}"),
    Column("distinct_values", JSONB, nullable=False, server_default="{}"),
    # recorded = the ActivityRecorded arrived; voided = an ActivityVoided arrived (any order)
    Column("recorded", Boolean, nullable=False),
    Column("voided", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_facts_commune", "commune"),
    Index("ix_facts_district", "district"),
    Index("ix_facts_village", "village"),
    Index("ix_facts_province", "province"),
    Index("ix_facts_team", "team_id"),  # a team's facts follow it when it moves
)

# All counters of one subject-period in one JSONB object (revision 0003): an activity touches one
# row per subject-period instead of one per indicator. Merged by `scoring.jsonb_add`.
indicator_sets = Table(
    "indicator_sets",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("indicators", JSONB, nullable=False),
    Index("ix_indicator_sets_empty", "subject_type", postgresql_where=text("indicators = '{}'")),
)

# Distinct households / members / teams / weeks per subject and period, reference-counted so a
# void removes a household only when no other live activity visited it.
distinct_values = Table(
    "distinct_values",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("dim", key_string(16), primary_key=True),
    Column("value", key_string(128), primary_key=True),
    Column("refcount", Integer, nullable=False),
    Index("ix_distinct_values_dead", "subject_type", postgresql_where=text("refcount <= 0")),
)

# Period-independent indicators from the teams topics: teams, members, trained_members.
state_values = Table(
    "state_values",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("indicator", key_string(80), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Index("ix_state_values_zero", "subject_type", postgresql_where=text("value = 0")),
)

team_state = Table(
    "team_state",
    metadata,
    Column("team_id", PgUUID(as_uuid=True), primary_key=True),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),  # -1: known only through its members so far
    Column("members", Integer, nullable=False),
    Column("trained_members", Integer, nullable=False),
)

member_state = Table(
    "member_state",
    metadata,
    Column("member_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("counted", Boolean, nullable=False),
    Column("trained", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
)

subjects = Table(
    "subjects",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("parent_type", key_string(16)),
    Column("parent_id", key_string(64)),
    Column("province", key_string(64)),
    Column("district", key_string(64)),
    Column("commune", key_string(64)),
    Column("village", key_string(64)),
    Index("ix_subjects_parent", "parent_type", "parent_id", "subject_type"),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("code", key_string(64), primary_key=True),
    Column("level", key_string(16), nullable=False),
    Column("path", JSONB, nullable=False),
    Column("change", String(16), nullable=False),
    Column("replaced_by", ARRAY(Text), nullable=False, server_default="{}"),
    Column("version", Integer, nullable=False),
)


class Lane(IntEnum):
    """Which queue a dirty mark waits in: a live activity's scores never queue behind the
    hundreds of thousands of re-scorings a bulk import or a recompute asks for."""

    LIVE = 0  # activities, voids, moves, targets: someone waits for these scores
    BACKGROUND = 1  # state indicators from the roster, re-scoring everything


# Append-only marks (no unique key): a consumer batch never waits on rows the publisher holds;
# the publisher coalesces duplicates when it takes them.
dirty_subjects = Table(
    "dirty_subjects",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("subject_type", key_string(16), nullable=False),
    Column("subject_id", key_string(64), nullable=False),
    Column("period", key_string(80), nullable=False),
    Column("event_time", DateTime(timezone=True)),
    # W3C traceparent of the span that marked it: the publisher's span continues that trace.
    Column("traceparent", Text),
    Column("lane", SmallInteger, nullable=False, server_default=str(int(Lane.LIVE))),
    Index("ix_dirty_subjects_key", "subject_type", "subject_id", "period"),
    Index("ix_dirty_subjects_lane", "lane", "seq"),
)

scores = Table(
    "scores",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("criteria_set", key_string(80), primary_key=True),
    Column("score", Float, nullable=False),
    Column("max_score", Float, nullable=False),
    # `json`: stored and served as written (never queried inside), no binary parse per upsert
    Column("components", JSON, nullable=False),
    Column("indicators", JSON, nullable=False),
    Column("rank", Integer),
    Column("rank_of", Integer),
    Column("version", Integer, nullable=False),
    Column("as_of_event_time", DateTime(timezone=True)),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    # Rankings scan a (period, criteria set, level) prefix. subject_id completes the key, so a
    # probe by the whole key costs one row through either index: with the three-column index,
    # stale statistics made the planner probe it and filter on subject_id, O(scores) a probe.
    Index("ix_scores_ranking", "period", "criteria_set", "subject_type", "subject_id"),
)

criteria_sets = Table(
    "criteria_sets",
    metadata,
    Column("version", String(80), primary_key=True),
    Column("name", String(60), nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("active", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activated_at", DateTime(timezone=True)),
    Index("ux_criteria_sets_one_active", "active", unique=True, postgresql_where=text("active")),
)

targets = Table(
    "targets",
    metadata,
    Column("subject_type", key_string(16), primary_key=True),
    Column("subject_id", key_string(64), primary_key=True),
    Column("period", key_string(80), primary_key=True),
    Column("indicator", key_string(80), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("unit_codes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Full recomputes run as background jobs: one at a time (the partial unique index), their
# progress written while they run so `GET /v1/recompute/{id}` can report it.
JOB_ACTIVE_STATES = ("queued", "running")
recompute_jobs = Table(
    "recompute_jobs",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("state", key_string(16), nullable=False),  # queued, running, succeeded, failed
    Column("facts_total", BigInteger),
    Column("facts_done", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    # bumped every second while the job runs: a job not bumped for long died with its process
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", JSON),
    Column("error", Text),
    Index(
        "ux_recompute_jobs_one_active",
        text("(true)"),
        unique=True,
        postgresql_where=text("state IN ('queued', 'running')"),
    ),
)

LEVEL_COLUMNS = ("province", "district", "commune", "village")


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


# --------------------------------------------------------------------------- deltas


async def apply_deltas(session: AsyncSession, deltas: Deltas) -> None:
    """Distinct sets first (their transitions become counter deltas), then every counter."""
    sets = deltas.nonzero_sets()
    distinct = deltas.nonzero_distinct()
    if distinct:
        changes = await _upsert_distinct(session, distinct)
        for (stype, sid, period, name), value in deltas.transitions(changes).items():
            bucket = sets.setdefault((stype, sid, period), {})
            bucket[name] = bucket.get(name, 0) + value
    await _upsert_counters(session, sets)
    state = {k: v for k, v in deltas.state.items() if v}
    if state:
        await _upsert_state(session, state)


async def _upsert_distinct(
    session: AsyncSession, distinct: Mapping[DistinctKey, int]
) -> list[tuple[DistinctKey, int, int]]:
    """Reference counts merged in SQL; returns `(key, delta, new refcount)` per key."""
    keys = sorted(distinct)
    result = await session.execute(
        text(
            """
            INSERT INTO scoring.distinct_values AS d
                (subject_type, subject_id, period, dim, value, refcount)
            SELECT r->>0, r->>1, r->>2, r->>3, r->>4, CAST(r->>5 AS int)
            FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
            ON CONFLICT (subject_type, subject_id, period, dim, value)
            DO UPDATE SET refcount = d.refcount + excluded.refcount
            RETURNING subject_type, subject_id, period, dim, value, refcount
            """
        ),
        {"rows": json_rows([(*k, distinct[k]) for k in keys])},
    )
    changes: list[tuple[DistinctKey, int, int]] = []
    for row in result:
        key: DistinctKey = (row[0], row[1], row[2], row[3], row[4])
        changes.append((key, distinct[key], int(row[5])))
    gone = [key for key, _, refcount in changes if refcount <= 0]
    if gone:  # only a void or a re-roll takes a value away: delete exactly those rows
        await session.execute(
            text(
                """
                DELETE FROM scoring.distinct_values d
                USING unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]),
                             CAST(:dim AS text[]), CAST(:v AS text[])) AS k(st, sid, p, dim, v)
                WHERE d.subject_type = k.st AND d.subject_id = k.sid AND d.period = k.p
                  AND d.dim = k.dim AND d.value = k.v AND d.refcount <= 0
                """
            ),
            _columns(gone, "st", "sid", "p", "dim", "v"),
        )
    return changes


def _columns(keys: Sequence[tuple[str, ...]], *names: str) -> dict[str, list[Any]]:
    """Column arrays for an `unnest(...)` statement, one per key position."""
    return {name: [key[index] for key in keys] for index, name in enumerate(names)}


async def _upsert_counters(
    session: AsyncSession, sets: Mapping[tuple[str, str, str], Mapping[str, int]]
) -> None:
    """One row per subject-period: the batch's deltas grouped in Python, merged in SQL."""
    grouped = {
        key: changed
        for key, bucket in sets.items()
        if (changed := {name: value for name, value in bucket.items() if value})
    }
    if not grouped:
        return
    shrinking = [key for key, changed in grouped.items() if min(changed.values()) < 0]
    keys = sorted(grouped)
    await session.execute(
        text(
            """
            INSERT INTO scoring.indicator_sets AS t (subject_type, subject_id, period, indicators)
            SELECT r->>0, r->>1, r->>2, r->3 FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
            ON CONFLICT (subject_type, subject_id, period)
            DO UPDATE SET indicators = scoring.jsonb_add(t.indicators, excluded.indicators)
            """
        ),
        {"rows": json_rows([(*k, grouped[k]) for k in keys])},
    )
    if shrinking:  # only negative deltas can empty a row: look at exactly those
        await session.execute(
            text(
                """
                DELETE FROM scoring.indicator_sets t
                USING unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]))
                      AS k(st, sid, p)
                WHERE t.subject_type = k.st AND t.subject_id = k.sid AND t.period = k.p
                  AND t.indicators = CAST('{}' AS jsonb)
                """
            ),
            _columns(sorted(shrinking), "st", "sid", "p"),
        )


async def _upsert_state(session: AsyncSession, state: Mapping[tuple[str, str, str], int]) -> None:
    keys = sorted(state)
    await session.execute(
        text(
            """
            INSERT INTO scoring.state_values AS t (subject_type, subject_id, indicator, value)
            SELECT * FROM unnest(CAST(:st AS text[]), CAST(:sid AS text[]),
                                 CAST(:ind AS text[]), CAST(:val AS bigint[]))
            ON CONFLICT (subject_type, subject_id, indicator)
            DO UPDATE SET value = t.value + excluded.value
            """
        ),
        {
            "st": [k[0] for k in keys],
            "sid": [k[1] for k in keys],
            "ind": [k[2] for k in keys],
            "val": [state[k] for k in keys],
        },
    )
    await session.execute(text("DELETE FROM scoring.state_values WHERE value = 0"))


_UPSERT_SUBJECTS = text(
    """
    INSERT INTO scoring.subjects AS s (subject_type, subject_id, parent_type, parent_id,
        province, district, commune, village)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
    ON CONFLICT (subject_type, subject_id) DO UPDATE SET
        parent_type = excluded.parent_type, parent_id = excluded.parent_id,
        province = excluded.province, district = excluded.district,
        commune = excluded.commune, village = excluded.village
    -- identical rows are skipped: no dead tuples for the common case
    WHERE (s.parent_type, s.parent_id, s.province, s.district, s.commune, s.village)
          IS DISTINCT FROM (excluded.parent_type, excluded.parent_id, excluded.province,
                            excluded.district, excluded.commune, excluded.village)
    """
)
_SUBJECT_COLUMNS = (
    "subject_type",
    "subject_id",
    "parent_type",
    "parent_id",
    "province",
    "district",
    "commune",
    "village",
)


async def upsert_subjects(session: AsyncSession, rows: Iterable[dict[str, str | None]]) -> None:
    """One statement (a batch places thousands of subjects; SQLAlchemy's multi-row insert
    bound eight parameters each)."""
    unique = {(r["subject_type"], r["subject_id"]): r for r in rows}
    if not unique:
        return
    ordered = [unique[k] for k in sorted(unique, key=lambda k: (k[0] or "", k[1] or ""))]
    await session.execute(
        _UPSERT_SUBJECTS,
        {"rows": json_rows([[r[column] for column in _SUBJECT_COLUMNS] for r in ordered])},
    )


async def mark_dirty(
    session: AsyncSession,
    touched: Mapping[tuple[str, str, str], datetime | None],
    *,
    traceparent: str | None = None,
    lane: Lane = Lane.LIVE,
) -> None:
    if not touched:
        return
    keys = sorted(touched)
    await session.execute(
        text(
            """
            INSERT INTO scoring.dirty_subjects
                (subject_type, subject_id, period, event_time, traceparent, lane)
            SELECT r->>0, r->>1, r->>2, CAST(r->>3 AS timestamptz), CAST(:tp AS text),
                   CAST(:lane AS smallint)
            FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
            """
        ),
        {"rows": json_rows([(*k, touched[k]) for k in keys]), "tp": traceparent, "lane": lane},
    )


async def mark_all_dirty(session: AsyncSession) -> int:
    """Every subject and period with indicators: after activation or a full recompute (in the
    background lane: live scores go first)."""
    result = await session.execute(
        text(
            """
            INSERT INTO scoring.dirty_subjects (subject_type, subject_id, period, lane)
            SELECT subject_type, subject_id, period, CAST(:lane AS smallint)
            FROM scoring.indicator_sets
            """
        ),
        {"lane": Lane.BACKGROUND},
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass
class DirtyMarks:
    """Marks taken by one publisher pass, coalesced per subject-period."""

    taken: int = 0
    # subject-period -> latest event time (the watermark)
    event_times: dict[tuple[str, str, str], datetime | None] = field(default_factory=dict)
    # subject-period -> distinct traceparents of the batches that marked it, latest last
    traces: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)


def _queue_end(*, order: str, teams_only: bool) -> TextClause:
    teams = "AND subject_type = 'team' " if teams_only else ""
    return text(
        "SELECT subject_type, subject_id, period FROM scoring.dirty_subjects "  # noqa: S608 - constant fragments
        f"WHERE lane = :lane {teams}ORDER BY seq {order} LIMIT :half FOR UPDATE SKIP LOCKED"
    )


# (oldest end, newest end) of a lane, for every level or for teams only
_QUEUE_ENDS = {
    teams_only: (
        _queue_end(order="ASC", teams_only=teams_only),
        _queue_end(order="DESC", teams_only=teams_only),
    )
    for teams_only in (False, True)
}
# The background lane's share of a pass while the live lane is busy: it advances, slowly.
BACKGROUND_SHARE = 4


async def _pick(
    session: AsyncSession, *, lane: Lane, limit: int, teams_only: bool
) -> dict[tuple[str, str, str], None]:
    """Up to `limit` subject-periods of one lane, half from each end of its queue."""
    picked: dict[tuple[str, str, str], None] = {}
    oldest, newest = _QUEUE_ENDS[teams_only]
    # UNION forbids FOR UPDATE: two statements
    for statement, count in ((oldest, limit // 2), (newest, limit - limit // 2)):
        if count > 0:
            ends = await session.execute(statement, {"half": count, "lane": lane})
            picked.update(dict.fromkeys((r[0], r[1], r[2]) for r in ends))
    return picked


async def take_dirty(session: AsyncSession, *, limit: int, teams_only: bool = False) -> DirtyMarks:
    """Subject-periods from both ends of each lane's queue, each with every mark it has (in
    either lane), coalesced.

    The live lane goes first; the background lane fills what the live one leaves of `limit`,
    and at least a quarter of it (a bulk import's re-scoring advances under live load, and a
    live activity never waits behind it). Within a lane, half the pass goes to the oldest
    marks (nothing starves), half to the newest (a fresh event is scored within a pass or two
    even behind a backlog). Taking all of a subject-period's marks publishes it once for the
    whole backlog. `teams_only`: leave the units' marks to gather (they are re-marked by nearly
    every batch, so taking them less often publishes each once for many batches).
    """
    picked = await _pick(session, lane=Lane.LIVE, limit=limit, teams_only=teams_only)
    room = max(limit - len(picked), limit // BACKGROUND_SHARE)
    for key in await _pick(session, lane=Lane.BACKGROUND, limit=room, teams_only=teams_only):
        picked.setdefault(key)
    if not picked:
        return DirtyMarks(taken=0)
    # Keys as arrays: the planner joins them through ix_dirty_subjects_key (a nested loop),
    # whatever the size of the backlog.
    rows = (
        await session.execute(
            text(
                """
                WITH taken AS (
                    DELETE FROM scoring.dirty_subjects d
                    WHERE d.seq IN (
                        SELECT m.seq FROM scoring.dirty_subjects m
                        JOIN unnest(CAST(:st AS text[]), CAST(:sid AS text[]),
                                    CAST(:p AS text[])) AS k(st, sid, p)
                          ON m.subject_type = k.st AND m.subject_id = k.sid AND m.period = k.p
                        FOR UPDATE OF m SKIP LOCKED
                    )
                    RETURNING d.seq, d.subject_type, d.subject_id, d.period, d.event_time,
                              d.traceparent
                )
                SELECT subject_type, subject_id, period, event_time, traceparent
                FROM taken ORDER BY seq
                """
            ),
            _columns(list(picked), "st", "sid", "p"),
        )
    ).all()
    marks = DirtyMarks(taken=len(rows))
    latest = marks.event_times
    for stype, sid, period, moment, traceparent in rows:
        key = (stype, sid, period)
        previous = latest.get(key)
        if key not in latest or (moment is not None and (previous is None or moment > previous)):
            latest[key] = moment
        if traceparent:
            seen = marks.traces.setdefault(key, [])
            if traceparent in seen:
                seen.remove(traceparent)
            seen.append(traceparent)
    return marks


# --------------------------------------------------------------------------- roster


_LOAD_MEMBERS = text(
    "SELECT member_id, team_id, counted, trained, version FROM scoring.member_state"
    " WHERE member_id = ANY(CAST(:ids AS uuid[])) ORDER BY member_id FOR UPDATE"
)
_LOAD_TEAMS = text(
    "SELECT team_id, province, district, commune, village, active, version, members,"
    " trained_members FROM scoring.team_state"
    " WHERE team_id = ANY(CAST(:ids AS uuid[])) ORDER BY team_id FOR UPDATE"
)


async def load_roster(
    session: AsyncSession, *, team_ids: Iterable[UUID], member_ids: Iterable[UUID]
) -> Roster:
    """The stored state of these teams and members and of the members' teams, locked (members
    first, then teams, each in id order). One statement each, the ids as one array parameter:
    a registry import brings thousands of each per batch."""
    roster = Roster()
    members = sorted(set(member_ids))
    if members:
        for row in await session.execute(_LOAD_MEMBERS, {"ids": members}):
            roster.members[row[0]] = MemberState(
                member_id=row[0], team_id=row[1], counted=row[2], trained=row[3], version=row[4]
            )
    teams = sorted({*team_ids, *(m.team_id for m in roster.members.values())})
    if teams:
        for row in await session.execute(_LOAD_TEAMS, {"ids": teams}):
            roster.teams[row[0]] = TeamState(
                team_id=row[0],
                path=UnitPathCodes(row[1], row[2], row[3], row[4]) if row[1] else None,
                active=row[5],
                version=row[6],
            )
            roster.counts[row[0]] = (row[7], row[8])
    return roster


# The roster's rows were read under lock (`load_roster`) and the newer-version-wins rule applied
# to them in memory (`domain.Roster`): these statements write the outcome as it is, one
# statement per table, rows as one JSON document. Rows the batch left as they were are skipped.
_SAVE_TEAMS = text(
    """
    INSERT INTO scoring.team_state AS t (team_id, province, district, commune, village, active,
        version, members, trained_members)
    SELECT CAST(r->>0 AS uuid), r->>1, r->>2, r->>3, r->>4, CAST(r->>5 AS boolean),
        CAST(r->>6 AS int), CAST(r->>7 AS int), CAST(r->>8 AS int)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
    ON CONFLICT (team_id) DO UPDATE SET province = excluded.province,
        district = excluded.district, commune = excluded.commune, village = excluded.village,
        active = excluded.active, version = excluded.version, members = excluded.members,
        trained_members = excluded.trained_members
    WHERE (t.province, t.district, t.commune, t.village, t.active, t.version, t.members,
           t.trained_members)
          IS DISTINCT FROM (excluded.province, excluded.district, excluded.commune,
                            excluded.village, excluded.active, excluded.version,
                            excluded.members, excluded.trained_members)
    """
)
_SAVE_MEMBERS = text(
    """
    INSERT INTO scoring.member_state AS t (member_id, team_id, counted, trained, version)
    SELECT CAST(r->>0 AS uuid), CAST(r->>1 AS uuid), CAST(r->>2 AS boolean),
        CAST(r->>3 AS boolean), CAST(r->>4 AS int)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
    ON CONFLICT (member_id) DO UPDATE SET team_id = excluded.team_id,
        counted = excluded.counted, trained = excluded.trained, version = excluded.version
    WHERE (t.team_id, t.counted, t.trained, t.version)
          IS DISTINCT FROM (excluded.team_id, excluded.counted, excluded.trained,
                            excluded.version)
    """
)


async def save_roster(session: AsyncSession, roster: Roster) -> None:
    team_rows = []
    for team_id in sorted({*roster.teams, *roster.counts}):
        team = roster.teams.get(team_id)
        members, trained = roster.counts.get(team_id, (0, 0))
        path = team.path if team is not None else None
        team_rows.append(
            (
                team_id,
                *((path.province, path.district, path.commune, path.village) if path else _NO_PATH),
                bool(team and team.active),
                team.version if team is not None else -1,
                members,
                trained,
            )
        )
    if team_rows:
        await session.execute(_SAVE_TEAMS, {"rows": json_rows(team_rows)})
    member_rows = [
        (m.member_id, m.team_id, m.counted, m.trained, m.version)
        for _, m in sorted(roster.members.items())
    ]
    if member_rows:
        await session.execute(_SAVE_MEMBERS, {"rows": json_rows(member_rows)})


_NO_PATH = (None, None, None, None)


# --------------------------------------------------------------------------- admin units


@dataclass(frozen=True)
class AdminUnitRow:
    code: str
    level: str
    path: dict[str, str | None]
    change: str
    replaced_by: list[str]
    version: int


_STORED_UNIT_VERSIONS = text(
    "SELECT code, version FROM scoring.admin_units WHERE code = ANY(CAST(:codes AS text[]))"
    " ORDER BY code FOR UPDATE"
)


async def save_admin_units(session: AsyncSession, units: Sequence[AdminUnitRow]) -> list[bool]:
    """Store the units' latest states in one statement; per unit, in order, whether it was
    newer than what was stored before it (one by one, `False`: ignore it)."""
    if not units:
        return []
    codes = sorted({u.code for u in units})
    result = await session.execute(_STORED_UNIT_VERSIONS, {"codes": codes})
    stored: dict[str, int] = {row[0]: row[1] for row in result}
    fresh: list[bool] = []
    latest: dict[str, AdminUnitRow] = {}
    for unit in units:
        newer = unit.version > stored.get(unit.code, unit.version - 1)
        fresh.append(newer)
        if newer:
            stored[unit.code] = unit.version
            latest[unit.code] = unit
    if latest:
        rows = [
            {
                "code": u.code,
                "level": u.level,
                "path": u.path,
                "change": u.change,
                "replaced_by": u.replaced_by,
                "version": u.version,
            }
            for u in (latest[code] for code in sorted(latest))
        ]
        await session.execute(upsert_newer(admin_units, rows, key=("code",), stamp=None))
    return fresh


async def admin_unit_path(session: AsyncSession, code: str) -> UnitPathCodes | None:
    path = await session.scalar(select(admin_units.c.path).where(admin_units.c.code == code))
    if not path or not path.get("province"):
        return None
    return UnitPathCodes(**{level: path.get(level) for level in LEVEL_COLUMNS})


# --------------------------------------------------------------------------- reads


async def indicators_for(
    session: AsyncSession, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], dict[str, float]]:
    """Period indicators plus the subject's state indicators, for many subject-periods."""
    if not keys:
        return {}
    out: dict[tuple[str, str, str], dict[str, float]] = {k: {} for k in keys}
    rows = await session.execute(
        text(
            """
            SELECT v.subject_type, v.subject_id, v.period, v.indicators
            FROM scoring.indicator_sets v
            JOIN unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]))
                 AS k(subject_type, subject_id, period)
              ON v.subject_type = k.subject_type AND v.subject_id = k.subject_id
             AND v.period = k.period
            """
        ),
        {"st": [k[0] for k in keys], "sid": [k[1] for k in keys], "p": [k[2] for k in keys]},
    )
    for stype, sid, period, values in rows:
        out[(stype, sid, period)].update(domain.visible_indicators(values))
    subject_keys = sorted({(k[0], k[1]) for k in keys})
    state_rows = await session.execute(
        text(
            """
            SELECT s.subject_type, s.subject_id, s.indicator, s.value
            FROM scoring.state_values s
            JOIN unnest(CAST(:st AS text[]), CAST(:sid AS text[])) AS k(subject_type, subject_id)
              ON s.subject_type = k.subject_type AND s.subject_id = k.subject_id
            """
        ),
        {"st": [k[0] for k in subject_keys], "sid": [k[1] for k in subject_keys]},
    )
    by_subject: dict[tuple[str, str], dict[str, float]] = {}
    for stype, sid, indicator, value in state_rows:
        by_subject.setdefault((stype, sid), {})[indicator] = float(value)
    for key, values in out.items():
        values.update(by_subject.get((key[0], key[1]), {}))
    return out


async def targets_for(
    session: AsyncSession, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], dict[str, float]]:
    out: dict[tuple[str, str, str], dict[str, float]] = {k: {} for k in keys}
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
        out[(stype, sid, period)][indicator] = float(value)
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


async def upsert_scores(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, computed_at: datetime
) -> dict[tuple[str, str, str, str], tuple[int, datetime | None]]:
    """Store computed scores with their ranks; each stored change bumps the version by one.

    One `unnest` statement (a multi-VALUES insert of thousands of rows was bind-bound).
    """
    if not rows:
        return {}
    ordered = sorted(
        rows, key=lambda r: (r["subject_type"], r["subject_id"], r["period"], r["criteria_set"])
    )
    result = await session.execute(
        text(
            """
            INSERT INTO scoring.scores AS s
                (subject_type, subject_id, period, criteria_set, score, max_score, components,
                 indicators, rank, rank_of, version, as_of_event_time, computed_at)
            SELECT r->>0, r->>1, r->>2, r->>3, CAST(r->>4 AS float8), CAST(r->>5 AS float8),
                   CAST(co AS json), CAST(ind AS json), CAST(r->>6 AS int),
                   CAST(r->>7 AS int), 1, CAST(r->>8 AS timestamptz), CAST(:now AS timestamptz)
            -- zipped in order (the rows are sorted: publishers lock scores in one order)
            FROM ROWS FROM (jsonb_array_elements(CAST(:rows AS jsonb)),
                            unnest(CAST(:co AS text[])), unnest(CAST(:ind AS text[])))
                 AS k(r, co, ind)
            ON CONFLICT (subject_type, subject_id, period, criteria_set) DO UPDATE SET
                score = excluded.score,
                max_score = excluded.max_score,
                components = excluded.components,
                indicators = excluded.indicators,
                rank = excluded.rank,
                rank_of = excluded.rank_of,
                version = s.version + 1,
                as_of_event_time = greatest(s.as_of_event_time, excluded.as_of_event_time),
                computed_at = excluded.computed_at
            RETURNING subject_type, subject_id, period, criteria_set, version, as_of_event_time
            """
        ),
        {
            # Plain values as JSON rows (asyncpg encodes array parameters element by element);
            # the JSON documents as text, stored exactly as written (`json`, ADR 0005).
            "rows": json_rows(
                [
                    (
                        r["subject_type"],
                        r["subject_id"],
                        r["period"],
                        r["criteria_set"],
                        r["score"],
                        r["max_score"],
                        r.get("rank"),
                        r.get("rank_of"),
                        r["as_of_event_time"],
                    )
                    for r in ordered
                ]
            ),
            "co": [dump_json(r["components"]) for r in ordered],
            "ind": [dump_json(r["indicators"]) for r in ordered],
            "now": computed_at,
        },
    )
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in result}


async def sibling_ranks(
    session: AsyncSession,
    keys: Sequence[tuple[str, str, str]],
    *,
    criteria: str,
    fresh: Mapping[tuple[str, str, str], float],
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Rank of each subject-period among the subjects of its type sharing its parent.

    Siblings' stored scores, overridden by the `fresh` scores about to be stored (so ranks are
    known before the one upsert that writes scores and ranks together).

    Plain index lookups, ranked in Python: a window function joined back to an `unnest` (which
    the planner estimates at 10 rows) was re-run once per key. The nation is not ranked.
    """
    if not keys:
        return {}
    subject_keys = sorted({(k[0], k[1]) for k in keys})
    parents: dict[tuple[str, str], tuple[str, str]] = {}
    for stype, sid, ptype, pid in await session.execute(
        text(
            """
            SELECT s.subject_type, s.subject_id, s.parent_type, s.parent_id
            FROM unnest(CAST(:st AS text[]), CAST(:sid AS text[])) AS k(subject_type, subject_id)
            JOIN scoring.subjects s
              ON s.subject_type = k.subject_type AND s.subject_id = k.subject_id
            WHERE s.parent_id IS NOT NULL
            """
        ),
        {"st": [k[0] for k in subject_keys], "sid": [k[1] for k in subject_keys]},
    ):
        parents[(stype, sid)] = (ptype, pid)
    groups = sorted({(*parents[(k[0], k[1])], k[0], k[2]) for k in keys if (k[0], k[1]) in parents})
    if not groups:
        return {}
    siblings = await _sibling_scores(session, groups, criteria=criteria, fresh=fresh)
    for (stype, sid, period), value in fresh.items():
        parent = parents.get((stype, sid))
        if parent is not None:
            siblings[(*parent, stype, period)][sid] = value
    out: dict[tuple[str, str, str], tuple[int, int]] = {}
    for stype, sid, period in keys:
        parent = parents.get((stype, sid))
        if parent is None:
            continue
        rank = domain.rank_of(siblings[(*parent, stype, period)], sid)
        if rank is not None:
            out[(stype, sid, period)] = rank
    return out


Family = tuple[str, str, str]  # parent type, parent id, subject type
Group = tuple[str, str, str, str]  # a family in one period


async def _sibling_scores(
    session: AsyncSession,
    groups: Sequence[Group],
    *,
    criteria: str,
    fresh: Mapping[tuple[str, str, str], float],
) -> dict[Group, dict[str, float]]:
    """Stored scores of every subject of each group, by subject id; the `fresh` ones are not
    read (the caller puts their new scores in: at national spread a team is alone in its
    village, and most of a pass's keys are their own siblings)."""
    siblings: dict[Group, dict[str, float]] = {g: {} for g in groups}
    # Two steps, each an exact index lookup: the siblings of each parent, then their scores by
    # the whole primary key. Joined in one statement, the planner looked scores up by subject
    # alone (period as a filter), reading every period's row of every sibling: 399 ms a call
    # on average, PostgreSQL's costliest statement in bench_scoring_throughput; now 47 ms.
    # The scores are probed one key at a time (LATERAL … LIMIT 1 keeps the planner from
    # flattening it into a hash join over every score of the criteria set, which grows with
    # the table, not with the pass).
    families = sorted({g[:3] for g in groups})
    children: dict[Family, list[str]] = {f: [] for f in families}
    for ptype, pid, stype, sid in await session.execute(
        text(
            """
            SELECT s.parent_type, s.parent_id, s.subject_type, s.subject_id
            FROM unnest(CAST(:pt AS text[]), CAST(:pid AS text[]), CAST(:st AS text[]))
                 AS f(parent_type, parent_id, subject_type)
            JOIN scoring.subjects s
              ON s.parent_type = f.parent_type AND s.parent_id = f.parent_id
             AND s.subject_type = f.subject_type
            """
        ),
        _columns(families, "pt", "pid", "st"),
    ):
        children[(ptype, pid, stype)].append(sid)
    wanted = [
        (g[2], sid, g[3], g)
        for g in groups
        for sid in children[g[:3]]
        if (g[2], sid, g[3]) not in fresh
    ]
    if not wanted:
        return siblings
    by_key = {(stype, sid, period): g for stype, sid, period, g in wanted}
    for stype, sid, period, value in await session.execute(
        text(
            """
            SELECT k.subject_type, k.subject_id, k.period, sc.score
            FROM (
              SELECT r->>0 AS subject_type, r->>1 AS subject_id, r->>2 AS period
              FROM jsonb_array_elements(CAST(:keys AS jsonb)) AS r
            ) k
            CROSS JOIN LATERAL (
              SELECT s.score FROM scoring.scores s
              WHERE s.subject_type = k.subject_type AND s.subject_id = k.subject_id
                AND s.period = k.period AND s.criteria_set = :cs
              LIMIT 1
            ) sc
            """
        ),
        {"keys": json_rows([w[:3] for w in wanted]), "cs": criteria},
    ):
        siblings[by_key[(stype, sid, period)]][sid] = float(value)
    return siblings


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


# --------------------------------------------------------------------------- scores and rankings


async def subject_exists(session: AsyncSession, *, subject_type: str, subject_id: str) -> bool:
    """Whether the subject has been placed (it has or had indicators)."""
    found = await session.scalar(
        select(subjects.c.subject_id).where(
            subjects.c.subject_type == subject_type, subjects.c.subject_id == subject_id
        )
    )
    return found is not None


async def score_row(
    session: AsyncSession,
    *,
    subject_type: str,
    subject_id: str,
    period: str,
    criteria_set: str,
) -> RowMapping | None:
    """The published score of a subject-period under one criteria set."""
    return (
        (
            await session.execute(
                select(scores).where(
                    scores.c.subject_type == subject_type,
                    scores.c.subject_id == subject_id,
                    scores.c.period == period,
                    scores.c.criteria_set == criteria_set,
                )
            )
        )
        .mappings()
        .first()
    )


_RANKING = text(
    """
    SELECT sc.subject_id, sc.score, sc.version, sc.as_of_event_time,
           rank() OVER (ORDER BY sc.score DESC) AS rank, count(*) OVER () AS rank_of
    FROM scoring.scores sc
    JOIN scoring.subjects s
      ON s.subject_type = sc.subject_type AND s.subject_id = sc.subject_id
    WHERE sc.subject_type = :level AND sc.period = :period
      AND sc.criteria_set = :cs
      AND (CAST(:parent AS text) IS NULL
           OR :parent IN (s.province, s.district, s.commune, s.village))
    ORDER BY sc.score DESC, sc.subject_id
    LIMIT :limit OFFSET :offset
    """
)


async def ranking_rows(
    session: AsyncSession,
    *,
    level: str,
    period: str,
    criteria_set: str,
    parent: str | None,
    limit: int,
    offset: int,
) -> Sequence[Row[*tuple[Any, ...]]]:
    """(subject_id, score, version, as_of_event_time, rank, rank_of) of `level` under `parent`
    (None: all), best score first (competition rank, ties share)."""
    return (
        await session.execute(
            _RANKING,
            {
                "level": level,
                "period": period,
                "cs": criteria_set,
                "parent": parent,
                "limit": limit,
                "offset": offset,
            },
        )
    ).all()


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
