"""The pure alert rule evaluation: what an incoming score raises and resolves, given the rules,
the state judged so far and the alerts still unresolved (no database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from common.contracts.scoring import ScoreComponent, ScoreUpdated
from common.i18n import Language
from notifications.domain import (
    ALERT_TYPES,
    AlertCandidate,
    AlertChanges,
    OpenAlert,
    ReviewRound,
    RuleOverride,
    ScoreEvaluation,
    ScoreState,
    TeamActivity,
    comparison_period,
    evaluate_overdue_rounds,
    evaluate_score,
    evaluate_team_inactivity,
    inactive_team_key,
    next_score_state,
    resolve_rule,
    round_overdue_key,
    score_alert_keys,
    score_conditions,
)

PROVINCE = "82"
PATH = (PROVINCE, "8201")


class Rules:
    """The rules in force: defaults, then overrides, as the handlers resolve them."""

    def __init__(self, *overrides: RuleOverride) -> None:
        self._overrides = list(overrides)

    def params(self, alert_type: str, province: str | None) -> Any | None:
        rule = resolve_rule(alert_type, scope=province or "national", overrides=self._overrides)
        return rule.params if rule.enabled else None


def rule(alert_type: str, enabled: bool | None = None, **params: Any) -> RuleOverride:
    return RuleOverride(PROVINCE, alert_type, enabled, params)


def only(*alert_types: str, **params: Mapping[str, Any]) -> Rules:
    """Every rule off but `alert_types`, each with the given params."""
    return Rules(*(rule(t, enabled=t in alert_types, **params.get(t, {})) for t in ALERT_TYPES))


def score(
    version: int,
    value: float,
    *,
    period: str = "2026-11",
    components: Sequence[ScoreComponent] = (),
    indicators: Mapping[str, float] | None = None,
    computed_at: datetime = datetime(2026, 11, 20, tzinfo=UTC),
) -> ScoreUpdated:
    return ScoreUpdated(
        subject_type="province",
        subject_id=PROVINCE,
        period=period,
        criteria_set="cs-1",
        score=value,
        components=list(components),
        indicators=dict(indicators or {}),
        version=version,
        computed_at=computed_at,
    )


class Subject:
    """One (subject, period) fed scores in order, the way the handler stores the outcome:
    the new state kept, raised alerts open unless one of the key is, resolved ones closed."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.states: dict[str, ScoreState] = {}
        self.open: dict[str, OpenAlert] = {}
        self.raised: list[AlertCandidate] = []  # every alert actually created, in order
        self.resolved: list[str] = []  # dedupe keys of alerts resolved, in order

    def feed(self, incoming: ScoreUpdated) -> ScoreEvaluation:
        keys = score_alert_keys(incoming, rules=self.rules, unit_path=PATH)
        earlier = comparison_period(incoming, rules=self.rules, province=PROVINCE)
        evaluation = evaluate_score(
            incoming,
            rules=self.rules,
            unit_path=PATH,
            previous=self.states.get(incoming.period),
            previous_period_state=self.states.get(earlier) if earlier else None,
            open_alerts=[a for k, a in self.open.items() if k in keys],
        )
        if evaluation.state is None:
            return evaluation
        self.states[incoming.period] = evaluation.state
        for candidate in evaluation.raised:
            if candidate.dedupe_key not in self.open:
                self.open[candidate.dedupe_key] = OpenAlert(
                    uuid4(), candidate.dedupe_key, candidate.details
                )
                self.raised.append(candidate)
        by_id: dict[UUID, str] = {a.id: k for k, a in self.open.items()}
        for alert_id in evaluation.resolved:
            self.resolved.append(by_id[alert_id])
            del self.open[by_id[alert_id]]
        return evaluation


# --------------------------------------------------------------------------- state


def test_only_a_newer_version_is_judged() -> None:
    assert next_score_state(None, score(1, 80)) == ScoreState(1, 80)
    assert next_score_state(ScoreState(1, 80), score(2, 60)) == ScoreState(2, 60)
    assert next_score_state(ScoreState(2, 60), score(2, 60)) is None  # replay
    assert next_score_state(ScoreState(3, 50), score(2, 60)) is None  # out of order

    rules = only("score_drop")
    stale = evaluate_score(
        score(2, 10),
        rules=rules,
        unit_path=PATH,
        previous=ScoreState(3, 80),
        previous_period_state=None,
        open_alerts=[],
    )
    assert stale == ScoreEvaluation(state=None)  # nothing raised for an older version


def test_evaluation_is_pure_same_inputs_same_outputs() -> None:
    rules = only("score_drop")
    args: dict[str, Any] = {
        "rules": rules,
        "unit_path": PATH,
        "previous": ScoreState(1, 80),
        "previous_period_state": None,
        "open_alerts": [],
    }
    assert evaluate_score(score(2, 60), **args) == evaluate_score(score(2, 60), **args)


# --------------------------------------------------------------------------- score_drop


def test_score_drop_raises_once_while_below_then_resolves_on_recovery() -> None:
    subject = Subject(only("score_drop"))  # default: 10 points between versions
    subject.feed(score(1, 80))
    subject.feed(score(2, 75))  # -5: under the threshold
    assert subject.raised == []

    crossing = subject.feed(score(3, 60))  # -15 from 75
    [alert] = crossing.raised
    assert alert.dedupe_key == f"score_drop|province:{PROVINCE}|2026-11"
    assert alert.unit_path == PATH
    assert dict(alert.details) == {
        "baseline": 75,
        "score": 60,
        "points": 15,
        "compared_with": "previous_version",
        "version": 3,
        "criteria_set": "cs-1",
    }
    assert (
        alert.summary.render(Language.EN)
        == "The province score for 2026-11 fell by 15 points (75 → 60)."
    )

    assert subject.feed(score(3, 60)).state is None  # the same fact again
    still_below = subject.feed(score(4, 62))  # +2: no new drop, not recovered (75 - 62 >= 10)
    assert still_below.raised == () and still_below.resolved == ()
    assert len(subject.raised) == 1 and subject.resolved == []

    subject.feed(score(5, 70))  # back within 10 of the baseline 75
    assert subject.resolved == [alert.dedupe_key]
    assert len(subject.raised) == 1


def test_score_drop_threshold_and_disabled_rule() -> None:
    stricter = Subject(Rules(rule("score_drop", points=20)))
    stricter.feed(score(1, 80))
    stricter.feed(score(2, 65))  # -15 < 20
    assert stricter.raised == []
    stricter.feed(score(3, 45))  # -20
    assert [a.details["points"] for a in stricter.raised] == [20]

    disabled = Subject(Rules(rule("score_drop", enabled=False, points=1)))
    disabled.feed(score(1, 80))
    assert disabled.feed(score(2, 10)).raised == ()
    assert score_alert_keys(score(3, 10), rules=disabled.rules, unit_path=PATH) == []


def test_score_drop_between_periods_only_when_enabled() -> None:
    off = Subject(only("score_drop"))
    assert (
        comparison_period(score(1, 70, period="2026-Q4"), rules=off.rules, province=PROVINCE)
        is None
    )
    off.feed(score(1, 85, period="2026-Q3"))
    off.feed(score(1, 70, period="2026-Q4"))
    assert off.raised == []

    on = Subject(only("score_drop", score_drop={"between_periods": True}))
    assert (
        comparison_period(score(1, 70, period="2026-Q4"), rules=on.rules, province=PROVINCE)
        == "2026-Q3"
    )
    on.feed(score(1, 85, period="2026-Q3"))
    on.feed(score(1, 70, period="2026-Q4"))
    [alert] = on.raised
    assert alert.period == "2026-Q4"
    assert alert.details["compared_with"] == "previous_period"
    assert alert.details["baseline"] == 85


def test_a_drop_alert_of_another_key_is_left_alone() -> None:
    other = OpenAlert(uuid4(), f"score_drop|province:{PROVINCE}|2026-10", {"baseline": 85})
    evaluation = evaluate_score(
        score(2, 80),
        rules=only("score_drop"),
        unit_path=PATH,
        previous=ScoreState(1, 80),
        previous_period_state=None,
        open_alerts=[other],
    )
    assert evaluation.resolved == ()


# --------------------------------------------------------------------------- target_reached


def reach(value: float) -> ScoreComponent:
    return ScoreComponent(criterion="reach", points=10, max_points=25, value=value, target=1.0)


OTHER = ScoreComponent(criterion="skills", points=5, max_points=5, value=2, target=1)


def test_targets_raise_once_per_target_and_resolve_when_no_longer_reached() -> None:
    subject = Subject(
        only(
            "target_reached",
            target_reached={"criteria": ["reach"], "indicator_targets": {"app_installs": 1333}},
        )
    )
    subject.feed(score(1, 50, components=[reach(0.9), OTHER], indicators={"app_installs": 1000}))
    assert subject.raised == []  # `skills` is reached but not watched

    for version in (2, 3):  # reached, then seen again: one alert each
        subject.feed(
            score(version, 70, components=[reach(1.0), OTHER], indicators={"app_installs": 1333})
        )
    assert sorted(a.details["target"] for a in subject.raised) == [
        "criterion:reach",
        "indicator:app_installs",
    ]
    keys = {a.qualifier: a.dedupe_key for a in subject.raised}
    assert keys["criterion:reach"] == f"target_reached|province:{PROVINCE}#criterion:reach|2026-11"
    summary = {a.qualifier: a.summary.render(Language.EN) for a in subject.raised}[
        "indicator:app_installs"
    ]
    assert summary == "The province reached its app_installs target for 2026-11: 1333 of 1333."

    subject.feed(score(4, 60, components=[reach(0.5), OTHER], indicators={"app_installs": 1400}))
    assert subject.resolved == [keys["criterion:reach"]]  # the indicator is still reached
    assert len(subject.raised) == 2


# --------------------------------------------------------------------------- campaign_at_risk

GOAL = {
    "indicator": "citizens_reached",
    "target": 1000,
    "starts_on": "2026-06-01",
    "ends_on": "2026-08-31",
}
HALFWAY = datetime(2026, 7, 16, 12, tzinfo=UTC)


def campaign(
    version: int, reached: float, *, name: str = "slow", at: datetime = HALFWAY
) -> ScoreUpdated:
    return score(
        version,
        10,
        period=f"campaign:{name}",
        indicators={"citizens_reached": reached},
        computed_at=at,
    )


def test_campaign_at_risk_by_pace_raises_once_and_resolves() -> None:
    subject = Subject(only("campaign_at_risk", campaign_at_risk={"campaigns": {"slow": GOAL}}))
    subject.feed(campaign(1, 200))
    subject.feed(campaign(2, 210))  # still behind: the same alert
    [alert] = subject.raised
    assert alert.dedupe_key == f"campaign_at_risk|province:{PROVINCE}|campaign:slow"
    assert alert.details["projected"] < 1000 and alert.details["ends_on"] == "2026-08-31"

    subject.feed(campaign(3, 950))  # on pace now
    assert subject.resolved == [alert.dedupe_key]


def test_campaign_not_judged_too_early_unknown_or_at_another_level() -> None:
    rules = only("campaign_at_risk", campaign_at_risk={"campaigns": {"slow": GOAL}})
    early = campaign(1, 1, at=datetime(2026, 6, 2, tzinfo=UTC))
    unknown = campaign(1, 1, name="unknown")
    team_goal = only(
        "campaign_at_risk",
        campaign_at_risk={"campaigns": {"slow": {**GOAL, "subject_type": "team"}}},
    )
    for incoming, in_force in ((early, rules), (unknown, rules), (campaign(1, 1), team_goal)):
        open_alert = OpenAlert(
            uuid4(), f"campaign_at_risk|province:{PROVINCE}|{incoming.period}", {}
        )
        evaluation = evaluate_score(
            incoming,
            rules=in_force,
            unit_path=PATH,
            previous=None,
            previous_period_state=None,
            open_alerts=[open_alert],
        )
        assert evaluation.raised == () and evaluation.resolved == ()  # neither raised nor cleared


# --------------------------------------------------------------------------- together


def test_rules_are_judged_independently_on_one_score() -> None:
    rules = only(
        "score_drop",
        "target_reached",
        score_drop={"points": 5},
        target_reached={"criteria": ["reach"]},
    )
    evaluation = evaluate_score(
        score(2, 60, components=[reach(1.0)]),
        rules=rules,
        unit_path=PATH,
        previous=ScoreState(1, 70),
        previous_period_state=None,
        open_alerts=[],
    )
    assert [a.alert_type for a in evaluation.raised] == ["score_drop", "target_reached"]
    assert evaluation.state == ScoreState(2, 60)
    assert score_alert_keys(score(2, 60, components=[reach(1.0)]), rules=rules, unit_path=PATH) == [
        f"score_drop|province:{PROVINCE}|2026-11",
        f"target_reached|province:{PROVINCE}#criterion:reach|2026-11",
    ]


def test_no_unit_path_uses_the_national_rules() -> None:
    rules = Rules(RuleOverride("national", "score_drop", None, {"points": 30}))
    evaluation = evaluate_score(
        score(2, 55),
        rules=rules,
        unit_path=(),
        previous=ScoreState(1, 80),
        previous_period_state=None,
        open_alerts=[],
    )
    assert evaluation.raised == ()  # -25 < 30 nationally (the default would be 10)


# --------------------------------------------------------------------------- team_inactive

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def team(
    *,
    last_activity_days_ago: int | None,
    status: str = "active",
    province: str = PROVINCE,
    team_id: UUID | None = None,
) -> TeamActivity:
    return TeamActivity(
        id=team_id or uuid4(),
        code="T-1",
        status=status,
        unit_path=(province, f"{province}01"),
        last_activity_at=None
        if last_activity_days_ago is None
        else NOW - timedelta(days=last_activity_days_ago),
        established_on=None,
        first_seen_at=NOW - timedelta(days=100),
    )


def test_inactivity_raises_once_while_silent_and_resolves_when_active_again() -> None:
    rules = only("team_inactive", team_inactive={"days": 14})
    quiet = team(last_activity_days_ago=20)
    busy = team(last_activity_days_ago=3)
    first = evaluate_team_inactivity([quiet, busy], rules=rules, open_alerts=[], now=NOW)
    [alert] = first.raised
    assert alert.dedupe_key == inactive_team_key(quiet.id) == f"team_inactive|team:{quiet.id}|-"
    assert alert.unit_path == quiet.unit_path
    assert alert.details["days"] == 20 and alert.details["limit_days"] == 14
    assert (
        alert.summary.render(Language.EN)
        == "Team T-1 has recorded no activity for 20 days (limit 14)."
    )
    assert first.resolved == ()

    held = OpenAlert(uuid4(), alert.dedupe_key, alert.details)
    again = evaluate_team_inactivity([quiet, busy], rules=rules, open_alerts=[held], now=NOW)
    assert again == AlertChanges()  # still silent: the open alert stands, nothing new

    woke = replace(quiet, last_activity_at=NOW - timedelta(days=1))
    assert evaluate_team_inactivity(
        [woke], rules=rules, open_alerts=[held], now=NOW
    ) == AlertChanges(resolved=(held.id,))


def test_inactivity_threshold_status_and_disabled_rule() -> None:
    rules = only("team_inactive", team_inactive={"days": 14})
    at_limit = team(last_activity_days_ago=14)
    under = team(last_activity_days_ago=13)
    raised = evaluate_team_inactivity([at_limit, under], rules=rules, open_alerts=[], now=NOW)
    assert [a.subject_id for a in raised.raised] == [str(at_limit.id)]

    dissolved = team(last_activity_days_ago=30, status="dissolved")
    held = OpenAlert(uuid4(), inactive_team_key(dissolved.id), {})
    assert evaluate_team_inactivity(
        [dissolved], rules=rules, open_alerts=[held], now=NOW
    ) == AlertChanges(resolved=(held.id,))

    off = only()
    silent = team(last_activity_days_ago=300)
    assert evaluate_team_inactivity([silent], rules=off, open_alerts=[], now=NOW) == AlertChanges()


def test_inactivity_never_active_team_counts_from_first_seen() -> None:
    rules = only("team_inactive", team_inactive={"days": 14})
    never = team(last_activity_days_ago=None)  # first seen 100 days ago
    [alert] = evaluate_team_inactivity([never], rules=rules, open_alerts=[], now=NOW).raised
    assert alert.details["days"] == 100


def test_without_open_alerts_only_the_reached_targets_are_built_and_the_outcome_is_the_same() -> (
    None
):
    rules = only(
        "target_reached",
        target_reached={"indicator_targets": {"app_installs": 100, "households": 5}},
    )
    components = [
        ScoreComponent(criterion=f"c{i}", points=1, max_points=5, value=i / 4, target=1.0)
        for i in range(8)
    ]
    incoming = score(
        3, 70, components=components, indicators={"app_installs": 150, "households": 2}
    )
    everything = score_conditions(incoming, rules=rules, unit_path=PATH)
    reached = score_conditions(incoming, rules=rules, unit_path=PATH, with_open_alerts=False)
    assert len(everything) == 10
    assert [c.dedupe_key for c in reached] == [c.dedupe_key for c in everything if c.holds]
    assert all(c.holds for c in reached) and len(reached) == 5  # c4..c7 and app_installs

    def judged(conditions: Sequence[Any] | None) -> list[str]:
        evaluation = evaluate_score(
            incoming,
            rules=rules,
            unit_path=PATH,
            previous=ScoreState(2, 60),
            previous_period_state=None,
            open_alerts=[],
            conditions=conditions,
        )
        return [a.dedupe_key for a in evaluation.raised]

    assert judged(reached) == judged(None) == judged(everything)


# --------------------------------------------------------------------------- round_overdue


def review(state: str, *, due_on: date) -> ReviewRound:
    return ReviewRound(
        id=uuid4(),
        level="province",
        unit_code=PROVINCE,
        period="2026-Q4",
        criteria_set="default@1",
        due_on=due_on,
        state=state,
        unit_path=(PROVINCE,),
    )


def test_a_round_is_overdue_after_its_due_day_and_grace_in_local_days() -> None:
    # 17:30 UTC on the 11th is already the 12th in Vietnam
    now = datetime(2026, 12, 11, 17, 30, tzinfo=UTC)
    due_11, due_12 = (
        review("open", due_on=date(2026, 12, 11)),
        review("open", due_on=date(2026, 12, 12)),
    )
    changes = evaluate_overdue_rounds(
        [due_11, due_12, review("approved", due_on=date(2026, 12, 1))],
        rules=only("round_overdue"),
        open_alerts=[],
        now=now,
    )
    assert [c.details["round_id"] for c in changes.raised] == [str(due_11.id)]
    graced = evaluate_overdue_rounds(
        [due_11],
        rules=only("round_overdue", round_overdue={"grace_days": 1}),
        open_alerts=[],
        now=now,
    )
    assert graced.raised == ()


def test_an_overdue_round_resolves_when_approved_or_the_rule_is_off() -> None:
    now = datetime(2026, 12, 20, tzinfo=UTC)
    late = review("under_review", due_on=date(2026, 12, 10))
    alert = OpenAlert(id=uuid4(), dedupe_key=round_overdue_key(late), details={})
    still = evaluate_overdue_rounds(
        [late], rules=only("round_overdue"), open_alerts=[alert], now=now
    )
    assert still == AlertChanges()  # raised once, kept
    approved = replace(late, state="approved")
    done = evaluate_overdue_rounds(
        [approved], rules=only("round_overdue"), open_alerts=[alert], now=now
    )
    assert done.resolved == (alert.id,)
    off = evaluate_overdue_rounds([late], rules=only(), open_alerts=[alert], now=now)
    assert off.resolved == (alert.id,)
