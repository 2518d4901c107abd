"""Dirty marks: which subject-periods to score and publish again, in two lanes, taken by
publication passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from common.db import json_rows
from scoring.adapters.tables import Lane, columns_of
from scoring.domain import PeriodKey, Subject, SubjectPeriod, calendar_periods


@asynccontextmanager
async def _queue_read_by_index(session: AsyncSession) -> AsyncIterator[None]:
    """The statements inside read the queues through their indexes only.

    A queue table's statistics are wrong more often than right: vacuumed empty between two
    bursts, it looks empty to the planner until its next analyze. The statements are shaped so
    that no plan is quadratic (`_TAKE_MARKS`); this keeps each probe an index probe as well."""
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    yield
    await session.execute(text("SET LOCAL enable_seqscan TO DEFAULT"))


async def mark_dirty(
    session: AsyncSession,
    touched: Mapping[PeriodKey, datetime | None],
    *,
    traceparent: str | None = None,
    lane: Lane = Lane.LIVE,
) -> None:
    """Mark subject-periods to score again. A live mark is always added (its event time and
    trace are the watermark and the trace its score continues); a background mark is left out
    where one is already waiting: a roster import re-marks a province in every batch, and its
    re-scoring needs one mark, not a hundred thousand."""
    if not touched:
        return
    keys = sorted(touched)
    parameters = {
        "rows": json_rows([(*k, touched[k]) for k in keys]),
        "tp": traceparent,
        "lane": lane,
    }
    if lane is Lane.LIVE:  # a plain insert: it reads nothing of the queue
        await session.execute(_MARK[lane], parameters)
        return
    async with _queue_read_by_index(session):  # its NOT EXISTS probes the queue per key
        await session.execute(_MARK[lane], parameters)


_INSERT_MARKS = """
    INSERT INTO scoring.dirty_subjects
        (subject_type, subject_id, period, event_time, traceparent, lane)
    SELECT r->>0, r->>1, r->>2, CAST(r->>3 AS timestamptz), CAST(:tp AS text),
           CAST(:lane AS smallint)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
"""
_MARK = {
    Lane.LIVE: text(_INSERT_MARKS),
    Lane.BACKGROUND: text(
        _INSERT_MARKS
        + """
    WHERE NOT EXISTS (
        SELECT FROM scoring.dirty_subjects d
        WHERE d.subject_type = r->>0 AND d.subject_id = r->>1 AND d.period = r->>2
          AND d.lane = CAST(:lane AS smallint)
    )
"""
    ),
}


async def mark_state_dirty(
    session: AsyncSession,
    subjects: Iterable[Subject],
    *,
    now: datetime,
    traceparent: str | None = None,
) -> None:
    """Mark subjects whose state indicators changed, for the background lane: once per subject
    however many batches touch it before a pass takes it (a later mark only records a new
    month, whose periods the pass then publishes as well)."""
    keys = sorted(set(subjects))
    if not keys:
        return
    await session.execute(
        text(
            """
            INSERT INTO scoring.state_marks AS m
                (subject_type, subject_id, first_marked_at, last_marked_at, month, traceparent)
            SELECT st, sid, :now, :now, :month, :tp
            FROM unnest(CAST(:st AS text[]), CAST(:sid AS text[])) AS k(st, sid)
            ON CONFLICT (subject_type, subject_id) DO UPDATE
                SET last_marked_at = excluded.last_marked_at, month = excluded.month
                WHERE m.month <> excluded.month
            """
        ),
        {
            "st": [k[0] for k in keys],
            "sid": [k[1] for k in keys],
            "now": now,
            "month": calendar_periods(now)[0],
            "tp": traceparent,
        },
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
    event_times: dict[SubjectPeriod, datetime | None] = field(default_factory=dict)
    # subject-period -> distinct traceparents of the batches that marked it, latest last
    traces: dict[SubjectPeriod, list[str]] = field(default_factory=dict)


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
# Every mark of the picked subject-periods, deleted. Its shape leaves the planner one way, linear
# in the marks taken: one index probe per key (LATERAL: the keys drive), then the delete by
# `seq = ANY(ARRAY(...))` (a join of the queue to the probes' result was planned as a nested
# loop over the whole queue, re-running the probes per row: 31 s a pass after an import).
_TAKE_MARKS = text(
    """
    WITH picked AS MATERIALIZED (
        SELECT x.seq
        FROM unnest(CAST(:st AS text[]), CAST(:sid AS text[]), CAST(:p AS text[]))
             AS k(st, sid, p),
        LATERAL (
            SELECT m.seq FROM scoring.dirty_subjects m
            WHERE m.subject_type = k.st AND m.subject_id = k.sid AND m.period = k.p
            FOR UPDATE SKIP LOCKED
        ) AS x
    ),
    taken AS (
        DELETE FROM scoring.dirty_subjects d
        WHERE d.seq = ANY (ARRAY(SELECT seq FROM picked))
        RETURNING d.seq, d.subject_type, d.subject_id, d.period, d.event_time, d.traceparent
    )
    SELECT subject_type, subject_id, period, event_time, traceparent FROM taken ORDER BY seq
    """
)
# The background lane's share of a pass while the live lane is busy: it advances, slowly.
BACKGROUND_SHARE = 4


async def _pick(
    session: AsyncSession, *, lane: Lane, limit: int, teams_only: bool
) -> dict[SubjectPeriod, None]:
    """Up to `limit` subject-periods of one lane, half from each end of its queue."""
    picked: dict[SubjectPeriod, None] = {}
    oldest, newest = _QUEUE_ENDS[teams_only]
    # UNION forbids FOR UPDATE: two statements
    for statement, count in ((oldest, limit // 2), (newest, limit - limit // 2)):
        if count > 0:
            ends = await session.execute(statement, {"half": count, "lane": lane})
            picked.update(dict.fromkeys(SubjectPeriod(r[0], r[1], r[2]) for r in ends))
    return picked


async def _take_state_marks(
    session: AsyncSession, *, limit: int, teams_only: bool
) -> list[tuple[str, str, datetime, datetime, str | None]]:
    """The oldest state marks, deleted (restored if the pass rolls back)."""
    if limit <= 0:
        return []
    rows = await session.execute(_TAKE_STATE_MARKS[teams_only], {"limit": limit})
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _take_state_marks_sql(*, teams_only: bool) -> TextClause:
    teams = "WHERE subject_type = 'team' " if teams_only else ""
    # by `seq = ANY(ARRAY(...))`: an index probe per taken mark (see `_TAKE_MARKS`)
    return text(
        "DELETE FROM scoring.state_marks m WHERE m.seq = ANY (ARRAY("  # noqa: S608 - constant fragments
        f" SELECT seq FROM scoring.state_marks {teams}"
        " ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED))"
        " RETURNING m.subject_type, m.subject_id, m.first_marked_at, m.last_marked_at,"
        " m.traceparent"
    )


_TAKE_STATE_MARKS = {
    teams_only: _take_state_marks_sql(teams_only=teams_only) for teams_only in (False, True)
}


async def take_dirty(
    session: AsyncSession, *, limit: int, teams_only: bool = False, background: bool = True
) -> DirtyMarks:
    """Subject-periods from both ends of each lane's queue, each with every mark it has (in
    either lane), coalesced.

    The live lane goes first; the background lane fills what the live one leaves of `limit`,
    and at least a quarter of it (a bulk import's re-scoring advances under live load, and a
    live activity never waits behind it). Within a lane, half the pass goes to the oldest
    marks (nothing starves), half to the newest (a fresh event is scored within a pass or two
    even behind a backlog). Taking all of a subject-period's marks publishes it once for the
    whole backlog. `teams_only`: leave the units' marks to gather (they are re-marked by nearly
    every batch, so taking them less often publishes each once for many batches).
    `background=False`: the live lane only.
    """
    async with _queue_read_by_index(session):
        return await _take(session, limit=limit, teams_only=teams_only, background=background)


async def _take(
    session: AsyncSession, *, limit: int, teams_only: bool, background: bool
) -> DirtyMarks:
    picked = await _pick(session, lane=Lane.LIVE, limit=limit, teams_only=teams_only)
    room = max(limit - len(picked), limit // BACKGROUND_SHARE) if background else 0
    # The background lane: state marks first (three periods or more each: enough of them to
    # fill its room, so a pass of them alone counts as a full pass), then the re-scoring marks
    # in what is left, at least a quarter of it.
    states = await _take_state_marks(session, limit=-(-room // 3), teams_only=teams_only)
    state_keys: dict[SubjectPeriod, tuple[datetime, str | None]] = {}
    for stype, sid, first, last, traceparent in states:
        for moment in (first, last):
            for period in calendar_periods(moment):
                state_keys[SubjectPeriod(stype, sid, period)] = (last, traceparent)
    for key in state_keys:
        picked.setdefault(key)
    room = max(room - len(state_keys), room // BACKGROUND_SHARE)
    for key in await _pick(session, lane=Lane.BACKGROUND, limit=room, teams_only=teams_only):
        picked.setdefault(key)
    if not picked:
        return DirtyMarks(taken=0)
    rows = (await session.execute(_TAKE_MARKS, columns_of(list(picked), "st", "sid", "p"))).all()
    marks = DirtyMarks(taken=len(rows) + len(state_keys))
    latest = marks.event_times
    # state marks first: a subject-period's live marks, read in order below, come later
    for key, (moment, traceparent) in state_keys.items():
        latest[key] = moment
        if traceparent:
            marks.traces[key] = [traceparent]
    for stype, sid, period, moment, traceparent in rows:
        key = SubjectPeriod(stype, sid, period)
        previous = latest.get(key)
        if key not in latest or (moment is not None and (previous is None or moment > previous)):
            latest[key] = moment
        if traceparent:
            seen = marks.traces.setdefault(key, [])
            if traceparent in seen:
                seen.remove(traceparent)
            seen.append(traceparent)
    return marks
