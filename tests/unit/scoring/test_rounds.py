"""The rules of an evaluation round's moves, and a report's headers in both languages."""

from __future__ import annotations

from datetime import date

import pytest

from common.i18n import Language
from scoring.domain import flagged_team
from scoring.domain.reports import INDICATOR_COLUMNS, report_columns
from scoring.domain.rounds import (
    RoundAction,
    RoundState,
    ScheduleStatus,
    TransitionRefused,
    schedule_status,
    transition,
)

S, A = RoundState, RoundAction
ALLOWED = {
    (S.OPEN, A.SUBMIT): S.UNDER_REVIEW,
    (S.REOPENED, A.SUBMIT): S.UNDER_REVIEW,
    (S.UNDER_REVIEW, A.APPROVE): S.APPROVED,
    (S.UNDER_REVIEW, A.REOPEN): S.REOPENED,
    (S.APPROVED, A.REOPEN): S.REOPENED,
}


@pytest.mark.parametrize("state", list(RoundState))
@pytest.mark.parametrize("action", list(RoundAction))
def test_every_state_and_action(state: RoundState, action: RoundAction) -> None:
    expected = ALLOWED.get((state, action))
    if expected is None:
        with pytest.raises(TransitionRefused, match=f"that is {state.value} cannot be"):
            transition(state, action, reason="a reason")
        return
    move = transition(state, action, reason="a reason")
    assert (move.from_state, move.to_state) == (state, expected)
    assert move.approves == (expected is S.APPROVED)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_reopening_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(TransitionRefused, match="needs a reason"):
        transition(S.APPROVED, A.REOPEN, reason=reason)


def test_every_column_has_distinct_headers_in_both_languages() -> None:
    columns = report_columns(["activity_rate", "reach"])
    for language in Language:
        headers = [column.label.render(language) for column in columns]
        assert all(headers) and len(set(headers)) == len(headers)
    assert [c.key for c in columns[-len(INDICATOR_COLUMNS) :]] == [c.key for c in INDICATOR_COLUMNS]


@pytest.mark.parametrize(
    ("state", "approved_on", "today", "expected"),
    [
        (None, None, 10, ScheduleStatus.MISSING),
        (S.APPROVED, 9, 12, ScheduleStatus.ON_TIME),
        (S.APPROVED, 10, 12, ScheduleStatus.ON_TIME),  # on the due day
        (S.APPROVED, 11, 12, ScheduleStatus.LATE),
        (S.REOPENED, None, 11, ScheduleStatus.OVERDUE),  # a reopened round is not approved
        (S.UNDER_REVIEW, None, 10, ScheduleStatus.PENDING),
        (S.OPEN, None, 11, ScheduleStatus.OVERDUE),
    ],
)
def test_where_a_unit_stands_with_its_review(
    state: RoundState | None, approved_on: int | None, today: int, expected: ScheduleStatus
) -> None:
    def day(n: int) -> date:
        return date(2026, 12, n)

    status = schedule_status(
        state=state,
        due_on=day(10) if state else None,
        approved_on=day(approved_on) if approved_on else None,
        today=day(today),
    )
    assert status is expected


def test_the_team_a_suspicious_activity_alert_names() -> None:
    assert flagged_team(subject_type="team", subject_id="t1", details={}) == "t1"
    assert flagged_team(subject_type="member", subject_id="m1", details={"team_id": "t2"}) == "t2"
    assert flagged_team(subject_type="member", subject_id="m1", details={}) is None
    assert flagged_team(subject_type="household", subject_id="h", details={"teams": 4}) is None
