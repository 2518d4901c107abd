"""The pure `suspicious_activity` checks: what each one counts for a batch of activities, and
the alerts it raises from the counts the handler fetched (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from common.contracts.activities import ActivityRecorded
from common.contracts.teams import UnitPath
from common.i18n import Language
from notifications.domain import (
    VIETNAM_TZ,
    AlertCandidate,
    BackdateWindow,
    HouseholdWindow,
    MemberDay,
    RuleOverride,
    SuspiciousActivityParams,
    backdate_alerts,
    backdate_windows,
    household_alerts,
    household_windows,
    member_day_alerts,
    member_days_to_count,
    resolve_rule,
    suspicious_checked,
)

PROVINCE = "82"
TEAM = UUID("00000000-0000-7000-8000-000000000001")
MEMBER = UUID("00000000-0000-7000-8000-000000000002")
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 in Vietnam
PARAMS = SuspiciousActivityParams(
    max_visits_per_member_day=5,
    household_max_teams=3,
    household_window_hours=6,
    backdate_hours=72,
    backdate_burst_count=4,
    backdate_burst_window_minutes=60,
)


class Rules:
    def __init__(self, *overrides: RuleOverride) -> None:
        self._overrides = list(overrides)

    def params(self, alert_type: str, province: str | None) -> Any | None:
        rule = resolve_rule(alert_type, scope=province or "national", overrides=self._overrides)
        return rule.params if rule.enabled else None


def activity(
    *,
    occurred_at: datetime = NOW,
    recorded_at: datetime | None = None,
    kind: str = "household_visit",
    member_id: UUID | None = MEMBER,
    team_id: UUID = TEAM,
    household_hash: str | None = None,
    province: str = PROVINCE,
) -> ActivityRecorded:
    return ActivityRecorded(
        id=uuid4(),
        team_id=team_id,
        member_id=member_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at or occurred_at,
        kind=kind,  # type: ignore[arg-type]
        household_hash=household_hash,
        unit_path=UnitPath(province=province, district="8201", commune="820101"),
    )


# --------------------------------------------------------------------------- rules in force


def in_english(alerts: list[AlertCandidate]) -> list[Any]:
    """The candidates with their summaries as an English reader sees them."""
    return [replace(a, summary=a.summary.render(Language.EN)) for a in alerts]


def test_only_activities_of_provinces_with_the_rule_on_are_checked() -> None:
    rules = Rules(
        RuleOverride("82", "suspicious_activity", None, {"max_visits_per_member_day": 7}),
        RuleOverride("01", "suspicious_activity", False, {}),
    )
    here, off, elsewhere = activity(), activity(province="01"), activity(province="79")
    checked = suspicious_checked([here, off, elsewhere], rules=rules)
    assert [(a.id, p.max_visits_per_member_day) for a, p in checked] == [
        (here.id, 7),
        (elsewhere.id, 40),  # the built-in default
    ]


# --------------------------------------------------------------------------- member days


def test_one_member_day_per_member_and_local_day_of_household_visits() -> None:
    first = activity(occurred_at=datetime(2026, 11, 19, 16, 59, tzinfo=UTC))  # 23:59 local
    same_day = activity(occurred_at=datetime(2026, 11, 19, 2, 0, tzinfo=UTC))
    next_day = activity(occurred_at=datetime(2026, 11, 19, 17, 0, tzinfo=UTC))  # 00:00 local
    other = uuid4()
    others = activity(member_id=other)
    days = member_days_to_count(
        [
            (first, PARAMS),
            (same_day, PARAMS),
            (next_day, PARAMS),
            (others, PARAMS),
            (activity(member_id=None), PARAMS),  # no member: not counted
            # not a household visit (on a day of its own, so it would show)
            (activity(kind="group_session", occurred_at=NOW + timedelta(days=2)), PARAMS),
        ]
    )
    midnight_19 = datetime(2026, 11, 19, tzinfo=VIETNAM_TZ)
    assert [(d.member_id, d.day_start, d.activity.id) for d in days] == [
        (MEMBER, midnight_19, first.id),  # the batch's first activity of that day
        (MEMBER, midnight_19 + timedelta(days=1), next_day.id),
        (other, datetime(2026, 11, 20, tzinfo=VIETNAM_TZ), others.id),
    ]
    assert days[0].key == (MEMBER, midnight_19)


def test_more_visits_than_plausible_on_one_day_is_suspicious() -> None:
    day = MemberDay(MEMBER, datetime(2026, 11, 20, tzinfo=VIETNAM_TZ), activity(), PARAMS)
    assert member_day_alerts([day], {day.key: 5}) == []  # at the limit: plausible
    assert member_day_alerts([day], {}) == []  # none counted
    assert in_english(member_day_alerts([day], {day.key: 6})) == [
        AlertCandidate(
            alert_type="suspicious_activity",
            subject_type="member",
            subject_id=str(MEMBER),
            period="2026-11-20",
            qualifier="visits_per_day",
            unit_path=("82", "8201", "820101"),
            summary="A member logged 6 household visits on 2026-11-20 (plausible: at most 5).",
            details={"check": "visits_per_day", "team_id": str(TEAM), "visits": 6, "limit": 5},
        )
    ]
    [alert] = member_day_alerts([day], {day.key: 6})
    assert alert.dedupe_key == f"suspicious_activity|member:{MEMBER}#visits_per_day|2026-11-20"


def test_each_member_day_is_judged_by_its_own_count_and_limit() -> None:
    lenient = SuspiciousActivityParams(max_visits_per_member_day=10)
    a = MemberDay(MEMBER, datetime(2026, 11, 20, tzinfo=VIETNAM_TZ), activity(), PARAMS)
    b = MemberDay(uuid4(), datetime(2026, 11, 20, tzinfo=VIETNAM_TZ), activity(), lenient)
    alerts = member_day_alerts([a, b], {a.key: 8, b.key: 8})
    assert [x.subject_id for x in alerts] == [str(MEMBER)]


# --------------------------------------------------------------------------- households


def test_one_window_per_household_and_visit_time() -> None:
    early = activity(household_hash="h1", occurred_at=NOW)
    repeat = activity(household_hash="h1", occurred_at=NOW, team_id=uuid4())
    later = activity(household_hash="h1", occurred_at=NOW + timedelta(hours=1))
    windows = household_windows(
        [(early, PARAMS), (repeat, PARAMS), (later, PARAMS), (activity(), PARAMS)]
    )
    assert [(w.household_hash, w.at) for w in windows] == [
        ("h1", NOW),
        ("h1", NOW + timedelta(hours=1)),
    ]
    assert windows[0].window == ("h1", NOW - timedelta(hours=6), NOW + timedelta(hours=6))


def test_a_household_reported_by_too_many_teams_is_suspicious() -> None:
    window = HouseholdWindow("h1", datetime(2026, 11, 19, 18, 0, tzinfo=UTC), activity(), PARAMS)
    assert household_alerts([window], [2]) == []
    assert in_english(household_alerts([window], [3])) == [  # the limit itself is suspicious
        AlertCandidate(
            alert_type="suspicious_activity",
            subject_type="household",
            subject_id="h1",
            period="2026-11-20",  # the local day of the visit
            qualifier="household_many_teams",
            unit_path=("82", "8201", "820101"),
            summary="One household was reported visited by 3 teams within 6 hours.",
            details={
                "check": "household_many_teams",
                "teams": 3,
                "limit": 3,
                "window_hours": 6.0,
            },
        )
    ]


def test_household_counts_are_matched_to_windows_in_order() -> None:
    a = HouseholdWindow("a", NOW, activity(), PARAMS)
    b = HouseholdWindow("b", NOW, activity(), PARAMS)
    assert [x.subject_id for x in household_alerts([a, b], [1, 4])] == ["b"]
    with pytest.raises(ValueError):
        household_alerts([a, b], [4])


# --------------------------------------------------------------------------- backdating


def test_a_window_ends_at_the_latest_backdated_event_per_team_and_day_of_recording() -> None:
    def backdated(recorded_at: datetime, *, by: timedelta = timedelta(hours=73)) -> Any:
        return (activity(occurred_at=recorded_at - by, recorded_at=recorded_at), PARAMS)

    first = backdated(NOW)
    latest = backdated(NOW + timedelta(minutes=30))
    not_backdated = backdated(NOW + timedelta(hours=1), by=timedelta(hours=72))  # not more
    next_day = backdated(datetime(2026, 11, 20, 17, 0, tzinfo=UTC))  # 00:00 local, 21st
    windows = backdate_windows([first, latest, not_backdated, next_day])
    assert [(w.team_id, w.day, w.activity.id) for w in windows] == [
        (TEAM, "2026-11-20", latest[0].id),
        (TEAM, "2026-11-21", next_day[0].id),
    ]
    end = NOW + timedelta(minutes=30)
    assert windows[0].window == (TEAM, end - timedelta(minutes=60), end, 72.0)


def test_many_backdated_events_in_a_burst_are_suspicious() -> None:
    window = BackdateWindow(TEAM, "2026-11-20", activity(), PARAMS)
    assert backdate_alerts([window], [3]) == []
    assert in_english(backdate_alerts([window], [4])) == [  # the limit itself is suspicious
        AlertCandidate(
            alert_type="suspicious_activity",
            subject_type="team",
            subject_id=str(TEAM),
            period="2026-11-20",
            qualifier="backdated_burst",
            unit_path=("82", "8201", "820101"),
            summary="A team recorded 4 activities backdated by more than 72 hours "
            "within 60 minutes.",
            details={"check": "backdated_burst", "events": 4, "limit": 4, "backdate_hours": 72.0},
        )
    ]
    with pytest.raises(ValueError):
        backdate_alerts([window], [])
