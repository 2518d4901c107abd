"""Notifications persistence: tables in the `notifications` schema and the queries over them.

Everything here is set-based where it can be (multi-row inserts, one statement per batch) and
keyed so that redelivered events change nothing: activity ids, score versions, and a partial
unique index on the dedupe key of alerts that are not resolved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from opentelemetry.propagate import inject
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from common.contracts.teams import TeamChanged
from common.db import UnitOfWork, insert_rows, json_rows, upsert_newer
from common.outbox_tables import define_service_tables
from notifications.domain import NATIONAL, RuleOverride, ScoreKey, ScoreState, SubjectKey

SCHEMA = "notifications"
metadata = MetaData(schema=SCHEMA)
service_tables = define_service_tables(metadata)
OPEN_STATES = ("open", "acknowledged")

rules_table = Table(
    "rules",
    metadata,
    Column("scope", String(64), primary_key=True),  # "national" or a province code
    Column("alert_type", String(32), primary_key=True),
    Column("enabled", Boolean),
    Column("params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Replica of the teams topic plus the last activity seen: what the inactivity sweep reads.
teams_table = Table(
    "teams",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("code", String(64)),
    Column("unit_path", ARRAY(String(64)), nullable=False, server_default=text("'{}'")),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("established_on", Date),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_activity_at", DateTime(timezone=True)),
)

# Replica of the evaluation rounds (`scoring.evaluation-round.v1`): what the overdue rule reads.
rounds_table = Table(
    "review_rounds",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("level", String(16), nullable=False),
    Column("unit_code", String(64), nullable=False),
    Column("period", String(80), nullable=False),
    Column("criteria_set", String(80), nullable=False),
    Column("due_on", Date, nullable=False),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False),
)

# The path of every unit code any team is placed under, written only by the triggers on `teams`
# (migration 0007): what a unit's score alert is scoped by.
unit_paths_table = Table(
    "unit_paths",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("path", ARRAY(String(64)), nullable=False),
)

# The few facts of each activity the suspicious-activity checks count; one row per activity id
# so an activity re-published under a new event id is counted once.
activity_log = Table(
    "activity_log",
    metadata,
    Column("activity_id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("member_id", PgUUID(as_uuid=True)),
    Column("kind", String(32), nullable=False),
    Column("household_hash", String(128)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("backdated_hours", Float, nullable=False),
    # A voided activity stays as a tombstone: it no longer counts, and a recorded event that
    # arrives after its void (different topics, no order between them) is not counted either.
    Column("voided", Boolean, nullable=False, server_default=text("false")),
    Index("ix_activity_log_member", "member_id", "occurred_at"),
    Index("ix_activity_log_household", "household_hash", "occurred_at"),
    Index("ix_activity_log_team_recorded", "team_id", "recorded_at"),
)

score_state = Table(
    "score_state",
    metadata,
    Column("subject_type", String(16), primary_key=True),
    Column("subject_id", String(200), primary_key=True),
    Column("period", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("score", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

alerts_table = Table(
    "alerts",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("alert_type", String(32), nullable=False),
    Column("dedupe_key", String(600), nullable=False),
    Column("subject_type", String(32), nullable=False),
    Column("subject_id", String(300), nullable=False),
    Column("period", String(64)),
    Column("unit_path", ARRAY(String(64)), nullable=False, server_default=text("'{}'")),
    Column("status", String(16), nullable=False),
    # The English text (the event contract's `summary`, logs); readers get `message` rendered
    # in their language (NULL for alerts raised before the catalogues: `summary` is shown).
    Column("summary", String(500), nullable=False),
    Column("message", JSONB),  # common.i18n.Message.as_json(): {"msgid", "args"}
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Index(
        "uq_alerts_active_dedupe",
        "dedupe_key",
        unique=True,
        postgresql_where=text("status <> 'resolved'"),
    ),
    Index("ix_alerts_unit_path", "unit_path", postgresql_using="gin"),
    Index("ix_alerts_status_id", "status", "id"),
    # the unresolved alerts of a batch of scores' subject-periods (`open_alerts_of_scores`)
    Index(
        "ix_alerts_open_subject_period",
        "subject_type",
        "subject_id",
        "period",
        postgresql_where=text("status <> 'resolved'"),
    ),
)

subscriptions_table = Table(
    "subscriptions",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("alert_types", ARRAY(String(32)), nullable=False),
    # Kept in clear: HMAC signing needs it (encrypt at rest with a KMS key in production).
    Column("secret", String(128), nullable=False),
    Column("language", String(8), nullable=False, server_default="vi"),  # of the posted texts
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
)

deliveries_table = Table(
    "deliveries",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),  # also the idempotency key
    Column("alert_id", PgUUID(as_uuid=True), ForeignKey("alerts.id"), nullable=False),
    Column("subscription_id", PgUUID(as_uuid=True), ForeignKey("subscriptions.id"), nullable=False),
    Column("status", String(16), nullable=False),  # pending | succeeded | dead | cancelled
    Column("attempts", Integer, nullable=False, server_default="0"),
    # `attempts` when the current round began (a redelivery starts a new round, same budget).
    Column("round_start", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),  # the exact bytes sent, identical on every attempt
    Column("last_status_code", Integer),
    Column("last_error", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    # W3C traceparent of the span that raised the alert: every attempt continues that trace.
    Column("traceparent", Text),
    UniqueConstraint("alert_id", "subscription_id", name="uq_deliveries_alert_subscription"),
    Index("ix_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("delivery_id", PgUUID(as_uuid=True), ForeignKey("deliveries.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(16), nullable=False),  # success | http_error | network_error | blocked
    Column("status_code", Integer),
    Column("error", String(500)),
    Index("ix_delivery_attempts_delivery", "delivery_id", "id"),
)


# --------------------------------------------------------------------------- rules


async def rule_overrides(session: AsyncSession, *, scopes: Iterable[str]) -> list[RuleOverride]:
    rows = await session.execute(
        select(rules_table).where(rules_table.c.scope.in_(list({NATIONAL, *scopes})))
    )
    return [
        RuleOverride(
            scope=r.scope, alert_type=r.alert_type, enabled=r.enabled, params=dict(r.params)
        )
        for r in rows
    ]


async def put_rule_override(
    session: AsyncSession,
    *,
    scope: str,
    alert_type: str,
    enabled: bool | None,
    params: Mapping[str, Any],
) -> None:
    statement = insert(rules_table).values(
        scope=scope, alert_type=alert_type, enabled=enabled, params=dict(params)
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[rules_table.c.scope, rules_table.c.alert_type],
            set_={
                "enabled": statement.excluded.enabled,
                "params": statement.excluded.params,
                "updated_at": func.now(),
            },
        )
    )


# --------------------------------------------------------------------------- teams replica


async def upsert_teams(session: AsyncSession, teams: Sequence[TeamChanged]) -> None:
    """Apply teams' latest states; an older version (compaction, replays) never wins."""
    latest: dict[UUID, TeamChanged] = {}
    for team in teams:  # one row per id: a multi-row upsert may not touch a row twice
        if team.id not in latest or team.version > latest[team.id].version:
            latest[team.id] = team
    if not latest:
        return
    await session.execute(
        upsert_newer(
            teams_table,
            [_team_row(t) for t in latest.values()],
            columns=("code", "unit_path", "status", "established_on", "version"),
            stamp=None,
        )
    )


def _team_row(team: TeamChanged) -> dict[str, Any]:
    path = team.unit_path
    codes = [path.province, path.district, path.commune, path.village] if path else []
    return {
        "id": team.id,
        "code": team.code,
        "unit_path": [c for c in codes if c],
        "status": team.status,
        "established_on": team.established_on,
        "version": team.version,
        "first_seen_at": team.changed_at,
    }


async def touch_teams(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record the latest activity per team (rows: id, unit_path, last_activity_at,
    first_seen_at); creates a placeholder row when the team event has not arrived yet."""
    if not rows:
        return
    statement = insert_rows(teams_table, rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[teams_table.c.id],
            set_={
                "last_activity_at": func.greatest(
                    teams_table.c.last_activity_at, statement.excluded.last_activity_at
                ),
                # The activity's path fills in a placeholder; a team event's path wins.
                "unit_path": func.coalesce(
                    func.nullif(teams_table.c.unit_path, text("'{}'::varchar[]")),
                    statement.excluded.unit_path,
                ),
            },
        )
    )


async def teams_for_sweep(
    session: AsyncSession, *, team_ids: Sequence[UUID] | None = None
) -> list[RowMapping]:
    query = select(teams_table)
    if team_ids is not None:
        query = query.where(teams_table.c.id.in_(list(team_ids)))
    return list((await session.execute(query)).mappings())


async def upsert_rounds(session: AsyncSession, rounds: Sequence[Mapping[str, Any]]) -> None:
    """The newest version of each round wins (rows of one call have distinct ids)."""
    if rounds:
        await session.execute(upsert_newer(rounds_table, rounds, stamp=None))


async def rounds_for_sweep(
    session: AsyncSession, *, round_ids: Sequence[UUID] | None = None
) -> list[RowMapping]:
    query = select(rounds_table)
    if round_ids is not None:
        query = query.where(rounds_table.c.id.in_(list(round_ids)))
    return list((await session.execute(query)).mappings())


async def unit_paths_of(
    session: AsyncSession, subjects: Iterable[SubjectKey]
) -> dict[SubjectKey, tuple[str, ...]]:
    """The unit path of each subject: a team's from the replica, a unit's as the teams placed
    in it spell it (`unit_paths`; scores of units carry no path, and a unit without teams has
    no score worth an alert), in two statements whatever the number of subjects."""
    wanted = set(subjects)
    paths: dict[SubjectKey, tuple[str, ...]] = {}
    team_ids: dict[UUID, SubjectKey] = {}
    unit_codes: dict[str, list[SubjectKey]] = {}
    for subject in wanted:
        if subject.subject_type == "national":
            paths[subject] = ()
        elif subject.subject_type == "province":
            paths[subject] = (subject.subject_id,)
        elif subject.subject_type == "team":
            team_id = _uuid_or_none(subject.subject_id)
            paths[subject] = ()
            if team_id is not None:
                team_ids[team_id] = subject
        else:
            paths[subject] = ()
            unit_codes.setdefault(subject.subject_id, []).append(subject)
    if team_ids:
        rows = await session.execute(
            select(teams_table.c.id, teams_table.c.unit_path).where(
                teams_table.c.id == any_(bindparam("ids", type_=ARRAY(PgUUID(as_uuid=True))))
            ),
            {"ids": list(team_ids)},
        )
        for team_id, path in rows:
            paths[team_ids[team_id]] = tuple(path or ())
    if unit_codes:
        rows = await session.execute(
            select(unit_paths_table.c.code, unit_paths_table.c.path).where(
                unit_paths_table.c.code == any_(bindparam("codes", type_=ARRAY(String(64))))
            ),
            {"codes": list(unit_codes)},
        )
        for code, path in rows:
            for subject in unit_codes[code]:
                paths[subject] = tuple(path)
    return paths


async def score_states_of(
    session: AsyncSession, keys: Iterable[ScoreKey]
) -> dict[ScoreKey, RowMapping]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.execute(
        text(
            """
            SELECT s.subject_type, s.subject_id, s.period, s.version, s.score
            FROM unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]))
                AS k(st, sid, p)
            JOIN notifications.score_state s
              ON s.subject_type = k.st AND s.subject_id = k.sid AND s.period = k.p
            """
        ),
        {
            "st": [k.subject_type for k in wanted],
            "sid": [k.subject_id for k in wanted],
            "p": [k.period for k in wanted],
        },
    )
    return {
        ScoreKey(row["subject_type"], row["subject_id"], row["period"]): row
        for row in rows.mappings()
    }


# Returns the keys *not* stored (almost always none), not the thousands stored.
_SAVE_SCORE_STATES = text(
    """
    WITH given AS (
        SELECT r->>0 AS subject_type, r->>1 AS subject_id, r->>2 AS period,
               CAST(r->>3 AS bigint) AS version, CAST(r->>4 AS float8) AS score
        FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
    ), stored AS (
        INSERT INTO notifications.score_state AS s
            (subject_type, subject_id, period, version, score)
        SELECT * FROM given
        ON CONFLICT (subject_type, subject_id, period) DO UPDATE
            SET version = excluded.version, score = excluded.score, updated_at = now()
            WHERE s.version < excluded.version
        RETURNING s.subject_type, s.subject_id, s.period
    )
    SELECT g.subject_type, g.subject_id, g.period FROM given g
    WHERE NOT EXISTS (
        SELECT FROM stored t
        WHERE t.subject_type = g.subject_type AND t.subject_id = g.subject_id
          AND t.period = g.period
    )
    """
)


async def save_score_states(
    session: AsyncSession, states: Mapping[ScoreKey, tuple[int, float]]
) -> set[ScoreKey]:
    """Store the newest `(version, score)` of each key; returns the keys stored (a key whose
    stored version is already as new is left alone: stale or replayed). One statement over
    JSON rows, in key order (concurrent writers lock rows in one order)."""
    if not states:
        return set()
    keys = sorted(states)
    refused = await session.execute(
        # rows as JSON (`common.db.json_rows`): asyncpg encodes arrays element by element
        _SAVE_SCORE_STATES,
        {"rows": json_rows([(*key, *states[key]) for key in keys])},
    )
    return set(states).difference(ScoreKey(*row) for row in refused)


_UNKNOWN = object()  # a key whose state this transaction could not store: read it again


class ScoreStates:
    """The judged state of each score key this consumer has read or written, kept in memory
    so a batch of scores does not read its previous states back from the table.

    Only the consumer that holds a key's partition writes its state (keys and partitions
    follow the record key), so what it wrote last is the latest, as long as it holds the
    partition: `forget` on every rebalance. Memory learns only what a transaction committed
    (`UnitOfWork.after_commit`), and nothing a transaction begun before the last `forget`
    saw. Bounded: past `max_keys` it starts again from the table.
    """

    def __init__(self, *, max_keys: int = 2_000_000) -> None:
        self._known: dict[ScoreKey, ScoreState | None] = {}
        self._generation = 0
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._known)

    def forget(self) -> None:
        self._known = {}
        self._generation += 1

    def within(self, uow: UnitOfWork) -> ScoreStatesInTransaction:
        """The states as one transaction sees them; what it learns is kept once it commits."""
        view = ScoreStatesInTransaction(uow.session, known=self._known)
        generation = self._generation
        uow.after_commit(lambda: self._learn(view.learnt, generation=generation))
        return view

    def _learn(self, learnt: Mapping[ScoreKey, object], *, generation: int) -> None:
        if generation != self._generation:
            return  # read or written before a rebalance: another consumer may have moved on
        for key, state in learnt.items():
            if state is _UNKNOWN:
                self._known.pop(key, None)
            else:
                self._known[key] = state  # type: ignore[assignment]  # ScoreState | None
        if len(self._known) > self._max_keys:
            self.forget()


class ScoreStatesInTransaction:
    """Reads through memory, then the table; saves to the table and remembers for the batch."""

    def __init__(self, session: AsyncSession, *, known: Mapping[ScoreKey, ScoreState | None]):
        self._session = session
        self._known = known
        self.learnt: dict[ScoreKey, object] = {}  # this transaction's view, newest last

    async def read(self, keys: Iterable[ScoreKey]) -> dict[ScoreKey, ScoreState]:
        found: dict[ScoreKey, ScoreState] = {}
        missing: list[ScoreKey] = []
        for key in set(keys):
            state = self.learnt[key] if key in self.learnt else self._known.get(key, _UNKNOWN)
            if state is _UNKNOWN:
                missing.append(key)
            elif state is not None:
                found[key] = state  # type: ignore[assignment]  # a ScoreState
        if missing:
            rows = await score_states_of(self._session, missing)
            for key in missing:
                row = rows.get(key)
                state = ScoreState(version=row["version"], score=row["score"]) if row else None
                self.learnt[key] = state
                if state is not None:
                    found[key] = state
        return found

    async def save(self, states: Mapping[ScoreKey, ScoreState]) -> set[ScoreKey]:
        """`save_score_states`; the keys stored."""
        stored = await save_score_states(
            self._session, {key: (s.version, s.score) for key, s in states.items()}
        )
        for key, state in states.items():
            self.learnt[key] = state if key in stored else _UNKNOWN
        return stored


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- activity log


async def log_activities(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Insert new activities; returns the ids that were new (redeliveries are not)."""
    if not rows:
        return set()
    inserted = await session.scalars(
        insert_rows(activity_log, rows)
        .on_conflict_do_nothing(index_elements=[activity_log.c.activity_id])
        .returning(activity_log.c.activity_id)
    )
    return set(inserted)


# The three suspicious-activity counts, each for every key of a batch in one statement: the
# keys travel as parallel arrays and are joined to the log with `unnest`.

MEMBER_DAY_SQL = text(
    """
    SELECT k.member_id, k.day_start, count(a.activity_id) AS visits
    FROM unnest(CAST(:members AS uuid[]), CAST(:starts AS timestamptz[])) AS k(member_id, day_start)
    JOIN notifications.activity_log a
      ON a.member_id = k.member_id
     AND a.occurred_at >= k.day_start AND a.occurred_at < k.day_start + interval '1 day'
     AND a.kind = 'household_visit' AND NOT a.voided
    GROUP BY k.member_id, k.day_start
    """
)

HOUSEHOLD_SQL = text(
    """
    SELECT k.i, count(DISTINCT a.team_id) AS teams
    FROM unnest(CAST(:hashes AS text[]), CAST(:starts AS timestamptz[]),
                CAST(:ends AS timestamptz[])) WITH ORDINALITY AS k(household_hash, s, e, i)
    JOIN notifications.activity_log a
      ON a.household_hash = k.household_hash
     AND a.occurred_at BETWEEN k.s AND k.e AND NOT a.voided
    GROUP BY k.i
    """
)

BACKDATED_SQL = text(
    """
    SELECT k.i, count(a.activity_id) AS events
    FROM unnest(CAST(:teams AS uuid[]), CAST(:starts AS timestamptz[]),
                CAST(:ends AS timestamptz[]), CAST(:hours AS float8[]))
         WITH ORDINALITY AS k(team_id, s, e, hours, i)
    JOIN notifications.activity_log a
      ON a.team_id = k.team_id AND a.recorded_at BETWEEN k.s AND k.e
     AND a.backdated_hours > k.hours AND NOT a.voided
    GROUP BY k.i
    """
)


async def member_day_visits(
    session: AsyncSession, keys: Sequence[tuple[UUID, datetime]]
) -> dict[tuple[UUID, datetime], int]:
    """Household visits per (member, start of local day)."""
    if not keys:
        return {}
    rows = await session.execute(
        MEMBER_DAY_SQL, {"members": [k[0] for k in keys], "starts": [k[1] for k in keys]}
    )
    return {(r.member_id, r.day_start): int(r.visits) for r in rows}


async def household_team_counts(
    session: AsyncSession, keys: Sequence[tuple[str, datetime, datetime]]
) -> list[int]:
    """Distinct teams per (household hash, window start, window end), in the keys' order."""
    if not keys:
        return []
    rows = await session.execute(
        HOUSEHOLD_SQL,
        {
            "hashes": [k[0] for k in keys],
            "starts": [k[1] for k in keys],
            "ends": [k[2] for k in keys],
        },
    )
    counts = {int(r.i): int(r.teams) for r in rows}
    return [counts.get(i + 1, 0) for i in range(len(keys))]


async def backdated_counts(
    session: AsyncSession, keys: Sequence[tuple[UUID, datetime, datetime, float]]
) -> list[int]:
    """Backdated events per (team, window start, window end, backdate hours), in order."""
    if not keys:
        return []
    rows = await session.execute(
        BACKDATED_SQL,
        {
            "teams": [k[0] for k in keys],
            "starts": [k[1] for k in keys],
            "ends": [k[2] for k in keys],
            "hours": [k[3] for k in keys],
        },
    )
    counts = {int(r.i): int(r.events) for r in rows}
    return [counts.get(i + 1, 0) for i in range(len(keys))]


async def void_activities(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Mark activities voided (rows: activity_id, team_id, voided_at), leaving a tombstone
    when the void comes first; returns the teams whose last activity must be recomputed."""
    if not rows:
        return set()
    statement = insert(activity_log).values(
        [
            {
                "activity_id": r["activity_id"],
                "team_id": r["team_id"],
                "kind": "voided",
                "occurred_at": r["voided_at"],
                "recorded_at": r["voided_at"],
                "backdated_hours": 0.0,
                "voided": True,
            }
            for r in rows
        ]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[activity_log.c.activity_id], set_={"voided": True}
        )
    )
    team_ids = {r["team_id"] for r in rows}
    latest = (
        select(func.max(activity_log.c.occurred_at))
        .where(activity_log.c.team_id == teams_table.c.id, activity_log.c.voided.is_(False))
        .scalar_subquery()
    )
    await session.execute(
        update(teams_table)
        .where(teams_table.c.id.in_(list(team_ids)))
        .values(last_activity_at=latest)
    )
    return team_ids


# --------------------------------------------------------------------------- scores


# --------------------------------------------------------------------------- alerts


async def insert_alerts(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> list[RowMapping]:
    """Insert alerts; returns those created (a key already held by an unresolved alert is
    skipped by the partial unique index, also when two writers race)."""
    if not rows:
        return []
    statement = (
        insert_rows(alerts_table, rows)
        .on_conflict_do_nothing(
            index_elements=[alerts_table.c.dedupe_key],
            index_where=text("status <> 'resolved'"),
        )
        .returning(alerts_table)
    )
    return list((await session.execute(statement)).mappings())


async def active_alerts(session: AsyncSession, *, dedupe_keys: Sequence[str]) -> list[RowMapping]:
    if not dedupe_keys:
        return []
    # One array parameter: a batch of scores asks for tens of thousands of keys, past the
    # 32,767 bound parameters an expanded IN list would take.
    rows = await session.execute(
        select(alerts_table).where(
            alerts_table.c.dedupe_key == any_(bindparam("keys", type_=ARRAY(Text))),
            alerts_table.c.status.in_(OPEN_STATES),
        ),
        {"keys": list(dedupe_keys)},
    )
    return list(rows.mappings())


async def open_alerts_of_scores(
    session: AsyncSession, keys: Iterable[ScoreKey]
) -> dict[ScoreKey, list[RowMapping]]:
    """The unresolved alerts of each subject-period (every alert a score can raise or resolve
    is keyed by its subject and period): one lookup per key, not per condition."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.execute(
        text(
            """
            SELECT a.* FROM (
              SELECT r->>0 AS st, r->>1 AS sid, r->>2 AS p
              FROM jsonb_array_elements(CAST(:keys AS jsonb)) AS r
            ) k
            JOIN notifications.alerts a
              ON a.subject_type = k.st AND a.subject_id = k.sid AND a.period = k.p
            WHERE a.status <> 'resolved'
            """
        ),
        {"keys": json_rows(wanted)},
    )
    found: dict[ScoreKey, list[RowMapping]] = {}
    for row in rows.mappings():
        key = ScoreKey(row["subject_type"], row["subject_id"], row["period"])
        found.setdefault(key, []).append(row)
    return found


async def active_alerts_of_type(session: AsyncSession, alert_type: str) -> list[RowMapping]:
    rows = await session.execute(
        select(alerts_table).where(
            alerts_table.c.alert_type == alert_type, alerts_table.c.status.in_(OPEN_STATES)
        )
    )
    return list(rows.mappings())


async def try_sweep_lock(session: AsyncSession) -> bool:
    """The inactivity sweep's lock for this transaction; False when another replica holds it."""
    locked = await session.scalar(
        select(func.pg_try_advisory_xact_lock(func.hashtext("notifications:inactivity-sweep")))
    )
    return bool(locked)


async def lock_swept_judgements(session: AsyncSession, *, full_sweep: bool) -> None:
    """Serialise judging what the sweep also judges (silent teams, overdue rounds) for this
    transaction: the full sweep exclusively, consumers' judgements of their own teams and
    rounds shared. Under READ COMMITTED the sweep reads subjects and open alerts in separate
    statements; a consumer commit between them (a void that raises an alert) would otherwise
    let the sweep resolve that alert from a stale subject."""
    key = func.hashtext("notifications:swept-judgements")
    lock = func.pg_advisory_xact_lock if full_sweep else func.pg_advisory_xact_lock_shared
    await session.execute(select(lock(key)))


async def active_alerts_like(
    session: AsyncSession,
    *,
    alert_type: str,
    subject_type: str,
    subject_id: str,
    period: str | None,
) -> list[RowMapping]:
    query = select(alerts_table).where(
        alerts_table.c.alert_type == alert_type,
        alerts_table.c.subject_type == subject_type,
        alerts_table.c.subject_id == subject_id,
        alerts_table.c.status.in_(OPEN_STATES),
    )
    if period is not None:
        query = query.where(alerts_table.c.period == period)
    return list((await session.execute(query)).mappings())


async def set_alert_status(
    session: AsyncSession, *, alert_ids: Sequence[UUID], status: str, now: datetime
) -> list[RowMapping]:
    """Move alerts to `status` (acknowledged or resolved) if allowed; returns those moved."""
    if not alert_ids:
        return []
    allowed_from = ("open",) if status == "acknowledged" else OPEN_STATES
    stamp = {"acknowledged_at": now} if status == "acknowledged" else {"resolved_at": now}
    rows = await session.execute(
        update(alerts_table)
        .where(alerts_table.c.id.in_(list(alert_ids)), alerts_table.c.status.in_(allowed_from))
        .values(status=status, **stamp)
        .returning(alerts_table)
    )
    return list(rows.mappings())


async def get_alert(session: AsyncSession, alert_id: UUID) -> RowMapping | None:
    return (
        (await session.execute(select(alerts_table).where(alerts_table.c.id == alert_id)))
        .mappings()
        .first()
    )


async def list_alerts(
    session: AsyncSession,
    *,
    unit: str | None,
    units: Collection[str] | None,
    statuses: Sequence[str],
    alert_type: str | None,
    after: UUID | None,
    limit: int,
) -> list[RowMapping]:
    """Newest first (ids are UUIDv7, ordered by creation); `after` is the cursor; only alerts
    within `units` (None: everywhere)."""
    query = select(alerts_table).order_by(alerts_table.c.id.desc()).limit(limit)
    if units is not None:
        query = query.where(alerts_table.c.unit_path.overlap(sorted(units)))
    if unit is not None:
        query = query.where(alerts_table.c.unit_path.contains([unit]))
    if statuses:
        query = query.where(alerts_table.c.status.in_(list(statuses)))
    if alert_type is not None:
        query = query.where(alerts_table.c.alert_type == alert_type)
    if after is not None:
        query = query.where(alerts_table.c.id < after)
    return list((await session.execute(query)).mappings())


# --------------------------------------------------------------------------- subscriptions


async def add_subscription(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(insert(subscriptions_table).values(**row))


async def unit_path_codes(session: AsyncSession, code: str) -> tuple[str, ...]:
    """The codes of a unit's path, province first, as the teams placed under it spell it; a
    unit no team is placed under is known by its own code only."""
    path = await session.scalar(
        select(unit_paths_table.c.path).where(unit_paths_table.c.code == code)
    )
    return tuple(path) if path else (code,)


def _scope_within(units: Collection[str]) -> ColumnElement[bool]:
    """Subscriptions whose scope (a unit code) lies within `units`."""
    wanted = sorted(units)
    placed = select(unit_paths_table.c.code).where(unit_paths_table.c.path.overlap(wanted))
    return or_(subscriptions_table.c.scope.in_(wanted), subscriptions_table.c.scope.in_(placed))


async def list_subscriptions(
    session: AsyncSession, *, units: Collection[str] | None, after: UUID | None, limit: int
) -> list[RowMapping]:
    """Live subscriptions by id; only those scoped within `units` (None: all)."""
    query = (
        select(subscriptions_table)
        .where(subscriptions_table.c.deleted_at.is_(None))
        .order_by(subscriptions_table.c.id)
        .limit(limit)
    )
    if units is not None:
        query = query.where(_scope_within(units))
    if after is not None:
        query = query.where(subscriptions_table.c.id > after)
    return list((await session.execute(query)).mappings())


async def subscription_scope(session: AsyncSession, subscription_id: UUID) -> str | None:
    """A live subscription's scope (a unit code or "national"); None when there is none."""
    return await session.scalar(
        select(subscriptions_table.c.scope).where(
            subscriptions_table.c.id == subscription_id,
            subscriptions_table.c.deleted_at.is_(None),
        )
    )


async def delete_subscription(session: AsyncSession, *, subscription_id: UUID) -> bool:
    """Soft delete (the delivery log keeps pointing at it); pending deliveries are cancelled."""
    deleted = await session.scalar(
        update(subscriptions_table)
        .where(
            subscriptions_table.c.id == subscription_id,
            subscriptions_table.c.deleted_at.is_(None),
        )
        .values(deleted_at=func.now())
        .returning(subscriptions_table.c.id)
    )
    if deleted is None:
        return False
    await session.execute(
        update(deliveries_table)
        .where(
            deliveries_table.c.subscription_id == subscription_id,
            deliveries_table.c.status == "pending",
        )
        .values(status="cancelled", updated_at=func.now())
    )
    return True


async def subscriptions_for(
    session: AsyncSession, *, alert_types: Iterable[str]
) -> list[RowMapping]:
    """Live subscriptions to any of these alert types (few: matched to alerts in memory)."""
    rows = await session.execute(
        select(
            subscriptions_table.c.id,
            subscriptions_table.c.scope,
            subscriptions_table.c.alert_types,
            subscriptions_table.c.language,
        ).where(
            subscriptions_table.c.deleted_at.is_(None),
            subscriptions_table.c.alert_types.overlap(list(set(alert_types))),
        )
    )
    return list(rows.mappings())


# --------------------------------------------------------------------------- deliveries


async def enqueue_deliveries(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    carrier: dict[str, str] = {}
    inject(carrier)  # the consumer's (or sweep's) current span
    if not rows:
        return
    traced = [{"traceparent": carrier.get("traceparent"), **row} for row in rows]
    await session.execute(
        insert_rows(deliveries_table, traced).on_conflict_do_nothing(
            constraint="uq_deliveries_alert_subscription"
        )
    )


async def claim_due_deliveries(
    session: AsyncSession, *, now: datetime, lease_seconds: float, limit: int
) -> list[RowMapping]:
    """Claim due deliveries by pushing their next attempt past a lease, in one statement.

    The claim commits before any HTTP call: a worker killed mid-request leaves the delivery
    pending, and it is retried once the lease runs out (same id, so same idempotency key).
    """
    due = (
        select(deliveries_table.c.id)
        .where(deliveries_table.c.status == "pending", deliveries_table.c.next_attempt_at <= now)
        .order_by(deliveries_table.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    lease_until = now + timedelta(seconds=lease_seconds)
    claimed = (
        update(deliveries_table)
        .where(deliveries_table.c.id.in_(due))
        .values(
            attempts=deliveries_table.c.attempts + 1,
            next_attempt_at=lease_until,
            updated_at=func.now(),
        )
        .returning(
            deliveries_table.c.id,
            deliveries_table.c.attempts,
            deliveries_table.c.round_start,
            deliveries_table.c.body,
            deliveries_table.c.traceparent,
            deliveries_table.c.subscription_id,
        )
        .cte("claimed")
    )
    rows = await session.execute(
        select(
            claimed.c.id,
            claimed.c.attempts,
            claimed.c.round_start,
            claimed.c.body,
            claimed.c.traceparent,
            subscriptions_table.c.url,
            subscriptions_table.c.secret,
        ).join(subscriptions_table, subscriptions_table.c.id == claimed.c.subscription_id)
    )
    return list(rows.mappings())


async def record_attempt(
    session: AsyncSession,
    *,
    delivery_id: UUID,
    attempt: int,
    started_at: datetime,
    finished_at: datetime,
    outcome: str,
    status_code: int | None,
    error: str | None,
    next_status: str,
    next_attempt_at: datetime | None,
) -> bool:
    """Record one attempt and move the delivery on, only if it is still the attempt in hand.

    A slow attempt whose lease expired (and was retried elsewhere) must not overwrite a newer
    outcome: the update is conditional on `attempts` and returns False when it lost the race.
    """
    changes: dict[str, Any] = {
        "status": next_status,
        "last_status_code": status_code,
        "last_error": error[:500] if error else None,
        "updated_at": func.now(),
    }
    if next_attempt_at is not None:
        changes["next_attempt_at"] = next_attempt_at
    if next_status == "succeeded":
        changes["delivered_at"] = finished_at
    moved = await session.scalar(
        update(deliveries_table)
        .where(
            deliveries_table.c.id == delivery_id,
            deliveries_table.c.attempts == attempt,
            deliveries_table.c.status == "pending",
        )
        .values(**changes)
        .returning(deliveries_table.c.id)
    )
    await session.execute(
        insert(delivery_attempts).values(
            delivery_id=delivery_id,
            attempt=attempt,
            started_at=started_at,
            finished_at=finished_at,
            # A success that lost the race is logged as such, never as a second success.
            outcome=outcome if moved is not None or outcome != "success" else "late_success",
            status_code=status_code,
            error=error[:500] if error else None,
        )
    )
    return moved is not None


async def list_deliveries(
    session: AsyncSession,
    *,
    status: str | None,
    alert_id: UUID | None,
    subscription_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> list[RowMapping]:
    query = (
        select(*[c for c in deliveries_table.c if c.name != "body"])
        .order_by(deliveries_table.c.id.desc())
        .limit(limit)
    )
    conditions = []
    if status is not None:
        conditions.append(deliveries_table.c.status == status)
    if alert_id is not None:
        conditions.append(deliveries_table.c.alert_id == alert_id)
    if subscription_id is not None:
        conditions.append(deliveries_table.c.subscription_id == subscription_id)
    if after is not None:
        conditions.append(deliveries_table.c.id < after)
    if conditions:
        query = query.where(and_(*conditions))
    return list((await session.execute(query)).mappings())


async def attempts_of(
    session: AsyncSession, *, delivery_ids: Sequence[UUID], per_delivery: int = 50
) -> dict[UUID, list[RowMapping]]:
    if not delivery_ids:
        return {}
    ranked = (
        select(
            delivery_attempts,
            func.row_number()
            .over(
                partition_by=delivery_attempts.c.delivery_id, order_by=delivery_attempts.c.id.desc()
            )
            .label("rank"),
        )
        .where(delivery_attempts.c.delivery_id.in_(list(delivery_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(ranked).where(ranked.c.rank <= per_delivery).order_by(ranked.c.id)
    )
    result: dict[UUID, list[RowMapping]] = {}
    for row in rows.mappings():
        result.setdefault(row["delivery_id"], []).append(row)
    return result


async def redeliver(
    session: AsyncSession, *, delivery_id: UUID, now: datetime
) -> RowMapping | None:
    """A dead (or delivered) delivery goes back to pending with a fresh attempt budget."""
    return (
        (
            await session.execute(
                update(deliveries_table)
                .where(
                    deliveries_table.c.id == delivery_id,
                    deliveries_table.c.status.in_(("dead", "succeeded")),
                )
                .values(
                    status="pending",
                    round_start=deliveries_table.c.attempts,
                    next_attempt_at=now,
                    last_error=None,
                    updated_at=func.now(),
                )
                .returning(*[c for c in deliveries_table.c if c.name != "body"])
            )
        )
        .mappings()
        .first()
    )


async def get_delivery(session: AsyncSession, delivery_id: UUID) -> RowMapping | None:
    return (
        (
            await session.execute(
                select(*[c for c in deliveries_table.c if c.name != "body"]).where(
                    deliveries_table.c.id == delivery_id
                )
            )
        )
        .mappings()
        .first()
    )
