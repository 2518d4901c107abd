"""Events of the teams service (compacted topics keyed by id: the latest state of each entity)."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal
from uuid import UUID

from common import topics
from common.envelope import EventContract

TeamStatus = Literal["active", "dissolved"]
UnitLevel = Literal["province", "district", "commune", "village"]
# The units of the 63-province structure (before 1 July 2025) carry their official code behind
# this prefix: their codes were reused by the 34-province structure, and codes are unique across
# versions. A legacy unit's `replaced_by` lists the current communes its area became, the
# default successor first (consumers read the crosswalk from it).
LEGACY_PREFIX = "L-"


class UnitPath(EventContract):
    """Codes of a unit and its ancestors, so consumers need no hierarchy lookup."""

    province: str
    district: str | None = None
    commune: str | None = None
    village: str | None = None


class TeamChanged(EventContract):
    TOPIC: ClassVar = topics.TEAMS_TEAM
    CE_TYPE: ClassVar = "vn.cdt.teams.team.v1"
    AGGREGATE: ClassVar = "team"

    id: UUID
    code: str
    name: str
    unit_code: str
    unit_path: UnitPath | None = None
    status: TeamStatus
    established_on: date | None = None
    dissolved_on: date | None = None
    decision_no: str | None = None
    version: int
    changed_at: datetime


class MemberChanged(EventContract):
    TOPIC: ClassVar = topics.TEAMS_MEMBER
    CE_TYPE: ClassVar = "vn.cdt.teams.member.v1"
    AGGREGATE: ClassVar = "member"

    id: UUID
    team_id: UUID
    # External registry code of the member, where the source gave one (bulk imports do).
    code: str | None = None
    role: Literal["leader", "deputy", "member"]
    affiliation: str
    joined_on: date
    left_on: date | None = None
    trained: bool = False
    removed: bool = False
    version: int
    changed_at: datetime

    def event_key(self) -> str:
        return str(self.id)


class AdminUnitChanged(EventContract):
    TOPIC: ClassVar = topics.TEAMS_ADMIN_UNIT
    CE_TYPE: ClassVar = "vn.cdt.teams.admin-unit.v1"
    AGGREGATE: ClassVar = "admin_unit"

    code: str
    name: str
    level: UnitLevel
    parent_code: str | None
    path: UnitPath
    valid_from: date | None = None
    valid_to: date | None = None
    # Re-organisation: where this unit's teams and history now belong (DHIS2 merge/split).
    replaced_by: list[str] = []
    change: Literal["created", "updated", "merged", "split", "reparented", "retired"] = "created"
    version: int
    changed_at: datetime

    def event_key(self) -> str:
        return self.code
