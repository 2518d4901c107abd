"""Activities persistence: its own tables plus a local replica of teams (from the teams topics)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import asyncpg
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from activities.domain import MemberView, TeamView
from common.audit import ENTRY_COLUMNS
from common.contracts.wire import MemberChangedWire, TeamChangedWire
from common.db import DirectConnections, dump_json, outbox_insert_sql, upsert_newer
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
    Column("province", String(64)),
    Column("district", String(64)),
    Column("commune", String(64)),
    Column("village", String(64)),
    Column("dissolved_on", Date),
    Column("traceparent", Text),
)

member_replica = Table(
    "member_replica",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("role", String(16), nullable=False),
    Column("joined_on", Date, nullable=False),
    Column("left_on", Date),
    Column("removed", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_member_replica_team", "team_id"),
)

partners = Table(
    "partners",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("provinces", ARRAY(String(16)), nullable=False),
    Column("rate_limit_per_second", Integer, nullable=False),
    Column("key_lookup", String(12), nullable=False, unique=True),
    Column("key_hash", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("key_rotated_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

# Idempotency keys live outside the partitioned table: a partitioned table's unique constraints
# must include the partition key (occurred_at), and the client id alone must be unique.
activity_ids = Table(
    "activity_ids",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("payload_hash", LargeBinary, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("partner_id", PgUUID(as_uuid=True), nullable=False),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("voided_at", DateTime(timezone=True)),
    Column("void_reason", String(500)),
)

activities = Table(
    "activities",
    metadata,
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("id", PgUUID(as_uuid=True), nullable=False),
    Column("team_id", PgUUID(as_uuid=True), nullable=False),
    Column("member_id", PgUUID(as_uuid=True)),
    Column("partner_id", PgUUID(as_uuid=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("skills", ARRAY(Text), nullable=False),
    Column("citizens_reached", Integer, nullable=False),
    Column("household_hash", String(64)),
    Column("audience", ARRAY(Text), nullable=False),
    Column("campaign_id", String(64)),
    Column("outcomes", JSONB, nullable=False),
    Column("province", String(64), nullable=False),
    Column("district", String(64)),
    Column("commune", String(64)),
    Column("village", String(64)),
    Column("voided_at", DateTime(timezone=True)),
    Column("void_reason", String(500)),
    PrimaryKeyConstraint("occurred_at", "id"),
    Index("ix_activities_team", "team_id", "occurred_at"),
    Index("ix_activities_province", "province", "occurred_at"),
    postgresql_partition_by="RANGE (occurred_at)",
)


# ---- replica --------------------------------------------------------------------------------


Change = TypeVar("Change", TeamChangedWire, MemberChangedWire)


def latest_versions(
    changes: Iterable[tuple[Change, str | None]],
) -> list[tuple[Change, str | None]]:
    """Per id, the change a one-by-one apply would leave stored: the highest version, the first
    of equal ones (a later event of the same version never wins). Sorted by id, the order in
    which every batch locks the rows."""
    latest: dict[UUID, tuple[Change, str | None]] = {}
    for change in changes:
        held = latest.get(change[0].id)
        if held is None or held[0].version < change[0].version:
            latest[change[0].id] = change
    return [latest[key] for key in sorted(latest)]


async def upsert_teams(
    session: AsyncSession, teams: Iterable[tuple[TeamChangedWire, str | None]]
) -> None:
    """Apply teams' latest states, each with the `traceparent` of the event that carried it;
    one statement per batch, where only a newer version wins (`common.db.upsert_newer`)."""
    rows = []
    for team, traceparent in latest_versions(teams):
        path = team.unit_path
        rows.append(
            {
                "id": team.id,
                "code": team.code,
                "unit_code": team.unit_code,
                "status": team.status,
                "established_on": team.established_on,
                "dissolved_on": team.dissolved_on,
                "version": team.version,
                "province": path.province if path else None,
                "district": path.district if path else None,
                "commune": path.commune if path else None,
                "village": path.village if path else None,
                "traceparent": traceparent,
            }
        )
    if rows:
        await session.execute(upsert_newer(team_replica, rows))


async def upsert_members(session: AsyncSession, members: Iterable[MemberChangedWire]) -> None:
    rows = [
        {
            "id": m.id,
            "team_id": m.team_id,
            "role": m.role,
            "joined_on": m.joined_on,
            "left_on": m.left_on,
            "removed": m.removed,
            "version": m.version,
        }
        for m, _ in latest_versions((m, None) for m in members)
    ]
    if rows:
        await session.execute(upsert_newer(member_replica, rows))


# Ingest statements run on plain asyncpg connections (`common.db.DirectConnections`): numbered
# parameters, no SQLAlchemy in the way of the hottest path.
def _replica_rows(*, teams: str, members: str) -> str:
    """The replica's teams and members whose ids match the given SQL expressions (arrays)."""
    return f"""
SELECT 'team' AS entity, id, status, province, district, commune, village, established_on,
  dissolved_on, NULL::uuid AS team_id, NULL::date AS joined_on, NULL::date AS left_on,
  NULL::boolean AS removed, traceparent
FROM activities.team_replica WHERE id = ANY({teams})
UNION ALL
SELECT 'member', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, team_id, joined_on, left_on,
  removed, NULL
FROM activities.member_replica WHERE id = ANY({members})
"""  # noqa: S608 (constant text only)


_LOAD_REPLICA = _replica_rows(teams="$1::uuid[]", members="$2::uuid[]")
# A single event's key check and replica lookup in one round trip: one row per replica row
# found (partner columns repeated), or one row of NULL replica columns; none for unknown keys.
# One-element arrays written as such: PostgreSQL then sees the plan that fits any call and
# stops re-planning per call (it had re-planned an `= ANY($1::uuid[])` lookup every time).
_PARTNER_AND_REPLICA = f"""
SELECT p.id AS partner_id, p.name AS partner_name, p.provinces, p.rate_limit_per_second,
  p.key_hash, p.status AS partner_status, r.*
FROM activities.partners p LEFT JOIN LATERAL (
  {_replica_rows(teams="ARRAY[$1::uuid]", members="ARRAY[$2::uuid]")}
) r ON true
WHERE p.key_lookup = $3
"""  # noqa: S608 (constant text only)


@dataclass(frozen=True)
class Replica:
    """The replica's state of the teams and members asked for (absent: unknown to it)."""

    teams: dict[UUID, TeamView]
    members: dict[UUID, MemberView]
    asked: frozenset[UUID]

    def answers(self, ids: Iterable[UUID]) -> bool:
        return self.asked.issuperset(ids)


async def load_replica(
    db: DirectConnections,
    connection: asyncpg.Connection,
    *,
    team_ids: Sequence[UUID],
    member_ids: Sequence[UUID],
) -> Replica:
    """Teams and members of a batch in one round trip."""
    replica = Replica({}, {}, frozenset([*team_ids, *member_ids]))
    if not replica.asked:
        return replica
    rows = await db.fetch(
        connection, _LOAD_REPLICA, list(team_ids), list(member_ids), operation="SELECT replica"
    )
    for r in rows:
        _add_to_replica(replica, r)
    return replica


async def partner_and_replica(
    db: DirectConnections,
    connection: asyncpg.Connection,
    lookup: str,
    *,
    team_id: UUID | None,
    member_id: UUID | None,
) -> tuple[Partner | None, Replica]:
    """The key's partner and the replica rows a single event needs, in one round trip."""
    replica = Replica({}, {}, frozenset(i for i in (team_id, member_id) if i is not None))
    rows = await db.fetch(
        connection, _PARTNER_AND_REPLICA, team_id, member_id, lookup,
        operation="SELECT partners, replica",
    )  # fmt: skip
    for r in rows:
        if r["entity"] is not None:
            _add_to_replica(replica, r)
    return (Partner(*rows[0][:6]) if rows else None), replica


def _add_to_replica(replica: Replica, r: asyncpg.Record) -> None:
    if r["entity"] == "team":
        replica.teams[r["id"]] = TeamView(
            r["id"], r["status"], r["province"], r["district"], r["commune"], r["village"],
            r["established_on"], r["dissolved_on"], r["traceparent"],
        )  # fmt: skip
    else:
        replica.members[r["id"]] = MemberView(
            r["id"], r["team_id"], r["joined_on"], r["left_on"], r["removed"]
        )


# ---- partners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partner:
    id: UUID
    name: str
    provinces: list[str]
    rate_limit_per_second: int
    key_hash: bytes
    status: str


async def add_partner(
    session: AsyncSession,
    *,
    partner_id: UUID,
    name: str,
    provinces: list[str],
    rate_limit: int,
    lookup: str,
    digest: bytes,
) -> None:
    await session.execute(
        partners.insert().values(
            id=partner_id,
            name=name,
            provinces=provinces,
            rate_limit_per_second=rate_limit,
            key_lookup=lookup,
            key_hash=digest,
            status="active",
        )
    )


_PARTNER_BY_LOOKUP = """
SELECT id, name, provinces, rate_limit_per_second, key_hash, status
FROM activities.partners WHERE key_lookup = $1
"""


async def partner_by_lookup(
    db: DirectConnections, connection: asyncpg.Connection, lookup: str
) -> Partner | None:
    """Read on every request, never cached: a rotated or revoked key fails at once."""
    rows = await db.fetch(connection, _PARTNER_BY_LOOKUP, lookup, operation="SELECT partners")
    return Partner(*rows[0]) if rows else None


async def replace_key(
    session: AsyncSession, partner_id: UUID, *, lookup: str, digest: bytes
) -> bool:
    """New key for an active partner; the old one stops matching with this commit."""
    updated = await session.execute(
        update(partners)
        .where(partners.c.id == partner_id, partners.c.status == "active")
        .values(key_lookup=lookup, key_hash=digest, key_rotated_at=func.now())
        .returning(partners.c.id)
    )
    return updated.first() is not None


async def revoke_partner(session: AsyncSession, partner_id: UUID) -> bool:
    updated = await session.execute(
        update(partners)
        .where(partners.c.id == partner_id)
        .values(status="revoked", revoked_at=func.coalesce(partners.c.revoked_at, func.now()))
        .returning(partners.c.id)
    )
    return updated.first() is not None


@dataclass(frozen=True)
class PartnerState:
    """A partner row as published on `activities.partner.v1` (the key's digest, never the key)."""

    id: UUID
    name: str
    provinces: list[str]
    key_lookup: str
    key_hash: bytes
    status: str
    changed_at: datetime


async def partner_state(session: AsyncSession, partner_id: UUID) -> PartnerState | None:
    """Read after a write in the same transaction: the row is locked by that write, so the
    clock read here orders successive changes of one partner (it becomes the event version)."""
    p = partners.c
    row = (
        await session.execute(
            select(
                p.id,
                p.name,
                p.provinces,
                p.key_lookup,
                p.key_hash,
                p.status,
                func.clock_timestamp(),
            ).where(p.id == partner_id)
        )
    ).first()
    return PartnerState(*row) if row else None


# ---- ingest ---------------------------------------------------------------------------------


class NewActivity(NamedTuple):
    """One validated event ready to store, with its outbox row; fields in the order of
    `_INSERT_BATCH`'s parameters $1-$21 (a tuple: built 1,000 times a batch, a frozen dataclass
    of 21 fields cost ~10 µs each)."""

    id: UUID
    payload_hash: bytes
    occurred_at: datetime
    team_id: UUID
    member_id: UUID | None
    kind: str
    skills: list[str]
    citizens_reached: int
    household_hash: str | None
    audience: list[str]
    campaign_id: str | None
    outcomes: dict[str, int]
    province: str
    district: str | None
    commune: str | None
    village: str | None
    event_id: str  # UUIDv7 as text (asyncpg parses it in C)
    topic: str
    type: str
    payload: dict[str, Any]
    headers: dict[str, str]


# Columns stored as text and converted by the statement (lists as comma-joined, maps as JSON).
_JOINED = frozenset({NewActivity._fields.index("skills"), NewActivity._fields.index("audience")})
_JSON = frozenset(NewActivity._fields.index(f) for f in ("outcomes", "payload", "headers"))


def _column(index: int, values: tuple[Any, ...]) -> list[Any]:
    if index in _JOINED:
        return [",".join(v) for v in values]
    if index in _JSON:
        return [dump_json(v) for v in values]
    return list(values)


_EXISTING_HASHES = "SELECT id, payload_hash FROM activities.activity_ids WHERE id = ANY($1::uuid[])"


async def existing_hashes(
    db: DirectConnections, connection: asyncpg.Connection, ids: Sequence[UUID]
) -> dict[UUID, bytes]:
    if not ids:
        return {}
    rows = await db.fetch(connection, _EXISTING_HASHES, list(ids), operation="SELECT activity_ids")
    return {r["id"]: r["payload_hash"] for r in rows}


# One set-based statement: claim the ids, store the new activities and their outbox rows.
# Rows whose id another transaction claimed meanwhile are skipped (ON CONFLICT DO NOTHING) and
# the caller classifies them as duplicate or conflict.
_INSERT_BATCH = """
WITH input AS (
  SELECT * FROM unnest(
    $1::uuid[], $2::bytea[], $3::timestamptz[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
    $8::int[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
    $15::text[], $16::text[], $17::uuid[], $18::text[], $19::text[], $20::text[], $21::text[]
  ) WITH ORDINALITY AS t(id, payload_hash, occurred_at, team_id, member_id, kind, skills,
    citizens, household, audience, campaign, outcomes, province, district, commune, village,
    event_id, topic, type, payload, headers, ord)
),
claimed AS (
  INSERT INTO activities.activity_ids (id, payload_hash, occurred_at, partner_id, team_id,
    recorded_at)
  SELECT id, payload_hash, occurred_at, $22::uuid, team_id, $23::timestamptz
  FROM input ORDER BY ord
  ON CONFLICT (id) DO NOTHING
  RETURNING id
),
stored AS (
  INSERT INTO activities.activities (occurred_at, id, team_id, member_id, partner_id, recorded_at,
    kind, skills, citizens_reached, household_hash, audience, campaign_id, outcomes, province,
    district, commune, village)
  SELECT occurred_at, id, team_id, member_id, $22::uuid, $23::timestamptz, kind,
    string_to_array(skills, ','), citizens, household,
    string_to_array(audience, ','), campaign, CAST(outcomes AS jsonb), province, district,
    commune, village
  FROM input JOIN claimed USING (id)
),
published AS (
  {published}
),
audited AS (
  -- who made the request, in the same statement as its change (nothing claimed: no change)
  INSERT INTO activities.audit_log (actor_subject, actor_role, actor_unit, action, resource,
    outcome, request_id, trace_id)
  SELECT $24::text, $25::text, $26::text, $27::text, $28::text, $29::text, $30::text, $31::text
  WHERE $24::text IS NOT NULL AND EXISTS (SELECT 1 FROM claimed)
)
SELECT id FROM claimed
""".format(  # noqa: S608 - constant fragments, every value bound
    published=outbox_insert_sql(
        service_tables.outbox,
        rows="(SELECT event_id AS id, 'activity' AS aggregatetype,"
        " CAST(team_id AS text) AS aggregateid, type, topic, payload, headers, ord"
        " FROM input JOIN claimed USING (id)) AS r",
        order_by="ord",
    )
)


async def insert_activities(
    db: DirectConnections,
    connection: asyncpg.Connection,
    batch: Sequence[NewActivity],
    *,
    partner_id: UUID,
    recorded_at: datetime,
    audit_row: Mapping[str, Any] | None = None,
) -> set[UUID]:
    """Store the batch in one statement (atomic on its own); returns the ids it claimed.
    The column arrays are in the order of the statement's parameters $1-$21; `audit_row`
    (`common.audit`) is appended to the audit log when anything was claimed."""
    if not batch:
        return set()
    columns = [_column(i, values) for i, values in enumerate(zip(*batch, strict=True))]
    audit_values = [audit_row.get(name) if audit_row else None for name in ENTRY_COLUMNS]
    rows = await db.fetch(
        connection, _INSERT_BATCH, *columns, partner_id, recorded_at, *audit_values,
        operation="INSERT activities",
    )  # fmt: skip
    return {row[0] for row in rows}


# ---- corrections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityKey:
    id: UUID
    occurred_at: datetime
    partner_id: UUID
    team_id: UUID
    voided_at: datetime | None
    void_reason: str | None


async def lock_activity(session: AsyncSession, activity_id: UUID) -> ActivityKey | None:
    a = activity_ids.c
    row = (
        await session.execute(
            select(a.id, a.occurred_at, a.partner_id, a.team_id, a.voided_at, a.void_reason)
            .where(a.id == activity_id)
            .with_for_update()
        )
    ).first()
    return ActivityKey(*row) if row else None


async def mark_voided(
    session: AsyncSession, key: ActivityKey, *, reason: str, voided_at: datetime
) -> None:
    await session.execute(
        update(activity_ids)
        .where(activity_ids.c.id == key.id)
        .values(voided_at=voided_at, void_reason=reason)
    )
    # occurred_at in the predicate prunes the update to the event's month partition.
    await session.execute(
        update(activities)
        .where(activities.c.occurred_at == key.occurred_at, activities.c.id == key.id)
        .values(voided_at=voided_at, void_reason=reason)
    )


# ---- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityFilter:
    units: frozenset[str] | None  # None: everywhere; else activities in any of these units
    team_id: UUID | None = None
    member_id: UUID | None = None
    unit: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None
    skill: str | None = None
    after: tuple[datetime, UUID] | None = None


LISTED_COLUMNS = (
    activities.c.id,
    activities.c.team_id,
    activities.c.member_id,
    activities.c.partner_id,
    activities.c.occurred_at,
    activities.c.recorded_at,
    activities.c.kind,
    activities.c.skills,
    activities.c.citizens_reached,
    activities.c.audience,
    activities.c.campaign_id,
    activities.c.outcomes,
    activities.c.province,
    activities.c.district,
    activities.c.commune,
    activities.c.village,
    activities.c.voided_at,
    activities.c.void_reason,
)


async def list_activities(
    session: AsyncSession, where: ActivityFilter, *, limit: int
) -> list[dict[str, Any]]:
    """Keyset page ordered by (occurred_at, id); household hashes are never listed."""
    a = activities.c
    conditions: list[ColumnElement[bool]] = []
    if where.units is not None:
        units = sorted(where.units)
        conditions.append(
            or_(a.province.in_(units), a.district.in_(units), a.commune.in_(units),
                a.village.in_(units))
        )  # fmt: skip
    if where.team_id is not None:
        conditions.append(a.team_id == where.team_id)
    if where.member_id is not None:
        conditions.append(a.member_id == where.member_id)
    if where.unit is not None:
        conditions.append(
            or_(
                a.province == where.unit,
                a.district == where.unit,
                a.commune == where.unit,
                a.village == where.unit,
            )
        )
    if where.since is not None:
        conditions.append(a.occurred_at >= where.since)
    if where.until is not None:
        conditions.append(a.occurred_at < where.until)
    if where.kind is not None:
        conditions.append(a.kind == where.kind)
    if where.skill is not None:
        conditions.append(a.skills.contains([where.skill]))
    if where.after is not None:
        moment, last_id = where.after
        conditions.append(tuple_(a.occurred_at, a.id) > tuple_(literal(moment), literal(last_id)))
    statement = (
        select(*LISTED_COLUMNS).where(*conditions).order_by(a.occurred_at, a.id).limit(limit)
    )
    return [dict(row) for row in (await session.execute(statement)).mappings()]


async def stream_activities(
    sessions: async_sessionmaker[AsyncSession], where: ActivityFilter, *, page: int = 1000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching row, page by page, each page in its own short transaction."""
    cursor = where
    while True:
        async with sessions() as session:
            rows = await list_activities(session, cursor, limit=page)
        if rows:
            yield rows
        if len(rows) < page:
            return
        last = rows[-1]
        cursor = ActivityFilter(**{**cursor.__dict__, "after": (last["occurred_at"], last["id"])})
