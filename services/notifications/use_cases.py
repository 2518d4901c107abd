"""Alert lifecycle inside a unit of work: raise once per dedupe key, resolve, acknowledge.

Every change of an alert is published to `notifications.alert-raised.v1` through the outbox
(key = alert id, `status` says which change); a newly raised alert also enqueues one delivery
row per matching webhook subscription, in the same transaction, so none can be lost.

An alert is stored once, with its message (id and arguments) rather than its texts: the API
renders its title and summary at read time in the reader's `Accept-Language`, and each webhook
body is rendered when its delivery is enqueued, in the subscription's `language` (the stored body
is what every attempt signs and sends). One row serves every language, and a corrected
translation reaches old alerts too. `summary` also keeps the English text, for the event
contract and logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping
from uuid_utils.compat import uuid7

from common.contracts.notifications import AlertRaised
from common.db import UnitOfWork
from common.envelope import OutboundEvent
from common.i18n import Language, Message
from notifications import adapters, metrics
from notifications.domain import (
    ALERT_TITLES,
    ALERT_TYPES,
    NATIONAL,
    AlertCandidate,
    AlertChanges,
    EffectiveRule,
    resolve_rule,
)

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


def alert_title(alert_type: str, language: Language) -> str:
    title = ALERT_TITLES.get(alert_type)
    return title.render(language) if title is not None else alert_type


def alert_summary(row: RowMapping, language: Language) -> str:
    """The alert's summary in `language`; an alert stored before messages were kept reads as
    its stored (English) text."""
    message = row["message"]
    return Message.from_json(message).render(language) if message else str(row["summary"])


def webhook_body(
    *, delivery_id: UUID, alert: AlertRaised, summary: str, language: Language, created_at: datetime
) -> str:
    """The JSON posted to subscribers: a small envelope around the alert, its title and summary
    in the subscription's `language` (named in `data.language`)."""
    data = alert.model_dump(mode="json")
    data |= {"title": alert_title(alert.alert_type, language), "summary": summary}
    return json.dumps(
        {
            "id": str(delivery_id),
            "type": WEBHOOK_EVENT_TYPE,
            "created_at": created_at.isoformat(),
            "language": language.value,
            "data": data,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


async def raise_alerts(
    uow: UnitOfWork, candidates: Sequence[AlertCandidate], *, now: datetime
) -> int:
    """Raise every candidate whose condition has no unresolved alert yet, in a few set-based
    statements; publishes each new alert and enqueues its webhook deliveries. Returns the
    number raised."""
    unique = list({c.dedupe_key: c for c in candidates}.values())
    if not unique:
        return 0
    created = await adapters.insert_alerts(
        uow.session, [_alert_row(c, alert_id=uuid7(), now=now) for c in unique]
    )
    if not created:
        return 0
    subscriptions = await adapters.subscriptions_for(
        uow.session, alert_types={row["alert_type"] for row in created}
    )
    enqueued_at = datetime.now(UTC)
    deliveries = []
    for row in created:
        alert = _publish(uow, row)
        metrics.ALERTS_RAISED.labels(row["alert_type"]).inc()
        for subscription in subscriptions:
            if _matches(subscription, row):
                deliveries.append(
                    _delivery_row(subscription, alert, row=row, created_at=enqueued_at)
                )
    await adapters.enqueue_deliveries(uow.session, deliveries)
    return len(created)


def _alert_row(candidate: AlertCandidate, *, alert_id: UUID, now: datetime) -> dict[str, Any]:
    return {
        "id": alert_id,
        "alert_type": candidate.alert_type,
        "dedupe_key": candidate.dedupe_key,
        "subject_type": candidate.subject_type,
        "subject_id": candidate.subject_id,
        "period": candidate.period,
        "unit_path": list(candidate.unit_path),
        "status": "open",
        "summary": str(candidate.summary)[:500],
        "message": candidate.summary.as_json(),
        "details": dict(candidate.details),
        "raised_at": now,
    }


def _matches(subscription: RowMapping, alert: RowMapping) -> bool:
    """A subscription covers the alert's type, and its scope is "national" or a unit on the
    alert's path (the alert is in that unit's subtree)."""
    return alert["alert_type"] in subscription["alert_types"] and (
        subscription["scope"] == NATIONAL or subscription["scope"] in alert["unit_path"]
    )


def _delivery_row(
    subscription: RowMapping, alert: AlertRaised, *, row: RowMapping, created_at: datetime
) -> dict[str, Any]:
    delivery_id = uuid7()
    language = Language(subscription["language"])
    return {
        "id": delivery_id,
        "alert_id": alert.id,
        "subscription_id": subscription["id"],
        "status": "pending",
        "next_attempt_at": created_at,
        "body": webhook_body(
            delivery_id=delivery_id,
            alert=alert,
            summary=alert_summary(row, language),
            language=language,
            created_at=created_at,
        ),
    }


async def resolve_alerts(uow: UnitOfWork, rows: Iterable[RowMapping], *, now: datetime) -> int:
    resolved = await adapters.set_alert_status(
        uow.session, alert_ids=[r["id"] for r in rows], status="resolved", now=now
    )
    for row in resolved:
        _publish(uow, row)
        metrics.ALERTS_RESOLVED.labels(row["alert_type"]).inc()
    return len(resolved)


async def apply_alert_changes(
    uow: UnitOfWork, changes: AlertChanges, *, open_alerts: Sequence[RowMapping], now: datetime
) -> tuple[int, int]:
    """Raise what a rule found and resolve, among `open_alerts`, what it cleared: (raised,
    resolved)."""
    raised = await raise_alerts(uow, changes.raised, now=now)
    cleared = set(changes.resolved)
    resolved = await resolve_alerts(
        uow, [row for row in open_alerts if row["id"] in cleared], now=now
    )
    return raised, resolved


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
                scope: {t: resolve_rule(t, scope=scope, overrides=overrides) for t in ALERT_TYPES}
                for scope in scopes
            }
        )

    def rule(self, alert_type: str, province: str | None) -> EffectiveRule:
        return self._rules.get(province or NATIONAL, self._rules[NATIONAL])[alert_type]

    def params(self, alert_type: str, province: str | None) -> Any | None:
        """The rule's parameters, or None when the rule is disabled for that province."""
        rule = self.rule(alert_type, province)
        return rule.params if rule.enabled else None
