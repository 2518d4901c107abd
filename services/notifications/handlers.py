"""What notifications does with the events it consumes, and the scheduled inactivity sweep.

The consumer runner hands each batch over once (processed_events dedupes event ids); the
handlers add their own idempotency on business keys (activity id, score version, alert dedupe
key) because producers may re-publish the same fact under a new event id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping

from common.consumer import Handler
from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.scoring import ScoreUpdated
from common.contracts.teams import TeamChanged
from common.db import UnitOfWork
from common.envelope import InboundEvent
from notifications import adapters
from notifications.domain import (
    AlertCandidate,
    Clock,
    OpenAlert,
    ScoreState,
    TeamActivity,
    activity_unit_path,
    backdate_alerts,
    backdate_windows,
    comparison_period,
    evaluate_score,
    evaluate_team_inactivity,
    household_alerts,
    household_windows,
    inactive_team_key,
    member_day_alerts,
    member_days_to_count,
    next_score_state,
    score_alert_keys,
    suspicious_checked,
)
from notifications.use_cases import (
    RuleBook,
    raise_alerts,
    resolve_alerts,
)

log = logging.getLogger(__name__)


def notifications_handler(clock: Clock) -> Handler:
    """One batch handler for the three topics: teams first, then activities, then scores."""

    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        now = clock()
        teams = [e.parse(TeamChanged) for e in events if e.type == TeamChanged.CE_TYPE]
        if teams:
            await on_teams_changed(uow, teams, now=now)
        activities = [
            e.parse(ActivityRecorded) for e in events if e.type == ActivityRecorded.CE_TYPE
        ]
        if activities:
            await on_activities(uow, activities, now=now)
        voids = [e.parse(ActivityVoided) for e in events if e.type == ActivityVoided.CE_TYPE]
        if voids:
            await on_activities_voided(uow, voids, now=now)
        for event in events:
            if event.type == ScoreUpdated.CE_TYPE:
                await on_score_updated(uow, event.parse(ScoreUpdated), now=now)

    return handle


# --------------------------------------------------------------------------- teams


async def on_teams_changed(uow: UnitOfWork, teams: Sequence[TeamChanged], *, now: datetime) -> None:
    await adapters.upsert_teams(uow.session, teams)
    await evaluate_inactivity(uow, now=now, team_ids=sorted({t.id for t in teams}))


# --------------------------------------------------------------------------- activities


async def on_activities(
    uow: UnitOfWork, activities: Sequence[ActivityRecorded], *, now: datetime
) -> None:
    unique = list({a.id: a for a in activities}.values())  # a batch may repeat one activity
    rows = [
        {
            "activity_id": a.id,
            "team_id": a.team_id,
            "member_id": a.member_id,
            "kind": a.kind,
            "household_hash": a.household_hash,
            "occurred_at": a.occurred_at,
            "recorded_at": a.recorded_at,
            "backdated_hours": max((a.recorded_at - a.occurred_at).total_seconds() / 3600, 0.0),
        }
        for a in unique
    ]
    new_ids = await adapters.log_activities(uow.session, rows)
    fresh = [a for a in unique if a.id in new_ids]
    if not fresh:
        return
    await adapters.touch_teams(uow.session, _team_touches(fresh))
    book = await RuleBook.load(uow, provinces={a.unit_path.province for a in fresh})
    await raise_alerts(uow, await suspicious_candidates(uow, fresh, book=book), now=now)
    await evaluate_inactivity(uow, now=now, team_ids=sorted({a.team_id for a in fresh}))


async def on_activities_voided(
    uow: UnitOfWork, voids: Sequence[ActivityVoided], *, now: datetime
) -> None:
    """Voided activities stop counting; a team whose only recent work was voided may turn
    inactive again. Suspicious-activity alerts already raised stay for a person to review."""
    team_ids = await adapters.void_activities(
        uow.session,
        [
            {"activity_id": v.id, "team_id": v.team_id, "voided_at": v.voided_at}
            for v in {v.id: v for v in voids}.values()  # one row per id in an upsert
        ],
    )
    await evaluate_inactivity(uow, now=now, team_ids=sorted(team_ids))


def _team_touches(activities: Sequence[ActivityRecorded]) -> list[dict[str, Any]]:
    latest: dict[UUID, ActivityRecorded] = {}
    for a in activities:
        if a.team_id not in latest or a.occurred_at > latest[a.team_id].occurred_at:
            latest[a.team_id] = a
    return [
        {
            "id": team_id,
            "unit_path": list(activity_unit_path(a)),
            "last_activity_at": a.occurred_at,
            "first_seen_at": a.recorded_at,
        }
        for team_id, a in sorted(latest.items())
    ]


async def suspicious_candidates(
    uow: UnitOfWork, fresh: Sequence[ActivityRecorded], *, book: RuleBook
) -> list[AlertCandidate]:
    """The three checks of fabricated-looking activity, each one query for the whole batch:
    the domain says what to count and judges the counts."""
    checked = suspicious_checked(fresh, rules=book)
    member_days = member_days_to_count(checked)
    households = household_windows(checked)
    backdates = backdate_windows(checked)
    session = uow.session
    return [
        *member_day_alerts(
            member_days, await adapters.member_day_visits(session, [m.key for m in member_days])
        ),
        *household_alerts(
            households,
            await adapters.household_team_counts(session, [h.window for h in households]),
        ),
        *backdate_alerts(
            backdates, await adapters.backdated_counts(session, [b.window for b in backdates])
        ),
    ]


# --------------------------------------------------------------------------- team_inactive


async def evaluate_inactivity(
    uow: UnitOfWork, *, now: datetime, team_ids: Sequence[UUID] | None = None
) -> tuple[int, int]:
    """Raise `team_inactive` for silent teams and resolve it for active (or dissolved) ones.

    `team_ids=None` is the full sweep. Returns (raised, resolved).
    """
    teams = await adapters.teams_for_sweep(uow.session, team_ids=team_ids)
    book = await RuleBook.load(uow, provinces={_province(t) for t in teams})
    open_alerts = await _active_inactivity_alerts(uow, team_ids=team_ids)
    changes = evaluate_team_inactivity(
        [_team_activity(t) for t in teams],
        rules=book,
        open_alerts=[_open_alert(row) for row in open_alerts],
        now=now,
    )
    raised = await raise_alerts(uow, changes.raised, now=now)
    resolved = set(changes.resolved)
    cleared = [row for row in open_alerts if row["id"] in resolved]
    return raised, await resolve_alerts(uow, cleared, now=now)


def _province(team: RowMapping) -> str | None:
    return team["unit_path"][0] if team["unit_path"] else None


def _team_activity(team: RowMapping) -> TeamActivity:
    return TeamActivity(
        id=team["id"],
        code=team["code"],
        status=team["status"],
        unit_path=tuple(team["unit_path"]),
        last_activity_at=team["last_activity_at"],
        established_on=team["established_on"],
        first_seen_at=team["first_seen_at"],
    )


def _open_alert(row: RowMapping) -> OpenAlert:
    return OpenAlert(id=row["id"], dedupe_key=row["dedupe_key"], details=row["details"])


async def _active_inactivity_alerts(
    uow: UnitOfWork, *, team_ids: Sequence[UUID] | None
) -> list[RowMapping]:
    if team_ids is not None:
        return await adapters.active_alerts(
            uow.session, dedupe_keys=[inactive_team_key(t) for t in team_ids]
        )
    return await adapters.active_alerts_of_type(uow.session, "team_inactive")


async def sweep(uow: UnitOfWork, *, now: datetime) -> tuple[int, int] | None:
    """The scheduled full sweep; None when another replica holds the sweep lock."""
    if not await adapters.try_sweep_lock(uow.session):
        return None
    result = await evaluate_inactivity(uow, now=now)
    await uow.commit()
    return result


# --------------------------------------------------------------------------- scores


async def on_score_updated(uow: UnitOfWork, score: ScoreUpdated, *, now: datetime) -> None:
    """Load what `evaluate_score` judges the score on, then store its outcome."""
    previous = _score_state(
        await adapters.score_state_of(
            uow.session,
            subject_type=score.subject_type,
            subject_id=score.subject_id,
            period=score.period,
        )
    )
    if next_score_state(previous, score) is None:
        return  # a replay or an out-of-order older version: already judged
    unit_path = tuple(
        await adapters.unit_path_of(
            uow.session, subject_type=score.subject_type, code=score.subject_id
        )
    )
    province = unit_path[0] if unit_path else None
    book = await RuleBook.load(uow, provinces=[province])
    earlier = comparison_period(score, rules=book, province=province)
    previous_period_state = (
        _score_state(
            await adapters.score_state_of(
                uow.session,
                subject_type=score.subject_type,
                subject_id=score.subject_id,
                period=earlier,
            )
        )
        if earlier is not None
        else None
    )
    open_alerts = await adapters.active_alerts(
        uow.session, dedupe_keys=score_alert_keys(score, rules=book, unit_path=unit_path)
    )
    evaluation = evaluate_score(
        score,
        rules=book,
        unit_path=unit_path,
        previous=previous,
        previous_period_state=previous_period_state,
        open_alerts=[_open_alert(row) for row in open_alerts],
    )
    if evaluation.state is None or not await adapters.save_score_state(
        uow.session,
        subject_type=score.subject_type,
        subject_id=score.subject_id,
        period=score.period,
        version=evaluation.state.version,
        score=evaluation.state.score,
    ):
        return  # a newer version was stored meanwhile: it is the one judged
    await raise_alerts(uow, evaluation.raised, now=now)
    resolved = set(evaluation.resolved)
    await resolve_alerts(uow, [row for row in open_alerts if row["id"] in resolved], now=now)


def _score_state(row: RowMapping | None) -> ScoreState | None:
    return ScoreState(version=row["version"], score=row["score"]) if row else None
