"""Events of the activities service (keyed by team_id so one team's events stay in order)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal, get_args
from uuid import UUID

from common import topics
from common.contracts.teams import UnitPath
from common.envelope import EventContract

ActivityKind = Literal["household_visit", "group_session", "support_desk"]
Skill = Literal[
    "public_services", "online_shopping", "online_payment", "cyber_safety", "local_platforms"
]
OutcomeName = Literal[
    "public_service_accounts",
    "online_applications",
    "vneid_activations",
    "app_installs",
    "ewallet_accounts",
    "cashless_merchants",
    "ecommerce_products",
]
# The same names as data, in declaration order (columns, indicators, loops).
SKILLS: tuple[str, ...] = get_args(Skill)
OUTCOMES: tuple[str, ...] = get_args(OutcomeName)


class ActivityRecorded(EventContract):
    TOPIC: ClassVar = topics.ACTIVITY_RECORDED
    CE_TYPE: ClassVar = "vn.cdt.activities.activity-recorded.v1"
    AGGREGATE: ClassVar = "activity"

    id: UUID
    team_id: UUID
    member_id: UUID | None = None
    partner_id: UUID | None = None
    occurred_at: datetime
    recorded_at: datetime
    kind: ActivityKind
    skills: list[Skill] = []
    citizens_reached: int = 0
    household_hash: str | None = None
    audience: list[str] = []
    campaign_id: str | None = None
    outcomes: dict[str, int] = {}
    unit_path: UnitPath

    def event_key(self) -> str:
        return str(self.team_id)


class ActivityVoided(EventContract):
    TOPIC: ClassVar = topics.ACTIVITY_VOIDED
    CE_TYPE: ClassVar = "vn.cdt.activities.activity-voided.v1"
    AGGREGATE: ClassVar = "activity"

    id: UUID
    team_id: UUID
    reason: str
    voided_at: datetime

    def event_key(self) -> str:
        return str(self.team_id)


class PartnerChanged(EventContract):
    """A partner app's scope and current key digest (never the key), keyed by partner id.

    Other services replicate it to authenticate partner reads without calling activities:
    `key_lookup` finds the row, `key_sha256` (hex SHA-256 of the whole key) is compared in
    constant time. `version` only grows per partner (microseconds of the change's clock).
    """

    TOPIC: ClassVar = topics.ACTIVITIES_PARTNER
    CE_TYPE: ClassVar = "vn.cdt.activities.partner.v1"
    AGGREGATE: ClassVar = "partner"

    id: UUID
    name: str
    provinces: list[str]
    key_lookup: str
    key_sha256: str
    revoked: bool
    version: int
    changed_at: datetime
