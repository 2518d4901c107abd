"""Notifications domain: rules, alert conditions, signatures and retry policy. Pure, no I/O.

Every rule decides on plain values handed to it by the handlers (which read the database) so it
can be unit-tested without infrastructure, and a clock is always passed in, never read.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, NamedTuple, Protocol, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.contracts.activities import ActivityRecorded
from common.contracts.notifications import AlertType
from common.contracts.scoring import ScoreComponent, ScoreUpdated
from common.contracts.wire import ScoreComponentWire, ScoreUpdatedWire
from common.i18n import Message, _, level_name
from common.moments import IsoDate
from common.text import NameText

ALERT_TYPES: tuple[str, ...] = get_args(AlertType)
NATIONAL = "national"
AlertStatus = Literal["open", "acknowledged", "resolved"]
# Vietnam has one time zone and no daylight saving: a "day" of activity is a local day.
VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")

# A score as the consumer decodes it (msgspec, the hot path) or as tests build it (pydantic).
ScoreRecord = ScoreUpdated | ScoreUpdatedWire

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- rule parameters


# a criterion, an indicator or a campaign named in a rule's parameters
Label = Annotated[NameText, Field(min_length=1, max_length=100)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamInactiveParams(_Params):
    """No activity (by `occurred_at`) for `days` days. A team never seen active counts from
    the later of its `established_on` date and when we first saw it (see
    `inactivity_reference`), so teams "founded only on paper" surface after one grace period."""

    days: Annotated[int, Field(ge=1, le=366)] = 14


class ScoreDropParams(_Params):
    """A score falls by at least `points`: between two consecutive versions of one
    (subject, period), and optionally against the previous period's latest score.

    Period-over-period is off by default: scores of cumulative periods restart near zero, so it
    only makes sense for criteria sets whose indicators are rates, not counts."""

    points: Annotated[float, Field(gt=0, le=1000)] = 10.0
    between_versions: bool = True
    between_periods: bool = False


class TargetReachedParams(_Params):
    """A score component whose `value >= target` (target > 0), and every indicator of the
    score payload listed in `indicator_targets` whose value reaches the given target.
    `criteria` limits the components watched (empty: all)."""

    criteria: Annotated[list[Label], Field(max_length=100)] = []
    indicator_targets: Annotated[
        dict[Label, Annotated[float, Field(gt=0)]], Field(max_length=100)
    ] = {}


class CampaignGoal(_Params):
    # the level the target is set for: a province's target says nothing of one team's pace
    subject_type: Literal["team", "village", "commune", "district", "province", "national"] = (
        "province"
    )
    indicator: Label
    target: Annotated[float, Field(gt=0)]
    starts_on: IsoDate
    ends_on: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> CampaignGoal:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class CampaignAtRiskParams(_Params):
    """Scores of period `campaign:<id>`: the indicator's value so far, extrapolated linearly
    to the campaign's end, falls short of the target. Judged only once `min_elapsed` of the
    campaign has passed (the first days say little about the pace)."""

    campaigns: Annotated[dict[Label, CampaignGoal], Field(max_length=500)] = {}
    min_elapsed: Annotated[float, Field(ge=0, lt=1)] = 0.1


class SuspiciousActivityParams(_Params):
    """Three independent checks of activity that looks fabricated."""

    # household visits recorded by one member on one local day
    max_visits_per_member_day: Annotated[int, Field(ge=1, le=10_000)] = 40
    # distinct teams reporting the same household within the window
    household_max_teams: Annotated[int, Field(ge=2, le=1000)] = 3
    household_window_hours: Annotated[float, Field(gt=0, le=24 * 31)] = 6.0
    # events whose recorded_at - occurred_at exceeds backdate_hours, per team, within the window
    backdate_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 72.0
    backdate_burst_count: Annotated[int, Field(ge=1, le=100_000)] = 20
    backdate_burst_window_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 60.0


class RoundOverdueParams(_Params):
    """An evaluation round not approved (or reopened) `grace_days` after its due date."""

    grace_days: Annotated[int, Field(ge=0, le=366)] = 0


PARAMS_MODELS: dict[str, type[_Params]] = {
    "team_inactive": TeamInactiveParams,
    "score_drop": ScoreDropParams,
    "target_reached": TargetReachedParams,
    "campaign_at_risk": CampaignAtRiskParams,
    "suspicious_activity": SuspiciousActivityParams,
    "round_overdue": RoundOverdueParams,
}


@dataclass(frozen=True)
class RuleOverride:
    """One stored row of `rules`: a scope's override of some fields of one rule."""

    scope: str
    alert_type: str
    enabled: bool | None
    params: Mapping[str, Any]


@dataclass(frozen=True)
class EffectiveRule:
    alert_type: str
    scope: str
    enabled: bool
    params: Any
    sources: tuple[str, ...]  # the scopes whose overrides shaped it, e.g. ("default", "82")


class InvalidRuleError(ValueError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid rule parameters")
        self.errors = errors


def resolve_rule(
    alert_type: str, *, scope: str, overrides: Sequence[RuleOverride]
) -> EffectiveRule:
    """Built-in defaults, then the national override, then the province's, field by field."""
    params: dict[str, Any] = {}
    enabled = True
    sources = ["default"]
    for level in (NATIONAL, scope):
        for row in overrides:
            if row.alert_type == alert_type and row.scope == level:
                params.update(row.params)
                if row.enabled is not None:
                    enabled = row.enabled
                sources.append(level)
        if scope == NATIONAL:
            break
    return EffectiveRule(
        alert_type=alert_type,
        scope=scope,
        enabled=enabled,
        params=validate_params(alert_type, params),
        sources=tuple(sources),
    )


def validate_params(alert_type: str, params: Mapping[str, Any]) -> Any:
    try:
        return PARAMS_MODELS[alert_type].model_validate(dict(params))
    except ValidationError as exc:
        raise InvalidRuleError(
            [
                {
                    "field": ".".join(["params", *(str(p) for p in err["loc"])]),
                    "message": err["msg"],
                    "type": err["type"],
                }
                for err in exc.errors()
            ]
        ) from exc


# --------------------------------------------------------------------------- alerts

# What people read of an alert is rendered from these messages in the reader's language (the
# API's `Accept-Language`, a webhook subscription's `language`); `alert_type` stays the key.
ALERT_TITLES: dict[str, Message] = {
    "team_inactive": _("Inactive team"),
    "score_drop": _("Score dropped"),
    "target_reached": _("Target reached"),
    "campaign_at_risk": _("Campaign at risk"),
    "suspicious_activity": _("Suspicious activity"),
    "round_overdue": _("Evaluation round overdue"),
}
# An overdue round is in one of these states (an approved round is never overdue).
ROUND_STATE_NAMES: dict[str, Message] = {
    "open": _("open"),
    "under_review": _("under review"),
    "reopened": _("reopened"),
}


@dataclass(frozen=True)
class AlertCandidate:
    """A condition that holds now. The dedupe key makes it one alert however often it is seen."""

    alert_type: str
    subject_type: str
    subject_id: str
    period: str | None
    summary: Message
    unit_path: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    # Tells apart conditions of one rule on one subject: the target, the suspicious check.
    qualifier: str | None = None

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(
            self.alert_type,
            subject_type=self.subject_type,
            subject_id=self.subject_id,
            period=self.period,
            qualifier=self.qualifier,
        )


def dedupe_key(
    alert_type: str,
    *,
    subject_type: str,
    subject_id: str,
    period: str | None,
    qualifier: str | None = None,
) -> str:
    """`<rule>|<subject_type>:<subject_id>[#<qualifier>]|<period or ->`."""
    subject = f"{subject_type}:{subject_id}" + (f"#{qualifier}" if qualifier else "")
    return f"{alert_type}|{subject}|{period or '-'}"


ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"acknowledged", "resolved"}),
    "acknowledged": frozenset({"resolved"}),
    "resolved": frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in ALLOWED_TRANSITIONS.get(current, frozenset())


def unit_path_codes(
    province: str | None,
    district: str | None = None,
    commune: str | None = None,
    village: str | None = None,
) -> tuple[str, ...]:
    return tuple(code for code in (province, district, commune, village) if code)


# --------------------------------------------------------------------------- team_inactive


def inactivity_reference(
    *, last_activity_at: datetime | None, established_on: date | None, first_seen_at: datetime
) -> datetime:
    """The instant a team's silence is counted from: its last activity; for a team never
    seen active, the later of its establishment and its first appearance here (a team
    registered today gets the same grace as a new one, then counts as "founded on paper")."""
    if last_activity_at is not None:
        return last_activity_at
    if established_on is not None:
        established = datetime.combine(established_on, datetime.min.time(), VIETNAM_TZ)
        return max(established, first_seen_at)
    return first_seen_at


def is_inactive(*, reference: datetime, now: datetime, days: int) -> bool:
    return now - reference >= timedelta(days=days)


@dataclass(frozen=True)
class TeamActivity:
    """What the inactivity rule knows of one team."""

    id: UUID
    code: str | None
    status: str
    unit_path: tuple[str, ...]
    last_activity_at: datetime | None
    established_on: date | None
    first_seen_at: datetime


@dataclass(frozen=True)
class AlertChanges:
    """Alerts to raise (each once per dedupe key) and unresolved alerts to resolve, by id."""

    raised: tuple[AlertCandidate, ...] = ()
    resolved: tuple[UUID, ...] = ()


def inactive_team_key(team_id: UUID) -> str:
    return dedupe_key("team_inactive", subject_type="team", subject_id=str(team_id), period=None)


def evaluate_team_inactivity(
    teams: Sequence[TeamActivity], *, rules: Rules, open_alerts: Sequence[OpenAlert], now: datetime
) -> AlertChanges:
    """`team_inactive` for the given teams: raised for an active team silent too long that has
    no unresolved alert yet, resolved for one that is no longer silent, dissolved, or whose
    rule is off. `open_alerts` are the unresolved `team_inactive` alerts of (at least) these
    teams."""
    open_by_key = {alert.dedupe_key: alert for alert in open_alerts}
    raised: list[AlertCandidate] = []
    resolved: list[UUID] = []
    for team in teams:
        candidate = _inactivity_candidate(team, rules=rules, now=now)
        key = inactive_team_key(team.id)
        if candidate is None:
            if key in open_by_key:
                resolved.append(open_by_key[key].id)
        elif key not in open_by_key:
            raised.append(candidate)
    return AlertChanges(raised=tuple(raised), resolved=tuple(resolved))


def _inactivity_candidate(
    team: TeamActivity, *, rules: Rules, now: datetime
) -> AlertCandidate | None:
    params: TeamInactiveParams | None = rules.params(
        "team_inactive", team.unit_path[0] if team.unit_path else None
    )
    if params is None or team.status != "active":
        return None
    reference = inactivity_reference(
        last_activity_at=team.last_activity_at,
        established_on=team.established_on,
        first_seen_at=team.first_seen_at,
    )
    if not is_inactive(reference=reference, now=now, days=params.days):
        return None
    silent_days = (now - reference).days
    return AlertCandidate(
        alert_type="team_inactive",
        subject_type="team",
        subject_id=str(team.id),
        period=None,
        unit_path=team.unit_path,
        summary=_(
            "Team {team} has recorded no activity for {days} days (limit {limit}).",
            team=team.code or str(team.id),
            days=silent_days,
            limit=params.days,
        ),
        details={
            "team_code": team.code,
            "last_activity_at": reference.isoformat(),
            "days": silent_days,
            "limit_days": params.days,
        },
    )


# --------------------------------------------------------------------------- round_overdue


@dataclass(frozen=True)
class ReviewRound:
    """What the overdue rule knows of an evaluation round (from `scoring.evaluation-round.v1`)."""

    id: UUID
    level: str
    unit_code: str
    period: str
    criteria_set: str
    due_on: date
    state: str
    unit_path: tuple[str, ...]


def round_overdue_key(review: ReviewRound) -> str:
    return dedupe_key(
        "round_overdue",
        subject_type=review.level,
        subject_id=review.unit_code,
        period=review.period,
        qualifier=review.criteria_set,
    )


def evaluate_overdue_rounds(
    rounds: Sequence[ReviewRound], *, rules: Rules, open_alerts: Sequence[OpenAlert], now: datetime
) -> AlertChanges:
    """`round_overdue`: raised for a round still not approved past its due date (plus the
    rule's grace days, in local days), resolved once it is approved or the rule is off."""
    open_by_key = {alert.dedupe_key: alert for alert in open_alerts}
    today = now.astimezone(VIETNAM_TZ).date()
    raised: list[AlertCandidate] = []
    resolved: list[UUID] = []
    for review in rounds:
        params: RoundOverdueParams | None = rules.params(
            "round_overdue", review.unit_path[0] if review.unit_path else None
        )
        late_by = (today - review.due_on).days
        overdue = params is not None and review.state != "approved" and late_by > params.grace_days
        key = round_overdue_key(review)
        if not overdue:
            if key in open_by_key:
                resolved.append(open_by_key[key].id)
        elif key not in open_by_key:
            raised.append(
                AlertCandidate(
                    alert_type="round_overdue",
                    subject_type=review.level,
                    subject_id=review.unit_code,
                    period=review.period,
                    qualifier=review.criteria_set,
                    unit_path=review.unit_path,
                    summary=_(
                        "The {period} evaluation round of {level} {unit_code} was due on "
                        "{due_on} and is {state} ({days_late} days late).",
                        period=review.period,
                        level=level_name(review.level),
                        unit_code=review.unit_code,
                        due_on=review.due_on.isoformat(),
                        state=ROUND_STATE_NAMES.get(review.state, review.state),
                        days_late=late_by,
                    ),
                    details={
                        "round_id": str(review.id),
                        "criteria_set": review.criteria_set,
                        "due_on": review.due_on.isoformat(),
                        "state": review.state,
                        "days_late": late_by,
                    },
                )
            )
    return AlertChanges(raised=tuple(raised), resolved=tuple(resolved))


# --------------------------------------------------------------------------- score_drop


@dataclass(frozen=True)
class ScoreDrop:
    baseline: float
    score: float
    compared_with: str  # "previous_version" | "previous_period"

    @property
    def points(self) -> float:
        return round(self.baseline - self.score, 6)


def score_drop(
    *,
    previous_version_score: float | None,
    previous_period_score: float | None,
    score: float,
    params: ScoreDropParams,
) -> ScoreDrop | None:
    """The largest qualifying fall (the version's on a tie), or None. Called for every score:
    nothing is built unless a fall qualifies."""
    best: ScoreDrop | None = None
    for enabled, baseline, compared_with in (
        (params.between_versions, previous_version_score, "previous_version"),
        (params.between_periods, previous_period_score, "previous_period"),
    ):
        if enabled and baseline is not None:
            points = round(baseline - score, 6)
            if points >= params.points and (best is None or points > best.points):
                best = ScoreDrop(baseline, score, compared_with)
    return best


def score_recovered(*, baseline: float, score: float, params: ScoreDropParams) -> bool:
    """A drop clears once the score is back within `points` of the level it fell from."""
    return baseline - score < params.points


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")


def previous_period(period: str) -> str | None:
    """`2026-01` → `2025-12`, `2026-Q1` → `2025-Q4`, `2026` → `2025`; campaigns have none."""
    if m := _MONTH.match(period):
        year, month = int(m[1]), int(m[2])
        return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"
    if m := _QUARTER.match(period):
        year, quarter = int(m[1]), int(m[2])
        return f"{year - 1}-Q4" if quarter == 1 else f"{year}-Q{quarter - 1}"
    if m := _YEAR.match(period):
        return str(int(m[1]) - 1)
    return None


# --------------------------------------------------------------------------- target_reached


class TargetStatus(NamedTuple):
    """A tuple, as the other per-score records: a dozen per score, thousands of scores a
    second (a frozen dataclass's `__init__` costs three times a tuple's)."""

    name: str  # "criterion:<name>" or "indicator:<name>"
    value: float
    target: float

    @property
    def reached(self) -> bool:
        return _reached(self.value, self.target)


def _reached(value: float, target: float) -> bool:
    return value >= target


def target_statuses(
    *,
    components: Sequence[ScoreComponent | ScoreComponentWire],
    indicators: Mapping[str, float],
    params: TargetReachedParams,
    reached_only: bool = False,
) -> list[TargetStatus]:
    """Every watched target of one score, reached or not (so reached ones can also clear);
    `reached_only`: the reached ones alone."""
    # Called for every score with a dozen components, mostly none reached: cheapest test first.
    watched = set(params.criteria) if params.criteria else None
    statuses = [
        TargetStatus(f"criterion:{c.criterion}", c.value, c.target)
        for c in components
        if c.target > 0
        and (not reached_only or c.value >= c.target)  # `_reached`, inlined
        and (watched is None or c.criterion in watched)
    ]
    for name, target in (
        sorted(params.indicator_targets.items()) if params.indicator_targets else ()
    ):
        if name in indicators:
            value = float(indicators[name])
            if not reached_only or _reached(value, target):
                statuses.append(TargetStatus(f"indicator:{name}", value, target))
    return statuses


# --------------------------------------------------------------------------- campaign_at_risk

CAMPAIGN_PREFIX = "campaign:"


def campaign_id_of(period: str) -> str | None:
    return period[len(CAMPAIGN_PREFIX) :] if period.startswith(CAMPAIGN_PREFIX) else None


@dataclass(frozen=True)
class CampaignPace:
    value: float
    target: float
    elapsed_fraction: float
    projected: float

    @property
    def at_risk(self) -> bool:
        return self.projected < self.target


def campaign_pace(
    *, value: float, goal: CampaignGoal, now: datetime, min_elapsed: float
) -> CampaignPace | None:
    """Linear projection of `value` to the campaign's end; None while it is too early to say.

    The campaign runs from the start of `starts_on` to the end of `ends_on`, local time. After
    the end, the projection is the final value itself.
    """
    start = datetime.combine(goal.starts_on, datetime.min.time(), VIETNAM_TZ)
    end = datetime.combine(goal.ends_on + timedelta(days=1), datetime.min.time(), VIETNAM_TZ)
    elapsed = (now - start) / (end - start)
    if elapsed < min_elapsed or elapsed <= 0:
        return None
    elapsed = min(elapsed, 1.0)
    return CampaignPace(
        value=value, target=goal.target, elapsed_fraction=elapsed, projected=value / elapsed
    )


# --------------------------------------------------------------------------- rules in force


class Rules(Protocol):
    """The effective rules of some provinces, as the handlers loaded them."""

    def params(self, alert_type: str, province: str | None) -> Any | None:
        """The rule's parameters, or None when the rule is disabled for that province."""
        ...


# --------------------------------------------------------------------------- evaluating a score


class ScoreState(NamedTuple):
    """What notifications keeps of one (subject, period): the latest version judged."""

    version: int
    score: float


@dataclass(frozen=True)
class OpenAlert:
    """An alert not resolved yet (open or acknowledged), as far as the rules need it."""

    id: UUID
    dedupe_key: str
    details: Mapping[str, Any]


class ScoreEvaluation(NamedTuple):
    """What one incoming score changes: the state to store (None: a replayed or older version,
    nothing to do), the alerts to raise (each once per dedupe key) and the unresolved alerts,
    among those handed in, whose condition has cleared."""

    state: ScoreState | None
    raised: tuple[AlertCandidate, ...] = ()
    resolved: tuple[UUID, ...] = ()


class SubjectKey(NamedTuple):
    subject_type: str
    subject_id: str


class ScoreKey(NamedTuple):
    subject_type: str
    subject_id: str
    period: str


def score_key(score: ScoreRecord) -> ScoreKey:
    return ScoreKey(score.subject_type, score.subject_id, score.period)


def judging_rounds(
    scores: Sequence[tuple[ScoreKey, ScoreRecord]], *, comparison: Mapping[ScoreKey, ScoreKey]
) -> list[list[tuple[ScoreKey, ScoreRecord]]]:
    """The batch (each score with its `score_key`) in rounds judged one after the other, each
    judging a key at most once and after every earlier score of the batch it reads (its own
    key, or the period it compares against): the same outcome as judging the scores one by
    one, with set-based reads and writes per round. `comparison`: a score's key -> the key of
    the period it compares with. Most batches make one round (the publisher coalesces a
    subject-period per pass)."""
    last_round: dict[ScoreKey, int] = {}
    rounds: list[list[tuple[ScoreKey, ScoreRecord]]] = []
    for key, score in scores:
        after = last_round.get(key, -1)
        compared = comparison.get(key)
        if compared is not None:
            after = max(after, last_round.get(compared, -1))
        index = after + 1
        last_round[key] = index
        if index == len(rounds):
            rounds.append([])
        rounds[index].append((key, score))
    return rounds


def is_newer(previous: ScoreState | None, score: ScoreRecord) -> bool:
    """Whether `score` is a version not judged yet (replays and older versions are not)."""
    return previous is None or previous.version < score.version


def next_score_state(previous: ScoreState | None, score: ScoreRecord) -> ScoreState | None:
    """The state after `score`, or None when it is not newer than the one already judged."""
    if not is_newer(previous, score):
        return None
    return ScoreState(version=score.version, score=score.score)


def comparison_period(score: ScoreRecord, *, rules: Rules, province: str | None) -> str | None:
    """The period whose latest score `score_drop` compares against, if it does."""
    params: ScoreDropParams | None = rules.params("score_drop", province)
    if params is None or not params.between_periods:
        return None
    return previous_period(score.period)


def score_alert_keys(
    score: ScoreRecord,
    *,
    rules: Rules,
    unit_path: tuple[str, ...],
    conditions: Sequence[Condition] | None = None,
) -> list[str]:
    """The dedupe keys of every condition the score is judged on: the unresolved alerts of
    these keys are the ones `evaluate_score` may resolve."""
    province = unit_path[0] if unit_path else None
    keys = []
    if rules.params("score_drop", province) is not None:
        keys.append(_score_drop_base(score, unit_path).dedupe_key)
    if conditions is None:
        conditions = score_conditions(score, rules=rules, unit_path=unit_path)
    keys += [c.dedupe_key for c in conditions]
    return keys


def score_conditions(
    score: ScoreRecord,
    *,
    rules: Rules,
    unit_path: tuple[str, ...],
    with_open_alerts: bool = True,
) -> list[Condition]:
    """The `target_reached` and `campaign_at_risk` conditions the score is judged on: worked
    out once per score by a caller that needs both its keys and its evaluation.

    `with_open_alerts=False`: the caller knows the score's subject-period has no unresolved
    alert, so a target not reached has nothing to resolve and is left out (most scores: their
    dozen watched targets then cost a comparison each, no key and no condition).
    """
    return [
        *_target_conditions(score, rules, unit_path, reached_only=not with_open_alerts),
        *_campaign_conditions(score, rules, unit_path),
    ]


def evaluate_score(
    score: ScoreRecord,
    *,
    rules: Rules,
    unit_path: tuple[str, ...],
    previous: ScoreState | None,
    previous_period_state: ScoreState | None,
    open_alerts: Sequence[OpenAlert],
    conditions: Sequence[Condition] | None = None,
) -> ScoreEvaluation:
    """Judge one score by `score_drop`, `target_reached` and `campaign_at_risk`.

    `previous` is the stored state of the score's (subject, period), `previous_period_state`
    that of `comparison_period` (None when there is none), `open_alerts` the unresolved alerts
    of `score_alert_keys`, `conditions` those of `score_conditions` if the caller has them
    already. A condition that holds is
    raised (an alert still unresolved for its key absorbs it: it is raised once); one that no
    longer holds resolves its unresolved alerts: a score drop once the score is back within
    `points` of the baseline it fell from.
    """
    state = next_score_state(previous, score)
    if state is None:
        return ScoreEvaluation(state=None)
    province = unit_path[0] if unit_path else None
    open_by_key: dict[str, list[OpenAlert]] = {}
    for alert in open_alerts:
        open_by_key.setdefault(alert.dedupe_key, []).append(alert)
    raised: list[AlertCandidate] = []
    resolved: list[UUID] = []

    drop_params: ScoreDropParams | None = rules.params("score_drop", province)
    if drop_params is not None:
        drop = score_drop(
            previous_version_score=previous.score if previous else None,
            previous_period_score=previous_period_state.score if previous_period_state else None,
            score=score.score,
            params=drop_params,
        )
        if drop is not None:
            raised.append(
                replace(
                    _score_drop_base(score, unit_path),
                    summary=_(
                        "The {subject} score for {period} fell by {points:g} points "
                        "({baseline:g} → {score:g}).",
                        subject=level_name(score.subject_type),
                        period=score.period,
                        points=drop.points,
                        baseline=drop.baseline,
                        score=drop.score,
                    ),
                    details={
                        "baseline": drop.baseline,
                        "score": drop.score,
                        "points": drop.points,
                        "compared_with": drop.compared_with,
                        "version": score.version,
                        "criteria_set": score.criteria_set,
                    },
                )
            )
        elif open_by_key:  # the key is built only when there is an alert to resolve
            resolved += [
                alert.id
                for alert in open_by_key.get(_score_drop_base(score, unit_path).dedupe_key, [])
                if score_recovered(
                    baseline=float(alert.details["baseline"]),
                    score=score.score,
                    params=drop_params,
                )
            ]

    if conditions is None:
        conditions = score_conditions(score, rules=rules, unit_path=unit_path)
    for condition in conditions:
        if condition.holds:
            raised.append(condition.candidate())
        else:
            resolved += [a.id for a in open_by_key.get(condition.dedupe_key, [])]
    return ScoreEvaluation(state=state, raised=tuple(raised), resolved=tuple(resolved))


def _score_drop_base(score: ScoreRecord, unit_path: tuple[str, ...]) -> AlertCandidate:
    return AlertCandidate(
        alert_type="score_drop",
        subject_type=score.subject_type,
        subject_id=score.subject_id,
        period=score.period,
        unit_path=unit_path,
        summary=Message(""),  # a base to `replace`, or only its dedupe key is used
    )


class Condition(NamedTuple):
    """A watched condition of one score: its alert's dedupe key, whether it holds, and the
    alert itself, built only when it is raised (a score watches a dozen targets, and most
    hold no news: their texts are never read)."""

    dedupe_key: str
    holds: bool
    candidate: Callable[[], AlertCandidate]


def _target_conditions(
    score: ScoreRecord, rules: Rules, unit_path: tuple[str, ...], *, reached_only: bool
) -> list[Condition]:
    """Every watched target of the score (or only the reached ones), and whether it is
    reached."""
    params: TargetReachedParams | None = rules.params(
        "target_reached", unit_path[0] if unit_path else None
    )
    if params is None:
        return []
    statuses = target_statuses(
        components=score.components,
        indicators=score.indicators,
        params=params,
        reached_only=reached_only,
    )

    def reached(status: TargetStatus) -> AlertCandidate:
        return AlertCandidate(
            alert_type="target_reached",
            subject_type=score.subject_type,
            subject_id=score.subject_id,
            period=score.period,
            qualifier=status.name,
            unit_path=unit_path,
            summary=_(
                "The {subject} reached its {target} target for {period}: {value:g} of {goal:g}.",
                subject=level_name(score.subject_type),
                target=status.name.split(":", 1)[1],
                period=score.period,
                value=status.value,
                goal=status.target,
            ),
            details={"target": status.name, "value": status.value, "goal": status.target},
        )

    return [
        Condition(
            dedupe_key(
                "target_reached",
                subject_type=score.subject_type,
                subject_id=score.subject_id,
                period=score.period,
                qualifier=status.name,
            ),
            status.reached,
            functools.partial(reached, status),
        )
        for status in statuses
    ]


def _campaign_conditions(
    score: ScoreRecord, rules: Rules, unit_path: tuple[str, ...]
) -> list[Condition]:
    """The campaign's pace as an alert and whether it is at risk; none for a score that is
    not of a watched campaign at its goal's level, or while it is too early to judge."""
    params: CampaignAtRiskParams | None = rules.params(
        "campaign_at_risk", unit_path[0] if unit_path else None
    )
    campaign_id = campaign_id_of(score.period)
    if params is None or campaign_id is None:
        return []
    goal = params.campaigns.get(campaign_id)
    if goal is None or goal.subject_type != score.subject_type:
        return []
    pace = campaign_pace(
        value=float(score.indicators.get(goal.indicator, 0.0)),
        goal=goal,
        now=score.computed_at,
        min_elapsed=params.min_elapsed,
    )
    if pace is None:
        return []
    candidate = AlertCandidate(
        alert_type="campaign_at_risk",
        subject_type=score.subject_type,
        subject_id=score.subject_id,
        period=score.period,
        unit_path=unit_path,
        summary=_(
            "Campaign {campaign} will miss its {indicator} target: {value:g} so far after "
            "{elapsed:.0%} of the time projects to {projected:.0f} of {target:g}.",
            campaign=campaign_id,
            indicator=goal.indicator,
            value=pace.value,
            elapsed=pace.elapsed_fraction,
            projected=pace.projected,
            target=goal.target,
        ),
        details={
            "campaign_id": campaign_id,
            "indicator": goal.indicator,
            "value": pace.value,
            "target": goal.target,
            "elapsed_fraction": round(pace.elapsed_fraction, 4),
            "projected": round(pace.projected, 2),
            "ends_on": goal.ends_on.isoformat(),
        },
    )
    return [Condition(candidate.dedupe_key, pace.at_risk, lambda: candidate)]


# --------------------------------------------------------------------------- suspicious


def local_day(instant: datetime) -> date:
    return instant.astimezone(VIETNAM_TZ).date()


def is_backdated(*, occurred_at: datetime, recorded_at: datetime, hours: float) -> bool:
    return recorded_at - occurred_at > timedelta(hours=hours)


def activity_unit_path(activity: ActivityRecorded) -> tuple[str, ...]:
    p = activity.unit_path
    return unit_path_codes(p.province, p.district, p.commune, p.village)


# An activity of a batch whose province has `suspicious_activity` on, with that province's
# parameters. Each of the three checks picks from these what to count (one query for the
# batch, run by the handler), then turns the counts into alerts.
Checked = tuple[ActivityRecorded, SuspiciousActivityParams]


def suspicious_checked(activities: Sequence[ActivityRecorded], *, rules: Rules) -> list[Checked]:
    return [
        (a, params)
        for a in activities
        if (params := rules.params("suspicious_activity", a.unit_path.province)) is not None
    ]


@dataclass(frozen=True)
class MemberDay:
    """Household visits of one member on one local day are to be counted; `activity` (the
    first of the batch for that member and day) gives the alert its unit path and team."""

    member_id: UUID
    day_start: datetime  # midnight of the local day, Vietnam time
    activity: ActivityRecorded
    params: SuspiciousActivityParams

    @property
    def key(self) -> tuple[UUID, datetime]:
        return (self.member_id, self.day_start)


def member_days_to_count(checked: Sequence[Checked]) -> list[MemberDay]:
    """One (member, local day) per member's household visits in the batch."""
    days: dict[tuple[UUID, datetime], MemberDay] = {}
    for a, params in checked:
        if a.member_id is not None and a.kind == "household_visit":
            start = datetime.combine(local_day(a.occurred_at), datetime.min.time(), VIETNAM_TZ)
            days.setdefault((a.member_id, start), MemberDay(a.member_id, start, a, params))
    return list(days.values())


def member_day_alerts(
    member_days: Sequence[MemberDay], visits: Mapping[tuple[UUID, datetime], int]
) -> list[AlertCandidate]:
    """A member who logged more household visits on a day than `max_visits_per_member_day`
    (`visits` per `MemberDay.key`, absent: none)."""
    candidates = []
    for md in member_days:
        count = visits.get(md.key, 0)
        limit = md.params.max_visits_per_member_day
        if count <= limit:
            continue
        day = md.day_start.date().isoformat()
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="member",
                subject_id=str(md.member_id),
                period=day,
                qualifier="visits_per_day",
                unit_path=activity_unit_path(md.activity),
                summary=_(
                    "A member logged {count} household visits on {day} (plausible: at most "
                    "{limit}).",
                    count=count,
                    day=day,
                    limit=limit,
                ),
                details={
                    "check": "visits_per_day",
                    "team_id": str(md.activity.team_id),
                    "visits": count,
                    "limit": limit,
                },
            )
        )
    return candidates


@dataclass(frozen=True)
class HouseholdWindow:
    """The distinct teams that reported one household around one visit are to be counted."""

    household_hash: str
    at: datetime
    activity: ActivityRecorded
    params: SuspiciousActivityParams

    @property
    def window(self) -> tuple[str, datetime, datetime]:
        """(household hash, window start, window end)."""
        span = timedelta(hours=self.params.household_window_hours)
        return (self.household_hash, self.at - span, self.at + span)


def household_windows(checked: Sequence[Checked]) -> list[HouseholdWindow]:
    """One window per (household, time of visit) in the batch."""
    windows = {
        (a.household_hash, a.occurred_at): (a, params)
        for a, params in checked
        if a.household_hash is not None
    }
    return [
        HouseholdWindow(household, at, a, params)
        for (household, at), (a, params) in windows.items()
    ]


def household_alerts(
    windows: Sequence[HouseholdWindow], team_counts: Sequence[int]
) -> list[AlertCandidate]:
    """A household reported by at least `household_max_teams` distinct teams within the
    window (`team_counts` in the order of `windows`)."""
    candidates = []
    for w, teams in zip(windows, team_counts, strict=True):
        params = w.params
        if teams < params.household_max_teams:
            continue
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="household",
                subject_id=w.household_hash,  # a keyed hash, never the partner's reference
                period=local_day(w.at).isoformat(),
                qualifier="household_many_teams",
                unit_path=activity_unit_path(w.activity),
                summary=_(
                    "One household was reported visited by {teams} teams within {hours:g} hours.",
                    teams=teams,
                    hours=params.household_window_hours,
                ),
                details={
                    "check": "household_many_teams",
                    "teams": teams,
                    "limit": params.household_max_teams,
                    "window_hours": params.household_window_hours,
                },
            )
        )
    return candidates


@dataclass(frozen=True)
class BackdateWindow:
    """A team's backdated events recorded in the burst window up to its latest backdated
    event of the batch on one local day (of recording) are to be counted."""

    team_id: UUID
    day: str  # local day of recording, ISO
    activity: ActivityRecorded  # that latest backdated event
    params: SuspiciousActivityParams

    @property
    def window(self) -> tuple[UUID, datetime, datetime, float]:
        """(team, window start, window end, backdate hours)."""
        end = self.activity.recorded_at
        start = end - timedelta(minutes=self.params.backdate_burst_window_minutes)
        return (self.team_id, start, end, self.params.backdate_hours)


def backdate_windows(checked: Sequence[Checked]) -> list[BackdateWindow]:
    """Per (team, local day of recording): the window ending at the batch's latest event
    backdated by more than `backdate_hours`."""
    latest: dict[tuple[UUID, str], Checked] = {}
    for a, params in checked:
        if not is_backdated(
            occurred_at=a.occurred_at, recorded_at=a.recorded_at, hours=params.backdate_hours
        ):
            continue
        key = (a.team_id, local_day(a.recorded_at).isoformat())
        if key not in latest or a.recorded_at > latest[key][0].recorded_at:
            latest[key] = (a, params)
    return [
        BackdateWindow(team_id, day, a, params) for (team_id, day), (a, params) in latest.items()
    ]


def backdate_alerts(
    windows: Sequence[BackdateWindow], counts: Sequence[int]
) -> list[AlertCandidate]:
    """A team that recorded at least `backdate_burst_count` backdated events within the
    window (`counts` in the order of `windows`)."""
    candidates = []
    for w, count in zip(windows, counts, strict=True):
        params = w.params
        if count < params.backdate_burst_count:
            continue
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="team",
                subject_id=str(w.team_id),
                period=w.day,
                qualifier="backdated_burst",
                unit_path=activity_unit_path(w.activity),
                summary=_(
                    "A team recorded {count} activities backdated by more than {hours:g} hours "
                    "within {minutes:g} minutes.",
                    count=count,
                    hours=params.backdate_hours,
                    minutes=params.backdate_burst_window_minutes,
                ),
                details={
                    "check": "backdated_burst",
                    "events": count,
                    "limit": params.backdate_burst_count,
                    "backdate_hours": params.backdate_hours,
                },
            )
        )
    return candidates


# --------------------------------------------------------------------------- delivery

SIGNATURE_HEADER = "X-CDT-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DELIVERY_HEADER = "X-CDT-Delivery"


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: receivers reject stale timestamps
    to stop replays, and the body cannot be changed without the secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    *, secret: str, header: str, body: bytes, now: int, tolerance_seconds: int = 300
) -> bool:
    """What a receiver does (documented for subscribers, used by the tests)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(
        expected.encode(), f"t={timestamp},v1={parts.get('v1', '')}".encode()
    )


def backoff_seconds(
    *, attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of many
    deliveries that failed together spread out without ever retrying immediately."""
    ceiling = min(cap, base * math.pow(2, max(attempt - 1, 0)))
    return ceiling / 2 + rng() * ceiling / 2


def is_public_address(address: str) -> bool:
    """False for loopback, private, shared, link-local, multicast, reserved, unspecified ranges
    (an IPv4-mapped IPv6 address is judged as the IPv4 address it carries)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    blocked = (
        not ip.is_global  # also shared (CGNAT 100.64/10), documentation and benchmark ranges
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )
    return not blocked
