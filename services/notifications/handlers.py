"""What notifications does with the events it consumes, and the scheduled sweep.

The consumer runner hands each batch over once (processed_events dedupes event ids); the
handlers add their own idempotency on business keys (activity id, score version, alert dedupe
key) because producers may re-publish the same fact under a new event id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping

from common.consumer import Handler
from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.scoring import EvaluationRoundChanged, ScoreUpdated
from common.contracts.teams import TeamChanged
from common.contracts.wire import ScoreUpdatedWire, parse_wire
from common.db import UnitOfWork
from common.envelope import InboundEvent
from notifications import adapters
from notifications.domain import (
    AlertCandidate,
    Clock,
    OpenAlert,
    ReviewRound,
    ScoreKey,
    ScoreRecord,
    SubjectKey,
    TeamActivity,
    activity_unit_path,
    backdate_alerts,
    backdate_windows,
    comparison_period,
    evaluate_overdue_rounds,
    evaluate_score,
    evaluate_team_inactivity,
    household_alerts,
    household_windows,
    inactive_team_key,
    is_newer,
    judging_rounds,
    member_day_alerts,
    member_days_to_count,
    round_overdue_key,
    score_conditions,
    score_key,
    suspicious_checked,
)
from notifications.use_cases import (
    RuleBook,
    apply_alert_changes,
    raise_alerts,
    resolve_alerts,
)

log = logging.getLogger(__name__)


def notifications_handler(clock: Clock, *, score_states: adapters.ScoreStates) -> Handler:
    """One batch handler for the topics: teams first, then activities, scores, and rounds.

    `score_states`: the scores' judged states in memory; the consumer forgets them on every
    rebalance (`NotificationsRuntime`)."""

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
        scores = [parse_wire(e, ScoreUpdatedWire) for e in events if e.type == ScoreUpdated.CE_TYPE]
        if scores:
            await on_scores_updated(uow, scores, now=now, states=score_states.within(uow))
        rounds = [
            e.parse(EvaluationRoundChanged)
            for e in events
            if e.type == EvaluationRoundChanged.CE_TYPE
        ]
        if rounds:
            await on_rounds_changed(uow, rounds, now=now)

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
    await adapters.lock_swept_judgements(uow.session, full_sweep=team_ids is None)
    teams = await adapters.teams_for_sweep(uow.session, team_ids=team_ids)
    book = await RuleBook.load(uow, provinces={_province(t) for t in teams})
    open_alerts = await _active_inactivity_alerts(uow, team_ids=team_ids)
    changes = evaluate_team_inactivity(
        [_team_activity(t) for t in teams],
        rules=book,
        open_alerts=[_open_alert(row) for row in open_alerts],
        now=now,
    )
    return await apply_alert_changes(uow, changes, open_alerts=open_alerts, now=now)


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
    """The scheduled full sweep (silent teams, overdue rounds): (raised, resolved); None when
    another replica holds the sweep lock."""
    if not await adapters.try_sweep_lock(uow.session):
        return None
    teams_raised, teams_resolved = await evaluate_inactivity(uow, now=now)
    rounds_raised, rounds_resolved = await evaluate_rounds(uow, now=now)
    await uow.commit()
    return teams_raised + rounds_raised, teams_resolved + rounds_resolved


# --------------------------------------------------------------------------- evaluation rounds


async def on_rounds_changed(
    uow: UnitOfWork, rounds: Sequence[EvaluationRoundChanged], *, now: datetime
) -> None:
    newest = {r.id: r for r in sorted(rounds, key=lambda r: r.version)}  # one row per id
    await adapters.upsert_rounds(
        uow.session,
        [
            {
                "id": r.id,
                "level": r.level,
                "unit_code": r.unit_code,
                "period": r.period,
                "criteria_set": r.criteria_set,
                "due_on": r.due_on,
                "state": r.state,
                "version": r.version,
            }
            for r in newest.values()
        ],
    )
    await evaluate_rounds(uow, now=now, round_ids=sorted(newest))


async def evaluate_rounds(
    uow: UnitOfWork, *, now: datetime, round_ids: Sequence[UUID] | None = None
) -> tuple[int, int]:
    """Raise `round_overdue` for rounds past due and not approved, resolve it for the others.
    `round_ids=None`: every round (the sweep). Returns (raised, resolved)."""
    await adapters.lock_swept_judgements(uow.session, full_sweep=round_ids is None)
    rows = await adapters.rounds_for_sweep(uow.session, round_ids=round_ids)
    paths = await adapters.unit_paths_of(
        uow.session, {SubjectKey(row["level"], row["unit_code"]) for row in rows}
    )
    reviews = [
        ReviewRound(
            id=row["id"],
            level=row["level"],
            unit_code=row["unit_code"],
            period=row["period"],
            criteria_set=row["criteria_set"],
            due_on=row["due_on"],
            state=row["state"],
            unit_path=paths[SubjectKey(row["level"], row["unit_code"])],
        )
        for row in rows
    ]
    book = await RuleBook.load(
        uow, provinces={r.unit_path[0] if r.unit_path else None for r in reviews}
    )
    open_alerts = (
        await adapters.active_alerts(
            uow.session, dedupe_keys=[round_overdue_key(r) for r in reviews]
        )
        if round_ids is not None
        else await adapters.active_alerts_of_type(uow.session, "round_overdue")
    )
    changes = evaluate_overdue_rounds(
        reviews, rules=book, open_alerts=[_open_alert(row) for row in open_alerts], now=now
    )
    return await apply_alert_changes(uow, changes, open_alerts=open_alerts, now=now)


# --------------------------------------------------------------------------- scores


async def on_scores_updated(
    uow: UnitOfWork,
    scores: Sequence[ScoreRecord],
    *,
    now: datetime,
    states: adapters.ScoreStatesInTransaction,
) -> None:
    """Judge a batch of scores with `evaluate_score`, reading and writing set-based."""
    keyed = [(score_key(s), s) for s in scores]  # each key built once for the whole batch
    subjects = {key: SubjectKey(key.subject_type, key.subject_id) for key, _ in keyed}
    paths = await adapters.unit_paths_of(uow.session, set(subjects.values()))
    path_of = {key: paths[subject] for key, subject in subjects.items()}
    book = await RuleBook.load(uow, provinces={p[0] if p else None for p in paths.values()})
    comparisons = {}  # a score's key -> the key of the period its score drop compares with
    for key, score in keyed:
        path = path_of[key]
        earlier = comparison_period(score, rules=book, province=path[0] if path else None)
        if earlier is not None:
            comparisons[key] = ScoreKey(score.subject_type, score.subject_id, earlier)
    for judged in judging_rounds(keyed, comparison=comparisons):
        await _judge_round(
            uow,
            judged,
            rules=book,
            path_of=path_of,
            comparisons=comparisons,
            states=states,
            now=now,
        )


async def _judge_round(
    uow: UnitOfWork,
    keyed: Sequence[tuple[ScoreKey, ScoreRecord]],
    *,
    rules: RuleBook,
    path_of: Mapping[ScoreKey, tuple[str, ...]],
    comparisons: Mapping[ScoreKey, ScoreKey],
    states: adapters.ScoreStatesInTransaction,
    now: datetime,
) -> None:
    """Scores of distinct keys, none reading what another one writes."""
    previous = await states.read(key for key, _ in keyed)
    fresh = [(key, s) for key, s in keyed if is_newer(previous.get(key), s)]
    if not fresh:
        return  # replays or out-of-order older versions: already judged
    earlier_states = await states.read(
        [c for key, _ in fresh if (c := comparisons.get(key)) is not None]
    )
    open_alerts = await adapters.open_alerts_of_scores(uow.session, (key for key, _ in fresh))
    evaluations = {}
    for key, score in fresh:
        mine = open_alerts.get(key, [])
        compared = comparisons.get(key)
        unit_path = path_of[key]
        evaluations[key] = (
            evaluate_score(
                score,
                rules=rules,
                unit_path=unit_path,
                previous=previous.get(key),
                previous_period_state=earlier_states.get(compared) if compared else None,
                open_alerts=[_open_alert(row) for row in mine],
                conditions=score_conditions(
                    score, rules=rules, unit_path=unit_path, with_open_alerts=bool(mine)
                ),
            ),
            mine,
        )
    stored = await states.save(
        {
            key: evaluation.state
            for key, (evaluation, _) in evaluations.items()
            if evaluation.state is not None
        }
    )
    # A key not stored had a newer version stored meanwhile: that one is the one judged.
    judged = [evaluations[key] for key in evaluations if key in stored]
    await raise_alerts(uow, [c for evaluation, _ in judged for c in evaluation.raised], now=now)
    resolved = {alert_id for evaluation, _ in judged for alert_id in evaluation.resolved}
    await resolve_alerts(
        uow, [row for _, mine in judged for row in mine if row["id"] in resolved], now=now
    )
