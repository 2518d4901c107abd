"""Pure domain rules: periods, facts, ledger, distinct sets, roster, scores."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.teams import UnitPath
from scoring import domain
from scoring.domain import Deltas, IndicatorModel, Ledger
from scoring.handlers import fact_from_event
from tests.unit.scoring import factory


def test_periods_use_vietnam_time() -> None:
    # 17:00 UTC on 31 Dec is already New Year in Hồ Chí Minh City (UTC+7)
    assert domain.periods_of(datetime(2026, 12, 31, 17, 0, tzinfo=UTC), None) == (
        "2027-01",
        "2027-Q1",
        "2027",
    )
    assert domain.periods_of(datetime(2026, 12, 31, 16, 59, tzinfo=UTC), "bp") == (
        "2026-12",
        "2026-Q4",
        "2026",
        "campaign:bp",
    )
    assert domain.is_valid_period("2026-Q4") and domain.is_valid_period("campaign:bp-92")
    assert not domain.is_valid_period("2026-13") and not domain.is_valid_period("2026-Q5")


def test_fact_counts_skills_once_and_ignores_bad_names() -> None:
    event = factory.activity(
        team_id=uuid.uuid4(),
        unit_path=factory.path("82", "82-C"),
        skills=["online_payment", "online_payment"],
        citizens_reached=4,
        outcomes={"app_installs": 2, "Bad Name": 5, "ewallet_accounts": 0},
        audience=["elderly", "DROP TABLE"],
    )
    fact = fact_from_event(event)
    assert fact.counters == {
        "activities": 1,
        "activities_household_visit": 1,
        "citizens_reached": 4,
        "activities_skill_online_payment": 1,
        "citizens_reached_online_payment": 4,
        "activities_audience_elderly": 1,
        "app_installs": 2,
    }
    subjects = domain.subjects_of(fact.team_id, fact.path)
    assert subjects == [
        ("team", str(event.team_id)),
        ("commune", "82-C"),
        ("province", "82"),
        ("national", "VN"),
    ]


def test_ledger_void_before_record_and_redelivery() -> None:
    event = factory.activity(team_id=uuid.uuid4(), unit_path=factory.path("82"))
    fact = fact_from_event(event)
    state, sign = domain.on_voided(None)
    assert sign == 0 and state.voided and state.fact is None
    state, sign = domain.on_recorded(state, fact)
    assert sign == 0 and state.fact == fact
    fresh, sign = domain.on_recorded(None, fact)
    assert sign == 1
    assert domain.on_recorded(fresh, fact)[1] == 0
    voided, sign = domain.on_voided(fresh)
    assert sign == -1 and domain.on_voided(voided)[1] == 0


def test_distinct_household_leaves_only_with_its_last_activity() -> None:
    team, unit = uuid.uuid4(), factory.path("82")
    a = fact_from_event(factory.activity(team_id=team, unit_path=unit, household_hash="h"))
    b = fact_from_event(factory.activity(team_id=team, unit_path=unit, household_hash="h"))
    model = IndicatorModel()
    for fact, sign, expected in [(a, 1, 1), (b, 1, 1), (a, -1, 1), (b, -1, None)]:
        deltas = Deltas()
        deltas.add_fact(fact, sign)
        model.apply(deltas)
        assert model.counters.get(("province", "82", "2026-11", "households_visited")) == expected


def test_roster_moves_counts_with_team_and_member_changes() -> None:
    roster = domain.Roster()
    team_id, member_id = uuid.uuid4(), uuid.uuid4()
    deltas = Deltas()
    roster.apply_member(
        domain.MemberState(member_id, team_id, counted=True, trained=True, version=1), deltas
    )
    assert deltas.state == {
        ("team", str(team_id), "members"): 1,
        ("team", str(team_id), "trained_members"): 1,
    }
    path = domain.UnitPathCodes(province="82", commune="82-C")
    roster.apply_team(domain.TeamState(team_id, path, active=True, version=1), deltas)
    assert deltas.state[("commune", "82-C", "members")] == 1
    assert deltas.state[("province", "82", "teams")] == 1
    moved = domain.UnitPathCodes(province="82", commune="82-D")
    roster.apply_team(domain.TeamState(team_id, moved, active=True, version=2), deltas)
    roster.apply_team(domain.TeamState(team_id, path, active=True, version=1), deltas)  # stale
    assert deltas.state[("commune", "82-C", "members")] == 0
    assert deltas.state[("commune", "82-D", "trained_members")] == 1
    assert deltas.state[("province", "82", "teams")] == 1


def test_score_caps_each_criterion_and_uses_targets() -> None:
    criteria = domain.DEFAULT_CRITERIA_SET
    assert criteria.max_score == 100
    indicators = {"app_installs": 1333.0, "teams": 10.0, "members": 10.0, "trained_members": 5.0}
    result = domain.score(criteria, indicators, period="2026", targets={"app_installs": 1333})
    parts = {c.criterion: c for c in result.components}
    assert parts["app_installs"].points == parts["app_installs"].max_points
    assert parts["trained_member_share"].points == 5.0  # half trained of a 100% target
    # default target per team per month: 5 × 10 teams × 12 months
    default = domain.score(criteria, indicators, period="2026", targets={})
    assert {c.criterion: c for c in default.components}["app_installs"].target == 600
    assert result.score == round(sum(c.points for c in result.components), 2)
    assert domain.rank_of({"a": 5, "b": 9, "c": 5}, "c") == (2, 3)


def test_next_version() -> None:
    assert domain.next_version("default", ["default@1", "default@2", "x@7"]) == "default@3"
    assert domain.next_version("new", []) == "new@1"
    assert domain.campaign_days(date(2022, 6, 1), date(2022, 8, 31)) == 92


def incremental(stream: factory.Stream, rng: random.Random) -> IndicatorModel:
    ledger, model, seen = Ledger(), IndicatorModel(), set()
    for batch in factory.batches(rng, stream.deliveries):
        deltas = Deltas()
        for event in factory.dedupe_like_runner(batch, seen):
            if event.type == ActivityRecorded.CE_TYPE:
                ledger.record(fact_from_event(event.parse(ActivityRecorded)), deltas)
            else:
                ledger.void(event.parse(ActivityVoided).id, deltas)
        model.apply(deltas)
    return model


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_incremental_equals_recompute_for_any_stream(rng: random.Random) -> None:
    stream = factory.random_stream(rng, province="82")
    got = incremental(stream, rng)
    oracle = domain.recompute_from_facts(fact_from_event(a) for a in stream.live)
    assert got.counters == oracle.counters
    assert got.distinct == oracle.distinct


def _one_by_one(facts: list[domain.ActivityFact], sign: int, deltas: Deltas) -> None:
    """The rule as stated, fact by fact: every period, every subject of the team's chain;
    households at the team and at the lowest unit, teams and members at the team."""
    for fact in facts:
        chain = domain.subjects_of(fact.team_id, fact.path)
        for period in fact.periods:
            change = {name: sign * value for name, value in fact.counters.items()}
            if "week" in fact.distinct:
                change[domain.WEEK_PREFIX + fact.distinct["week"]] = sign
            for stype, sid in chain:
                bucket = deltas.sets.setdefault((stype, sid, period), Counter())
                bucket.update(change)
                deltas.touch((stype, sid, period), fact.occurred_at)
            for dim, value in fact.distinct.items():
                anchors = []
                if dim == "household":
                    anchors.append((chain[0], (chain[0],)))
                    if len(chain) > 2:
                        anchors.append((chain[1], tuple(chain[1:])))
                elif dim in domain.DISTINCT_INDICATORS:
                    anchors.append((chain[0], tuple(chain)))
                for (atype, aid), reach in anchors:
                    deltas.distinct[(atype, aid, period, dim, value)] += sign
                    deltas.reach[(atype, aid, dim)] = reach


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_batched_expansion_equals_the_rule_applied_fact_by_fact(rng: random.Random) -> None:
    # A few teams and units, some reached through two paths (a village under two communes, a
    # team placed at a commune or under a district), facts added in several signed calls.
    paths = [
        factory.path("82", "82-C1", "82-C1-V1"),
        factory.path("82", "82-C2", "82-C1-V1"),
        factory.path("82", "82-C2"),
        factory.path("83"),
        UnitPath(province="82", district="82-D1", commune="82-C1", village="82-C1-V2"),
    ]
    teams = [uuid.uuid4() for _ in range(4)]
    calls = []
    for _ in range(rng.randint(1, 4)):
        facts = [
            fact_from_event(
                factory.activity(
                    team_id=rng.choice(teams),
                    unit_path=rng.choice(paths),
                    member_id=rng.choice([None, *teams[:2]]),
                    household_hash=rng.choice([None, "h1", "h2", "h3"]),
                    occurred_at=datetime(2026, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC),
                    campaign_id=rng.choice([None, "bp-92"]),
                    outcomes={"app_installs": rng.randint(0, 3)},
                )
            )
            for _ in range(rng.randint(0, 12))
        ]
        calls.append((facts, rng.choice([1, -1])))
    batched, expected = Deltas(), Deltas()
    for facts, sign in calls:
        batched.add_facts(facts, sign)
        _one_by_one(facts, sign, expected)
    assert batched.nonzero_sets() == expected.nonzero_sets()
    assert batched.nonzero_distinct() == expected.nonzero_distinct()
    assert batched.touched == expected.touched
    assert batched.reach == expected.reach


def _rounded_as_round_does(
    criteria: domain.CriteriaSet, indicators: dict[str, float], targets: dict[str, float]
) -> list[tuple[float, float, float]]:
    """Each component's points, value and target with plain `round`, as `score` defines them."""
    values = {**indicators, **domain.derived_indicators(indicators)}
    scales = domain.target_scales(
        period="2026-10", teams=values.get("teams", 0.0), campaign_days=None
    )
    out = []
    for criterion in criteria.criteria:
        target = targets.get(criterion.id)
        if target is None and len(criterion.numerator) == 1 and not criterion.denominator:
            target = targets.get(criterion.numerator[0])
        if target is None:
            target = criterion.target * scales[criterion.basis]
        value = domain.achieved(criterion, values)
        ratio = min(value / target, 1.0) if target > 0 else 1.0
        out.append((round(ratio * criterion.max_points, 4), round(value, 6), round(target, 6)))
    return out


_NUMBERS = st.one_of(
    st.integers(0, 10**7).map(float),  # counts: whole floats
    st.floats(0, 1e7, allow_nan=False, allow_infinity=False),
    st.integers(0, 10**7),  # an int from a caller, not a float
)


@settings(max_examples=300, deadline=None)
@given(
    indicators=st.dictionaries(
        st.sampled_from(
            sorted(
                {n for c in domain.DEFAULT_CRITERIA_SET.criteria for n in c.numerator}
                | {"teams", "members", "trained_members"}
            )
        ),
        _NUMBERS,
    ),
    targets=st.dictionaries(
        st.sampled_from([c.id for c in domain.DEFAULT_CRITERIA_SET.criteria]), _NUMBERS
    ),
)
def test_score_rounds_exactly_as_round_does(
    indicators: dict[str, float], targets: dict[str, float]
) -> None:
    result = domain.score(
        domain.DEFAULT_CRITERIA_SET, indicators, period="2026-10", targets=targets
    )
    got = [(c.points, c.value, c.target) for c in result.components]
    assert got == _rounded_as_round_does(domain.DEFAULT_CRITERIA_SET, indicators, targets)
