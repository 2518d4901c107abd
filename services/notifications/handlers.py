"""What notifications does with the events it consumes, and the scheduled inactivity sweep.

The consumer runner hands each batch over once (processed_events dedupes event ids); the
handlers add their own idempotency on business keys (activity id, score version, alert dedupe
key) because producers may re-publish the same fact under a new event id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
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
    VIETNAM_TZ,
    AlertCandidate,
    Clock,
    OpenAlert,
    ScoreState,
    SuspiciousActivityParams,
    TeamActivity,
    comparison_period,
    evaluate_score,
    evaluate_team_inactivity,
    inactive_team_key,
    is_backdated,
    local_day,
    next_score_state,
    score_alert_keys,
    unit_path_codes,
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


def _path(activity: ActivityRecorded) -> tuple[str, ...]:
    p = activity.unit_path
    return unit_path_codes(p.province, p.district, p.commune, p.village)


def _team_touches(activities: Sequence[ActivityRecorded]) -> list[dict[str, Any]]:
    latest: dict[UUID, ActivityRecorded] = {}
    for a in activities:
        if a.team_id not in latest or a.occurred_at > latest[a.team_id].occurred_at:
            latest[a.team_id] = a
    return [
        {
            "id": team_id,
            "unit_path": list(_path(a)),
            "last_activity_at": a.occurred_at,
            "first_seen_at": a.recorded_at,
        }
        for team_id, a in sorted(latest.items())
    ]


async def suspicious_candidates(
    uow: UnitOfWork, fresh: Sequence[ActivityRecorded], *, book: RuleBook
) -> list[AlertCandidate]:
    """The three checks of fabricated-looking activity, each one query for the whole batch."""
    checked = [
        (a, params)
        for a in fresh
        if (params := book.params("suspicious_activity", a.unit_path.province)) is not None
    ]
    return [
        *await _member_days(uow, checked),
        *await _households(uow, checked),
        *await _backdated(uow, checked),
    ]


Checked = Sequence[tuple[ActivityRecorded, SuspiciousActivityParams]]


async def _member_days(uow: UnitOfWork, checked: Checked) -> list[AlertCandidate]:
    keys: dict[tuple[UUID, datetime], tuple[ActivityRecorded, SuspiciousActivityParams]] = {}
    for a, params in checked:
        if a.member_id is not None and a.kind == "household_visit":
            start = datetime.combine(local_day(a.occurred_at), datetime.min.time(), VIETNAM_TZ)
            keys.setdefault((a.member_id, start), (a, params))
    counts = await adapters.member_day_visits(uow.session, list(keys))
    candidates = []
    for (member_id, start), (a, params) in keys.items():
        visits = counts.get((member_id, start), 0)
        if visits <= params.max_visits_per_member_day:
            continue
        day = start.date().isoformat()
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="member",
                subject_id=str(member_id),
                period=day,
                qualifier="visits_per_day",
                unit_path=_path(a),
                summary=f"A member logged {visits} household visits on {day} "
                f"(plausible: at most {params.max_visits_per_member_day}).",
                details={
                    "check": "visits_per_day",
                    "team_id": str(a.team_id),
                    "visits": visits,
                    "limit": params.max_visits_per_member_day,
                },
            )
        )
    return candidates


async def _households(uow: UnitOfWork, checked: Checked) -> list[AlertCandidate]:
    keys = {
        (a.household_hash, a.occurred_at): (a, params)
        for a, params in checked
        if a.household_hash is not None
    }
    windows = [
        (
            household,
            at - timedelta(hours=p.household_window_hours),
            at + timedelta(hours=p.household_window_hours),
        )
        for (household, at), (_, p) in keys.items()
    ]
    counts = await adapters.household_team_counts(uow.session, windows)
    candidates = []
    for teams, ((household, at), (a, params)) in zip(counts, keys.items(), strict=True):
        if teams < params.household_max_teams:
            continue
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="household",
                subject_id=household,  # a keyed hash, never the partner's reference
                period=local_day(at).isoformat(),
                qualifier="household_many_teams",
                unit_path=_path(a),
                summary=f"One household was reported visited by {teams} teams within "
                f"{params.household_window_hours:g} hours.",
                details={
                    "check": "household_many_teams",
                    "teams": teams,
                    "limit": params.household_max_teams,
                    "window_hours": params.household_window_hours,
                },
            )
        )
    return candidates


async def _backdated(uow: UnitOfWork, checked: Checked) -> list[AlertCandidate]:
    # per (team, local day of recording): the latest backdated event of the batch
    latest: dict[tuple[UUID, str], tuple[ActivityRecorded, SuspiciousActivityParams]] = {}
    for a, params in checked:
        if not is_backdated(
            occurred_at=a.occurred_at, recorded_at=a.recorded_at, hours=params.backdate_hours
        ):
            continue
        key = (a.team_id, local_day(a.recorded_at).isoformat())
        if key not in latest or a.recorded_at > latest[key][0].recorded_at:
            latest[key] = (a, params)
    windows = [
        (
            a.team_id,
            a.recorded_at - timedelta(minutes=p.backdate_burst_window_minutes),
            a.recorded_at,
            p.backdate_hours,
        )
        for a, p in latest.values()
    ]
    counts = await adapters.backdated_counts(uow.session, windows)
    candidates = []
    for count, ((team_id, day), (a, params)) in zip(counts, latest.items(), strict=True):
        if count < params.backdate_burst_count:
            continue
        candidates.append(
            AlertCandidate(
                alert_type="suspicious_activity",
                subject_type="team",
                subject_id=str(team_id),
                period=day,
                qualifier="backdated_burst",
                unit_path=_path(a),
                summary=f"A team recorded {count} activities backdated by more than "
                f"{params.backdate_hours:g} hours within "
                f"{params.backdate_burst_window_minutes:g} minutes.",
                details={
                    "check": "backdated_burst",
                    "events": count,
                    "limit": params.backdate_burst_count,
                    "backdate_hours": params.backdate_hours,
                },
            )
        )
    return candidates


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
