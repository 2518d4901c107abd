"""Alert lifecycle inside a unit of work: raise once per dedupe key, resolve, acknowledge.

Every change of an alert is published to `notifications.alert-raised.v1` through the outbox
(key = alert id, `status` says which change); a newly raised alert also enqueues one delivery
row per matching webhook subscription, in the same transaction, so none can be lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping
from uuid6 import uuid7

from common.contracts.notifications import AlertRaised
from common.db import UnitOfWork
from common.envelope import OutboundEvent
from notifications import adapters, metrics
from notifications.domain import ALERT_TYPES, NATIONAL, AlertCandidate, EffectiveRule, resolve_rule

SOURCE = "/cdt/notifications"
WEBHOOK_EVENT_TYPE = AlertRaised.CE_TYPE


def alert_contract(row: RowMapping) -> AlertRaised:
    return AlertRaised(
        id=row["id"],
        alert_type=row["alert_type"],
        dedupe_key=row["dedupe_key"],
        subject_type=row["subject_type"],
        subject_id=row["subject_id"],
        unit_path=list(row["unit_path"]),
        period=row["period"],
        status=row["status"],
        summary=row["summary"],
        details=dict(row["details"]),
        raised_at=row["raised_at"],
    )


def _publish(uow: UnitOfWork, row: RowMapping) -> AlertRaised:
    contract = alert_contract(row)
    uow.publish(OutboundEvent.of(contract, source=SOURCE, subject=str(row["id"])))
    return contract


def webhook_body(*, delivery_id: UUID, alert: AlertRaised, created_at: datetime) -> str:
    """The JSON posted to subscribers: a small envelope around the alert."""
    return json.dumps(
        {
            "id": str(delivery_id),
            "type": WEBHOOK_EVENT_TYPE,
            "created_at": created_at.isoformat(),
            "data": alert.model_dump(mode="json"),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


async def raise_alert(uow: UnitOfWork, candidate: AlertCandidate, *, now: datetime) -> bool:
    """Raise the alert unless one for the same condition is still open; True if raised."""
    row = await adapters.insert_alert(
        uow.session, alert_id=uuid7(), candidate=candidate, now=now
    )
    if row is None:
        return False
    alert = _publish(uow, row)
    subscriptions = await adapters.matching_subscriptions(
        uow.session, alert_type=candidate.alert_type, unit_path=candidate.unit_path
    )
    created = datetime.now(UTC)
    deliveries = []
    for subscription in subscriptions:
        delivery_id = uuid7()
        deliveries.append(
            {
                "id": delivery_id,
                "alert_id": row["id"],
                "subscription_id": subscription["id"],
                "status": "pending",
                "next_attempt_at": created,
                "body": webhook_body(delivery_id=delivery_id, alert=alert, created_at=created),
            }
        )
    await adapters.enqueue_deliveries(uow.session, deliveries)
    metrics.ALERTS_RAISED.labels(candidate.alert_type).inc()
    return True


async def resolve_alerts(uow: UnitOfWork, rows: Iterable[RowMapping], *, now: datetime) -> int:
    resolved = await adapters.set_alert_status(
        uow.session, alert_ids=[r["id"] for r in rows], status="resolved", now=now
    )
    for row in resolved:
        _publish(uow, row)
        metrics.ALERTS_RESOLVED.labels(row["alert_type"]).inc()
    return len(resolved)


async def resolve_keys(uow: UnitOfWork, dedupe_keys: Sequence[str], *, now: datetime) -> int:
    return await resolve_alerts(
        uow, await adapters.active_alerts(uow.session, dedupe_keys=dedupe_keys), now=now
    )


async def acknowledge(uow: UnitOfWork, alert_id: UUID, *, now: datetime) -> RowMapping | None:
    moved = await adapters.set_alert_status(
        uow.session, alert_ids=[alert_id], status="acknowledged", now=now
    )
    for row in moved:
        _publish(uow, row)
    return moved[0] if moved else None


class RuleBook:
    """The effective rules of the provinces one batch touches, read in one query."""

    def __init__(self, rules: dict[str, dict[str, EffectiveRule]]) -> None:
        self._rules = rules

    @classmethod
    async def load(cls, uow: UnitOfWork, *, provinces: Iterable[str | None]) -> RuleBook:
        scopes = {p or NATIONAL for p in provinces} | {NATIONAL}
        overrides = await adapters.rule_overrides(uow.session, scopes=scopes)
        return cls(
            {
                scope: {
                    t: resolve_rule(t, scope=scope, overrides=overrides) for t in ALERT_TYPES
                }
                for scope in scopes
            }
        )

    def rule(self, alert_type: str, province: str | None) -> EffectiveRule:
        return self._rules.get(province or NATIONAL, self._rules[NATIONAL])[alert_type]

    def params(self, alert_type: str, province: str | None) -> Any | None:
        """The rule's parameters, or None when the rule is disabled for that province."""
        rule = self.rule(alert_type, province)
        return rule.params if rule.enabled else None
