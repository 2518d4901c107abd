"""Evaluation rounds (sơ kết, tổng kết): the review of a unit's scores for a period, and the rule
of how a round moves. Pure: the adapters store rounds, the use cases apply these rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from common.i18n import Message, _


class RoundState(StrEnum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REOPENED = "reopened"


class RoundAction(StrEnum):
    SUBMIT = "submit"  # the unit hands its round in for review
    APPROVE = "approve"  # the review is final: the scores are frozen in a snapshot
    REOPEN = "reopen"  # back for corrections, with a reason; earlier approvals stay in history


# (state, action) -> the state it leads to; anything else is refused.
TRANSITIONS: dict[tuple[RoundState, RoundAction], RoundState] = {
    (RoundState.OPEN, RoundAction.SUBMIT): RoundState.UNDER_REVIEW,
    (RoundState.REOPENED, RoundAction.SUBMIT): RoundState.UNDER_REVIEW,
    (RoundState.UNDER_REVIEW, RoundAction.APPROVE): RoundState.APPROVED,
    (RoundState.UNDER_REVIEW, RoundAction.REOPEN): RoundState.REOPENED,
    (RoundState.APPROVED, RoundAction.REOPEN): RoundState.REOPENED,
}
MAX_REASON_LENGTH = 2000


class TransitionRefused(ValueError):
    """The action does not apply to the round in its present state, or lacks its reason."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message  # rendered in the reader's language by the API


@dataclass(frozen=True)
class Transition:
    action: RoundAction
    from_state: RoundState
    to_state: RoundState
    reason: str | None

    @property
    def approves(self) -> bool:
        return self.to_state is RoundState.APPROVED


def transition(state: RoundState, action: RoundAction, *, reason: str | None) -> Transition:
    """The move `action` makes from `state`, or `TransitionRefused` saying why not."""
    to_state = TRANSITIONS.get((state, action))
    if to_state is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is state)
        raise TransitionRefused(
            _(
                "A round that is {state} cannot be {action}; it can be: {allowed}.",
                state=state.value,
                action=_past(action),
                allowed=", ".join(allowed),
            )
            if allowed
            else _(
                "A round that is {state} cannot be {action}.",
                state=state.value,
                action=_past(action),
            )
        )
    if action is RoundAction.REOPEN and not (reason and reason.strip()):
        raise TransitionRefused(_("Reopening a round needs a reason."))
    return Transition(action=action, from_state=state, to_state=to_state, reason=reason)


def _past(action: RoundAction) -> str:
    return {"submit": "submitted", "approve": "approved", "reopen": "reopened"}[action.value]


@dataclass(frozen=True)
class EvaluationRound:
    id: UUID
    level: str
    unit_code: str
    period: str
    criteria_set: str
    due_on: date
    state: RoundState
    approvals: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RoundKey:
    """What a round reviews: one per unit, period and criteria set."""

    level: str
    unit_code: str
    period: str
    criteria_set: str


class ScheduleStatus(StrEnum):
    """Where a unit stands with its review of a period (the DHIS2 "reporting rate" idea)."""

    ON_TIME = "on_time"  # approved, on or before the due date
    LATE = "late"  # approved after the due date
    OVERDUE = "overdue"  # not approved (or reopened), and the due date has passed
    PENDING = "pending"  # not approved yet, still before the due date
    MISSING = "missing"  # no round opened for it


def schedule_status(
    *, state: RoundState | None, due_on: date | None, approved_on: date | None, today: date
) -> ScheduleStatus:
    """`approved_on`: the local (Asia/Ho_Chi_Minh) day of the approval in force, if any."""
    if state is None or due_on is None:
        return ScheduleStatus.MISSING
    if state is RoundState.APPROVED and approved_on is not None:
        return ScheduleStatus.ON_TIME if approved_on <= due_on else ScheduleStatus.LATE
    return ScheduleStatus.OVERDUE if today > due_on else ScheduleStatus.PENDING


@dataclass(frozen=True)
class CommendationRule:
    """Who may be proposed for commendation (khen thưởng) from a round: the best `top` subjects
    of a level by score, each with at least `min_score` points and `min_activities`
    activities in the period, and, for teams, no unresolved suspicious-activity alert."""

    top: int = 10
    min_score: float = 50.0
    min_activities: int = 1
    exclude_flagged: bool = True
