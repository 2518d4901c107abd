"""Stored scores: the upsert that versions them, sibling ranks, single scores and rankings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import dump_json, json_rows
from scoring import domain
from scoring.adapters.changelog import lock_for_scores
from scoring.adapters.tables import columns_of, scores, subjects
from scoring.domain import SubjectPeriod


async def upsert_scores(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, computed_at: datetime
) -> int:
    """Store computed scores with their ranks; each stored change bumps the version by one,
    and every version is appended to `score_history`, the changelog the relay publishes from
    (each row with its `traceparent`: the trace the publication continues). A score equal to
    the stored one (points, components, indicators, rank, no newer event time) is no change:
    no version, nothing published. Returns how many versions were written.

    One `unnest` statement (a multi-VALUES insert of thousands of rows was bind-bound), after
    the changelog's lock (`adapters.changelog`).
    """
    if not rows:
        return 0
    ordered = sorted(
        rows, key=lambda r: (r["subject_type"], r["subject_id"], r["period"], r["criteria_set"])
    )
    await lock_for_scores(session)
    result = await session.execute(
        text(
            """
            WITH fresh AS (
              SELECT r->>0 AS subject_type, r->>1 AS subject_id, r->>2 AS period,
                     r->>3 AS criteria_set, CAST(r->>4 AS float8) AS score,
                     CAST(r->>5 AS float8) AS max_score, CAST(co AS json) AS components,
                     CAST(ind AS json) AS indicators, CAST(r->>6 AS int) AS rank,
                     CAST(r->>7 AS int) AS rank_of,
                     CAST(r->>8 AS timestamptz) AS as_of_event_time, r->>9 AS traceparent
              -- zipped in order (the rows are sorted: publishers lock scores in one order)
              FROM ROWS FROM (jsonb_array_elements(CAST(:rows AS jsonb)),
                              unnest(CAST(:co AS text[])), unnest(CAST(:ind AS text[])))
                   AS k(r, co, ind)
            ), stored AS (
            INSERT INTO scoring.scores AS s
                (subject_type, subject_id, period, criteria_set, score, max_score, components,
                 indicators, rank, rank_of, version, as_of_event_time, computed_at)
            SELECT subject_type, subject_id, period, criteria_set, score, max_score,
                   components, indicators, rank, rank_of, 1, as_of_event_time,
                   CAST(:now AS timestamptz)
            FROM fresh
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
            -- only a change is a new version: a recompute, a re-scoring or a roster change that
            -- moves nothing publishes nothing (a newer event time is a change: the watermark)
            WHERE (s.score, s.max_score, s.rank, s.rank_of, CAST(s.components AS text),
                   CAST(s.indicators AS text))
                  IS DISTINCT FROM (excluded.score, excluded.max_score, excluded.rank,
                   excluded.rank_of, CAST(excluded.components AS text),
                   CAST(excluded.indicators AS text))
               OR excluded.as_of_event_time > s.as_of_event_time
               OR (s.as_of_event_time IS NULL AND excluded.as_of_event_time IS NOT NULL)
            RETURNING s.*
            ), kept AS (
              -- every published version, in the same transaction (`score_history`, by month),
              -- numbered by trace, then key: the relay sends them in `seq` order, one producer
              -- span per run of rows continuing one trace (a key is once in a pass: its
              -- versions still follow each other across passes)
              INSERT INTO scoring.score_history (subject_type, subject_id, period, criteria_set,
                  version, score, max_score, rank, rank_of, components, indicators,
                  as_of_event_time, computed_at, traceparent)
              SELECT s.subject_type, s.subject_id, s.period, s.criteria_set, s.version, s.score,
                     s.max_score, s.rank, s.rank_of, s.components, s.indicators,
                     s.as_of_event_time, s.computed_at, f.traceparent
              FROM stored s
              JOIN fresh f USING (subject_type, subject_id, period, criteria_set)
              ORDER BY f.traceparent, s.subject_type, s.subject_id, s.period, s.criteria_set
              RETURNING 1
            )
            SELECT count(*) FROM kept
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
                        r.get("traceparent"),
                    )
                    for r in ordered
                ]
            ),
            "co": [dump_json(r["components"]) for r in ordered],
            "ind": [dump_json(r["indicators"]) for r in ordered],
            "now": computed_at,
        },
    )
    return int(result.scalar_one())


async def sibling_ranks(
    session: AsyncSession,
    keys: Sequence[SubjectPeriod],
    *,
    criteria: str,
    fresh: Mapping[SubjectPeriod, float],
) -> dict[SubjectPeriod, tuple[int, int]]:
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
    out: dict[SubjectPeriod, tuple[int, int]] = {}
    for key in keys:
        stype, sid, period = key
        parent = parents.get((stype, sid))
        if parent is None:
            continue
        rank = domain.rank_of(siblings[(*parent, stype, period)], sid)
        if rank is not None:
            out[key] = rank
    return out


Family = tuple[str, str, str]  # parent type, parent id, subject type
Group = tuple[str, str, str, str]  # a family in one period


async def _sibling_scores(
    session: AsyncSession,
    groups: Sequence[Group],
    *,
    criteria: str,
    fresh: Mapping[SubjectPeriod, float],
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
        columns_of(families, "pt", "pid", "st"),
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


async def keep_score_history(session: AsyncSession, *, months: int) -> None:
    """This month's and next month's partitions of `score_history` exist; older than `months`
    are dropped."""
    await session.execute(text("SELECT scoring.keep_score_history(:months)"), {"months": months})


async def score_versions(
    session: AsyncSession,
    *,
    key: SubjectPeriod,
    criteria_set: str,
    before_version: int | None,
    limit: int,
) -> list[RowMapping]:
    """The kept versions of a subject-period's score, newest first."""
    result = await session.execute(
        text(
            """
            SELECT version, score, max_score, rank, rank_of, components, indicators,
                   as_of_event_time, computed_at
            FROM scoring.score_history
            WHERE subject_type = :st AND subject_id = :sid AND period = :period
              AND criteria_set = :cs
              AND (CAST(:before AS integer) IS NULL OR version < CAST(:before AS integer))
            ORDER BY version DESC
            LIMIT :limit
            """
        ),
        {
            "st": key.subject_type,
            "sid": key.subject_id,
            "period": key.period,
            "cs": criteria_set,
            "before": before_version,
            "limit": limit,
        },
    )
    return list(result.mappings())
