"""The msgspec structs of `common.contracts.wire` read what the pydantic contracts read."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import orjson
import pytest

from common.contracts.activities import SKILLS, ActivityRecorded, ActivityVoided
from common.contracts.scoring import ScoreComponent, ScoreUpdated
from common.contracts.teams import MemberChanged, TeamChanged, UnitPath
from common.contracts.wire import (
    ActivityRecordedWire,
    ActivityVoidedWire,
    MemberChangedWire,
    ScoreUpdatedWire,
    TeamChangedWire,
    parse_wire,
)
from common.envelope import PoisonRecordError
from tests.unit.scoring import factory


def _same_fields(model: Any, struct: Any) -> None:
    for name in type(struct).__struct_fields__:
        got, expected = getattr(struct, name), getattr(model, name)
        if name == "unit_path":
            expected = expected.model_dump()
            got = {field: getattr(got, field) for field in expected}
        assert got == expected, name


def test_activity_payloads_decode_to_the_contracts_values() -> None:
    rng = random.Random(3)
    for _ in range(200):
        recorded = factory.activity(
            team_id=uuid.uuid4(),
            unit_path=factory.path("82", rng.choice([None, "C1"]), rng.choice([None, "V1"])),
            member_id=rng.choice([None, uuid.uuid4()]),
            kind=rng.choice(["household_visit", "group_session", "support_desk"]),
            skills=rng.sample(list(SKILLS), rng.randint(0, 3)),
            citizens_reached=rng.randint(0, 40),
            household_hash=rng.choice([None, "h" * 64]),
            campaign_id=rng.choice([None, "tet-2026"]),
            outcomes=rng.choice([{}, {"app_installs": 2, "vneid_activations": 1}]),
            audience=rng.choice([[], ["elderly", "farmers"]]),
        )
        event = factory.inbound(recorded)
        _same_fields(event.parse(ActivityRecorded), parse_wire(event, ActivityRecordedWire))
        voided = factory.inbound(factory.void(recorded))
        _same_fields(voided.parse(ActivityVoided), parse_wire(voided, ActivityVoidedWire))


def _broken(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in data.items() if k != "team_id"},
        {**data, "id": "not-a-uuid"},
        {**data, "kind": "karaoke"},
        {**data, "skills": ["juggling"]},
        {**data, "occurred_at": "yesterday"},
        {**data, "unit_path": {"district": "D1"}},
        {**data, "outcomes": {"app_installs": "many"}},
    ]


@pytest.mark.parametrize("case", range(7))
def test_invalid_activity_payloads_are_poison_for_both(case: int) -> None:
    recorded = factory.activity(team_id=uuid.uuid4(), unit_path=factory.path("82"))
    event = factory.inbound(recorded)
    broken = replace(event, value=orjson.dumps(_broken(event.data)[case]))
    with pytest.raises(PoisonRecordError):
        broken.parse(ActivityRecorded)
    with pytest.raises(PoisonRecordError):
        parse_wire(broken, ActivityRecordedWire)


def test_a_void_without_its_reason_is_poison_for_both() -> None:
    recorded = factory.activity(team_id=uuid.uuid4(), unit_path=factory.path("82"))
    whole = factory.inbound(factory.void(recorded))
    voided = replace(
        whole, value=orjson.dumps({k: v for k, v in whole.data.items() if k != "reason"})
    )
    with pytest.raises(PoisonRecordError):
        voided.parse(ActivityVoided)
    with pytest.raises(PoisonRecordError):
        parse_wire(voided, ActivityVoidedWire)


def _score(rng: random.Random) -> ScoreUpdated:
    return ScoreUpdated(
        subject_type=rng.choice(["team", "village", "commune", "province", "national"]),
        subject_id=str(uuid.uuid4()),
        period=rng.choice(["2026-12", "2026-Q4", "2026", "campaign:tet"]),
        criteria_set="default@1",
        score=rng.random() * 100,
        rank=rng.choice([None, 3]),
        rank_of=rng.choice([None, 9]),
        components=[
            ScoreComponent(
                criterion=f"c{i}",
                group=rng.choice([None, "reach"]),
                points=rng.randint(0, 10),  # a whole number as JSON writes it
                max_points=10,
                value=rng.random() * 40,
                target=20,
            )
            for i in range(rng.randint(0, 13))
        ],
        indicators={"activities": float(rng.randint(0, 90)), "members": 5},
        version=rng.randint(1, 10**6),
        as_of_event_time=rng.choice([None, datetime(2026, 12, 1, tzinfo=UTC)]),
        computed_at=datetime(2026, 12, 4, 8, 30, tzinfo=UTC),
    )


def test_score_payloads_decode_to_the_contracts_values() -> None:
    rng = random.Random(5)
    for _ in range(200):
        event = factory.inbound(_score(rng))
        model, struct = event.parse(ScoreUpdated), parse_wire(event, ScoreUpdatedWire)
        assert msgspec.to_builtins(struct) == model.model_dump(mode="json")


@pytest.mark.parametrize(
    "broken",
    [
        {"subject_type": "planet"},
        {"version": "latest"},
        {"score": "high"},
        {"computed_at": "now"},
        {"components": [{"criterion": "c"}]},
        {"indicators": {"activities": "many"}},
    ],
)
def test_invalid_score_payloads_are_poison_for_both(broken: dict[str, Any]) -> None:
    whole = factory.inbound(_score(random.Random(1)))
    event = replace(whole, value=orjson.dumps({**whole.data, **broken}))
    with pytest.raises(PoisonRecordError):
        event.parse(ScoreUpdated)
    with pytest.raises(PoisonRecordError):
        parse_wire(event, ScoreUpdatedWire)


def _team(rng: random.Random) -> TeamChanged:
    return TeamChanged(
        id=uuid.uuid4(),
        code=f"DT-{rng.randrange(10_000):04d}",
        name="Tổ CNSCĐ ấp 1",
        unit_code="82-28000-V01",
        unit_path=rng.choice([None, UnitPath(province="82", commune="82-28000")]),
        status=rng.choice(["active", "dissolved"]),
        established_on=rng.choice([None, date(2022, 4, 1)]),
        dissolved_on=rng.choice([None, date(2025, 1, 2)]),
        decision_no=rng.choice([None, "12/QĐ-UBND"]),
        version=rng.randint(1, 50),
        changed_at=datetime(2026, 12, 4, 8, 30, tzinfo=UTC),
    )


def _member(rng: random.Random) -> MemberChanged:
    return MemberChanged(
        id=uuid.uuid4(),
        team_id=uuid.uuid4(),
        code=rng.choice([None, "LTM0000001"]),
        role=rng.choice(["leader", "deputy", "member"]),
        affiliation="resident",
        joined_on=date(2022, 4, 1),
        left_on=rng.choice([None, date(2024, 1, 1)]),
        trained=rng.choice([False, True]),
        removed=rng.choice([False, True]),
        version=rng.randint(1, 50),
        changed_at=datetime(2026, 12, 4, 8, 30, tzinfo=UTC),
    )


def test_roster_payloads_decode_to_the_contracts_values() -> None:
    rng = random.Random(8)
    for _ in range(200):
        team = factory.inbound(_team(rng))
        model, struct = team.parse(TeamChanged), parse_wire(team, TeamChangedWire)
        assert msgspec.to_builtins(struct) == model.model_dump(mode="json")
        member = factory.inbound(_member(rng))
        assert msgspec.to_builtins(parse_wire(member, MemberChangedWire)) == member.parse(
            MemberChanged
        ).model_dump(mode="json")


@pytest.mark.parametrize(
    ("make", "struct", "broken"),
    [
        (_team, TeamChangedWire, {"status": "sleeping"}),
        (_team, TeamChangedWire, {"id": "not-a-uuid"}),
        (_team, TeamChangedWire, {"version": "latest"}),
        (_team, TeamChangedWire, {"unit_path": {"commune": "C1"}}),
        (_team, TeamChangedWire, {"established_on": "spring"}),
        (_member, MemberChangedWire, {"role": "boss"}),
        (_member, MemberChangedWire, {"team_id": None}),
        (_member, MemberChangedWire, {"joined_on": None}),
        (_member, MemberChangedWire, {"trained": "maybe"}),
    ],
)
def test_invalid_roster_payloads_are_poison_for_both(
    make: Any, struct: Any, broken: dict[str, Any]
) -> None:
    whole = factory.inbound(make(random.Random(2)))
    event = replace(whole, value=orjson.dumps({**whole.data, **broken}))
    contract = TeamChanged if struct is TeamChangedWire else MemberChanged
    with pytest.raises(PoisonRecordError):
        event.parse(contract)
    with pytest.raises(PoisonRecordError):
        parse_wire(event, struct)
