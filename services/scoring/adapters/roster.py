"""The roster replica (teams, members), the subjects and their parents, and the administrative
units with their crosswalk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import json_rows, upsert_newer
from scoring.adapters.tables import LEVEL_COLUMNS, admin_units, subjects
from scoring.domain import MemberState, Roster, TeamState, UnitPathCodes

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


async def subject_unit_path(
    session: AsyncSession, *, subject_type: str, subject_id: str
) -> tuple[str, ...]:
    """The codes of the units a subject lies in, province first (a unit's own code included):
    from the subjects scored so far, else from the unit registry; empty for the nation and for
    a team not seen yet (only a nationwide caller acts on those)."""
    if subject_type == "national":
        return ()
    row = (
        await session.execute(
            select(*(subjects.c[level] for level in LEVEL_COLUMNS)).where(
                subjects.c.subject_type == subject_type, subjects.c.subject_id == subject_id
            )
        )
    ).first()
    codes = tuple(code for code in row or () if code)
    if subject_type == "team":
        return codes
    known = await admin_unit_path(session, subject_id)
    if known is not None:
        codes = tuple(code for level in LEVEL_COLUMNS if (code := known.code_at(level)))
    return codes if subject_id in codes else (*codes, subject_id)
