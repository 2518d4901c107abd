"""Teams persistence: tables in the `teams` schema and the repositories over them.

Bulk paths are set-based: one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT` per batch,
and an upsert only touches (and re-versions) rows whose content really changed, so a re-import
is a no-op that publishes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.sql.selectable import Select

from common.contracts.activities import PartnerChanged
from common.contracts.teams import UnitPath
from common.db import upsert_newer
from common.outbox_tables import define_service_tables
from common.roles import RoleGrant
from teams.domain import PATH_SEPARATOR, Account, AdminUnit, Member, Team, unit_path_of

SCHEMA = "teams"
Row = RowMapping | Mapping[str, Any]
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
    Column("dissolved_on", Date),
)

admin_units = Table(
    "admin_units",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("level", String(16), nullable=False, index=True),
    Column("parent_code", String(64), index=True),
    Column("path", Text, nullable=False),
    Column("valid_from", Date),
    Column("valid_to", Date),
    Column("replaced_by", ARRAY(String(64)), nullable=False, server_default=text("'{}'")),
    Column("source", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "level IN ('province', 'district', 'commune', 'village')", name="ck_admin_units_level"
    ),
    Index("ix_admin_units_path", "path", postgresql_ops={"path": "text_pattern_ops"}),
)

unit_crosswalk = Table(
    "unit_crosswalk",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("old_code", String(64), nullable=False, index=True),
    Column("new_code", String(64), nullable=False, index=True),
    Column("change", String(16), nullable=False),
    Column("effective_on", Date, nullable=False),
    Column("old_parent_code", String(64)),
    Column("new_parent_code", String(64)),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

members_table = Table(
    "members",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("code", String(64), unique=True),
    Column(
        "team_id", PgUUID(as_uuid=True), ForeignKey("teams.teams.id"), nullable=False, index=True
    ),
    Column("full_name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("affiliation", String(32), nullable=False),
    Column("enterprise_name", String(200)),
    Column("phone", String(20)),
    Column("joined_on", Date, nullable=False),
    Column("left_on", Date),
    Column("trained", Boolean, nullable=False, server_default=text("false")),
    Column("removed", Boolean, nullable=False, server_default=text("false")),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

trainings_table = Table(
    "trainings",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("member_id", PgUUID(as_uuid=True), ForeignKey("teams.members.id"), nullable=False),
    Column("course", String(200), nullable=False),
    Column("topic", String(200)),
    Column("completed_on", Date, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("member_id", "course", "completed_on", name="uq_trainings_member"),
)

# Replica of activities' partner apps (from `activities.partner.v1`), to authenticate reads.
partner_replica = Table(
    "partner_replica",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("provinces", ARRAY(String(16)), nullable=False),
    Column("key_lookup", String(12), nullable=False, index=True),
    Column("key_sha256", String(64), nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

UNIT_COLUMNS = (
    "code",
    "name",
    "level",
    "parent_code",
    "path",
    "valid_from",
    "valid_to",
    "replaced_by",
    "version",
)
TEAM_COLUMNS = (
    "id",
    "code",
    "name",
    "unit_code",
    "status",
    "established_on",
    "decision_no",
    "version",
    "dissolved_on",
)
MEMBER_COLUMNS = (
    "id",
    "code",
    "team_id",
    "full_name",
    "role",
    "affiliation",
    "enterprise_name",
    "phone",
    "joined_on",
    "left_on",
    "trained",
    "removed",
    "version",
)


def like_prefix(path: str) -> str:
    """LIKE pattern for the strict descendants of `path` (codes may contain `_`)."""
    return _like_escaped(path) + PATH_SEPARATOR + "%"


def name_matches(column: ColumnElement[str], query: str) -> ColumnElement[bool]:
    """`column` has words starting with the words of `query`, in their order, other words
    allowed between, case and diacritics aside: "dong thap" and "đồng tháp" find "Đồng Tháp",
    "dang khue" finds "Đặng Thị Khuê", "hoa" finds "Hòa" but not "Thoa". One
    `LIKE '% dang% khue%'` on `teams.name_key(column)` (the folded name after a space): its
    trigram index takes every word's trigrams, word starts included, in one scan. `%` and
    `_` match themselves."""
    # "dang khue" -> "%" + name_key("dang% khue%") = "% dang% khue%"
    words = "% ".join(_like_escaped(word) for word in query.split()) + "%"
    return func.teams.name_key(column).like(literal("%") + func.teams.name_key(words), escape="\\")


def _like_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


VIETNAMESE = "vietnamese"  # the collation of names shown sorted (migration 0006)


@dataclass(frozen=True)
class Page:
    """How a list is paged: by its key (id or code), or by name in Vietnamese order with the
    key breaking ties; and where it resumes (the last record of the previous page)."""

    by_name: bool = False
    after_key: UUID | str | None = None
    after_name: str | None = None

    def apply(self, query: Select[Any], *, name: Column[str], key: Column[Any]) -> Select[Any]:
        if not self.by_name:
            query = query.order_by(key)
            if self.after_key is not None:
                query = query.where(key > literal(self.after_key, key.type))
            return query
        sort_name = name.collate(VIETNAMESE)
        query = query.order_by(sort_name, key)
        if self.after_key is not None:
            resume = tuple_(literal(self.after_name, name.type).collate(VIETNAMESE),
                            literal(self.after_key, key.type))  # fmt: skip
            query = query.where(tuple_(sort_name, key) > resume)
        return query


def in_units(units: Iterable[str]) -> ColumnElement[bool]:
    """Units whose materialised path passes through one of `units` (a reader's scope: a
    partner's provinces, a person's grants)."""
    codes = cast(sorted(units), ARRAY(Text))
    return func.string_to_array(admin_units.c.path, PATH_SEPARATOR).op("&&")(codes)


def to_unit(row: Row) -> AdminUnit:
    data = {k: row[k] for k in UNIT_COLUMNS}
    data["replaced_by"] = tuple(data["replaced_by"] or ())
    return AdminUnit(**data)


# --- units ----------------------------------------------------------------------------------


class UnitRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, code: str, *, lock: bool = False) -> AdminUnit | None:
        query = select(admin_units).where(admin_units.c.code == code)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().first()
        return to_unit(row) if row else None

    async def unit_path_codes(self, code: str) -> tuple[str, ...]:
        """The codes of a unit's materialised path, province first; empty for an unknown unit
        (then only a nationwide scope covers it)."""
        path = await self._session.scalar(
            select(admin_units.c.path).where(admin_units.c.code == code)
        )
        return tuple(path.split(PATH_SEPARATOR)) if path else ()

    async def get_many(self, codes: Iterable[str]) -> dict[str, AdminUnit]:
        wanted = list(set(codes))
        if not wanted:
            return {}
        rows = (
            (await self._session.execute(select(admin_units).where(admin_units.c.code.in_(wanted))))
            .mappings()
            .all()
        )
        return {row["code"]: to_unit(row) for row in rows}

    async def unit_paths(self, codes: Iterable[str]) -> dict[str, UnitPath]:
        """Each unit's UnitPath, from one self-join over the materialised paths."""
        wanted = list(set(codes))
        if not wanted:
            return {}
        rows = await self._session.execute(
            text(
                "SELECT u.code, u.path, a.code AS ancestor, a.level"
                " FROM teams.admin_units u"
                " JOIN teams.admin_units a ON a.code = ANY(string_to_array(u.path, '/'))"
                " WHERE u.code = ANY(CAST(:codes AS text[]))"
            ),
            {"codes": wanted},
        )
        paths: dict[str, str] = {}
        levels: dict[str, str] = {}
        for code, path, ancestor, level in rows:
            paths[code] = path
            levels[ancestor] = level
        return {code: unit_path_of(path, levels) for code, path in paths.items()}

    async def levels_of(self, codes: Iterable[str]) -> dict[str, str]:
        wanted = list(set(codes))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(admin_units.c.code, admin_units.c.level).where(admin_units.c.code.in_(wanted))
        )
        return {code: level for code, level in rows}

    async def upsert(
        self, rows: Sequence[Mapping[str, Any]], *, source: str, successors: bool = False
    ) -> list[AdminUnit]:
        """Insert new units, update changed names/validity; returns only what changed.

        With `successors`, each row's `replaced_by` (the legacy crosswalk) is written and
        compared too; otherwise it is left as the re-organisations set it."""
        if not rows:
            return []
        # Codes hold no comma (`rows.Code`): a list travels as one text, arrays being rectangular.
        replaced = "COALESCE(string_to_array(replaced_by, ','), '{}')" if successors else "'{}'"
        kept = "excluded.replaced_by" if successors else "admin_units.replaced_by"
        result = await self._session.execute(
            text(
                "INSERT INTO teams.admin_units"  # noqa: S608 - constant column lists, values bound
                " (code, name, level, parent_code, path, valid_from, valid_to, replaced_by,"
                "  source, version)"
                " SELECT code, name, level, parent_code, path, valid_from, valid_to,"
                f"  {replaced}, :source, 1"
                " FROM unnest(CAST(:code AS text[]), CAST(:name AS text[]),"
                "  CAST(:level AS text[]), CAST(:parent_code AS text[]), CAST(:path AS text[]),"
                "  CAST(:valid_from AS date[]), CAST(:valid_to AS date[]),"
                "  CAST(:replaced_by AS text[]))"
                "  AS r(code, name, level, parent_code, path, valid_from, valid_to, replaced_by)"
                " ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
                "  valid_from = COALESCE(excluded.valid_from, admin_units.valid_from),"
                "  valid_to = COALESCE(excluded.valid_to, admin_units.valid_to),"
                f"  replaced_by = {kept},"
                "  version = admin_units.version + 1, updated_at = now()"
                " WHERE (admin_units.name, admin_units.valid_from, admin_units.valid_to,"
                "   admin_units.replaced_by)"
                "  IS DISTINCT FROM (excluded.name,"
                "   COALESCE(excluded.valid_from, admin_units.valid_from),"
                "   COALESCE(excluded.valid_to, admin_units.valid_to),"
                f"   {kept})"
                " RETURNING " + ", ".join(UNIT_COLUMNS)
            ),
            {
                "source": source,
                **_columns(rows, UNIT_COLUMNS[:7]),
                "replaced_by": [_joined(row.get("replaced_by")) for row in rows],
            },
        )
        return [to_unit(row) for row in result.mappings()]

    async def page(
        self,
        *,
        parent: str | None,
        level: str | None,
        page: Page,
        limit: int,
        units: Iterable[str] | None = None,
        name: str | None = None,
    ) -> list[AdminUnit]:
        query = page.apply(
            select(admin_units).limit(limit), name=admin_units.c.name, key=admin_units.c.code
        )
        if name is not None:
            query = query.where(name_matches(admin_units.c.name, name))
        if units is not None:
            query = query.where(in_units(units))
        if parent is not None:
            query = query.where(admin_units.c.parent_code == parent)
        if level is not None:
            query = query.where(admin_units.c.level == level)
        rows = (await self._session.execute(query)).mappings().all()
        return [to_unit(row) for row in rows]

    async def subtree(self, path: str) -> list[AdminUnit]:
        rows = (
            (
                await self._session.execute(
                    select(admin_units)
                    .where(
                        (admin_units.c.path == path)
                        | admin_units.c.path.like(like_prefix(path), escape="\\")
                    )
                    .order_by(admin_units.c.path)
                    .with_for_update()
                )
            )
            .mappings()
            .all()
        )
        return [to_unit(row) for row in rows]

    async def move_subtree(self, *, old_path: str, new_path: str) -> list[str]:
        """Rewrite the paths of a unit and its descendants; returns the codes moved."""
        result = await self._session.execute(
            text(
                "UPDATE teams.admin_units SET path = :new || substr(path, length(:old) + 1),"
                " version = version + 1, updated_at = now()"
                " WHERE path = :old OR path LIKE :pattern ESCAPE '\\'"
                " RETURNING code"
            ),
            {"new": new_path, "old": old_path, "pattern": like_prefix(old_path)},
        )
        return [code for (code,) in result]

    async def set_parent(self, code: str, parent_code: str | None) -> None:
        await self._session.execute(
            update(admin_units).where(admin_units.c.code == code).values(parent_code=parent_code)
        )

    async def retire(self, code: str, *, valid_to: date, replaced_by: Sequence[str]) -> None:
        await self._session.execute(
            update(admin_units)
            .where(admin_units.c.code == code)
            .values(
                valid_to=valid_to,
                replaced_by=list(replaced_by),
                version=admin_units.c.version + 1,
                updated_at=func.now(),
            )
        )

    async def record_crosswalk(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._session.execute(unit_crosswalk.insert(), list(rows))

    async def record_crosswalk_once(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Crosswalk rows not recorded yet (same old and new code): a repeated import adds none."""
        if not rows:
            return 0
        names = ("old_code", "new_code", "change", "effective_on", "old_parent_code")
        result = await self._session.execute(
            text(
                "INSERT INTO teams.unit_crosswalk"
                " (old_code, new_code, change, effective_on, old_parent_code, new_parent_code)"
                " SELECT r.* FROM unnest(CAST(:old_code AS text[]), CAST(:new_code AS text[]),"
                "  CAST(:change AS text[]), CAST(:effective_on AS date[]),"
                "  CAST(:old_parent_code AS text[]), CAST(:new_parent_code AS text[]))"
                "  AS r(old_code, new_code, change, effective_on, old_parent_code,"
                "   new_parent_code)"
                " WHERE NOT EXISTS (SELECT 1 FROM teams.unit_crosswalk c"
                "  WHERE c.old_code = r.old_code AND c.new_code = r.new_code)"
            ),
            _columns(rows, (*names, "new_parent_code")),
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def crosswalk(
        self,
        *,
        code: str | None,
        after: int | None,
        limit: int,
        units: Iterable[str] | None = None,
    ) -> list[Row]:
        query = select(unit_crosswalk).order_by(unit_crosswalk.c.id).limit(limit)
        if units is not None:
            known = (
                select(admin_units.c.code)
                .where(
                    admin_units.c.code.in_([unit_crosswalk.c.old_code, unit_crosswalk.c.new_code])
                )
                .where(in_units(units))
            )
            query = query.where(known.exists())
        if code is not None:
            query = query.where(
                (unit_crosswalk.c.old_code == code) | (unit_crosswalk.c.new_code == code)
            )
        if after is not None:
            query = query.where(unit_crosswalk.c.id > after)
        return list((await self._session.execute(query)).mappings().all())

    async def coverage(self, path: str) -> list[Row]:
        """Counts per direct child of the unit (child '' is the unit itself)."""
        result = await self._session.execute(
            text(
                "WITH sub AS ("
                "  SELECT code, level,"
                "   split_part(substr(path, length(:path) + 2), '/', 1) AS child"
                "  FROM teams.admin_units"
                "  WHERE (path = :path OR path LIKE :pattern ESCAPE '\\')"
                "   AND (valid_to IS NULL OR valid_to >= current_date)),"
                " tm AS (SELECT sub.child, t.id, t.unit_code FROM teams.teams t"
                "  JOIN sub ON sub.code = t.unit_code WHERE t.status = 'active'),"
                " tc AS (SELECT child, count(*) AS teams FROM tm GROUP BY child),"
                " mc AS (SELECT tm.child, count(*) AS members,"
                "   count(*) FILTER (WHERE m.trained) AS trained_members"
                "  FROM teams.members m JOIN tm ON tm.id = m.team_id"
                "  WHERE NOT m.removed AND m.left_on IS NULL GROUP BY tm.child),"
                " vc AS (SELECT sub.child, count(*) AS villages,"
                "   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM tm"
                "    WHERE tm.unit_code = sub.code)) AS villages_with_team"
                "  FROM sub WHERE sub.level = 'village' GROUP BY sub.child)"
                " SELECT c.child, coalesce(tc.teams, 0) AS teams,"
                "  coalesce(mc.members, 0) AS members,"
                "  coalesce(mc.trained_members, 0) AS trained_members,"
                "  coalesce(vc.villages, 0) AS villages,"
                "  coalesce(vc.villages_with_team, 0) AS villages_with_team"
                " FROM (SELECT DISTINCT child FROM sub) c"
                " LEFT JOIN tc ON tc.child = c.child LEFT JOIN mc ON mc.child = c.child"
                " LEFT JOIN vc ON vc.child = c.child ORDER BY c.child"
            ),
            {"path": path, "pattern": like_prefix(path)},
        )
        return list(result.mappings().all())


def _joined(codes: Sequence[str] | None) -> str | None:
    return ",".join(codes) if codes is not None else None


def _columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """Row dicts to one array per column (the shape `unnest` wants)."""
    return {name: [row.get(name) for row in rows] for name in names}


# --- teams and members: records with an id, a unique code and a version ----------------------

R = TypeVar("R", bound=Team | Member)


class _RecordRepository(Generic[R]):
    """What the team and member repositories share: one table of records (`columns`, `entity`)
    keyed by `id`, with a unique `code`."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        table: Table,
        columns: Sequence[str],
        entity: type[R],
    ) -> None:
        self._session = session
        self._table = table
        self._columns = columns
        self._entity: type[R] = entity

    def _record(self, row: Row) -> R:
        return self._entity(**{k: row[k] for k in self._columns})

    def _row(self, record: R) -> dict[str, object]:
        return {column: getattr(record, column) for column in self._columns}

    async def add(self, record: R) -> None:
        await self._session.execute(self._table.insert().values(**self._row(record)))

    async def get(self, record_id: UUID, *, lock: bool = False) -> R | None:
        return await self._one(self._table.c.id == record_id, lock=lock)

    async def get_by_code(self, code: str, *, lock: bool = False) -> R | None:
        return await self._one(self._table.c.code == code, lock=lock)

    async def _one(self, where: Any, *, lock: bool) -> R | None:
        query = select(self._table).where(where)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().first()
        return self._record(row) if row else None

    async def code_exists(self, code: str) -> bool:
        found = await self._session.scalar(
            select(self._table.c.id).where(self._table.c.code == code)
        )
        return found is not None

    async def save(self, record: R) -> None:
        await self._session.execute(
            update(self._table)
            .where(self._table.c.id == record.id)
            .values(**self._row(record), updated_at=func.now())
        )

    async def _page(self, query: Select[Any], *, after: UUID | None) -> list[R]:
        """The records of `query` (ordered by id) after the keyset cursor `after`."""
        if after is not None:
            query = query.where(self._table.c.id > after)
        return await self._fetch(query)

    async def _fetch(self, query: Select[Any]) -> list[R]:
        rows = (await self._session.execute(query)).mappings().all()
        return [self._record(row) for row in rows]

    async def _upsert(
        self, statement: TextClause, rows: Sequence[Mapping[str, Any]], names: Sequence[str]
    ) -> list[tuple[R, bool]]:
        """Run a bulk upsert over `unnest` arrays of `names` that returns the changed records
        with a `created` column."""
        if not rows:
            return []
        result = await self._session.execute(statement, _columns(rows, names))
        return [(self._record(row), bool(row["created"])) for row in result.mappings()]


# --- teams ----------------------------------------------------------------------------------


class TeamRepository(_RecordRepository[Team]):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session, table=teams_table, columns=TEAM_COLUMNS, entity=Team)

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Team]:
        wanted = list(set(codes))
        if not wanted:
            return {}
        rows = (
            (await self._session.execute(select(teams_table).where(teams_table.c.code.in_(wanted))))
            .mappings()
            .all()
        )
        return {row["code"]: self._record(row) for row in rows}

    async def in_subtree(
        self,
        *,
        path: str,
        status: str | None,
        page: Page,
        limit: int,
        units: Iterable[str] | None = None,
        name: str | None = None,
    ) -> list[Team]:
        query = (
            select(teams_table)
            .join(admin_units, admin_units.c.code == teams_table.c.unit_code)
            .where(
                (admin_units.c.path == path)
                | admin_units.c.path.like(like_prefix(path), escape="\\")
            )
            .limit(limit)
        )
        if units is not None:
            query = query.where(in_units(units))
        if status is not None:
            query = query.where(teams_table.c.status == status)
        if name is not None:
            query = query.where(name_matches(teams_table.c.name, name))
        return await self._fetch(page.apply(query, name=teams_table.c.name, key=teams_table.c.id))

    async def page(
        self,
        *,
        status: str | None,
        page: Page,
        limit: int,
        units: Iterable[str] | None = None,
        name: str | None = None,
    ) -> list[Team]:
        query = select(teams_table).limit(limit)
        if name is not None:
            query = query.where(name_matches(teams_table.c.name, name))
        if units is not None:
            query = query.join(admin_units, admin_units.c.code == teams_table.c.unit_code).where(
                in_units(units)
            )
        if status is not None:
            query = query.where(teams_table.c.status == status)
        return await self._fetch(page.apply(query, name=teams_table.c.name, key=teams_table.c.id))

    async def codes_in_unit(self, unit_code: str) -> list[str]:
        rows = await self._session.execute(
            select(teams_table.c.code).where(teams_table.c.unit_code == unit_code)
        )
        return [code for (code,) in rows]

    async def move_units(self, moves: Mapping[str, str]) -> list[Team]:
        """Teams of each old unit move to its new unit (re-versioned); returns them."""
        if not moves:
            return []
        result = await self._session.execute(
            text(
                "UPDATE teams.teams t SET unit_code = m.new_code, version = t.version + 1,"  # noqa: S608 - constant column lists, values bound
                " updated_at = now()"
                " FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old_code, new_code)"
                " WHERE t.unit_code = m.old_code"
                " RETURNING " + ", ".join(f"t.{c}" for c in TEAM_COLUMNS)
            ),
            {"old": list(moves), "new": list(moves.values())},
        )
        return [self._record(row) for row in result.mappings()]

    async def reversion_in_units(self, unit_codes: Sequence[str]) -> list[Team]:
        """Teams whose unit path changed (unit re-parented): bump the version to re-publish."""
        if not unit_codes:
            return []
        result = await self._session.execute(
            update(teams_table)
            .where(teams_table.c.unit_code.in_(list(unit_codes)))
            .values(version=teams_table.c.version + 1, updated_at=func.now())
            .returning(*[teams_table.c[c] for c in TEAM_COLUMNS])
        )
        return [self._record(row) for row in result.mappings()]

    async def move_codes(self, moves: Mapping[str, str]) -> list[Team]:
        """Specific teams (by team code) to a new unit, as a split assigns them."""
        if not moves:
            return []
        result = await self._session.execute(
            text(
                "UPDATE teams.teams t SET unit_code = m.unit_code, version = t.version + 1,"  # noqa: S608 - constant column lists, values bound
                " updated_at = now()"
                " FROM unnest(CAST(:codes AS text[]), CAST(:units AS text[]))"
                "  AS m(code, unit_code)"
                " WHERE t.code = m.code AND t.unit_code IS DISTINCT FROM m.unit_code"
                " RETURNING " + ", ".join(f"t.{c}" for c in TEAM_COLUMNS)
            ),
            {"codes": list(moves), "units": list(moves.values())},
        )
        return [self._record(row) for row in result.mappings()]

    async def upsert(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Team, bool]]:
        """Bulk upsert by code; returns (team, created) for rows that changed."""
        return await self._upsert(
            text(
                "INSERT INTO teams.teams"  # noqa: S608 - constant column lists, values bound
                " (id, code, name, unit_code, status, established_on, decision_no, version)"
                " SELECT id, code, name, unit_code, 'active', established_on, decision_no, 1"
                " FROM unnest(CAST(:id AS uuid[]), CAST(:code AS text[]), CAST(:name AS text[]),"
                "  CAST(:unit_code AS text[]), CAST(:established_on AS date[]),"
                "  CAST(:decision_no AS text[]))"
                "  AS r(id, code, name, unit_code, established_on, decision_no)"
                " ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
                "  unit_code = excluded.unit_code, established_on = excluded.established_on,"
                "  decision_no = excluded.decision_no, version = teams.version + 1,"
                "  updated_at = now()"
                " WHERE (teams.name, teams.unit_code, teams.established_on, teams.decision_no)"
                "  IS DISTINCT FROM (excluded.name, excluded.unit_code, excluded.established_on,"
                "   excluded.decision_no)"
                " RETURNING " + ", ".join(TEAM_COLUMNS) + ", (xmax = 0) AS created"
            ),
            rows,
            ("id", "code", "name", "unit_code", "established_on", "decision_no"),
        )

    async def health_counts(self, team_ids: Sequence[UUID]) -> dict[UUID, tuple[int, int, int]]:
        """(active members, active leaders, active trained members) per team."""
        if not team_ids:
            return {}
        m = members_table.c
        active = (~m.removed) & m.left_on.is_(None)
        rows = await self._session.execute(
            select(
                m.team_id,
                func.count().filter(active),
                func.count().filter(active & (m.role == "leader")),
                func.count().filter(active & m.trained),
            )
            .where(m.team_id.in_(list(team_ids)))
            .group_by(m.team_id)
        )
        return {team_id: (size, leaders, trained) for team_id, size, leaders, trained in rows}

    async def leaders(self, team_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        if not team_ids:
            return {}
        m = members_table.c
        rows = await self._session.execute(
            select(m.team_id, m.id)
            .where(
                m.team_id.in_(list(team_ids)),
                m.role == "leader",
                ~m.removed,
                m.left_on.is_(None),
            )
            .order_by(m.team_id, m.id.desc())
        )
        # Several active leaders is a health issue, not an error: the earliest one is shown.
        return {team_id: leader for team_id, leader in rows}


# --- members --------------------------------------------------------------------------------


class MemberRepository(_RecordRepository[Member]):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session, table=members_table, columns=MEMBER_COLUMNS, entity=Member)

    async def of_team(self, team_id: UUID, *, after: UUID | None, limit: int) -> list[Member]:
        query = (
            select(members_table)
            .where(members_table.c.team_id == team_id)
            .order_by(members_table.c.id)
            .limit(limit)
        )
        return await self._page(query, after=after)

    async def search(
        self,
        *,
        name: str,
        under: str | None,
        page: Page,
        limit: int,
        units: Iterable[str] | None = None,
    ) -> list[Member]:
        """Members whose name contains `name` (case and diacritics aside), those of teams under
        the unit path `under` (None: all), visible to a reader of `units` (None: all)."""
        query = (
            select(members_table).where(name_matches(members_table.c.full_name, name)).limit(limit)
        )
        if under is not None or units is not None:
            query = query.join(teams_table, teams_table.c.id == members_table.c.team_id).join(
                admin_units, admin_units.c.code == teams_table.c.unit_code
            )
        if under is not None:
            query = query.where(
                (admin_units.c.path == under)
                | admin_units.c.path.like(like_prefix(under), escape="\\")
            )
        if units is not None:
            query = query.where(in_units(units))
        ordered = page.apply(query, name=members_table.c.full_name, key=members_table.c.id)
        return await self._fetch(ordered)

    async def add_training(
        self,
        *,
        training_id: UUID,
        member_id: UUID,
        course: str,
        topic: str | None,
        completed_on: date,
    ) -> bool:
        """Record a training once; False when the same (member, course, date) exists."""
        result = await self._session.execute(
            text(
                "INSERT INTO teams.trainings (id, member_id, course, topic, completed_on)"
                " VALUES (:id, :member_id, :course, :topic, :completed_on)"
                " ON CONFLICT ON CONSTRAINT uq_trainings_member DO NOTHING RETURNING id"
            ),
            {
                "id": training_id,
                "member_id": member_id,
                "course": course,
                "topic": topic,
                "completed_on": completed_on,
            },
        )
        return result.first() is not None

    async def trainings(self, member_id: UUID) -> list[Row]:
        rows = await self._session.execute(
            select(trainings_table)
            .where(trainings_table.c.member_id == member_id)
            .order_by(trainings_table.c.completed_on)
        )
        return list(rows.mappings().all())

    async def upsert(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Member, bool]]:
        """Bulk upsert by external code; `trained` only ever turns on. Returns changed rows."""
        return await self._upsert(
            text(
                "INSERT INTO teams.members (id, code, team_id, full_name, role, affiliation,"  # noqa: S608 - constant column lists, values bound
                "  enterprise_name, phone, joined_on, left_on, trained, removed, version)"
                " SELECT id, code, team_id, full_name, role, affiliation, enterprise_name, phone,"
                "  joined_on, left_on, trained, false, 1"
                " FROM unnest(CAST(:id AS uuid[]), CAST(:code AS text[]),"
                "  CAST(:team_id AS uuid[]), CAST(:full_name AS text[]), CAST(:role AS text[]),"
                "  CAST(:affiliation AS text[]), CAST(:enterprise_name AS text[]),"
                "  CAST(:phone AS text[]), CAST(:joined_on AS date[]), CAST(:left_on AS date[]),"
                "  CAST(:trained AS boolean[]))"
                "  AS r(id, code, team_id, full_name, role, affiliation, enterprise_name, phone,"
                "   joined_on, left_on, trained)"
                " ON CONFLICT (code) DO UPDATE SET team_id = excluded.team_id,"
                "  full_name = excluded.full_name, role = excluded.role,"
                "  affiliation = excluded.affiliation, enterprise_name = excluded.enterprise_name,"
                "  phone = excluded.phone, joined_on = excluded.joined_on,"
                "  left_on = excluded.left_on, trained = members.trained OR excluded.trained,"
                "  removed = false, version = members.version + 1, updated_at = now()"
                " WHERE (members.team_id, members.full_name, members.role, members.affiliation,"
                "   members.enterprise_name, members.phone, members.joined_on, members.left_on,"
                "   members.trained OR excluded.trained, members.removed)"
                "  IS DISTINCT FROM (excluded.team_id, excluded.full_name, excluded.role,"
                "   excluded.affiliation, excluded.enterprise_name, excluded.phone,"
                "   excluded.joined_on, excluded.left_on, members.trained, false)"
                " RETURNING " + ", ".join(MEMBER_COLUMNS) + ", (xmax = 0) AS created"
            ),
            rows,
            [c for c in MEMBER_COLUMNS if c not in ("removed", "version")],
        )

    async def ids_by_code(self, codes: Sequence[str]) -> dict[str, UUID]:
        if not codes:
            return {}
        rows = await self._session.execute(
            select(members_table.c.code, members_table.c.id).where(
                members_table.c.code.in_(list(codes))
            )
        )
        return {code: member_id for code, member_id in rows}

    async def add_trainings(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        await self._session.execute(
            text(
                "INSERT INTO teams.trainings (id, member_id, course, completed_on)"
                " SELECT * FROM unnest(CAST(:id AS uuid[]), CAST(:member_id AS uuid[]),"
                "  CAST(:course AS text[]), CAST(:completed_on AS date[]))"
                " ON CONFLICT ON CONSTRAINT uq_trainings_member DO NOTHING"
            ),
            _columns(rows, ("id", "member_id", "course", "completed_on")),
        )


# --- outbox ---------------------------------------------------------------------------------


# --- partner replica ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicatedPartner:
    id: UUID
    provinces: tuple[str, ...]
    key_sha256: str
    revoked: bool


async def upsert_partner(session: AsyncSession, event: PartnerChanged) -> None:
    """Version-guarded: a replayed or reordered older event never moves the replica back."""
    values = {
        "id": event.id,
        "name": event.name,
        "provinces": list(event.provinces),
        "key_lookup": event.key_lookup,
        "key_sha256": event.key_sha256,
        "revoked": event.revoked,
        "version": event.version,
        "changed_at": event.changed_at,
    }
    await session.execute(upsert_newer(partner_replica, values))


async def partners_by_lookup(session: AsyncSession, lookup: str) -> list[ReplicatedPartner]:
    c = partner_replica.c
    rows = await session.execute(
        select(c.id, c.provinces, c.key_sha256, c.revoked).where(c.key_lookup == lookup)
    )
    return [
        ReplicatedPartner(id=r.id, provinces=tuple(r.provinces), key_sha256=r.key_sha256,
                          revoked=r.revoked)
        for r in rows
    ]  # fmt: skip


# --- accounts, invitations, signing keys (the local issuer) ---------------------------------

accounts_table = Table(
    "accounts",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", Text),  # argon2id; null until the invitation is redeemed
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("disabled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

account_roles = Table(
    "account_roles",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "account_id",
        PgUUID(as_uuid=True),
        ForeignKey("teams.accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("role", String(32), nullable=False),
    Column("unit_code", String(64)),
)

invitations = Table(
    "invitations",
    metadata,
    Column("code_sha256", String(64), primary_key=True),
    Column(
        "account_id",
        PgUUID(as_uuid=True),
        ForeignKey("teams.accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("redeemed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_key_pem", Text, nullable=False),
    Column("public_jwk", Text, nullable=False),  # JSON text of the public JWK
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("retired_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class AccountRow:
    account: Account
    password_hash: str | None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key_pem: str
    public_jwk: str
    retired_at: datetime | None


async def insert_account(
    session: AsyncSession,
    *,
    account_id: UUID,
    username: str,
    display_name: str,
    roles: Sequence[RoleGrant],
) -> bool:
    """False when the username is taken."""
    inserted = await session.execute(
        pg_insert(accounts_table)
        .values(id=account_id, username=username, display_name=display_name)
        .on_conflict_do_nothing(index_elements=["username"])
        .returning(accounts_table.c.id)
    )
    if inserted.first() is None:
        return False
    await session.execute(
        account_roles.insert(),
        [{"account_id": account_id, "role": g.role, "unit_code": g.unit} for g in roles],
    )
    return True


async def _account_rows(session: AsyncSession, where: ColumnElement[bool]) -> list[AccountRow]:
    a, r = accounts_table.c, account_roles.c
    grants = (
        select(
            func.coalesce(
                func.array_agg(func.json_build_array(r.role, r.unit_code)).filter(
                    r.role.is_not(None)
                ),
                text("'{}'"),
            )
        )
        .where(r.account_id == a.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            a.id, a.username, a.display_name, a.password_hash, a.disabled, grants.label("g")
        ).where(where)
    )
    return [
        AccountRow(
            account=Account(
                id=row.id,
                username=row.username,
                display_name=row.display_name,
                roles=tuple(RoleGrant(role, unit) for role, unit in row.g),
                disabled=row.disabled,
                has_password=row.password_hash is not None,
            ),
            password_hash=row.password_hash,
        )
        for row in rows
    ]


async def account_by_username(session: AsyncSession, username: str) -> AccountRow | None:
    rows = await _account_rows(session, accounts_table.c.username == username)
    return rows[0] if rows else None


async def account_by_id(session: AsyncSession, account_id: UUID) -> AccountRow | None:
    rows = await _account_rows(session, accounts_table.c.id == account_id)
    return rows[0] if rows else None


async def set_password_hash(session: AsyncSession, account_id: UUID, password_hash: str) -> None:
    await session.execute(
        update(accounts_table)
        .where(accounts_table.c.id == account_id)
        .values(password_hash=password_hash, updated_at=func.now())
    )


async def disable_account(session: AsyncSession, account_id: UUID) -> bool:
    """False when there is no such account; disabling twice keeps the first time."""
    a = accounts_table.c
    done = await session.execute(
        update(accounts_table)
        .where(a.id == account_id)
        .values(
            disabled=True,
            disabled_at=func.coalesce(a.disabled_at, func.now()),
            updated_at=func.now(),
        )
        .returning(a.id)
    )
    return done.first() is not None


async def disabled_subjects(session: AsyncSession, *, since: datetime) -> list[UUID]:
    a = accounts_table.c
    rows = await session.execute(select(a.id).where(a.disabled, a.disabled_at >= since))
    return [row.id for row in rows]


async def insert_invitation(
    session: AsyncSession, *, code_sha256: str, account_id: UUID, expires_at: datetime
) -> None:
    await session.execute(
        invitations.insert().values(
            code_sha256=code_sha256, account_id=account_id, expires_at=expires_at
        )
    )


async def redeem_invitation(session: AsyncSession, code_sha256: str) -> UUID | None:
    """The invitation's account, marked redeemed; None when unknown, expired or used (one
    statement: two concurrent redemptions cannot both succeed)."""
    i = invitations.c
    done = await session.execute(
        update(invitations)
        .where(i.code_sha256 == code_sha256, i.redeemed_at.is_(None), i.expires_at > func.now())
        .values(redeemed_at=func.now())
        .returning(i.account_id)
    )
    row = done.first()
    return None if row is None else UUID(str(row.account_id))


def _signing_key(row: Row) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_key_pem=row["private_key_pem"],
        public_jwk=row["public_jwk"],
        retired_at=row["retired_at"],
    )


async def active_signing_key(session: AsyncSession) -> SigningKey | None:
    row = (
        (await session.execute(select(signing_keys).where(signing_keys.c.retired_at.is_(None))))
        .mappings()
        .first()
    )
    return None if row is None else _signing_key(row)


async def insert_signing_key(session: AsyncSession, key: SigningKey) -> bool:
    """False when another process installed an active key first (one active key at most)."""
    done = await session.execute(
        pg_insert(signing_keys)
        .values(
            kid=key.kid,
            algorithm=key.algorithm,
            private_key_pem=key.private_key_pem,
            public_jwk=key.public_jwk,
        )
        .on_conflict_do_nothing()
        .returning(signing_keys.c.kid)
    )
    return done.first() is not None


async def retire_signing_keys(session: AsyncSession) -> None:
    # Serializes rotations: the second waits, then retires the key the first installed.
    await session.execute(text("LOCK TABLE teams.signing_keys IN SHARE ROW EXCLUSIVE MODE"))
    await session.execute(
        update(signing_keys)
        .where(signing_keys.c.retired_at.is_(None))
        .values(retired_at=func.now())
    )


async def published_signing_keys(session: AsyncSession, *, since: datetime) -> list[SigningKey]:
    """The active key and those retired after `since`."""
    c = signing_keys.c
    rows = await session.execute(
        select(signing_keys)
        .where((c.retired_at.is_(None)) | (c.retired_at >= since))
        .order_by(c.created_at.desc())
    )
    return [_signing_key(row) for row in rows.mappings()]
