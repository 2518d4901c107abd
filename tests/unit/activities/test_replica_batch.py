"""A consumed batch leaves the replica as applying its changes one by one would."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from activities.adapters import latest_versions
from common.contracts.wire import MemberChangedWire, TeamChangedWire

AT = datetime(2026, 12, 4, tzinfo=UTC)


def _team(team_id: uuid.UUID, version: int, status: str = "active") -> TeamChangedWire:
    return TeamChangedWire(
        id=team_id,
        code="DT-0001",
        name="Tổ 1",
        unit_code="82-28000-V01",
        status=status,  # type: ignore[arg-type]
        version=version,
        changed_at=AT,
    )


def _member(member_id: uuid.UUID, version: int) -> MemberChangedWire:
    return MemberChangedWire(
        id=member_id,
        team_id=uuid.UUID(int=1),
        role="member",
        affiliation="resident",
        joined_on=date(2022, 4, 1),
        version=version,
        changed_at=AT,
    )


def test_the_newest_version_of_each_id_wins_whatever_the_order() -> None:
    a, b = uuid.UUID(int=20), uuid.UUID(int=10)
    changes = [
        (_team(a, 2), "tp-a2"),
        (_team(b, 1), "tp-b1"),
        (_team(a, 3), "tp-a3"),
        (_team(a, 1, "dissolved"), "tp-a1"),
        (_team(b, 4), "tp-b4"),
    ]
    latest = latest_versions(changes)
    assert [(t.id, t.version, tp) for t, tp in latest] == [(b, 4, "tp-b4"), (a, 3, "tp-a3")]


def test_of_equal_versions_the_first_wins_as_one_by_one() -> None:
    member_id = uuid.uuid4()
    first, second = _member(member_id, 2), _member(member_id, 2)
    latest = latest_versions([(first, None), (second, None)])
    assert len(latest) == 1 and latest[0][0] is first
