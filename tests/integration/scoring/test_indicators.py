"""Slices 1-2: facts and indicators per subject and period, through real Kafka and Postgres."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text

from scoring import adapters, domain
from tests.integration.scoring.conftest import indicators, produce, send, wait_processed
from tests.unit.scoring import factory


def unique_path() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"P{tag}", f"P{tag}-C1", f"P{tag}-C1-V1"


async def test_activity_updates_team_and_every_ancestor_for_every_period(scoring, producer) -> None:
    _, runtime = scoring
    province, commune, village = unique_path()
    team_id, member_id = uuid.uuid4(), uuid.uuid4()
    unit = factory.path(province, commune, village)
    # 2026-10-31 18:30 UTC is already 1 November in Vietnam: the month is 2026-11, quarter Q4.
    late_evening = datetime(2026, 10, 31, 18, 30, tzinfo=UTC)
    first = factory.activity(
        team_id=team_id,
        unit_path=unit,
        member_id=member_id,
        occurred_at=late_evening,
        skills=["public_services", "online_payment"],
        citizens_reached=3,
        household_hash="h-1",
        campaign_id="binh-phuoc-92",
        outcomes={"app_installs": 2, "ewallet_accounts": 1, "online_applications": 0},
        audience=["elderly"],
    )
    second = factory.activity(
        team_id=team_id,
        unit_path=unit,
        member_id=member_id,
        occurred_at=late_evening,
        kind="group_session",
        skills=["online_payment"],
        citizens_reached=10,
        household_hash="h-1",  # same household: still one household visited
    )
    events = await produce(producer, first, second)
    await wait_processed(runtime, events)

    expected = {
        "activities": 2,
        "activities_household_visit": 1,
        "activities_group_session": 1,
        "activities_skill_public_services": 1,
        "activities_skill_online_payment": 2,
        "activities_audience_elderly": 1,
        "citizens_reached": 13,
        "citizens_reached_public_services": 3,
        "citizens_reached_online_payment": 13,
        "app_installs": 2,
        "ewallet_accounts": 1,
        "households_visited": 1,
        "active_members": 1,
        "active_teams": 1,
        "active_weeks": 1,
    }
    for subject in [("team", str(team_id)), ("village", village), ("commune", commune)]:
        for period in ["2026-11", "2026-Q4", "2026"]:
            assert await indicators(runtime, *subject, period) == expected, (subject, period)
    assert await indicators(runtime, "province", province, "2026-10") == {}
    campaign = await indicators(runtime, "province", province, "campaign:binh-phuoc-92")
    assert campaign["activities"] == 1 and campaign["app_installs"] == 2


async def test_void_subtracts_exactly_and_redelivery_adds_nothing(scoring, producer) -> None:
    _, runtime = scoring
    province, commune, village = unique_path()
    team_id = uuid.uuid4()
    unit = factory.path(province, commune, village)
    kept = factory.activity(
        team_id=team_id, unit_path=unit, household_hash="h-a", outcomes={"app_installs": 5}
    )
    voided = factory.activity(
        team_id=team_id,
        unit_path=unit,
        household_hash="h-a",
        citizens_reached=7,
        outcomes={"app_installs": 3},
    )
    other_house = factory.activity(team_id=team_id, unit_path=unit, household_hash="h-b")
    # a void arriving before its activity: recorded first, the activity then adds nothing
    early_void_target = factory.activity(
        team_id=team_id, unit_path=unit, household_hash="h-c", outcomes={"app_installs": 100}
    )
    sent = await produce(
        producer, factory.void(early_void_target), kept, voided, other_house, factory.void(voided)
    )
    late = await produce(producer, early_void_target)
    # the same activity re-sent under a new event id, and a Kafka-level redelivery of one event
    resent = await produce(producer, kept)
    await send(producer, [sent[1]])
    await wait_processed(runtime, [*sent, *late, *resent])

    values = await indicators(runtime, "commune", commune, "2026-11")
    assert values["activities"] == 2
    assert values["app_installs"] == 5
    assert values["citizens_reached"] == 2
    assert values["households_visited"] == 2  # h-a still visited by `kept`; h-c never counted

    # voiding the last activity of a household removes the household
    last = await produce(producer, factory.void(other_house))
    await wait_processed(runtime, last)
    values = await indicators(runtime, "commune", commune, "2026-11")
    assert values["households_visited"] == 1
    assert values["activities"] == 1


async def test_roster_drives_member_and_team_counts(scoring, producer) -> None:
    _, runtime = scoring
    province, commune, village = unique_path()
    team_a, team_b = uuid.uuid4(), uuid.uuid4()
    members = [uuid.uuid4() for _ in range(4)]
    # a member can arrive before its team (different topics, no cross-topic order)
    events = await produce(
        producer,
        factory.member(member_id=members[0], team_id=team_a, trained=True),
        factory.team(team_id=team_a, unit_path=factory.path(province, commune, village)),
        factory.team(team_id=team_b, unit_path=factory.path(province, commune)),
        factory.member(member_id=members[1], team_id=team_a),
        factory.member(member_id=members[2], team_id=team_b, trained=True),
        factory.member(member_id=members[3], team_id=team_b),
    )
    await wait_processed(runtime, events)
    period = domain.calendar_periods(datetime.now(UTC))[0]
    values = await indicators(runtime, "commune", commune, period)
    assert (values["teams"], values["members"], values["trained_members"]) == (2, 4, 2)
    assert (await indicators(runtime, "team", str(team_a), period))["members"] == 2

    # member removed, one trained later, a stale (older) version ignored, team B dissolved
    updates = await produce(
        producer,
        factory.member(member_id=members[1], team_id=team_a, version=2, removed=True),
        factory.member(member_id=members[0], team_id=team_a, version=1, trained=False),
        factory.member(member_id=members[3], team_id=team_b, version=2, trained=True),
        factory.team(
            team_id=team_b, unit_path=factory.path(province, commune), version=2, status="dissolved"
        ),
    )
    await wait_processed(runtime, updates)
    values = await indicators(runtime, "commune", commune, period)
    assert (values["teams"], values["members"], values["trained_members"]) == (1, 1, 1)
    assert (await indicators(runtime, "province", province, period))["members"] == 1


async def test_values_with_quotes_backslashes_and_accents_count_exactly(scoring, producer) -> None:
    # Batched rows travel to PostgreSQL as one JSON document (`common.db.json_rows`): values
    # that JSON must escape come back as they were, so the same household still counts once.
    _, runtime = scoring
    province, commune, village = unique_path()
    team_id = uuid.uuid4()
    unit = factory.path(province, commune, village)
    odd = 'hộ "Nguyễn" \\ số 7\t{a,b}'
    visits = [
        factory.activity(team_id=team_id, unit_path=unit, household_hash=hash_)
        for hash_ in (odd, odd, odd + " ")
    ]
    events = await produce(producer, *visits)
    await wait_processed(runtime, events)

    values = await indicators(runtime, "commune", commune, "2026-11")
    assert values["households_visited"] == 2  # `odd` twice, then a different household
    assert values["activities"] == 3
    async with runtime.sessions() as session:
        stored = set(
            await session.scalars(
                select(adapters.distinct_values.c.value).where(
                    adapters.distinct_values.c.subject_type == "team",
                    adapters.distinct_values.c.subject_id == str(team_id),
                    adapters.distinct_values.c.dim == "household",
                )
            )
        )
    assert stored == {odd, odd + " "}


async def test_stored_counters_merge_with_a_delta_by_key_and_drop_zeros(scoring) -> None:
    """`scoring.jsonb_add`, which every indicator upsert merges with: sums by key, keys only
    in one side kept, a sum of zero removed, an empty delta a no-op."""
    _, runtime = scoring
    cases = [
        ({"a": 1, "b": 2}, {"a": 3, "c": 4}, {"a": 4, "b": 2, "c": 4}),
        ({"a": 1, "b": 2}, {"a": -1}, {"b": 2}),
        ({"a": 1}, {"a": -1}, {}),
        ({"a": 5}, {}, {"a": 5}),
        ({}, {"w:2026-W49": 1}, {"w:2026-W49": 1}),
        ({"a": 2**40}, {"a": 2**40, "b": -3}, {"a": 2**41, "b": -3}),
    ]
    async with runtime.sessions() as session:
        for stored, delta, merged in cases:
            result = await session.scalar(
                text("SELECT scoring.jsonb_add(CAST(:a AS jsonb), CAST(:b AS jsonb))"),
                {"a": json.dumps(stored), "b": json.dumps(delta)},
            )
            assert result == merged, (stored, delta)
