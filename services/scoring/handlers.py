"""What scoring does with a consumed batch: one transaction, set-based upserts.

The runner already deduplicated the batch by event id; facts keyed by activity id make the
apply idempotent per activity as well (a re-sent activity under a new event id adds nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from opentelemetry.propagate import inject
from sqlalchemy.ext.asyncio import AsyncSession

from common.consumer import Handler
from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.teams import AdminUnitChanged, MemberChanged, TeamChanged, UnitPath
from common.db import UnitOfWork
from common.envelope import InboundEvent
from scoring import adapters, domain
from scoring.domain import ActivityFact, Deltas, FactState, MemberState, TeamState, UnitPathCodes

ROSTER_TYPES = {TeamChanged.CE_TYPE, MemberChanged.CE_TYPE}
ACTIVITY_TYPES = {ActivityRecorded.CE_TYPE, ActivityVoided.CE_TYPE}


def path_codes(path: UnitPath) -> UnitPathCodes:
    return UnitPathCodes(
        province=path.province, district=path.district, commune=path.commune, village=path.village
    )


def fact_from_event(event: ActivityRecorded) -> ActivityFact:
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
        path=path_codes(event.unit_path),
    )


async def apply_activities(
    session: AsyncSession, events: Sequence[InboundEvent], deltas: Deltas
) -> list[ActivityFact]:
    """Walk the batch's activity events in order through the fact ledger; returns new facts."""
    parsed: list[ActivityRecorded | ActivityVoided] = [
        e.parse(ActivityRecorded) if e.type == ActivityRecorded.CE_TYPE else e.parse(ActivityVoided)
        for e in events
    ]
    stored = await adapters.load_fact_states(session, [p.id for p in parsed])
    states: dict[UUID, FactState | None] = dict(stored)
    team_ids: dict[UUID, UUID] = {}
    added: list[ActivityFact] = []
    subtracted: list[ActivityFact] = []
    for item in parsed:
        previous = states.get(item.id)
        if isinstance(item, ActivityRecorded):
            fact = fact_from_event(item)
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
    session: AsyncSession, events: Sequence[InboundEvent], deltas: Deltas
) -> None:
    parsed = [
        e.parse(TeamChanged) if e.type == TeamChanged.CE_TYPE else e.parse(MemberChanged)
        for e in events
    ]
    roster = await adapters.load_roster(
        session,
        team_ids=[p.id if isinstance(p, TeamChanged) else p.team_id for p in parsed],
        member_ids=[p.id for p in parsed if isinstance(p, MemberChanged)],
    )
    placed: list[dict[str, str | None]] = []
    for item in parsed:
        if isinstance(item, TeamChanged):
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


async def apply_admin_units(
    session: AsyncSession, events: Sequence[InboundEvent], touched: Deltas
) -> list[ActivityFact]:
    """Re-roll history through the crosswalk: merged and re-parented units move their facts.

    The old contributions are removed and applied before the new ones are added: a distinct
    value (a team, member or household) must leave the old ancestors and arrive at the new ones,
    which a single net-zero delta would hide. `touched` collects what must be scored again.
    A split cannot attribute past activities to one successor, so their history stays under
    the old code (DHIS2 does the same without a per-record mapping).
    """
    moved: list[ActivityFact] = []
    for event in events:
        unit = event.parse(AdminUnitChanged)
        fresh = await adapters.save_admin_unit(
            session,
            code=unit.code,
            level=unit.level,
            path=unit.path.model_dump(),
            change=unit.change,
            replaced_by=list(unit.replaced_by),
            version=unit.version,
        )
        if not fresh:
            continue
        new_path = await _successor_path(session, unit)
        if new_path is None:
            continue
        facts = await adapters.live_facts_where(session, level=unit.level, code=unit.code)
        rerolled = [domain.with_path(f, _graft(f.path, unit.level, new_path)) for f in facts]
        for facts_of_step, sign in ((facts, -1), (rerolled, +1)):
            step = Deltas()
            step.add_facts(facts_of_step, sign)
            await adapters.apply_deltas(session, step)
            for key, moment in step.touched.items():
                touched.touch(key, moment)
        await adapters.rewrite_fact_paths(session, rerolled)
        moved.extend(rerolled)
    return moved


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
    activity_events = [e for e in events if e.type in ACTIVITY_TYPES]
    roster_events = [e for e in events if e.type in ROSTER_TYPES]
    unit_events = [e for e in events if e.type == AdminUnitChanged.CE_TYPE]
    placed: list[ActivityFact] = []
    if activity_events:
        placed.extend(await apply_activities(session, activity_events, deltas))
    if roster_events:
        await apply_roster(session, roster_events, deltas)
    await adapters.apply_deltas(session, deltas)
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
    await adapters.mark_dirty(session, _dirty(deltas), traceparent=carrier.get("traceparent"))
    return deltas


def _dirty(deltas: Deltas) -> dict[tuple[str, str, str], datetime | None]:
    touched = dict(deltas.touched)
    if deltas.state_touched:
        # State indicators (members, teams) count towards every period; re-score the current ones.
        now = datetime.now(UTC)
        for stype, sid in deltas.state_touched:
            for period in domain.calendar_periods(now):
                touched.setdefault((stype, sid, period), now)
    return touched


def scoring_handler() -> Handler:
    async def handle(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
        await apply_batch(uow.session, events)

    return handle
