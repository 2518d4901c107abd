"""Teams domain: pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from uuid import UUID

from uuid6 import uuid7

from common.contracts.teams import TeamChanged, TeamStatus


@dataclass(frozen=True)
class Team:
    id: UUID
    code: str
    name: str
    unit_code: str
    status: TeamStatus
    established_on: date | None
    decision_no: str | None
    version: int

    @classmethod
    def establish(
        cls,
        *,
        code: str,
        name: str,
        unit_code: str,
        established_on: date | None,
        decision_no: str | None,
    ) -> Team:
        return cls(
            id=uuid7(),
            code=code,
            name=name,
            unit_code=unit_code,
            status="active",
            established_on=established_on,
            decision_no=decision_no,
            version=1,
        )

    def renamed(self, name: str) -> Team:
        return replace(self, name=name, version=self.version + 1)

    def changed_event(self) -> TeamChanged:
        return TeamChanged(
            id=self.id,
            code=self.code,
            name=self.name,
            unit_code=self.unit_code,
            status=self.status,
            established_on=self.established_on,
            decision_no=self.decision_no,
            version=self.version,
            changed_at=datetime.now(UTC),
        )
