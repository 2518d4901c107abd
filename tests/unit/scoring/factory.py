"""Builders of the events scoring consumes (shared by unit, integration and load tests)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

from common.contracts.activities import ActivityRecorded, ActivityVoided
from common.contracts.teams import MemberChanged, TeamChanged, UnitPath
from common.envelope import EventContract, InboundEvent, OutboundEvent

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def path(province: str, commune: str | None = None, village: str | None = None) -> UnitPath:
    return UnitPath(province=province, commune=commune, village=village)


def activity(
    *,
    team_id: uuid.UUID,
    unit_path: UnitPath,
    activity_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None,
    occurred_at: datetime = NOW,
    kind: str = "household_visit",
    skills: list[str] | None = None,
    citizens_reached: int = 1,
    household_hash: str | None = None,
    campaign_id: str | None = None,
    outcomes: dict[str, int] | None = None,
    audience: list[str] | None = None,
) -> ActivityRecorded:
    return ActivityRecorded(
        id=activity_id or uuid.uuid4(),
        team_id=team_id,
        member_id=member_id,
        occurred_at=occurred_at,
        recorded_at=occurred_at,
        kind=kind,  # type: ignore[arg-type]
        skills=skills if skills is not None else ["public_services"],  # type: ignore[arg-type]
        citizens_reached=citizens_reached,
        household_hash=household_hash,
        audience=audience or [],
        campaign_id=campaign_id,
        outcomes=outcomes or {},
        unit_path=unit_path,
    )


def void(recorded: ActivityRecorded, reason: str = "duplicate entry") -> ActivityVoided:
    return ActivityVoided(id=recorded.id, team_id=recorded.team_id, reason=reason, voided_at=NOW)


def team(
    *,
    team_id: uuid.UUID,
    unit_path: UnitPath | None,
    version: int = 1,
    status: str = "active",
) -> TeamChanged:
    unit = unit_path.village or unit_path.commune or unit_path.province if unit_path else "x"
    return TeamChanged(
        id=team_id,
        code=f"T-{team_id.hex[:8]}",
        name="Tổ CNSCĐ",
        unit_code=unit,
        unit_path=unit_path,
        status=status,  # type: ignore[arg-type]
        version=version,
        changed_at=NOW,
    )


def member(
    *,
    member_id: uuid.UUID,
    team_id: uuid.UUID,
    version: int = 1,
    trained: bool = False,
    removed: bool = False,
) -> MemberChanged:
    return MemberChanged(
        id=member_id,
        team_id=team_id,
        role="member",
        affiliation="resident",
        joined_on=date(2022, 4, 1),
        trained=trained,
        removed=removed,
        version=version,
        changed_at=NOW,
    )


def inbound(contract: EventContract, *, event_id: uuid.UUID | None = None) -> InboundEvent:
    """What the consumer runner would hand the handler for this contract."""
    out = OutboundEvent.of(contract, source="/test")
    return InboundEvent(
        id=event_id or out.id,
        type=out.type,
        source=out.source,
        subject=None,
        time=out.time,
        topic=out.topic,
        partition=0,
        offset=0,
        key=out.key,
        value=orjson.dumps(out.data),
        trace_headers={},
    )


# --------------------------------------------------------------------------- random streams

SKILL_NAMES = ["public_services", "online_shopping", "online_payment", "cyber_safety"]


@dataclass(frozen=True)
class Stream:
    """Events as Kafka would deliver them (duplicates, voids, late and out-of-order events)."""

    deliveries: list[InboundEvent]
    live: list[ActivityRecorded]  # the oracle: recorded at least once and never voided


def random_stream(
    rng: random.Random, *, province: str, size: int | None = None, moves: bool = False
) -> Stream:
    """`moves`: teams also change place (TeamChanged with new versions and paths), and some
    activities carry the place their team had before (`live` then ignores where they count)."""
    # ids are distinct by construction (a shrinking generator would otherwise make them equal)
    salt = uuid.uuid4().int >> 64 << 64
    teams = [
        (
            uuid.UUID(int=salt + 100 + 2 * c + v),
            path(province, f"{province}-C{c}", f"{province}-V{c}{v}"),
        )
        for c in range(2)
        for v in range(2)
    ]
    # teams placed higher up (no village, or only a province) and a path with a district:
    # households then count at a commune or the province, and the district level rolls up
    teams += [
        (uuid.UUID(int=salt + 110), path(province, f"{province}-C0")),
        (uuid.UUID(int=salt + 111), path(province)),
        (
            uuid.UUID(int=salt + 112),
            UnitPath(
                province=province,
                district=f"{province}-D2",
                commune=f"{province}-C2",
                village=f"{province}-V20",
            ),
        ),
    ]
    members = [uuid.UUID(int=salt + 200 + m) for m in range(4)]
    deliveries: list[InboundEvent] = []
    live: list[ActivityRecorded] = []
    places = {team_id: [unit] for team_id, unit in teams}
    versions = dict.fromkeys(places, 0)
    for index in range(size if size is not None else rng.randint(1, 30)):
        team_id, unit = rng.choice(teams)
        if moves:
            if rng.random() < 0.25:  # the team moves (or is placed for the first time)
                places[team_id].append(rng.choice(teams)[1])
                versions[team_id] += 1
                deliveries.append(
                    inbound(
                        team(
                            team_id=team_id,
                            unit_path=places[team_id][-1],
                            version=versions[team_id],
                        )
                    )
                )
            unit = rng.choice(places[team_id])  # its place now, or where it was before
        # anywhere in 2026, often right at a month boundary in Vietnam time
        day = datetime(2026, rng.randint(1, 12), 1, tzinfo=UTC) - timedelta(hours=7)
        occurred = day + timedelta(minutes=rng.choice([-1, 0, 1, 600, 20_000]))
        recorded = activity(
            team_id=team_id,
            unit_path=unit,
            activity_id=uuid.UUID(int=salt + 1000 + index),
            member_id=rng.choice([*members, None]),
            occurred_at=occurred,
            kind=rng.choice(["household_visit", "group_session", "support_desk"]),
            skills=rng.sample(SKILL_NAMES, rng.randint(0, 3)),
            citizens_reached=rng.randint(0, 5),
            household_hash=rng.choice(["h0", "h1", "h2", None]),
            campaign_id=rng.choice([None, None, "c1"]),
            outcomes={"app_installs": rng.randint(0, 3), "ewallet_accounts": rng.randint(0, 1)},
            audience=rng.sample(["elderly", "traders"], rng.randint(0, 1)),
        )
        record_event = inbound(recorded)
        events = [record_event]
        if rng.random() < 0.2:  # redelivery of the same event (same ce_id)
            events.append(record_event)
        if rng.random() < 0.2:  # the same activity sent again under a new event id
            events.append(inbound(recorded))
        voided = rng.random() < 0.3
        if voided:
            void_event = inbound(void(recorded))
            events.append(void_event)
            if rng.random() < 0.3:
                events.append(void_event)
        else:
            live.append(recorded)
        deliveries.extend(events)
    # late and out-of-order arrival: voids may precede their activity
    rng.shuffle(deliveries)
    return Stream(deliveries=deliveries, live=live)


def batches(rng: random.Random, events: list[InboundEvent]) -> list[list[InboundEvent]]:
    out: list[list[InboundEvent]] = []
    index = 0
    while index < len(events):
        size = rng.randint(1, 8)
        out.append(events[index : index + size])
        index += size
    return out


def dedupe_like_runner(batch: list[InboundEvent], seen: set[uuid.UUID]) -> list[InboundEvent]:
    """What ConsumerRunner hands the handler: only events whose ce_id it never processed."""
    fresh = []
    for event in batch:
        if event.id not in seen:
            seen.add(event.id)
            fresh.append(event)
    return fresh
