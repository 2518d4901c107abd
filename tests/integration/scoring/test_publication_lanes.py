"""A bulk import's re-scoring waits in the background lane; live activity scores go first.

Each test works inside one transaction it rolls back: the running publisher never sees its
marks. Tests that take marks first wait until the publisher drained what earlier tests left,
so the queue holds exactly the marks they write.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from scoring import adapters
from scoring.adapters import Lane
from scoring.handlers import apply_batch
from tests.helpers import eventually
from tests.unit.scoring import factory


async def _drained(runtime: Any) -> None:
    async def empty() -> bool:
        async with runtime.sessions() as session:
            return not any(
                [
                    await session.scalar(select(func.count()).select_from(table))
                    for table in (adapters.dirty_subjects, adapters.state_marks)
                ]
            )

    await eventually(empty, timeout=60, what="the publisher drained earlier marks")


def _team_keys(prefix: str, count: int) -> dict[tuple[str, str, str], None]:
    return {("team", f"{prefix}-{index}", "2026-05"): None for index in range(count)}


async def test_a_live_mark_is_taken_ahead_of_a_bulk_backlog(scoring: Any) -> None:
    _, runtime = scoring
    await _drained(runtime)
    prefix = uuid.uuid4().hex[:8]
    older, newer = _team_keys(f"bulk-{prefix}-a", 300), _team_keys(f"bulk-{prefix}-b", 300)
    backlog = {**older, **newer}
    live = ("team", f"live-{prefix}", "2026-05")
    async with runtime.sessions() as session, session.begin():
        # in the middle of the backlog: neither end of one queue would reach it
        await adapters.mark_dirty(session, older, lane=Lane.BACKGROUND)
        await adapters.mark_dirty(session, {live: None})
        await adapters.mark_dirty(session, newer, lane=Lane.BACKGROUND)
        marks = await adapters.take_dirty(session, limit=100)
        taken = set(marks.event_times)
        assert live in taken
        # the backlog still advances: its share of the pass, never more than the pass
        from_backlog = taken & backlog.keys()
        assert 100 // adapters.BACKGROUND_SHARE <= len(from_backlog) <= 100
        await session.rollback()


async def test_a_live_backlog_leaves_the_background_lane_its_share(scoring: Any) -> None:
    _, runtime = scoring
    await _drained(runtime)
    prefix = uuid.uuid4().hex[:8]
    live = _team_keys(f"live-{prefix}", 400)
    backlog = _team_keys(f"bulk-{prefix}", 400)
    async with runtime.sessions() as session, session.begin():
        await adapters.mark_dirty(session, backlog, lane=Lane.BACKGROUND)
        await adapters.mark_dirty(session, live)
        taken = set((await adapters.take_dirty(session, limit=100)).event_times)
        assert len(taken & live.keys()) >= 100 - 100 // adapters.BACKGROUND_SHARE
        assert len(taken & backlog.keys()) >= 100 // adapters.BACKGROUND_SHARE
        await session.rollback()


async def test_a_pass_without_the_background_lane_takes_only_live_marks(scoring: Any) -> None:
    _, runtime = scoring
    await _drained(runtime)
    prefix = uuid.uuid4().hex[:8]
    live, backlog = _team_keys(f"live-{prefix}", 10), _team_keys(f"bulk-{prefix}", 10)
    async with runtime.sessions() as session, session.begin():
        await adapters.mark_dirty(session, backlog, lane=Lane.BACKGROUND)
        await adapters.mark_dirty(session, live)
        taken = set((await adapters.take_dirty(session, limit=100, background=False)).event_times)
        assert taken == live.keys()
        taken = set((await adapters.take_dirty(session, limit=100)).event_times)
        assert taken == backlog.keys()
        await session.rollback()


async def test_a_subject_marked_in_both_lanes_is_taken_once_with_all_its_marks(
    scoring: Any,
) -> None:
    _, runtime = scoring
    key = ("team", f"both-{uuid.uuid4().hex[:8]}", "2026-05")
    async with runtime.sessions() as session, session.begin():
        await adapters.mark_dirty(session, {key: None}, lane=Lane.BACKGROUND)
        await adapters.mark_dirty(session, {key: None})
        await adapters.take_dirty(session, limit=10)
        left = await session.scalars(
            select(adapters.dirty_subjects.c.seq).where(
                adapters.dirty_subjects.c.subject_id == key[1]
            )
        )
        assert list(left) == []
        await session.rollback()


async def test_roster_changes_mark_the_background_lane_and_activities_the_live_one(
    scoring: Any,
) -> None:
    _, runtime = scoring
    province = f"L{uuid.uuid4().hex[:6]}"
    where = factory.path(province, f"{province}-C", f"{province}-V")
    team_id, member_id = uuid.uuid4(), uuid.uuid4()
    roster = [
        factory.inbound(factory.team(team_id=team_id, unit_path=where)),
        factory.inbound(factory.member(member_id=member_id, team_id=team_id, trained=True)),
    ]
    async with runtime.unit_of_work() as uow:
        await apply_batch(uow.session, roster)
        # the roster's state changes wait as one background mark per subject, none live
        assert await _state_marked(uow.session, province=province, team_id=team_id) == {
            ("team", str(team_id)),
            ("province", province),
        }
        assert await _lanes(uow.session, province=province, team_id=team_id) == {}
        await apply_batch(
            uow.session,
            [factory.inbound(factory.activity(team_id=team_id, unit_path=where))],
        )
        lanes = await _lanes(uow.session, province=province, team_id=team_id)
        # the activity's month, quarter and year of the team and its ancestors are live now
        assert lanes[("team", str(team_id))] == {Lane.LIVE}
        assert lanes[("province", province)] == {Lane.LIVE}
        await uow.rollback()


async def test_a_state_mark_is_taken_in_the_background_lane_for_its_periods(
    scoring: Any,
) -> None:
    _, runtime = scoring
    await _drained(runtime)
    subject = ("team", f"state-{uuid.uuid4().hex[:8]}")
    march, april = datetime(2026, 3, 31, 12, tzinfo=UTC), datetime(2026, 4, 1, 12, tzinfo=UTC)
    async with runtime.sessions() as session, session.begin():
        for _ in range(3):  # three roster batches: one mark
            await adapters.mark_state_dirty(session, [subject], now=march)
        assert (
            await session.scalar(
                select(func.count())
                .select_from(adapters.state_marks)
                .where(adapters.state_marks.c.subject_id == subject[1])
            )
            == 1
        )
        assert (
            set((await adapters.take_dirty(session, limit=100, background=False)).event_times)
            == set()
        )
        await adapters.mark_state_dirty(session, [subject], now=april)  # a new month
        taken = await adapters.take_dirty(session, limit=100)
        assert set(taken.event_times) == {
            (*subject, period) for period in ("2026-03", "2026-Q1", "2026-04", "2026-Q2", "2026")
        }
        assert set(taken.event_times.values()) == {april}
        assert not await session.scalar(select(func.count()).select_from(adapters.state_marks))
        await session.rollback()


async def test_a_pass_full_of_state_marks_counts_as_full(scoring: Any) -> None:
    """So units' state marks are taken on every pass while they remain (`UnitCadence`)."""
    _, runtime = scoring
    await _drained(runtime)
    prefix = uuid.uuid4().hex[:8]
    subjects = [("village", f"state-{prefix}-{index}") for index in range(40)]
    async with runtime.sessions() as session, session.begin():
        await adapters.mark_state_dirty(session, subjects, now=datetime(2026, 5, 5, tzinfo=UTC))
        assert (await adapters.take_dirty(session, limit=30)).taken >= 30
        await session.rollback()


async def _state_marked(session: Any, *, province: str, team_id: uuid.UUID) -> set[tuple[str, str]]:
    table = adapters.state_marks
    rows = await session.execute(
        select(table.c.subject_type, table.c.subject_id).where(
            table.c.subject_id.in_([str(team_id), province])
        )
    )
    return {(stype, sid) for stype, sid in rows}


async def _lanes(
    session: Any, *, province: str, team_id: uuid.UUID
) -> dict[tuple[str, str], set[int]]:
    table = adapters.dirty_subjects
    rows = await session.execute(
        select(table.c.subject_type, table.c.subject_id, table.c.lane).where(
            table.c.subject_id.in_([str(team_id), province])
        )
    )
    out: dict[tuple[str, str], set[int]] = {}
    for stype, sid, lane in rows:
        out.setdefault((stype, sid), set()).add(lane)
    return out


async def test_a_waiting_background_mark_absorbs_the_next_ones_and_live_marks_all_stay(
    scoring: Any,
) -> None:
    _, runtime = scoring
    prefix = uuid.uuid4().hex[:8]
    bulk, live = _team_keys(f"bulk-{prefix}", 3), _team_keys(f"live-{prefix}", 3)
    table = adapters.dirty_subjects
    async with runtime.sessions() as session, session.begin():
        for _ in range(3):  # three batches of an import, three live batches
            await adapters.mark_dirty(session, bulk, lane=Lane.BACKGROUND)
            await adapters.mark_dirty(session, live)
        counts = dict(
            (
                await session.execute(
                    select(table.c.subject_id, func.count())
                    .where(table.c.subject_id.like(f"%-{prefix}-%"))
                    .group_by(table.c.subject_id)
                )
            ).all()
        )
        assert {sid: counts[sid] for _, sid, _ in bulk} == {sid: 1 for _, sid, _ in bulk}
        assert {sid: counts[sid] for _, sid, _ in live} == {sid: 3 for _, sid, _ in live}
        await session.rollback()


async def _queue_reads(session: AsyncSession) -> tuple[int, int]:
    """(seq scans, rows read) of the two queues so far in this transaction."""
    row = (
        await session.execute(
            text(
                "SELECT coalesce(sum(seq_scan), 0),"
                " coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)"
                " FROM pg_stat_xact_user_tables"
                " WHERE schemaname = 'scoring' AND relname IN ('dirty_subjects', 'state_marks')"
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def test_the_queues_are_read_through_their_indexes_whatever_their_statistics(
    scoring: Any,
) -> None:
    """Vacuumed empty between two bursts, a queue looks empty to the planner until it is
    analyzed again: a pass must still find its marks by index, in work linear in the marks (a
    plan that re-read the queue per mark took 17-31 s a pass right after a national import)."""
    _, runtime = scoring
    await _drained(runtime)
    prefix = uuid.uuid4().hex[:8]
    live, backlog = _team_keys(f"live-{prefix}", 1500), _team_keys(f"bulk-{prefix}", 1500)
    async with runtime.sessions() as session, session.begin():
        # the statistics a vacuum leaves on an emptied queue: pages, and no rows on them
        await session.execute(
            text(
                "UPDATE pg_class SET reltuples = 0, relpages = greatest(relpages, 1) WHERE oid IN"
                " ('scoring.dirty_subjects'::regclass, 'scoring.state_marks'::regclass)"
            )
        )
        await adapters.mark_dirty(session, live)
        scans, read = await _queue_reads(session)
        await adapters.mark_dirty(session, backlog, lane=Lane.BACKGROUND)
        await adapters.mark_dirty(session, backlog, lane=Lane.BACKGROUND)  # probes each key
        await adapters.mark_state_dirty(
            session, [("team", f"state-{prefix}-{i}") for i in range(600)], now=datetime.now(UTC)
        )
        marks = await adapters.take_dirty(session, limit=2000)
        assert live.keys() <= marks.event_times.keys()
        scans_after, read_after = await _queue_reads(session)
        assert scans_after == scans
        queued = len(live) + len(backlog) + 600
        assert read_after - read <= 5 * queued, "the queue was read more than once per mark"
        # a pass takes the state marks its room holds, not all of them
        left = await session.scalar(select(func.count()).select_from(adapters.state_marks))
        assert 0 < (left or 0) < 600
        await session.rollback()
