"""Activities HTTP API (`/v1`): partner keys, ingest, corrections, queries."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from uuid_utils.compat import uuid7

from activities import adapters
from activities.adapters import ActivityFilter, Partner
from activities.domain import (
    MAX_BATCH_ITEMS,
    ActivityIn,
    Rejection,
    decode_cursor,
    encode_cursor,
    issue_key,
    key_lookup,
    key_matches,
    partner_version,
    rejection_from_validation,
)
from activities.metrics import VOIDS
from activities.use_cases import SOURCE, Ingestor, ItemResult, count_rejection
from common import audit
from common.app import Access, AccessDep, RuntimeDep, UowDep, person_access
from common.auth import (
    OPERATOR_SCHEME,
    PARTNER_SCHEME,
    UNAUTHORIZED_HEADERS,
    bearer_token,
)
from common.contracts.activities import (
    OUTCOMES,
    ActivityKind,
    ActivityVoided,
    PartnerChanged,
    Skill,
)
from common.db import DirectConnections, UnitOfWork
from common.envelope import OutboundEvent
from common.i18n import Language, Text, _
from common.problems import ProblemError, RequestLanguage
from common.ratelimit import RateLimiter
from common.roles import Scope
from common.runtime import ServiceRuntime
from common.text import FreeText, NameText

router = APIRouter(prefix="/v1", tags=["activities"])

ProvinceCode = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[0-9A-Za-z-]+$")]


@dataclass(frozen=True)
class ActivitiesContext:
    """Per-app state the routes share (one per process)."""

    ingestor: Ingestor
    limiter: RateLimiter
    default_rate_limit: int


async def get_context(request: Request) -> ActivitiesContext:
    context: ActivitiesContext = request.app.state.activities
    return context


ContextDep = Annotated[ActivitiesContext, Depends(get_context)]


@dataclass(frozen=True)
class Principal:
    """A partner app (reading within its provinces), or the operator or a person (within the
    scope the permission matrix gives them on the route)."""

    partner: Partner | None
    scope: Scope

    @classmethod
    def of_partner(cls, partner: Partner) -> Principal:
        return cls(partner, Scope(frozenset(partner.provinces)))


def _unauthorized(detail: Text) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers=UNAUTHORIZED_HEADERS)


async def authenticate(
    request: Request,
    runtime: RuntimeDep,
    context: ContextDep,
    _operator: Annotated[None, Depends(OPERATOR_SCHEME)],
    _partner: Annotated[None, Depends(PARTNER_SCHEME)],
) -> Principal:
    """The operator, a person (within the units the permission matrix gives them here), or an
    active partner key (within its provinces; then rate-limited)."""
    async with runtime.direct.acquire() as connection:

        async def find_partner(lookup: str) -> Partner | None:
            return await adapters.partner_by_lookup(runtime.direct, connection, lookup)

        return await _principal(request, runtime=runtime, context=context, find=find_partner)


FindPartner = Callable[[str], Awaitable[Partner | None]]


async def _principal(
    request: Request, *, runtime: ServiceRuntime, context: ActivitiesContext, find: FindPartner
) -> Principal:
    access = await person_access(request, runtime)
    if access is not None:
        return Principal(None, access.scope)
    token = bearer_token(request) or ""  # never empty here: person_access answered 401
    lookup = key_lookup(token)
    if lookup is None:
        raise _unauthorized(_("The API key is malformed."))
    partner = await find(lookup)
    # Same answer for unknown, wrong and revoked keys: nothing to learn by probing.
    if partner is None or partner.status != "active" or not key_matches(token, partner.key_hash):
        raise _unauthorized(_("The API key is not valid."))
    wait = context.limiter.check(
        partner.id, rate=partner.rate_limit_per_second, now=time.monotonic()
    )
    if wait:
        raise ProblemError(
            429,
            "Too Many Requests",
            _("Rate limit of {rate} requests/s exceeded.", rate=partner.rate_limit_per_second),
            headers={"Retry-After": str(wait)},
        )
    audit.identify(audit.Actor(subject=f"partner:{partner.id}", role="partner"))
    return Principal.of_partner(partner)


@dataclass(frozen=True)
class IngestScope:
    """A request's authenticated partner, its JSON body, and the pooled connection its
    statements run on."""

    partner: Partner
    body: Any
    ingestor: Ingestor
    db: DirectConnections
    connection: asyncpg.Connection
    replica: adapters.Replica | None = None

    async def ingest(self, items: list[ActivityIn | Rejection]) -> list[ItemResult]:
        return await self.ingestor.ingest(
            self.db, self.connection, self.partner, items, replica=self.replica
        )


async def authenticate_ingest(request: Request) -> AsyncIterator[IngestScope]:
    """The ingest routes' one dependency: the partner key checked, the body parsed, and one
    pooled connection held for the request's statements. (Resolving the four dependencies the
    other routes use cost a single POST more CPU than its three statements.)

    A single event's team and member are read with the key, in the same round trip. The key
    is still checked before the body: a malformed body from an unknown key gets a 401."""
    runtime: ServiceRuntime = request.app.state.runtime
    context: ActivitiesContext = request.app.state.activities
    raw = await request.body()
    try:
        body: Any = orjson.loads(raw)  # several times faster than json on 1,000-item batches
    except ValueError:  # orjson.JSONDecodeError, invalid UTF-8 included
        body = _MALFORMED
    team_id, member_id = _single_event_ids(body)
    replica: adapters.Replica | None = None
    async with runtime.direct.acquire() as connection:

        async def find_partner(lookup: str) -> Partner | None:
            nonlocal replica
            partner, replica = await adapters.partner_and_replica(
                runtime.direct, connection, lookup, team_id=team_id, member_id=member_id
            )
            return partner

        principal = await _principal(request, runtime=runtime, context=context, find=find_partner)
        partner = _partner_only(principal)
        if body is _MALFORMED:
            raise ProblemError(400, "Malformed JSON", "The request body is not valid JSON.")
        yield IngestScope(partner, body, context.ingestor, runtime.direct, connection, replica)


_MALFORMED = object()


def _single_event_ids(body: Any) -> tuple[UUID | None, UUID | None]:
    """The team and member of a single event's body, when they are well-formed ids (a batch,
    or anything else, has none: its replica rows are read after validation)."""
    if not isinstance(body, dict):
        return None, None
    return _uuid_or_none(body.get("team_id")), _uuid_or_none(body.get("member_id"))


def _uuid_or_none(value: Any) -> UUID | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # the validation names the field
            return UUID(value)
    return None


PrincipalDep = Annotated[Principal, Depends(authenticate)]
IngestDep = Annotated[IngestScope, Depends(authenticate_ingest)]


def _partner_only(principal: Principal) -> Partner:
    if principal.partner is None:
        raise ProblemError(403, "Forbidden", "Activities are posted with a partner key.")
    return principal.partner


# ---- partners -------------------------------------------------------------------------------


class PartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[NameText, Field(min_length=1, max_length=200)]
    provinces: Annotated[list[ProvinceCode], Field(min_length=1, max_length=100)]
    rate_limit_per_second: Annotated[int | None, Field(ge=1, le=100_000)] = None


class PartnerCreated(BaseModel):
    id: UUID
    name: str
    provinces: list[str]
    rate_limit_per_second: int
    api_key: str = Field(description="Shown once; store it safely. Only a hash is kept.")


class KeyRotated(BaseModel):
    id: UUID
    api_key: str


async def _publish_partner(uow: UnitOfWork, partner_id: UUID) -> None:
    """Publish the partner's current state (scope, key digest, revoked) with this transaction."""
    state = await adapters.partner_state(uow.session, partner_id)
    assert state is not None  # written earlier in the same transaction
    event = PartnerChanged(
        id=state.id,
        name=state.name,
        provinces=list(state.provinces),
        key_lookup=state.key_lookup,
        key_sha256=state.key_hash.hex(),
        revoked=state.status != "active",
        version=partner_version(state.changed_at),
        changed_at=state.changed_at,
    )
    uow.publish(OutboundEvent.of(event, source=SOURCE, subject=str(state.id)))


async def _manage_partner(uow: UnitOfWork, partner_id: UUID, access: Access) -> None:
    """A partner the caller may manage: every one of its provinces within their units (an
    officer of one province cannot revoke a key shared with another); otherwise not found."""
    state = await adapters.partner_state(uow.session, partner_id)
    provinces = state.provinces if state is not None else ()
    if not provinces or not all(access.scope.covers([p]) for p in provinces):
        access.require_resource((), what="partner", ref=partner_id)


@router.post(
    "/partners",
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "a province outside the caller's units"}},
)
async def create_partner(
    body: PartnerCreate, uow: UowDep, context: ContextDep, access: AccessDep
) -> PartnerCreated:
    provinces = sorted(set(body.provinces))
    for province in provinces:  # a partner's units are its provinces
        access.require_unit([province], code=province)
    key = issue_key()
    partner_id = uuid7()
    rate = body.rate_limit_per_second or context.default_rate_limit
    await adapters.add_partner(
        uow.session,
        partner_id=partner_id,
        name=body.name,
        provinces=provinces,
        rate_limit=rate,
        lookup=key.lookup,
        digest=key.digest,
    )
    await _publish_partner(uow, partner_id)
    await uow.commit()
    return PartnerCreated(
        id=partner_id, name=body.name, provinces=provinces, rate_limit_per_second=rate,
        api_key=key.api_key,
    )  # fmt: skip


@router.post(
    "/partners/{partner_id}:rotate-key",
    responses={404: {"description": "unknown or revoked partner, or outside the caller's units"}},
)
async def rotate_key(partner_id: UUID, uow: UowDep, access: AccessDep) -> KeyRotated:
    await _manage_partner(uow, partner_id, access)
    key = issue_key()
    if not await adapters.replace_key(
        uow.session, partner_id, lookup=key.lookup, digest=key.digest
    ):
        raise ProblemError(404, "Not Found", _("No active partner {ref}.", ref=partner_id))
    await _publish_partner(uow, partner_id)
    await uow.commit()
    return KeyRotated(id=partner_id, api_key=key.api_key)


@router.delete(
    "/partners/{partner_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "unknown partner, or outside the caller's units"}},
)
async def revoke_partner(partner_id: UUID, uow: UowDep, access: AccessDep) -> Response:
    await _manage_partner(uow, partner_id, access)
    if not await adapters.revoke_partner(uow.session, partner_id):
        raise ProblemError(404, "Not Found", _("No partner {ref}.", ref=partner_id))
    await _publish_partner(uow, partner_id)
    await uow.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- ingest ---------------------------------------------------------------------------------

# The ingest routes parse their bodies themselves (an invalid item is a per-item rejection, not
# a 422 for the whole batch), so their request bodies are declared here for the OpenAPI document.
_ACTIVITY_SCHEMA = ActivityIn.model_json_schema()
_PARTNER_ONLY: dict[str, Any] = {"security": [{PARTNER_SCHEME.scheme_name: []}]}
_ACTIVITY_BODY: dict[str, Any] = {
    **_PARTNER_ONLY,
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _ACTIVITY_SCHEMA}},
    },
}
_BATCH_BODY: dict[str, Any] = {
    **_PARTNER_ONLY,
    "requestBody": {
        "required": True,
        "description": f'{{"items": [...]}} (or a bare array) of up to {MAX_BATCH_ITEMS} events',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "maxItems": MAX_BATCH_ITEMS,
                            "items": _ACTIVITY_SCHEMA,
                        }
                    },
                }
            }
        },
    },
}


_ITEMS: TypeAdapter[list[ActivityIn]] = TypeAdapter(list[ActivityIn])


def _parse_items(raw_items: list[Any]) -> list[ActivityIn | Rejection]:
    try:  # the common case, every item valid: one validator call for the whole batch
        return list(_ITEMS.validate_python(raw_items))
    except ValidationError:  # then item by item, to reject exactly the bad ones and say why
        return [_parse_item(item) for item in raw_items]


def _parse_item(item: Any) -> ActivityIn | Rejection:
    if not isinstance(item, dict):
        return Rejection("invalid", _("An activity must be a JSON object."))
    try:
        return ActivityIn.model_validate(item)
    except ValidationError as exc:
        integral = _integral_counts(item)
        if integral is None:
            return rejection_from_validation(exc)
    try:  # counts written `132.0`: JSON (and the schema's "integer") make that 132
        return ActivityIn.model_validate(integral)
    except ValidationError as exc:
        return rejection_from_validation(exc)


def _is_whole_float(value: Any) -> bool:
    return type(value) is float and value.is_integer()


def _integral_counts(item: dict[str, Any]) -> dict[str, Any] | None:
    """The item with its counts that are whole floats made ints, or None if it has none.
    (Counts are strict ints, so that "5" and true are refused; only an invalid item pays for
    this second look.)"""
    fixed = dict(item)
    changed = False
    if _is_whole_float(item.get("citizens_reached")):
        fixed["citizens_reached"] = int(item["citizens_reached"])
        changed = True
    outcomes = item.get("outcomes")
    if isinstance(outcomes, dict) and any(_is_whole_float(v) for v in outcomes.values()):
        fixed["outcomes"] = {k: int(v) if _is_whole_float(v) else v for k, v in outcomes.items()}
        changed = True
    return fixed if changed else None


def _rejection_problem(rejection: Rejection, activity_id: UUID | None) -> ProblemError:
    extensions: dict[str, Any] = {"reason": rejection.reason, "retryable": rejection.retryable}
    if activity_id is not None:
        extensions["id"] = str(activity_id)
    if rejection.errors:
        extensions["errors"] = rejection.errors
    if rejection.reason == "conflict":
        return ProblemError(409, "Conflict", rejection.detail, **extensions)
    if rejection.reason == "team_outside_scope":
        return ProblemError(403, "Forbidden", rejection.detail, **extensions)
    headers = {"Retry-After": "30"} if rejection.retryable else None
    return ProblemError(422, "Activity rejected", rejection.detail, headers=headers, **extensions)


def _item_json(result: ItemResult, language: Language) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index": result.index,
        "id": str(result.id) if result.id else None,
        "status": result.status,
    }
    if result.rejection is not None:
        body["reason"] = result.rejection.reason
        body["detail"] = result.rejection.detail.render(language)
        body["retryable"] = result.rejection.retryable
        if result.rejection.errors:
            body["errors"] = result.rejection.errors
    return body


@router.post(
    "/activities",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "duplicate: this id was already recorded with this payload"},
        400: {"description": "malformed JSON"},
        401: {"description": "missing, malformed or revoked key"},
        403: {"description": "team outside the key's provinces"},
        409: {"description": "id reused with a different payload"},
        413: {"description": "body too large"},
        422: {"description": "rejected: `reason` says why; `retryable` ones may pass later"},
        429: {"description": "rate limit; see Retry-After"},
    },
    openapi_extra=_ACTIVITY_BODY,
)
async def post_activity(scope: IngestDep) -> JSONResponse:
    item = _parse_item(scope.body)
    if isinstance(item, Rejection):
        count_rejection(item)
        raise _rejection_problem(item, None)
    (result,) = await scope.ingest([item])
    if result.rejection is not None:
        raise _rejection_problem(result.rejection, item.id)
    code = 201 if result.status == "accepted" else 200
    return JSONResponse({"id": str(item.id), "status": result.status}, status_code=code)


@router.post(
    "/activities:batch",
    responses={
        400: {"description": "malformed JSON"},
        403: {"description": "the operator token: activities are posted with a partner key"},
        413: {"description": f"body too large or more than {MAX_BATCH_ITEMS} items"},
    },
    openapi_extra=_BATCH_BODY,
)
async def post_batch(scope: IngestDep, language: RequestLanguage) -> Response:
    """Up to 1,000 events (`{"items": [...]}` or a bare array); one result per item."""
    body = scope.body
    raw_items = body.get("items") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) != {"items"}:
        raise ProblemError(422, "Validation failed", 'The body is {"items": [...]}.')
    if not isinstance(raw_items, list):
        raise ProblemError(422, "Validation failed", "items must be a JSON array.")
    if len(raw_items) > MAX_BATCH_ITEMS:
        raise ProblemError(
            413,
            "Content Too Large",
            _("A batch holds at most {limit} items.", limit=MAX_BATCH_ITEMS),
        )
    results = await scope.ingest(_parse_items(raw_items))
    counts = {s: sum(1 for r in results if r.status == s) for s in ("accepted", "duplicate")}
    body = {
        "items": [_item_json(r, language) for r in results],
        "accepted": counts["accepted"],
        "duplicate": counts["duplicate"],
        "rejected": len(results) - counts["accepted"] - counts["duplicate"],
    }
    return Response(orjson.dumps(body), media_type="application/json")


# ---- corrections ----------------------------------------------------------------------------


class VoidRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[FreeText, Field(min_length=1, max_length=500)]


class Voided(BaseModel):
    id: UUID
    voided_at: datetime
    reason: str


@router.post(
    "/activities/{activity_id}:void",
    responses={404: {"description": "unknown activity, or another partner's"}},
)
async def void_activity(
    activity_id: UUID, body: VoidRequest, principal: PrincipalDep, uow: UowDep
) -> Voided:
    """Cancel an activity (idempotent): consumers subtract it on `activity-voided.v1`."""
    key = await adapters.lock_activity(uow.session, activity_id)
    partner = principal.partner
    if key is None or (partner is not None and key.partner_id != partner.id):
        raise ProblemError(404, "Not Found", _("No activity {ref} for this key.", ref=activity_id))
    if key.voided_at is not None:
        assert key.void_reason is not None
        return Voided(id=key.id, voided_at=key.voided_at, reason=key.void_reason)
    now = datetime.now(UTC)
    await adapters.mark_voided(uow.session, key, reason=body.reason, voided_at=now)
    event = ActivityVoided(id=key.id, team_id=key.team_id, reason=body.reason, voided_at=now)
    uow.publish(OutboundEvent.of(event, source=SOURCE, subject=str(key.id)))
    await uow.commit()
    VOIDS.inc()
    return Voided(id=key.id, voided_at=now, reason=body.reason)


# ---- queries --------------------------------------------------------------------------------


class ActivityOut(BaseModel):
    id: UUID
    team_id: UUID
    member_id: UUID | None
    partner_id: UUID
    occurred_at: datetime
    recorded_at: datetime
    kind: str
    skills: list[str]
    citizens_reached: int
    audience: list[str]
    campaign_id: str | None
    outcomes: dict[str, int]
    province: str
    district: str | None
    commune: str | None
    village: str | None
    voided_at: datetime | None
    void_reason: str | None


class ActivityPage(BaseModel):
    items: list[ActivityOut]
    next_cursor: str | None


UnitCode = Annotated[str, Field(min_length=1, max_length=64)]


@dataclass(frozen=True)
class QueryParams:
    team_id: UUID | None
    member_id: UUID | None
    unit: str | None
    since: datetime | None
    until: datetime | None
    kind: str | None
    skill: str | None


async def query_params(
    *,
    team_id: UUID | None = None,
    member_id: UUID | None = None,
    unit: Annotated[UnitCode | None, Query(description="any unit code of the subtree")] = None,
    since: Annotated[AwareDatetime | None, Query(description="occurred_at >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="occurred_at < until")] = None,
    kind: ActivityKind | None = None,
    skill: Skill | None = None,
) -> QueryParams:
    return QueryParams(team_id, member_id, unit, since, until, kind, skill)


QueryDep = Annotated[QueryParams, Depends(query_params)]


def _filter(principal: Principal, q: QueryParams) -> ActivityFilter:
    return ActivityFilter(
        units=principal.scope.units,
        team_id=q.team_id,
        member_id=q.member_id,
        unit=q.unit,
        since=q.since,
        until=q.until,
        kind=q.kind,
        skill=q.skill,
    )


@router.get("/activities")
async def list_activities(
    principal: PrincipalDep,
    uow: UowDep,
    q: QueryDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ActivityPage:
    """Activities in the caller's provinces (operator: all), oldest first."""
    where = _filter(principal, q)
    if cursor is not None:
        after = decode_cursor(cursor)
        if after is None:
            raise ProblemError(422, "Validation failed", "The cursor is not valid.")
        where = ActivityFilter(**{**where.__dict__, "after": after})
    rows = await adapters.list_activities(uow.session, where, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["occurred_at"], rows[-1]["id"]) if more else None
    return ActivityPage(
        items=[ActivityOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


CSV_COLUMNS = [
    "id", "team_id", "member_id", "partner_id", "occurred_at", "recorded_at", "kind", "skills",
    "citizens_reached", "audience", "campaign_id", *OUTCOMES, "province", "district", "commune",
    "village", "voided_at",
]  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _csv_line(row: dict[str, Any] | list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if isinstance(row, list):
        writer.writerow(row)
    else:
        outcomes = row["outcomes"]
        writer.writerow(
            [
                *(_cell(row[c]) for c in CSV_COLUMNS[:7]),
                ";".join(row["skills"]),
                row["citizens_reached"],
                ";".join(row["audience"]),
                row["campaign_id"] or "",
                *(outcomes.get(o, 0) for o in OUTCOMES),
                *(row[c] or "" for c in ("province", "district", "commune", "village")),
                _cell(row["voided_at"]),
            ]
        )
    return out.getvalue()


@router.get(
    "/activities:export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_activities(
    principal: PrincipalDep, runtime: RuntimeDep, q: QueryDep
) -> StreamingResponse:
    """Streamed CSV of the matching activities (no household data)."""
    where = _filter(principal, q)

    async def lines() -> AsyncIterator[str]:
        yield _csv_line(CSV_COLUMNS)
        async for page in adapters.stream_activities(runtime.sessions, where):
            yield "".join(_csv_line(row) for row in page)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="activities.csv"'},
    )
