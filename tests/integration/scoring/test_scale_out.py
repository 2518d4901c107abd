"""Scale-out on Kafka: two scoring workers in the group count exactly what one fold counts."""

from __future__ import annotations

import random
import uuid

from sqlalchemy import select, tuple_

from common.contracts.teams import TeamChanged
from common.topics import ACTIVITY_RECORDED
from scoring import adapters, domain
from scoring import bootstrap as scoring_bootstrap
from scoring.domain import UnitPathCodes
from scoring.handlers import fact_from_event, path_codes
from scoring.settings import ScoringSettings
from tests.helpers import eventually
from tests.integration.scoring.conftest import send, wait_processed
from tests.integration.scoring.test_recompute import _as_outbound
from tests.unit.scoring import factory


async def test_two_workers_count_exactly_what_one_fold_of_the_live_activities_counts(
    scoring, producer
) -> None:
    """Random streams (duplicates, voids before and after their activity, teams moving) on
    every partition, consumed by two workers of the group that split the partitions: every
    team's and unit's indicators equal the single-threaded fold of the live activities."""
    _, runtime = scoring
    second = scoring_bootstrap.build_runtime(ScoringSettings())
    await second.start(workers=True)
    try:

        def held(worker: object) -> set[int]:
            return {
                tp.partition
                for consumer in worker.consumers  # type: ignore[attr-defined]
                for tp in consumer.assignment()
                if tp.topic == ACTIVITY_RECORDED.name
            }

        async def split() -> bool:
            mine, theirs = held(runtime), held(second)
            return bool(mine and theirs and not mine & theirs)

        await eventually(split, timeout=60, interval=0.5, what="two workers sharing partitions")
        provinces = [f"S{uuid.uuid4().hex[:6]}" for _ in range(4)]
        streams = {
            province: factory.random_stream(
                random.Random(300 + index), province=province, size=30, moves=True
            )
            for index, province in enumerate(provinces)
        }
        events = [_as_outbound(e) for s in streams.values() for e in s.deliveries]
        await send(producer, events)
        await wait_processed(runtime, events, timeout=90)

        for province, stream in streams.items():
            # a team's activities count where its newest TeamChanged places it
            oracle = domain.recompute_from_facts(
                fact_from_event(a, place=final_places(stream).get(a.team_id)) for a in stream.live
            )
            subjects = sorted({k[:2] for k in oracle.counters})
            assert ("province", province) in subjects
            table = adapters.indicator_sets
            async with runtime.sessions() as session:
                rows = await session.execute(
                    select(table).where(
                        tuple_(table.c.subject_type, table.c.subject_id).in_(subjects)
                    )
                )
                stored = {
                    (r[0], r[1], r[2], name): value for r in rows for name, value in r[3].items()
                }
            nation = ("national", domain.NATIONAL_ID)  # shared with the other tests' data
            expected = {k: v for k, v in oracle.counters.items() if k[:2] != nation}
            stored = {k: v for k, v in stored.items() if k[:2] != nation}
            assert stored == expected, province
    finally:
        await second.stop()


def final_places(stream: factory.Stream) -> dict[uuid.UUID, UnitPathCodes]:
    """Each moved team's place by its newest TeamChanged (the others keep one place)."""
    newest: dict[uuid.UUID, TeamChanged] = {}
    for event in stream.deliveries:
        if event.type == TeamChanged.CE_TYPE:
            team = event.parse(TeamChanged)
            if team.id not in newest or team.version > newest[team.id].version:
                newest[team.id] = team
    return {
        team_id: path_codes(team.unit_path)
        for team_id, team in newest.items()
        if team.unit_path is not None
    }
