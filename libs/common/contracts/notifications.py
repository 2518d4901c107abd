"""Events of the notifications service."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from common import topics
from common.envelope import EventContract

AlertType = Literal[
    "team_inactive",
    "score_drop",
    "target_reached",
    "campaign_at_risk",
    "suspicious_activity",
    "round_overdue",
]


class AlertRaised(EventContract):
    TOPIC: ClassVar = topics.ALERT_RAISED
    CE_TYPE: ClassVar = "vn.cdt.notifications.alert-raised.v1"
    AGGREGATE: ClassVar = "alert"

    id: UUID
    alert_type: AlertType
    dedupe_key: str
    subject_type: str
    subject_id: str
    unit_path: list[str] = []
    period: str | None = None
    status: Literal["open", "acknowledged", "resolved"]
    summary: str
    details: dict[str, object] = {}
    raised_at: datetime
