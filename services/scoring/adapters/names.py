"""Names and codes of teams and units, from the teams topics: what reports show people."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import json_rows
from scoring.domain import SubjectName

_SAVE_NAMES = text(
    """
    INSERT INTO scoring.subject_names AS n (subject_type, subject_id, code, name, version)
    SELECT r->>0, r->>1, r->>2, r->>3, CAST(r->>4 AS int)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
    ON CONFLICT (subject_type, subject_id) DO UPDATE SET code = excluded.code,
        name = excluded.name, version = excluded.version
    WHERE n.version <= excluded.version AND (n.code, n.name) IS DISTINCT FROM
          (excluded.code, excluded.name)
    """
)


async def save_names(session: AsyncSession, names: Iterable[SubjectName]) -> None:
    """Newer versions win; a batch's repeated subject keeps its newest (last, on a tie) name."""
    newest: dict[tuple[str, str], SubjectName] = {}
    for name in names:
        key = (name.subject_type, name.subject_id)
        if key not in newest or newest[key].version <= name.version:
            newest[key] = name
    if newest:
        rows = [
            (n.subject_type, n.subject_id, n.code, n.name, n.version)
            for _, n in sorted(newest.items())
        ]
        await session.execute(_SAVE_NAMES, {"rows": json_rows(rows)})
