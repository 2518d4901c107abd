"""The legacy (63-province) crosswalk as scoring learned it from the teams topics: legacy units
sit in `scoring.admin_units` under `L-` codes, their `replaced_by` naming current communes."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.contracts.teams import LEGACY_PREFIX
from scoring.domain.legacy import Predecessor

# Every legacy unit naming a commune that a unit of the old province became: the province's
# own units and their rivals for the communes they share.
_PREDECESSORS = text(
    """
    WITH area AS (
        SELECT DISTINCT unnest(replaced_by) AS commune FROM scoring.admin_units
        WHERE path->>'province' = :province AND level IN ('district', 'commune')
    )
    SELECT u.code, u.path->>'province' AS old_province, u.replaced_by
    FROM scoring.admin_units u
    WHERE u.level IN ('district', 'commune')
      AND starts_with(u.path->>'province', :prefix)
      AND u.replaced_by && ARRAY(SELECT commune FROM area)
    """
)


async def legacy_province_name(session: AsyncSession, code: str) -> str | None:
    """The old province's name, if the teams topics announced it (None: unknown)."""
    if not code.startswith(LEGACY_PREFIX):
        return None
    name = await session.scalar(
        text(
            "SELECT coalesce(n.name, u.code) FROM scoring.admin_units u"
            " LEFT JOIN scoring.subject_names n"
            "  ON n.subject_type = 'province' AND n.subject_id = u.code"
            " WHERE u.code = :code AND u.level = 'province'"
        ),
        {"code": code},
    )
    return str(name) if name is not None else None


async def legacy_predecessors(session: AsyncSession, old_province: str) -> list[Predecessor]:
    rows = await session.execute(_PREDECESSORS, {"province": old_province, "prefix": LEGACY_PREFIX})
    return [
        Predecessor(code=code, old_province=province, successors=tuple(successors))
        for code, province, successors in rows
    ]


async def commune_names(session: AsyncSession, codes: list[str]) -> dict[str, tuple[str, str]]:
    """Current commune -> (name, province code), as the teams topics announced them."""
    rows = await session.execute(
        text(
            "SELECT u.code, coalesce(n.name, u.code), u.path->>'province'"
            " FROM scoring.admin_units u LEFT JOIN scoring.subject_names n"
            "  ON n.subject_type = 'commune' AND n.subject_id = u.code"
            " WHERE u.code = ANY(CAST(:codes AS text[])) AND u.level = 'commune'"
        ),
        {"codes": codes},
    )
    return {code: (name, province) for code, name, province in rows}
