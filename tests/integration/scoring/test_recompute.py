"""Slices 7-8: a full recompute from stored facts equals what the incremental path produced."""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, text

from common.contracts.teams import AdminUnitChanged
from common.envelope import SCHEMA_BASE_URL
from scoring import adapters, domain, use_cases
from scoring.handlers import apply_batch, fact_from_event
from tests.helpers import OPERATOR, eventually, recompute_job
from tests.integration.scoring.conftest import indicators, produce, wait_processed
from tests.unit.scoring import factory


async def snapshot(runtime: Any) -> dict[str, set[tuple[Any, ...]]]:
    async with runtime.sessions() as session:
        out = {
            table.name: {tuple(row) for row in await session.execute(select(table))}
            for table in (adapters.distinct_values, adapters.state_values)
        }
        # one row per indicator, whatever the storage layout
        out["indicators"] = {
            (st, sid, period, name, value)
            for st, sid, period, values in await session.execute(select(adapters.indicator_sets))
            for name, value in values.items()
        }
        return out


async def test_random_streams_in_postgres_equal_a_from_scratch_recompute(scoring, producer) -> None:
    client, runtime = scoring
    for seed in range(5):
        rng = random.Random(seed)
        province = f"R{uuid.uuid4().hex[:6]}"
        stream = factory.random_stream(rng, province=province, size=25)
        seen: set[uuid.UUID] = set()
        for batch in factory.batches(rng, stream.deliveries):
            async with runtime.unit_of_work() as uow:
                await apply_batch(uow.session, factory.dedupe_like_runner(batch, seen))
                await uow.commit()
        oracle = domain.recompute_from_facts(fact_from_event(a) for a in stream.live)
        async with runtime.sessions() as session:
            rows = (
                await session.execute(
                    select(adapters.indicator_sets).where(
                        adapters.indicator_sets.c.subject_type == "province",
                        adapters.indicator_sets.c.subject_id == province,
                    )
                )
            ).all()
            stored = {(r[0], r[1], r[2], name): value for r in rows for name, value in r[3].items()}
        expected = {k: v for k, v in oracle.counters.items() if k[:2] == ("province", province)}
        assert stored == expected, f"seed {seed}"

    # and through Kafka: duplicates and redeliveries of a stream consumed by the real runner,
    # with teams moving on their own topic meanwhile
    stream = factory.random_stream(
        random.Random(99), province=f"K{uuid.uuid4().hex[:6]}", size=40, moves=True
    )
    events = [factory_outbound for factory_outbound in (_as_outbound(e) for e in stream.deliveries)]
    from tests.integration.scoring.conftest import send

    await send(producer, events)
    await wait_processed(runtime, events)

    before = await snapshot(runtime)
    job = await recompute_job(client)
    assert job["state"] == "succeeded", job
    assert job["result"]["facts"] > 0
    assert job["facts_done"] == job["facts_total"] == job["result"]["facts"]
    assert job["facts_per_second"] > 0 and job["eta_seconds"] is None
    after = await snapshot(runtime)
    for name, rows in before.items():
        assert after[name] == rows, (name, sorted(after[name] ^ rows)[:10])
    assert (await client.post("/v1/recompute")).status_code == 401
    assert (await client.get(f"/v1/recompute/{job['id']}")).status_code == 401
    unknown = await client.get(f"/v1/recompute/{uuid.uuid4()}", headers=OPERATOR)
    assert unknown.status_code == 404, unknown.text

    # an upgrade that empties the derived tables (migration 0004): the worker rebuilds them
    async with runtime.unit_of_work() as uow:
        await uow.session.execute(text("TRUNCATE scoring.indicator_sets, scoring.distinct_values"))
        await uow.commit()
    async with runtime.unit_of_work() as uow:
        rebuilt = await use_cases.rebuild_if_missing(uow.session)
        await uow.commit()
    assert rebuilt is not None and rebuilt.facts > 0
    assert await snapshot(runtime) == before
    async with runtime.unit_of_work() as uow:
        assert await use_cases.rebuild_if_missing(uow.session) is None  # nothing missing now


async def test_teams_that_move_count_where_they_are_now_and_recompute_the_same(scoring) -> None:
    """Teams change place between (and during) their activities, and some activities carry the
    place their team had before: each team's history counts where the team is now, and a
    recompute reproduces the incremental result exactly."""
    _, runtime = scoring
    provinces = []
    for seed in range(6):
        rng = random.Random(1000 + seed)
        provinces.append(f"M{uuid.uuid4().hex[:6]}")
        stream = factory.random_stream(rng, province=provinces[-1], size=30, moves=True)
        seen: set[uuid.UUID] = set()
        for batch in factory.batches(rng, stream.deliveries):
            async with runtime.unit_of_work() as uow:
                await apply_batch(uow.session, factory.dedupe_like_runner(batch, seen))
                await uow.commit()
    async with runtime.sessions() as session:
        facts, teams = adapters.activity_facts, adapters.team_state
        misplaced = (
            await session.execute(
                select(func.count())
                .select_from(facts.join(teams, facts.c.team_id == teams.c.team_id))
                .where(
                    facts.c.province.in_(provinces),
                    facts.c.recorded,
                    ~facts.c.voided,  # voided facts count nowhere; they stay where they were
                    teams.c.province.is_not(None),
                    or_(
                        *(
                            facts.c[level].is_distinct_from(teams.c[level])
                            for level in ("province", "district", "commune", "village")
                        )
                    ),
                )
            )
        ).scalar_one()
    assert misplaced == 0
    before = await snapshot(runtime)
    async with runtime.unit_of_work() as uow:
        await use_cases.recompute(uow.session)
        await uow.commit()
    after = await snapshot(runtime)
    for name, rows in before.items():
        assert after[name] == rows, (name, sorted(after[name] ^ rows)[:10])


def _as_outbound(event: Any) -> Any:
    """Re-publish an inbound event with its original ce_id (so duplicates stay duplicates)."""
    from common.envelope import OutboundEvent

    return OutboundEvent(
        topic=event.topic,
        key=event.key,
        type=event.type,
        source="/cdt/activities",
        aggregate_type="activity",
        data=event.data,
        dataschema=f"{SCHEMA_BASE_URL}/schemas/{event.type}.json",
        id=event.id,
    )


async def test_cli_recompute_reports_progress_and_changes_nothing(scoring, subprocess_env) -> None:
    _, runtime = scoring
    before = await snapshot(runtime)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scoring",
        "recompute",
        env=subprocess_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert "recompute: [" in err.decode() and "facts, " in err.decode()  # progress bar lines
    assert "recompute: done:" in out.decode()
    assert await snapshot(runtime) == before


async def test_merged_commune_rerolls_history_to_its_successor(scoring, producer) -> None:
    _, runtime = scoring
    province = f"M{uuid.uuid4().hex[:6]}"
    old, new = f"{province}-OLD", f"{province}-NEW"
    team_id = uuid.uuid4()
    activities = [
        factory.activity(
            team_id=team_id,
            unit_path=factory.path(province, old, f"{old}-V1"),
            household_hash=f"h{i}",
        )
        for i in range(3)
    ]
    events = await produce(producer, *activities)
    await wait_processed(runtime, events)
    merged = AdminUnitChanged(
        code=old,
        name="Xã cũ",
        level="commune",
        parent_code=province,
        path=factory.path(province, old),
        replaced_by=[new],
        change="merged",
        version=2,
        changed_at=factory.NOW,
    )
    events = await produce(producer, merged)
    await wait_processed(runtime, events)
    assert await indicators(runtime, "commune", old, "2026-11") == {}
    moved = await indicators(runtime, "commune", new, "2026-11")
    assert moved["activities"] == 3 and moved["households_visited"] == 3
    assert (await indicators(runtime, "village", f"{old}-V1", "2026-11"))["activities"] == 3
    assert (await indicators(runtime, "province", province, "2026-11"))["activities"] == 3


async def test_one_recompute_job_at_a_time_and_a_dead_one_is_failed(scoring) -> None:
    """A second POST while a job runs returns that job; a job whose process died (heartbeat
    stopped) is marked failed when the next one is asked for."""
    client, runtime = scoring
    async with runtime.unit_of_work() as holder:
        await adapters.lock_for_recompute(holder.session)  # the job will wait on this lock
        first = await client.post("/v1/recompute", headers=OPERATOR)
        assert first.status_code == 202 and first.json()["created"] is True, first.text
        job_id = first.json()["id"]

        async def running() -> bool:
            view = await client.get(f"/v1/recompute/{job_id}", headers=OPERATOR)
            return bool(view.json()["state"] == "running")

        await eventually(running, what="the job to start")
        again = await client.post("/v1/recompute", headers=OPERATOR)
        assert again.status_code == 202 and again.json()["id"] == job_id
        assert again.json()["created"] is False
        await holder.rollback()

    async def ended() -> dict[str, Any] | None:
        view = (await client.get(f"/v1/recompute/{job_id}", headers=OPERATOR)).json()
        return view if view["state"] == "succeeded" else None

    done = await eventually(ended, timeout=60, what="the job to finish")
    assert done["result"]["facts"] == done["facts_done"]

    dead = uuid.uuid4()
    async with runtime.unit_of_work() as uow:
        await uow.session.execute(
            adapters.recompute_jobs.insert().values(
                id=dead, state="running", heartbeat_at=func.now() - text("interval '5 minutes'")
            )
        )
        await uow.commit()
    fresh = await recompute_job(client)
    assert fresh["state"] == "succeeded" and fresh["id"] != str(dead)
    stale = (await client.get(f"/v1/recompute/{dead}", headers=OPERATOR)).json()
    assert stale["state"] == "failed" and stale["error"].startswith("interrupted"), stale


async def _drained(runtime: Any) -> bool:
    async with runtime.sessions() as session:
        marks = await session.scalar(
            text(
                "SELECT (SELECT count(*) FROM scoring.dirty_subjects)"
                " + (SELECT count(*) FROM scoring.state_marks)"
            )
        )
    return marks == 0


async def _versions(runtime: Any, ids: Sequence[str]) -> tuple[int, dict[tuple[str, ...], int]]:
    """The history rows and the stored versions of these subjects' scores."""
    async with runtime.sessions() as session:
        history = await session.scalar(
            text("SELECT count(*) FROM scoring.score_history WHERE subject_id = ANY(:ids)"),
            {"ids": list(ids)},
        )
        versions = {
            (st, sid, period, cs): version
            for st, sid, period, cs, version in await session.execute(
                text(
                    "SELECT subject_type, subject_id, period, criteria_set, version"
                    " FROM scoring.scores WHERE subject_id = ANY(:ids)"
                ),
                {"ids": list(ids)},
            )
        }
    return int(history or 0), versions


async def test_a_recompute_that_changes_nothing_publishes_nothing(scoring, producer) -> None:
    """Every subject-period is scored again after a recompute; an unchanged score is no new
    version, so nothing reaches the changelog (issue #20: only changed scores are published).
    Watched: a new team, its village and its commune (their siblings are theirs alone, so no
    other test's scores can move their ranks)."""
    _, runtime = scoring
    tag = uuid.uuid4().hex[:6]
    team_id = uuid.uuid4()
    commune, village = f"N{tag}-C1", f"N{tag}-C1-V1"
    place = factory.path(f"N{tag}", commune, village)
    await wait_processed(
        runtime, await produce(producer, factory.activity(team_id=team_id, unit_path=place))
    )
    watched = [str(team_id), village, commune]

    async def scored() -> bool:
        _, versions = await _versions(runtime, watched)
        return len({key[1] for key in versions}) == len(watched) and await _drained(runtime)

    await eventually(scored, timeout=60, what="the new team and its units scored")
    history, versions = await _versions(runtime, watched)
    async with runtime.unit_of_work() as uow:
        result = await use_cases.recompute(uow.session)
        await uow.commit()
    assert result.dirty >= len(versions)  # every subject-period re-scored
    await eventually(lambda: _drained(runtime), timeout=60, what="re-scoring drained")
    assert await _versions(runtime, watched) == (history, versions)
