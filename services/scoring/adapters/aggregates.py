"""Indicators per subject-period: the signed deltas of a batch applied set-based (counters merged,
distinct values reference-counted, state indicators), and read back for scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import json_rows
from scoring import domain
from scoring.adapters.tables import columns_of
from scoring.domain import Deltas, DistinctKey, SubjectPeriod

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
            columns_of(gone, "st", "sid", "p", "dim", "v"),
        )
    return changes


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
            columns_of(sorted(shrinking), "st", "sid", "p"),
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


# --------------------------------------------------------------------------- reads


async def indicators_for(
    session: AsyncSession, keys: Sequence[SubjectPeriod]
) -> dict[SubjectPeriod, dict[str, float]]:
    """Period indicators plus the subject's state indicators, for many subject-periods."""
    if not keys:
        return {}
    out: dict[SubjectPeriod, dict[str, float]] = {k: {} for k in keys}
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
        out[SubjectPeriod(stype, sid, period)].update(domain.visible_indicators(values))
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
