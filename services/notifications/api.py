"""Notifications HTTP API (`/v1`): rules, subscriptions, the alert inbox, the delivery log.

Every route needs the operator token or a person's access token; what a role may do here, and
within which units, is `common.roles`' matrix: alerts and subscriptions within the caller's
units, rules and the delivery log for the ministry.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import RowMapping
from uuid_utils.compat import uuid7

from common.app import Access, AccessDep, Authorized, RuntimeDep, UowDep
from common.contracts.notifications import AlertType
from common.db import UnitOfWork
from common.i18n import DEFAULT_LANGUAGE, Language, _
from common.problems import ProblemError, RequestLanguage
from notifications import adapters
from notifications.delivery import WebhookUrlError, check_webhook_url
from notifications.domain import (
    ALERT_TYPES,
    NATIONAL,
    PARAMS_MODELS,
    InvalidRuleError,
    RuleOverride,
    resolve_rule,
)
from notifications.settings import NotificationsSettings
from notifications.use_cases import acknowledge, alert_summary, alert_title

router = APIRouter(prefix="/v1", tags=["notifications"], dependencies=[Authorized])

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Limit = Annotated[int, Query(ge=1, le=500)]
AlertStatus = Literal["open", "acknowledged", "resolved"]
DeliveryStatus = Literal["pending", "succeeded", "dead", "cancelled"]
MAX_PARAMS_BYTES = 64_000


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def _cursor(raw: str | None) -> UUID | None:
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError as exc:
        raise ProblemError(
            422,
            "Validation failed",
            _("Invalid fields: {fields}", fields="query.cursor"),
            errors=[
                {"field": "query.cursor", "message": "not a cursor from this API", "type": "cursor"}
            ],
        ) from exc


def _next(rows: list[RowMapping], limit: int) -> str | None:
    return str(rows[-1]["id"]) if len(rows) == limit else None


# --------------------------------------------------------------------------- rules


class RuleOut(BaseModel):
    scope: str
    alert_type: str
    enabled: bool
    params: dict[str, Any]
    sources: list[str] = Field(description="scopes whose settings shaped this rule, in order")


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """A JSON Schema with its `#/$defs/` references replaced by what they name."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    return schema


def _params_by_alert_type(schema: dict[str, Any]) -> None:
    """`params` as each alert type's rule reads them (any subset of its fields)."""
    rules = []
    for alert_type, model in PARAMS_MODELS.items():
        params = model.model_json_schema()
        rules.append(
            {
                "if": {"properties": {"alert_type": {"const": alert_type}}},
                "then": {"properties": {"params": _inlined(params, params.get("$defs", {}))}},
            }
        )
    schema["allOf"] = rules


class RulePut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_params_by_alert_type)

    scope: Code = Field(description='"national" or a province code, e.g. "82"')
    alert_type: AlertType
    enabled: bool | None = Field(default=None, description="null: inherit from the wider scope")
    params: dict[str, Any] = Field(
        default_factory=dict, description="fields to override; the others are inherited"
    )

    @field_validator("params")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(repr(value)) > MAX_PARAMS_BYTES:
            raise ValueError(f"params exceed {MAX_PARAMS_BYTES} characters")
        return value


def _rule_out(scope: str, alert_type: str, overrides: list[RuleOverride]) -> RuleOut:
    rule = resolve_rule(alert_type, scope=scope, overrides=overrides)
    return RuleOut(
        scope=scope,
        alert_type=alert_type,
        enabled=rule.enabled,
        params=rule.params.model_dump(mode="json"),
        sources=list(rule.sources),
    )


@router.get("/rules", summary="Effective rules for a scope (national defaults + overrides)")
async def get_rules(uow: UowDep, scope: Annotated[Code, Query()] = NATIONAL) -> Page[RuleOut]:
    overrides = await adapters.rule_overrides(uow.session, scopes=[scope])
    return Page(items=[_rule_out(scope, t, overrides) for t in ALERT_TYPES], next_cursor=None)


@router.put(
    "/rules",
    summary="Override a rule for the nation or one province",
    responses={422: {"description": "invalid parameters, naming the field"}},
)
async def put_rule(body: RulePut, uow: UowDep) -> RuleOut:
    overrides = await adapters.rule_overrides(uow.session, scopes=[body.scope])
    others = [
        o for o in overrides if not (o.scope == body.scope and o.alert_type == body.alert_type)
    ]
    proposed = RuleOverride(
        scope=body.scope, alert_type=body.alert_type, enabled=body.enabled, params=body.params
    )
    try:
        # Validate the merged result, and the national one it would inherit into provinces.
        out = _rule_out(body.scope, body.alert_type, [*others, proposed])
    except InvalidRuleError as exc:
        raise ProblemError(
            422,
            "Validation failed",
            _(
                "Invalid fields: {fields}",
                fields=", ".join(sorted({e["field"] for e in exc.errors})),
            ),
            errors=exc.errors,
        ) from exc
    await adapters.put_rule_override(
        uow.session,
        scope=body.scope,
        alert_type=body.alert_type,
        enabled=body.enabled,
        params=body.params,
    )
    await uow.commit()
    return out


# --------------------------------------------------------------------------- subscriptions


# What `check_webhook_url` asks of every URL before resolving its host: http(s), a host, no
# credentials, a valid port; no spaces nor control characters anywhere. (IPv6 literals are not
# taken: a webhook is called by name.)
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_HOST = r"[A-Za-z0-9._~%!$&'()*+,;=-]+"  # a name (IDNs in punycode) or an IPv4 address
WEBHOOK_URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST}{_PORT}(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[
        str,
        Field(
            min_length=8,
            max_length=2048,
            pattern=WEBHOOK_URL_PATTERN,
            description="http(s), no credentials; in production https, to a public address",
        ),
    ]
    scope: Code = Field(description='a unit code (its subtree), or "national"')
    alert_types: Annotated[list[AlertType], Field(min_length=1, max_length=len(ALERT_TYPES))]
    language: Language = Field(
        DEFAULT_LANGUAGE, description="the language of the alert texts posted: vi or en"
    )


class SubscriptionOut(BaseModel):
    id: UUID
    url: str
    scope: str
    alert_types: list[str]
    language: Language
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="HMAC-SHA256 signing secret; shown only in this response")


async def _scope_path(uow: UnitOfWork, scope: str) -> tuple[str, ...]:
    """The path of a subscription's scope: empty for "national" (only a nationwide caller)."""
    return () if scope == NATIONAL else await adapters.unit_path_codes(uow.session, scope)


def _subscription(row: RowMapping) -> SubscriptionOut:
    return SubscriptionOut(
        id=row["id"],
        url=row["url"],
        scope=row["scope"],
        alert_types=list(row["alert_types"]),
        language=Language(row["language"]),
        created_at=row["created_at"],
    )


@router.post(
    "/subscriptions",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a webhook to alert types within a unit's subtree",
)
async def create_subscription(
    body: SubscriptionIn, uow: UowDep, runtime: RuntimeDep, access: AccessDep
) -> SubscriptionCreated:
    access.require_unit(await _scope_path(uow, body.scope), code=body.scope)
    settings = runtime.settings
    assert isinstance(settings, NotificationsSettings)
    try:
        await check_webhook_url(
            body.url,
            allow_private=settings.webhook_allow_private,
            require_https=settings.cdt_env == "prod",
        )
    except WebhookUrlError as exc:
        raise ProblemError(
            422,
            "Validation failed",
            _("Invalid fields: {fields}", fields="body.url"),
            errors=[{"field": "body.url", "message": str(exc), "type": "webhook_url"}],
        ) from exc
    row = {
        "id": uuid7(),
        "url": body.url,
        "scope": body.scope,
        "alert_types": sorted(set(body.alert_types)),
        "secret": "whsec_" + secrets.token_urlsafe(32),
        "language": body.language.value,
        "created_at": datetime.now(UTC),
    }
    await adapters.add_subscription(uow.session, row)
    await uow.commit()
    return SubscriptionCreated(**row)


@router.get("/subscriptions", summary="Active subscriptions (secrets are never shown again)")
async def list_subscriptions(
    uow: UowDep, access: AccessDep, cursor: str | None = None, limit: Limit = 100
) -> Page[SubscriptionOut]:
    rows = await adapters.list_subscriptions(
        uow.session, units=access.scope.units, after=_cursor(cursor), limit=limit
    )
    return Page(items=[_subscription(r) for r in rows], next_cursor=_next(rows, limit))


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "unknown, already deleted, or outside the caller's units"}},
)
async def delete_subscription(subscription_id: UUID, uow: UowDep, access: AccessDep) -> Response:
    scope = await adapters.subscription_scope(uow.session, subscription_id)
    path = await _scope_path(uow, scope) if scope is not None else ()
    access.require_resource(path, what="subscription", ref=subscription_id)
    if not await adapters.delete_subscription(uow.session, subscription_id=subscription_id):
        raise ProblemError(404, "Not Found", _("No subscription {ref}.", ref=subscription_id))
    await uow.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- alerts


class AlertOut(BaseModel):
    id: UUID
    alert_type: str
    dedupe_key: str
    subject_type: str
    subject_id: str
    period: str | None
    unit_path: list[str]
    status: str
    title: str = Field(description="the alert type's name, in the request's language")
    summary: str = Field(description="what happened, in the request's language")
    details: dict[str, Any]
    raised_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None


STORED_ALERT_FIELDS = tuple(k for k in AlertOut.model_fields if k not in ("title", "summary"))


def _alert(row: RowMapping, language: Language) -> AlertOut:
    return AlertOut(
        **{k: row[k] for k in STORED_ALERT_FIELDS},
        title=alert_title(row["alert_type"], language),
        summary=alert_summary(row, language),
    )


@router.get("/alerts", summary="The inbox: alerts of a unit's subtree, newest first")
async def list_alerts(
    uow: UowDep,
    access: AccessDep,
    *,
    unit: Annotated[Code | None, Query(description="a unit code: alerts in its subtree")] = None,
    status_: Annotated[list[AlertStatus] | None, Query(alias="status")] = None,
    type_: Annotated[AlertType | None, Query(alias="type")] = None,
    language: RequestLanguage,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[AlertOut]:
    if unit is not None:  # another unit's inbox is not found
        path = await adapters.unit_path_codes(uow.session, unit)
        access.require_resource(path, what="unit", ref=unit)
    rows = await adapters.list_alerts(
        uow.session,
        unit=unit,
        units=access.scope.units,
        statuses=status_ or [],
        alert_type=type_,
        after=_cursor(cursor),
        limit=limit,
    )
    return Page(items=[_alert(r, language) for r in rows], next_cursor=_next(rows, limit))


async def _visible_alert(uow: UnitOfWork, alert_id: UUID, access: Access) -> RowMapping:
    """An alert within the caller's units; any other is "not found"."""
    row = await adapters.get_alert(uow.session, alert_id)
    if row is None:
        raise ProblemError(404, "Not Found", _("No alert {ref}.", ref=alert_id))
    access.require_resource(row["unit_path"], what="alert", ref=alert_id)
    return row


@router.get(
    "/alerts/{alert_id}",
    responses={404: {"description": "unknown alert, or outside the caller's units"}},
)
async def get_alert(
    alert_id: UUID, uow: UowDep, access: AccessDep, language: RequestLanguage
) -> AlertOut:
    return _alert(await _visible_alert(uow, alert_id, access), language)


@router.post(
    "/alerts/{alert_id}:ack",
    summary="Acknowledge an open alert (idempotent)",
    responses={
        404: {"description": "unknown alert, or outside the caller's units"},
        409: {"description": "already resolved"},
    },
)
async def ack_alert(
    alert_id: UUID, uow: UowDep, access: AccessDep, language: RequestLanguage
) -> AlertOut:
    await _visible_alert(uow, alert_id, access)
    moved = await acknowledge(uow, alert_id, now=datetime.now(UTC))
    if moved is not None:
        await uow.commit()
        return _alert(moved, language)
    row = await adapters.get_alert(uow.session, alert_id)
    if row is None:
        raise ProblemError(404, "Not Found", _("No alert {ref}.", ref=alert_id))
    if row["status"] == "resolved":
        raise ProblemError(
            409, "Conflict", "The alert is already resolved.", alert_status=row["status"]
        )
    return _alert(row, language)


# --------------------------------------------------------------------------- deliveries


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    status_code: int | None
    error: str | None


class DeliveryOut(BaseModel):
    id: UUID = Field(description="also the Idempotency-Key header of every attempt")
    alert_id: UUID
    subscription_id: UUID
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptOut]


def _delivery(row: RowMapping, attempts: list[RowMapping]) -> DeliveryOut:
    return DeliveryOut(
        id=row["id"],
        alert_id=row["alert_id"],
        subscription_id=row["subscription_id"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        log=[AttemptOut(**{k: a[k] for k in AttemptOut.model_fields}) for a in attempts],
    )


@router.get("/deliveries", summary="The delivery log, newest first, with each attempt")
async def list_deliveries(
    uow: UowDep,
    *,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    alert_id: UUID | None = None,
    subscription_id: UUID | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[DeliveryOut]:
    rows = await adapters.list_deliveries(
        uow.session,
        status=status_,
        alert_id=alert_id,
        subscription_id=subscription_id,
        after=_cursor(cursor),
        limit=limit,
    )
    attempts = await adapters.attempts_of(uow.session, delivery_ids=[r["id"] for r in rows])
    return Page(
        items=[_delivery(r, attempts.get(r["id"], [])) for r in rows],
        next_cursor=_next(rows, limit),
    )


@router.post(
    "/deliveries/{delivery_id}:redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a dead (or delivered) delivery again, with a fresh attempt budget",
    responses={404: {"description": "unknown delivery"}, 409: {"description": "still pending"}},
)
async def redeliver(delivery_id: UUID, uow: UowDep) -> DeliveryOut:
    row = await adapters.redeliver(uow.session, delivery_id=delivery_id, now=datetime.now(UTC))
    if row is None:
        current = await adapters.get_delivery(uow.session, delivery_id)
        if current is None:
            raise ProblemError(404, "Not Found", _("No delivery {ref}.", ref=delivery_id))
        raise ProblemError(
            409,
            "Conflict",
            _("A {status} delivery cannot be redelivered.", status=current["status"]),
            delivery_status=current["status"],
        )
    await uow.commit()
    attempts = await adapters.attempts_of(uow.session, delivery_ids=[delivery_id])
    return _delivery(row, attempts.get(delivery_id, []))
