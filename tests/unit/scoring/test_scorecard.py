"""`scorecard.score_all` computes exactly what `domain.score` computes, for any input."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring import domain
from scoring.domain import CriteriaSet, Criterion
from scoring.scorecard import ScoreRequest, round_half_even, score_all, score_pass
from scoring.use_cases import components_json

_INDICATORS = sorted(
    {n for c in domain.DEFAULT_CRITERIA_SET.criteria for n in (*c.numerator, *c.denominator)}
    | {"teams", "members", "trained_members", "activities_skill_cyber_safety"}
    | {f"activities_skill_{skill}" for skill in ("public_services", "online_payment")}
)
_NUMBERS = st.one_of(
    st.integers(0, 10**7).map(float),  # counts: whole floats
    st.floats(0, 1e7, allow_nan=False, allow_infinity=False),
    st.integers(0, 10**7).map(lambda n: n / 1000),  # halves and near-halves once scaled
    st.integers(0, 10**7),  # an int from a caller, not a float
)
_PERIODS = st.sampled_from(["2026-10", "2026-Q4", "2026", "campaign:c1"])
_MIXED = CriteriaSet(
    version="mixed@1",
    criteria=(
        Criterion("reach", "g", 7, ("citizens_reached", "households_visited"), 3.5),
        Criterion("share", "g", 12.5, ("active_members",), 0.7, ("members", "teams")),
        Criterion("skills", "g", 20, ("skills_taught",), 5, basis="per_team_month"),
        Criterion("weeks", "g", 3, ("active_weeks",), 2, basis="per_month"),
        Criterion("zero", "g", 1, ("app_installs",), 0),
    ),
)


@st.composite
def requests(draw: st.DrawFn, criteria: CriteriaSet) -> ScoreRequest:
    names = [c.id for c in criteria.criteria] + [c.numerator[0] for c in criteria.criteria]
    return ScoreRequest(
        indicators=draw(st.dictionaries(st.sampled_from(_INDICATORS), _NUMBERS)),
        period=draw(_PERIODS),
        targets=draw(
            st.dictionaries(
                st.sampled_from(names),
                st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
                max_size=3,
            )
        ),
        campaign_days=draw(st.none() | st.integers(1, 400)),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data(), criteria=st.sampled_from([domain.DEFAULT_CRITERIA_SET, _MIXED]))
def test_score_all_equals_score_of_each(data: st.DataObject, criteria: CriteriaSet) -> None:
    batch = data.draw(st.lists(requests(criteria), min_size=1, max_size=20))
    expected = [
        domain.score(
            criteria,
            r.indicators,
            period=r.period,
            targets=r.targets,
            campaign_days=r.campaign_days,
        )
        for r in batch
    ]
    assert score_all(criteria, batch) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.data(), criteria=st.sampled_from([domain.DEFAULT_CRITERIA_SET, _MIXED]))
def test_a_pass_scores_and_spells_components_as_the_results_do(
    data: st.DataObject, criteria: CriteriaSet
) -> None:
    batch = data.draw(st.lists(requests(criteria), min_size=1, max_size=20))
    results = score_all(criteria, batch)
    scored = score_pass(criteria, batch)
    assert scored.scores == [r.score for r in results]
    assert scored.max_score == criteria.max_score
    for text, result in zip(scored.components, results, strict=True):
        assert orjson.loads(text) == orjson.loads(orjson.dumps(components_json(result)))


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_number_json_cannot_spell_is_written_as_null_as_before() -> None:
    huge = ScoreRequest(
        indicators={"citizens_reached": 1e308, "households_visited": 1e308},
        period="2026-10",
        targets={},
    )
    [result] = score_all(_MIXED, [huge])
    [text] = score_pass(_MIXED, [huge]).components
    assert orjson.loads(text) == orjson.loads(orjson.dumps(components_json(result)))
    assert orjson.loads(text)[0]["value"] is None


def test_score_all_of_nothing_is_nothing() -> None:
    assert score_all(domain.DEFAULT_CRITERIA_SET, []) == []


@settings(max_examples=500, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=True)
        | st.integers(-(10**9), 10**9).map(lambda n: n / 10**5),
        min_size=1,
        max_size=30,
    ),
    digits=st.sampled_from([2, 4, 6]),
)
def test_round_half_even_rounds_each_element_as_python_does(
    values: list[float], digits: int
) -> None:
    got = round_half_even(np.array(values, dtype=np.float64), digits).tolist()
    assert got == [round(v, digits) for v in values]
