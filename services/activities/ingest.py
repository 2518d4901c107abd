"""The ingest use case: classify each event, store the new ones and their outbox rows at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from activities import adapters
from activities.adapters import NewActivity, Partner
from activities.domain import (
    ActivityIn,
    Rejection,
    TeamView,
    canonical_payload,
    check_against_replica,
    household_hash,
    payload_hash,
)
from activities.metrics import EVENTS
from common.contracts.activities import ActivityRecorded
from common.contracts.teams import UnitPath
from common.db import UnitOfWork, outbox_row
from common.envelope import OutboundEvent

SOURCE = "/cdt/activities"
Status = Literal["accepted", "duplicate", "rejected"]
CONFLICT = Rejection("conflict", "This id was already used for a different payload.")


@dataclass(frozen=True)
class ItemResult:
    index: int
    id: UUID | None
    status: Status
    rejection: Rejection | None = None


@dataclass(frozen=True)
class _Candidate:
    index: int
    event: ActivityIn
    household: str | None
    digest: bytes


class Ingestor:
    def __init__(
        self,
        *,
        household_key: bytes,
        clock_skew: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._key = household_key
        self._skew = clock_skew
        self._clock = clock

    async def ingest(
        self, uow: UnitOfWork, partner: Partner, items: Sequence[ActivityIn | Rejection]
    ) -> list[ItemResult]:
        """One result per item, in order; commits the unit of work."""
        results: dict[int, ItemResult] = {}
        candidates = self._first_occurrences(items, results)
        fresh = await self._not_yet_stored(uow, candidates, results)
        now = self._clock()
        accepted = await self._validate(uow, fresh, partner=partner, now=now, results=results)
        claimed = await adapters.insert_activities(
            uow.session, accepted, partner_id=partner.id, recorded_at=now
        )
        lost = [a for a in accepted if a.id not in claimed]
        # A concurrent request claimed these ids between our lookup and our insert.
        raced = await adapters.existing_hashes(uow.session, [a.id for a in lost]) if lost else {}
        index_of = {c.event.id: c.index for c in fresh}
        for a in accepted:
            index = index_of[a.id]
            if a.id in claimed:
                results[index] = ItemResult(index, a.id, "accepted")
            else:
                results[index] = _repeat(index, a.id, same=raced.get(a.id) == a.payload_hash)
        await uow.commit()
        ordered = [results[i] for i in range(len(items))]
        _count(ordered)
        return ordered

    def _first_occurrences(
        self, items: Sequence[ActivityIn | Rejection], results: dict[int, ItemResult]
    ) -> list[_Candidate]:
        """Schema rejections and repeats of an id within the batch (the first one decides)."""
        candidates: list[_Candidate] = []
        first_seen: dict[UUID, bytes] = {}
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                results[index] = ItemResult(index, None, "rejected", item)
                continue
            candidate = self._candidate(index, item)
            seen = first_seen.get(item.id)
            if seen is None:
                first_seen[item.id] = candidate.digest
                candidates.append(candidate)
            else:
                results[index] = _repeat(index, item.id, same=seen == candidate.digest)
        return candidates

    async def _not_yet_stored(
        self, uow: UnitOfWork, candidates: list[_Candidate], results: dict[int, ItemResult]
    ) -> list[_Candidate]:
        stored = await adapters.existing_hashes(uow.session, [c.event.id for c in candidates])
        fresh: list[_Candidate] = []
        for c in candidates:
            if c.event.id in stored:
                results[c.index] = _repeat(c.index, c.event.id, same=stored[c.event.id] == c.digest)
            else:
                fresh.append(c)
        return fresh

    async def _validate(
        self,
        uow: UnitOfWork,
        fresh: list[_Candidate],
        *,
        partner: Partner,
        now: datetime,
        results: dict[int, ItemResult],
    ) -> list[NewActivity]:
        teams = await adapters.load_teams(uow.session, list({c.event.team_id for c in fresh}))
        members = await adapters.load_members(
            uow.session, list({c.event.member_id for c in fresh if c.event.member_id is not None})
        )
        accepted: list[NewActivity] = []
        for c in fresh:
            team = teams.get(c.event.team_id)
            rejection = check_against_replica(
                c.event,
                team=team,
                member=members.get(c.event.member_id) if c.event.member_id else None,
                provinces=partner.provinces,
                now=now,
                clock_skew=self._skew,
            )
            if rejection is not None:
                results[c.index] = ItemResult(c.index, c.event.id, "rejected", rejection)
            else:
                assert team is not None
                accepted.append(self._new_activity(c, team, partner=partner, now=now))
        return accepted

    def _candidate(self, index: int, event: ActivityIn) -> _Candidate:
        household = household_hash(event.household_ref, key=self._key)
        digest = payload_hash(canonical_payload(event, household=household))
        return _Candidate(index, event, household, digest)

    def _new_activity(
        self, c: _Candidate, team: TeamView, *, partner: Partner, now: datetime
    ) -> NewActivity:
        event = c.event
        assert team.province is not None
        skills: list[str] = sorted(set(event.skills))
        audience = sorted(set(event.audience))
        outcomes: dict[str, int] = {k: v for k, v in sorted(event.outcomes.items()) if v}
        recorded = ActivityRecorded(
            id=event.id,
            team_id=event.team_id,
            member_id=event.member_id,
            partner_id=partner.id,
            occurred_at=event.occurred_at,
            recorded_at=now,
            kind=event.kind,
            skills=skills,
            citizens_reached=event.citizens_reached,
            household_hash=c.household,
            audience=audience,
            campaign_id=event.campaign_id,
            outcomes=outcomes,
            unit_path=UnitPath(
                province=team.province,
                district=team.district,
                commune=team.commune,
                village=team.village,
            ),
        )
        return NewActivity(
            id=event.id,
            payload_hash=c.digest,
            occurred_at=event.occurred_at,
            team_id=event.team_id,
            member_id=event.member_id,
            kind=event.kind,
            skills=skills,
            citizens_reached=event.citizens_reached,
            household_hash=c.household,
            audience=audience,
            campaign_id=event.campaign_id,
            outcomes=outcomes,
            province=team.province,
            district=team.district,
            commune=team.commune,
            village=team.village,
            outbox=outbox_row(OutboundEvent.of(recorded, source=SOURCE, subject=str(event.id))),
        )


def _repeat(index: int, activity_id: UUID, *, same: bool) -> ItemResult:
    if same:
        return ItemResult(index, activity_id, "duplicate")
    return ItemResult(index, activity_id, "rejected", CONFLICT)


def _count(results: Sequence[ItemResult]) -> None:
    for r in results:
        EVENTS.labels(r.status, r.rejection.reason if r.rejection else "").inc()


def count_rejection(rejection: Rejection) -> None:
    """For events rejected before they reach the ingestor (schema errors of single posts)."""
    EVENTS.labels("rejected", rejection.reason).inc()
