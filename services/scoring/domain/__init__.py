"""Scoring domain: pure rules, no I/O.

An activity *fact* is what one activity contributes: additive counters (activities, citizens
reached, outcomes...) and distinct members (its household, member, team and ISO week). A fact is
expanded to every subject it belongs to (team, village, commune, district, province, national)
and every period it falls in (month, quarter, year, campaign), always in Asia/Ho_Chi_Minh time.
The same expansion feeds the incremental path (signed deltas per consumed batch) and the full
recompute (replaying stored facts), so both produce the same indicators by construction.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal, NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

from common.contracts.activities import SKILLS

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
NATIONAL_ID = "VN"
LEVELS: tuple[str, ...] = ("village", "commune", "district", "province")
SUBJECT_TYPES: tuple[str, ...] = ("team", *LEVELS, "national")
# Distinct dimensions and the indicator counting each one's distinct values. A value is counted
# where it lives, then summed upwards: teams and members at their team, households at their
# team and at the lowest unit of its path (a household lives in one village). Weeks are hidden
# counters instead (`w:<ISO week>`), so they cost no row of their own.
DISTINCT_INDICATORS: dict[str, str] = {
    "household": "households_visited",
    "member": "active_members",
    "team": "active_teams",
}
WEEK_PREFIX = "w:"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
PERIOD_RE = re.compile(
    r"^(?:[0-9]{4}(?:-(?:0[1-9]|1[0-2])|-Q[1-4])?|campaign:[A-Za-z0-9][A-Za-z0-9._-]{0,63})$"
)

SubjectType = Literal["team", "village", "commune", "district", "province", "national"]
Subject = tuple[str, str]
# (subject_type, subject_id, period, indicator) -> value
CounterKey = tuple[str, str, str, str]
# (anchor_type, anchor_id, period, dim, value) -> reference count
DistinctKey = tuple[str, str, str, str, str]
# (anchor_type, anchor_id, dim) -> the subjects a distinct value at that anchor counts for
ReachKey = tuple[str, str, str]
# (subject_type, subject_id, indicator) -> value, for state indicators (members, teams)
StateKey = tuple[str, str, str]
# (subject_type, subject_id, period) as the incremental path builds it by the thousand: a plain
# tuple, equal to (and hashed like) the `SubjectPeriod` it becomes when taken for publication.
PeriodKey = tuple[str, str, str]


class SubjectPeriod(NamedTuple):
    """A subject (a team or a unit) in one period: what is scored, ranked and published."""

    subject_type: str
    subject_id: str
    period: str


# --------------------------------------------------------------------------- periods


def local_time(moment: datetime) -> datetime:
    return moment.astimezone(LOCAL_TZ)


def calendar_periods(moment: datetime) -> tuple[str, str, str]:
    """Month, quarter and year of an instant, by the Vietnamese calendar day."""
    local = local_time(moment)
    quarter = (local.month - 1) // 3 + 1
    return (f"{local.year}-{local.month:02d}", f"{local.year}-Q{quarter}", f"{local.year}")


def iso_week(moment: datetime) -> str:
    year, week, _ = local_time(moment).isocalendar()
    return f"{year}-W{week:02d}"


def periods_of(moment: datetime, campaign_id: str | None) -> tuple[str, ...]:
    periods = calendar_periods(moment)
    return (*periods, f"campaign:{campaign_id}") if campaign_id else periods


def is_valid_period(period: str) -> bool:
    return bool(PERIOD_RE.fullmatch(period))


def period_months(period: str, *, campaign_days: int | None = None) -> float:
    """How many months a period spans: scales per-month default targets."""
    if period.startswith("campaign:"):
        return max(campaign_days or 30, 1) / 30.4375
    if "-Q" in period:
        return 3.0
    if "-" in period:
        return 1.0
    return 12.0


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class UnitPathCodes:
    province: str
    district: str | None = None
    commune: str | None = None
    village: str | None = None

    def code_at(self, level: str) -> str | None:
        value: str | None = getattr(self, level)
        return value

    def ancestors(self) -> list[Subject]:
        """The unit subjects, lowest first, then the nation."""
        units = [(level, code) for level in LEVELS if (code := self.code_at(level)) is not None]
        return [*units, ("national", NATIONAL_ID)]


def subjects_of(team_id: UUID, path: UnitPathCodes) -> list[Subject]:
    return [("team", str(team_id)), *path.ancestors()]


def subject_rows(team_id: UUID, path: UnitPathCodes) -> list[dict[str, str | None]]:
    """Each subject of a team's chain with its direct parent (siblings share it) and path."""
    chain = subjects_of(team_id, path)
    rows: list[dict[str, str | None]] = []
    for index, (stype, sid) in enumerate(chain):
        parent = chain[index + 1] if index + 1 < len(chain) else None
        below = {level: path.code_at(level) for level in LEVELS}
        if stype in LEVELS:  # a unit's own path stops at itself
            for level in LEVELS[: LEVELS.index(stype)]:
                below[level] = None
        elif stype == "national":
            below = dict.fromkeys(LEVELS)
        rows.append(
            {
                "subject_type": stype,
                "subject_id": sid,
                "parent_type": parent[0] if parent else None,
                "parent_id": parent[1] if parent else None,
                **below,
            }
        )
    return rows


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class ActivityFact:
    """The contribution of one activity, independent of any subject or period."""

    activity_id: UUID
    team_id: UUID
    path: UnitPathCodes
    occurred_at: datetime
    periods: tuple[str, ...]
    counters: Mapping[str, int]
    distinct: Mapping[str, str]


def _safe_name(name: str) -> str | None:
    return name if NAME_RE.match(name) else None


def activity_fact(
    *,
    activity_id: UUID,
    team_id: UUID,
    member_id: UUID | None,
    occurred_at: datetime,
    kind: str,
    skills: Sequence[str],
    citizens_reached: int,
    household_hash: str | None,
    audience: Sequence[str],
    campaign_id: str | None,
    outcomes: Mapping[str, int],
    path: UnitPathCodes,
) -> ActivityFact:
    counters: Counter[str] = Counter({"activities": 1, f"activities_{kind}": 1})
    reached = max(citizens_reached, 0)
    counters["citizens_reached"] += reached
    for skill in dict.fromkeys(skills):  # a skill listed twice is taught once
        counters[f"activities_skill_{skill}"] += 1
        counters[f"citizens_reached_{skill}"] += reached
    for group in dict.fromkeys(audience):
        if (name := _safe_name(group)) is not None:
            counters[f"activities_audience_{name}"] += 1
    for outcome, value in outcomes.items():
        if (name := _safe_name(outcome)) is not None and value > 0:
            counters[name] += value
    distinct = {"team": str(team_id), "week": iso_week(occurred_at)}
    if member_id is not None:
        distinct["member"] = str(member_id)
    if household_hash:
        distinct["household"] = household_hash
    return ActivityFact(
        activity_id=activity_id,
        team_id=team_id,
        path=path,
        occurred_at=occurred_at,
        periods=periods_of(occurred_at, campaign_id),
        counters={k: v for k, v in counters.items() if v},
        distinct=distinct,
    )


@dataclass
class Deltas:
    """Signed changes of one batch, aggregated before any SQL (one upsert per table)."""

    # (subject_type, subject_id, period) -> indicator -> signed change
    sets: dict[PeriodKey, dict[str, int]] = field(default_factory=dict)
    distinct: Counter[DistinctKey] = field(default_factory=Counter)
    # which subjects a distinct value's arrival or departure counts for, per anchor and dim
    reach: dict[ReachKey, tuple[Subject, ...]] = field(default_factory=dict)
    state: Counter[StateKey] = field(default_factory=Counter)
    # (subject_type, subject_id, period) -> latest event time seen (the watermark)
    touched: dict[PeriodKey, datetime | None] = field(default_factory=dict)
    # subjects whose state indicators changed (scored again for current periods)
    state_touched: set[Subject] = field(default_factory=set)

    def add_fact(self, fact: ActivityFact, sign: int) -> None:
        self.add_facts([fact], sign)

    def add_facts(self, facts: Iterable[ActivityFact], sign: int) -> None:
        """Facts summed per team chain and period first, then rolled up the chain level by
        level (a commune's sum from its villages' sums, not from every fact again): the same
        result as one `add_fact` each, with far fewer dictionary updates for a big batch."""
        chains: dict[tuple[UUID, UnitPathCodes], _ChainSums] = {}
        distinct = self.distinct
        reach = self.reach
        for fact in facts:
            chain = chains.get((fact.team_id, fact.path))
            if chain is None:
                chain = chains[(fact.team_id, fact.path)] = _ChainSums(
                    subjects_of(fact.team_id, fact.path)
                )
            anchors = chain.anchors_of(fact)
            for anchor_type, anchor_id, dim, _, subjects in anchors:
                reach[(anchor_type, anchor_id, dim)] = subjects
            chain.add(fact, sign)
            for period in fact.periods:
                for anchor_type, anchor_id, dim, value, _ in anchors:
                    key = (anchor_type, anchor_id, period, dim, value)
                    distinct[key] = distinct.get(key, 0) + sign
        self._roll_up(chains.values())

    def _roll_up(self, chains: Iterable[_ChainSums]) -> None:
        """Each chain's sums into its team's key, then each level's sums into the level
        above. A node is a chain suffix (a subject and the ancestors above it), so a unit
        reached through two different paths still adds to each path's own ancestors."""
        levels: list[dict[tuple[tuple[Subject, ...], str], _Node]] = [{} for _ in SUBJECT_TYPES]
        for chain in chains:
            for period, summed in chain.sums.items():
                levels[0][(chain.subjects, period)] = _Node(summed, chain.latest[period])
        sets = self.sets
        for nodes in levels:
            for (suffix, period), node in nodes.items():
                key = (suffix[0][0], suffix[0][1], period)
                bucket = sets.get(key)
                if bucket is None:
                    sets[key] = node.sums  # final: every node below was added already
                else:
                    _add_into(bucket, node.sums)
                self.touch(key, node.latest)
                if len(suffix) > 1:
                    above = suffix[1:]
                    parents = levels[_LEVEL_INDEX[above[0][0]]]
                    parent = parents.get((above, period))
                    if parent is None:
                        parents[(above, period)] = _Node(node.sums.copy(), node.latest)
                    else:
                        _add_into(parent.sums, node.sums)
                        parent.latest = max(parent.latest, node.latest)

    def touch(self, key: PeriodKey, moment: datetime | None) -> None:
        previous = self.touched.get(key)
        if key not in self.touched or (
            moment is not None and (previous is None or moment > previous)
        ):
            self.touched[key] = moment

    def nonzero_sets(self) -> dict[PeriodKey, dict[str, int]]:
        out = {}
        for key, bucket in self.sets.items():
            changed = {name: value for name, value in bucket.items() if value}
            if changed:
                out[key] = changed
        return out

    def nonzero_counters(self) -> dict[CounterKey, int]:
        return {
            (*key, name): value
            for key, changed in self.nonzero_sets().items()
            for name, value in changed.items()
        }

    def nonzero_distinct(self) -> dict[DistinctKey, int]:
        return {k: v for k, v in self.distinct.items() if v}

    def transitions(self, changes: Iterable[tuple[DistinctKey, int, int]]) -> Counter[CounterKey]:
        """Counter deltas from reference-count changes `(key, delta, new_refcount)`.

        A value counts once while its reference count is positive: 0 → n adds one to every
        subject in its reach, n → 0 removes it.
        """
        out: Counter[CounterKey] = Counter()
        for (atype, aid, period, dim, _value), delta, new in changes:
            old = new - delta
            step = 1 if old <= 0 < new else -1 if new <= 0 < old else 0
            if step:
                indicator = DISTINCT_INDICATORS[dim]
                for stype, sid in self.reach[(atype, aid, dim)]:
                    out[(stype, sid, period, indicator)] += step
        return out


_LEVEL_INDEX = {stype: index for index, stype in enumerate(SUBJECT_TYPES)}
# (anchor_type, anchor_id, dim, value, the subjects a distinct value there counts for)
Anchor = tuple[str, str, str, str, tuple[Subject, ...]]


def _add_into(bucket: dict[str, int], change: Mapping[str, int]) -> None:
    get = bucket.get
    for name, value in change.items():
        bucket[name] = get(name, 0) + value


@dataclass
class _Node:
    sums: dict[str, int]
    latest: datetime


class _ChainSums:
    """One team chain's sums per period within one `add_facts` call."""

    __slots__ = ("_household", "_team", "latest", "subjects", "sums")

    def __init__(self, subjects: list[Subject]) -> None:
        self.subjects = tuple(subjects)
        self.sums: dict[str, dict[str, int]] = {}
        self.latest: dict[str, datetime] = {}
        team = subjects[0]
        # Households count at the team (its own reach) and at the lowest unit, from which
        # they are summed upwards; teams and members at the team, for the whole chain.
        self._team = (team[0], team[1], self.subjects)
        self._household: list[tuple[str, str, tuple[Subject, ...]]] = [(team[0], team[1], (team,))]
        if len(subjects) > 2:
            self._household.append((subjects[1][0], subjects[1][1], self.subjects[1:]))

    def anchors_of(self, fact: ActivityFact) -> list[Anchor]:
        anchors: list[Anchor] = []
        for dim, value in fact.distinct.items():
            if dim == "household":
                anchors.extend(
                    (atype, aid, dim, value, reach) for atype, aid, reach in self._household
                )
            elif dim in DISTINCT_INDICATORS:
                anchors.append((self._team[0], self._team[1], dim, value, self._team[2]))
        return anchors

    def add(self, fact: ActivityFact, sign: int) -> None:
        week = fact.distinct.get("week")
        for period in fact.periods:
            summed = self.sums.get(period)
            if summed is None:
                summed = self.sums[period] = {}
                self.latest[period] = fact.occurred_at
            elif fact.occurred_at > self.latest[period]:
                self.latest[period] = fact.occurred_at
            get = summed.get
            for name, value in fact.counters.items():
                summed[name] = get(name, 0) + sign * value
            if week is not None:
                summed[WEEK_PREFIX + week] = get(WEEK_PREFIX + week, 0) + sign


def visible_indicators(stored: Mapping[str, float]) -> dict[str, float]:
    """Stored counters as users see them: hidden week counters become `active_weeks`."""
    out: dict[str, float] = {}
    weeks = 0
    for name, value in stored.items():
        if name.startswith(WEEK_PREFIX):
            weeks += value > 0
        else:
            out[name] = float(value)
    if weeks:
        out["active_weeks"] = float(weeks)
    return out


# --------------------------------------------------------------------------- fact ledger


@dataclass(frozen=True)
class FactState:
    """What is known of one activity id: its fact (if recorded yet) and whether it is void."""

    fact: ActivityFact | None
    voided: bool


def on_recorded(state: FactState | None, fact: ActivityFact) -> tuple[FactState, int]:
    """Apply an ActivityRecorded: the sign of the contribution to add (+1 or 0)."""
    if state is None:
        return FactState(fact, voided=False), 1
    if state.fact is None:  # the void arrived first: keep the fact, count nothing
        return FactState(fact, voided=True), 0
    return state, 0  # the same activity again (a redelivery under a new event id)


def on_voided(state: FactState | None) -> tuple[FactState, int]:
    """Apply an ActivityVoided: -1 when the stored contribution must be subtracted."""
    if state is None:
        return FactState(None, voided=True), 0
    if state.voided:
        return state, 0
    return FactState(state.fact, voided=True), -1


# --------------------------------------------------------------------------- roster (teams)


def flagged_team(
    *, subject_type: str, subject_id: str, details: Mapping[str, object]
) -> str | None:
    """The team a suspicious-activity alert names: its subject, or a member's team. An alert on
    a household names no team (it counts the teams, it does not list them)."""
    if subject_type == "team":
        return subject_id
    if subject_type == "member" and details.get("team_id"):
        return str(details["team_id"])
    return None


@dataclass(frozen=True)
class SubjectName:
    """A team's or unit's code and name as the teams topics last told them (reports show them);
    a unit's subject id is its code, a team's its id."""

    subject_type: str
    subject_id: str
    code: str
    name: str
    version: int


@dataclass(frozen=True)
class TeamState:
    team_id: UUID
    path: UnitPathCodes | None
    active: bool
    version: int


@dataclass(frozen=True)
class MemberState:
    member_id: UUID
    team_id: UUID
    counted: bool
    trained: bool
    version: int


@dataclass
class Roster:
    """Teams and members known to scoring, and the state indicators they drive.

    A team contributes `teams`, its `members` and `trained_members` to its ancestors only while
    active and placed; the team subject itself always carries its members.
    """

    teams: dict[UUID, TeamState] = field(default_factory=dict)
    members: dict[UUID, MemberState] = field(default_factory=dict)
    # team id -> (members, trained_members), the team subject's own state counters
    counts: dict[UUID, tuple[int, int]] = field(default_factory=dict)

    def _team_contribution(self, team: TeamState | None, team_id: UUID) -> Counter[StateKey]:
        out: Counter[StateKey] = Counter()
        if team is None or not team.active or team.path is None:
            return out
        members, trained = self.counts.get(team_id, (0, 0))
        for stype, sid in team.path.ancestors():
            out[(stype, sid, "teams")] += 1
            out[(stype, sid, "members")] += members
            out[(stype, sid, "trained_members")] += trained
        return out

    def apply_team(self, team: TeamState, deltas: Deltas) -> None:
        old = self.teams.get(team.team_id)
        if old is not None and old.version >= team.version:
            return  # compaction and replays may bring older states: never go back
        self._replace(old, team, deltas)

    def move_team(self, team_id: UUID, path: UnitPathCodes, deltas: Deltas) -> None:
        """The team's unit moved (a merge or re-parent): same state, new place, same version."""
        old = self.teams.get(team_id)
        if old is not None and old.path is not None and old.path != path:
            self._replace(old, replace(old, path=path), deltas)

    def _replace(self, old: TeamState | None, team: TeamState, deltas: Deltas) -> None:
        before = self._team_contribution(old, team.team_id)
        after = self._team_contribution(team, team.team_id)
        after.subtract(before)
        if old is None or old.active != team.active:
            after[("team", str(team.team_id), "teams")] += int(team.active) - int(
                bool(old and old.active)
            )
        self.teams[team.team_id] = team
        self._merge(after, deltas)

    def apply_member(self, member: MemberState, deltas: Deltas) -> None:
        old = self.members.get(member.member_id)
        if old is not None and old.version >= member.version:
            return
        change: Counter[StateKey] = Counter()
        if old is not None:
            self._move_member(old, -1, change)
        self._move_member(member, +1, change)
        self.members[member.member_id] = member
        self._merge(change, deltas)

    def _move_member(self, member: MemberState, sign: int, change: Counter[StateKey]) -> None:
        if not member.counted:
            return
        trained = int(member.trained)
        members, trained_count = self.counts.get(member.team_id, (0, 0))
        self.counts[member.team_id] = (members + sign, trained_count + sign * trained)
        team = self.teams.get(member.team_id)
        subjects: list[Subject] = [("team", str(member.team_id))]
        if team is not None and team.active and team.path is not None:
            subjects.extend(team.path.ancestors())
        for stype, sid in subjects:
            change[(stype, sid, "members")] += sign
            change[(stype, sid, "trained_members")] += sign * trained

    @staticmethod
    def _merge(change: Counter[StateKey], deltas: Deltas) -> None:
        for key, value in change.items():
            if value:
                deltas.state[key] += value
                deltas.state_touched.add((key[0], key[1]))


# --------------------------------------------------------------------------- criteria & scores


@dataclass(frozen=True)
class Criterion:
    """One criterion: `min(achieved / target, 1) × max_points`, DHIS2-style formula.

    achieved = Σ numerator indicators / Σ denominator indicators (no denominator: a count).
    basis: how the default target scales with the subject — `absolute` (as is), `per_month`
    (× months in the period) or `per_team_month` (× teams under the subject × months).
    """

    id: str
    group: str
    max_points: float
    numerator: tuple[str, ...]
    target: float
    denominator: tuple[str, ...] = ()
    basis: Literal["absolute", "per_month", "per_team_month"] = "absolute"
    description: str = ""


@dataclass(frozen=True)
class CriteriaSet:
    version: str
    criteria: tuple[Criterion, ...]
    description: str = ""
    provenance: str = ""

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.criteria)


class Component(NamedTuple):
    """One criterion's part of a score (a tuple: the publisher builds 13 per subject-period,
    and a frozen dataclass's checked `__init__` was most of `score`'s time)."""

    criterion: str
    group: str
    points: float
    max_points: float
    value: float
    target: float


@dataclass(frozen=True)
class ScoreResult:
    score: float
    max_score: float
    components: tuple[Component, ...]


def derived_indicators(indicators: Mapping[str, float]) -> dict[str, float]:
    """Indicators computed from others at read time (never stored)."""
    skills_taught = sum(1 for s in SKILLS if indicators.get(f"activities_skill_{s}", 0) > 0)
    return {"skills_taught": float(skills_taught)}


def target_scales(*, period: str, teams: float, campaign_days: int | None) -> dict[str, float]:
    """What each basis multiplies a criterion's default target by, for one subject-period."""
    months = period_months(period, campaign_days=campaign_days)
    return {"absolute": 1.0, "per_month": months, "per_team_month": max(teams, 1.0) * months}


def default_target(
    criterion: Criterion, *, period: str, teams: float, campaign_days: int | None
) -> float:
    scales = target_scales(period=period, teams=teams, campaign_days=campaign_days)
    return criterion.target * scales[criterion.basis]


def _total(names: tuple[str, ...], indicators: Mapping[str, float]) -> float:
    if len(names) == 1:  # most criteria: no generator for one name
        return float(indicators.get(names[0], 0.0))
    return float(sum([indicators.get(name, 0.0) for name in names]))


def achieved(criterion: Criterion, indicators: Mapping[str, float]) -> float:
    numerator = _total(criterion.numerator, indicators)
    if not criterion.denominator:
        return numerator
    denominator = _total(criterion.denominator, indicators)
    return numerator / denominator if denominator > 0 else 0.0


def _rounded(value: float, digits: int) -> float:
    """`round(value, digits)`, which leaves a whole float as it is: most counts, targets and
    capped points are whole, and skipping the decimal rounding for them (39 per score) saves
    a quarter of `score`."""
    if value.__class__ is float and value.is_integer():
        return value
    return round(value, digits)


def score(
    criteria_set: CriteriaSet,
    indicators: Mapping[str, float],
    *,
    period: str,
    targets: Mapping[str, float],
    campaign_days: int | None = None,
) -> ScoreResult:
    """Score one subject: Σ min(achieved / target, 1) × max_points.

    `targets` overrides the defaults, by criterion id or (single-indicator criteria) by the
    indicator name, so `PUT /targets {"indicator": "app_installs"}` works as users expect.
    The publisher scores thousands of subject-periods a second: the period's scales are
    worked out once, not per criterion.
    """
    values = {**indicators, **derived_indicators(indicators)}
    scales = target_scales(
        period=period, teams=values.get("teams", 0.0), campaign_days=campaign_days
    )
    components = []
    for criterion in criteria_set.criteria:
        target = targets.get(criterion.id) if targets else None
        if (
            target is None
            and targets
            and len(criterion.numerator) == 1
            and not criterion.denominator
        ):
            target = targets.get(criterion.numerator[0])
        if target is None:
            target = criterion.target * scales[criterion.basis]
        value = achieved(criterion, values)
        ratio = min(value / target, 1.0) if target > 0 else 1.0
        components.append(
            Component(
                criterion.id,
                criterion.group,
                _rounded(ratio * criterion.max_points, 4),
                criterion.max_points,
                _rounded(value, 6),
                _rounded(target, 6),
            )
        )
    total = round(sum([c.points for c in components]), 2)
    return ScoreResult(score=total, max_score=criteria_set.max_score, components=tuple(components))


def rank_of(scores: Mapping[str, float], subject_id: str) -> tuple[int, int] | None:
    """Competition rank (1 = best; ties share a rank) of a subject among its siblings."""
    if subject_id not in scores:
        return None
    mine = scores[subject_id]
    better = sum(1 for value in scores.values() if value > mine)
    return better + 1, len(scores)


DEFAULT_PROVENANCE = (
    "Our proposal, not an official weighting. Official Letter 2251/BTTTT-CĐSQG (15 June 2023) "
    "announces an evaluation criteria set for the teams but publishes no criteria or weights. "
    "The five groups follow what the letter asks teams to do: be active (not founded on paper "
    "only), go door to door, teach the five basic digital skills, produce outcomes like those "
    "Đồng Tháp and Bình Phước report, and train members. Default targets are per team per "
    "month and scale with the number of teams under a unit; provinces override them with "
    "PUT /v1/targets (chỉ tiêu giao)."
)

DEFAULT_CRITERIA_SET = CriteriaSet(
    version="default@1",
    description="Default evaluation criteria for Community Digital Technology Teams (100 points).",
    provenance=DEFAULT_PROVENANCE,
    criteria=(
        Criterion(
            id="active_member_share",
            group="activity",
            max_points=15,
            numerator=("active_members",),
            denominator=("members",),
            target=0.8,
            description="Share of members who recorded an activity in the period (target 80%).",
        ),
        Criterion(
            id="active_weeks",
            group="activity",
            max_points=10,
            numerator=("active_weeks",),
            target=3,
            basis="per_month",
            description="Weeks with at least one activity (target 3 per month).",
        ),
        Criterion(
            id="households_visited",
            group="reach",
            max_points=15,
            numerator=("households_visited",),
            target=20,
            basis="per_team_month",
            description="Distinct households visited (target 20 per team per month).",
        ),
        Criterion(
            id="citizens_reached",
            group="reach",
            max_points=10,
            numerator=("citizens_reached",),
            target=40,
            basis="per_team_month",
            description="Citizens guided (target 40 per team per month).",
        ),
        Criterion(
            id="skills_taught",
            group="skill_coverage",
            max_points=15,
            numerator=("skills_taught",),
            target=5,
            description="How many of the five basic digital skills were taught (target all 5).",
        ),
        Criterion(
            id="public_service_accounts",
            group="outcomes",
            max_points=4,
            numerator=("public_service_accounts",),
            target=5,
            basis="per_team_month",
            description="Public-service accounts created (target 5 per team per month).",
        ),
        Criterion(
            id="online_applications",
            group="outcomes",
            max_points=4,
            numerator=("online_applications",),
            target=5,
            basis="per_team_month",
            description="Online public-service applications submitted (5 per team per month).",
        ),
        Criterion(
            id="vneid_activations",
            group="outcomes",
            max_points=3,
            numerator=("vneid_activations",),
            target=3,
            basis="per_team_month",
            description="VNeID activations (target 3 per team per month).",
        ),
        Criterion(
            id="app_installs",
            group="outcomes",
            max_points=4,
            numerator=("app_installs",),
            target=5,
            basis="per_team_month",
            description="Local app installs, e.g. e-Đồng Tháp (target 5 per team per month).",
        ),
        Criterion(
            id="ewallet_accounts",
            group="outcomes",
            max_points=4,
            numerator=("ewallet_accounts",),
            target=3,
            basis="per_team_month",
            description="E-wallet accounts opened (target 3 per team per month).",
        ),
        Criterion(
            id="cashless_merchants",
            group="outcomes",
            max_points=3,
            numerator=("cashless_merchants",),
            target=1,
            basis="per_team_month",
            description="Shops taking cashless payment (target 1 per team per month).",
        ),
        Criterion(
            id="ecommerce_products",
            group="outcomes",
            max_points=3,
            numerator=("ecommerce_products",),
            target=1,
            basis="per_team_month",
            description="Products put on e-commerce platforms (target 1 per team per month).",
        ),
        Criterion(
            id="trained_member_share",
            group="capacity",
            max_points=10,
            numerator=("trained_members",),
            denominator=("members",),
            target=1.0,
            description="Share of members trained (target 100%).",
        ),
    ),
)


def criteria_from_json(version: str, data: Mapping[str, object]) -> CriteriaSet:
    raw = data.get("criteria", [])
    assert isinstance(raw, list)
    criteria = tuple(
        Criterion(
            id=c["id"],
            group=c["group"],
            max_points=float(c["max_points"]),
            numerator=tuple(c["numerator"]),
            denominator=tuple(c.get("denominator", ())),
            target=float(c["target"]),
            basis=c.get("basis", "absolute"),
            description=c.get("description", ""),
        )
        for c in raw
    )
    return CriteriaSet(
        version=version,
        criteria=criteria,
        description=str(data.get("description", "")),
        provenance=str(data.get("provenance", "")),
    )


def criteria_to_json(criteria_set: CriteriaSet) -> dict[str, object]:
    return {
        "description": criteria_set.description,
        "provenance": criteria_set.provenance,
        "criteria": [
            {
                "id": c.id,
                "group": c.group,
                "max_points": c.max_points,
                "numerator": list(c.numerator),
                "denominator": list(c.denominator),
                "target": c.target,
                "basis": c.basis,
                "description": c.description,
            }
            for c in criteria_set.criteria
        ],
    }


def next_version(name: str, existing: Iterable[str]) -> str:
    numbers = [
        int(v.split("@", 1)[1])
        for v in existing
        if v.split("@", 1)[0] == name and v.split("@", 1)[1].isdigit()
    ]
    return f"{name}@{max(numbers, default=0) + 1}"


def campaign_days(start: date, end: date) -> int:
    return (end - start).days + 1


# --------------------------------------------------------------------------- in-memory model


@dataclass
class IndicatorModel:
    """Indicators held in memory, with the same semantics as the tables (for tests/recompute)."""

    counters: Counter[CounterKey] = field(default_factory=Counter)
    distinct: Counter[DistinctKey] = field(default_factory=Counter)

    def apply(self, deltas: Deltas) -> None:
        changes = []
        for key, delta in deltas.nonzero_distinct().items():
            self.distinct[key] += delta
            changes.append((key, delta, self.distinct[key]))
            if self.distinct[key] == 0:
                del self.distinct[key]
        self.counters.update(deltas.nonzero_counters())
        self.counters.update(deltas.transitions(changes))
        for counter_key in [k for k, v in self.counters.items() if v == 0]:
            del self.counters[counter_key]


def recompute_from_facts(facts: Iterable[ActivityFact]) -> IndicatorModel:
    """From scratch: every live fact added once."""
    deltas = Deltas()
    for fact in facts:
        deltas.add_fact(fact, +1)
    model = IndicatorModel()
    model.apply(deltas)
    return model


@dataclass
class Ledger:
    """The fact ledger in memory: applies recorded/voided events like the consumer does."""

    states: dict[UUID, FactState] = field(default_factory=dict)

    def record(self, fact: ActivityFact, deltas: Deltas) -> None:
        state, sign = on_recorded(self.states.get(fact.activity_id), fact)
        self.states[fact.activity_id] = state
        if sign:
            deltas.add_fact(fact, sign)

    def void(self, activity_id: UUID, deltas: Deltas) -> None:
        state, sign = on_voided(self.states.get(activity_id))
        self.states[activity_id] = state
        if sign and state.fact is not None:
            deltas.add_fact(state.fact, sign)

    def live_facts(self) -> list[ActivityFact]:
        return [s.fact for s in self.states.values() if s.fact is not None and not s.voided]


def with_path(fact: ActivityFact, path: UnitPathCodes) -> ActivityFact:
    return replace(fact, path=path)
