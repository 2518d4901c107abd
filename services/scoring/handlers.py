"""What scoring does with a consumed batch: one transaction, set-based upserts.

The runner already deduplicated the batch by event id; facts keyed by activity id make the
apply idempotent per activity as well (a re-sent activity under a new event id adds nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from opentelemetry.propagate import inject
from sqlalchemy.ext.asyncio import AsyncSession

from common.consumer import Handler
from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.notifications import AlertRaised
from common.contracts.teams import AdminUnitChanged, MemberChanged, TeamChanged, UnitPath
from common.contracts.wire import (
    ActivityRecordedWire,
    ActivityVoidedWire,
    MemberChangedWire,
    TeamChangedWire,
    UnitPathWire,
    parse_wire,
)
from common.db import UnitOfWork
from common.envelope import InboundEvent
from scoring import adapters, domain
from scoring.domain import (
    ActivityFact,
    Deltas,
    FactState,
    MemberState,
    SubjectName,
    TeamState,
    UnitPathCodes,
)

ROSTER_TYPES = {TeamChanged.CE_TYPE, MemberChanged.CE_TYPE}
ACTIVITY_TYPES = {ActivityRecorded.CE_TYPE, ActivityVoided.CE_TYPE}


def path_codes(path: UnitPath | UnitPathWire) -> UnitPathCodes:
    return UnitPathCodes(
        province=path.province, district=path.district, commune=path.commune, village=path.village
    )


def fact_from_event(
    event: ActivityRecorded | ActivityRecordedWire, *, place: UnitPathCodes | None = None
) -> ActivityFact:
    """`place`: where the team is now (its activities count there); by default the event's."""
    return domain.activity_fact(
        activity_id=event.id,
        team_id=event.team_id,
        member_id=event.member_id,
        occurred_at=event.occurred_at,
        kind=event.kind,
        skills=event.skills,
        citizens_reached=event.citizens_reached,
        household_hash=event.household_hash,
        audience=event.audience,
        campaign_id=event.campaign_id,
        outcomes=event.outcomes,
        path=place or path_codes(event.unit_path),
    )


# Activities are decoded into msgspec structs (`common.contracts.wire`): the hot path.
Activity = ActivityRecordedWire | ActivityVoidedWire
RosterChange = TeamChangedWire | MemberChangedWire


async def apply_activities(
    session: AsyncSession,
    parsed: Sequence[Activity],
    deltas: Deltas,
    *,
    places: dict[UUID, UnitPathCodes],
) -> list[ActivityFact]:
    """Walk the batch's activity events in order through the fact ledger; returns new facts.

    An activity counts where its team is now (`places`, from the roster replica), whatever
    place its event carries: all of a team's facts then share one path, so the team's distinct
    members reach the same ancestors incrementally and in a recompute. A team not placed yet
    gets the place of its first activity until its TeamChanged arrives; that place is added to
    `places`, which the roster step then compares against to find the teams that moved.
    """
    unknown: dict[UUID, UnitPathCodes] = {}
    for item in parsed:
        if isinstance(item, ActivityRecordedWire) and item.team_id not in places:
            unknown.setdefault(item.team_id, path_codes(item.unit_path))
    if unknown:
        places.update(await adapters.place_unknown_teams(session, unknown))
    stored = await adapters.load_fact_states(session, [p.id for p in parsed])
    states: dict[UUID, FactState | None] = dict(stored)
    team_ids: dict[UUID, UUID] = {}
    added: list[ActivityFact] = []
    subtracted: list[ActivityFact] = []
    for item in parsed:
        previous = states.get(item.id)
        if isinstance(item, ActivityRecordedWire):
            fact = fact_from_event(item, place=places.get(item.team_id))
            state, sign = domain.on_recorded(previous, fact)
            if sign:
                added.append(fact)
        else:
            state, sign = domain.on_voided(previous)
            if sign and state.fact is not None:
                subtracted.append(state.fact)
        if state != previous:
            states[item.id] = state
            team_ids[item.id] = item.team_id
    # Deltas are sums: adding the batch's facts together equals adding them one by one.
    deltas.add_facts(added, +1)
    deltas.add_facts(subtracted, -1)
    changed = {k: v for k, v in states.items() if v is not None and k in team_ids}
    await adapters.save_fact_states(session, changed, team_ids=team_ids)
    return added


async def apply_roster(
    session: AsyncSession,
    parsed: Sequence[RosterChange],
    deltas: Deltas,
    *,
    places_before: Mapping[UUID, UnitPathCodes],
) -> dict[UUID, UnitPathCodes]:
    """Apply team and member changes; returns the teams now placed somewhere new.

    Set-based per batch: the batch's teams and members (and the members' teams) are read and
    locked in one statement each, the changes applied in order in memory (`domain.Roster`:
    newer versions win, each change's state deltas exact), and the outcome written in one
    statement per table.
    """
    roster = await adapters.load_roster(
        session,
        team_ids=[_team_of(p) for p in parsed],
        member_ids=[p.id for p in parsed if isinstance(p, MemberChangedWire)],
    )
    placed: list[dict[str, str | None]] = []
    for item in parsed:
        if isinstance(item, TeamChangedWire):
            path = path_codes(item.unit_path) if item.unit_path else None
            roster.apply_team(
                TeamState(
                    team_id=item.id, path=path, active=item.status == "active", version=item.version
                ),
                deltas,
            )
            if path is not None:
                placed.extend(domain.subject_rows(item.id, path))
        else:
            roster.apply_member(
                MemberState(
                    member_id=item.id,
                    team_id=item.team_id,
                    counted=not item.removed and item.left_on is None,
                    trained=item.trained,
                    version=item.version,
                ),
                deltas,
            )
    await adapters.save_roster(session, roster)
    await adapters.upsert_subjects(session, placed)
    await adapters.save_names(
        session,
        (
            SubjectName("team", str(item.id), item.code, item.name, item.version)
            for item in parsed
            if isinstance(item, TeamChangedWire)
        ),
    )
    return {
        team_id: team.path
        for team_id, team in roster.teams.items()
        if team.path is not None and team.path != places_before.get(team_id)
    }


async def reroll_moved_teams(
    session: AsyncSession, moved: dict[UUID, UnitPathCodes], touched: Deltas
) -> list[ActivityFact]:
    """A team that moved takes its history along (a correction of its village, or its unit
    merged, split or re-parented): its facts are subtracted where they were and added where
    the team is now."""
    facts = [
        f for f in await adapters.live_facts_of_teams(session, moved) if f.path != moved[f.team_id]
    ]
    rerolled = [domain.with_path(f, moved[f.team_id]) for f in facts]
    await _reroll(session, facts, rerolled, touched)
    return rerolled


async def _reroll(
    session: AsyncSession,
    facts: Sequence[ActivityFact],
    rerolled: Sequence[ActivityFact],
    touched: Deltas,
) -> None:
    """The old contributions are removed and applied before the new ones are added: a distinct
    value (a team, member or household) must leave the old ancestors and arrive at the new
    ones, which a single net-zero delta would hide. `touched` collects what to score again."""
    for facts_of_step, sign in ((facts, -1), (rerolled, +1)):
        step = Deltas()
        step.add_facts(facts_of_step, sign)
        await adapters.apply_deltas(session, step)
        for key, moment in step.touched.items():
            touched.touch(key, moment)
    await adapters.rewrite_fact_paths(session, rerolled)


async def apply_admin_units(
    session: AsyncSession, events: Sequence[InboundEvent], touched: Deltas
) -> list[ActivityFact]:
    """Re-roll history through the crosswalk: merged and re-parented units move their facts,
    and the teams placed in them move with them (so later activities count there too).

    A split cannot attribute a unit's past activities to one successor: they stay under the old
    code until the teams service moves each team to its successor (a TeamChanged), which takes
    that team's history along.
    """
    units = [event.parse(AdminUnitChanged) for event in events]
    fresh = await adapters.save_admin_units(
        session,
        [
            adapters.AdminUnitRow(
                code=unit.code,
                level=unit.level,
                path=unit.path.model_dump(),
                change=unit.change,
                replaced_by=list(unit.replaced_by),
                version=unit.version,
            )
            for unit in units
        ],
    )
    await adapters.save_names(
        session,
        (SubjectName(unit.level, unit.code, unit.code, unit.name, unit.version) for unit in units),
    )
    moved: list[ActivityFact] = []
    # Only a newer merge or re-parenting moves anything: one by one, in the batch's order.
    for unit, newer in zip(units, fresh, strict=True):
        if not newer or unit.change not in ("merged", "reparented"):
            continue
        new_path = await _successor_path(session, unit)
        if new_path is None:
            continue
        # teams first: every batch locks teams before facts
        await _move_teams_in_unit(session, unit=unit, new_path=new_path, touched=touched)
        facts = await adapters.live_facts_where(session, level=unit.level, code=unit.code)
        rerolled = [domain.with_path(f, _graft(f.path, unit.level, new_path)) for f in facts]
        await _reroll(session, facts, rerolled, touched)
        moved.extend(rerolled)
    return moved


async def _move_teams_in_unit(
    session: AsyncSession, *, unit: AdminUnitChanged, new_path: UnitPathCodes, touched: Deltas
) -> None:
    team_ids = await adapters.teams_in_unit(session, level=unit.level, code=unit.code)
    if not team_ids:
        return
    roster = await adapters.load_roster(session, team_ids=team_ids, member_ids=())
    step = Deltas()
    for team in list(roster.teams.values()):
        if team.path is not None:
            roster.move_team(team.team_id, _graft(team.path, unit.level, new_path), step)
    await adapters.save_roster(session, roster)
    await adapters.apply_deltas(session, step)
    touched.state_touched |= step.state_touched


async def _successor_path(session: AsyncSession, unit: AdminUnitChanged) -> UnitPathCodes | None:
    """The path the unit's history now belongs under (down to the unit's own level)."""
    if unit.change == "reparented":
        return path_codes(unit.path)
    if unit.change == "merged" and len(unit.replaced_by) == 1:
        known = await adapters.admin_unit_path(session, unit.replaced_by[0])
        if known is not None:
            return known
        # Successor not seen yet: keep the ancestors, replace the unit's own code.
        return UnitPathCodes(**{**path_codes(unit.path).__dict__, unit.level: unit.replaced_by[0]})
    return None


def _graft(path: UnitPathCodes, level: str, new: UnitPathCodes) -> UnitPathCodes:
    """Levels at and above `level` from the new path, levels below it kept."""
    index = domain.LEVELS.index(level)
    below = {lvl: path.code_at(lvl) for lvl in domain.LEVELS[:index]}
    above = {lvl: new.code_at(lvl) for lvl in domain.LEVELS[index:]}
    merged = {**below, **above}
    return UnitPathCodes(
        province=merged["province"] or path.province,
        district=merged["district"],
        commune=merged["commune"],
        village=merged["village"],
    )


async def apply_batch(session: AsyncSession, events: Sequence[InboundEvent]) -> Deltas:
    """The whole effect of one batch; also used by tests and benchmarks directly."""
    await adapters.lock_for_apply(session)
    deltas = Deltas()
    activities: list[Activity] = [
        parse_wire(e, ActivityRecordedWire)
        if e.type == ActivityRecorded.CE_TYPE
        else parse_wire(e, ActivityVoidedWire)
        for e in events
        if e.type in ACTIVITY_TYPES
    ]
    roster: list[RosterChange] = [
        parse_wire(e, TeamChangedWire)
        if e.type == TeamChanged.CE_TYPE
        else parse_wire(e, MemberChangedWire)
        for e in events
        if e.type in ROSTER_TYPES
    ]
    unit_events = [e for e in events if e.type == AdminUnitChanged.CE_TYPE]
    places = await adapters.lock_team_places(
        session, [*(a.team_id for a in activities), *(_team_of(r) for r in roster)]
    )
    placed: list[ActivityFact] = []
    moved: dict[UUID, UnitPathCodes] = {}
    if activities:
        placed.extend(await apply_activities(session, activities, deltas, places=places))
    if roster:
        moved = await apply_roster(session, roster, deltas, places_before=places)
    await adapters.apply_deltas(session, deltas)
    if moved:  # after the batch's own deltas: it moves the facts this batch stored too
        placed.extend(await reroll_moved_teams(session, moved, deltas))
    if unit_events:  # after the batch's own deltas: it re-rolls the facts this batch stored too
        placed.extend(await apply_admin_units(session, unit_events, deltas))
    chains = {(f.team_id, f.path) for f in placed}
    await adapters.upsert_subjects(
        session, [row for team, path in chains for row in domain.subject_rows(team, path)]
    )
    # The W3C context of the current span (the consumer's `process` span): the publisher's span
    # for these subjects becomes its child, so the score records continue the activity's trace.
    carrier: dict[str, str] = {}
    inject(carrier)
    traceparent = carrier.get("traceparent")
    await adapters.mark_dirty(session, deltas.touched, traceparent=traceparent)
    await adapters.mark_state_dirty(
        session,
        _state_dirty(deltas, now=(now := datetime.now(UTC))),
        now=now,
        traceparent=traceparent,
    )
    return deltas


def _team_of(change: RosterChange) -> UUID:
    return change.id if isinstance(change, TeamChangedWire) else change.team_id


def _state_dirty(deltas: Deltas, *, now: datetime) -> list[tuple[str, str]]:
    """The subjects whose state indicators (members, teams) changed, to publish for their
    current periods (they count towards every period), unless this batch's live marks cover
    all of those already. Published in the background lane: a bulk import changes them for
    every team and unit at once, and must not hold live activity scores back."""
    periods = domain.calendar_periods(now)
    return [
        (stype, sid)
        for stype, sid in deltas.state_touched
        if any((stype, sid, period) not in deltas.touched for period in periods)
    ]


async def apply_alerts(session: AsyncSession, alerts: Sequence[AlertRaised]) -> None:
    """Keep the teams that unresolved suspicious-activity alerts name (in the batch's order:
    an alert's events share its partition, so one raised and resolved in a batch ends
    resolved)."""
    raised: list[tuple[UUID, str, str | None, datetime]] = []
    resolved: list[UUID] = []
    for alert in alerts:
        if alert.alert_type != "suspicious_activity":
            continue
        if alert.status == "resolved":
            resolved.append(alert.id)
            continue
        team = domain.flagged_team(
            subject_type=alert.subject_type, subject_id=alert.subject_id, details=alert.details
        )
        if team is not None:
            check = alert.details.get("check")
            raised.append((alert.id, team, str(check) if check else None, alert.raised_at))
    await adapters.save_flags(session, raised=raised, resolved=resolved)


def alert_flags_handler() -> Handler:
    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        alerts = [e.parse(AlertRaised) for e in events if e.type == AlertRaised.CE_TYPE]
        await apply_alerts(uow.session, alerts)

    return handle


def scoring_handler() -> Handler:
    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        await apply_batch(uow.session, events)

    return handle
