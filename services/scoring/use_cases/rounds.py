"""Evaluation rounds: open one, move it (submit, approve, reopen), read it with its history.

Every move is one transaction: the round's new state, the move's record (who, when, why), on
approval the frozen snapshot and summary, and the `EvaluationRoundChanged` event (outbox)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from common.contracts.scoring import EvaluationRoundChanged
from common.db import UnitOfWork
from common.envelope import OutboundEvent
from common.telemetry import current_trace_ids
from scoring import adapters
from scoring.domain import local_time
from scoring.domain.rounds import (
    CommendationRule,
    EvaluationRound,
    RoundAction,
    RoundKey,
    RoundState,
    ScheduleStatus,
    Transition,
    schedule_status,
    transition,
)
from scoring.use_cases import SOURCE


class RoundNotFound(LookupError):
    pass


class UnknownUnit(LookupError):
    pass


class UnknownCriteriaSet(LookupError):
    pass


class RoundExists(ValueError):
    def __init__(self, existing: EvaluationRound) -> None:
        super().__init__(f"a round already reviews this unit and period: {existing.id}")
        self.existing = existing


async def open_round(
    uow: UnitOfWork,
    *,
    level: str,
    unit_code: str,
    period: str,
    criteria_set: str | None,
    due_on: date,
    actor: str,
) -> EvaluationRound:
    session = uow.session
    if criteria_set is None:
        criteria_set = (await adapters.active_criteria_set(session)).version
    elif await adapters.criteria_set(session, criteria_set) is None:
        raise UnknownCriteriaSet(criteria_set)
    if not await adapters.unit_known(session, level=level, unit_code=unit_code):
        raise UnknownUnit(f"{level} {unit_code}")
    key = RoundKey(level=level, unit_code=unit_code, period=period, criteria_set=criteria_set)
    now = datetime.now(UTC)
    opened = await adapters.insert_round(session, round_id=uuid7(), key=key, due_on=due_on, at=now)
    if opened is None:
        existing = await adapters.round_for(session, key)
        assert existing is not None  # the unique key refused the insert
        raise RoundExists(existing)
    await adapters.record_transition(
        session,
        round_id=opened.id,
        action="open",
        from_state=None,
        to_state=opened.state.value,
        actor=actor,
        reason=None,
        trace_id=_trace_id(),
        at=now,
    )
    _publish(uow, opened, previous=None, actor=actor, reason=None)
    await uow.commit()
    return opened


async def move_round(
    uow: UnitOfWork, round_id: UUID, action: RoundAction, *, reason: str | None, actor: str
) -> EvaluationRound:
    """Apply `action`; `TransitionRefused` (nothing changed) if the round's state forbids it."""
    session = uow.session
    current = await adapters.get_round(session, round_id, for_update=True)
    if current is None:
        raise RoundNotFound(str(round_id))
    move = transition(current.state, action, reason=reason)
    now = datetime.now(UTC)
    moved = await adapters.move_round(
        session, current, move, actor=actor, trace_id=_trace_id(), at=now
    )
    if move.approves:
        await _freeze(session, moved, actor=actor, at=now)
    _publish(uow, moved, previous=move, actor=actor, reason=reason)
    await uow.commit()
    return moved


async def _freeze(
    session: AsyncSession, approved: EvaluationRound, *, actor: str, at: datetime
) -> None:
    frozen = await adapters.freeze_snapshot(session, approved, approval=approved.approvals)
    await adapters.freeze_member_snapshot(session, approved, approval=approved.approvals)
    summary = await adapters.unit_summary(
        session, level=approved.level, unit_code=approved.unit_code
    )
    await adapters.record_approval(
        session,
        round_id=approved.id,
        approval=approved.approvals,
        at=at,
        actor=actor,
        subjects_frozen=frozen,
        summary=summary,
    )


def _publish(
    uow: UnitOfWork,
    evaluation_round: EvaluationRound,
    *,
    previous: Transition | None,
    actor: str,
    reason: str | None,
) -> None:
    event = EvaluationRoundChanged(
        id=evaluation_round.id,
        level=evaluation_round.level,
        unit_code=evaluation_round.unit_code,
        period=evaluation_round.period,
        criteria_set=evaluation_round.criteria_set,
        due_on=evaluation_round.due_on,
        state=evaluation_round.state.value,
        previous_state=previous.from_state.value if previous else None,
        approvals=evaluation_round.approvals,
        actor=actor,
        reason=reason,
        version=evaluation_round.version,
        changed_at=evaluation_round.updated_at,
    )
    uow.publish(
        OutboundEvent.of(
            event,
            source=SOURCE,
            subject=f"{evaluation_round.level}:{evaluation_round.unit_code}",
        )
    )


def _trace_id() -> str | None:
    ids = current_trace_ids()
    return ids[0] if ids else None


async def round_view(session: AsyncSession, evaluation_round: EvaluationRound) -> dict[str, Any]:
    """The round with its history; once approved, its latest snapshot against the live scores:
    how many subjects changed since, and the unit's score then and now."""
    approvals = await adapters.approvals_of(session, evaluation_round.id)
    view: dict[str, Any] = {
        **round_summary(evaluation_round),
        "transitions": await adapters.transitions_of(session, evaluation_round.id),
        "snapshots": [
            {
                "approval": a["approval"],
                "approved_at": a["approved_at"],
                "actor": a["actor"],
                "subjects": a["subjects"],
            }
            for a in approvals
        ],
        "latest_snapshot": None,
    }
    if approvals:
        latest = approvals[-1]["approval"]
        frozen = await adapters.frozen_score(
            session,
            round_id=evaluation_round.id,
            approval=latest,
            subject=_unit_key(evaluation_round),
        )
        live = await adapters.score_row(
            session,
            subject_type=evaluation_round.level,
            subject_id=evaluation_round.unit_code,
            period=evaluation_round.period,
            criteria_set=evaluation_round.criteria_set,
        )
        view["latest_snapshot"] = {
            "approval": latest,
            "frozen": evaluation_round.state is RoundState.APPROVED,
            "score": frozen,
            "live_score": live["score"] if live is not None else None,
            "late_changes": await adapters.late_changes(
                session, round_id=evaluation_round.id, approval=latest
            ),
        }
    return view


def _unit_key(evaluation_round: EvaluationRound) -> tuple[str, str]:
    return evaluation_round.level, evaluation_round.unit_code


def round_summary(evaluation_round: EvaluationRound) -> dict[str, Any]:
    return {
        "id": evaluation_round.id,
        "level": evaluation_round.level,
        "unit_code": evaluation_round.unit_code,
        "period": evaluation_round.period,
        "criteria_set": evaluation_round.criteria_set,
        "due_on": evaluation_round.due_on,
        "state": evaluation_round.state.value,
        "approvals": evaluation_round.approvals,
        "version": evaluation_round.version,
        "created_at": evaluation_round.created_at,
        "updated_at": evaluation_round.updated_at,
    }


async def schedule(
    session: AsyncSession, *, level: str, period: str, criteria_set: str, today: date
) -> dict[str, Any]:
    """Which units of `level` approved their round for `period` on time, late, or not at all
    (yet), and the share approved on time (the reporting rate)."""
    units = []
    for row in await adapters.schedule_rows(
        session, level=level, period=period, criteria_set=criteria_set
    ):
        state = RoundState(row["state"]) if row["state"] else None
        approved_at = row["approved_at"] if state is RoundState.APPROVED else None
        status = schedule_status(
            state=state,
            due_on=row["due_on"],
            approved_on=local_time(approved_at).date() if approved_at else None,
            today=today,
        )
        units.append(
            {
                "unit_code": row["unit_code"],
                "name": row["name"],
                "status": status.value,
                "round_id": row["round_id"],
                "state": state.value if state else None,
                "due_on": row["due_on"],
                "approved_at": approved_at,
            }
        )
    counts = {status.value: 0 for status in ScheduleStatus}
    for unit in units:
        counts[unit["status"]] += 1
    return {
        "level": level,
        "period": period,
        "criteria_set": criteria_set,
        "as_of": today,
        "units": len(units),
        "counts": counts,
        "reporting_rate": round(counts["on_time"] / len(units), 4) if units else None,
        "items": units,
    }


def _approval(evaluation_round: EvaluationRound, approval: int | None) -> int:
    chosen = approval or evaluation_round.approvals
    if chosen < 1:
        raise NotApproved(f"round {evaluation_round.id} has not been approved")
    return chosen


async def member_candidates(
    session: AsyncSession,
    evaluation_round: EvaluationRound,
    *,
    rule: CommendationRule,
    approval: int | None = None,
) -> list[dict[str, Any]]:
    """The most active members under the round's unit in its period, frozen at its latest (or
    `approval`-th) approval: members have no score, so they rank by activities, then households
    reached, then citizens reached; `rule.min_score` does not apply to them. Named by id and
    team (their names and phones stay in the teams service)."""
    rows = await adapters.member_candidate_rows(
        session,
        round_id=evaluation_round.id,
        approval=_approval(evaluation_round, approval),
        rule=rule,
    )
    return [
        {
            "member_id": row["member_id"],
            "team_id": row["team_id"],
            "team_code": row["team_code"],
            "team_name": row["team_name"],
            "activities": int(row["activities"]),
            "households": int(row["households"]),
            "citizens_reached": int(row["citizens_reached"]),
            "rank": int(row["rank"]),
            "rank_of": int(row["rank_of"]),
        }
        for row in rows
    ]


class NotApproved(ValueError):
    """Candidates come from an approved round's snapshot."""


async def candidates(
    session: AsyncSession,
    evaluation_round: EvaluationRound,
    *,
    level: str,
    rule: CommendationRule,
    approval: int | None = None,
) -> list[dict[str, Any]]:
    """The commendation candidates of `level` under the round's unit, by `rule`, from its
    latest (or `approval`-th) snapshot."""
    rows = await adapters.candidate_rows(
        session,
        round_id=evaluation_round.id,
        approval=_approval(evaluation_round, approval),
        level=level,
        rule=rule,
    )
    return [
        {
            "level": row["subject_type"],
            "code": row["code"],
            "name": row["name"],
            "parent_code": row["parent_code"],
            "parent_name": row["parent_name"],
            "score": row["score"],
            "rank": row["rank"],
            "rank_of": row["rank_of"],
            "activities": int(row["activities"] or 0),
        }
        for row in rows
    ]
